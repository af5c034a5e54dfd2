//! The v2.0 token endpoint, `POST /{tenant}/oauth2/v2.0/token`: counting and
//! recording each request, the rate limits, latency and injected faults; the
//! grant itself is checked in `client_credentials.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::Response;
use serde_json::Value;

use crate::client_credentials::issue;
use crate::entra_error::{Ctx, EntraError, JSON_UTF8};
use crate::fault::FaultKind;
use crate::form::{Form, basic_credentials, parse_form};
use crate::net::Conn;
use crate::rate_limit;
use crate::record::{Endpoint, RecordedRequest};
use crate::state::{Shared, State as EmuState};

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
    let (tenant_id, arrival) = arrive(&mut shared.lock(), &tenant, &form);
    record.tenant_id = tenant_id;
    let resp = match arrival {
        Arrival::Throttled { retry_after } => throttled(&ctx, retry_after),
        Arrival::Admitted { fault, latency } => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            answer(&shared, &conn, &ctx, &tenant, &headers, form, fault).await
        }
    };
    record.status = (!conn.is_killed()).then(|| resp.status().as_u16());
    shared.lock().token_log.push(record);
    resp
}

/// What becomes of a request once counted.
enum Arrival {
    /// A rate limit answers it `429`.
    Throttled { retry_after: u64 },
    /// On to the queued fault, if any, after the latency; else to the checks.
    Admitted {
        fault: Option<FaultKind>,
        latency: Duration,
    },
}

/// Counts the request for the endpoint and for the tenant it addresses (by
/// GUID or domain; returned when known), and passes it through the tenant's
/// rate limit, then the endpoint's.
fn arrive(st: &mut EmuState, tenant: &str, form: &Form) -> (Option<String>, Arrival) {
    st.token_requests += 1;
    st.last_token_request_claims = form
        .get("claims")
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .filter(Value::is_object);
    st.last_token_request = Some(form.0.clone());
    let tenant_id = st.directory.resolve(tenant).map(str::to_owned);
    let tenant = tenant_id
        .as_deref()
        .and_then(|id| st.directory.tenant_mut(id));
    let tenant_admission = tenant.map(|t| {
        t.token_requests += 1;
        &mut t.admission
    });
    let arrival = match rate_limit::admit(&mut st.admission, tenant_admission) {
        Err(retry_after) => Arrival::Throttled { retry_after },
        Ok(()) => Arrival::Admitted {
            fault: st.faults.pop_front().map(|f| f.kind),
            latency: st.latency,
        },
    };
    (tenant_id, arrival)
}

/// An injected fault, else the real checks.
async fn answer(
    shared: &Shared,
    conn: &Conn,
    ctx: &Ctx,
    tenant: &str,
    headers: &HeaderMap,
    form: Form,
    fault: Option<FaultKind>,
) -> Response {
    match fault {
        None => {}
        Some(FaultKind::DropConnection) => {
            conn.kill();
            return ctx.response(500, None, String::new());
        }
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Respond {
            status,
            retry_after,
            body,
            content_type,
        }) => {
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
