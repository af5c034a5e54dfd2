//! `Retry-After`, read one way for every endpoint (Entra and the managed identity endpoints):
//! delta-seconds or an HTTP date, capped.

use std::time::{Duration, SystemTime};

/// The longest `Retry-After` honoured; a longer one is read as this (a token endpoint that asks
/// for more is misbehaving, and the value feeds timer arithmetic).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as delta-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
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
}
