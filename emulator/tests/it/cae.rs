//! Continuous access evaluation: `claims` requests, `xms_cc`, claims challenges.

use crate::common::*;
use base64::Engine as _;
use entra_emulator::{Emulator, RegisteredApp};
use serde_json::{Value, json};

const CP1: &str = r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#;

async fn token_with_claims(em: &Emulator, app: &RegisteredApp, claims: &str) -> reqwest::Response {
    request_token_with(em, app, &[("claims", claims)]).await
}

#[tokio::test]
async fn cp1_claims_request_marks_the_token() {
    let (em, app) = start_with_demo_app().await;
    let token = access_token(token_with_claims(&em, &app, CP1).await).await;
    assert_eq!(jwt_part(&token, 1)["xms_cc"], json!(["cp1"]));
    assert_eq!(
        em.last_token_request_claims(),
        Some(json!({"access_token": {"xms_cc": {"values": ["cp1"]}}}))
    );
    // Without claims: no xms_cc, and no recorded claims.
    let plain = demo_token(&em, &app).await;
    assert!(jwt_part(&plain, 1).get("xms_cc").is_none());
    assert_eq!(em.last_token_request_claims(), None);
}

#[tokio::test]
async fn invalid_claims_is_90100() {
    let (em, app) = start_with_demo_app().await;
    for bad in ["{not json", "[1,2]", "\"cp1\""] {
        let body = assert_entra_error(
            token_with_claims(&em, &app, bad).await,
            400,
            "invalid_request",
            90100,
        )
        .await;
        assert!(description(&body).contains("claims parameter is empty or not valid"));
    }
    assert_eq!(em.last_token_request_claims(), None);
}

fn decode_claims_challenge(www_authenticate: &str) -> Value {
    let start = www_authenticate.find("claims=\"").expect("claims=") + "claims=\"".len();
    let rest = &www_authenticate[start..];
    let b64 = &rest[..rest.find('"').unwrap()];
    let json = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

#[tokio::test]
async fn cae_revoke_challenges_cae_capable_tokens() {
    let (em, app) = start_with_demo_app().await;
    let cae_token = access_token(token_with_claims(&em, &app, CP1).await).await;
    let plain_token = demo_token(&em, &app).await;
    assert_eq!(call_demo_api(&em, &cae_token).await.status(), 200);

    let before = unix_now();
    em.cae_revoke();

    // CAE-capable: claims challenge.
    let resp = call_demo_api(&em, &cae_token).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let prefix = format!(
        "Bearer realm=\"\", authorization_uri=\"{}/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"",
        em.authority_host()
    );
    assert!(challenge.starts_with(&prefix), "{challenge}");
    let demanded = decode_claims_challenge(&challenge);
    let nbf = &demanded["access_token"]["nbf"];
    assert_eq!(nbf["essential"], true);
    let value: i64 = nbf["value"].as_str().unwrap().parse().unwrap();
    assert!((value - before).abs() <= 2);

    // Not CAE-capable: plain invalid_token.
    let resp = call_demo_api(&em, &plain_token).await;
    assert_eq!(resp.status(), 401);
    let c = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(c.contains("error=\"invalid_token\""), "{c}");

    // The client answers the challenge: claims merged with xms_cc.
    let mut merged = demanded.clone();
    merged["access_token"]["xms_cc"] = json!({"values": ["cp1"]});
    let fresh = access_token(token_with_claims(&em, &app, &merged.to_string()).await).await;
    assert_eq!(em.last_token_request_claims(), Some(merged));
    let resp = call_demo_api(&em, &fresh).await;
    assert_eq!(resp.status(), 200);
    // Within the same second as the revoke, freshness is by issue order, not time.
    assert_eq!(jwt_part(&fresh, 1)["xms_cc"], json!(["cp1"]));
}

#[tokio::test]
async fn plain_revocation_is_invalid_token_even_for_cae_tokens() {
    let (em, app) = start_with_demo_app().await;
    let cae_token = access_token(token_with_claims(&em, &app, CP1).await).await;
    em.revoke_issued_tokens();
    let resp = call_demo_api(&em, &cae_token).await;
    assert_eq!(resp.status(), 401);
    let c = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(c.contains("error=\"invalid_token\""), "{c}");
}
