//! The managed identity token endpoints: IMDS, App Service, Azure Arc,
//! Cloud Shell and Service Fabric. Each speaks its source's protocol (see
//! the `Emulator` methods naming them in `managed_identity.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::entra_error::JSON_UTF8;
use crate::fault::FaultKind;
use crate::form::parse_form;
use crate::managed_identity::{IdentityRecord, NotSelected, Selector, select};
use crate::net::Conn;
use crate::record::{Endpoint, RecordedRequest};
use crate::state::{CachedMiToken, Shared};
use crate::token_signer::Principal;
use crate::util::{civil, guid};

/// A managed identity endpoint's answer, to come.
type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The request's parts, as axum extracts them.
type Parts = (
    State<Arc<Shared>>,
    ConnectInfo<Conn>,
    Method,
    Uri,
    HeaderMap,
    Bytes,
);

/// The route handler for one managed identity endpoint: the five routes differ only in which
/// endpoint they are, which decides how the request is read and answered.
pub(crate) fn at(
    endpoint: Endpoint,
) -> impl Fn(State<Arc<Shared>>, ConnectInfo<Conn>, Method, Uri, HeaderMap, Bytes) -> Answer
+ Clone
+ Send
+ Sync
+ 'static {
    move |s, c, m, u, h, b| Box::pin(serve(endpoint, (s, c, m, u, h, b)))
}

/// Records the request, applies latency and any queued fault, else answers it.
async fn serve(endpoint: Endpoint, parts: Parts) -> Response {
    let (State(shared), ConnectInfo(conn), method, uri, headers, body) = parts;
    let form = parse_form(&headers, &body);
    let mut record = RecordedRequest::new(endpoint, &method, &uri, &headers, form);
    let (fault, latency) = {
        let mut st = shared.lock();
        (
            st.mi_faults.pop_front().or_else(|| st.mi_outage.clone()),
            st.latency,
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = match fault.map(|f| f.kind) {
        Some(FaultKind::DropConnection) => {
            conn.kill();
            plain(500, None, String::new())
        }
        Some(FaultKind::Respond {
            status,
            retry_after,
            body,
            content_type,
        }) => {
            let (body, default_ct) = match body {
                Some(b) => (b, Some(JSON_UTF8)),
                None => match fault_error(status) {
                    Some(e) => (e.body(endpoint), Some(JSON_UTF8)),
                    None => (String::new(), None),
                },
            };
            let mut resp = plain(status, content_type.as_deref().or(default_ct), body);
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            answer(endpoint, &shared, &record).await
        }
        None => answer(endpoint, &shared, &record).await,
    };
    record.status = (!conn.is_killed()).then(|| resp.status().as_u16());
    shared.lock().mi_requests.push(record);
    resp
}

/// An error of a managed identity endpoint, rendered in its source's shape.
struct MiError {
    status: u16,
    /// `error` (IMDS-shaped sources) or `code` (Service Fabric).
    code: &'static str,
    message: String,
}

impl MiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> MiError {
        MiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn body(&self, endpoint: Endpoint) -> String {
        match endpoint {
            Endpoint::AppService | Endpoint::AzureMl => json!({
                "statusCode": self.status,
                "message": self.message,
                "correlationId": guid(),
            }),
            Endpoint::ServiceFabric => json!({
                "error": {
                    "correlationId": guid(),
                    "code": self.code,
                    "message": self.message,
                }
            }),
            _ => json!({ "error": self.code, "error_description": self.message }),
        }
        .to_string()
    }

    fn response(&self, endpoint: Endpoint) -> Response {
        plain(self.status, Some(JSON_UTF8), self.body(endpoint))
    }
}

/// The body of a fault without an explicit one.
fn fault_error(status: u16) -> Option<MiError> {
    let e = |code, msg: &str| Some(MiError::new(status, code, msg));
    match status {
        404 => e("not_found", "IMDS endpoint is updating."),
        410 => e("gone", "IMDS is going through updates."),
        429 => e("too_many_requests", "IMDS throttle limit reached."),
        400..=499 => e("invalid_request", "Invalid request."),
        500..=599 => e(
            "server_error",
            "A transient error occurred in the managed identity service.",
        ),
        _ => None,
    }
}

fn plain(status: u16, content_type: Option<&str>, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// The protocol each source speaks.
async fn answer(endpoint: Endpoint, shared: &Shared, req: &RecordedRequest) -> Response {
    let result = match endpoint {
        Endpoint::AppService | Endpoint::AzureMl => app_service_token(shared, req, endpoint),
        Endpoint::ServiceFabric => service_fabric_token(shared, req),
        Endpoint::AzureArc => match arc_challenge(shared, req).await {
            Some(challenge) => return challenge,
            None => imds_token(shared, req, endpoint),
        },
        _ => imds_token(shared, req, endpoint),
    };
    match result {
        Ok(body) => plain(200, Some(JSON_UTF8), body),
        Err(e) => e.response(endpoint),
    }
}

fn invalid_request(message: impl Into<String>) -> MiError {
    MiError::new(400, "invalid_request", message)
}

/// Which ID an identity parameter carries.
#[derive(Clone, Copy)]
enum IdKind {
    Client,
    Object,
    Resource,
}

/// The one identity parameter among `names` the request sends, as a selector.
fn selector<'a>(
    params: &'a [(String, String)],
    names: &[(&str, IdKind)],
) -> Result<Selector<'a>, String> {
    let given: Vec<Selector<'a>> = names
        .iter()
        .filter_map(|(name, kind)| {
            param(params, name).map(|v| match kind {
                IdKind::Client => Selector::ClientId(v),
                IdKind::Object => Selector::ObjectId(v),
                IdKind::Resource => Selector::ResourceId(v),
            })
        })
        .collect();
    match given.as_slice() {
        [] => Ok(Selector::Default),
        [one] => Ok(*one),
        _ => Err(format!(
            "Only one of {} can be specified.",
            names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// A managed identity token and what the response bodies say about it.
struct MiToken {
    token: String,
    client_id: String,
    issued_at: u64,
    lifetime: u64,
    refresh_in: Option<u64>,
}

/// Signs a token for `identity` to the registered resource `resource` names;
/// a resource that names none (which includes `…/.default`) is `AADSTS500011`.
fn sign_for(
    shared: &Shared,
    identity: &IdentityRecord,
    resource: &str,
) -> Result<MiToken, MiError> {
    let mut st = shared.lock();
    let st = &mut *st;
    let Some(canonical) = st.directory.resource(resource) else {
        return Err(MiError::new(
            400,
            "invalid_resource",
            format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                identity.assigned.tenant_id
            ),
        ));
    };
    let a = &identity.assigned;
    let principal = Principal {
        tenant: &a.tenant_id,
        client_id: &a.client_id,
        object_id: &a.object_id,
        display_name: &identity.display_name,
        roles: &identity.roles,
        appidacr: "2",
        mirid: Some(&a.resource_id),
    };
    let key = (a.client_id.clone(), resource.to_owned());
    let now = tokio::time::Instant::now();
    if let (Some(renew_before), Some(c)) = (st.mi_cache_renew_before, st.mi_cache.get(&key)) {
        let age = now.saturating_duration_since(c.signed).as_secs();
        let remaining = c.lifetime.saturating_sub(age);
        if remaining > renew_before.as_secs() {
            // The same token and expiry, with what remains of its life.
            return Ok(MiToken {
                token: c.token.clone(),
                client_id: a.client_id.clone(),
                issued_at: c.issued_at + age,
                lifetime: remaining,
                refresh_in: st.refresh_in.map(|r| r.as_secs()),
            });
        }
    }
    let issued = st
        .issuance
        .sign(&shared.authority, &principal, canonical, false);
    if st.mi_cache_renew_before.is_some() {
        let cached = CachedMiToken {
            token: issued.token.clone(),
            issued_at: issued.issued_at,
            lifetime: issued.lifetime,
            signed: now,
        };
        st.mi_cache.insert(key, cached);
    }
    Ok(MiToken {
        token: issued.token,
        client_id: a.client_id.clone(),
        issued_at: issued.issued_at,
        lifetime: issued.lifetime,
        refresh_in: st.refresh_in.map(|r| r.as_secs()),
    })
}

fn selected<'a>(
    identities: &'a [IdentityRecord],
    selector: Selector<'_>,
    not_found: impl FnOnce(NotSelected) -> MiError,
) -> Result<&'a IdentityRecord, MiError> {
    select(identities, selector).map_err(not_found)
}

/// IMDS, and Arc and Cloud Shell, which answer as IMDS does.
fn imds_token(
    shared: &Shared,
    req: &RecordedRequest,
    endpoint: Endpoint,
) -> Result<String, MiError> {
    if req.header("metadata") != Some("true") {
        return Err(invalid_request("Required metadata header not specified"));
    }
    let params = if endpoint == Endpoint::CloudShell {
        &req.form
    } else {
        if param(&req.query, "api-version").is_none() {
            return Err(invalid_request(
                "Required query variable 'api-version' is missing",
            ));
        }
        &req.query
    };
    let Some(resource) = param(params, "resource") else {
        return Err(invalid_request(
            "Required query variable 'resource' is missing",
        ));
    };
    let selector = selector(
        params,
        &[
            ("client_id", IdKind::Client),
            ("object_id", IdKind::Object),
            ("msi_res_id", IdKind::Resource),
        ],
    )
    .map_err(invalid_request)?;
    if endpoint == Endpoint::CloudShell && !matches!(selector, Selector::Default) {
        return Err(invalid_request(
            "Cloud Shell does not support user-assigned managed identities.",
        ));
    }
    let identities = shared.lock().identities.clone();
    let identity = selected(&identities, selector, |why| match why {
        NotSelected::NotFound => invalid_request("Identity not found"),
        NotSelected::Ambiguous => invalid_request(
            "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
        ),
    })?;
    let t = sign_for(shared, identity, resource)?;
    let s = |n: u64| Value::String(n.to_string());
    let mut fields = vec![
        ("access_token", Value::from(t.token)),
        ("client_id", Value::from(t.client_id)),
        ("expires_in", s(t.lifetime)),
        ("expires_on", s(t.issued_at + t.lifetime)),
        ("ext_expires_in", s(t.lifetime)),
        ("not_before", s(t.issued_at)),
    ];
    if let Some(r) = t.refresh_in {
        fields.push(("refresh_in", s(r)));
    }
    fields.push(("resource", Value::from(resource)));
    fields.push(("token_type", Value::from("Bearer")));
    Ok(crate::util::ordered_json(&fields))
}

/// App Service, Azure Functions and Container Apps; and Azure Machine
/// Learning, which speaks App Service's 2017-09-01 API only, with a secret of
/// its own and `expires_on` in Unix seconds.
fn app_service_token(
    shared: &Shared,
    req: &RecordedRequest,
    endpoint: Endpoint,
) -> Result<String, MiError> {
    let err = |status, message: &str| MiError::new(status, "", message);
    let azure_ml = endpoint == Endpoint::AzureMl;
    let legacy = match param(&req.query, "api-version") {
        Some("2019-08-01") if !azure_ml => false,
        Some("2017-09-01") => true,
        other => {
            return Err(err(
                400,
                &format!(
                    "The api-version '{}' is not supported. Use api-version {}.",
                    other.unwrap_or_default(),
                    if azure_ml { "2017-09-01" } else { "2019-08-01" }
                ),
            ));
        }
    };
    let secret_header = if legacy {
        "secret"
    } else {
        "x-identity-header"
    };
    let expected = {
        let st = shared.lock();
        if azure_ml {
            st.mi_secrets.azure_ml.clone()
        } else {
            st.mi_secrets.app_service.clone()
        }
    };
    if req.header(secret_header) != Some(expected.as_str()) {
        return Err(err(
            401,
            &format!("The {secret_header} header is missing or invalid."),
        ));
    }
    let Some(resource) = param(&req.query, "resource") else {
        return Err(err(400, "The resource parameter is missing."));
    };
    let names: &[(&str, IdKind)] = if legacy {
        &[("clientid", IdKind::Client)]
    } else {
        &[
            ("client_id", IdKind::Client),
            ("principal_id", IdKind::Object),
            ("mi_res_id", IdKind::Resource),
        ]
    };
    let selector = selector(&req.query, names).map_err(|m| err(400, &m))?;
    let identities = shared.lock().identities.clone();
    let identity = selected(&identities, selector, |_| {
        err(400, "Unable to load the proper Managed Identity.")
    })?;
    let t = sign_for(shared, identity, resource).map_err(|e| err(400, &e.message))?;
    let expires_on = t.issued_at + t.lifetime;
    let expires_on = if legacy && !azure_ml {
        legacy_date(expires_on)
    } else {
        expires_on.to_string()
    };
    Ok(crate::util::ordered_json(&[
        ("access_token", Value::from(t.token)),
        ("expires_on", Value::from(expires_on)),
        ("resource", Value::from(resource)),
        ("token_type", Value::from("Bearer")),
        ("client_id", Value::from(t.client_id)),
    ]))
}

/// The `expires_on` date of App Service's 2017-09-01 API: `06/20/2019 02:57:58 +00:00`.
fn legacy_date(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{mo:02}/{d:02}/{y:04} {h:02}:{mi:02}:{s:02} +00:00")
}

/// Service Fabric's managed identity token service.
fn service_fabric_token(shared: &Shared, req: &RecordedRequest) -> Result<String, MiError> {
    let expected = shared.lock().mi_secrets.service_fabric.clone();
    match req.header("secret") {
        None => {
            return Err(MiError::new(
                401,
                "SecretHeaderNotFound",
                "Secret is not found in the request headers.",
            ));
        }
        Some(s) if s != expected => {
            return Err(MiError::new(
                401,
                "SecretHeaderNotFound",
                "The secret in the request headers is not valid.",
            ));
        }
        Some(_) => {}
    }
    if param(&req.query, "api-version") != Some("2019-07-01-preview") {
        return Err(MiError::new(
            400,
            "InvalidApiVersion",
            "The api-version is missing or not supported. Use api-version 2019-07-01-preview.",
        ));
    }
    let Some(resource) = param(&req.query, "resource") else {
        return Err(MiError::new(
            400,
            "ResourceMissing",
            "The resource parameter is missing.",
        ));
    };
    let selector = selector(
        &req.query,
        &[
            ("principal_id", IdKind::Object),
            ("mi_res_id", IdKind::Resource),
        ],
    )
    .map_err(|m| MiError::new(400, "InvalidParameter", m))?;
    let identities = shared.lock().identities.clone();
    let identity = selected(&identities, selector, |_| {
        MiError::new(
            400,
            "ManagedIdentityNotFound",
            "The managed identity was not found.",
        )
    })?;
    let t = sign_for(shared, identity, resource)
        .map_err(|e| MiError::new(400, "InvalidResource", e.message))?;
    Ok(crate::util::ordered_json(&[
        ("token_type", Value::from("Bearer")),
        ("access_token", Value::from(t.token)),
        ("expires_on", Value::from(t.issued_at + t.lifetime)),
        ("resource", Value::from(resource)),
    ]))
}

/// Azure Arc's challenge: `None` when the request carries a key the
/// emulator issued (which is then used up), else the `401` naming a fresh
/// key file. Requests without `Metadata: true` get no challenge.
async fn arc_challenge(shared: &Shared, req: &RecordedRequest) -> Option<Response> {
    if req.header("metadata") != Some("true") {
        return None;
    }
    let presented = req
        .header("authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, key)| key.trim().to_owned());
    let (dir, key) = {
        let mut st = shared.lock();
        if let Some(key) = presented
            && st.mi_secrets.arc_keys.remove(&key)
        {
            return None;
        }
        let key = format!("{}{}", guid(), guid()).replace('-', "");
        st.mi_secrets.arc_keys.insert(key.clone());
        (st.mi_secrets.arc_dir(), key)
    };
    let path = dir.join(format!("{}.key", guid()));
    let written = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&path, key)
        })
        .await
    };
    if let Err(e) = written
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        return Some(
            MiError::new(
                500,
                "server_error",
                format!(
                    "entra-emulator: cannot write the Arc key file {}: {e}",
                    path.display()
                ),
            )
            .response(Endpoint::AzureArc),
        );
    }
    let mut resp = plain(401, None, String::new());
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm={}", path.display())) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Some(resp)
}
