//! `reqwest::Client` as a `tower::Service<reqwest::Request>` with `EntraAuthLayer`, against the
//! in-process Entra emulator's demo API. With `--features reqwest-middleware`, the same
//! provider also serves a `reqwest_middleware` client.
//!
//! ```sh
//! cargo run --example reqwest_client --features reqwest-middleware
//! ```

use entra_emulator::{App, Emulator};
use reqwest::{Method, Url};
use tower::{ServiceBuilder, ServiceExt};
use tower_entra::{ClientSecretCredential, EntraAuthLayer, TokenProvider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("reqwest-example")
            .with_secret("example-secret")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let credential =
        ClientSecretCredential::builder(&app.tenant_id, &app.client_id, "example-secret")
            .authority_host(emulator.authority_host())
            .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;

    // reqwest::Client is Clone and always ready, so it is a tower Service as it is.
    // The demo API's scope is api://..., which names no host: name the emulator's.
    let layer = EntraAuthLayer::builder(provider.clone())
        .allow_hosts(["127.0.0.1"])
        .build()?;
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(reqwest::Client::new());
    let url = Url::parse(&emulator.demo_api_url())?;
    let response = service
        .oneshot(reqwest::Request::new(Method::GET, url))
        .await?;
    println!(
        "tower service: {} {}",
        response.status(),
        response.text().await?
    );

    #[cfg(feature = "reqwest-middleware")]
    {
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(tower_entra::EntraAuthMiddleware::from_layer(&layer))
            .build();
        let response = client.get(emulator.demo_api_url()).send().await?;
        println!(
            "reqwest-middleware: {} {}",
            response.status(),
            response.text().await?
        );
    }

    println!(
        "token requests sent to Entra: {}",
        emulator.token_requests()
    );
    Ok(())
}
