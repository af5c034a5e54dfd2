//! Federated identity credentials (workload identity federation).

use std::sync::OnceLock;
use std::time::Duration;

use crate::common::*;
use entra_emulator::{App, Emulator, FederatedIssuer, RegisteredApp};
use serde_json::json;

const ISSUER: &str = "https://oidc.prod-aks.example.com/1234/";
const SUBJECT: &str = "system:serviceaccount:default:worker";
const EXCHANGE: &str = "api://AzureADTokenExchange";
const HOUR: Duration = Duration::from_secs(3600);

fn issuer() -> &'static FederatedIssuer {
    static I: OnceLock<FederatedIssuer> = OnceLock::new();
    I.get_or_init(|| FederatedIssuer::new(ISSUER))
}

fn other_issuer() -> &'static FederatedIssuer {
    static I: OnceLock<FederatedIssuer> = OnceLock::new();
    I.get_or_init(|| FederatedIssuer::new("https://token.actions.githubusercontent.com"))
}

fn setup(em: &Emulator) -> RegisteredApp {
    em.add_trusted_issuer_jwks(issuer().issuer(), issuer().jwks());
    em.register_app(
        &em.tenant_id(),
        App::new("workload")
            .with_federated_credential(ISSUER, SUBJECT, EXCHANGE)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    )
}

#[tokio::test]
async fn federated_token_is_exchanged() {
    let em = Emulator::start().await;
    let app = setup(&em);
    let external = issuer().issue(SUBJECT, EXCHANGE, HOUR);
    let token = access_token(request_with_assertion(&em, &app, &external).await).await;
    let c = jwt_part(&token, 1);
    assert_eq!(c["appid"], app.client_id);
    assert_eq!(c["appidacr"], "2");
    assert_eq!(c["roles"], json!(["Demo.Read"]));
    assert_eq!(call_demo_api(&em, &token).await.status(), 200);
    // External tokens may be presented again (no jti replay check).
    assert_eq!(
        request_with_assertion(&em, &app, &external).await.status(),
        200
    );
}

#[tokio::test]
async fn empty_audience_means_the_default() {
    let em = Emulator::start().await;
    em.add_trusted_issuer_jwks(issuer().issuer(), issuer().jwks());
    let app = em.register_app(
        &em.tenant_id(),
        App::new("w").with_federated_credential(ISSUER, SUBJECT, ""),
    );
    let external = issuer().issue(SUBJECT, EXCHANGE, HOUR);
    assert_eq!(
        request_with_assertion(&em, &app, &external).await.status(),
        200
    );
}

#[tokio::test]
async fn no_matching_record_is_70021() {
    let em = Emulator::start().await;
    let app = setup(&em);
    em.add_trusted_issuer_jwks(other_issuer().issuer(), other_issuer().jwks());
    for external in [
        issuer().issue("system:serviceaccount:default:intruder", EXCHANGE, HOUR),
        issuer().issue(SUBJECT, "api://SomethingElse", HOUR),
        other_issuer().issue(SUBJECT, EXCHANGE, HOUR),
    ] {
        let body =
            assert_assertion_refused(&em, &app, &external, 400, "invalid_client", 70021).await;
        assert!(description(&body).starts_with(
            "AADSTS70021: No matching federated identity record found for presented assertion."
        ));
    }
}

#[tokio::test]
async fn untrusted_issuer_or_wrong_key_is_700027() {
    let em = Emulator::start().await;
    let app = em.register_app(
        &em.tenant_id(),
        App::new("w").with_federated_credential(ISSUER, SUBJECT, EXCHANGE),
    );
    // The issuer's keys are unknown.
    let external = issuer().issue(SUBJECT, EXCHANGE, HOUR);
    assert_assertion_refused(&em, &app, &external, 401, "invalid_client", 700027).await;
    // Forged by another key claiming to be the issuer.
    em.add_trusted_issuer_jwks(issuer().issuer(), issuer().jwks());
    let now = unix_now();
    let forged = other_issuer().issue_claims(&json!({
        "iss": ISSUER, "sub": SUBJECT, "aud": EXCHANGE, "iat": now, "nbf": now, "exp": now + 600,
    }));
    assert_assertion_refused(&em, &app, &forged, 401, "invalid_client", 700027).await;
    // Tampered payload with the right kid.
    let good = issuer().issue(SUBJECT, EXCHANGE, HOUR);
    let forged_payload = other_issuer()
        .issue_claims(&json!({"iss": ISSUER, "sub": SUBJECT, "aud": EXCHANGE, "exp": now + 900}));
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = forged_payload.split('.').nth(1).unwrap();
    let tampered = parts.join(".");
    let body = assert_assertion_refused(&em, &app, &tampered, 401, "invalid_client", 700027).await;
    assert!(description(&body).contains("signature is invalid"));
}

#[tokio::test]
async fn expired_external_token_is_700024() {
    let em = Emulator::start().await;
    let app = setup(&em);
    let now = unix_now();
    let expired = issuer().issue_claims(&json!({
        "iss": ISSUER, "sub": SUBJECT, "aud": EXCHANGE,
        "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600,
    }));
    assert_assertion_refused(&em, &app, &expired, 401, "invalid_client", 700024).await;
}

#[test]
fn issuer_helper_shapes() {
    let i = issuer();
    assert_eq!(i.issuer(), ISSUER);
    let jwks = i.jwks();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    let token = i.issue(SUBJECT, EXCHANGE, Duration::from_secs(60));
    let header = jwt_part(&token, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], key["kid"]);
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], SUBJECT);
    assert_eq!(claims["aud"], EXCHANGE);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    assert!(claims["jti"].is_string());
}
