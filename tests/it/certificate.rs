//! Certificate credentials against the Entra emulator, which verifies client assertions as Entra
//! does: every key format and both algorithms get a token; the assertion is exactly what Entra's
//! certificate-credentials document asks for; bad assertions are refused with Entra's codes and
//! surface as the right `TokenError`.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use entra_emulator::{App, Emulator, RegisteredApp};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_entra::{
    AssertionAlgorithm, ClientAssertionCredential, ClientCertificate, ClientCertificateCredential,
    Credential, TokenError, TokenErrorKind, TokenProvider, TokenRequest,
};

use crate::support::fixtures::{fixture, read};

const PASSWORD: &str = "fixture-password";

/// The DER of the first certificate in a PEM fixture.
fn cert_der(name: &str) -> Vec<u8> {
    ClientCertificate::from_pem(read(name))
        .map(|c| c.certificate_der().to_vec())
        .or_else(|_| {
            let text = String::from_utf8(read(name)).unwrap();
            let body: String = text
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            Ok::<_, TokenError>(STANDARD.decode(body).unwrap())
        })
        .unwrap()
}

async fn emulator_with(app: App) -> (Emulator, RegisteredApp) {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        app.with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    (emulator, app)
}

fn credential(
    emulator: &Emulator,
    app: &RegisteredApp,
    certificate: ClientCertificate,
    algorithm: AssertionAlgorithm,
    send_chain: bool,
) -> ClientCertificateCredential {
    ClientCertificateCredential::builder(&app.tenant_id, &app.client_id, certificate)
        .authority_host(emulator.authority_host())
        .algorithm(algorithm)
        .send_certificate_chain(send_chain)
        .build()
        .unwrap()
}

fn field(emulator: &Emulator, name: &str) -> Option<String> {
    emulator
        .last_token_request()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn decode_part(jwt: &str, index: usize) -> Value {
    let part = jwt.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn token(credential: &impl Credential) -> Result<tower_entra::AccessToken, TokenError> {
    credential
        .request_token(TokenRequest::new(Emulator::DEMO_API_SCOPE))
        .await
}

#[tokio::test]
async fn every_key_format_gets_a_token_with_ps256_and_rs256() {
    let (emulator, app) =
        emulator_with(App::new("cert-daemon").with_certificate(cert_der("cert.pem"))).await;
    let sources: Vec<(&str, ClientCertificate)> = vec![
        (
            "PKCS#8 PEM",
            ClientCertificate::from_pem(read("client-pkcs8.pem")).unwrap(),
        ),
        (
            "PKCS#1 PEM",
            ClientCertificate::from_pem(read("client-pkcs1.pem")).unwrap(),
        ),
        (
            "encrypted PKCS#8 PEM",
            ClientCertificate::from_pem_with_password(read("client-encrypted.pem"), PASSWORD)
                .unwrap(),
        ),
        (
            "AES PFX",
            ClientCertificate::from_pkcs12(read("client-aes.pfx"), Some(PASSWORD)).unwrap(),
        ),
        (
            "legacy PFX",
            ClientCertificate::from_pkcs12(read("client-legacy.pfx"), Some(PASSWORD)).unwrap(),
        ),
        (
            "PFX without password",
            ClientCertificate::from_pkcs12(read("client-nopass.pfx"), None).unwrap(),
        ),
    ];
    for (what, certificate) in sources {
        for algorithm in [AssertionAlgorithm::Ps256, AssertionAlgorithm::Rs256] {
            let c = credential(&emulator, &app, certificate.clone(), algorithm, false);
            let t = token(&c)
                .await
                .unwrap_or_else(|e| panic!("{what} {algorithm:?}: {e}"));
            assert!(!t.secret().is_empty());
            let assertion = field(&emulator, "client_assertion").unwrap();
            assert_eq!(
                decode_part(&assertion, 0)["alg"],
                algorithm.as_str(),
                "{what}"
            );
            assert_eq!(
                field(&emulator, "client_assertion_type").as_deref(),
                Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            );
            assert_eq!(field(&emulator, "client_secret"), None);
        }
    }
    // The convenience constructors too.
    let c = ClientCertificateCredential::from_pem_file(
        &app.tenant_id,
        &app.client_id,
        fixture("client-pkcs8.pem"),
    )
    .unwrap();
    assert!(format!("{c:?}").contains("login.microsoftonline.com"));
}

#[tokio::test]
async fn assertion_header_and_claims_are_exactly_what_entra_documents() {
    let (emulator, app) =
        emulator_with(App::new("cert-daemon").with_certificate(cert_der("cert.pem"))).await;
    let certificate = ClientCertificate::from_pem(read("client-pkcs8.pem")).unwrap();
    let c = credential(
        &emulator,
        &app,
        certificate,
        AssertionAlgorithm::Ps256,
        false,
    );

    token(&c).await.unwrap();
    let first = field(&emulator, "client_assertion").unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let x5t_s256 = URL_SAFE_NO_PAD.encode(Sha256::digest(cert_der("cert.pem")));
    assert_eq!(
        decode_part(&first, 0),
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": x5t_s256})
    );
    let claims = decode_part(&first, 1);
    let keys: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["aud", "exp", "iat", "iss", "jti", "nbf", "sub"]);
    assert_eq!(claims["aud"], emulator.token_url(&app.tenant_id));
    assert_eq!(claims["iss"], app.client_id);
    assert_eq!(claims["sub"], app.client_id);
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["nbf"].as_u64(), Some(iat));
    assert!(iat.abs_diff(now) <= 5, "iat {iat} is not now ({now})");
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > iat && exp - iat <= 600, "exp - iat = {}", exp - iat);
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(jti).unwrap().get_version_num(), 4);

    // A new assertion for every token request: two requests, two jtis.
    token(&c).await.unwrap();
    let second = field(&emulator, "client_assertion").unwrap();
    assert_ne!(first, second);
    assert_ne!(decode_part(&second, 1)["jti"], claims["jti"]);

    // RS256: a SHA-1 x5t, base64url without padding.
    let certificate = ClientCertificate::from_pem(read("client-pkcs8.pem")).unwrap();
    let c = credential(
        &emulator,
        &app,
        certificate,
        AssertionAlgorithm::Rs256,
        false,
    );
    token(&c).await.unwrap();
    let rs = field(&emulator, "client_assertion").unwrap();
    let sha1_hex = include_str!("../fixtures/cert.sha1").trim();
    let sha1: Vec<u8> = (0..sha1_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sha1_hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(
        decode_part(&rs, 0),
        json!({"alg": "RS256", "typ": "JWT", "x5t": URL_SAFE_NO_PAD.encode(sha1)})
    );
}

#[tokio::test]
async fn certificate_chain_authenticates_by_subject_name_and_issuer() {
    // Only the subject is trusted, no certificate uploaded: the x5c chain is needed.
    let (emulator, app) =
        emulator_with(App::new("sni-daemon").with_trusted_subject("tower-entra-sni.example")).await;
    for source in [
        ClientCertificate::from_pem(read("chain.pem")).unwrap(),
        ClientCertificate::from_pkcs12(read("chain.pfx"), Some(PASSWORD)).unwrap(),
    ] {
        let with_chain = credential(
            &emulator,
            &app,
            source.clone(),
            AssertionAlgorithm::Ps256,
            true,
        );
        token(&with_chain).await.unwrap();
        let header = decode_part(&field(&emulator, "client_assertion").unwrap(), 0);
        let x5c: Vec<Vec<u8>> = header["x5c"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| STANDARD.decode(c.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(
            x5c,
            [cert_der("leaf.pem"), cert_der("ca.pem")],
            "leaf first, then the CA"
        );

        let without_chain = credential(&emulator, &app, source, AssertionAlgorithm::Ps256, false);
        let e = token(&without_chain).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
        assert_eq!(e.entra().unwrap().codes(), [700027]);
    }
}

/// Signs an assertion by hand (PS256 with the fixture key) so that tests can break one claim.
fn hand_signed(header: Value, claims: Value) -> String {
    let pem = String::from_utf8(read("key.pkcs8.pem")).unwrap();
    let key = rsa::PrivateKey::from_pkcs8_pem(&pem).unwrap();
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = rsa::pss::SigningKey::<Sha256>::new(key)
        .sign(signing.as_bytes())
        .to_vec();
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A credential that sends whatever assertion the test puts in the slot.
fn sending(
    emulator: &Emulator,
    app: &RegisteredApp,
    slot: Arc<Mutex<String>>,
) -> ClientAssertionCredential {
    ClientAssertionCredential::builder(&app.tenant_id, &app.client_id, move || {
        let assertion = slot.lock().unwrap().clone();
        async move { Ok::<_, std::io::Error>(assertion) }
    })
    .authority_host(emulator.authority_host())
    .build()
    .unwrap()
}

#[tokio::test]
async fn refused_assertions_surface_entra_codes_as_authentication_errors() {
    let (emulator, app) =
        emulator_with(App::new("cert-daemon").with_certificate(cert_der("cert.pem"))).await;
    let slot = Arc::new(Mutex::new(String::new()));
    let by_hand = sending(&emulator, &app, slot.clone());
    let send = |assertion: String| {
        *slot.lock().unwrap() = assertion;
        token(&by_hand)
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "PS256", "typ": "JWT",
        "x5t#S256": URL_SAFE_NO_PAD.encode(Sha256::digest(cert_der("cert.pem")))});
    let claims = |aud: &str, iat: u64, jti: &str| {
        json!({"aud": aud, "iss": app.client_id, "sub": app.client_id, "jti": jti,
               "nbf": iat, "iat": iat, "exp": iat + 600})
    };
    let token_url = emulator.token_url(&app.tenant_id);

    // The hand-made assertion is right: it is accepted (so each refusal below is for its one flaw).
    send(hand_signed(
        header.clone(),
        claims(&token_url, now, "jti-ok"),
    ))
    .await
    .unwrap();

    // A real assertion from the certificate credential, captured on the way.
    let c = credential(
        &emulator,
        &app,
        ClientCertificate::from_pem(read("client-pkcs8.pem")).unwrap(),
        AssertionAlgorithm::Ps256,
        false,
    );
    token(&c).await.unwrap();
    let captured = field(&emulator, "client_assertion").unwrap();

    let expect = |result: Result<tower_entra::AccessToken, TokenError>, code: u32, what: &str| {
        let e = result.expect_err(what);
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{what}: {e}");
        assert_eq!(e.entra().unwrap().codes(), [code], "{what}: {e}");
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(&captured[captured.len() - 20..]),
            "{what}: the assertion leaked: {shown}"
        );
        e
    };

    // Replayed jti: the captured assertion, sent again.
    let e = expect(send(captured.clone()).await, 50013, "replayed jti");
    assert!(e.hint().is_some_and(|h| h.contains("jti")), "{e}");

    // Tampered signature: one byte of the signature changed.
    let (signed, signature) = captured.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[10] ^= 0x01;
    let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig));
    let e = expect(send(tampered).await, 700027, "tampered signature");
    assert!(e.hint().is_some_and(|h| h.contains("certificate")), "{e}");

    // Tampered claims under the original signature.
    let (head, rest) = captured.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let mut forged = decode_part(&captured, 1);
    forged["jti"] = json!("forged-jti");
    let forged = format!(
        "{head}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(forged.to_string())
    );
    expect(send(forged).await, 700027, "tampered claims");

    // Wrong key: a certificate that was never uploaded to this app.
    let other = ClientCertificate::from_pem(read("chain.pem")).unwrap();
    let wrong = credential(&emulator, &app, other, AssertionAlgorithm::Ps256, false);
    expect(token(&wrong).await, 700027, "unregistered certificate");

    // Expired assertion: issued two hours ago.
    let e = expect(
        send(hand_signed(
            header.clone(),
            claims(&token_url, now - 7200, "jti-old"),
        ))
        .await,
        700024,
        "expired assertion",
    );
    assert!(e.hint().is_some_and(|h| h.contains("clock")), "{e}");
    // Not yet valid: issued an hour from now.
    expect(
        send(hand_signed(
            header.clone(),
            claims(&token_url, now + 3600, "jti-future"),
        ))
        .await,
        700024,
        "assertion from the future",
    );

    // Wrong aud: the public cloud's token URL instead of the emulator's.
    let public = format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        app.tenant_id
    );
    let e = expect(
        send(hand_signed(header.clone(), claims(&public, now, "jti-aud"))).await,
        700023,
        "wrong aud",
    );
    assert!(e.hint().is_some_and(|h| h.contains("aud")), "{e}");
}

#[tokio::test]
async fn works_behind_a_token_provider_and_signs_a_new_assertion_per_fetch() {
    let (emulator, app) =
        emulator_with(App::new("cert-daemon").with_certificate(cert_der("cert.pem"))).await;
    let c = credential(
        &emulator,
        &app,
        ClientCertificate::from_pkcs12(read("client-aes.pfx"), Some(PASSWORD)).unwrap(),
        AssertionAlgorithm::Ps256,
        false,
    );
    let provider = TokenProvider::new(c.clone(), Emulator::DEMO_API_SCOPE).unwrap();
    let t = provider.token().await.unwrap();
    assert_eq!(emulator.token_requests(), 1);
    assert!(provider.token().await.unwrap().same_token(&t));
    // Fetching again directly (as a refresh does) must not replay the first assertion.
    let first = field(&emulator, "client_assertion").unwrap();
    token(&c).await.unwrap();
    assert_ne!(field(&emulator, "client_assertion").unwrap(), first);
}

#[tokio::test]
async fn nothing_secret_in_debug_or_errors() {
    let pem = read("client-pkcs8.pem");
    let key_body: String = String::from_utf8(read("key.pkcs8.pem"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let certificate = ClientCertificate::from_pem(&pem).unwrap();
    let c = ClientCertificateCredential::builder(
        "t",
        "00000000-0000-0000-0000-000000000001",
        certificate.clone(),
    )
    .build()
    .unwrap();
    let builder = ClientCertificateCredential::builder("t", "c", certificate.clone());
    for shown in [
        format!("{certificate:?}"),
        format!("{c:?}"),
        format!("{builder:?}"),
    ] {
        assert!(!shown.contains(&key_body), "{shown}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains(&certificate.thumbprint()), "{shown}");
    }
    let e =
        ClientCertificate::from_pem_with_password(read("client-encrypted.pem"), "hunter2-password")
            .unwrap_err();
    assert!(!format!("{e}{e:?}").contains("hunter2"), "{e:?}");
    let e = ClientCertificate::from_pkcs12(read("client-aes.pfx"), Some("hunter2-password"))
        .unwrap_err();
    assert!(!format!("{e}{e:?}").contains("hunter2"), "{e:?}");
}
