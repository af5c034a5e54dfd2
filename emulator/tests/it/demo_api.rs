//! The demo protected API: bearer validation, challenges, 403 body, revocation.

use crate::common::*;
use base64::Engine as _;
use entra_emulator::{App, Emulator};
use serde_json::{Value, json};

async fn call(em: &Emulator, auth: Option<&str>) -> reqwest::Response {
    let mut req = client().get(em.demo_api_url());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn accepts_a_valid_token() {
    let (em, app) = start_with_demo_app().await;
    assert_eq!(
        em.demo_api_url(),
        format!("{}/api/hello", em.authority_host())
    );
    let token = demo_token(&em, &app).await;
    let resp = call(&em, Some(&format!("Bearer {token}"))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"message": "hello from the demo API", "appid": app.client_id, "tid": app.tenant_id, "roles": ["Demo.Read"]})
    );
    assert_eq!(em.api_requests(), 1);
}

#[tokio::test]
async fn token_verifies_against_published_jwks() {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier as _;
    use rsa::{BoxedUint, PublicKey};

    let (em, app) = start_with_demo_app().await;
    let token = demo_token(&em, &app).await;
    let jwks = em.signing_jwks();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let n = b64.decode(jwks["keys"][0]["n"].as_str().unwrap()).unwrap();
    let e = b64.decode(jwks["keys"][0]["e"].as_str().unwrap()).unwrap();
    let key = PublicKey::new(
        BoxedUint::from_be_slice_vartime(&n),
        BoxedUint::from_be_slice_vartime(&e),
    )
    .unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = Signature::try_from(b64.decode(sig).unwrap().as_slice()).unwrap();
    VerifyingKey::<sha2::Sha256>::new(key)
        .verify(input.as_bytes(), &sig)
        .expect("RS256 signature verifies with the JWKS key");
}

#[tokio::test]
async fn missing_token_gets_a_bare_challenge() {
    let em = Emulator::start().await;
    for auth in [None, Some("Basic Zm9vOmJhcg==")] {
        let resp = call(&em, auth).await;
        assert_eq!(resp.status(), 401);
        assert_eq!(
            challenge(&resp),
            format!(
                "Bearer realm=\"\", authorization_uri=\"{}/common/oauth2/authorize\"",
                em.authority_host()
            )
        );
    }
    assert_eq!(em.api_requests(), 2);
}

async fn assert_invalid_token(em: &Emulator, auth: &str, why: &str) {
    let resp = call(em, Some(auth)).await;
    assert_eq!(resp.status(), 401, "{auth}");
    let c = challenge(&resp);
    let prefix = format!(
        "Bearer realm=\"\", authorization_uri=\"{}/common/oauth2/authorize\", error=\"invalid_token\", error_description=\"",
        em.authority_host()
    );
    assert!(c.starts_with(&prefix), "{c}");
    assert!(c.contains(why), "{c} should mention {why}");
}

#[tokio::test]
async fn rejects_bad_tokens() {
    let (em, app) = start_with_demo_app().await;
    let token = demo_token(&em, &app).await;

    assert_invalid_token(&em, "Bearer not-a-jwt", "compact").await;

    // Tampered payload: signature check fails.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = jwt_part(&token, 1);
    claims["roles"] = json!(["Demo.Read", "Admin"]);
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_invalid_token(&em, &format!("Bearer {}", parts.join(".")), "signature").await;

    // Token for another audience.
    let resp = request_token(&em, &app, "https://graph.microsoft.com/.default").await;
    let graph: Value = resp.json().await.unwrap();
    let graph = graph["access_token"].as_str().unwrap();
    assert_invalid_token(&em, &format!("Bearer {graph}"), "audience").await;

    // Token of another emulator (unknown tenant).
    let other = Emulator::start().await;
    let other_app = demo_app(&other);
    let foreign = demo_token(&other, &other_app).await;
    assert_invalid_token(&em, &format!("Bearer {foreign}"), "issuer").await;
}

#[tokio::test]
async fn rejects_expired_tokens() {
    let (em, app) = start_with_demo_app().await;
    em.set_token_lifetime(std::time::Duration::ZERO);
    let token = demo_token(&em, &app).await;
    assert_invalid_token(&em, &format!("Bearer {token}"), "expired").await;
}

#[tokio::test]
async fn missing_role_is_403_with_graph_body() {
    let em = Emulator::start().await;
    let app = em.register_app(&em.tenant_id(), App::new("no roles").with_secret(SECRET));
    let token = demo_token(&em, &app).await;
    let resp = client()
        .get(em.demo_api_url())
        .bearer_auth(&token)
        .header("client-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Authorization_RequestDenied");
    assert_eq!(
        body["error"]["message"],
        "Insufficient privileges to complete the operation. The application lacks the 'Demo.Read' application permission, or admin consent has not been granted."
    );
    let inner = &body["error"]["innerError"];
    assert_eq!(inner["client-request-id"], "abc-123");
    assert_eq!(inner["request-id"].as_str().unwrap().len(), 36);
    assert_eq!(
        inner["date"].as_str().unwrap().len(),
        "2026-11-27T11:30:00".len()
    );
}

#[tokio::test]
async fn revocation_applies_to_tokens_issued_so_far() {
    let (em, app) = start_with_demo_app().await;
    let old = demo_token(&em, &app).await;
    assert_eq!(
        call(&em, Some(&format!("Bearer {old}"))).await.status(),
        200
    );
    em.revoke_issued_tokens();
    assert_invalid_token(&em, &format!("Bearer {old}"), "revoked").await;
    let new = demo_token(&em, &app).await;
    assert_eq!(
        call(&em, Some(&format!("Bearer {new}"))).await.status(),
        200
    );
}
