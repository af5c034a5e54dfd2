//! `EntraAuthLayer` on a tonic `Channel` with a generated client (tonic-health), against a real
//! tonic server on 127.0.0.1 whose interceptor verifies the bearer token.

// tonic's interceptor signature returns Result<_, Status>.
#![allow(clippy::result_large_err)]

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{DEMO_AUDIENCE, TokenChecker, setup};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_entra::EntraAuthLayer;

/// Starts a health server whose interceptor accepts only valid tokens; returns its channel and
/// the number of requests the interceptor accepted.
/// The channel's origin goes to `EntraAuthLayer::origin`: the generated client sends relative
/// URIs.
async fn health_server(checker: TokenChecker) -> (Channel, http::Uri, Arc<AtomicUsize>) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let interceptor = move |req: Request<()>| -> Result<Request<()>, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match checker.check(auth) {
            Ok(_) => {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(req)
            }
            Err(why) => Err(Status::unauthenticated(why)),
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                health,
                interceptor,
            ))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = endpoint.connect().await.unwrap();
    (channel, endpoint.uri().clone(), accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_health_check_100_concurrent_calls_one_token_fetch() {
    let s = setup().await;
    let (channel, origin, accepted) =
        health_server(TokenChecker::new(&s.emulator, DEMO_AUDIENCE)).await;
    let channel = ServiceBuilder::new()
        .layer(
            EntraAuthLayer::builder(s.provider.clone())
                .allow_hosts(["127.0.0.1"])
                .origin(origin.clone())
                .build()
                .unwrap(),
        )
        .service(channel);
    let client = HealthClient::new(channel);

    let mut calls = Vec::new();
    for _ in 0..100 {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
        }));
    }
    for call in calls {
        let response = call.await.unwrap().expect("health check");
        assert_eq!(response.into_inner().status(), ServingStatus::Serving);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 100);
    assert_eq!(
        s.emulator.token_requests(),
        1,
        "one token fetch for 100 calls"
    );
}

#[tokio::test]
async fn without_the_layer_the_interceptor_refuses() {
    // Proves the server really checks: the same call with no token is refused.
    let s = setup().await;
    let (channel, _origin, accepted) =
        health_server(TokenChecker::new(&s.emulator, DEMO_AUDIENCE)).await;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn token_failures_reach_the_caller_as_unauthenticated_or_unavailable() {
    use entra_emulator::Fault;
    use std::time::Duration;
    use tower_entra::TokenProvider;

    let s = setup().await;
    let (channel, origin, accepted) =
        health_server(TokenChecker::new(&s.emulator, DEMO_AUDIENCE)).await;

    // A wrong secret: permanent, so Unauthenticated, with the fix hint.
    let wrong = TokenProvider::new(
        support::credential(&s.emulator, &s.app, "not-the-secret"),
        entra_emulator::Emulator::DEMO_API_SCOPE,
    )
    .unwrap();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(
                EntraAuthLayer::builder(wrong)
                    .allow_hosts(["127.0.0.1"])
                    .origin(origin.clone())
                    .build()
                    .unwrap()
                    .grpc(),
            )
            .service(channel.clone()),
    );
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("AADSTS7000215"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("Hint:"), "{}", status.message());
    assert!(!status.message().contains("not-the-secret"));

    // Entra unavailable: transient, so Unavailable.
    let flaky = TokenProvider::builder(
        support::credential(&s.emulator, &s.app, support::SECRET),
        entra_emulator::Emulator::DEMO_API_SCOPE,
    )
    .max_attempts(1)
    .initial_backoff(Duration::from_millis(1))
    // No backoff: the next call may try Entra again at once.
    .max_backoff(Duration::ZERO)
    .build()
    .unwrap();
    s.emulator.push_fault(Fault::status(503));
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(
                EntraAuthLayer::builder(flaky)
                    .allow_hosts(["127.0.0.1"])
                    .origin(origin.clone())
                    .build()
                    .unwrap()
                    .grpc(),
            )
            .service(channel),
    );
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // The next call, with Entra back, goes through.
    client.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn without_an_origin_relative_uris_get_no_token() {
    let s = setup().await;
    let (channel, _origin, accepted) =
        health_server(TokenChecker::new(&s.emulator, DEMO_AUDIENCE)).await;
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(EntraAuthLayer::new(s.provider.clone()).grpc())
            .service(channel),
    );
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("origin"), "{}", status.message());
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    assert_eq!(s.emulator.token_requests(), 0);
}
