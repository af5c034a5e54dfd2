//! With every tracing event captured, a certificate and a workload identity token fetch (one
//! accepted, one refused) log no assertion, key, password or token.

mod support;

use std::time::Duration;

use entra_emulator::{App, Emulator, FederatedIssuer};
use support::fixtures::fixture;
use support::sent_assertion;
use tower_entra::{
    ClientCertificate, ClientCertificateCredential, TokenProvider, WorkloadIdentityCredential,
};

#[tokio::test]
async fn no_assertion_key_or_token_in_any_log() {
    // current_thread runtime: the provider's spawned fetches run on this thread, under it.
    let (capture, _guard) = support::LogCapture::start();

    let emulator = Emulator::start().await;
    let cert = ClientCertificate::from_pkcs12(
        std::fs::read(fixture("client-aes.pfx")).unwrap(),
        Some("fixture-password"),
    )
    .unwrap();
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("cert")
            .with_certificate(cert.certificate_der().to_vec())
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let mut secrets = Vec::new();
    let credential = ClientCertificateCredential::builder(&app.tenant_id, &app.client_id, cert)
        .authority_host(emulator.authority_host())
        .build()
        .unwrap();
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE).unwrap();
    let token = provider.token().await.unwrap();
    secrets.push(token.secret().to_owned());
    secrets.push(sent_assertion(&emulator));

    // A refused certificate assertion: the certificate is not registered on this app.
    let other = emulator.register_app(&emulator.tenant_id(), App::new("no-cert"));
    let refused = ClientCertificateCredential::builder(
        &other.tenant_id,
        &other.client_id,
        ClientCertificate::from_pem(std::fs::read(fixture("client-pkcs8.pem")).unwrap()).unwrap(),
    )
    .authority_host(emulator.authority_host())
    .build()
    .unwrap();
    let provider = TokenProvider::new(refused, Emulator::DEMO_API_SCOPE).unwrap();
    let e = provider.token().await.unwrap_err();
    tracing::error!(error = %e, debug = ?e, "refused as expected");
    secrets.push(sent_assertion(&emulator));

    // Workload identity.
    let issuer = FederatedIssuer::new("https://issuer.example/");
    emulator.add_trusted_issuer_jwks(issuer.issuer(), issuer.jwks());
    let wi = emulator.register_app(
        &emulator.tenant_id(),
        App::new("wi")
            .with_federated_credential(issuer.issuer(), "sa", "")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let file = std::env::temp_dir().join(format!("tower-entra-trace-{}", uuid::Uuid::new_v4()));
    let federated = issuer.issue(
        "sa",
        "api://AzureADTokenExchange",
        Duration::from_secs(3600),
    );
    std::fs::write(&file, &federated).unwrap();
    let credential = WorkloadIdentityCredential::builder(&wi.tenant_id, &wi.client_id, &file)
        .authority_host(emulator.authority_host())
        .build()
        .unwrap();
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE).unwrap();
    let token = provider.token().await.unwrap();
    let _ = std::fs::remove_file(&file);
    secrets.push(token.secret().to_owned());
    secrets.push(federated);

    let key_line = std::fs::read_to_string(fixture("key.pkcs8.pem"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let logs = capture.text();
    assert!(
        logs.contains("refused as expected") && logs.contains("federated token file"),
        "the capture saw nothing: {logs}"
    );
    for secret in &secrets {
        // Any 16-character piece of the signature (the last part) or of the token.
        let tail = &secret[secret.len() - 16..];
        assert!(!logs.contains(tail), "a secret reached the logs:\n{logs}");
    }
    assert!(
        !logs.contains(&key_line) && !logs.contains("fixture-password"),
        "{logs}"
    );
}
