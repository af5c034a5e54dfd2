//! A multi-tenant SaaS daemon: one app registration, one credential, a token per customer
//! tenant. Each request names its customer's tenant with the `Tenant` extension; the layer gets
//! (and caches) a token from that tenant's own token endpoint. One customer has not consented
//! yet: its requests fail alone, with the link its administrator uses to consent.
//!
//! Runs against the bundled Entra emulator, with three customer tenants.
//!
//! ```text
//! cargo run --example multi_tenant
//! ```

use std::process::ExitCode;

use bytes::Bytes;
use entra_emulator::{App, Emulator};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_entra::{ClientSecretCredential, EntraAuthLayer, Tenant, TokenErrorKind, TokenProvider};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests sent for each customer.
const REQUESTS: usize = 50;

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
    let emulator = Emulator::start().await;
    // The ISV's multi-tenant app, registered in its own tenant.
    let secret = "saas-secret";
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("saas daemon")
            .multi_tenant()
            .with_secret(secret)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    // Three customers; two administrators consented to the app.
    let customers = [
        ("contoso.onmicrosoft.com", true),
        ("fabrikam.onmicrosoft.com", true),
        ("northwind.onmicrosoft.com", false),
    ];
    for (domain, consented) in customers {
        let tenant = emulator.add_tenant();
        emulator.add_domain(&tenant, domain);
        if consented {
            emulator.grant_admin_consent(&app, &tenant);
        }
    }

    let credential = ClientSecretCredential::builder(&app.tenant_id, &app.client_id, secret)
        .authority_host(emulator.authority_host())
        // In production: the customers you onboarded, or "*" with the tenant taken only from
        // authenticated input.
        .additionally_allowed_tenants(customers.map(|(domain, _)| domain))
        .build()?;
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE)?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let service = EntraAuthLayer::builder(provider.clone())
        .allow_hosts(["127.0.0.1"])
        .build()?
        .layer(client);

    let url = emulator.demo_api_url();
    let mut calls = Vec::new();
    for (domain, _) in customers {
        for _ in 0..REQUESTS {
            let mut request = http::Request::get(&url).body(Empty::new())?;
            // The tenant comes from your own records of the customer, never from a raw header.
            request.extensions_mut().insert(Tenant::new(domain));
            let service = service.clone();
            calls.push(tokio::spawn(async move {
                (domain, service.oneshot(request).await)
            }));
        }
    }
    let mut outcomes: Vec<(&str, usize, Option<String>)> =
        customers.iter().map(|(d, _)| (*d, 0, None)).collect();
    for call in calls {
        let (domain, result) = call.await?;
        let Some(outcome) = outcomes.iter_mut().find(|(d, _, _)| *d == domain) else {
            continue;
        };
        match result {
            Ok(response) if response.status().is_success() => outcome.1 += 1,
            Ok(response) => outcome.2 = Some(format!("the API answered {}", response.status())),
            Err(e) => {
                outcome.2 = Some(match e.as_token_error() {
                    Some(e) if e.kind() == TokenErrorKind::ConsentRequired => format!(
                        "no consent; its administrator consents at {}",
                        e.admin_consent_url().unwrap_or("(no link)")
                    ),
                    _ => e.to_string(),
                })
            }
        }
    }
    for (domain, ok, failure) in outcomes {
        let fetches = emulator.token_requests_to(domain);
        match failure {
            None => println!("{domain}: {ok}/{REQUESTS} requests ok, {fetches} token request"),
            Some(why) => {
                println!("{domain}: {ok}/{REQUESTS} requests ok, {fetches} token request: {why}")
            }
        }
    }
    println!(
        "home tenant token requests: {}",
        emulator.token_requests_to(&app.tenant_id)
    );
    Ok(())
}
