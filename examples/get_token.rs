//! Gets one token with `EnvironmentCredential` and prints its (unverified) claims and expiry,
//! never the token itself.
//!
//! ```text
//! AZURE_TENANT_ID=… AZURE_CLIENT_ID=… AZURE_CLIENT_SECRET=… \
//!     cargo run --example get_token -- https://graph.microsoft.com/.default
//! ```

use std::process::ExitCode;
use std::time::SystemTime;

use base64::Engine;
use tower_entra::{EnvironmentCredential, TokenError, TokenProvider};

#[tokio::main]
async fn main() -> ExitCode {
    let Some(scope) = std::env::args().nth(1) else {
        eprintln!("usage: get_token <scope>   e.g. get_token https://graph.microsoft.com/.default");
        return ExitCode::FAILURE;
    };
    match run(scope).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error ({:?}): {e}", e.kind());
            ExitCode::FAILURE
        }
    }
}

async fn run(scope: String) -> Result<(), TokenError> {
    let provider = TokenProvider::new(EnvironmentCredential::new()?, scope)?;
    let token = provider.token().await?;
    match decode_claims(token.secret()) {
        Some(claims) => println!(
            "{}",
            serde_json::to_string_pretty(&claims).unwrap_or_default()
        ),
        None => println!("(the token is not a JWT; its claims cannot be shown)"),
    }
    let left = token
        .expires_on()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    println!("expires in {} s", left.as_secs());
    Ok(())
}

/// The JWT payload, decoded but not verified: for looking at, not for trusting.
fn decode_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
