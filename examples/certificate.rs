//! Authenticate with a certificate instead of a secret: load (or make) a certificate, register
//! it on an app in the Entra emulator, get a token with a signed PS256 client assertion, and
//! call the emulator's demo API with it.
//!
//! ```text
//! cargo run --example certificate                                  # makes a throwaway certificate
//! cargo run --example certificate -- client.pem                    # PEM: certificate + RSA key
//! cargo run --example certificate -- client.pfx 'pfx password'     # PKCS#12 / PFX
//! ```
//!
//! Against Microsoft Entra, upload the certificate's public part to the app registration
//! (`az ad app credential reset --id <client-id> --cert @cert.pem --append`) and set
//! `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_CERTIFICATE_PATH` for
//! `EnvironmentCredential`, or build the credential as below with your tenant and client ids.

use std::process::ExitCode;
use std::time::SystemTime;

use bytes::Bytes;
use entra_emulator::{App, Emulator, TestCertificate};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_entra::{ClientCertificate, ClientCertificateCredential, EntraAuthLayer, TokenProvider};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let certificate = match args.next() {
        Some(path) => {
            let password = args.next();
            let certificate = ClientCertificate::from_file(&path, password.as_deref())?;
            println!("loaded {path}");
            certificate
        }
        None => {
            // A throwaway self-signed certificate; in production make one with openssl (README).
            let made = TestCertificate::new("tower-entra-example");
            println!("made a self-signed certificate for CN=tower-entra-example");
            ClientCertificate::from_pem(made.pem_bundle())?
        }
    };
    let days_left = certificate
        .not_after()
        .duration_since(SystemTime::now())
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    println!(
        "certificate {} thumbprint {} ({} days left)",
        certificate.subject(),
        certificate.thumbprint(),
        days_left
    );

    // The app registration, with the certificate's public part uploaded and the demo API's
    // application permission consented.
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("certificate daemon")
            .with_certificate(certificate.certificate_der().to_vec())
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    println!(
        "registered it on app {} in the Entra emulator at {}",
        app.client_id,
        emulator.authority_host()
    );

    let credential =
        ClientCertificateCredential::builder(&app.tenant_id, &app.client_id, certificate)
            .authority_host(emulator.authority_host())
            .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;
    let token = provider.token().await?;
    let assertion = emulator
        .last_token_request()
        .unwrap_or_default()
        .into_iter()
        .find(|(name, _)| name == "client_assertion")
        .map(|(_, value)| value)
        .ok_or("the token request carried no client assertion")?;
    let alg = assertion_alg(&assertion).unwrap_or_default();
    let expires_in = token
        .expires_on()
        .duration_since(SystemTime::now())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("token obtained with a {alg} certificate assertion, valid for {expires_in} s");

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    // The demo API's scope is api://..., which names no host: name the emulator's.
    let response = EntraAuthLayer::builder(provider)
        .allow_hosts(["127.0.0.1"])
        .build()?
        .layer(client)
        .oneshot(http::Request::get(emulator.demo_api_url()).body(Empty::new())?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "GET {}: {status} {}",
        emulator.demo_api_url(),
        String::from_utf8_lossy(&body)
    );
    if alg != "PS256" || !status.is_success() {
        return Err("the demo did not behave as expected".into());
    }
    Ok(())
}

/// The `alg` of a JWT's header.
fn assertion_alg(jwt: &str) -> Option<String> {
    use base64::Engine;
    let header = jwt.split('.').next()?;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    Some(header["alg"].as_str()?.to_owned())
}
