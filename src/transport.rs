//! Sends token requests: one POST, a bounded body, no redirects, a timeout.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use url::Url;

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
    pub(crate) fn new(
        client: Option<reqwest::Client>,
        timeout: Duration,
    ) -> Result<Self, TokenError> {
        let client = match client {
            Some(c) => c,
            None => reqwest::Client::builder()
                // A token endpoint never redirects; following one could send the secret elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .build()
                .map_err(|e| {
                    TokenError::configuration("could not build the HTTP client for token requests")
                        .with_source(e)
                })?,
        };
        Ok(Transport { client, timeout })
    }

    /// POSTs `form` to `url` and parses the answer. The form holds secrets: it never reaches an
    /// error or a log.
    pub(crate) async fn request_token(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<AccessToken, TokenError> {
        let body = serde_urlencoded::to_string(form).map_err(|_| {
            TokenError::configuration("the token request could not be form-encoded")
        })?;
        let body = zeroize::Zeroizing::new(body);
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
            .header("client-request-id", uuid_v4())
            .header("return-client-request-id", "true")
            .body(body.as_bytes().to_vec());
        let exchange = async {
            let response = request.send().await.map_err(send_error)?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            // A caller-supplied client may follow redirects; a token endpoint never redirects.
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

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, TokenError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(oversized());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(send_error)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(oversized());
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
    let at = httpdate(value)?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Parses the IMF-fixdate form of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(s: &str) -> Option<SystemTime> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Bounded so that the arithmetic below cannot overflow on hostile input.
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A random UUID v4 for `client-request-id`, so Entra's correlation id matches our logs.
pub(crate) fn uuid_v4() -> String {
    let hi = fastrand::u64(..);
    let lo = fastrand::u64(..);
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        assert_eq!(
            httpdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        h.insert(
            http::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            "18446744073709551615".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        for hostile in [
            "Sun, 06 Nov 99999999999999 08:49:37 GMT",
            "Sun, 99999999999 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 99999999999:49:37 GMT",
        ] {
            assert_eq!(httpdate(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn client_request_ids_are_uuid_v4() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, uuid_v4());
    }
}
