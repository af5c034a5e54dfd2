//! Shared set-up for the core tests: an emulator, an app, and a provider for the demo API.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use entra_emulator::{App, Emulator, RegisteredApp};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_entra::{ClientSecretCredential, TokenProvider};

pub const SECRET: &str = "emulator-secret-Qx7~do-not-log";

pub struct Setup {
    pub emulator: Emulator,
    pub app: RegisteredApp,
    pub provider: TokenProvider,
}

/// An emulator with one consented app, and a provider for the demo API (no refresh jitter, and a
/// token request timeout long enough that a paused clock's auto-advance does not fire it).
pub async fn setup() -> Setup {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("daemon")
            .with_secret(SECRET)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let provider = TokenProvider::builder(
        credential(&emulator, &app, SECRET),
        Emulator::DEMO_API_SCOPE,
    )
    .refresh_jitter(Duration::ZERO)
    .build()
    .unwrap();
    Setup {
        emulator,
        app,
        provider,
    }
}

pub fn credential(
    emulator: &Emulator,
    app: &RegisteredApp,
    secret: &str,
) -> ClientSecretCredential {
    ClientSecretCredential::builder(&app.tenant_id, &app.client_id, secret)
        .authority_host(emulator.authority_host())
        .timeout(Duration::from_secs(24 * 3600))
        .build()
        .unwrap()
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn get(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url).body(Empty::new()).unwrap()
}
