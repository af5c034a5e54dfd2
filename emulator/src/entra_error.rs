//! Entra's answers: the error JSON with its `AADSTS` code, and the headers
//! and identifiers (trace, correlation, timestamp) every answer carries.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

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
