//! The main demo: 100 concurrent requests through a hyper-util client wrapped in
//! `EntraAuthLayer`, one token request.
//!
//! With no `AZURE_*` variables it runs against the bundled Entra emulator and its demo API, then
//! shows what an app without admin consent gets (403) and how to fix it. With `AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` set it calls Microsoft Graph instead.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::process::ExitCode;

use bytes::Bytes;
use entra_emulator::{App, Emulator};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_entra::{ClientSecretCredential, EntraAuthLayer, EnvironmentCredential, TokenProvider};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let result = if std::env::var_os("AZURE_TENANT_ID").is_some()
        || std::env::var_os("AZURE_CLIENT_ID").is_some()
        || std::env::var_os("AZURE_CLIENT_SECRET").is_some()
    {
        microsoft_graph().await
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

async fn emulator() -> Result<(), BoxError> {
    let emulator = Emulator::start().await;
    println!(
        "Entra emulator at {} (set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET to call Microsoft Graph instead)",
        emulator.authority_host()
    );
    // An app registration with a client secret and the demo API's application permission, consented.
    let secret = "quickstart-secret";
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("quickstart daemon")
            .with_secret(secret)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let credential = ClientSecretCredential::builder(&app.tenant_id, &app.client_id, secret)
        .authority_host(emulator.authority_host())
        .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    // The demo API's scope is api://..., which names no host: name the emulator's.
    let service = EntraAuthLayer::builder(provider)
        .allow_hosts(["127.0.0.1"])
        .build()?
        .layer(client);

    let url = emulator.demo_api_url();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let request = http::Request::get(&url).body(Empty::new());
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(request?).await.map_err(BoxError::from) })
        })
        .collect();
    let mut ok = 0;
    for request in requests {
        let response = request.await??;
        if response.status().is_success() {
            ok += 1;
        } else {
            eprintln!("unexpected answer: {}", response.status());
        }
    }
    let fetches = emulator.token_requests();
    println!("requests: {ok} ok, token fetches: {fetches}");

    // The admin-consent gotcha: the token is issued, the API refuses it.
    let unconsented = emulator.register_app(
        &emulator.tenant_id(),
        App::new("daemon without consent").with_secret(secret),
    );
    let credential =
        ClientSecretCredential::builder(&unconsented.tenant_id, &unconsented.client_id, secret)
            .authority_host(emulator.authority_host())
            .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = EntraAuthLayer::builder(provider)
        .allow_hosts(["127.0.0.1"])
        .build()?
        .layer(client)
        .oneshot(http::Request::get(&url).body(Empty::new())?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    println!("app without admin consent: {status}: {message}");
    println!(
        "hint: a token was issued, but without the `{}` role. Add the application permission to the app registration and grant admin consent: az ad app permission admin-consent --id {}",
        Emulator::DEMO_API_ROLE,
        unconsented.client_id
    );

    if ok != 100 || fetches != 1 || status != http::StatusCode::FORBIDDEN {
        return Err("the demo did not behave as expected".into());
    }
    Ok(())
}

async fn microsoft_graph() -> Result<(), BoxError> {
    let credential = EnvironmentCredential::new()?;
    let provider = TokenProvider::new(credential, "https://graph.microsoft.com/.default")?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_only()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(https);
    let service = EntraAuthLayer::new(provider.clone()).layer(client);
    let request =
        http::Request::get("https://graph.microsoft.com/v1.0/organization").body(Empty::new())?;
    let response = service.oneshot(request).await?;
    println!(
        "GET https://graph.microsoft.com/v1.0/organization: {}",
        response.status()
    );
    if response.status() == http::StatusCode::FORBIDDEN {
        println!(
            "hint: grant the app the Microsoft Graph application permission Organization.Read.All and admin consent"
        );
    }
    println!("token fetches: {}", provider.stats().fetches);
    Ok(())
}
