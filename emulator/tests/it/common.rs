//! Shared helpers for the emulator's protocol tests.

use base64::Engine as _;
use entra_emulator::{App, Emulator, RegisteredApp};
use serde_json::Value;

pub const SECRET: &str = "s3cret~value";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// Registers an app with `SECRET` and the demo role in the default tenant.
pub fn demo_app(em: &Emulator) -> RegisteredApp {
    em.register_app(
        &em.tenant_id(),
        App::new("test app")
            .with_secret(SECRET)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    )
}

pub async fn post_form(url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client().post(url).form(form).send().await.expect("send")
}

/// A well-formed client-credentials request for the demo API.
pub async fn request_token(em: &Emulator, app: &RegisteredApp, scope: &str) -> reqwest::Response {
    post_form(
        &em.token_url(&app.tenant_id),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app.client_id),
            ("client_secret", SECRET),
            ("scope", scope),
        ],
    )
    .await
}

/// Gets an access token for the demo API or panics.
pub async fn demo_token(em: &Emulator, app: &RegisteredApp) -> String {
    let resp = request_token(em, app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Decodes a JWT part (0 = header, 1 = claims) without verifying anything.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("jwt part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

/// Asserts an Entra-shaped OAuth error and returns its JSON body.
pub async fn assert_entra_error(
    resp: reqwest::Response,
    status: u16,
    error: &str,
    code: u64,
) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let request_id = resp.headers()["x-ms-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = resp.json().await.expect("json body");
    assert_eq!(body["error"], error, "error in {body}");
    assert_eq!(
        body["error_codes"],
        serde_json::json!([code]),
        "codes in {body}"
    );
    let description = body["error_description"].as_str().expect("description");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    let trace_id = body["trace_id"].as_str().expect("trace_id");
    assert_eq!(trace_id, request_id);
    let correlation_id = body["correlation_id"].as_str().expect("correlation_id");
    let timestamp = body["timestamp"].as_str().expect("timestamp");
    assert!(description.ends_with(&format!(
        "\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
    )));
    assert_eq!(timestamp.len(), "2026-11-27 11:30:00Z".len());
    assert!(timestamp.ends_with('Z'));
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
    body
}

pub fn description(body: &Value) -> &str {
    body["error_description"].as_str().unwrap_or_default()
}

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client-assertion token request for the demo API.
pub async fn request_with_assertion(
    em: &Emulator,
    app: &RegisteredApp,
    assertion: &str,
) -> reqwest::Response {
    post_form(
        &em.token_url(&app.tenant_id),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app.client_id),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", Emulator::DEMO_API_SCOPE),
        ],
    )
    .await
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
