//! `Retry -> Timeout -> Buffer -> ConcurrencyLimit -> EntraAuth -> client`, against the
//! in-process Entra emulator: tokens are revoked (401 `invalid_token`), then a Continuous
//! Access Evaluation event (401 `insufficient_claims`); `RetryOnChallenge` replays each refused
//! request once with a new token.
//!
//! ```sh
//! cargo run --example retry_timeout
//! ```

use std::time::Duration;

use bytes::Bytes;
use entra_emulator::{App, Emulator};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_entra::{ClientSecretCredential, EntraAuthLayer, RetryOnChallenge, TokenProvider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("retry-example")
            .with_secret("example-secret")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let credential =
        ClientSecretCredential::builder(&app.tenant_id, &app.client_id, "example-secret")
            .authority_host(emulator.authority_host())
            .build()?;
    let provider = TokenProvider::builder(credential, Emulator::DEMO_API_SCOPE)
        .client_capabilities(["cp1"]) // this client handles CAE claims challenges
        .build()?;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnChallenge::new()))
        .timeout(Duration::from_secs(10))
        .buffer(32)
        .concurrency_limit(4)
        // The demo API's scope is api://..., which names no host: name the emulator's.
        .layer(
            EntraAuthLayer::builder(provider.clone())
                .allow_hosts(["127.0.0.1"])
                .build()?,
        )
        .service(client);
    let get = || http::Request::get(emulator.demo_api_url()).body(Full::new(Bytes::new()));

    let status = service.ready().await?.call(get()?).await?.status();
    println!(
        "first request: {status} (token requests: {})",
        emulator.token_requests()
    );

    emulator.revoke_issued_tokens();
    let status = service.ready().await?.call(get()?).await?.status();
    println!(
        "after revocation: {status}, replayed once (token requests: {})",
        emulator.token_requests()
    );

    emulator.cae_revoke();
    let status = service.ready().await?.call(get()?).await?.status();
    println!(
        "after a CAE event: {status}, token fetched with the challenge's claims and replayed (token requests: {}, claims challenges: {})",
        emulator.token_requests(),
        provider.stats().claims_challenges
    );
    if !status.is_success() {
        return Err(format!("expected 200, got {status}").into());
    }
    Ok(())
}
