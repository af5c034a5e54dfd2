//! Certificate credentials: client assertions (`private_key_jwt`) verified as Entra does.

use std::sync::OnceLock;

use crate::common::*;
use entra_emulator::{App, Emulator, RegisteredApp, TestCertificate};
use serde_json::{Value, json};

/// Key generation is slow-ish: share certificates between tests.
fn cert(i: usize) -> &'static TestCertificate {
    static CERTS: OnceLock<Vec<TestCertificate>> = OnceLock::new();
    &CERTS.get_or_init(|| {
        vec![
            TestCertificate::new("daemon-one"),
            TestCertificate::new("daemon-two"),
            TestCertificate::new("trusted.example.com"),
        ]
    })[i]
}

fn cert_app(em: &Emulator) -> RegisteredApp {
    em.register_app(
        &em.tenant_id(),
        App::new("cert app")
            .with_certificate(cert(0).der().to_vec())
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    )
}

/// Standard claims of a valid assertion, for tweaking.
fn claims(em: &Emulator, app: &RegisteredApp) -> Value {
    let now = unix_now();
    json!({
        "aud": em.token_url(&app.tenant_id),
        "iss": app.client_id,
        "sub": app.client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    })
}

fn s256_header(c: &TestCertificate) -> Value {
    json!({"alg": "RS256", "typ": "JWT", "x5t#S256": c.x5t_s256()})
}

/// An assertion with `claims`, naming the registered certificate (`cert(0)`) by its SHA-256
/// thumbprint and signed with its key: what a claim-checking test sends.
fn signed_by_registered(claims: &Value) -> String {
    cert(0).sign_jwt(&s256_header(cert(0)), claims)
}

#[tokio::test]
async fn valid_assertion_gets_a_token() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    let assertion = cert(0).client_assertion(&app.client_id, &em.token_url(&app.tenant_id));
    let token = access_token(request_with_assertion(&em, &app, &assertion).await).await;
    let c = jwt_part(&token, 1);
    assert_eq!(c["appid"], app.client_id);
    assert_eq!(c["appidacr"], "2");
    assert_eq!(call_demo_api(&em, &token).await.status(), 200);
}

#[tokio::test]
async fn key_selected_by_sha1_thumbprint_and_ps256_accepted() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    let c = cert(0);
    let sha1 = c.sign_jwt(&json!({"alg": "RS256", "x5t": c.x5t()}), &claims(&em, &app));
    assert_eq!(request_with_assertion(&em, &app, &sha1).await.status(), 200);
    let pss = c.sign_jwt(
        &json!({"alg": "PS256", "x5t#S256": c.x5t_s256()}),
        &claims(&em, &app),
    );
    assert_eq!(request_with_assertion(&em, &app, &pss).await.status(), 200);
}

#[tokio::test]
async fn any_registered_certificate_works() {
    let em = Emulator::start().await;
    let app = em.register_app(
        &em.tenant_id(),
        App::new("two certs")
            .with_certificate(cert(0).der().to_vec())
            .with_certificate(cert(1).der().to_vec()),
    );
    for i in [0, 1] {
        let a = cert(i).client_assertion(&app.client_id, &em.token_url(&app.tenant_id));
        assert_eq!(request_with_assertion(&em, &app, &a).await.status(), 200);
    }
}

#[tokio::test]
async fn x5c_with_registered_or_trusted_subject_leaf() {
    let em = Emulator::start().await;
    let app = em.register_app(
        &em.tenant_id(),
        App::new("sni app")
            .with_certificate(cert(0).der().to_vec())
            .with_trusted_subject("TRUSTED.example.com"),
    );
    // Registered certificate, sent in x5c.
    let a = cert(0).sign_jwt(
        &json!({"alg": "RS256", "x5t#S256": cert(0).x5t_s256(), "x5c": cert(0).x5c()}),
        &claims(&em, &app),
    );
    assert_eq!(request_with_assertion(&em, &app, &a).await.status(), 200);
    // Unregistered certificate trusted by subject name.
    let a = cert(2).sign_jwt(
        &json!({"alg": "RS256", "x5c": cert(2).x5c()}),
        &claims(&em, &app),
    );
    assert_eq!(request_with_assertion(&em, &app, &a).await.status(), 200);
    // Unregistered, untrusted subject.
    let a = cert(1).sign_jwt(
        &json!({"alg": "RS256", "x5c": cert(1).x5c()}),
        &claims(&em, &app),
    );
    let body = assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 700027).await;
    assert!(description(&body).contains("The key was not found"));
    // x5c leaf differs from the thumbprint header.
    let a = cert(0).sign_jwt(
        &json!({"alg": "RS256", "x5t#S256": cert(0).x5t_s256(), "x5c": cert(2).x5c()}),
        &claims(&em, &app),
    );
    assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 700027).await;
}

#[tokio::test]
async fn unknown_thumbprint_is_700027() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    let a = cert(1).client_assertion(&app.client_id, &em.token_url(&app.tenant_id));
    let body = assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 700027).await;
    assert!(description(&body).starts_with(
        "AADSTS700027: Client assertion failed signature validation. (Reason - The key was not found."
    ));
    // No thumbprint header at all.
    let a = cert(0).sign_jwt(&json!({"alg": "RS256"}), &claims(&em, &app));
    assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 700027).await;
}

#[tokio::test]
async fn wrong_signature_is_700027() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    // Names the registered certificate but is signed by another key.
    let a = cert(1).sign_jwt(&s256_header(cert(0)), &claims(&em, &app));
    let body = assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 700027).await;
    assert!(description(&body).contains("signature is invalid"));
}

#[tokio::test]
async fn unsupported_algorithm_is_5002738() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    for alg in ["ES256", "HS256", "none"] {
        let a = cert(0).sign_jwt(
            &json!({"alg": alg, "x5t#S256": cert(0).x5t_s256()}),
            &claims(&em, &app),
        );
        let body = assert_assertion_refused(&em, &app, &a, 400, "invalid_request", 5002738).await;
        assert!(
            description(&body).contains(&format!("'{alg}' is not a supported signature algorithm"))
        );
    }
}

#[tokio::test]
async fn subject_mismatch_is_700021() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    let mut c = claims(&em, &app);
    c["sub"] = json!("someone-else");
    let a = signed_by_registered(&c);
    let body = assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 700021).await;
    assert!(
        description(&body).contains(
            "Client assertion application identifier doesn't match 'client_id' parameter."
        )
    );
}

#[tokio::test]
async fn audience_must_be_the_token_endpoint() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    for aud in [
        json!("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
        json!(em.token_url("organizations")),
        json!(em.authority_host()),
    ] {
        let mut c = claims(&em, &app);
        c["aud"] = aud;
        let a = signed_by_registered(&c);
        let body = assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 700023).await;
        assert!(
            description(&body)
                .contains("Client assertion audience claim does not match Realm issuer.")
        );
    }
    // The v1 endpoint URL and an array containing the v2 URL are accepted.
    for aud in [
        json!(format!(
            "{}/{}/oauth2/token",
            em.authority_host(),
            app.tenant_id
        )),
        json!(["https://example.com", em.token_url(&app.tenant_id)]),
    ] {
        let mut c = claims(&em, &app);
        c["aud"] = aud;
        let a = signed_by_registered(&c);
        assert_eq!(request_with_assertion(&em, &app, &a).await.status(), 200);
    }
}

#[tokio::test]
async fn time_range_is_700024_with_five_minutes_skew() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    let now = unix_now();
    for (nbf, exp, ok) in [
        (now - 1200, now - 400, false),      // expired beyond skew
        (now - 1200, now - 100, true),       // expired within skew
        (now + 400, now + 1000, false),      // not yet valid beyond skew
        (now + 100, now + 1000, true),       // not yet valid within skew
        (now - 10, now + 2 * 86_400, false), // lifetime over a day
    ] {
        let mut c = claims(&em, &app);
        c["nbf"] = json!(nbf);
        c["iat"] = json!(nbf);
        c["exp"] = json!(exp);
        let a = signed_by_registered(&c);
        let resp = request_with_assertion(&em, &app, &a).await;
        if ok {
            assert_eq!(resp.status(), 200, "nbf {nbf} exp {exp}");
        } else {
            let body = assert_entra_error(resp, 401, "invalid_client", 700024).await;
            assert!(
                description(&body).contains("Client assertion is not within its valid time range.")
            );
        }
    }
}

#[tokio::test]
async fn jti_is_required_and_single_use() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    let mut c = claims(&em, &app);
    c.as_object_mut().unwrap().remove("jti");
    let a = signed_by_registered(&c);
    let body = assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 50027).await;
    assert!(description(&body).contains("'jti'"));

    let a = cert(0).client_assertion(&app.client_id, &em.token_url(&app.tenant_id));
    assert_eq!(request_with_assertion(&em, &app, &a).await.status(), 200);
    let body = assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 50013).await;
    assert!(description(&body).contains("already been used"));
}

#[tokio::test]
async fn assertion_type_and_shape_are_checked() {
    let em = Emulator::start().await;
    let app = cert_app(&em);
    let url = em.token_url(&app.tenant_id);
    let a = cert(0).client_assertion(&app.client_id, &url);
    let send = |fields: Vec<(&'static str, String)>| {
        let url = url.clone();
        async move { client().post(url).form(&fields).send().await.unwrap() }
    };
    let base = |extra: Vec<(&'static str, String)>| {
        let mut f = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", app.client_id.clone()),
            ("scope", Emulator::DEMO_API_SCOPE.to_owned()),
        ];
        f.extend(extra);
        f
    };
    let resp = send(base(vec![("client_assertion", a.clone())])).await;
    let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
    assert!(description(&body).contains("'client_assertion_type'"));

    let resp = send(base(vec![
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:saml2-bearer".into(),
        ),
        ("client_assertion", a.clone()),
    ]))
    .await;
    assert_entra_error(resp, 400, "invalid_request", 90013).await;

    let resp = send(base(vec![
        ("client_assertion_type", JWT_BEARER.into()),
        ("client_assertion", "not.a.jwt!".into()),
    ]))
    .await;
    assert_entra_error(resp, 401, "invalid_client", 50027).await;

    let resp = send(base(vec![
        ("client_assertion_type", JWT_BEARER.into()),
        ("client_assertion", a.clone()),
        ("client_secret", "also a secret".into()),
    ]))
    .await;
    assert_entra_error(resp, 400, "invalid_request", 90013).await;
}

#[tokio::test]
async fn secret_only_app_rejects_assertions() {
    let (em, app) = start_with_demo_app().await;
    let a = cert(0).client_assertion(&app.client_id, &em.token_url(&app.tenant_id));
    assert_assertion_refused(&em, &app, &a, 401, "invalid_client", 700027).await;
}

#[test]
fn test_certificate_exports() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let c = cert(0);
    assert!(
        c.certificate_pem()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    assert!(
        c.private_key_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert!(
        c.pem_bundle()
            .contains("-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----")
    );
    assert!(!c.private_key_der().is_empty());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    assert_eq!(c.x5t_s256(), b64.encode(sha2::Sha256::digest(c.der())));
    assert_eq!(c.x5t(), b64.encode(sha1::Sha1::digest(c.der())));
}

#[test]
#[should_panic(expected = "App::with_certificate")]
fn garbage_certificate_panics() {
    let _ = App::new("x").with_certificate(vec![1, 2, 3]);
}
