//! [`TokenProvider`]: the shared token cache with single-flight fetches and refresh ahead.
//!
//! The state machine, in one place:
//! - A cached token is served by a lock-free read while `now < usable_until`
//!   (`expires_at` minus a margin).
//! - From `refresh_at` on (Entra's `refresh_in`, else 5 minutes or half the lifetime before
//!   expiry, moved earlier by jitter), a request that sees it starts one fetch in a spawned
//!   task and goes on with the cached token. If that fetch fails the old token stays, and the
//!   next attempt waits for a backoff (at least `Retry-After`).
//! - With no usable token, every caller joins the one fetch in flight, or starts it. The fetch
//!   runs in a spawned task, so dropping the caller that started it cancels nothing; its result,
//!   error included, goes to every waiter. Transient failures are retried inside it with
//!   exponential backoff and jitter, within a bounded number of attempts. After a failed fetch,
//!   callers with no usable token get its error at once until the backoff passes (at most
//!   `max_backoff`), so a broken configuration costs Entra one request per backoff, not one per
//!   request.
//! - Every fetch has an id in start order, and a token is cached only if no later-started
//!   fetch's token is: a slow refresh never replaces the token of a claims challenge.
//! - An API's refusal (a 401 `invalid_token`, or a claims challenge) forces a new token at most
//!   once per [`FORCED_RENEWAL_INTERVAL`], so a resource that refuses every token cannot turn
//!   each request into a token request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use crate::credential::{Credential, TokenRequest};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

mod builder;
mod claims;
mod fetch;

pub use builder::TokenProviderBuilder;
pub(crate) use claims::Renewal;

use builder::ProviderOptions;
use fetch::{Mode, spawn_fetch};

/// How often an API's refusal of a token may force a new one (see the module docs).
pub(crate) const FORCED_RENEWAL_INTERVAL: Duration = Duration::from_secs(30);

/// Hands out tokens for one scope, from one credential.
///
/// Clone it freely: clones share one cache, so one token request serves them all. Needs a tokio
/// runtime (fetches run in spawned tasks); outside one, [`token`](Self::token) returns a
/// `Configuration` error.
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
    shared: Arc<Shared_>,
}

struct Shared_ {
    credential: Arc<dyn Credential>,
    scope: String,
    /// The `claims` JSON of the client capabilities (`cp1`), sent with every ordinary fetch.
    capabilities: Option<String>,
    current: ArcSwapOption<Cached>,
    state: Mutex<FetchState>,
    options: ProviderOptions,
    counters: Counters,
    /// Outside the state lock, so that `stats()` never waits on it (a subscriber or health
    /// check may call it while a fetch logs under the lock).
    last_error: ArcSwapOption<TokenError>,
}

/// A token with the instants the hot path compares against.
struct Cached {
    token: AccessToken,
    usable_until: Instant,
    refresh_at: Instant,
    /// The id of the fetch that got it: a token is only replaced by a later-started fetch's.
    id: u64,
    /// The (merged) claims it was fetched with, for a claims challenge; `None` otherwise.
    claims: Option<String>,
}

impl Cached {
    /// The cache entry for a token fetched at `now`: usable until a margin before expiry
    /// (at most a quarter of its lifetime), refreshed from its `refresh_at` moved earlier by
    /// random jitter (at most a fifth of the refresh window) so that a fleet spreads out, and
    /// never later than it stops being usable.
    fn new(
        options: &ProviderOptions,
        token: &AccessToken,
        now: Instant,
        id: u64,
        claims: Option<String>,
    ) -> Cached {
        let lifetime = token.expires_at().saturating_duration_since(now);
        let margin = options.expiry_margin.min(lifetime / 4);
        let usable_until = token.expires_at() - margin;
        let window = token
            .expires_at()
            .saturating_duration_since(token.refresh_at());
        let jitter = options
            .refresh_jitter
            .min(window / 5)
            .mul_f64(fastrand::f64());
        let refresh_at = token
            .refresh_at()
            .checked_sub(jitter)
            .unwrap_or(now)
            .clamp(now, usable_until.max(now));
        Cached {
            token: token.clone(),
            usable_until,
            refresh_at,
            id,
            claims,
        }
    }
}

#[derive(Default)]
struct FetchState {
    /// The ordinary (cold or ahead) fetch in flight.
    inflight: Option<Inflight>,
    /// The claims fetch in flight, with its merged claims.
    claims_inflight: Option<(String, Inflight)>,
    next_id: u64,
    /// A token is cached only if its fetch id is above this: the id of the last token an API
    /// refused, so that no fetch started before the refusal brings back a token like it.
    min_store_id: u64,
    /// No refresh ahead starts before this (backoff after a failed one).
    refresh_not_before: Option<Instant>,
    /// With no usable token, callers get this error at once until the instant (the backoff,
    /// capped at `max_backoff`), so a broken configuration does not flood Entra.
    cold_error: Option<(Instant, TokenError)>,
    consecutive_failures: u32,
    /// When an API's refusal last dropped the cached token.
    last_invalidation: Option<Instant>,
    /// When the last claims fetch started (one per interval, whatever the claims).
    last_claims_fetch: Option<Instant>,
}

/// A fetch in flight: its id, the future its waiters share, and its task, to tell a fetch that
/// will finish from one whose task was dropped before it ran (a runtime shutting down).
struct Inflight {
    id: u64,
    fetch: SharedFetch,
    task: tokio::task::AbortHandle,
}

impl Inflight {
    fn live(&self) -> Option<&SharedFetch> {
        (!self.task.is_finished()).then_some(&self.fetch)
    }
}

impl FetchState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Frees the slot of fetch `id`, if it still holds it.
    fn free(&mut self, id: u64) {
        if self.inflight.as_ref().is_some_and(|f| f.id == id) {
            self.inflight = None;
        }
        if self
            .claims_inflight
            .as_ref()
            .is_some_and(|(_, f)| f.id == id)
        {
            self.claims_inflight = None;
        }
    }

    /// The ordinary fetch in flight, if its task is still alive.
    fn live_inflight(&self) -> Option<&SharedFetch> {
        self.inflight.as_ref().and_then(Inflight::live)
    }
}

type SharedFetch = Shared<BoxFuture<'static, Result<AccessToken, TokenError>>>;

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    failures: AtomicU64,
    refreshes_ahead: AtomicU64,
    invalidations: AtomicU64,
    claims_challenges: AtomicU64,
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
    pub token_expires_on: Option<std::time::SystemTime>,
    /// The last fetch error, cleared by the next success.
    pub last_error: Option<TokenError>,
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
        &self.shared.scope
    }

    /// A token that is valid now: the cached one, or a fresh one from the single fetch in flight.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        self.acquire().await
    }

    /// The cached token when it is usable now; starts a refresh ahead when one is due. Never waits.
    pub(crate) fn cached(&self) -> Option<AccessToken> {
        let now = Instant::now();
        let guard = self.shared.current.load();
        let cached = guard.as_ref()?;
        if now >= cached.usable_until {
            return None;
        }
        if now >= cached.refresh_at {
            self.maybe_refresh_ahead(now);
        }
        Some(cached.token.clone())
    }

    /// A future for a usable token that does not borrow `self`.
    pub(crate) fn acquire(&self) -> Acquire {
        match self.cached() {
            Some(token) => Acquire::Ready(Some(token)),
            None => Acquire::Waiting(self.join_or_start_fetch()),
        }
    }

    /// Drops `token` from the cache if it is still the cached one (the API said it is no longer
    /// valid, e.g. a 401 with `error="invalid_token"`), so that the next request fetches a new
    /// token. At most one drop per 30 s: a resource that refuses every token does not turn each
    /// request into a token request.
    pub fn invalidate(&self, token: &AccessToken) {
        self.try_invalidate(token);
    }

    /// [`invalidate`](Self::invalidate), saying whether the token was dropped.
    pub(crate) fn try_invalidate(&self, token: &AccessToken) -> bool {
        let mut state = self.shared.lock_state();
        let now = Instant::now();
        if state
            .last_invalidation
            .is_some_and(|at| now < at + FORCED_RENEWAL_INTERVAL)
        {
            drop(state);
            tracing::debug!(scope = %self.shared.scope, "token refused again within 30 s of the last drop; keeping it");
            return false;
        }
        // Every store of `current` happens under the state lock, which is held here.
        let Some(refused) = self
            .shared
            .current
            .load_full()
            .filter(|c| c.token.same_token(token))
        else {
            return false;
        };
        self.shared.current.store(None);
        state.min_store_id = state.min_store_id.max(refused.id);
        state.last_invalidation = Some(now);
        drop(state);
        self.shared
            .counters
            .invalidations
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(scope = %self.shared.scope, "token invalidated; the next request fetches a new one");
        true
    }

    /// Whether the cached token is a different one than `token` (a replay would not resend it).
    pub(crate) fn replaced(&self, token: &AccessToken) -> bool {
        !self
            .shared
            .current
            .load()
            .as_ref()
            .is_some_and(|c| c.token.same_token(token))
    }

    /// Counters and the last error, for health endpoints.
    pub fn stats(&self) -> ProviderStats {
        let c = &self.shared.counters;
        ProviderStats {
            fetches: c.fetches.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            refreshes_ahead: c.refreshes_ahead.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            claims_challenges: c.claims_challenges.load(Ordering::Relaxed),
            token_expires_on: self
                .shared
                .current
                .load()
                .as_ref()
                .map(|c| c.token.expires_on()),
            last_error: self.shared.last_error.load_full().map(|e| (*e).clone()),
        }
    }

    fn maybe_refresh_ahead(&self, now: Instant) {
        // Contended means another request is deciding right now; it will do.
        let mut state = match self.shared.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if state.live_inflight().is_some() || state.refresh_not_before.is_some_and(|t| now < t) {
            return;
        }
        // A refresh may have landed since this request read the cache.
        if self
            .shared
            .current
            .load()
            .as_ref()
            .is_none_or(|c| now < c.refresh_at)
        {
            return;
        }
        let id = state.next_id();
        // Without a runtime there is nothing to refresh on; the token is still usable.
        let Ok((fetch, task)) = spawn_fetch(self.shared.clone(), Mode::Ahead, id) else {
            return;
        };
        self.shared
            .counters
            .refreshes_ahead
            .fetch_add(1, Ordering::Relaxed);
        state.inflight = Some(Inflight { id, fetch, task });
    }

    fn join_or_start_fetch(&self) -> SharedFetch {
        let mut state = self.shared.lock_state();
        if let Some(fetch) = state.live_inflight() {
            return fetch.clone();
        }
        let now = Instant::now();
        // A fetch may have finished between the cache miss and the lock.
        if let Some(token) = self.shared.usable(now) {
            return ready(Ok(token));
        }
        if let Some((until, error)) = &state.cold_error {
            if now < *until {
                return ready(Err(error.clone()));
            }
        }
        let id = state.next_id();
        match spawn_fetch(self.shared.clone(), Mode::Cold, id) {
            Ok((fetch, task)) => {
                state.inflight = Some(Inflight {
                    id,
                    fetch: fetch.clone(),
                    task,
                });
                fetch
            }
            Err(e) => ready(Err(e)),
        }
    }
}

/// A fetch that is already over.
fn ready(result: Result<AccessToken, TokenError>) -> SharedFetch {
    futures::future::ready(result).boxed().shared()
}

impl Shared_ {
    fn lock_state(&self) -> MutexGuard<'_, FetchState> {
        // The state is consistent at every unlock, so a panic elsewhere does not poison it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached token, if it is usable at `now`.
    fn usable(&self, now: Instant) -> Option<AccessToken> {
        self.current
            .load()
            .as_ref()
            .filter(|c| now < c.usable_until)
            .map(|c| c.token.clone())
    }

    /// Caches the token of fetch `id` unless a later-started fetch's token is cached, or a
    /// token at least as new was refused. `state` is the locked state: every store holds it.
    fn store(
        &self,
        state: &FetchState,
        id: u64,
        claims: Option<String>,
        token: &AccessToken,
        now: Instant,
    ) {
        let newer =
            id > state.min_store_id && self.current.load().as_ref().is_none_or(|c| c.id < id);
        if newer {
            let entry = Cached::new(&self.options, token, now, id, claims);
            self.current.store(Some(Arc::new(entry)));
        }
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
            .field("credential", &self.shared.credential)
            .field("scope", &self.shared.scope)
            .field(
                "cached",
                &self.shared.current.load().as_ref().map(|c| &c.token),
            )
            .finish()
    }
}
