//! Microsoft's retry guidance for IMDS, applied to every managed identity source: retry 404
//! (the identity is being set up), 410 (IMDS is upgrading: it answers again within about
//! 70 s), 429 and 5xx with exponential backoff; fail at once on anything else.
//!
//! # One retry policy per request path
//!
//! This policy is the only one that retries a managed identity request. Microsoft's guidance
//! (learn.microsoft.com, "How to use managed identities for Azure resources on an Azure VM to
//! acquire an access token", *Retry guidance*) asks for exponential backoff on 404, 429 and 5xx
//! and for 410 to be waited out for up to 70 s; MSAL's IMDS retry specification
//! (`imds_retry_based_on_errors.md` in microsoft-authentication-library-for-dotnet) bounds a 404,
//! 408, 429 or 5xx at 3 retries (1 s, 2 s, 4 s). So a request that keeps failing with 500 is
//! sent at most 4 times, and the error it ends with is marked as having spent its retries: the
//! provider's fetch, which retries other credentials' transient errors up to `max_attempts`,
//! makes no attempt of its own on top (which used to multiply to 16 requests per cold fetch,
//! under two jitter formulas). The provider's backoff between fetches still applies.

use std::time::Duration;

use http::StatusCode;

/// How long IMDS may answer 410 while it upgrades, per Microsoft's guidance.
const UPGRADE_WINDOW: Duration = Duration::from_secs(70);

/// The longest `Retry-After` waited for before a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// When and how often a managed identity request is retried.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    /// The first wait; each next one doubles, up to `max_delay`.
    pub(super) initial: Duration,
    pub(super) max_delay: Duration,
    /// Retries after a 404, 429, 5xx or a broken connection. A 410 is retried for as long as
    /// the upgrade window lasts instead.
    pub(super) max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            max_retries: 3,
        }
    }
}

/// Whether a status may go away on retry.
pub(super) fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 410 | 429 | 500..=599)
}

impl RetryPolicy {
    /// The wait before the next attempt, or `None` to give up. `retries` have been made so
    /// far, `elapsed` since the first attempt; `status` is the last answer's (`None`: the
    /// connection failed); `jitter` is a draw in `[0, 1)` so that a fleet does not retry in step.
    pub(super) fn next_delay(
        &self,
        retries: u32,
        elapsed: Duration,
        status: Option<StatusCode>,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if status.is_some_and(|s| !is_retryable(s)) {
            return None;
        }
        let backoff = self
            .initial
            .saturating_mul(1u32 << retries.min(16))
            .min(self.max_delay)
            .mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0));
        let delay = backoff.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
        let go_on = if status == Some(StatusCode::GONE) {
            elapsed + delay <= UPGRADE_WINDOW + self.max_delay
        } else {
            retries < self.max_retries
        };
        go_on.then_some(delay)
    }

    /// The longest a fetch runs when each attempt takes at most `attempt`. A retry after a 410
    /// starts within the upgrade window (plus one backoff); every other retry counts against
    /// `max_retries`, after a wait of at most the longest backoff or `Retry-After`.
    pub(super) fn longest(&self, attempt: Duration) -> Duration {
        // Jitter lengthens a backoff by up to a fifth.
        let wait = self.max_delay.mul_f64(1.2).max(MAX_RETRY_AFTER);
        (UPGRADE_WINDOW + self.max_delay)
            .saturating_add(attempt)
            .saturating_add(
                wait.saturating_add(attempt)
                    .saturating_mul(self.max_retries),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Option<StatusCode> {
        Some(StatusCode::from_u16(code).unwrap())
    }

    #[test]
    fn retries_what_the_guidance_names_and_nothing_else() {
        let p = RetryPolicy::default();
        for code in [404, 410, 429, 500, 502, 503, 504] {
            assert!(
                p.next_delay(0, Duration::ZERO, status(code), None, 0.5)
                    .is_some(),
                "{code}"
            );
        }
        assert!(p.next_delay(0, Duration::ZERO, None, None, 0.5).is_some());
        for code in [400, 401, 403, 405, 408, 409] {
            assert_eq!(
                p.next_delay(0, Duration::ZERO, status(code), None, 0.5),
                None,
                "{code}"
            );
        }
    }

    #[test]
    fn backs_off_exponentially_and_honours_retry_after() {
        let p = RetryPolicy::default();
        let waits: Vec<_> = (0..3)
            .map(|n| {
                p.next_delay(n, Duration::ZERO, status(500), None, 0.5)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            waits,
            [1, 2, 4].map(Duration::from_secs),
            "exponential from 1 s"
        );
        assert_eq!(
            p.next_delay(3, Duration::ZERO, status(500), None, 0.5),
            None
        );
        let throttled = p.next_delay(
            0,
            Duration::ZERO,
            status(429),
            Some(Duration::from_secs(7)),
            0.5,
        );
        assert_eq!(throttled, Some(Duration::from_secs(7)));
    }

    /// Runs the policy against `answer(retry)` (a status, or `None` for a broken connection)
    /// with every attempt taking `attempt` and every wait as long as jitter makes it; the
    /// fetch's total time.
    fn run(
        p: &RetryPolicy,
        attempt: Duration,
        retry_after: Option<Duration>,
        answer: impl Fn(u32) -> Option<StatusCode>,
    ) -> Duration {
        let (mut elapsed, mut retries) = (attempt, 0);
        while let Some(d) = p.next_delay(retries, elapsed, answer(retries), retry_after, 0.999) {
            elapsed += d + attempt;
            retries += 1;
        }
        elapsed
    }

    #[test]
    fn no_fetch_outlasts_the_bound_it_announces() {
        let attempt = Duration::from_secs(30);
        let throttled = Some(Duration::from_secs(600));
        let slow = RetryPolicy {
            initial: Duration::from_secs(100),
            max_delay: Duration::from_secs(100),
            ..RetryPolicy::default()
        };
        for p in [RetryPolicy::default(), slow] {
            let bound = p.longest(attempt);
            let worst = [
                run(&p, attempt, None, |_| status(410)),
                run(&p, attempt, throttled, |_| status(429)),
                run(&p, attempt, None, |_| None),
                // 410s through the window, then other failures, and the other way round.
                run(&p, attempt, throttled, |n| {
                    if n < 3 { status(410) } else { status(503) }
                }),
                run(&p, attempt, throttled, |n| {
                    if n < 2 { status(503) } else { status(410) }
                }),
            ];
            for (i, took) in worst.iter().enumerate() {
                assert!(*took <= bound, "{p:?} {i}: {took:?} > {bound:?}");
            }
            // Not a bound by a mile, with the default policy: the worst case comes within a
            // wait and an attempt of it.
            if p.initial == RetryPolicy::default().initial {
                let longest = worst.iter().max().unwrap();
                let slack = MAX_RETRY_AFTER + attempt;
                assert!(bound - *longest <= slack, "{longest:?} vs {bound:?}");
            }
        }
    }

    #[test]
    fn a_410_is_retried_through_imds_upgrade_window() {
        let p = RetryPolicy::default();
        // Well past the retries other statuses get, while the 70 s window lasts.
        let (mut elapsed, mut retries) = (Duration::ZERO, 0);
        while let Some(d) = p.next_delay(retries, elapsed, status(410), None, 0.5) {
            elapsed += d;
            retries += 1;
        }
        assert!(elapsed >= UPGRADE_WINDOW, "gave up after {elapsed:?}");
        assert!(elapsed <= UPGRADE_WINDOW + 2 * p.max_delay, "{elapsed:?}");
        assert!(retries > p.max_retries, "{retries}");
    }
}
