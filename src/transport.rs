//! Sends token requests: one POST, a bounded body, no redirects, a timeout.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;
use url::Url;
use zeroize::Zeroizing;

use crate::endpoint::{parse_error_response, parse_token_response};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// The largest token endpoint answer read; a token response is a few KiB.
const MAX_BODY: usize = 1024 * 1024;
/// The default bound on one token request, connection included.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP side of a credential.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    client: reqwest::Client,
    timeout: Duration,
}

impl Transport {
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Builds the client from the caller's builder (proxies, TLS roots) or a default one, always
    /// with redirects off and a connect timeout.
    pub(crate) fn new(
        builder: Option<reqwest::ClientBuilder>,
        timeout: Duration,
    ) -> Result<Self, TokenError> {
        let client = builder
            .unwrap_or_default()
            // A token endpoint never redirects; following a 307/308 would re-POST the form (the
            // client secret or assertion) to wherever the redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| {
                TokenError::configuration(
                    "could not build the HTTP client for token requests; check the reqwest::ClientBuilder passed to http_client (proxy, TLS roots)",
                )
                .with_source(e)
            })?;
        Ok(Transport { client, timeout })
    }

    /// POSTs `form` to `url` and parses the answer. The form holds secrets: it never reaches an
    /// error or a log, and the copies made here are zeroed when dropped.
    pub(crate) async fn request_token(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<AccessToken, TokenError> {
        let body = form_body(form);
        let started = Instant::now();
        let wall = SystemTime::now();
        let request = self
            .client
            .post(url.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            // Entra echoes it as its correlation id, so its logs can be matched with ours.
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .header("return-client-request-id", "true")
            .body(body);
        let exchange = async {
            let response = request.send().await.map_err(send_error)?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            // Redirects are never followed (see `new`); a token endpoint never sends one.
            if status.is_redirection() || response.url() != url {
                return Err(TokenError::invalid_response(format!(
                    "the token endpoint answered with a redirect (HTTP {}); check the authority host",
                    status.as_u16()
                )));
            }
            let body = read_bounded(response).await?;
            if status.is_success() {
                parse_token_response(&body, started, wall)
            } else {
                Err(parse_error_response(status.as_u16(), &body, retry_after))
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::new(
                TokenErrorKind::Timeout,
                format!(
                    "the token endpoint did not answer within {:?}; raise the credential's timeout or check the network path to the authority host",
                    self.timeout
                ),
            )),
        }
    }
}

/// The form-encoded request body, in memory that is zeroed when reqwest drops the body.
fn form_body(form: &[(&str, &str)]) -> Bytes {
    // Sized up front (percent-encoding at most triples a byte) so that the string never
    // reallocates, which would leave a copy of the secret in freed memory.
    let capacity = form.iter().map(|(k, v)| 3 * (k.len() + v.len()) + 2).sum();
    let body = url::form_urlencoded::Serializer::new(String::with_capacity(capacity))
        .extend_pairs(form)
        .finish();
    Bytes::from_owner(Zeroizing::new(body.into_bytes()))
}

/// Reads the answer (which holds the token) into memory that is zeroed when dropped.
async fn read_bounded(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let expected = response.content_length();
    if expected.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(oversized());
    }
    let capacity = expected.map_or(8 * 1024, |n| n as usize);
    let mut body = Zeroizing::new(Vec::with_capacity(capacity));
    while let Some(chunk) = response.chunk().await.map_err(send_error)? {
        let needed = body.len() + chunk.len();
        if needed > MAX_BODY {
            return Err(oversized());
        }
        if needed > body.capacity() {
            // Grown by hand: `Vec`'s own reallocation would free the old buffer unzeroed.
            let mut grown = Zeroizing::new(Vec::with_capacity(
                needed.max(body.capacity() * 2).min(MAX_BODY),
            ));
            grown.extend_from_slice(&body);
            body = grown;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn oversized() -> TokenError {
    TokenError::invalid_response(format!(
        "the token endpoint's answer is larger than {MAX_BODY} bytes; a token response is a few KiB, so this is not Entra"
    ))
}

fn send_error(e: reqwest::Error) -> TokenError {
    // reqwest's error names the URL, which holds no secret (secrets travel in the body).
    let e = e.without_url();
    let kind = if e.is_timeout() {
        TokenErrorKind::Timeout
    } else if e.is_connect() || e.is_request() || e.is_body() {
        TokenErrorKind::Connection
    } else if e.is_redirect() {
        TokenErrorKind::InvalidResponse
    } else {
        TokenErrorKind::Connection
    };
    TokenError::new(kind, "the token request failed in transit").with_source(e)
}

/// The longest `Retry-After` honoured; a longer one is read as this (a token endpoint that asks
/// for more is misbehaving, and the value feeds timer arithmetic).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as delta-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    parse_retry_after(headers).map(|d| d.min(MAX_RETRY_AFTER))
}

fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after() {
        let header = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(header("120"), Some(Duration::from_secs(120)));
        assert_eq!(header(" 7 "), Some(Duration::from_secs(7)));
        // An HTTP date in the past: retry now.
        assert_eq!(
            header("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        // In the future: the time until then.
        let soon = SystemTime::now() + Duration::from_secs(600);
        let waited = header(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(
            waited > Duration::from_secs(590) && waited <= Duration::from_secs(600),
            "{waited:?}"
        );
        assert_eq!(header("soon"), None);
        assert_eq!(header(""), None);
        // Huge values are capped.
        assert_eq!(header("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            header("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        // Hostile dates are ignored, without a panic.
        for hostile in [
            "Sun, 06 Nov 99999999999999 08:49:37 GMT",
            "Sun, 99999999999 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 99999999999:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov -1994 08:49:37 GMT",
        ] {
            assert_eq!(header(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn the_form_body_is_form_encoded() {
        let body = form_body(&[
            ("grant_type", "client_credentials"),
            ("client_secret", "a b&c=d~ü"),
        ]);
        assert_eq!(
            &body[..],
            b"grant_type=client_credentials&client_secret=a+b%26c%3Dd%7E%C3%BC"
        );
        let decoded: Vec<(String, String)> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        assert_eq!(decoded[1].1, "a b&c=d~ü");
    }
}
