//! A warning when the token endpoint's clock and this machine's disagree: a certificate
//! assertion carries `nbf` and `exp` from the local clock, so a machine minutes off is refused
//! (AADSTS700024 and friends) long before anyone suspects its clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use url::Url;

/// Skew past this is warned about. An HTTP date has whole seconds, and the answer's latency
/// adds to it, so a smaller bound would warn about healthy machines.
const TOLERATED: Duration = Duration::from_secs(60);

/// Warns once (per credential) that the local clock and an answer's `Date` disagree by more
/// than a minute.
#[derive(Debug, Default)]
pub(super) struct ClockSkewWarning {
    warned: AtomicBool,
}

impl ClockSkewWarning {
    /// Compares the answer's `Date` with `now` (read when the answer came) and warns the first
    /// time they are more than a minute apart. An answer without a readable `Date` says nothing.
    pub(super) fn check(&self, headers: &HeaderMap, now: SystemTime, endpoint: &Url) {
        if self.warned.load(Ordering::Relaxed) {
            return;
        }
        let Some(skew) = skew(headers, now) else {
            return;
        };
        if skew.unsigned_abs() <= TOLERATED.as_secs() || self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        let (by, direction) = if skew > 0 {
            (skew, "behind")
        } else {
            (-skew, "ahead of")
        };
        tracing::warn!(
            clock_skew_secs = skew,
            endpoint = endpoint.host_str().unwrap_or_default(),
            "this machine's clock is {by} s {direction} the token endpoint's (its Date header); certificate assertions are refused on their nbf/exp with a skewed clock, so synchronise the clock (NTP)"
        );
    }
}

/// The answer's `Date` minus `now`, in whole seconds: positive when the local clock is behind.
fn skew(headers: &HeaderMap, now: SystemTime) -> Option<i64> {
    let date = headers.get(http::header::DATE)?.to_str().ok()?;
    let date = httpdate::parse_http_date(date.trim()).ok()?;
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    Some(match date.duration_since(now) {
        Ok(ahead) => secs(ahead),
        Err(behind) => -secs(behind.duration()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dated(date: SystemTime) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::DATE,
            httpdate::fmt_http_date(date).parse().unwrap(),
        );
        headers
    }

    #[test]
    fn the_skew_is_the_date_minus_the_local_clock() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(skew(&dated(now + minutes(10)), now), Some(600));
        assert_eq!(skew(&dated(now - minutes(10)), now), Some(-600));
        assert_eq!(skew(&dated(now), now), Some(0));
        assert_eq!(skew(&HeaderMap::new(), now), None);
        let mut garbled = HeaderMap::new();
        garbled.insert(http::header::DATE, "yesterday".parse().unwrap());
        assert_eq!(skew(&garbled, now), None);
    }
}
