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

/// A started emulator with the demo app (`demo_app`) registered: most tests' set-up.
pub async fn start_with_demo_app() -> (Emulator, RegisteredApp) {
    let em = Emulator::start().await;
    let app = demo_app(&em);
    (em, app)
}

pub async fn post_form(url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client().post(url).form(form).send().await.expect("send")
}

/// The fields of a well-formed client-credentials request for the demo API with `app`'s secret,
/// varied: fields named in `drop` are left out, then each of `set` replaces the field of its
/// name in place or, if there is none, is added at the end. Error tests change one thing about
/// a request that would succeed; this is the one place that request is written.
fn token_form<'a>(
    app: &'a RegisteredApp,
    set: &[(&'a str, &'a str)],
    drop: &[&str],
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", app.client_id.as_str()),
        ("client_secret", SECRET),
        ("scope", Emulator::DEMO_API_SCOPE),
    ];
    form.retain(|(name, _)| !drop.contains(name));
    for &(name, value) in set {
        match form.iter_mut().find(|(n, _)| *n == name) {
            Some(field) => field.1 = value,
            None => form.push((name, value)),
        }
    }
    form
}

/// A well-formed client-credentials request for `scope`.
pub async fn request_token(em: &Emulator, app: &RegisteredApp, scope: &str) -> reqwest::Response {
    request_token_with(em, app, &[("scope", scope)]).await
}

/// A client-credentials request for the demo API with `fields` replacing or added to the
/// well-formed ones (see `token_form`).
pub async fn request_token_with(
    em: &Emulator,
    app: &RegisteredApp,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    post_form(&em.token_url(&app.tenant_id), &token_form(app, fields, &[])).await
}

/// A well-formed client-credentials request for the demo API with `app`'s secret, sent to the
/// token endpoint of `tenant` (a GUID or a domain), which need not be the app's home.
pub async fn request_token_in(
    em: &Emulator,
    tenant: &str,
    app: &RegisteredApp,
) -> reqwest::Response {
    post_form(&em.token_url(tenant), &token_form(app, &[], &[])).await
}

/// A client-credentials request for the demo API that leaves out the field `missing`.
pub async fn request_token_without(
    em: &Emulator,
    app: &RegisteredApp,
    missing: &str,
) -> reqwest::Response {
    post_form(
        &em.token_url(&app.tenant_id),
        &token_form(app, &[], &[missing]),
    )
    .await
}

/// Asserts a token response is a 200 and returns its access token.
pub async fn access_token(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Gets an access token for the demo API or panics.
pub async fn demo_token(em: &Emulator, app: &RegisteredApp) -> String {
    access_token(request_token(em, app, Emulator::DEMO_API_SCOPE).await).await
}

/// Calls the demo API with `token` as the bearer token.
pub async fn call_demo_api(em: &Emulator, token: &str) -> reqwest::Response {
    client()
        .get(em.demo_api_url())
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
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

/// Sends `assertion` as `app`'s client assertion and asserts Entra's refusal (see
/// `assert_entra_error`); returns the error body.
pub async fn assert_assertion_refused(
    em: &Emulator,
    app: &RegisteredApp,
    assertion: &str,
    status: u16,
    error: &str,
    code: u64,
) -> Value {
    assert_entra_error(
        request_with_assertion(em, app, assertion).await,
        status,
        error,
        code,
    )
    .await
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
