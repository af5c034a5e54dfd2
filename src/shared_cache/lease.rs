//! The fleet-wide single flight: a short lease per entry, so that one replica asks Entra while
//! the others wait for what it writes.
//!
//! The lease is a random value set only if nobody holds it (`SET NX PX`), renewed by its holder
//! while its token request runs and released only by that holder (compare-and-delete): a holder
//! that dies holds the others up for one lease time to live at most, and a slow holder whose
//! lease lapsed cannot release the lease of the one after it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::shared_cache::{SharedCacheError, SharedTokenCache};

/// How long a lease lives unless renewed: long enough for a renewal to land, short enough that
/// a dead holder's lease frees up quickly.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(5);

/// What trying for the lease gave.
pub(crate) enum LeaseOutcome {
    /// This replica holds it: ask Entra, write, release.
    Held(Lease),
    /// Another replica holds it: wait for its token.
    Busy,
    /// The store failed: go on without it.
    Unavailable(SharedCacheError),
}

/// A held lease, renewed in the background until released or dropped.
pub(crate) struct Lease {
    store: Arc<dyn SharedTokenCache>,
    name: String,
    holder: String,
    bound: Duration,
    renewer: Option<JoinHandle<()>>,
}

impl Lease {
    /// Tries to take the lease on `name`, each store call bounded by `bound`.
    pub(crate) async fn acquire(
        store: &Arc<dyn SharedTokenCache>,
        name: &str,
        bound: Duration,
    ) -> LeaseOutcome {
        let holder = match random_holder() {
            Some(holder) => holder,
            None => {
                return LeaseOutcome::Unavailable(SharedCacheError::new(
                    "the system's random source failed; no lease value",
                ));
            }
        };
        let name = lease_name(name);
        let taken = bounded(bound, "taking the lease", async {
            store.acquire_lease(&name, &holder, LEASE_TTL).await
        })
        .await;
        match taken {
            Ok(true) => {
                let renewer =
                    tokio::spawn(renew(store.clone(), name.clone(), holder.clone(), bound));
                LeaseOutcome::Held(Lease {
                    store: store.clone(),
                    name,
                    holder,
                    bound,
                    renewer: Some(renewer),
                })
            }
            Ok(false) => LeaseOutcome::Busy,
            Err(e) => LeaseOutcome::Unavailable(e),
        }
    }

    /// Stops renewing and ends the lease (only if still ours).
    pub(crate) async fn release(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let released = bounded(self.bound, "releasing the lease", async {
            self.store.release_lease(&self.name, &self.holder).await
        })
        .await;
        if let Err(e) = released {
            tracing::debug!(error = %e, "shared token cache: the lease could not be released; it expires on its own");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropped without `release` (its fetch was cancelled): stop renewing, and the lease
        // lapses within its time to live.
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

/// The lease's own name beside its entry's.
fn lease_name(entry: &str) -> String {
    format!("{entry}:lease")
}

/// A new random lease value (128 bits, hex).
fn random_holder() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Renews the lease at a third of its time to live until it is lost or the task is aborted.
async fn renew(store: Arc<dyn SharedTokenCache>, name: String, holder: String, bound: Duration) {
    loop {
        tokio::time::sleep(LEASE_TTL / 3).await;
        match bounded(bound, "renewing the lease", async {
            store.renew_lease(&name, &holder, LEASE_TTL).await
        })
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("shared token cache: the lease lapsed while the token request ran");
                return;
            }
            // A failed renewal may be a blip: keep trying while the lease may still hold.
            Err(e) => tracing::debug!(error = %e, "shared token cache: renewing the lease failed"),
        }
    }
}

/// `call`, or a time-out error after `bound`.
pub(crate) async fn bounded<T>(
    bound: Duration,
    what: &str,
    call: impl Future<Output = Result<T, SharedCacheError>>,
) -> Result<T, SharedCacheError> {
    tokio::time::timeout(bound, call)
        .await
        .unwrap_or_else(|_| Err(SharedCacheError::timed_out(what, bound)))
}

/// How often a waiter looks again, at first and at most: quick at first (a holder's token
/// request often takes tens of milliseconds), then backing off so that a fleet waiting on one
/// slow request costs the store little.
const FIRST_LOOK: Duration = Duration::from_millis(20);
const LONGEST_LOOK: Duration = Duration::from_millis(250);

/// What waiting for the holder gave.
pub(crate) enum Waited<T> {
    /// Its token, as `look` accepted it.
    Value(T),
    /// The lease came free without a token we take (its holder failed or died): ours now.
    Held(Lease),
    /// Nothing by the deadline, or the store failed: ask Entra without it.
    GaveUp,
}

/// Waits until `deadline` for the lease holder's token on `name`: `look` reads and judges the
/// entry (its `Some` ends the wait); between looks the lease is tried, so a dead holder's lease
/// passes to a waiter as soon as it lapses.
pub(crate) async fn wait_for_holder<T, F, Fut>(
    store: &Arc<dyn SharedTokenCache>,
    name: &str,
    bound: Duration,
    deadline: Instant,
    mut look: F,
) -> Waited<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, SharedCacheError>>,
{
    let mut pause = FIRST_LOOK;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Waited::GaveUp;
        }
        store.changed(name, pause.min(deadline - now)).await;
        pause = (pause * 2).min(LONGEST_LOOK);
        match look().await {
            Ok(Some(value)) => return Waited::Value(value),
            Ok(None) => {}
            Err(_) => return Waited::GaveUp,
        }
        match Lease::acquire(store, name, bound).await {
            LeaseOutcome::Held(lease) => return Waited::Held(lease),
            LeaseOutcome::Busy => {}
            LeaseOutcome::Unavailable(_) => return Waited::GaveUp,
        }
    }
}
