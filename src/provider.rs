//! [`TokenProvider`]: the shared token cache with single-flight fetches and refresh ahead.
//!
//! The state machine, in one place:
//! - A cached token is served by a lock-free read while `now < usable_until`
//!   (`expires_at` minus a margin).
//! - From `refresh_at` on (Entra's `refresh_in`, else 5 minutes or half the lifetime before
//!   expiry, moved earlier by jitter), the first request that sees it starts one fetch in a spawned
//!   task and goes on with the cached token. If that fetch fails the old token stays, and the
//!   next attempt waits for a backoff (at least `Retry-After`).
//! - With no usable token, every caller joins the one fetch in flight, or starts it. The fetch
//!   runs in a spawned task, so dropping the caller that started it cancels nothing; its result,
//!   error included, goes to every waiter. Transient failures are retried inside it with
//!   exponential backoff and jitter, within a bounded number of attempts. After a failed fetch,
//!   callers with no usable token get its error at once until the backoff passes (at most
//!   `max_backoff`), so a broken configuration costs Entra one request per backoff, not one per
//!   request.

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
use tracing::Instrument;

use crate::credential::{Credential, TokenRequest};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

mod claims;

/// Hands out tokens for one scope, from one credential.
///
/// Clone it freely: clones share one cache, so one token request serves them all. Needs a tokio
/// runtime (fetches run in spawned tasks).
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
    current: ArcSwapOption<Cached>,
    state: Mutex<FetchState>,
    options: ProviderOptions,
    counters: Counters,
    /// Client capabilities and claims-challenge fetches (see `claims.rs`).
    cae: claims::Cae,
}

/// A token with the instants the hot path compares against.
struct Cached {
    token: AccessToken,
    usable_until: Instant,
    refresh_at: Instant,
}

impl Cached {
    /// The cache entry for a token fetched at `now`: usable until a margin before expiry
    /// (at most a quarter of its lifetime), refreshed from its `refresh_at` moved earlier by
    /// random jitter (at most a fifth of the refresh window) so that a fleet spreads out.
    fn new(options: &ProviderOptions, token: &AccessToken, now: Instant) -> Cached {
        let lifetime = token.expires_at().saturating_duration_since(now);
        let margin = options.expiry_margin.min(lifetime / 4);
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
            .max(now);
        Cached {
            usable_until: token.expires_at() - margin,
            refresh_at,
            token: token.clone(),
        }
    }
}

#[derive(Default)]
struct FetchState {
    inflight: Option<SharedFetch>,
    /// No refresh ahead starts before this (backoff after a failed one).
    refresh_not_before: Option<Instant>,
    /// With no usable token, callers get `last_error` at once until this (the same backoff,
    /// capped at `max_backoff`), so a broken configuration does not flood Entra.
    cold_retry_at: Option<Instant>,
    consecutive_failures: u32,
    last_error: Option<TokenError>,
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

#[derive(Debug, Clone)]
struct ProviderOptions {
    expiry_margin: Duration,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    refresh_jitter: Duration,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            expiry_margin: Duration::from_secs(30),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            refresh_jitter: Duration::from_secs(60),
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
    /// Tokens dropped by [`TokenProvider::invalidate`].
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
        TokenProviderBuilder {
            credential,
            scope: scope.into(),
            options: ProviderOptions::default(),
            client_capabilities: Vec::new(),
        }
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
    /// valid, e.g. a 401 with `error="invalid_token"`). The next request fetches a new token.
    pub fn invalidate(&self, token: &AccessToken) {
        let current = self.shared.current.load();
        if let Some(cached) = current.as_ref() {
            if cached.token.same_token(token) {
                let prev = self
                    .shared
                    .current
                    .compare_and_swap(&*current, None::<Arc<Cached>>);
                if arc_swap::Guard::into_inner(prev).is_some_and(|p| p.token.same_token(token)) {
                    self.shared
                        .counters
                        .invalidations
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(scope = %self.shared.scope, "token invalidated; the next request fetches a new one");
                }
            }
        }
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
            last_error: self.shared.lock_state().last_error.clone(),
        }
    }

    fn maybe_refresh_ahead(&self, now: Instant) {
        // Contended means another request is deciding right now; it will do.
        let Ok(mut state) = self.shared.state.try_lock() else {
            return;
        };
        if state.inflight.is_some() || state.refresh_not_before.is_some_and(|t| now < t) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.shared
            .counters
            .refreshes_ahead
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(scope = %self.shared.scope, "token in its refresh window; refreshing in the background");
        let fetch = spawn_fetch(self.shared.clone(), Mode::Ahead);
        state.inflight = Some(fetch);
    }

    fn join_or_start_fetch(&self) -> SharedFetch {
        let mut state = self.shared.lock_state();
        if let Some(fetch) = &state.inflight {
            return fetch.clone();
        }
        let now = Instant::now();
        // A fetch may have finished between the cache miss and the lock.
        if let Some(cached) = self.shared.current.load().as_ref() {
            if now < cached.usable_until {
                let token = cached.token.clone();
                return futures::future::ready(Ok(token)).boxed().shared();
            }
        }
        if let (Some(at), Some(error)) = (state.cold_retry_at, &state.last_error) {
            if now < at {
                return futures::future::ready(Err(error.clone())).boxed().shared();
            }
        }
        tracing::debug!(scope = %self.shared.scope, "no usable token; fetching");
        let fetch = spawn_fetch(self.shared.clone(), Mode::Cold);
        state.inflight = Some(fetch.clone());
        fetch
    }
}

impl Shared_ {
    fn lock_state(&self) -> MutexGuard<'_, FetchState> {
        // The state is consistent at every unlock, so a panic elsewhere does not poison it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// No usable token: callers wait; transient failures are retried within the fetch.
    Cold,
    /// A usable token is held: one attempt; on failure the next waits for a backoff.
    Ahead,
    /// A claims challenge: a token carrying these (merged) claims, bypassing the cache; callers
    /// wait, so transient failures are retried as for `Cold`.
    Claims(String),
}

/// Starts one fetch in a spawned task, so that dropping the caller cancels nothing, and returns
/// a future every waiter can share.
fn spawn_fetch(shared: Arc<Shared_>, mode: Mode) -> SharedFetch {
    let (tenant, client) = shared.credential.identity().unwrap_or(("", ""));
    let span = tracing::info_span!(
        "entra_token_fetch",
        tenant_id = %tenant,
        client_id = %client,
        scope = %shared.scope,
        mode = mode.name(),
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
        aadsts = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Without a runtime there is nothing to run the fetch on; say so instead of panicking.
        let error = TokenError::configuration(
            "TokenProvider fetches tokens on the tokio runtime, and none is running here; use it from within a tokio runtime (e.g. #[tokio::main])",
        );
        return futures::future::ready(Err(error)).boxed().shared();
    };
    let task = runtime.spawn(run_fetch(shared, mode).instrument(span));
    async move {
        task.await.unwrap_or_else(|e| {
            Err(TokenError::new(
                TokenErrorKind::Connection,
                if e.is_cancelled() {
                    "the token fetch was cancelled (the runtime is shutting down)"
                } else {
                    "the token fetch panicked"
                },
            ))
        })
    }
    .boxed()
    .shared()
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Ahead => "ahead",
            Mode::Claims(_) => "claims",
        }
    }
}

async fn run_fetch(shared: Arc<Shared_>, mode: Mode) -> Result<AccessToken, TokenError> {
    let started = Instant::now();
    let span = tracing::Span::current();
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        shared.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let request = match &mode {
            Mode::Claims(claims) => TokenRequest::new(&shared.scope).with_claims(claims),
            Mode::Cold | Mode::Ahead => shared.token_request(),
        };
        let error = match shared.credential.request_token(request).await {
            Ok(token) => break Ok(token),
            Err(e) => e,
        };
        shared.counters.failures.fetch_add(1, Ordering::Relaxed);
        let delay = retry_delay(&shared.options, attempt, &error);
        let retry = mode != Mode::Ahead
            && error.is_transient()
            && attempt < shared.options.max_attempts
            && delay <= shared.options.max_backoff.max(Duration::from_secs(60));
        if !retry {
            break Err(error);
        }
        tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "token request failed; retrying");
        tokio::time::sleep(delay).await;
    };

    let now = Instant::now();
    span.record("attempts", attempt);
    span.record("duration_ms", (now - started).as_millis() as u64);
    match &result {
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
    if let Mode::Claims(claims) = mode {
        claims::finish(&shared, claims, &result, now);
        return result;
    }

    let mut state = shared.lock_state();
    match &result {
        Ok(token) => {
            shared
                .current
                .store(Some(Arc::new(Cached::new(&shared.options, token, now))));
            state.refresh_not_before = None;
            state.cold_retry_at = None;
            state.consecutive_failures = 0;
            state.last_error = None;
        }
        Err(error) => {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            let backoff = retry_delay(&shared.options, state.consecutive_failures, error);
            state.refresh_not_before = Some(now + backoff);
            state.cold_retry_at = Some(now + backoff.min(shared.options.max_backoff));
            state.last_error = Some(error.clone());
            if mode == Mode::Ahead {
                tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "refresh ahead of expiry failed; still using the cached token");
            } else {
                tracing::warn!(error = %error, "token request failed");
            }
        }
    }
    state.inflight = None;
    result
}

/// Exponential backoff with full jitter in its upper half, never less than `Retry-After`.
fn retry_delay(options: &ProviderOptions, attempt: u32, error: &TokenError) -> Duration {
    let exp = options
        .initial_backoff
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(options.max_backoff);
    let jittered = exp.mul_f64(0.5 + fastrand::f64() / 2.0);
    match error.retry_after() {
        Some(ra) => ra.max(jittered.min(ra + options.initial_backoff)),
        None => jittered,
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

/// Builds a [`TokenProvider`].
pub struct TokenProviderBuilder {
    credential: Arc<dyn Credential>,
    scope: String,
    options: ProviderOptions,
    client_capabilities: Vec<String>,
}

impl TokenProviderBuilder {
    /// A token is used until this long before it expires (capped at a quarter of its lifetime),
    /// so that it does not expire in flight. Default 30 s.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.options.expiry_margin = margin;
        self
    }

    /// How many times a token request is tried when no usable token is held and it fails
    /// transiently (5xx, 429, timeouts, connection errors). Default 4; at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.options.max_attempts = attempts.max(1);
        self
    }

    /// The first retry's backoff (doubled each time, up to [`max_backoff`](Self::max_backoff)).
    /// Default 500 ms.
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.options.initial_backoff = backoff;
        self
    }

    /// The longest backoff between attempts, and the longest time a failed fetch's error is
    /// handed out at once to callers with no usable token. Default 30 s.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.options.max_backoff = backoff;
        self
    }

    /// The most a refresh ahead is moved earlier at random (capped at a fifth of the refresh
    /// window), so that a fleet started together does not refresh together. Default 60 s.
    pub fn refresh_jitter(mut self, jitter: Duration) -> Self {
        self.options.refresh_jitter = jitter;
        self
    }

    /// Checks the scope and builds the provider.
    pub fn build(self) -> Result<TokenProvider, TokenError> {
        check_scope(&self.scope)?;
        Ok(TokenProvider {
            shared: Arc::new(Shared_ {
                credential: self.credential,
                scope: self.scope,
                current: ArcSwapOption::empty(),
                state: Mutex::new(FetchState::default()),
                options: self.options,
                counters: Counters::default(),
                cae: claims::Cae::new(&self.client_capabilities),
            }),
        })
    }
}

impl fmt::Debug for TokenProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProviderBuilder")
            .field("credential", &self.credential)
            .field("scope", &self.scope)
            .field("options", &self.options)
            .finish()
    }
}

/// Client credentials take exactly one scope: `<application ID URI>/.default`.
pub(crate) fn check_scope(scope: &str) -> Result<(), TokenError> {
    const RULE: &str = "the client credentials flow takes exactly one scope, `<application ID URI>/.default` (e.g. `https://graph.microsoft.com/.default`); the permissions themselves are granted to the app registration, with admin consent";
    let parts: Vec<&str> = scope.split_whitespace().collect();
    let err =
        |what: String| TokenError::new(TokenErrorKind::InvalidScope, format!("{what}: {RULE}"));
    match parts.as_slice() {
        [] => Err(err("the scope is empty".into())),
        [one] => match one.strip_suffix("/.default") {
            Some(resource) if !resource.is_empty() => Ok(()),
            Some(_) => Err(err(format!("the scope {one:?} names no resource"))),
            None => Err(err(format!("the scope {one:?} does not end in /.default"))),
        },
        many => Err(err(format!(
            "the scope {scope:?} has {} scopes",
            many.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_rules() {
        assert!(check_scope("https://graph.microsoft.com/.default").is_ok());
        assert!(check_scope("api://0000-1111/.default").is_ok());
        for bad in [
            "",
            "https://graph.microsoft.com/User.Read",
            "https://graph.microsoft.com/.default https://management.azure.com/.default",
            "/.default",
        ] {
            let e = check_scope(bad).unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidScope);
            assert!(
                e.to_string().contains("<application ID URI>/.default"),
                "{e}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let o = ProviderOptions::default();
        let plain = TokenError::new(TokenErrorKind::Transient, "x");
        let d1 = retry_delay(&o, 1, &plain);
        let d4 = retry_delay(&o, 4, &plain);
        assert!(
            d1 >= Duration::from_millis(250) && d1 <= Duration::from_millis(500),
            "{d1:?}"
        );
        assert!(
            d4 >= Duration::from_secs(2) && d4 <= Duration::from_secs(4),
            "{d4:?}"
        );
        assert!(retry_delay(&o, 20, &plain) <= o.max_backoff);
        let ra = plain
            .clone()
            .with_retry_after(Some(Duration::from_secs(10)));
        let ra = TokenError::new(TokenErrorKind::Transient, "x").with_retry_after(ra.retry_after());
        assert!(retry_delay(&o, 1, &ra) >= Duration::from_secs(10));
    }
}
