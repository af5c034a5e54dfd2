//! Claims challenges (Continuous Access Evaluation) and refused tokens: what the provider does
//! when an API answers 401 to a token it handed out ([`Reaction`] in, [`Renewal`] out), and the
//! `claims` JSON it sends (the client capabilities, merged with a challenge's claims).
//!
//! The refusal path (`refusal.rs`) reads a response into a [`Reaction`] and hands it here; this
//! module knows nothing of responses.

use serde_json::{Map, Value};

use super::state::{Input, Note, Refused};
use super::{Acquire, Ask, TokenProvider};
use crate::error::TokenError;
use crate::token::AccessToken;

/// What a response asks of the provider about the token the request carried.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// Nothing: not a refusal, or one that a new token would not help.
    None,
    /// Drop the token: it expired or was revoked (`invalid_token`).
    Invalidate,
    /// Fetch a token carrying these claims (the challenge's JSON object, decoded; the provider
    /// merges the client capabilities into it).
    Claims(String),
}

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
        self.ask(Ask::Claims(merged)).await
    }

    /// Acts on an API's refusal of `used`: drops it on `invalid_token`, fetches a token with the
    /// claims of a claims challenge. Each at most once per
    /// [`FORCED_RENEWAL_INTERVAL`](super::state::FORCED_RENEWAL_INTERVAL). `used` is `None`
    /// when the refused token is known to be no longer the cached one (already replaced).
    pub(crate) fn on_refusal(&self, used: Option<&AccessToken>, reaction: Reaction) -> Renewal {
        match reaction {
            Reaction::None => Renewal::None,
            Reaction::Invalidate => match self.refuse_if_cached(used) {
                Refused::Dropped | Refused::AlreadyReplaced => Renewal::Renewed,
                Refused::RateLimited => Renewal::None,
            },
            Reaction::Claims(claims) => {
                let merged = match self.merged_claims(&claims) {
                    Ok(m) => m,
                    Err(e) => {
                        self.inner.telemetry.claims_challenge_ignored(&e);
                        return Renewal::None;
                    }
                };
                let ask = Ask::Claims(merged.clone());
                let done = self.inner.perform(Input::ClaimsChallenge(used, merged));
                if done.note == Note::ClaimsRateLimited {
                    self.inner.telemetry.claims_challenge_rate_limited();
                }
                match self.answer(done.command, ask) {
                    Some(acquire) => Renewal::Fetching(acquire),
                    None => Renewal::None,
                }
            }
        }
    }

    /// [`refuse`](TokenProvider::refuse) `used`; `None` was already replaced.
    fn refuse_if_cached(&self, used: Option<&AccessToken>) -> Refused {
        match used {
            Some(used) => self.refuse(used),
            None => {
                self.inner.telemetry.invalidated(Refused::AlreadyReplaced);
                Refused::AlreadyReplaced
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

/// The `claims` JSON that asks for client capabilities, e.g.
/// `{"access_token":{"xms_cc":{"values":["cp1"]}}}`.
pub(super) fn capabilities_claims(capabilities: &[String]) -> Option<String> {
    if capabilities.is_empty() {
        return None;
    }
    let v = serde_json::json!({ "access_token": { "xms_cc": { "values": capabilities } } });
    serde_json::to_string(&v).ok()
}

/// Merges two `claims` JSON objects (deeply; `extra` wins on conflicting leaves). `None` when
/// either is not a JSON object.
fn merge_claims(base: Option<&str>, extra: &str) -> Option<String> {
    let mut merged: Value = match base {
        Some(b) => serde_json::from_str(b).ok()?,
        None => Value::Object(Map::new()),
    };
    let extra: Value = serde_json::from_str(extra).ok()?;
    if !merged.is_object() || !extra.is_object() {
        return None;
    }
    merge_into(&mut merged, extra);
    serde_json::to_string(&merged).ok()
}

fn merge_into(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(existing) => merge_into(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Contains bytes that encode to `+`/`/` in standard base64 and need padding.
    const CLAIMS: &str = r#"{"access_token":{"nbf":{"essential":true,"value":"1726077595"},"xms_caeerror":{"value":"10012"}},"k":">>>??"}"#;

    #[test]
    fn claims_merge_with_client_capabilities() {
        let cp1 = capabilities_claims(&["cp1".to_owned()]).unwrap();
        assert_eq!(cp1, r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#);
        let merged = merge_claims(Some(&cp1), CLAIMS).unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v["access_token"]["xms_cc"]["values"][0], "cp1");
        assert_eq!(v["access_token"]["nbf"]["value"], "1726077595");
        assert_eq!(v["access_token"]["xms_caeerror"]["value"], "10012");
        assert_eq!(v["k"], ">>>??");
        assert_eq!(
            merge_claims(None, r#"{"a":1}"#).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert!(merge_claims(None, "[1]").is_none());
        assert!(capabilities_claims(&[]).is_none());
    }
}
