//! Claims challenges (Continuous Access Evaluation) and refused tokens: what the provider does
//! when an API answers 401 to a token it handed out.

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::state::{ClaimsRequest, FORCED_RENEWAL_INTERVAL, InFlight};
use super::{Acquire, Asked, Refused, SharedFetch, TokenProvider, join_until, no_runtime, ready};
use crate::challenge::merge_claims;
use crate::error::TokenError;
use crate::refusal::Reaction;
use crate::token::AccessToken;

/// What the provider did about an API's refusal of a token.
pub(crate) enum Renewal {
    /// Nothing: no refusal, or the token was renewed too recently to do it again.
    None,
    /// The refused token is no longer cached; a replay gets another.
    Renewed,
    /// A token carrying the challenge's claims is being fetched.
    Fetching(Acquire),
}

impl TokenProvider {
    /// Fetches a new token carrying `claims` (the JSON object of a claims challenge, decoded;
    /// see [`BearerChallenge::claims`](crate::BearerChallenge::claims)), merged with the
    /// client capabilities. The cache is bypassed; the new token is cached unless a fetch started
    /// later has already cached its own.
    /// Concurrent calls with the same claims share one request.
    ///
    /// [`EntraAuth`](crate::EntraAuth) calls this itself when an API answers 401
    /// `insufficient_claims`; call it when you handle responses yourself.
    pub async fn token_with_claims(&self, claims: &str) -> Result<AccessToken, TokenError> {
        let merged = self.merged_claims(claims)?;
        let runtime = Handle::try_current().map_err(|_| no_runtime())?;
        self.claims_fetch(merged, &runtime).await
    }

    /// The fetch for `merged` claims in flight, or a new one. Not async: the lock must not be
    /// held by a waiter.
    fn claims_fetch(&self, merged: String, runtime: &Handle) -> SharedFetch {
        match self.ask_claims(merged.clone(), runtime) {
            Asked::Join(fetch, deadline) => self.join_claims_until(fetch, deadline, merged),
            Asked::Wait(fetch) => fetch,
            Asked::Token(token) => ready(Ok(token)),
        }
    }

    /// The claims fetch in flight for `merged`, or a new one started.
    fn ask_claims(&self, merged: String, runtime: &Handle) -> Asked {
        let mut state = self.inner.lock_state();
        match state.claims_request(Instant::now(), merged) {
            InFlight::Join(fetch, deadline) => Asked::Join(fetch, deadline),
            InFlight::Start(start) => Asked::Wait(self.launch(state, start, runtime)),
        }
    }

    /// The claims fetch in flight, waited on until its deadline; then a new one, here.
    fn join_claims_until(
        &self,
        fetch: SharedFetch,
        deadline: Instant,
        merged: String,
    ) -> SharedFetch {
        let provider = self.clone();
        join_until(fetch, deadline, move || match Handle::try_current() {
            Ok(runtime) => provider.ask_claims(merged.clone(), &runtime),
            Err(_) => Asked::Wait(ready(Err(no_runtime()))),
        })
    }

    /// Acts on an API's refusal of `used`: drops it on `invalid_token`, fetches a token with the
    /// claims of a claims challenge. Each at most once per [`FORCED_RENEWAL_INTERVAL`].
    pub(crate) fn on_refusal(&self, used: &AccessToken, reaction: Reaction) -> Renewal {
        match reaction {
            Reaction::None => Renewal::None,
            Reaction::Invalidate => match self.refuse(used) {
                Refused::Dropped | Refused::AlreadyReplaced => Renewal::Renewed,
                Refused::RateLimited => Renewal::None,
            },
            Reaction::Claims(claims) => self.reauthorize(used, &claims),
        }
    }

    fn reauthorize(&self, used: &AccessToken, claims: &str) -> Renewal {
        let merged = match self.merged_claims(claims) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a claims challenge");
                return Renewal::None;
            }
        };
        let Ok(runtime) = Handle::try_current() else {
            return Renewal::Fetching(Acquire::Waiting(ready(Err(no_runtime()))));
        };
        let mut state = self.inner.lock_state();
        match state.claims_challenge(Instant::now(), used, merged.clone()) {
            ClaimsRequest::Serve(token) => Renewal::Fetching(Acquire::Ready(Some(token))),
            ClaimsRequest::Join(fetch, deadline) => {
                drop(state);
                Renewal::Fetching(Acquire::Waiting(
                    self.join_claims_until(fetch, deadline, merged),
                ))
            }
            ClaimsRequest::Start(start) => {
                Renewal::Fetching(Acquire::Waiting(self.launch(state, start, &runtime)))
            }
            ClaimsRequest::RateLimited => {
                drop(state);
                tracing::debug!(
                    scope = %self.inner.scope,
                    interval_s = FORCED_RENEWAL_INTERVAL.as_secs(),
                    "another claims challenge within the interval of the last claims fetch; not fetching again"
                );
                Renewal::None
            }
        }
    }

    fn merged_claims(&self, claims: &str) -> Result<String, TokenError> {
        merge_claims(self.inner.capabilities.as_deref(), claims).ok_or_else(|| {
            TokenError::configuration(
                "the claims of a claims challenge must be a JSON object (decoded from the challenge's base64 `claims` value)",
            )
        })
    }
}
