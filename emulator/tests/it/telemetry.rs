//! The latest token request is recorded with its headers, so that tests can
//! assert the telemetry headers a client sends.

use crate::common::*;
use entra_emulator::{Emulator, Endpoint, Fault};

#[tokio::test]
async fn the_latest_token_request_keeps_its_telemetry_headers() {
    let (em, app) = start_with_demo_app().await;
    assert_eq!(em.last_token_http_request(), None);
    let resp = client()
        .post(em.token_url(&app.tenant_id))
        .header("x-client-SKU", "tower-entra")
        .header("x-client-Ver", "0.1.0")
        .header("x-client-OS", "linux")
        .header("User-Agent", "tower-entra/0.1.0")
        .header("client-request-id", "6a1e7c1c-0000-4000-8000-000000000001")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", SECRET),
            ("scope", Emulator::DEMO_API_SCOPE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let req = em.last_token_http_request().expect("recorded");
    assert_eq!(req.endpoint, Endpoint::Token);
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("/{}/oauth2/v2.0/token", app.tenant_id));
    assert_eq!(req.header("x-client-sku"), Some("tower-entra"));
    assert_eq!(req.header("X-Client-Ver"), Some("0.1.0"));
    assert_eq!(req.header("x-client-os"), Some("linux"));
    assert_eq!(req.header("user-agent"), Some("tower-entra/0.1.0"));
    assert_eq!(
        req.header("client-request-id"),
        Some("6a1e7c1c-0000-4000-8000-000000000001")
    );
    assert_eq!(req.form_field("scope"), Some(Emulator::DEMO_API_SCOPE));
    assert_eq!(req.status, Some(200));
}

#[tokio::test]
async fn each_token_request_replaces_the_record_with_its_own_status() {
    let (em, app) = start_with_demo_app().await;
    request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    em.push_fault(Fault::status(503));
    let resp = client()
        .post(em.token_url(&app.tenant_id))
        .header("x-client-SKU", "second")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let req = em.last_token_http_request().unwrap();
    assert_eq!(req.header("x-client-sku"), Some("second"));
    assert_eq!(req.status, Some(503));
    assert_eq!(req.header("x-client-ver"), None);

    em.push_fault(Fault::drop_connection());
    let dropped = client()
        .post(em.token_url(&app.tenant_id))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await;
    assert!(dropped.is_err());
    assert_eq!(em.last_token_http_request().unwrap().status, None);
}
