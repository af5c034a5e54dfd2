//! Injected token endpoint faults.

use std::time::Duration;

/// A canned answer for the next token request, queued with
/// [`Emulator::push_fault`](crate::Emulator::push_fault).
///
/// Unless [`Fault::body`] is given, the body is an Entra-shaped JSON error
/// chosen by status code:
///
/// | status | `error` | code |
/// | --- | --- | --- |
/// | 400, other 4xx | `invalid_request` | `AADSTS90013` |
/// | 401 | `invalid_client` | `AADSTS7000215` |
/// | 403 | `unauthorized_client` | `AADSTS7000112` |
/// | 429 | `temporarily_unavailable` | `AADSTS90055` |
/// | 500 | `server_error` | `AADSTS50000` |
/// | 503, other 5xx | `temporarily_unavailable` | `AADSTS90033` |
/// | anything else | (empty body) | |
///
/// ```
/// use entra_emulator::Fault;
///
/// let throttled = Fault::status(429).retry_after(2);
/// let html = Fault::status(502)
///     .content_type("text/html")
///     .body("<html>Bad Gateway</html>");
/// # let _ = (throttled, html);
/// ```
#[derive(Clone, Debug)]
pub struct Fault {
    pub(crate) kind: FaultKind,
}

#[derive(Clone, Debug)]
pub(crate) enum FaultKind {
    Respond {
        status: u16,
        retry_after: Option<u64>,
        body: Option<String>,
        content_type: Option<String>,
    },
    DropConnection,
    Delay(Duration),
}

impl Fault {
    /// Answer with this HTTP status code (and, by default, an Entra-shaped body).
    pub fn status(status: u16) -> Fault {
        Fault {
            kind: FaultKind::Respond {
                status,
                retry_after: None,
                body: None,
                content_type: None,
            },
        }
    }

    /// Adds a `Retry-After: <secs>` header.
    pub fn retry_after(mut self, secs: u64) -> Fault {
        if let FaultKind::Respond { retry_after, .. } = &mut self.kind {
            *retry_after = Some(secs);
        }
        self
    }

    /// Replaces the body with `raw` (sent verbatim). The content type stays
    /// `application/json; charset=utf-8` unless [`Fault::content_type`] is set.
    pub fn body(mut self, raw: impl Into<String>) -> Fault {
        if let FaultKind::Respond { body, .. } = &mut self.kind {
            *body = Some(raw.into());
        }
        self
    }

    /// Sets the `Content-Type` header.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Fault {
        if let FaultKind::Respond {
            content_type: ct, ..
        } = &mut self.kind
        {
            *ct = Some(content_type.into());
        }
        self
    }

    /// Closes the TCP connection without sending any response.
    pub fn drop_connection() -> Fault {
        Fault {
            kind: FaultKind::DropConnection,
        }
    }

    /// Answers the request normally, but only after an extra `delay`
    /// (slept with `tokio::time::sleep`, on top of any
    /// [`Emulator::set_latency`](crate::Emulator::set_latency)). Useful to
    /// make exactly one request slow, e.g. to test client timeouts.
    pub fn delay(delay: Duration) -> Fault {
        Fault {
            kind: FaultKind::Delay(delay),
        }
    }
}
