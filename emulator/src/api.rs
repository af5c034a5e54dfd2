//! The demo protected API and the metadata endpoints (JWKS, OpenID configuration).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Emulator;
use crate::entra_error::{Ctx, EntraError, JSON_UTF8};
use crate::jwt::{self, Alg, emulator_key};
use crate::state::Shared;
use crate::token_signer::SEQ_CLAIM;
use crate::util::{graph_date, guid, unix_now};

/// The demo API's application ID URI (its tokens' `aud`).
pub(crate) const DEMO_API_URI: &str = "api://entra-emulator-demo";

/// `GET /{tenant}/discovery/v2.0/keys`
pub(crate) async fn jwks() -> Response {
    let mut resp = Json(json!({ "keys": [emulator_key().jwk()] })).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400, private"),
    );
    resp
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`
pub(crate) async fn openid_configuration(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    // A domain resolves to its tenant's GUID, in every URL of the document.
    let known = shared.lock().directory.resolve(&tenant).map(str::to_owned);
    let lower = known.clone().unwrap_or_else(|| tenant.to_ascii_lowercase());
    let issuer_tenant = match lower.as_str() {
        _ if known.is_some() => lower.clone(),
        "common" | "organizations" => "{tenantid}".to_owned(),
        _ => {
            let ctx = Ctx::new(&headers);
            return EntraError::new(
                400,
                "invalid_tenant",
                90002,
                format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                ),
            )
            .response(&ctx);
        }
    };
    let a = &shared.authority;
    Json(json!({
        "token_endpoint": format!("{a}/{lower}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{a}/{lower}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{a}/{issuer_tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{a}/{lower}/oauth2/v2.0/authorize"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "roles"],
        "tenant_region_scope": "WW",
        "cloud_instance_name": "microsoftonline.com",
    }))
    .into_response()
}

/// Why a bearer token was refused.
enum Refusal {
    /// No (bearer) credentials at all: challenge without an error code (RFC 6750 §3.1).
    Missing,
    InvalidToken(String),
    /// Revoked by `cae_revoke` and CAE-capable: claims challenge demanding this `nbf`.
    InsufficientClaims(u64),
    Forbidden,
}

/// `GET /api/hello`
pub(crate) async fn hello(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.lock().api_requests += 1;
    match authenticate(&shared, &headers) {
        Ok(claims) => Json(json!({
            "message": "hello from the demo API",
            "appid": claims.get("appid").cloned().unwrap_or(Value::Null),
            "tid": claims.get("tid").cloned().unwrap_or(Value::Null),
            "roles": claims.get("roles").cloned().unwrap_or_else(|| json!([])),
        }))
        .into_response(),
        Err(Refusal::Forbidden) => forbidden(&headers),
        Err(Refusal::Missing) => challenge(&shared.authority, None),
        Err(Refusal::InvalidToken(why)) => challenge(&shared.authority, Some(&why)),
        Err(Refusal::InsufficientClaims(nbf)) => {
            use base64::Engine as _;
            let claims =
                format!(r#"{{"access_token":{{"nbf":{{"essential":true,"value":"{nbf}"}}}}}}"#);
            let claims = base64::engine::general_purpose::STANDARD.encode(claims);
            challenge_with(format!(
                "Bearer realm=\"\", authorization_uri=\"{}/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"{claims}\"",
                shared.authority
            ))
        }
    }
}

fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<serde_json::Map<String, Value>, Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Refusal::Missing)?
        .to_str()
        .map_err(|_| {
            Refusal::InvalidToken("The Authorization header is not valid ASCII.".into())
        })?;
    let (scheme, token) = value.split_once(' ').ok_or(Refusal::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Missing);
    }
    let invalid = |s: &str| Refusal::InvalidToken(s.to_owned());
    let parsed = jwt::parse(token.trim()).map_err(invalid)?;
    let key = emulator_key();
    if parsed.alg() != Some(Alg::Rs256) {
        return Err(invalid("The token is not signed with RS256."));
    }
    if parsed.header_str("kid") != Some(key.kid()) {
        return Err(invalid("The token's signing key (kid) was not found."));
    }
    if !parsed.verify(Alg::Rs256, key.public()) {
        return Err(invalid("The token signature is invalid."));
    }
    let now = unix_now() as i64;
    let exp = parsed
        .claim_secs("exp")
        .ok_or_else(|| invalid("The token has no 'exp' claim."))?;
    if now >= exp {
        return Err(invalid("The token is expired."));
    }
    if parsed.claim_secs("nbf").is_some_and(|nbf| nbf > now) {
        return Err(invalid("The token is not yet valid."));
    }
    match parsed.claim_str("aud") {
        Some(DEMO_API_URI) => {}
        aud => {
            return Err(Refusal::InvalidToken(format!(
                "The audience '{}' is invalid.",
                aud.unwrap_or("")
            )));
        }
    }
    let seq = parsed
        .claims
        .get(SEQ_CLAIM)
        .and_then(Value::as_u64)
        .unwrap_or(0);
    {
        let st = shared.lock();
        let tid = parsed.claim_str("tid").unwrap_or("");
        if !st.directory.has_tenant(tid)
            || parsed.claim_str("iss") != Some(&format!("https://sts.windows.net/{tid}/"))
        {
            return Err(invalid("The token issuer is invalid."));
        }
        if seq < st.revoked_below {
            return Err(invalid("The token has been revoked."));
        }
        if seq < st.cae_revoked_below {
            let cae_capable = parsed
                .claims
                .get("xms_cc")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|v| v.as_str() == Some("cp1")));
            return Err(if cae_capable {
                Refusal::InsufficientClaims(st.cae_nbf)
            } else {
                invalid("The token has been revoked.")
            });
        }
    }
    let has_role = parsed
        .claims
        .get("roles")
        .and_then(Value::as_array)
        .is_some_and(|r| {
            r.iter()
                .any(|v| v.as_str() == Some(Emulator::DEMO_API_ROLE))
        });
    if !has_role {
        return Err(Refusal::Forbidden);
    }
    Ok(parsed.claims)
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// 401 with an RFC 6750 `WWW-Authenticate` challenge.
fn challenge(authority: &str, error_description: Option<&str>) -> Response {
    let mut value =
        format!("Bearer realm=\"\", authorization_uri=\"{authority}/common/oauth2/authorize\"");
    if let Some(d) = error_description {
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{}\"",
            quote(d)
        ));
    }
    challenge_with(value)
}

pub(crate) fn challenge_with(www_authenticate: String) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    if let Ok(v) = HeaderValue::from_str(&www_authenticate) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// 403 with a Microsoft Graph-shaped error body.
fn forbidden(headers: &HeaderMap) -> Response {
    let request_id = guid();
    let client_request_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| request_id.clone());
    let body = json!({
        "error": {
            "code": "Authorization_RequestDenied",
            "message": format!(
                "Insufficient privileges to complete the operation. The application lacks the '{}' application permission, or admin consent has not been granted.",
                Emulator::DEMO_API_ROLE
            ),
            "innerError": {
                "date": graph_date(unix_now()),
                "request-id": request_id,
                "client-request-id": client_request_id,
            }
        }
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}
