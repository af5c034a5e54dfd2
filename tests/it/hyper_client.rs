//! `EntraAuthLayer` over a hyper-util client, against a real hyper server on 127.0.0.1 that
//! verifies the token's signature, audience, expiry and role.

use crate::support;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::{CheckingServer, DEMO_AUDIENCE, TokenChecker, setup};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_100_concurrent_requests_one_token_fetch() {
    let s = setup().await;
    let server = CheckingServer::start(TokenChecker::new(&s.emulator, DEMO_AUDIENCE)).await;
    let service = support::authorized_client(&s.provider);

    let mut tasks = Vec::new();
    for i in 0..100 {
        let svc = service.clone();
        let url = server.url(&format!("/items/{i}"));
        tasks.push(tokio::spawn(async move {
            let request = http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = svc.oneshot(request).await.expect("request");
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body:?}");
        assert_eq!(body, format!("hello {}", s.app.client_id).as_bytes());
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 100);
    assert_eq!(server.refused.load(Ordering::SeqCst), 0);
    assert_eq!(
        s.emulator.token_requests(),
        1,
        "one token fetch for 100 requests"
    );
    assert_eq!(s.provider.stats().fetches, 1);
}

#[tokio::test]
async fn a_refused_token_is_dropped_and_the_next_request_gets_a_new_one() {
    let s = setup().await;
    let mut service = support::authorized_client(&s.provider);
    let url = s.emulator.demo_api_url();
    let get = || support::get(&url);

    assert_eq!(support::status(&mut service, get()).await, 200);
    s.emulator.revoke_issued_tokens();
    // The demo API answers 401 invalid_token: the token is dropped from the cache...
    assert_eq!(support::status(&mut service, get()).await, 401);
    assert_eq!(s.provider.stats().invalidations, 1);
    // ...and the next request carries a new one.
    assert_eq!(support::status(&mut service, get()).await, 200);
    assert_eq!(s.emulator.token_requests(), 2);
}
