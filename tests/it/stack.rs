//! The full stack `Retry -> Timeout -> Buffer -> ConcurrencyLimit -> EntraAuth -> client`
//! compiles and serves; `RetryOnChallenge` replays a request refused with `invalid_token`.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::setup;
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_entra::RetryOnChallenge;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_timeout_buffer_limit_auth_client_serves_and_replays_after_invalid_token() {
    let s = setup().await;
    let client = support::http_client();
    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnChallenge::new()))
        .timeout(Duration::from_secs(30))
        .buffer(64)
        .concurrency_limit(8)
        .layer(support::loopback_auth(&s.provider))
        .service(client);
    let url = s.emulator.demo_api_url();
    let get = || support::get(&url);

    // Serves, concurrently, through the buffer and the limit, with one token fetch.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let svc = service.clone();
        let request = get();
        tasks.push(tokio::spawn(async move { svc.oneshot(request).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("response").status(), 200);
    }
    assert_eq!(s.emulator.token_requests(), 1);

    // A revoked token: the 401 drops it, the policy replays, the replay carries a new token.
    s.emulator.revoke_issued_tokens();
    let response = service.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(&s.app.client_id));
    assert_eq!(
        s.emulator.token_requests(),
        2,
        "exactly one extra token request"
    );
    assert_eq!(
        s.emulator.api_requests(),
        52,
        "the refused request and its replay"
    );
}

#[tokio::test]
async fn the_policy_replays_only_once() {
    // A server that refuses every token: the request is sent twice, then the 401 is returned.
    let s = setup().await;
    let checker = support::TokenChecker::new(&s.emulator, "api://some-other-audience");
    let server = support::CheckingServer::start(checker).await;
    let service = support::replaying_client(&s.provider);
    let request = http::Request::get(server.url("/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(server.refused.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(s.emulator.token_requests(), 2);
}
