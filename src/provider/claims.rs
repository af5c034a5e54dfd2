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
        let fetch = spawn_fetch(self.shared.clone(), Mode::Claims(merged.clone()));
        state.inflight = Some((merged, fetch.clone()));
        fetch
    }
}

/// Records the end of a claims fetch: on success its token replaces the cached one.
pub(super) fn finish(
    shared: &Shared_,
    claims: String,
    result: &Result<AccessToken, TokenError>,
    now: Instant,
) {
    let mut state = shared.cae.lock();
    match result {
        Ok(token) => {
            shared
                .current
                .store(Some(Arc::new(Cached::new(&shared.options, token, now))));
            state.done = Some((claims.clone(), token.clone()));
        }
        Err(error) => {
            tracing::warn!(error = %error, "token request with the claims of a claims challenge failed");
            shared.lock_state().last_error = Some(error.clone());
        }
    }
    if state.inflight.as_ref().is_some_and(|(c, _)| *c == claims) {
        state.inflight = None;
    }
}
