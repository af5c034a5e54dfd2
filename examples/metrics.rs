//! The provider's OpenTelemetry metrics, exported to stdout: a token fetched from the bundled
//! Entra emulator, a token an API refused, and a wrong secret, then one export of
//! `tower_entra.token.requests` (by outcome and AADSTS code), `tower_entra.token.fetch.duration`,
//! `tower_entra.token.expires_in` and `tower_entra.token.invalidations`.
//!
//! In a service, swap `opentelemetry-stdout` for an OTLP or Prometheus exporter; the provider
//! records through the global meter provider unless given a meter with
//! `TokenProviderBuilder::meter`.
//!
//! ```text
//! cargo run --example metrics --features opentelemetry
//! ```

use std::process::ExitCode;

use entra_emulator::{App, Emulator};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use tower_entra::{ClientSecretCredential, TokenProvider};

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
    // Set before any provider is built: each takes its meter from the global provider then.
    let meters = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default()).build(),
        )
        .build();
    opentelemetry::global::set_meter_provider(meters.clone());

    let emulator = Emulator::start().await;
    let secret = "metrics-secret";
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("metrics daemon")
            .with_secret(secret)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let provider = |secret: &str| -> Result<TokenProvider, BoxError> {
        let credential = ClientSecretCredential::builder(&app.tenant_id, &app.client_id, secret)
            .authority_host(emulator.authority_host())
            .build()?;
        Ok(TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?)
    };

    let good = provider(secret)?;
    let token = good.token().await?;
    println!("token fetched; expires at {:?}", token.expires_on());
    // Served from the cache: recorded nowhere.
    good.token().await?;
    // An API answered 401 invalid_token: the token is dropped, the next request fetches anew.
    good.invalidate(&token);
    good.token().await?;

    let wrong = provider("not-the-secret")?;
    let e = wrong
        .warm_up()
        .await
        .expect_err("a wrong secret is refused");
    println!("wrong secret refused: {e}");

    // Exports once to stdout, and stops the reader.
    meters.shutdown()?;
    Ok(())
}
