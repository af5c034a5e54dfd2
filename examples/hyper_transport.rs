//! Token requests through your own HTTP client: a hyper-util client with hyper-rustls (ring,
//! Mozilla's roots from webpki-roots, HTTP/1.1 and HTTP/2) as the credential's transport, instead
//! of the default reqwest one. Works in a build without the `reqwest` feature:
//!
//! ```text
//! cargo run --example hyper_transport --no-default-features
//! ```
//!
//! With no `AZURE_*` variables it gets a token from the bundled Entra emulator and calls its demo
//! API with it. With `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` (or a
//! certificate, see `EnvironmentCredential`) it gets a Microsoft Graph
//! token from Entra.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use entra_emulator::{App, Emulator};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_entra::{
    ClientSecretCredential, EntraAuthLayer, EnvironmentCredential, TokenProvider, TransportRequest,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let configured = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    let result = if configured {
        entra().await
    } else {
        emulator().await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A hyper-util client over rustls with the ring provider named explicitly (so that it does not
/// depend on which rustls providers other crates in the build enable). `https_only` for Entra;
/// the emulator listens on plain http on 127.0.0.1.
fn hyper_client(
    https_only: bool,
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, BoxError> {
    let builder = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?;
    let builder = if https_only {
        builder.https_only()
    } else {
        builder.https_or_http()
    };
    let connector = builder.enable_http1().enable_http2().build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn emulator() -> Result<(), BoxError> {
    let emulator = Emulator::start().await;
    println!(
        "Entra emulator at {} (set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET to ask Entra instead)",
        emulator.authority_host()
    );
    let secret = "hyper-transport-secret";
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("hyper transport daemon")
            .with_secret(secret)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );

    // The transport: the hyper client, with a count of the requests that went through it.
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let transport = ServiceBuilder::new()
        .map_request(move |request: TransportRequest| {
            counted.fetch_add(1, Ordering::SeqCst);
            request
        })
        .service(hyper_client(false)?);
    let credential = ClientSecretCredential::builder(&app.tenant_id, &app.client_id, secret)
        .authority_host(emulator.authority_host())
        .transport(transport)
        .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;
    let token = provider.token().await?;
    println!(
        "token from the emulator, expires in {} s",
        expires_in(&token)
    );

    // The same kind of client, wrapped in EntraAuthLayer, calls the API with the cached token.
    // The demo API's scope is api://..., which names no host: name the emulator's.
    let api = EntraAuthLayer::builder(provider)
        .allow_hosts(["127.0.0.1"])
        .build()?
        .layer(hyper_client(false)?);
    let response = api
        .oneshot(http::Request::get(emulator.demo_api_url()).body(Full::default())?)
        .await?;
    println!("demo API: {}", response.status());

    let through_hyper = sent.load(Ordering::SeqCst);
    let at_the_endpoint = emulator.token_requests();
    println!(
        "token requests through the hyper-util transport: {through_hyper} (received by the emulator: {at_the_endpoint})"
    );
    if through_hyper != 1 || at_the_endpoint != 1 || !response.status().is_success() {
        return Err("the demo did not behave as expected".into());
    }
    Ok(())
}

async fn entra() -> Result<(), BoxError> {
    let credential = EnvironmentCredential::with_transport(hyper_client(true)?)?;
    let provider = TokenProvider::new(credential, "https://graph.microsoft.com/.default")?;
    let token = provider.token().await?;
    println!(
        "Microsoft Graph token from Entra through the hyper-util transport, expires in {} s",
        expires_in(&token)
    );
    Ok(())
}

fn expires_in(token: &tower_entra::AccessToken) -> u64 {
    token
        .expires_at()
        .saturating_duration_since(tokio::time::Instant::now())
        .as_secs()
}
