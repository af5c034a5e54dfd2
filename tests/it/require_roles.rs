//! `require_roles` against the Entra emulator: an app without admin consent for a role fails at
//! warm-up with `MissingPermission`, not with a 403 at its first request; with the role it passes.

use std::time::Duration;

use crate::support::{ScriptedCredential, credential};
use entra_emulator::{App, Emulator};
use tower_entra::{TokenErrorKind, TokenProvider};

const SECRET: &str = "roles-secret-Qx7~";

/// An emulator, an app in it granted `roles`, and a provider of the demo API's token for that
/// app that requires the demo API's role.
async fn requiring_the_demo_role(
    roles: &[&str],
) -> (Emulator, entra_emulator::RegisteredApp, TokenProvider) {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("roles").with_secret(SECRET).with_roles(roles),
    );
    let provider = TokenProvider::builder(
        credential(&emulator, &app, SECRET),
        Emulator::DEMO_API_SCOPE,
    )
    .require_roles([Emulator::DEMO_API_ROLE])
    .build()
    .unwrap();
    (emulator, app, provider)
}

#[tokio::test(start_paused = true)]
async fn an_app_without_the_role_fails_at_warm_up_with_the_consent_fix() {
    let (emulator, app, provider) = requiring_the_demo_role(&[]).await;
    let e = provider.warm_up().await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::MissingPermission);
    let s = e.to_string();
    assert!(s.contains(Emulator::DEMO_API_ROLE), "{s}");
    assert!(
        s.contains(&format!(
            "az ad app permission admin-consent --id {}",
            app.client_id
        )),
        "{s}"
    );
    // Entra issued the token: one request, not retried, and the token is not cached.
    assert_eq!(emulator.token_requests(), 1);
    let stats = provider.stats();
    assert!(stats.token_expires_on.is_none() && stats.last_success.is_none());
    assert_eq!(stats.consecutive_failures, 1);
    // Requests get the same error at once, without asking Entra again during the backoff.
    let again = provider.token().await.unwrap_err();
    assert_eq!(again.kind(), TokenErrorKind::MissingPermission);
    assert_eq!(emulator.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_app_with_the_role_passes_and_other_roles_are_not_required() {
    let (_emulator, _app, provider) = requiring_the_demo_role(&[Emulator::DEMO_API_ROLE]).await;
    provider.warm_up().await.unwrap();
    assert!(provider.stats().token_expires_on.is_some());

    // A role the app has for another resource (Graph) is not in a token for this one.
    let (_emulator, _app, provider) = requiring_the_demo_role(&["User.Read.All"]).await;
    let e = provider.warm_up().await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::MissingPermission);
}

#[tokio::test(start_paused = true)]
async fn a_token_that_is_not_a_jwt_is_not_refused() {
    let provider = TokenProvider::builder(
        ScriptedCredential::new(Duration::from_secs(3600)),
        "api://opaque/.default",
    )
    .require_roles(["Any.Role"])
    .build()
    .unwrap();
    provider.warm_up().await.unwrap();
    assert_eq!(provider.token().await.unwrap().secret(), "token-0");
}

#[test]
fn a_role_that_is_not_a_role_value_is_refused_at_build() {
    let e = TokenProvider::builder(
        ScriptedCredential::new(Duration::from_secs(3600)),
        "api://x/.default",
    )
    .require_roles(["Organization.Read.All", "User Read"])
    .build()
    .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration);
}
