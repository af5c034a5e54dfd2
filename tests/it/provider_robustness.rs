//! The provider recovers from fetches that end badly, keeps the newest token, and does not let a
//! resource that refuses every token turn requests into token requests.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use entra_emulator::{Emulator, Fault};
use futures::future::BoxFuture;
use http::StatusCode;
use support::{SECRET, credential, get, http_client, setup, status};
use tower::retry::RetryLayer;
use tower::{Layer, ServiceBuilder};
use tower_entra::{
    AccessToken, Credential, EntraAuthLayer, RetryOnChallenge, TokenError, TokenProvider,
    TokenRequest,
};

/// A credential whose behaviour the test scripts: how long each request takes, and whether it
/// panics.
#[derive(Debug, Default)]
struct Scripted {
    calls: AtomicUsize,
    panic_on_first: bool,
}

impl Credential for Scripted {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let with_claims = request.claims.is_some();
        Box::pin(async move {
            if self.panic_on_first && n == 0 {
                panic!("a credential bug");
            }
            // An ordinary request is slow, a claims request fast.
            let (delay, name) = if with_claims {
                (1, "claims")
            } else {
                (10, "plain")
            };
            tokio::time::sleep(Duration::from_secs(delay)).await;
            AccessToken::new(format!("{name}-{n}"), Duration::from_secs(3600))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_fetch_does_not_wedge_the_provider() {
    let provider = TokenProvider::new(
        Scripted {
            panic_on_first: true,
            ..Default::default()
        },
        "api://x/.default",
    )
    .unwrap();
    let e = provider.token().await.unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");
    // The next caller starts a new fetch instead of joining the dead one.
    tokio::time::advance(Duration::from_secs(31)).await;
    let token = provider.token().await.expect("the provider stayed wedged");
    assert_eq!(token.secret(), "plain-1");
}

#[test]
fn a_call_outside_a_runtime_does_not_wedge_the_provider() {
    let provider = TokenProvider::new(Scripted::default(), "api://x/.default").unwrap();
    let e = futures::FutureExt::now_or_never(provider.token())
        .expect("immediate")
        .unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "{e}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let token = runtime.block_on(provider.token()).expect("wedged");
    assert_eq!(token.secret(), "plain-0");
}

#[tokio::test(start_paused = true)]
async fn a_slow_ordinary_fetch_never_replaces_a_later_claims_token() {
    let provider = TokenProvider::new(Scripted::default(), "api://x/.default").unwrap();
    let cold = tokio::spawn({
        let p = provider.clone();
        async move { p.token().await }
    });
    tokio::task::yield_now().await;
    // Started after the ordinary fetch, finished before it.
    let claims = provider
        .token_with_claims(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#)
        .await
        .unwrap();
    assert_eq!(claims.secret(), "claims-1");
    let plain = cold.await.unwrap().unwrap();
    assert_eq!(plain.secret(), "plain-0");
    assert_eq!(
        provider.token().await.unwrap().secret(),
        "claims-1",
        "the older fetch overwrote the claims token"
    );
}

#[tokio::test]
async fn a_resource_that_refuses_every_token_costs_one_renewal_per_interval() {
    let s = setup().await;
    // A Graph token at the demo API: refused (wrong audience) every time.
    let graph = TokenProvider::new(
        credential(&s.emulator, &s.app, SECRET),
        "https://graph.microsoft.com/.default",
    )
    .unwrap();
    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnChallenge::new()))
        .layer(
            EntraAuthLayer::builder(graph.clone())
                .allow_hosts(["127.0.0.1"])
                .build()
                .unwrap(),
        )
        .service(http_client());
    let url = s.emulator.demo_api_url();
    for _ in 0..10 {
        assert_eq!(
            status(&mut service, get(&url)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // The first refusal dropped the token and replayed once with a new one; the rest were
    // answered as they came, without new token requests or replays.
    assert_eq!(s.emulator.token_requests(), 2);
    assert_eq!(s.emulator.api_requests(), 11);
    assert_eq!(graph.stats().invalidations, 1);
}

#[tokio::test]
async fn no_replay_for_a_request_sent_without_a_token() {
    let s = setup().await;
    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnChallenge::new()))
        .layer(
            EntraAuthLayer::builder(s.provider.clone())
                .allow_hosts(["graph.microsoft.com"])
                .unlisted_hosts(tower_entra::UnlistedHost::SendWithoutToken)
                .build()
                .unwrap(),
        )
        .service(http_client());
    let url = s.emulator.demo_api_url();
    assert_eq!(
        status(&mut service, get(&url)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.emulator.api_requests(),
        1,
        "a tokenless request was replayed"
    );
    assert_eq!(s.emulator.token_requests(), 0);
}

#[tokio::test]
async fn a_failed_claims_fetch_still_returns_the_apis_answer() {
    let s = support::setup_with(true).await;
    let mut service = EntraAuthLayer::builder(s.provider.clone())
        .allow_hosts(["127.0.0.1"])
        .build()
        .unwrap()
        .layer(http_client());
    let url = s.emulator.demo_api_url();
    assert_eq!(status(&mut service, get(&url)).await, StatusCode::OK);
    s.emulator.cae_revoke();
    s.emulator.push_fault(Fault::status(400).body(
        r#"{"error":"invalid_request","error_description":"AADSTS90100: claims","error_codes":[90100]}"#,
    ));
    // The claims challenge's token request fails; the caller still gets the 401, not an error.
    assert_eq!(
        status(&mut service, get(&url)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.provider
            .stats()
            .last_error
            .unwrap()
            .entra()
            .unwrap()
            .codes(),
        &[90100]
    );
}

#[tokio::test(start_paused = true)]
async fn absurd_builder_durations_do_not_panic() {
    let s = setup().await;
    let provider = TokenProvider::builder(
        credential(&s.emulator, &s.app, SECRET),
        Emulator::DEMO_API_SCOPE,
    )
    .initial_backoff(Duration::MAX)
    .max_backoff(Duration::MAX)
    .expiry_margin(Duration::MAX)
    .refresh_jitter(Duration::MAX)
    .build()
    .unwrap();
    // A 500, then a retry after the (clamped) backoff: no overflow anywhere on the way.
    s.emulator.push_fault(Fault::status(500));
    provider.token().await.expect("the retry did not happen");
    provider.token().await.unwrap();
    assert_eq!(s.emulator.token_requests(), 2);
}

#[test]
fn a_fetch_whose_task_never_ran_does_not_wedge_the_provider() {
    let provider = TokenProvider::new(Scripted::default(), "api://x/.default").unwrap();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    {
        // Start a fetch on a runtime that never runs it, then drop the runtime with it.
        let _entered = first.enter();
        assert!(futures::FutureExt::now_or_never(provider.token()).is_none());
    }
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let token = second
        .block_on(provider.token())
        .expect("joined the fetch that never ran");
    // The first fetch never reached the credential.
    assert_eq!(token.secret(), "plain-0");
}

#[tokio::test(start_paused = true)]
async fn a_fetch_started_before_a_refusal_does_not_bring_back_an_older_token() {
    let provider = TokenProvider::builder(Scripted::default(), "api://x/.default")
        .refresh_jitter(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(provider.token().await.unwrap().secret(), "plain-0");
    // A slow refresh ahead (10 s) starts...
    tokio::time::advance(Duration::from_secs(3301)).await;
    provider.token().await.unwrap();
    tokio::task::yield_now().await;
    // ...then a claims fetch lands (1 s), and the API refuses its token.
    let claims = provider
        .token_with_claims(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#)
        .await
        .unwrap();
    assert_eq!(claims.secret(), "claims-2");
    provider.invalidate(&claims);
    // The refresh that started before the refusal finishes; its token is not cached.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        provider.token().await.unwrap().secret(),
        "plain-3",
        "a token fetched before the refusal came back"
    );
}

#[tokio::test(start_paused = true)]
async fn claims_challenges_with_changing_claims_cost_one_fetch_per_interval() {
    let provider = TokenProvider::new(Scripted::default(), "api://x/.default").unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let api = tower::service_fn({
        let served = served.clone();
        move |_req: http::Request<String>| {
            // Each answer challenges with different claims.
            let n = served.fetch_add(1, Ordering::SeqCst);
            async move {
                let claims = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!(r#"{{"access_token":{{"nbf":{{"essential":true,"value":"{n}"}}}}}}"#),
                );
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(401)
                        .header(
                            "www-authenticate",
                            format!(r#"Bearer error="insufficient_claims", claims="{claims}""#),
                        )
                        .body(())
                        .unwrap(),
                )
            }
        }
    });
    let mut service = EntraAuthLayer::builder(provider.clone())
        .allow_hosts(["api.contoso.com"])
        .build()
        .unwrap()
        .layer(api);
    for _ in 0..5 {
        let request = http::Request::get("https://api.contoso.com/")
            .body(String::new())
            .unwrap();
        let response = tower::ServiceExt::oneshot(&mut service, request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(provider.stats().claims_challenges, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_assertion_callback_times_out() {
    let credential = tower_entra::ClientAssertionCredential::builder(
        "contoso.onmicrosoft.com",
        "00000000-0000-0000-0000-000000000001",
        futures::future::pending::<Result<String, TokenError>>,
    )
    .timeout(Duration::from_secs(5))
    .build()
    .unwrap();
    let e = credential
        .request_token(TokenRequest::new("api://x/.default"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), tower_entra::TokenErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("callback"), "{e}");
}
