//! Test controls: lifetimes, number encoding, latency, faults, counters.

use std::time::Duration;

use crate::common::*;
use entra_emulator::{Emulator, Fault, RegisteredApp};
use serde_json::Value;

/// The JSON body of a demo-API token response, whatever its status: these tests read the
/// lifetime fields the controls shape.
async fn demo_token_body(em: &Emulator, app: &RegisteredApp) -> Value {
    request_token(em, app, Emulator::DEMO_API_SCOPE)
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn token_lifetime_and_refresh_in() {
    let (em, app) = start_with_demo_app().await;
    em.set_token_lifetime(Duration::from_secs(7200));
    em.set_refresh_in(Some(Duration::from_secs(3600)));
    let body = demo_token_body(&em, &app).await;
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["ext_expires_in"], 7200);
    assert_eq!(body["refresh_in"], 3600);
    let claims = jwt_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        7200
    );
    em.set_refresh_in(None);
    let body = demo_token_body(&em, &app).await;
    assert!(body.get("refresh_in").is_none());
}

#[tokio::test]
async fn numbers_as_strings() {
    let (em, app) = start_with_demo_app().await;
    em.set_numbers_as_strings(true);
    em.set_refresh_in(Some(Duration::from_secs(1800)));
    let body = demo_token_body(&em, &app).await;
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["ext_expires_in"], "3599");
    assert_eq!(body["refresh_in"], "1800");
}

#[tokio::test]
async fn latency_delays_answers() {
    let (em, app) = start_with_demo_app().await;
    em.set_latency(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn latency_follows_the_paused_clock() {
    let (em, app) = start_with_demo_app().await;
    em.set_latency(Duration::from_secs(3600));
    let started = std::time::Instant::now();
    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 200);
    // An hour of emulated latency passed instantly (auto-advanced clock).
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn faults_are_fifo_then_normal_service_resumes() {
    let (em, app) = start_with_demo_app().await;
    em.push_fault(Fault::status(503));
    em.push_fault(Fault::status(429).retry_after(7));
    em.push_fault(
        Fault::status(502)
            .content_type("text/html")
            .body("<html>Bad Gateway</html>"),
    );
    em.push_fault(Fault::status(500).body("not json"));

    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert!(resp.headers().get("retry-after").is_none());
    assert_entra_error(resp, 503, "temporarily_unavailable", 90033).await;

    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_entra_error(resp, 429, "temporarily_unavailable", 90055).await;

    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "text/html");
    assert_eq!(resp.text().await.unwrap(), "<html>Bad Gateway</html>");

    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.text().await.unwrap(), "not json");

    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(em.token_requests(), 5);
}

#[tokio::test]
async fn default_fault_bodies() {
    let (em, app) = start_with_demo_app().await;
    for (status, error, code) in [
        (400, "invalid_request", 90013),
        (401, "invalid_client", 7000215),
        (403, "unauthorized_client", 7000112),
        (500, "server_error", 50000),
        (504, "temporarily_unavailable", 90033),
    ] {
        em.push_fault(Fault::status(status));
        let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
        assert_entra_error(resp, status, error, code).await;
    }
}

#[tokio::test]
async fn drop_connection_closes_without_answer() {
    let (em, app) = start_with_demo_app().await;
    em.push_fault(Fault::drop_connection());
    let err = client()
        .post(em.token_url(&app.tenant_id))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect_err("connection should be dropped");
    assert!(!err.is_status(), "{err:?}");
    assert_eq!(em.token_requests(), 1);
    // The server keeps serving.
    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn delay_fault_slows_one_request() {
    let (em, app) = start_with_demo_app().await;
    em.push_fault(Fault::delay(Duration::from_secs(30)));
    let slow = tokio::time::timeout(
        Duration::from_secs(10),
        request_token(&em, &app, Emulator::DEMO_API_SCOPE),
    )
    .await;
    assert!(slow.is_err(), "first request should time out");
    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn records_requests() {
    let (em, app) = start_with_demo_app().await;
    assert_eq!(em.last_token_request(), None);
    assert_eq!(em.token_requests(), 0);
    let _ = request_token(&em, &app, "https://graph.microsoft.com/.default").await;
    let fields = em.last_token_request().unwrap();
    assert_eq!(
        fields,
        vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), app.client_id.clone()),
            ("client_secret".to_owned(), SECRET.to_owned()),
            (
                "scope".to_owned(),
                "https://graph.microsoft.com/.default".to_owned()
            ),
        ]
    );
    // Failed requests count too.
    let _ = post_form(&em.token_url("nope"), &[("a", "b c")]).await;
    assert_eq!(em.token_requests(), 2);
    assert_eq!(
        em.last_token_request().unwrap(),
        vec![("a".to_owned(), "b c".to_owned())]
    );
    assert_eq!(em.api_requests(), 0);
}

#[tokio::test]
async fn server_stops_when_last_clone_drops() {
    let em = Emulator::start().await;
    let url = em.token_url(&em.tenant_id());
    let clone = em.clone();
    drop(em);
    // Still served through the clone.
    let resp = post_form(&url, &[]).await;
    assert_eq!(resp.status(), 400);
    drop(clone);
    let mut refused = false;
    for _ in 0..50 {
        if client().post(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "server should stop");
}
