//! `EntraAuthLayer` over `reqwest::Client` as a `tower::Service<reqwest::Request>`, and
//! (feature `reqwest-middleware`) `EntraAuthMiddleware` in a `reqwest_middleware` client.

use crate::support;

use std::sync::atomic::Ordering;

use reqwest::{Method, Url};
use support::{CheckingServer, DEMO_AUDIENCE, Setup, TokenChecker, setup};
use tower::{ServiceBuilder, ServiceExt};
use tower_entra::EntraAuthLayer;

/// The set-up's provider, allowed to send its token to the servers on 127.0.0.1 (the emulator's
/// demo API, the checking server).
fn loopback_layer(s: &Setup) -> EntraAuthLayer {
    EntraAuthLayer::builder(s.provider.clone())
        .allow_hosts(["127.0.0.1"])
        .build()
        .unwrap()
}

/// A `reqwest_middleware` client with [`loopback_layer`] as its `EntraAuthMiddleware`.
#[cfg(feature = "reqwest-middleware")]
fn middleware_client(s: &Setup) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_entra::EntraAuthMiddleware::from_layer(
            &loopback_layer(s),
        ))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_client_as_a_service_100_concurrent_requests_one_token_fetch() {
    let s = setup().await;
    let server = CheckingServer::start(TokenChecker::new(&s.emulator, DEMO_AUDIENCE)).await;
    let service = ServiceBuilder::new()
        .layer(loopback_layer(&s))
        .service(reqwest::Client::new());

    let mut tasks = Vec::new();
    for i in 0..100 {
        let svc = service.clone();
        let url = Url::parse(&server.url(&format!("/r/{i}"))).unwrap();
        tasks.push(tokio::spawn(async move {
            let response = svc
                .oneshot(reqwest::Request::new(Method::GET, url))
                .await
                .expect("request");
            (response.status(), response.text().await.unwrap())
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("hello {}", s.app.client_id));
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 100);
    assert_eq!(s.emulator.token_requests(), 1);
}

#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn reqwest_middleware_attaches_and_replays_after_invalid_token() {
    let s = setup().await;
    let client = middleware_client(&s);
    let url = s.emulator.demo_api_url();
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.emulator.token_requests(), 1);

    s.emulator.revoke_issued_tokens();
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "replayed with a new token");
    assert_eq!(
        s.emulator.token_requests(),
        2,
        "exactly one extra token request"
    );
    assert_eq!(s.emulator.api_requests(), 3);

    // Same provider (cache) as the tower layer: no new fetch.
    let svc = tower::Layer::layer(&loopback_layer(&s), reqwest::Client::new());
    let r = svc
        .oneshot(reqwest::Request::new(
            Method::GET,
            Url::parse(&url).unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.emulator.token_requests(), 2);
}

#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn reqwest_middleware_refuses_plain_http_remote_hosts() {
    use tower_entra::TokenErrorKind;

    let s = setup().await;
    let client = middleware_client(&s);
    let err = client
        .get("http://api.example.com/data")
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(e) = err else {
        panic!("expected a middleware error");
    };
    let e = e
        .downcast_ref::<tower_entra::TokenError>()
        .expect("a TokenError");
    assert_eq!(e.kind(), TokenErrorKind::UnsafeDestination);
    assert_eq!(s.emulator.token_requests(), 0);
}
