//! A hyper-util client with `EntraAuthLayer`, against the in-process Entra emulator's demo API:
//! 20 concurrent requests, one token request.
//!
//! ```sh
//! cargo run --example hyper_client
//! ```

use bytes::Bytes;
use entra_emulator::{App, Emulator};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_entra::{ClientSecretCredential, EntraAuthLayer, TokenProvider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("hyper-example")
            .with_secret("example-secret")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let credential =
        ClientSecretCredential::builder(&app.tenant_id, &app.client_id, "example-secret")
            .authority_host(emulator.authority_host())
            .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    // The demo API's scope is api://..., which names no host: name the emulator's.
    let service = ServiceBuilder::new()
        .layer(
            EntraAuthLayer::builder(provider.clone())
                .allow_hosts(["127.0.0.1"])
                .build()?,
        )
        .service(client);

    let mut calls = Vec::new();
    for _ in 0..20 {
        let request = http::Request::get(emulator.demo_api_url()).body(Empty::new())?;
        calls.push(tokio::spawn(service.clone().oneshot(request)));
    }
    let mut last = String::new();
    for call in calls {
        let response = call.await??;
        if !response.status().is_success() {
            return Err(format!("the demo API answered {}", response.status()).into());
        }
        last =
            String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned();
    }
    println!("20 requests answered 200; the last said: {last}");
    println!(
        "token requests sent to Entra: {} (stats: {} fetches, {} failures)",
        emulator.token_requests(),
        provider.stats().fetches,
        provider.stats().failures
    );
    Ok(())
}
