//! The v2.0 token endpoint: `POST /{tenant}/oauth2/v2.0/token`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::access_token::{self, Issued, Principal};
use crate::fault::FaultKind;
use crate::net::Conn;
use crate::record::{Endpoint, RecordedRequest};
use crate::state::{AppRecord, Shared, State as EmuState};
use crate::util::{entra_timestamp, guid, ordered_json, unix_now};

pub(crate) const JSON_UTF8: &str = "application/json; charset=utf-8";

/// Per-request identifiers Entra puts in every error.
pub(crate) struct Ctx {
    pub(crate) trace_id: String,
    pub(crate) correlation_id: String,
    pub(crate) client_request_id: Option<HeaderValue>,
    pub(crate) now: u64,
}

impl Ctx {
    pub(crate) fn new(headers: &HeaderMap) -> Ctx {
        let client_request_id = headers.get("client-request-id").cloned();
        let correlation_id = client_request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(guid);
        Ctx {
            trace_id: guid(),
            correlation_id,
            client_request_id,
            now: unix_now(),
        }
    }

    /// A response with Entra's standard headers.
    pub(crate) fn response(
        &self,
        status: u16,
        content_type: Option<&str>,
        body: String,
    ) -> Response {
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() =
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
            h.insert(header::CONTENT_TYPE, ct);
        }
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-cache"),
        );
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&self.trace_id) {
            h.insert("x-ms-request-id", v);
        }
        if let Some(v) = &self.client_request_id {
            h.insert("client-request-id", v.clone());
        }
        resp
    }
}

/// An OAuth error as Entra reports it.
#[derive(Debug)]
pub(crate) struct EntraError {
    pub(crate) status: u16,
    pub(crate) error: &'static str,
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl EntraError {
    pub(crate) fn new(
        status: u16,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        EntraError {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn body(&self, ctx: &Ctx) -> String {
        let ts = entra_timestamp(ctx.now);
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            self.code, self.message, ctx.trace_id, ctx.correlation_id, ts
        );
        ordered_json(&[
            ("error", self.error.into()),
            ("error_description", description.into()),
            ("error_codes", json!([self.code])),
            ("timestamp", ts.into()),
            ("trace_id", ctx.trace_id.clone().into()),
            ("correlation_id", ctx.correlation_id.clone().into()),
            (
                "error_uri",
                format!("https://login.microsoftonline.com/error?code={}", self.code).into(),
            ),
        ])
    }

    pub(crate) fn response(&self, ctx: &Ctx) -> Response {
        ctx.response(self.status, Some(JSON_UTF8), self.body(ctx))
    }
}

fn missing(param: &str) -> EntraError {
    EntraError::new(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

/// The form fields of a token request.
pub(crate) struct Form(pub(crate) Vec<(String, String)>);

impl Form {
    /// The first non-empty value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn parse_form(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Vec::new();
    }
    form_urlencoded::parse(body).into_owned().collect()
}

/// `Authorization: Basic` client credentials (client_secret_basic), form-urlencoded per RFC 6749 §2.3.1.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// Axum handler for the token endpoint.
pub(crate) async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = Ctx::new(&headers);
    if method != Method::POST {
        return EntraError::new(
            400,
            "invalid_request",
            900561,
            format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."
            ),
        )
        .response(&ctx);
    }
    let form = Form(parse_form(&headers, &body));
    let mut record = RecordedRequest::new(Endpoint::Token, &method, &uri, &headers, form.0.clone());
    let resp = answer(&shared, &conn, &ctx, &tenant, &headers, form).await;
    record.status = (!conn.is_killed()).then(|| resp.status().as_u16());
    shared.lock().last_token_http_request = Some(record);
    resp
}

/// Throttling, then an injected fault, then the real checks.
async fn answer(
    shared: &Shared,
    conn: &Conn,
    ctx: &Ctx,
    tenant: &str,
    headers: &HeaderMap,
    form: Form,
) -> Response {
    let (fault, latency) = {
        let mut st = shared.lock();
        st.token_requests += 1;
        st.last_token_request_claims = form
            .get("claims")
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
            .filter(Value::is_object);
        st.last_token_request = Some(form.0.clone());
        if let Err(retry_after) = st.admission.admit() {
            drop(st);
            return throttled(ctx, retry_after);
        }
        (st.faults.pop_front(), st.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(fault) = fault {
        match fault.kind {
            FaultKind::DropConnection => {
                conn.kill();
                return ctx.response(500, None, String::new());
            }
            FaultKind::Delay(d) => tokio::time::sleep(d).await,
            FaultKind::Respond {
                status,
                retry_after,
                body,
                content_type,
            } => {
                let (body, default_ct) = match body {
                    Some(b) => (b, Some(JSON_UTF8)),
                    None => match default_fault_error(status) {
                        Some(e) => (e.body(ctx), Some(JSON_UTF8)),
                        None if (200..300).contains(&status) => ("{}".to_owned(), Some(JSON_UTF8)),
                        None => (String::new(), None),
                    },
                };
                let ct = content_type.as_deref().or(default_ct);
                let mut resp = ctx.response(status, ct, body);
                if let Some(secs) = retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return resp;
            }
        }
    }
    let basic = basic_credentials(headers);
    let result = {
        let mut st = shared.lock();
        issue(&mut st, &shared.authority, tenant, &form, basic)
    };
    match result {
        Ok(body) => ctx.response(200, Some(JSON_UTF8), body),
        Err(e) => e.response(ctx),
    }
}

/// The answer of the rate limit ([`Emulator::set_token_rate_limit`](crate::Emulator::set_token_rate_limit)).
fn throttled(ctx: &Ctx, retry_after: u64) -> Response {
    let mut resp = default_fault_error(429)
        .map(|e| e.response(ctx))
        .unwrap_or_else(|| ctx.response(429, None, String::new()));
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// The Entra-shaped error a [`Fault`](crate::Fault) without an explicit body answers with.
fn default_fault_error(status: u16) -> Option<EntraError> {
    let e = |error, code, msg: &str| Some(EntraError::new(status, error, code, msg));
    match status {
        401 => e(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        ),
        403 => e("unauthorized_client", 7000112, "Application is disabled."),
        429 => e(
            "temporarily_unavailable",
            90055,
            "There are too many incoming requests. Please try again later.",
        ),
        500 => e(
            "server_error",
            50000,
            "There was an error issuing a token or an issue with our sign-in service.",
        ),
        400..=499 => e(
            "invalid_request",
            90013,
            "Invalid input received from the user.",
        ),
        501..=599 => e(
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        _ => None,
    }
}

/// Validates a token request in Entra's order and, on success, returns the JSON body.
fn issue(
    st: &mut EmuState,
    authority: &str,
    tenant_in_path: &str,
    form: &Form,
    basic: Option<(String, String)>,
) -> Result<String, EntraError> {
    let tenant_key = tenant_in_path.to_ascii_lowercase();
    let Some(tenant) = st.tenants.get(&tenant_key) else {
        return Err(EntraError::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant_in_path}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    };
    match form.get("grant_type") {
        None => return Err(missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(EntraError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    let (basic_id, basic_secret) = match &basic {
        Some((id, secret)) => (Some(id.as_str()), Some(secret.as_str())),
        None => (None, None),
    };
    let Some(client_id) = form.get("client_id").or(basic_id.filter(|s| !s.is_empty())) else {
        return Err(missing("client_id"));
    };
    let Some(app) = tenant.apps.get(&client_id.to_ascii_lowercase()) else {
        return Err(EntraError::new(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_in_path}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    };
    let client_key = client_id.to_ascii_lowercase();
    let secret = form
        .get("client_secret")
        .or(basic_secret.filter(|s| !s.is_empty()));
    let appidacr = if form.get("client_assertion").is_some() {
        if secret.is_some() {
            return Err(EntraError::new(
                400,
                "invalid_request",
                90013,
                "Invalid input received from the user. Only one client authentication method may be used: send either 'client_secret' or 'client_assertion', not both.",
            ));
        }
        let audiences = [
            format!("{authority}/{tenant_in_path}/oauth2/v2.0/token"),
            format!("{authority}/{tenant_key}/oauth2/v2.0/token"),
            format!("{authority}/{tenant_in_path}/oauth2/token"),
            format!("{authority}/{tenant_key}/oauth2/token"),
        ];
        let record = crate::assertion::validate(
            app,
            client_id,
            form,
            &audiences,
            &st.trusted_issuers,
            &st.used_jtis,
        )?;
        if let Some((key, exp)) = record {
            let now = unix_now() as i64;
            st.used_jtis.retain(|_, e| *e + 300 >= now);
            st.used_jtis.insert(key, exp);
        }
        "2"
    } else {
        let Some(secret) = secret else {
            return Err(EntraError::new(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            ));
        };
        check_secret(app, client_id, secret)?;
        "1"
    };

    let resource = resolve_scope(st, form, tenant_in_path)?;
    let cp1 = match form.get("claims") {
        None => false,
        Some(raw) => {
            let claims: Value = serde_json::from_str(raw)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    EntraError::new(
                        400,
                        "invalid_request",
                        90100,
                        "claims parameter is empty or not valid. It must be a JSON object.",
                    )
                })?;
            claims
                .pointer("/access_token/xms_cc/values")
                .and_then(Value::as_array)
                .is_some_and(|v| v.iter().any(|c| c.as_str() == Some("cp1")))
        }
    };
    Ok(mint(
        st,
        authority,
        &tenant_key,
        &client_key,
        &resource,
        appidacr,
        cp1,
    ))
}

fn check_secret(app: &AppRecord, client_id: &str, secret: &str) -> Result<(), EntraError> {
    match app.secrets.iter().find(|s| s.value == secret) {
        Some(s) if !s.expired => Ok(()),
        Some(_) => Err(EntraError::new(
            401,
            "invalid_client",
            7000222,
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
            ),
        )),
        None => Err(EntraError::new(
            401,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )),
    }
}

/// Checks `scope` and returns the canonical application ID URI of its resource.
fn resolve_scope(st: &EmuState, form: &Form, tenant: &str) -> Result<String, EntraError> {
    let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) else {
        return Err(missing("scope"));
    };
    let mut resource: Option<&str> = None;
    for s in scope.split_whitespace() {
        let Some(r) = s.strip_suffix("/.default") else {
            return Err(EntraError::new(
                400,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        };
        // `https://graph.microsoft.com//.default` names the same resource.
        let r = r.trim_end_matches('/');
        match resource {
            Some(prev) if !prev.eq_ignore_ascii_case(r) => {
                return Err(EntraError::new(
                    400,
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                    ),
                ));
            }
            _ => resource = Some(r),
        }
    }
    let resource = resource.unwrap_or_default();
    match st.resources.get(&resource.to_ascii_lowercase()) {
        Some(res) => Ok(res.uri.clone()),
        None => Err(EntraError::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )),
    }
}

/// Issues an access token for `client_id` to `resource` and renders the success body.
/// `appidacr`: "1" for a secret, "2" for a certificate / assertion.
fn mint(
    st: &mut EmuState,
    authority: &str,
    tenant: &str,
    client_id: &str,
    resource: &str,
    appidacr: &str,
    cp1: bool,
) -> String {
    let client_key = client_id.to_ascii_lowercase();
    let (display_name, object_id, app_roles) = st
        .tenants
        .get(tenant)
        .and_then(|t| t.apps.get(&client_key))
        .map(|a| (a.display_name.clone(), a.object_id.clone(), a.roles.clone()))
        .unwrap_or_default();
    let principal = Principal {
        tenant,
        client_id: &client_key,
        object_id: &object_id,
        display_name: &display_name,
        roles: &app_roles,
        appidacr,
        mirid: None,
    };
    let Issued {
        token, lifetime, ..
    } = access_token::sign(st, authority, &principal, resource, cp1);

    let num = |n: u64| -> Value {
        if st.numbers_as_strings {
            Value::String(n.to_string())
        } else {
            Value::from(n)
        }
    };
    let mut fields = vec![
        ("token_type", Value::from("Bearer")),
        ("expires_in", num(lifetime)),
        ("ext_expires_in", num(lifetime)),
    ];
    if let Some(r) = st.refresh_in {
        fields.push(("refresh_in", num(r.as_secs())));
    }
    fields.push(("access_token", Value::from(token)));
    ordered_json(&fields)
}
