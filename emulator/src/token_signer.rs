//! The token signer: signs access tokens, for apps (the token endpoint) and
//! managed identities (their endpoints) alike, with the emulator's lifetime
//! and issue sequence.

use std::time::Duration;

use serde_json::json;

use crate::directory::Resource;
use crate::jwt::emulator_key;
use crate::util::{b64url, guid, unix_now};

/// Name of the (emulator-specific) claim holding the issue sequence number.
pub(crate) const SEQ_CLAIM: &str = "xms_emu_seq";

/// The audiences of federated identity credentials (public cloud, US
/// Government, China). Tokens for them are v2.0-shaped, as Entra issues them.
pub(crate) const TOKEN_EXCHANGE_AUDIENCES: [&str; 3] = [
    "api://AzureADTokenExchange",
    "api://AzureADTokenExchangeUSGov",
    "api://AzureADTokenExchangeChina",
];

/// The v2.0 issuer of `tenant`: `{authority}/{tenant}/v2.0`, as in the
/// emulator's OpenID configuration.
pub(crate) fn v2_issuer(authority: &str, tenant: &str) -> String {
    format!("{authority}/{tenant}/v2.0")
}

/// Who a token is issued to.
pub(crate) struct Principal<'a> {
    pub(crate) tenant: &'a str,
    /// The application (client) ID: `appid` / `azp`.
    pub(crate) client_id: &'a str,
    /// The service principal's object ID: `oid` / `sub`.
    pub(crate) object_id: &'a str,
    pub(crate) display_name: &'a str,
    /// The app roles granted; the token carries those `resource` defines.
    pub(crate) roles: &'a [String],
    /// "1" for a secret, "2" for a certificate or assertion, "2" for a managed identity.
    pub(crate) appidacr: &'a str,
    /// A managed identity's Azure resource ID (`xms_mirid`).
    pub(crate) mirid: Option<&'a str>,
}

/// A signed token and its times.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) issued_at: u64,
    pub(crate) lifetime: u64,
}

/// What every issued token shares: its lifetime, and the sequence number
/// revocation compares against.
pub(crate) struct Issuance {
    /// Sequence number the next issued token gets.
    pub(crate) next_seq: u64,
    /// `expires_in` and `exp - iat` of tokens issued from now on.
    pub(crate) lifetime: Duration,
}

impl Issuance {
    pub(crate) fn new() -> Issuance {
        Issuance {
            next_seq: 1,
            lifetime: Duration::from_secs(3599),
        }
    }

    /// Signs an access token for `principal` to `resource`, carrying the
    /// principal's roles that the resource defines.
    pub(crate) fn sign(
        &mut self,
        authority: &str,
        principal: &Principal<'_>,
        resource: &Resource,
        cp1: bool,
    ) -> Issued {
        let seq = self.next_seq;
        self.next_seq += 1;
        let now = unix_now();
        let lifetime = self.lifetime.as_secs();
        let resource_roles = resource.roles.as_slice();
        let roles: Vec<&String> = principal
            .roles
            .iter()
            .filter(|r| resource_roles.contains(r))
            .collect();
        let v2 = TOKEN_EXCHANGE_AUDIENCES
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&resource.uri));
        let (issuer, ver) = if v2 {
            (v2_issuer(authority, principal.tenant), "2.0")
        } else {
            (
                format!("https://sts.windows.net/{}/", principal.tenant),
                "1.0",
            )
        };
        let mut claims = json!({
            "aud": resource.uri,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": b64url(uuid::Uuid::new_v4().as_bytes()),
            "app_displayname": principal.display_name,
            "appid": principal.client_id,
            "appidacr": principal.appidacr,
            "azp": principal.client_id,
            "azpacr": principal.appidacr,
            "idp": issuer,
            "idtyp": "app",
            "oid": principal.object_id,
            "sub": principal.object_id,
            "tid": principal.tenant,
            "uti": b64url(uuid::Uuid::new_v4().as_bytes()),
            "jti": guid(),
            "ver": ver,
            SEQ_CLAIM: seq,
        });
        if !roles.is_empty() {
            claims["roles"] = json!(roles);
        }
        if cp1 {
            claims["xms_cc"] = json!(["cp1"]);
        }
        if let Some(mirid) = principal.mirid {
            claims["xms_mirid"] = json!(mirid);
        }
        let key = emulator_key();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5t": key.kid(), "kid": key.kid()});
        Issued {
            token: key.sign(&header, &claims),
            issued_at: now,
            lifetime,
        }
    }
}
