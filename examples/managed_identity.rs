//! Managed identity: a token for the host's identity, and the same identity as an app
//! registration's federated credential (no secret anywhere).
//!
//! By default it runs against the bundled Entra emulator's IMDS, which answers 410 twice first
//! (IMDS upgrading) to show the retries. On an Azure host (VM, App Service, Functions,
//! Container Apps, AKS, Arc), `-- --azure [scope]` uses `DefaultCredential` instead and prints
//! which credential it chose and when the token expires.
//!
//! ```text
//! cargo run --example managed_identity
//! cargo run --example managed_identity -- --azure https://management.azure.com/.default
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use entra_emulator::{App, Emulator, Fault, ManagedIdentity};
use tower_entra::{
    AssertionCallback, ClientAssertionCredential, DefaultCredential, ManagedIdentityCredential,
    TokenProvider,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("--azure") => {
            let scope = args
                .next()
                .unwrap_or_else(|| "https://management.azure.com/.default".to_owned());
            on_azure(&scope).await
        }
        Some(other) => Err(format!("unknown argument {other:?}; use --azure [scope]").into()),
        None => emulator().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn on_azure(scope: &str) -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_target(false).init();
    let credential = Arc::new(DefaultCredential::new()?);
    println!(
        "DefaultCredential tries {}",
        credential.credentials().join(", ")
    );
    let token = TokenProvider::new(credential.clone(), scope)?
        .token()
        .await?;
    println!(
        "DefaultCredential chose {}",
        credential.chosen().unwrap_or("none")
    );
    let left = token
        .expires_on()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    println!("token for {scope}: expires in {} min", left.as_secs() / 60);
    Ok(())
}

async fn emulator() -> Result<(), BoxError> {
    let emulator = Emulator::start().await;
    println!(
        "Entra emulator at {} (on an Azure host, run with `-- --azure` instead)",
        emulator.authority_host()
    );
    // The host's system-assigned identity, granted the demo API's app role.
    let mi = emulator.assign_managed_identity(
        ManagedIdentity::system_assigned().with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    emulator.push_managed_identity_fault(Fault::status(410));
    emulator.push_managed_identity_fault(Fault::status(410));

    // On Azure the environment selects the endpoint; here the emulator's IMDS stands in, given
    // as AZURE_POD_IDENTITY_AUTHORITY_HOST would give it.
    let imds_host = emulator.imds_host();
    let managed_identity = || {
        ManagedIdentityCredential::builder()
            .environment({
                let host = imds_host.clone();
                move |name| (name == "AZURE_POD_IDENTITY_AUTHORITY_HOST").then(|| host.clone())
            })
            .build()
    };
    let http = reqwest::Client::new();

    // 1. The managed identity's own token.
    let provider = TokenProvider::new(managed_identity()?, Emulator::DEMO_API_SCOPE)?;
    let status = call_demo_api(&http, &emulator, &provider).await?;
    let statuses: Vec<String> = emulator
        .managed_identity_request_log()
        .iter()
        .map(|r| r.status.map_or("dropped".to_owned(), |s| s.to_string()))
        .collect();
    println!(
        "managed identity via {}: IMDS answered {}; demo API answered {status}",
        managed_identity()?.source_name(),
        statuses.join(", ")
    );

    // 2. The same identity as an app registration's federated credential: the app's own roles,
    //    no secret. On Azure: `az ad app federated-credential create` with the identity's
    //    issuer and object id (see the README).
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("secretless daemon")
            .with_federated_credential(&mi.issuer, &mi.object_id, "")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let credential = ClientAssertionCredential::builder(
        &app.tenant_id,
        &app.client_id,
        AssertionCallback::from_managed_identity(managed_identity()?),
    )
    .authority_host(emulator.authority_host())
    .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;
    let status = call_demo_api(&http, &emulator, &provider).await?;
    println!(
        "app {} via its managed identity federated credential: demo API answered {status}",
        app.client_id
    );
    Ok(())
}

async fn call_demo_api(
    http: &reqwest::Client,
    emulator: &Emulator,
    provider: &TokenProvider,
) -> Result<reqwest::StatusCode, BoxError> {
    let token = provider.token().await?;
    let response = http
        .get(emulator.demo_api_url())
        .header(http::header::AUTHORIZATION, token.header_value().clone())
        .send()
        .await?;
    Ok(response.status())
}
