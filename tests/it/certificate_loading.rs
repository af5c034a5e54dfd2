//! Loading certificates and keys: every supported format, and a typed, helpful error (never a
//! panic, never a secret) for every bad input.

use tower_entra::{ClientCertificate, ClientCertificateCredential, TokenError, TokenErrorKind};

use crate::support::fixtures::{fixture, read};

const PASSWORD: &str = "fixture-password";
const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "00000000-0000-0000-0000-000000000001";

/// The thumbprint of tests/fixtures/cert.pem, as `openssl x509 -noout -fingerprint -sha1` prints it.
fn expected_thumbprint() -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
        .arg(fixture("cert.pem"))
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', ""),
        // No openssl CLI: the value recorded when the fixtures were made.
        _ => include_str!("../fixtures/cert.sha1").trim().to_owned(),
    }
}

#[track_caller]
fn assert_config_error(result: Result<ClientCertificate, TokenError>, needles: &[&str]) {
    let e = result.expect_err("loading should fail");
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    let text = e.to_string();
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    }
    let debug = format!("{e:?}");
    for secret in [PASSWORD, "MII", "PRIVATE KEY-----"] {
        assert!(!text.contains(secret) && !debug.contains(secret), "{debug}");
    }
}

#[test]
fn every_supported_format_loads_the_same_certificate() {
    let thumbprint = expected_thumbprint();
    let loaded = [
        (
            "PKCS#8 PEM",
            ClientCertificate::from_pem(read("client-pkcs8.pem")),
        ),
        (
            "PKCS#1 PEM (key first)",
            ClientCertificate::from_pem(read("client-pkcs1.pem")),
        ),
        (
            "encrypted PKCS#8 PEM",
            ClientCertificate::from_pem_with_password(read("client-encrypted.pem"), PASSWORD),
        ),
        (
            "AES PFX",
            ClientCertificate::from_pkcs12(read("client-aes.pfx"), Some(PASSWORD)),
        ),
        (
            "legacy RC2/3DES PFX",
            ClientCertificate::from_pkcs12(read("client-legacy.pfx"), Some(PASSWORD)),
        ),
        (
            "PFX without password",
            ClientCertificate::from_pkcs12(read("client-nopass.pfx"), None),
        ),
        (
            "PEM file by content",
            ClientCertificate::from_file(fixture("client-pkcs8.pem"), None),
        ),
        (
            "PFX file by content",
            ClientCertificate::from_file(fixture("client-aes.pfx"), Some(PASSWORD)),
        ),
    ];
    for (what, result) in loaded {
        let certificate = result.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(certificate.thumbprint(), thumbprint, "{what}");
        assert_eq!(certificate.subject(), "CN=tower-entra-test", "{what}");
        assert_eq!(certificate.chain_len(), 1, "{what}");
        let debug = format!("{certificate:?}");
        assert!(
            debug.contains(&thumbprint) && debug.contains("<redacted>"),
            "{debug}"
        );
    }
}

#[test]
fn chain_is_kept_leaf_first_from_pem_and_pfx() {
    let from_pem = ClientCertificate::from_pem(read("chain.pem")).unwrap();
    let from_pfx = ClientCertificate::from_pkcs12(read("chain.pfx"), Some(PASSWORD)).unwrap();
    for c in [&from_pem, &from_pfx] {
        assert_eq!(c.subject(), "CN=tower-entra-sni.example");
        assert_eq!(c.chain_len(), 2);
    }
    assert_eq!(from_pem.certificate_der(), from_pfx.certificate_der());
    // The leaf is the certificate of the key, wherever it sits in the file.
    let mut reordered = read("ca.pem");
    reordered.extend(read("leaf.key.pem"));
    reordered.extend(read("leaf.pem"));
    let c = ClientCertificate::from_pem(reordered).unwrap();
    assert_eq!(c.certificate_der(), from_pem.certificate_der());
}

#[test]
fn certificate_pem_round_trips() {
    let c = ClientCertificate::from_pem(read("client-pkcs8.pem")).unwrap();
    let pem = c.certificate_pem();
    assert_eq!(
        pem.replace('\n', ""),
        String::from_utf8(read("cert.pem"))
            .unwrap()
            .replace('\n', "")
    );
}

#[test]
fn unreadable_file_names_the_path() {
    assert_config_error(
        ClientCertificate::from_file(fixture("no-such-file.pem"), None),
        &["cannot read the certificate file", "no-such-file.pem"],
    );
    let e = ClientCertificateCredential::from_pem_file(TENANT, CLIENT, fixture("missing.pem"))
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration);
    assert!(e.to_string().contains("missing.pem"), "{e}");
}

#[test]
fn pem_without_certificate_or_key() {
    assert_config_error(
        ClientCertificate::from_pem(read("key.pkcs8.pem")),
        &["no certificate"],
    );
    assert_config_error(
        ClientCertificate::from_pem(read("cert.pem")),
        &["no private key"],
    );
    assert_config_error(ClientCertificate::from_pem(b"hello"), &["no PEM block"]);
    assert_config_error(
        ClientCertificate::from_file(fixture("generate.sh"), None),
        &["neither PEM", "generate.sh"],
    );
    assert_config_error(
        ClientCertificate::from_pem(read("client-aes.pfx")),
        &["not PEM", "from_pkcs12"],
    );
    let e = ClientCertificateCredential::from_pem_file(TENANT, CLIENT, fixture("cert.pem"))
        .unwrap_err();
    assert!(
        e.to_string().contains("no private key") && e.to_string().contains("cert.pem"),
        "{e}"
    );
}

#[test]
fn key_that_does_not_match_the_certificate() {
    assert_config_error(
        ClientCertificate::from_pem(read("mismatch.pem")),
        &["does not match its certificate", "openssl"],
    );
}

#[test]
fn elliptic_curve_keys_are_refused_because_entra_needs_rsa() {
    for name in ["ec.pem", "ec-sec1.pem"] {
        assert_config_error(
            ClientCertificate::from_pem(read(name)),
            &["elliptic-curve", "RSA"],
        );
    }
}

#[test]
fn encrypted_key_needs_the_right_password() {
    assert_config_error(
        ClientCertificate::from_pem(read("client-encrypted.pem")),
        &[
            "encrypted",
            "no password",
            "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        ],
    );
    assert_config_error(
        ClientCertificate::from_pem_with_password(read("client-encrypted.pem"), "wrong"),
        &["password is wrong"],
    );
    assert_config_error(
        ClientCertificate::from_pem_with_password(read("legacy-encrypted.pem"), PASSWORD),
        &["Proc-Type", "openssl pkcs8 -topk8"],
    );
}

#[test]
fn wrong_pfx_password() {
    for name in ["client-aes.pfx", "client-legacy.pfx"] {
        assert_config_error(
            ClientCertificate::from_pkcs12(read(name), Some("wrong")),
            &["PFX", "password is wrong"],
        );
        assert_config_error(
            ClientCertificate::from_pkcs12(read(name), None),
            &["password is wrong"],
        );
    }
    assert_config_error(
        ClientCertificate::from_pkcs12(read("client-nopass.pfx"), Some("unexpected")),
        &["password is wrong"],
    );
}

#[test]
fn damaged_pfx() {
    let mut pfx = read("client-aes.pfx");
    pfx.truncate(pfx.len() / 2);
    assert_config_error(
        ClientCertificate::from_pkcs12(&pfx, Some(PASSWORD)),
        &["not a valid PKCS#12"],
    );
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    assert_config_error(
        ClientCertificate::from_pem(read("expired.pem")),
        &[
            "expired at 2001-01-01T00:00:00Z",
            "AADSTS1000502",
            "CN=tower-entra-expired",
        ],
    );
    assert_config_error(
        ClientCertificate::from_pem(read("future.pem")),
        &[
            "not valid before 2999-01-01T00:00:00Z",
            "CN=tower-entra-future",
        ],
    );
}

#[test]
fn credentials_are_cheap_to_clone_and_send_sync() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<ClientCertificate>();
    shareable::<ClientCertificateCredential>();
    shareable::<tower_entra::ClientAssertionCredential>();
    shareable::<tower_entra::WorkloadIdentityCredential>();
    shareable::<tower_entra::EnvironmentCredential>();
}
