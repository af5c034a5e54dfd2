//! What a provider tells about itself, in one place: the counters behind
//! [`TokenProvider::stats`](super::TokenProvider::stats), the OpenTelemetry instruments (see
//! [`metrics`](super::metrics)) and the logs and span fields of fetches and refusals.
//!
//! The provider and its fetches call one event method where something happens (an attempt
//! ended, a fetch started or ended, a token was refused, a claims challenge was let be, a token
//! expired in a suspend); each method records it everywhere it is recorded. None runs on the
//! cached path, and none runs under the state's lock: a subscriber or an exporter is user code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use super::metrics::{Metrics, SharedCounts};
use super::state::{FORCED_RENEWAL_INTERVAL, Finished, Mode, Refused, Start};
use crate::error::TokenError;
use crate::token::AccessToken;

/// Counters for health endpoints and dashboards. Taken with
/// [`TokenProvider::stats`](super::TokenProvider::stats).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Token requests sent (every attempt, retries included).
    pub fetches: u64,
    /// Token requests that failed.
    pub failures: u64,
    /// Refreshes started ahead of expiry while a valid token was held.
    pub refreshes_ahead: u64,
    /// Tokens dropped because an API refused them (by the layer, or
    /// [`TokenProvider::invalidate`](super::TokenProvider::invalidate)).
    pub invalidations: u64,
    /// Token fetches started for a claims challenge (Continuous Access Evaluation).
    pub claims_challenges: u64,
    /// When the cached token expires, if one is held.
    pub token_expires_on: Option<SystemTime>,
    /// When a token request last succeeded (wall clock), if one has.
    pub last_success: Option<SystemTime>,
    /// Token requests that failed since the last one that succeeded (retries included): 0 while
    /// all is well, growing while Entra or the network fails.
    pub consecutive_failures: u64,
    /// The last fetch error, cleared by the next success.
    pub last_error: Option<TokenError>,
    /// Tokens taken from the [shared cache](super::TokenProviderBuilder::shared_cache) instead
    /// of asking Entra (read before a fetch, or written by the replica that held the lease).
    pub shared_cache_hits: u64,
    /// Reads of the shared cache that found no token to take.
    pub shared_cache_misses: u64,
    /// Times another replica held the lease and this one waited for its token.
    pub shared_cache_lease_waits: u64,
    /// Calls to the shared cache that failed, timed out or were skipped by its breaker.
    pub shared_cache_errors: u64,
    /// Whether the shared cache's breaker is open now (its store is skipped after failures).
    pub shared_cache_skipping: bool,
}

/// One provider's counters, instruments and log fields.
pub(super) struct Telemetry {
    scope: Arc<str>,
    /// The tenant a provider of another tenant serves ([`TokenProvider::for_tenant`]), named in
    /// its logs; `None` for the home tenant's provider.
    ///
    /// [`TokenProvider::for_tenant`]: crate::TokenProvider::for_tenant
    tenant: Option<Arc<str>>,
    counters: Counters,
    metrics: Metrics,
    /// Outside the state lock, so that `stats()` never waits on it.
    last_error: ArcSwapOption<TokenError>,
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    failures: AtomicU64,
    refreshes_ahead: AtomicU64,
    invalidations: AtomicU64,
    claims_challenges: AtomicU64,
    /// Failed token requests since the last successful one.
    consecutive_failures: AtomicU64,
    /// When the last token request succeeded, in nanoseconds since the Unix epoch; 0 for never.
    last_success_unix_nanos: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Telemetry {
    pub(super) fn new(scope: &str, tenant: Option<&str>, metrics: Metrics) -> Self {
        Telemetry {
            scope: scope.into(),
            tenant: tenant.map(Arc::from),
            counters: Counters::default(),
            metrics,
            last_error: ArcSwapOption::empty(),
        }
    }

    /// The counters now, with the cached token's expiry and the shared cache's counts.
    pub(super) fn stats(
        &self,
        token_expires_on: Option<SystemTime>,
        shared: SharedCounts,
    ) -> ProviderStats {
        let c = &self.counters;
        let last_success = match c.last_success_unix_nanos.load(Ordering::Relaxed) {
            0 => None,
            nanos => UNIX_EPOCH.checked_add(Duration::from_nanos(nanos)),
        };
        ProviderStats {
            fetches: c.fetches.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            refreshes_ahead: c.refreshes_ahead.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            claims_challenges: c.claims_challenges.load(Ordering::Relaxed),
            last_success,
            consecutive_failures: c.consecutive_failures.load(Ordering::Relaxed),
            token_expires_on,
            last_error: self.last_error.load_full().map(|e| (*e).clone()),
            shared_cache_hits: shared.hits,
            shared_cache_misses: shared.misses,
            shared_cache_lease_waits: shared.lease_waits,
            shared_cache_errors: shared.errors,
            shared_cache_skipping: shared.skipping,
        }
    }

    /// A fetch was started (and is about to be spawned).
    pub(super) fn started(&self, start: &Start) {
        if start.replaces_dead {
            tracing::warn!(
                scope = %self.scope, tenant = self.tenant.as_deref(),
                "a token fetch ran past its deadline (its task may sit on a runtime that is no longer driven); starting another on this runtime"
            );
        }
        match start.mode {
            Mode::Cold => {
                tracing::debug!(scope = %self.scope, tenant = self.tenant.as_deref(), "no usable token; fetching")
            }
            Mode::Ahead => {
                bump(&self.counters.refreshes_ahead);
                tracing::debug!(scope = %self.scope, tenant = self.tenant.as_deref(), "token in its refresh window; refreshing in the background");
            }
            Mode::Claims(_) => {
                bump(&self.counters.claims_challenges);
                self.metrics.claims_challenge();
                tracing::debug!(scope = %self.scope, tenant = self.tenant.as_deref(), "claims challenge; fetching a token with the claims, bypassing the cache");
            }
        }
    }

    /// The span a fetch runs in; its outcome is recorded by [`fetch_ended`](Self::fetch_ended).
    /// Made in the fetch's task: the credential's `identity` is user code. `tenant_id` is the
    /// tenant asked for: this provider's other tenant, else the credential's own.
    pub(super) fn fetch_span(&self, identity: Option<(&str, &str)>, mode: &Mode) -> tracing::Span {
        let (home, client) = identity.unwrap_or(("", ""));
        let tenant = self.tenant.as_deref().unwrap_or(home);
        tracing::info_span!(
            "entra_token_fetch",
            tenant_id = %tenant,
            client_id = %client,
            scope = %self.scope,
            mode = mode.name(),
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
            aadsts = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        )
    }

    /// One token request (one attempt of a fetch) ended with `result`.
    pub(super) fn attempt_ended(&self, result: &Result<AccessToken, TokenError>) {
        let c = &self.counters;
        bump(&c.fetches);
        match result {
            Ok(_) => {
                c.consecutive_failures.store(0, Ordering::Relaxed);
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                // 0 means never; a clock set before 1970 still records a success.
                c.last_success_unix_nanos
                    .store(nanos.max(1), Ordering::Relaxed);
            }
            Err(_) => {
                bump(&c.failures);
                bump(&c.consecutive_failures);
            }
        }
        self.metrics.request_ended(result);
    }

    /// An attempt failed and the fetch retries after `delay`.
    pub(super) fn retrying(&self, attempt: u32, delay: Duration, error: &TokenError) {
        tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "token request failed; retrying");
    }

    /// A fetch in `mode` ended with `result` after `attempts` attempts and `took`, and the state
    /// did `finished` with it. Runs in the fetch's span.
    pub(super) fn fetch_ended(
        &self,
        mode: &Mode,
        result: &Result<AccessToken, TokenError>,
        (attempts, took): (u32, Duration),
        finished: &Finished,
    ) {
        record(result, attempts, took);
        self.metrics.fetch_ended(mode, result, took);
        let error = match result {
            Ok(_) => {
                self.last_error.store(None);
                return;
            }
            Err(error) => error,
        };
        self.last_error.store(Some(Arc::new(error.clone())));
        match finished {
            Finished::ClaimsFailed => tracing::warn!(
                error = %error,
                "token request with the claims of a claims challenge failed"
            ),
            Finished::AheadFailed { retry_in } => tracing::warn!(
                error = %error,
                retry_in_ms = retry_in.as_millis() as u64,
                "refresh ahead of expiry failed; still using the cached token"
            ),
            Finished::ColdFailed { retry_in } => tracing::warn!(
                error = %error,
                retry_in_ms = retry_in.as_millis() as u64,
                "token request failed"
            ),
            Finished::AbandonedFailed => tracing::debug!(
                error = %error,
                "a token fetch that ran past its deadline, and was replaced, failed"
            ),
            Finished::Stored | Finished::Discarded => {}
        }
    }

    /// An API refused a token, or it was invalidated; `refused` is what the state did.
    pub(super) fn invalidated(&self, refused: Refused) {
        match refused {
            Refused::Dropped => {
                bump(&self.counters.invalidations);
                self.metrics.invalidated();
                tracing::debug!(scope = %self.scope, tenant = self.tenant.as_deref(), "token invalidated; the next request fetches a new one");
            }
            Refused::RateLimited => tracing::debug!(
                scope = %self.scope, tenant = self.tenant.as_deref(),
                interval_s = FORCED_RENEWAL_INTERVAL.as_secs(),
                "token refused again within the interval of the last drop; keeping it"
            ),
            Refused::AlreadyReplaced => {}
        }
    }

    /// A claims challenge came within the interval of the last claims fetch: no fetch.
    pub(super) fn claims_challenge_rate_limited(&self) {
        tracing::debug!(
            scope = %self.scope, tenant = self.tenant.as_deref(),
            interval_s = FORCED_RENEWAL_INTERVAL.as_secs(),
            "another claims challenge within the interval of the last claims fetch; not fetching again"
        );
    }

    /// A claims challenge whose claims cannot be merged is let be.
    pub(super) fn claims_challenge_ignored(&self, error: &TokenError) {
        tracing::warn!(scope = %self.scope, tenant = self.tenant.as_deref(), error = %error, "ignoring a claims challenge");
    }

    /// The cached token was dropped: the wall clock says it expired during a suspend.
    pub(super) fn expired_in_suspend(&self) {
        tracing::info!(scope = %self.scope, tenant = self.tenant.as_deref(), "the cached token expired while the machine was suspended; fetching a new one");
    }
}

impl Mode {
    /// The `mode` of a fetch's span and of its metrics.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Ahead => "ahead",
            Mode::Claims(_) => "claims",
        }
    }
}

/// Records the fetch's outcome on its span.
fn record(result: &Result<AccessToken, TokenError>, attempts: u32, took: Duration) {
    let span = tracing::Span::current();
    span.record("attempts", attempts);
    span.record("duration_ms", took.as_millis() as u64);
    match result {
        Ok(_) => {
            span.record("outcome", "ok");
        }
        Err(error) => {
            span.record("outcome", tracing::field::debug(error.kind()));
            if let Some(e) = error.entra() {
                span.record("aadsts", tracing::field::debug(e.codes()));
                if let Some(t) = e.trace_id() {
                    span.record("trace_id", t);
                }
                if let Some(c) = e.correlation_id() {
                    span.record("correlation_id", c);
                }
            }
        }
    }
}
