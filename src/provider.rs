//! [`TokenProvider`]: the handle on a shared token cache, its counters and its tracing.
//!
//! What happens when is decided in [`state`], as pure transitions: a cached token is served by a
//! lock-free read (of this thread's copy, see [`local`]; with no clock read while the token is
//! known fresh, see [`watch`]) until it is due for a refresh ahead (one fetch, in a spawned task,
//! while requests go on with the held token) or stops being usable (every caller joins the one
//! fetch in flight, or starts it); a failed fetch sets a backoff (at least `Retry-After`) during
//! which callers with no usable token get its error at once; a fetch's token is cached only if
//! no later-started fetch's token is; an API's refusal forces a new token at most once per 30 s.
//! [`fetch`] runs one fetch (spawned, so that dropping the caller that started it cancels
//! nothing; retried with backoff; its result, error included, goes to every waiter). This file
//! locks, calls a transition, and performs what it returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::credential::{Credential, TokenRequest};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

mod builder;
mod claims;
mod fetch;
mod local;
mod metrics;
mod roles;
mod state;
#[cfg(test)]
mod tests;
mod watch;

pub use builder::TokenProviderBuilder;
pub(crate) use claims::Renewal;
pub(crate) use local::Lease;

use builder::ProviderOptions;
use state::{Cached, Freshness, Mode, Refused, Request, Start, State};
use watch::{Generation, RefreshTimer};

/// Hands out tokens for one scope, from one credential.
///
/// Clone it freely: clones share one cache, so one token request serves them all. Needs a tokio
/// runtime with its timers enabled (as `#[tokio::main]` and `Builder::enable_all` give): fetches
/// run in spawned tasks, and a timer marks each token's refresh point. Outside a runtime,
/// [`token`](Self::token) returns a `Configuration` error.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_entra::TokenError> {
/// use tower_entra::{ClientSecretCredential, TokenProvider};
///
/// let credential = ClientSecretCredential::new("contoso.onmicrosoft.com", "client-id", "secret")?;
/// let provider = TokenProvider::new(credential, "https://graph.microsoft.com/.default")?;
/// let token = provider.token().await?;
/// println!("token expires at {:?}", token.expires_on());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

/// What the clones of one provider share.
struct Inner {
    credential: Arc<dyn Credential>,
    scope: String,
    /// The `claims` JSON of the client capabilities (`cp1`), sent with every ordinary fetch.
    capabilities: Option<String>,
    /// The state's cached token, published for lock-free reads; stored only under the lock.
    current: ArcSwapOption<Cached>,
    /// Bumped after each publish of `current`: a thread serves its own copy of the token (see
    /// [`local`]) while this has not moved; also says whether the token is before its refresh
    /// point (see [`watch`]).
    generation: Generation,
    /// Clears the fresh bit of `generation` at the published token's refresh point.
    refresh_timer: RefreshTimer,
    /// Where each thread keeps its copy of the token (see [`local`]).
    slot: local::Slot,
    state: Mutex<State<SharedFetch>>,
    options: ProviderOptions,
    counters: Counters,
    /// OpenTelemetry instruments (feature `opentelemetry`; nothing without it), recorded where
    /// the counters are, off the cached path.
    metrics: metrics::Metrics,
    /// Outside the state lock, so that `stats()` never waits on it (a subscriber or health
    /// check may call it while a fetch logs under the lock).
    last_error: ArcSwapOption<TokenError>,
    /// The entry in the cache shared with other replicas, when one was given.
    #[cfg(feature = "shared-cache")]
    shared: Option<crate::shared_cache::SharedEntry>,
    /// The token an API refused last: a value read from the shared cache must be newer.
    #[cfg(feature = "shared-cache")]
    refused: ArcSwapOption<AccessToken>,
}

/// What [`TokenProvider::stats`] and the meters report of the shared cache.
#[derive(Default)]
pub(crate) struct SharedCounts {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) lease_waits: u64,
    pub(crate) errors: u64,
    pub(crate) skipping: bool,
}

type SharedFetch = Shared<BoxFuture<'static, Result<AccessToken, TokenError>>>;

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

impl Counters {
    /// A token request failed.
    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A token request succeeded at `at`.
    fn succeeded(&self, at: SystemTime) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let nanos = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // 0 means never; a clock set before 1970 still records a success.
        self.last_success_unix_nanos
            .store(nanos.max(1), Ordering::Relaxed);
    }

    fn last_success(&self) -> Option<SystemTime> {
        match self.last_success_unix_nanos.load(Ordering::Relaxed) {
            0 => None,
            nanos => UNIX_EPOCH.checked_add(Duration::from_nanos(nanos)),
        }
    }
}

/// Counters for health endpoints and dashboards. Taken with [`TokenProvider::stats`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Token requests sent (every attempt, retries included).
    pub fetches: u64,
    /// Token requests that failed.
    pub failures: u64,
    /// Refreshes started ahead of expiry while a valid token was held.
    pub refreshes_ahead: u64,
    /// Tokens dropped because an API refused them (by the layer, or [`TokenProvider::invalidate`]).
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
    /// Tokens taken from the [shared cache](TokenProviderBuilder::shared_cache) instead of
    /// asking Entra (read before a fetch, or written by the replica that held the lease).
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

impl TokenProvider {
    /// A provider for `scope` (`<application ID URI>/.default`) with default settings.
    ///
    /// Refuses, with an error that explains the rule, a scope that does not end in `/.default` or
    /// that names more than one resource.
    pub fn new(credential: impl Credential, scope: impl Into<String>) -> Result<Self, TokenError> {
        Self::builder(credential, scope).build()
    }

    /// A builder, to tune margins and retries.
    pub fn builder(credential: impl Credential, scope: impl Into<String>) -> TokenProviderBuilder {
        Self::builder_shared(Arc::new(credential), scope)
    }

    /// A builder over a credential shared with other providers (one app, several APIs).
    ///
    /// ```
    /// # fn demo() -> Result<(), tower_entra::TokenError> {
    /// use std::sync::Arc;
    /// use tower_entra::{ClientSecretCredential, Credential, TokenProvider};
    ///
    /// let app: Arc<dyn Credential> = Arc::new(ClientSecretCredential::new("contoso.onmicrosoft.com", "id", "secret")?);
    /// let graph = TokenProvider::builder_shared(app.clone(), "https://graph.microsoft.com/.default").build()?;
    /// let arm = TokenProvider::builder_shared(app, "https://management.azure.com/.default").build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder_shared(
        credential: Arc<dyn Credential>,
        scope: impl Into<String>,
    ) -> TokenProviderBuilder {
        TokenProviderBuilder::new(credential, scope.into())
    }

    /// The scope tokens are for.
    pub fn scope(&self) -> &str {
        &self.inner.scope
    }

    /// A token that is valid now: the cached one, or a fresh one from the single fetch in flight.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        self.acquire().await
    }

    /// Gets a token now, unless a usable one is already cached, and returns the error when none
    /// can be had: call it at start-up to fail fast on a wrong secret, a missing consent or an
    /// unreachable endpoint, instead of at the first request. Transient failures are retried
    /// first, as for any request that waits for a token.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// use tower_entra::{EnvironmentCredential, TokenProvider};
    ///
    /// let provider = TokenProvider::new(EnvironmentCredential::new()?, "https://graph.microsoft.com/.default")?;
    /// if let Err(e) = provider.warm_up().await {
    ///     eprintln!("cannot get a token for Microsoft Graph: {e}");
    ///     std::process::exit(1);
    /// }
    /// // ...serve, with the token cached and refreshed ahead of expiry.
    /// # Ok(()) }
    /// ```
    pub async fn warm_up(&self) -> Result<(), TokenError> {
        self.token().await.map(drop)
    }

    /// This thread's lease on the cached token when it is usable now; starts a refresh ahead
    /// when one is due. Never waits, and while the token is fresh writes nothing that another
    /// core reads (see [`local`]).
    pub(crate) fn lease(&self) -> Option<Lease> {
        let published = self.inner.generation.read();
        let lease = match local::find(&self.inner, published.generation) {
            Some(lease) => lease,
            None => {
                let guard = self.inner.current.load();
                let Some(cached) = guard.as_ref() else {
                    local::forget(&self.inner);
                    return None;
                };
                local::hold(&self.inner, published.generation, cached)
            }
        };
        // The wall clock first, coarse and cheap: it goes on while the machine is suspended,
        // and it stands in for the refresh timer should that be stuck on an undriven runtime.
        match lease.by_wall_clock() {
            Freshness::Unusable => {
                self.expired_in_suspend(&lease);
                return None;
            }
            // Known fresh, with a timer to say otherwise: no precise clock needed.
            Freshness::Fresh if published.fresh => return Some(lease),
            Freshness::Fresh | Freshness::RefreshDue => {}
        }
        let now = Instant::now();
        match lease.freshness(now) {
            Freshness::Fresh => {}
            Freshness::RefreshDue => self.refresh_ahead(now),
            Freshness::Unusable => return None,
        }
        Some(lease)
    }

    /// A future for a usable token that does not borrow `self`.
    pub(crate) fn acquire(&self) -> Acquire {
        match self.lease() {
            Some(lease) => Acquire::Ready(Some(lease.token().clone())),
            None => self.join_or_start_fetch(),
        }
    }

    /// Drops `token` from the cache if it is still the cached one (the API said it is no longer
    /// valid, e.g. a 401 with `error="invalid_token"`), so that the next request fetches a new
    /// token. At most one drop per 30 s: a resource that refuses every token does not turn each
    /// request into a token request.
    pub fn invalidate(&self, token: &AccessToken) {
        self.refuse(token);
    }

    /// Counters and the last error, for health endpoints.
    pub fn stats(&self) -> ProviderStats {
        let c = &self.inner.counters;
        let shared = self.inner.shared_cache_counts().unwrap_or_default();
        ProviderStats {
            fetches: c.fetches.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            refreshes_ahead: c.refreshes_ahead.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            claims_challenges: c.claims_challenges.load(Ordering::Relaxed),
            last_success: c.last_success(),
            consecutive_failures: c.consecutive_failures.load(Ordering::Relaxed),
            token_expires_on: self
                .inner
                .current
                .load()
                .as_ref()
                .map(|c| c.token.expires_on()),
            last_error: self.inner.last_error.load_full().map(|e| (*e).clone()),
            shared_cache_hits: shared.hits,
            shared_cache_misses: shared.misses,
            shared_cache_lease_waits: shared.lease_waits,
            shared_cache_errors: shared.errors,
            shared_cache_skipping: shared.skipping,
        }
    }

    /// An API refused `used`: drops it if it is still cached (rate-limited by the state).
    fn refuse(&self, used: &AccessToken) -> Refused {
        #[cfg(feature = "shared-cache")]
        if self.inner.shared.is_some() {
            self.inner.refused.store(Some(Arc::new(used.clone())));
        }
        let now = Instant::now();
        let mut state = self.inner.lock_state();
        let refused = state.refuse(now, used);
        if refused == Refused::Dropped {
            self.inner.publish(&state);
        }
        drop(state);
        match refused {
            Refused::Dropped => {
                self.inner
                    .counters
                    .invalidations
                    .fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.invalidated();
                tracing::debug!(scope = %self.inner.scope, "token invalidated; the next request fetches a new one");
            }
            Refused::RateLimited => tracing::debug!(
                scope = %self.inner.scope,
                interval_s = state::FORCED_RENEWAL_INTERVAL.as_secs(),
                "token refused again within the interval of the last drop; keeping it"
            ),
            Refused::AlreadyReplaced => {}
        }
        refused
    }

    /// The wall clock says `lease`'s token is no longer usable though tokio's clock says it is:
    /// the machine was suspended. Drops the token so that this request fetches a new one
    /// rather than wait for an API to refuse it.
    fn expired_in_suspend(&self, lease: &Lease) {
        let mut state = self.inner.lock_state();
        if state.expired_in_suspend(lease.cached_id()) {
            self.inner.publish(&state);
            drop(state);
            tracing::info!(scope = %self.inner.scope, "the cached token expired while the machine was suspended; fetching a new one");
        }
    }

    fn refresh_ahead(&self, now: Instant) {
        // Without a runtime there is nothing to refresh on; the token is still usable.
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        // Contended means another request is deciding right now; it will do.
        let mut state = match self.inner.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        match state.request(now) {
            Request::ServeAndRefresh(_, start) | Request::Start(start) => {
                // Nobody here waits for it; its result lands in the cache.
                let _refresh = self.launch(state, start, &runtime);
            }
            Request::Serve(_) | Request::Join(..) | Request::Fail(_) => {}
        }
    }

    fn join_or_start_fetch(&self) -> Acquire {
        match self.ask() {
            Asked::Token(token) => Acquire::Ready(Some(token)),
            Asked::Wait(fetch) => Acquire::Waiting(fetch),
            Asked::Join(fetch, deadline) => {
                let provider = self.clone();
                Acquire::Waiting(join_until(fetch, deadline, move || provider.ask()))
            }
        }
    }

    /// What the state gives a request for a token now, with the fetch it asks for started.
    fn ask(&self) -> Asked {
        let Ok(runtime) = Handle::try_current() else {
            return Asked::Wait(ready(Err(no_runtime())));
        };
        let mut state = self.inner.lock_state();
        match state.request(Instant::now()) {
            Request::Serve(token) => Asked::Token(token),
            Request::ServeAndRefresh(token, start) => {
                let _refresh = self.launch(state, start, &runtime);
                Asked::Token(token)
            }
            Request::Join(fetch, deadline) => Asked::Join(fetch, deadline),
            Request::Start(start) => Asked::Wait(self.launch(state, start, &runtime)),
            Request::Fail(error) => Asked::Wait(ready(Err(error))),
        }
    }

    /// Starts the fetch the state asked for: records it in the locked `state`, then unlocks and
    /// spawns it (a task dropped at once by a runtime shutting down frees its slot, which takes
    /// the lock).
    fn launch(
        &self,
        mut state: MutexGuard<'_, State<SharedFetch>>,
        start: Start,
        runtime: &Handle,
    ) -> SharedFetch {
        let (fetch, task) = fetch::prepare(self.inner.clone(), &start);
        state.started(&start, fetch.clone());
        drop(state);
        if start.replaces_dead {
            tracing::warn!(
                scope = %self.inner.scope,
                "a token fetch ran past its deadline (its task may sit on a runtime that is no longer driven); starting another on this runtime"
            );
        }
        let counter = match start.mode {
            Mode::Cold => None,
            Mode::Ahead => Some(&self.inner.counters.refreshes_ahead),
            Mode::Claims(_) => Some(&self.inner.counters.claims_challenges),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Mode::Claims(_) = start.mode {
            self.inner.metrics.claims_challenge();
        }
        runtime.spawn(task);
        fetch
    }
}

/// How long a caller waits before asking again when the state hands it a fetch already past its
/// deadline by the caller's clock.
const REJOIN_PAUSE: Duration = Duration::from_millis(10);

/// What asking the state for a token gives, once the fetch it asked for is started.
enum Asked {
    Token(AccessToken),
    /// A fetch to wait on to the end.
    Wait(SharedFetch),
    /// A fetch in flight, to wait on until its deadline.
    Join(SharedFetch, Instant),
}

/// `fetch`, waited on from this caller's runtime until `deadline`. Past it the fetch counts as
/// dead (its task may sit on a current-thread runtime that nobody drives any more, where it
/// would never end), and `ask` asks anew: the state then starts a new fetch, on this runtime (or
/// gives another fetch in flight, waited on in turn, in a loop rather than nested futures). The
/// timer is made when the caller first polls, so it runs on the caller's runtime.
fn join_until<F>(fetch: SharedFetch, deadline: Instant, ask: F) -> SharedFetch
where
    F: Fn() -> Asked + Send + 'static,
{
    async move {
        let (mut fetch, mut deadline) = (fetch, deadline);
        loop {
            if let Ok(result) = tokio::time::timeout_at(deadline, fetch).await {
                return result;
            }
            match ask() {
                Asked::Token(token) => return Ok(token),
                Asked::Wait(started) => return started.await,
                Asked::Join(other, until) => {
                    // The state joins only a fetch before its deadline; should this caller's
                    // clock disagree (a future moved between runtimes), pause between attempts
                    // rather than spin.
                    if until <= Instant::now() {
                        tokio::time::sleep(REJOIN_PAUSE).await;
                    }
                    (fetch, deadline) = (other, until);
                }
            }
        }
    }
    .boxed()
    .shared()
}

/// A fetch that is already over.
fn ready(result: Result<AccessToken, TokenError>) -> SharedFetch {
    futures::future::ready(result).boxed().shared()
}

fn no_runtime() -> TokenError {
    TokenError::configuration(
        "TokenProvider fetches tokens on the tokio runtime, and none is running here; use it from within a tokio runtime (e.g. #[tokio::main])",
    )
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State<SharedFetch>> {
        // The state is consistent at every unlock, so a panic elsewhere does not poison it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the state's cached token to the lock-free readers; `state` is the locked state.
    fn publish(self: &Arc<Self>, state: &State<SharedFetch>) {
        let current = state.current().cloned();
        let refresh_at = current.as_ref().map(|c| c.refresh_at);
        self.current.store(current);
        watch::publish(self, refresh_at);
    }

    /// The shared cache's counts; `None` without one.
    fn shared_cache_counts(&self) -> Option<SharedCounts> {
        #[cfg(feature = "shared-cache")]
        if let Some(shared) = &self.shared {
            let counts = shared.counts();
            return Some(SharedCounts {
                hits: counts.hits.load(Ordering::Relaxed),
                misses: counts.misses.load(Ordering::Relaxed),
                lease_waits: counts.lease_waits.load(Ordering::Relaxed),
                errors: counts.errors.load(Ordering::Relaxed),
                skipping: shared.is_skipping(),
            });
        }
        None
    }

    /// Whether the cached token is usable at `now`.
    fn usable(&self, now: Instant) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|c| c.freshness(now) != Freshness::Unusable)
    }

    /// The token request every ordinary fetch sends: the scope, and the client capabilities
    /// when configured.
    fn token_request(&self) -> TokenRequest<'_> {
        let request = TokenRequest::new(&self.scope);
        match &self.capabilities {
            Some(claims) => request.with_claims(claims),
            None => request,
        }
    }
}

/// The future of [`TokenProvider::acquire`]: ready at once when cached.
pub(crate) enum Acquire {
    Ready(Option<AccessToken>),
    Waiting(SharedFetch),
}

impl Future for Acquire {
    type Output = Result<AccessToken, TokenError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Acquire::Ready(token) => Poll::Ready(token.take().ok_or_else(|| {
                TokenError::new(
                    TokenErrorKind::Configuration,
                    "token future polled after completion",
                )
            })),
            Acquire::Waiting(fetch) => fetch.poll_unpin(cx),
        }
    }
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("credential", &self.inner.credential)
            .field("scope", &self.inner.scope)
            .field(
                "cached",
                &self.inner.current.load().as_ref().map(|c| &c.token),
            )
            .finish()
    }
}
