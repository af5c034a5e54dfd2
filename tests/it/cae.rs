//! Continuous Access Evaluation end to end: the client declares `cp1`, the demo API answers a
//! revoked CAE token with a claims challenge, the layer fetches a token carrying the claims and
//! `RetryOnChallenge` replays the request.

use crate::support;

use serde_json::Value;
use support::{get, setup_with};
use tower::ServiceExt;

#[tokio::test]
async fn claims_challenge_fetches_a_token_with_the_claims_and_the_replay_succeeds() {
    let s = setup_with(true).await;
    let url = s.emulator.demo_api_url();
    let mut service = support::replaying_client(&s.provider);

    assert_eq!(support::status(&mut service, get(&url)).await, 200);
    // Every token request declares the cp1 capability.
    let claims = s.emulator.last_token_request_claims().expect("claims sent");
    assert_eq!(
        claims["access_token"]["xms_cc"]["values"][0], "cp1",
        "{claims}"
    );
    assert_eq!(s.emulator.token_requests(), 1);

    s.emulator.cae_revoke();
    let response = support::status(&mut service, get(&url)).await;
    assert_eq!(response, 200, "the replay with the new token succeeds");
    assert_eq!(
        s.emulator.token_requests(),
        2,
        "exactly one extra token request"
    );
    assert_eq!(s.emulator.api_requests(), 3);
    // The new token was asked for with the challenge's claims, merged with cp1.
    let claims = s.emulator.last_token_request_claims().expect("claims sent");
    assert_eq!(
        claims["access_token"]["xms_cc"]["values"][0], "cp1",
        "{claims}"
    );
    assert_eq!(
        claims["access_token"]["nbf"]["essential"],
        Value::Bool(true),
        "{claims}"
    );
    assert_eq!(s.provider.stats().claims_challenges, 1);

    // The new token is cached: no more fetches.
    assert_eq!(support::status(&mut service, get(&url)).await, 200);
    assert_eq!(s.emulator.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_challenges_share_one_token_request() {
    let s = setup_with(true).await;
    let url = s.emulator.demo_api_url();
    let service = support::replaying_client(&s.provider);
    assert_eq!(
        service.clone().oneshot(get(&url)).await.unwrap().status(),
        200
    );

    s.emulator.cae_revoke();
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let svc = service.clone();
        let request = get(&url);
        tasks.push(tokio::spawn(async move { svc.oneshot(request).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        s.emulator.token_requests(),
        2,
        "one claims fetch for all challenged requests"
    );
}

#[tokio::test]
async fn without_a_retry_layer_the_next_request_carries_the_new_token() {
    let s = setup_with(true).await;
    let url = s.emulator.demo_api_url();
    let client = support::http_client();
    let layer = support::loopback_auth(&s.provider);
    let mut service = tower::Layer::layer(&layer, client);
    assert_eq!(support::status(&mut service, get(&url)).await, 200);
    s.emulator.cae_revoke();
    let refused = support::status(&mut service, get(&url)).await;
    assert_eq!(refused, 401);
    assert_eq!(
        s.emulator.token_requests(),
        2,
        "the claims fetch ran before the 401 returned"
    );
    assert_eq!(support::status(&mut service, get(&url)).await, 200);
    assert_eq!(s.emulator.token_requests(), 2);
}

/// The reqwest middleware acts on a claims challenge and replays as `RetryOnChallenge` does.
#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn the_reqwest_middleware_replays_after_a_claims_challenge() {
    use tower_entra::{EntraAuthMiddleware, InspectResponse};

    let s = setup_with(true).await;
    let url = s.emulator.demo_api_url();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(EntraAuthMiddleware::from_layer(&support::loopback_auth(
            &s.provider,
        )))
        .build();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);

    s.emulator.cae_revoke();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "the replay with the new token");
    assert!(
        !response.token_renewed(),
        "the replay's answer was no refusal"
    );
    assert_eq!(s.emulator.token_requests(), 2, "one claims fetch");
    assert_eq!(s.emulator.api_requests(), 3);
    let claims = s.emulator.last_token_request_claims().expect("claims sent");
    assert_eq!(
        claims["access_token"]["nbf"]["essential"],
        Value::Bool(true),
        "{claims}"
    );
    assert_eq!(s.provider.stats().claims_challenges, 1);
}
