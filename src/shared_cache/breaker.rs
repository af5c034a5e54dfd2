//! The circuit breaker of one shared cache: after a few failed calls in a row the store is
//! skipped for a while (tokens come straight from Entra, as without a shared cache), then one
//! trial call decides whether to use it again. So a store that is down or slow costs each
//! replica a few bounded calls, not one per token request.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::shared_cache::SharedCacheError;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BreakerSettings {
    /// Failed calls in a row that open it.
    pub(crate) failures: u32,
    /// How long it stays open before a trial call.
    pub(crate) open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out; if it never reports (its caller was dropped), another is let
    /// through after `open_for`.
    Trial {
        since: Instant,
    },
}

/// A circuit breaker; `name` says which store in its log lines.
#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    name: String,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(name: impl Into<String>, settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            name: name.into(),
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value: one left by a panicking thread is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go to the store now.
    fn admit(&self) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::Trial { since: until } if now < until => false,
            State::Open { .. } | State::Trial { .. } => {
                tracing::debug!(store = %self.name, "shared token cache: trying the store again");
                *state = State::Trial {
                    since: now + self.settings.open_for,
                };
                true
            }
        }
    }

    /// What the call let through by [`admit`](Self::admit) gave.
    fn record(&self, outcome: Result<(), &SharedCacheError>) {
        let mut state = self.lock();
        match (outcome, *state) {
            (Ok(()), State::Closed { failures: 0 }) => {}
            (Ok(()), State::Closed { .. }) => *state = State::Closed { failures: 0 },
            (Ok(()), State::Open { .. } | State::Trial { .. }) => {
                tracing::info!(store = %self.name, "shared token cache: the store answers again; using it");
                *state = State::Closed { failures: 0 };
            }
            (Err(error), State::Closed { failures }) => {
                let failures = failures + 1;
                if failures >= self.settings.failures {
                    tracing::warn!(
                        store = %self.name,
                        %error,
                        failures,
                        skip_for_s = self.settings.open_for.as_secs_f64(),
                        "shared token cache: the store keeps failing; skipping it for a while \
                         (tokens come straight from Entra meanwhile)"
                    );
                    *state = State::Open {
                        until: Instant::now() + self.settings.open_for,
                    };
                } else {
                    *state = State::Closed { failures };
                }
            }
            (Err(error), State::Trial { .. } | State::Open { .. }) => {
                tracing::debug!(store = %self.name, %error, "shared token cache: the store still fails");
                *state = State::Open {
                    until: Instant::now() + self.settings.open_for,
                };
            }
        }
    }

    /// Whether calls are being skipped now.
    pub(crate) fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    /// Runs `call` if the breaker lets it, bounded by `bound`, and records how it went.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        bound: Duration,
        call: impl Future<Output = Result<T, SharedCacheError>>,
    ) -> Result<T, SharedCacheError> {
        if !self.admit() {
            return Err(SharedCacheError::skipped());
        }
        let outcome = match tokio::time::timeout(bound, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SharedCacheError::timed_out(what, bound)),
        };
        self.record(outcome.as_ref().map(|_| ()));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing() -> impl Future<Output = Result<(), SharedCacheError>> {
        std::future::ready(Err(SharedCacheError::new("down")))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_then_one_trial_closes_it() {
        let settings = BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(30),
        };
        let breaker = Breaker::new("test", settings);
        let bound = Duration::from_secs(1);
        // A success between failures starts the count again.
        for _ in 0..2 {
            breaker.call("get", bound, failing()).await.unwrap_err();
        }
        breaker.call("get", bound, async { Ok(()) }).await.unwrap();
        for _ in 0..2 {
            breaker.call("get", bound, failing()).await.unwrap_err();
        }
        assert!(!breaker.is_open());
        breaker.call("get", bound, failing()).await.unwrap_err();
        assert!(breaker.is_open());

        // Open: the store is not called at all.
        let called = std::sync::atomic::AtomicBool::new(false);
        let e = breaker
            .call("get", bound, async {
                called.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(e.message().contains("circuit breaker"), "{e}");
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));

        // After `open_for`, one trial: a failure opens it again, a success closes it.
        tokio::time::advance(settings.open_for).await;
        breaker.call("get", bound, failing()).await.unwrap_err();
        assert!(breaker.is_open());
        breaker
            .call("get", bound, async { Ok(()) })
            .await
            .unwrap_err();
        tokio::time::advance(settings.open_for).await;
        breaker.call("get", bound, async { Ok(()) }).await.unwrap();
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_is_cut_at_its_bound_and_counts_as_a_failure() {
        let breaker = Breaker::new(
            "test",
            BreakerSettings {
                failures: 1,
                open_for: Duration::from_secs(30),
            },
        );
        let started = Instant::now();
        let e = breaker
            .call("get", Duration::from_millis(250), async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert!(e.message().contains("250 ms"), "{e}");
        assert!(breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_whose_caller_vanished_does_not_keep_it_open_forever() {
        let settings = BreakerSettings {
            failures: 1,
            open_for: Duration::from_secs(30),
        };
        let breaker = Breaker::new("test", settings);
        breaker
            .call("get", Duration::from_secs(1), failing())
            .await
            .unwrap_err();
        tokio::time::advance(settings.open_for).await;
        // The trial is admitted, then its future dropped before it reports.
        assert!(breaker.admit());
        assert!(!breaker.admit());
        tokio::time::advance(settings.open_for).await;
        breaker
            .call("get", Duration::from_secs(1), async { Ok(()) })
            .await
            .unwrap();
        assert!(!breaker.is_open());
    }
}
