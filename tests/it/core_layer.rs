//! EntraAuthLayer over a real hyper-util client talking to the emulator's demo API.

use crate::support;

use std::time::Duration;

use entra_emulator::Emulator;
use http::StatusCode;
use support::{get, http_client, setup};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_entra::{EntraAuthLayer, Error, TokenErrorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_requests_share_one_token_request() {
    let s = setup().await;
    s.emulator.set_latency(Duration::from_millis(100));
    let service = EntraAuthLayer::builder(s.provider.clone())
        .allow_hosts(["127.0.0.1"])
        .build()
        .unwrap()
        .layer(http_client());
    let url = s.emulator.demo_api_url();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let svc = service.clone();
            let req = get(&url);
            tokio::spawn(async move { svc.oneshot(req).await })
        })
        .collect();
    for t in tasks {
        let response = t.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(s.emulator.token_requests(), 1);
    assert_eq!(s.emulator.api_requests(), 1000);
}

#[tokio::test]
async fn a_401_invalid_token_invalidates_and_the_next_request_fetches_anew() {
    let s = setup().await;
    let mut service = EntraAuthLayer::builder(s.provider.clone())
        .allow_hosts(["127.0.0.1"])
        .build()
        .unwrap()
        .layer(http_client());
    let url = s.emulator.demo_api_url();
    let ok = support::status(&mut service, get(&url)).await;
    assert_eq!(ok, StatusCode::OK);

    s.emulator.revoke_issued_tokens();
    let refused = support::status(&mut service, get(&url)).await;
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
    assert_eq!(s.emulator.token_requests(), 1);

    let ok = support::status(&mut service, get(&url)).await;
    assert_eq!(ok, StatusCode::OK);
    assert_eq!(s.emulator.token_requests(), 2);
}

#[tokio::test]
async fn an_existing_authorization_header_is_kept() {
    let s = setup().await;
    let mut service = EntraAuthLayer::builder(s.provider.clone())
        .allow_hosts(["127.0.0.1"])
        .build()
        .unwrap()
        .layer(http_client());
    let mut req = get(&s.emulator.demo_api_url());
    req.headers_mut()
        .insert("authorization", "Bearer caller-chose-this".parse().unwrap());
    let response = support::status(&mut service, req).await;
    assert_eq!(response, StatusCode::UNAUTHORIZED);
    assert_eq!(s.emulator.token_requests(), 0);
}

#[tokio::test]
async fn plain_http_to_a_remote_host_gets_no_token() {
    let s = setup().await;
    // Whatever hosts the layer allows, plain http to a remote host is refused.
    let mut service = EntraAuthLayer::builder(s.provider.clone())
        .allow_any_https_host()
        .build()
        .unwrap()
        .layer(tower::service_fn(
            |_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            },
        ));
    let err = service
        .ready()
        .await
        .unwrap()
        .call(get("http://graph.microsoft.com/v1.0/organization"))
        .await
        .unwrap_err();
    let Error::Token(e) = err else {
        panic!("not a token error")
    };
    assert_eq!(e.kind(), TokenErrorKind::UnsafeDestination);
    assert!(e.to_string().contains("use https"), "{e}");
    assert_eq!(s.emulator.token_requests(), 0);
}

/// A `Buffer` panics when a clone is called without `poll_ready`, as a tonic `Channel` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_buffer_cold_requests_never_call_an_unreadied_clone() {
    let s = setup().await;
    s.emulator.set_latency(Duration::from_millis(50));
    let service = ServiceBuilder::new()
        .layer(
            EntraAuthLayer::builder(s.provider.clone())
                .allow_hosts(["127.0.0.1"])
                .build()
                .unwrap(),
        )
        .buffer(4)
        .service(http_client());
    let url = s.emulator.demo_api_url();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let mut svc = service.clone();
            let req = get(&url);
            tokio::spawn(async move {
                svc.ready()
                    .await
                    .map_err(|e| e.to_string())?
                    .call(req)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.expect("a request panicked").unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(s.emulator.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outer_timeout_bounds_a_slow_token_fetch() {
    let s = setup().await;
    s.emulator.set_latency(Duration::from_secs(60));
    let mut service = ServiceBuilder::new()
        .timeout(Duration::from_secs(2))
        .layer(
            EntraAuthLayer::builder(s.provider.clone())
                .allow_hosts(["127.0.0.1"])
                .build()
                .unwrap(),
        )
        .service(http_client());
    let started = tokio::time::Instant::now();
    let err = service
        .ready()
        .await
        .unwrap()
        .call(get(&s.emulator.demo_api_url()))
        .await
        .unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(s.emulator.api_requests(), 0);
}

/// Retries once on a 401, as a user's policy would; the retry must carry the new token.
#[derive(Clone)]
struct RetryOn401(bool);

impl<B, E>
    tower::retry::Policy<http::Request<http_body_util::Full<bytes::Bytes>>, http::Response<B>, E>
    for RetryOn401
{
    type Future = std::future::Ready<()>;
    fn retry(
        &mut self,
        _req: &mut http::Request<http_body_util::Full<bytes::Bytes>>,
        result: &mut Result<http::Response<B>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !self.0 => {
                self.0 = true;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }
    fn clone_request(
        &mut self,
        req: &http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> Option<http::Request<http_body_util::Full<bytes::Bytes>>> {
        let mut clone = http::Request::new(http_body_util::Full::default());
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

#[tokio::test]
async fn an_outer_retry_attaches_the_current_token_on_each_attempt() {
    let s = setup().await;
    let mut service = ServiceBuilder::new()
        .retry(RetryOn401(false))
        .layer(
            EntraAuthLayer::builder(s.provider.clone())
                .allow_hosts(["127.0.0.1"])
                .build()
                .unwrap(),
        )
        .service(http_client());
    let url = s.emulator.demo_api_url();
    assert_eq!(
        support::status(&mut service, get(&url)).await,
        StatusCode::OK
    );
    s.emulator.revoke_issued_tokens();
    let response = support::status(&mut service, get(&url)).await;
    assert_eq!(
        response,
        StatusCode::OK,
        "the retry did not carry a new token"
    );
    assert_eq!(s.emulator.token_requests(), 2);
    assert_eq!(s.emulator.api_requests(), 3);
}

#[tokio::test]
async fn a_missing_role_is_a_403_from_the_api_not_a_token_error() {
    let s = setup().await;
    let app = s.emulator.register_app(
        &s.emulator.tenant_id(),
        entra_emulator::App::new("unconsented").with_secret("s"),
    );
    let provider = tower_entra::TokenProvider::new(
        support::credential(&s.emulator, &app, "s"),
        Emulator::DEMO_API_SCOPE,
    )
    .unwrap();
    let mut service = EntraAuthLayer::builder(provider)
        .allow_hosts(["127.0.0.1"])
        .build()
        .unwrap()
        .layer(http_client());
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(&s.emulator.demo_api_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
