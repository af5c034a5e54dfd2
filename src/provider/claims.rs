//! Claims challenges (Continuous Access Evaluation) and refused tokens: what the provider does
//! when an API answers 401 to a token it handed out.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::fetch::{Mode, spawn_fetch};
use super::{
    Acquire, FORCED_RENEWAL_INTERVAL, FetchState, Inflight, SharedFetch, TokenProvider, ready,
};
use crate::challenge::merge_claims;
use crate::error::TokenError;
use crate::refusal::Reaction;
use crate::token::AccessToken;

/// What the provider did about a response's Bearer challenge.
pub(crate) enum Renewal {
    /// Nothing: no challenge, or the token was renewed too recently to do it again.
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
        self.join_or_start_claims_fetch(merged).await
    }

    /// Acts on an API's refusal of `used`: drops it on `invalid_token`, fetches a token with
    /// the claims on `insufficient_claims`. Each at most once per [`FORCED_RENEWAL_INTERVAL`].
    pub(crate) fn on_refusal(&self, used: &AccessToken, reaction: Reaction) -> Renewal {
        match reaction {
            Reaction::None => Renewal::None,
            Reaction::Invalidate => {
                if self.try_invalidate(used) || self.replaced(used) {
                    Renewal::Renewed
                } else {
                    Renewal::None
                }
            }
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
        let now = Instant::now();
        // Checked and started under one lock, so that no other fetch lands in between.
        let mut state = self.shared.lock_state();
        // The cached token already answers these claims, and is not the refused one.
        if let Some(c) = self.shared.current.load().as_ref() {
            if c.claims.as_deref() == Some(merged.as_str())
                && !c.token.same_token(used)
                && now < c.usable_until
            {
                return Renewal::Fetching(Acquire::Ready(Some(c.token.clone())));
            }
        }
        if let Some(fetch) = live_claims_fetch(&state, &merged) {
            return Renewal::Fetching(Acquire::Waiting(fetch.clone()));
        }
        // One claims fetch per interval, whatever the claims: the API that sends challenges
        // must not decide how many requests this app sends to Entra.
        if state
            .last_claims_fetch
            .is_some_and(|at| now < at + FORCED_RENEWAL_INTERVAL)
        {
            drop(state);
            tracing::debug!(scope = %self.shared.scope, "another claims challenge within 30 s; not fetching again");
            return Renewal::None;
        }
        Renewal::Fetching(Acquire::Waiting(
            self.start_claims_fetch(&mut state, merged, now),
        ))
    }

    fn merged_claims(&self, claims: &str) -> Result<String, TokenError> {
        merge_claims(self.shared.capabilities.as_deref(), claims).ok_or_else(|| {
            TokenError::configuration(
                "the claims of a claims challenge must be a JSON object (decoded from the challenge's base64 `claims` value)",
            )
        })
    }

    fn join_or_start_claims_fetch(&self, merged: String) -> SharedFetch {
        let mut state = self.shared.lock_state();
        if let Some(fetch) = live_claims_fetch(&state, &merged) {
            return fetch.clone();
        }
        self.start_claims_fetch(&mut state, merged, Instant::now())
    }

    /// Starts a claims fetch; `state` is the locked state.
    fn start_claims_fetch(
        &self,
        state: &mut FetchState,
        merged: String,
        now: Instant,
    ) -> SharedFetch {
        let id = state.next_id();
        let (fetch, task) = match spawn_fetch(self.shared.clone(), Mode::Claims(merged.clone()), id)
        {
            Ok(started) => started,
            Err(e) => return ready(Err(e)),
        };
        self.shared
            .counters
            .claims_challenges
            .fetch_add(1, Ordering::Relaxed);
        state.last_claims_fetch = Some(now);
        state.claims_inflight = Some((
            merged,
            Inflight {
                id,
                fetch: fetch.clone(),
                task,
            },
        ));
        fetch
    }
}

/// The claims fetch in flight for `merged`, if its task is alive.
fn live_claims_fetch<'a>(state: &'a FetchState, merged: &str) -> Option<&'a SharedFetch> {
    state
        .claims_inflight
        .as_ref()
        .filter(|(claims, _)| claims == merged)
        .and_then(|(_, f)| f.live())
}
