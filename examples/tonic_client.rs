//! A tonic `Channel` with `EntraAuthLayer` and a generated client (gRPC health checking),
//! against a tonic server started here whose interceptor requires a bearer token, with tokens
//! from the in-process Entra emulator.
//!
//! ```sh
//! cargo run --example tonic_client                   # token failures reach the caller as Unknown
//! cargo run --example tonic_client --features tonic  # ... as Unauthenticated / Unavailable
//! ```

// tonic's interceptor signature returns Result<_, Status>.
#![allow(clippy::result_large_err)]

use entra_emulator::{App, Emulator};
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_entra::{ClientSecretCredential, EntraAuthLayer, TokenError, TokenProvider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("tonic-example")
            .with_secret("example-secret")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );

    // A gRPC server that refuses calls without a bearer token (a real one would verify it).
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let require_bearer = |req: Request<()>| -> Result<Request<()>, Status> {
        match req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some(v) if v.starts_with("Bearer ey") => Ok(req),
            _ => Err(Status::unauthenticated("no bearer token")),
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                health,
                require_bearer,
            ))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let credential =
        ClientSecretCredential::builder(&app.tenant_id, &app.client_id, "example-secret")
            .authority_host(emulator.authority_host())
            .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;

    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let channel = endpoint.connect().await?;
    // The generated client sends relative URIs: `.origin()` tells the layer where they go, so it
    // can check https (or loopback).
    let channel = ServiceBuilder::new()
        .layer(grpc_layer(provider, endpoint.uri())?)
        .service(channel);
    let mut client = HealthClient::new(channel);
    let response = client.check(HealthCheckRequest::default()).await?;
    println!("health check: {:?}", response.into_inner().status());
    println!(
        "token requests sent to Entra: {}",
        emulator.token_requests()
    );

    // And what a caller sees when the token cannot be had.
    let bad = ClientSecretCredential::builder(&app.tenant_id, &app.client_id, "wrong-secret")
        .authority_host(emulator.authority_host())
        .build()?;
    let channel = endpoint.connect().await?;
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(grpc_layer(
                TokenProvider::new(bad, Emulator::DEMO_API_SCOPE)?,
                endpoint.uri(),
            )?)
            .service(channel),
    );
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .err()
        .ok_or("expected a failure")?;
    println!(
        "with a wrong secret: {:?}: {}",
        status.code(),
        status.message()
    );
    Ok(())
}

/// With feature `tonic`, `.grpc()` makes a token failure reach the caller as
/// `Unauthenticated` / `Unavailable` with the fix hint; without it, as `Unknown`.
#[cfg(feature = "tonic")]
fn grpc_layer(
    provider: TokenProvider,
    origin: &http::Uri,
) -> Result<
    tower::layer::util::Stack<EntraAuthLayer, tower_entra::tonic::GrpcStatusLayer>,
    TokenError,
> {
    Ok(auth_layer(provider, origin)?.grpc())
}

#[cfg(not(feature = "tonic"))]
fn grpc_layer(provider: TokenProvider, origin: &http::Uri) -> Result<EntraAuthLayer, TokenError> {
    auth_layer(provider, origin)
}

/// The demo API's scope is api://..., which names no host: the origin's host is named.
fn auth_layer(provider: TokenProvider, origin: &http::Uri) -> Result<EntraAuthLayer, TokenError> {
    EntraAuthLayer::builder(provider)
        .origin(origin.clone())
        .allow_hosts(origin.host())
        .build()
}
