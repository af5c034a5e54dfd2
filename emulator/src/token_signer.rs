//! Signing access tokens, for apps (token endpoint) and managed identities
//! alike.

use serde_json::json;

use crate::jwt::emulator_key;
use crate::state::State;
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

/// Signs an access token for `principal` to `resource` (the canonical
/// application ID URI), with the emulator's lifetime and sequence number.
pub(crate) fn sign(
    st: &mut State,
    authority: &str,
    principal: &Principal<'_>,
    resource: &str,
    cp1: bool,
) -> Issued {
    let seq = st.next_seq;
    st.next_seq += 1;
    let now = unix_now();
    let lifetime = st.token_lifetime.as_secs();
    let resource_roles = st
        .resources
        .get(&resource.to_ascii_lowercase())
        .map(|r| r.roles.as_slice())
        .unwrap_or_default();
    let roles: Vec<&String> = principal
        .roles
        .iter()
        .filter(|r| resource_roles.contains(r))
        .collect();
    let v2 = TOKEN_EXCHANGE_AUDIENCES
        .iter()
        .any(|a| a.eq_ignore_ascii_case(resource));
    let (issuer, ver) = if v2 {
        (v2_issuer(authority, principal.tenant), "2.0")
    } else {
        (
            format!("https://sts.windows.net/{}/", principal.tenant),
            "1.0",
        )
    };
    let mut claims = json!({
        "aud": resource,
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
