//! Claims with managed identity, as MSAL handles them: the endpoints take no `claims`, but App
//! Service (2019-08-01) and Service Fabric take the client capabilities (`xms_cc`) and the
//! SHA-256 of the token to replace (`token_sha256_to_refresh`), so that the platform's own cache
//! gives up a token an API refused. IMDS, Azure Arc, Cloud Shell and App Service's 2017 API take
//! neither: their cache would hand back the refused token, so a challenge there is an error
//! rather than a token stored as if it carried the claims.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::source::Source;
use crate::error::{TokenError, TokenErrorKind};

/// What a token request's `claims` ask of a managed identity endpoint.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Asked {
    /// The client capabilities (`access_token.xms_cc.values`), comma-separated.
    pub(super) capabilities: Option<String>,
    /// Whether the claims ask for more than capabilities: a claims challenge.
    pub(super) challenge: bool,
}

impl Asked {
    /// Reads `claims` (a JSON object; anything else counts as a challenge).
    pub(super) fn read(claims: Option<&str>) -> Asked {
        let Some(claims) = claims else {
            return Asked::default();
        };
        let Ok(Value::Object(mut json)) = serde_json::from_str::<Value>(claims) else {
            return Asked {
                capabilities: None,
                challenge: true,
            };
        };
        let mut capabilities = None;
        if let Some(Value::Object(access_token)) = json.get_mut("access_token")
            && let Some(xms_cc) = access_token.remove("xms_cc")
        {
            let values: Vec<&str> = xms_cc
                .get("values")
                .and_then(Value::as_array)
                .map(|values| values.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            capabilities = (!values.is_empty()).then(|| values.join(","));
            if access_token.is_empty() {
                json.remove("access_token");
            }
        }
        Asked {
            capabilities,
            challenge: !json.is_empty(),
        }
    }
}

/// Whether `source` can be asked for a token in place of a refused one.
pub(super) fn can_refresh(source: &Source) -> bool {
    matches!(
        source,
        Source::AppService { .. } | Source::ServiceFabric { .. }
    )
}

/// The error of a claims challenge `source` cannot honour.
pub(super) fn cannot_honour(source: &Source) -> TokenError {
    TokenError::new(
        TokenErrorKind::Authentication,
        format!(
            "the API asked for a token with claims (a Continuous Access Evaluation challenge), which {} cannot honour: its endpoint takes no claims and would serve the refused token again from its cache; the identity's next token (the platform renews it) will do, or use App Service / Service Fabric, whose endpoints can replace a refused token",
            source.name()
        ),
    )
}

/// The SHA-256 (lowercase hex, as MSAL sends it) of the last token issued per resource: what
/// `token_sha256_to_refresh` names. Never the token itself.
#[derive(Default)]
pub(super) struct IssuedTokens(Mutex<HashMap<String, String>>);

impl IssuedTokens {
    pub(super) fn last(&self, resource: &str) -> Option<String> {
        self.lock().get(resource).cloned()
    }

    pub(super) fn record(&self, resource: &str, hash: String) {
        self.lock().insert(resource.to_owned(), hash);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// SHA-256 of `token`, lowercase hex.
pub(super) fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_capabilities_from_a_challenge() {
        assert_eq!(Asked::read(None), Asked::default());
        let cp1 = Asked::read(Some(
            r#"{"access_token":{"xms_cc":{"values":["cp1","cp2"]}}}"#,
        ));
        assert_eq!(cp1.capabilities.as_deref(), Some("cp1,cp2"));
        assert!(!cp1.challenge);
        let challenge = Asked::read(Some(
            r#"{"access_token":{"nbf":{"essential":true,"value":"1726077595"},"xms_cc":{"values":["cp1"]}}}"#,
        ));
        assert_eq!(challenge.capabilities.as_deref(), Some("cp1"));
        assert!(challenge.challenge);
        assert!(Asked::read(Some(r#"{"id_token":{}}"#)).challenge);
        assert!(Asked::read(Some("not json")).challenge);
    }

    #[test]
    fn hashes_as_msal_does() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
