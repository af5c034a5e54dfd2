//! Retrying 429s so that a fleet starting together does not storm the token endpoint: anchored
//! contention windows.
//!
//! A lone 429 is a blip: the retry comes within a second past `Retry-After`. A 429 again right
//! after says the endpoint is saturated by others (a fleet starting together, each replica
//! retrying on the same `Retry-After`): the retries must spread over enough time for the
//! endpoint's rate to serve them all. So the k-th 429 in a row sends the next attempt at a
//! uniformly random moment (full jitter) within a window anchored at the streak's first 429:
//! `[max(now + Retry-After, first + W(k-1)), first + W(k)]`, with `W(1) = Retry-After + 1 s`,
//! `W(2) = 40 s` and each later window 20% wider. Anchoring (rather than counting each window
//! from now, as exponential backoff does) keeps the unlucky replicas of a wide window from
//! waiting a whole new window again: each retry lands in the next slice of the same, widening
//! horizon, so the fleet's last token comes soon after the endpoint could have served it.
//!
//! The streak is the provider's, not one fetch's: a fetch that gives up (its attempts or the
//! longest delay exceeded) leaves its next slot to the fetch after it, which waits for it before
//! its first attempt. Any success ends the streak.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::TokenError;

/// The horizon after a second 429 in a row: with an endpoint admitting 20 requests/s, room for
/// 800 replicas to be served once each (Entra's throttling is per app and tenant, at rates of
/// that order).
const SECOND_WINDOW: Duration = Duration::from_secs(40);
/// How much wider each later window is.
const GROWTH: f64 = 1.2;
/// No window beyond this.
const LONGEST_WINDOW: Duration = Duration::from_secs(600);
/// A streak whose last window ended this long ago is over (the endpoint was quiet since).
const STREAK_FORGOTTEN_AFTER: Duration = Duration::from_secs(60);

/// Whether `error` is the endpoint's 429.
pub(super) fn is_throttled(error: &TokenError) -> bool {
    error.entra().is_some_and(|e| e.status() == 429)
}

/// The provider's streak of consecutive 429s.
#[derive(Debug, Default)]
pub(super) struct Throttle(Mutex<Option<Streak>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Streak {
    /// The first 429 of the streak: what the windows are counted from.
    since: Instant,
    /// 429s in a row.
    count: u32,
    /// When the next attempt is due.
    next_at: Instant,
}

/// The window after the `count`-th 429 in a row, from the streak's first.
fn window(count: u32, retry_after: Duration) -> Duration {
    let first = retry_after.saturating_add(Duration::from_secs(1));
    match count {
        0 => Duration::ZERO,
        1 => first,
        k => SECOND_WINDOW
            .mul_f64(GROWTH.powi(i32::try_from(k - 2).unwrap_or(i32::MAX).min(64)))
            .min(LONGEST_WINDOW)
            .max(first),
    }
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Streak>> {
        // A plain value: one left by a panicking thread is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A 429 at `now` asking for `retry_after`: how long until the next attempt (`draw` in
    /// `[0, 1)` places it in its window).
    pub(super) fn throttled(&self, now: Instant, retry_after: Duration, draw: f64) -> Duration {
        let mut streak = self.lock();
        let ongoing = streak
            .filter(|s| now < s.since + window(s.count, retry_after) + STREAK_FORGOTTEN_AFTER);
        let (since, count) = match ongoing {
            Some(s) => (s.since, s.count + 1),
            None => (now, 1),
        };
        let earliest = (now + retry_after).max(since + window(count - 1, retry_after));
        let latest = (since + window(count, retry_after)).max(earliest);
        let draw = if (0.0..1.0).contains(&draw) {
            draw
        } else {
            0.0
        };
        let next_at = earliest + (latest - earliest).mul_f64(draw);
        *streak = Some(Streak {
            since,
            count,
            next_at,
        });
        next_at - now
    }

    /// A token came: the endpoint serves us again.
    pub(super) fn succeeded(&self) {
        *self.lock() = None;
    }

    /// When a new fetch's first attempt is due, if a streak set one later than `now`.
    pub(super) fn due(&self, now: Instant) -> Option<Instant> {
        self.lock().map(|s| s.next_at).filter(|at| *at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RA: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_lone_429_is_retried_within_a_second_past_retry_after() {
        for draw in [0.0, 0.5, 0.999_999] {
            let throttle = Throttle::default();
            let delay = throttle.throttled(Instant::now(), RA, draw);
            assert!(
                delay >= RA && delay <= RA + Duration::from_secs(1),
                "{delay:?}"
            );
        }
        let throttle = Throttle::default();
        let far = Duration::from_secs(30);
        let delay = throttle.throttled(Instant::now(), far, 0.999);
        assert!(
            delay >= far && delay <= far + Duration::from_secs(1),
            "{delay:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn windows_widen_with_each_429_in_a_row_and_stay_anchored_at_the_first() {
        let throttle = Throttle::default();
        let first = Instant::now();
        let mut now = first;
        let mut ends = Vec::new();
        for _ in 0..5 {
            // The latest draw: the window's end, counted from the first 429.
            let delay = throttle.throttled(now, RA, 0.999_999_9);
            now += delay;
            ends.push((now - first).as_secs_f64().round());
            assert_eq!(throttle.due(first), Some(now));
        }
        assert_eq!(ends, [2.0, 40.0, 48.0, 58.0, 69.0]);

        // The earliest draw still waits Retry-After, and never lands before the previous
        // window's end.
        let throttle = Throttle::default();
        let d1 = throttle.throttled(first, RA, 0.0);
        assert_eq!(d1, RA);
        let d2 = throttle.throttled(first + d1, RA, 0.0);
        assert_eq!(first + d1 + d2, first + Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_or_a_long_quiet_ends_the_streak() {
        let throttle = Throttle::default();
        let now = Instant::now();
        throttle.throttled(now, RA, 0.5);
        throttle.throttled(now + RA, RA, 0.5);
        throttle.succeeded();
        assert_eq!(throttle.due(now), None);
        let again = throttle.throttled(now + RA, RA, 0.999);
        assert!(again <= RA + Duration::from_secs(1), "{again:?}");

        let later = now + Duration::from_secs(3600);
        let fresh = throttle.throttled(later, RA, 0.999);
        assert!(fresh <= RA + Duration::from_secs(1), "{fresh:?}");
    }
}
