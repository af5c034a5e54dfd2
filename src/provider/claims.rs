//! Continuous Access Evaluation (CAE) for [`TokenProvider`]: client capabilities sent with
//! every token request, and claims-challenge fetches that bypass the cache.
//!
//! Kept apart from the single-flight / refresh-ahead machinery of the parent module: a claims
//! fetch has its own single-flight slot (keyed by the claims), and on success it replaces the
//! cached token, which every later request then uses.

use super::*;

use crate::challenge::{capabilities_claims, merge_claims};

/// The CAE part of a provider's shared state.
pub(super) struct Cae {
    /// The `claims` JSON for the client capabilities, e.g. `{"access_token":{"xms_cc":{"values":["cp1"]}}}`.
    capabilities: Option<String>,
    state: Mutex<ClaimsState>,
}

#[derive(Default)]
struct ClaimsState {
    /// The claims fetch in flight and its (merged) claims.
    inflight: Option<(String, SharedFetch)>,
    /// The last token a claims fetch got, and its claims.
    done: Option<(String, AccessToken)>,
}

impl Cae {
    pub(super) fn new(capabilities: &[String]) -> Cae {
        Cae {
            capabilities: capabilities_claims(capabilities),
            state: Mutex::new(ClaimsState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClaimsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Shared_ {
    /// The token request every ordinary fetch sends: the scope, and the client capabilities
    /// when configured.
    pub(super) fn token_request(&self) -> TokenRequest<'_> {
        let request = TokenRequest::new(&self.scope);
        match &self.cae.capabilities {
            Some(claims) => request.with_claims(claims),
            None => request,
        }
    }
}

/// The cache entry for `token`, with the same margin and refresh jitter as any fetch.
fn cache_entry(options: &ProviderOptions, token: &AccessToken, now: Instant) -> Cached {
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

impl TokenProviderBuilder {
    /// Declares client capabilities, sent with every token request as the `claims` parameter.
    /// `["cp1"]` says this client handles Continuous Access Evaluation claims challenges, so
    /// that Entra may issue long-lived (up to about 24 h) CAE tokens, which a resource revokes
    /// at once when it must (`{"access_token":{"xms_cc":{"values":["cp1"]}}}`). Refresh still
    /// follows Entra's `refresh_in`.
    ///
    /// Only declare `cp1` when 401 responses reach an [`EntraAuth`](crate::EntraAuth) layer
    /// (or [`TokenProvider::token_with_claims`]) and requests can be replayed, e.g. with
    /// `RetryOnChallenge` (feature `retry`).
    ///
    /// ```
    /// # fn demo(credential: tower_entra::ClientSecretCredential) -> Result<(), tower_entra::TokenError> {
    /// use tower_entra::TokenProvider;
    ///
    /// let provider = TokenProvider::builder(credential, "https://graph.microsoft.com/.default")
    ///     .client_capabilities(["cp1"])
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn client_capabilities<I>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.client_capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }
}

impl TokenProvider {
    /// Fetches a new token carrying `claims` (the JSON object of a claims challenge, decoded;
    /// see [`BearerChallenge::claims`](crate::BearerChallenge::claims)), merged with the
    /// client capabilities. The cache is bypassed; the new token replaces the cached one.
    /// Concurrent calls with the same claims share one request.
    ///
    /// [`EntraAuth`](crate::EntraAuth) calls this itself when an API answers 401
    /// `insufficient_claims`; call it when you handle responses yourself.
    pub async fn token_with_claims(&self, claims: &str) -> Result<AccessToken, TokenError> {
        let merged = self.merged_claims(claims)?;
        self.join_or_start_claims_fetch(merged).await
    }

    /// After a claims challenge to a request that carried `used`: a token carrying `claims`.
    /// If a claims fetch with the same claims already replaced `used`, that token, without a
    /// new request.
    pub(crate) fn reauthorize(&self, used: &AccessToken, claims: &str) -> Acquire {
        let merged = match self.merged_claims(claims) {
            Ok(m) => m,
            Err(e) => return Acquire::Waiting(futures::future::ready(Err(e)).boxed().shared()),
        };
        {
            let state = self.shared.cae.lock();
            if let Some((done_claims, done)) = &state.done {
                let current = self.shared.current.load();
                if let Some(c) = current.as_ref() {
                    if *done_claims == merged
                        && c.token.same_token(done)
                        && !done.same_token(used)
                        && Instant::now() < c.usable_until
                    {
                        return Acquire::Ready(Some(c.token.clone()));
                    }
                }
            }
        }
        Acquire::Waiting(self.join_or_start_claims_fetch(merged))
    }

    fn merged_claims(&self, claims: &str) -> Result<String, TokenError> {
        merge_claims(self.shared.cae.capabilities.as_deref(), claims).ok_or_else(|| {
            TokenError::configuration(
                "the claims of a claims challenge must be a JSON object (decoded from the challenge's base64 `claims` value)",
            )
        })
    }

    fn join_or_start_claims_fetch(&self, merged: String) -> SharedFetch {
        let mut state = self.shared.cae.lock();
        if let Some((claims, fetch)) = &state.inflight {
            if *claims == merged {
                return fetch.clone();
            }
        }
        self.shared
            .counters
            .claims_challenges
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(scope = %self.shared.scope, "claims challenge; fetching a token with the claims, bypassing the cache");
        let fetch = spawn_claims_fetch(self.shared.clone(), merged.clone());
        state.inflight = Some((merged, fetch.clone()));
        fetch
    }
}

fn spawn_claims_fetch(shared: Arc<Shared_>, claims: String) -> SharedFetch {
    let (tenant, client) = shared.credential.identity().unwrap_or(("", ""));
    let span = tracing::info_span!(
        "entra_token_fetch",
        tenant_id = %tenant,
        client_id = %client,
        scope = %shared.scope,
        mode = "Claims",
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
        aadsts = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let task = tokio::spawn(run_claims_fetch(shared, claims).instrument(span));
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

async fn run_claims_fetch(shared: Arc<Shared_>, claims: String) -> Result<AccessToken, TokenError> {
    let started = Instant::now();
    let span = tracing::Span::current();
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        shared.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let request = TokenRequest::new(&shared.scope).with_claims(&claims);
        let error = match shared.credential.request_token(request).await {
            Ok(token) => break Ok(token),
            Err(e) => e,
        };
        shared.counters.failures.fetch_add(1, Ordering::Relaxed);
        let delay = retry_delay(&shared.options, attempt, &error);
        if !(error.is_transient()
            && attempt < shared.options.max_attempts
            && delay <= shared.options.max_backoff.max(Duration::from_secs(60)))
        {
            break Err(error);
        }
        tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "token request with claims failed; retrying");
        tokio::time::sleep(delay).await;
    };

    let now = Instant::now();
    span.record("attempts", attempt);
    span.record("duration_ms", (now - started).as_millis() as u64);
    let mut state = shared.cae.lock();
    match &result {
        Ok(token) => {
            span.record("outcome", "ok");
            shared
                .current
                .store(Some(Arc::new(cache_entry(&shared.options, token, now))));
            state.done = Some((claims.clone(), token.clone()));
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
            tracing::warn!(error = %error, "token request with the claims of a claims challenge failed");
            shared.lock_state().last_error = Some(error.clone());
        }
    }
    if state.inflight.as_ref().is_some_and(|(c, _)| *c == claims) {
        state.inflight = None;
    }
    result
}
