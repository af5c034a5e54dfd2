//! An emulator with one app that signs in with a client secret, for tests of the token request
//! itself: its transport, its headers.

use entra_emulator::{App, Emulator};
use tower_entra::{
    AccessToken, ClientSecretCredential, ClientSecretCredentialBuilder, Credential, TokenError,
    TokenRequest,
};

/// An emulator with one app, `name`, whose client secret is `secret`, and a credential builder
/// for that app pointed at the emulator; the test sets the rest (timeout, HTTP client).
pub async fn secret_app(name: &str, secret: &str) -> (Emulator, ClientSecretCredentialBuilder) {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(&emulator.tenant_id(), App::new(name).with_secret(secret));
    let builder = ClientSecretCredential::builder(&app.tenant_id, &app.client_id, secret)
        .authority_host(emulator.authority_host());
    (emulator, builder)
}

/// A token for the emulator's demo API from `credential`.
pub async fn demo_api_token(credential: &impl Credential) -> Result<AccessToken, TokenError> {
    credential
        .request_token(TokenRequest::new(Emulator::DEMO_API_SCOPE))
        .await
}
