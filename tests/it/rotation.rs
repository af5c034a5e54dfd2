//! Credential rotation without a restart, against the Entra emulator: a certificate or client
//! secret file replaced on disk (as the Secrets Store CSI driver does when Key Vault rotates
//! it) is used by the next token request with no failed request, an answer that the secret is
//! invalid re-reads the file exactly once, and a half-written file keeps what was loaded before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entra_emulator::{App, Emulator, RegisteredApp, TestCertificate};
use serde_json::Value;
use tower_entra::{
    AccessToken, CertificateAssertion, ClientCertificate, ClientCertificateCredential,
    ClientSecret, ClientSecretCredential, Credential, TokenError, TokenProvider, TokenRequest,
};

use crate::support::LogCapture;

/// The library's check interval for credential files (two minutes), and a second more.
const PAST_THE_CHECK_INTERVAL: Duration = Duration::from_secs(121);

const OLD_SECRET: &str = "old-secret-Zq8~rotated-away";
const NEW_SECRET: &str = "new-secret-Kp3~rotated-in";

/// A file in the temp directory, unique to this test and process, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: impl AsRef<[u8]>) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "tower-entra-rotation-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    /// Replaces the contents, as a rotation does.
    fn write(&self, contents: impl AsRef<[u8]>) {
        std::fs::write(&self.0, contents).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Moves tokio's clock past the credential file check interval. The clock runs again
/// afterwards: a paused clock would jump ahead while the client waits on the emulator's sockets.
async fn pass_the_check_interval() {
    tokio::time::pause();
    tokio::time::advance(PAST_THE_CHECK_INTERVAL).await;
    tokio::time::resume();
}

/// An emulator with `app` registered.
async fn register(app: App) -> (Emulator, RegisteredApp) {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(&emulator.tenant_id(), app);
    (emulator, app)
}

/// A form field of the latest token request.
fn sent(emulator: &Emulator, name: &str) -> Option<String> {
    let form = emulator.last_token_request()?;
    form.into_iter().find_map(|(k, v)| (k == name).then_some(v))
}

/// An emulator with an app that has two certificates: the one in use and its successor.
async fn register_two_certificates(
    name: &str,
) -> (Emulator, RegisteredApp, TestCertificate, TestCertificate) {
    let old = TestCertificate::new(&format!("{name}-old"));
    let new = TestCertificate::new(&format!("{name}-new"));
    let (emulator, app) = register(
        App::new(name)
            .with_certificate(old.der().to_vec())
            .with_certificate(new.der().to_vec()),
    )
    .await;
    (emulator, app, old, new)
}

/// An emulator with an app that has two secrets: the one in use and its successor.
async fn register_two_secrets(name: &str) -> (Emulator, RegisteredApp) {
    register(
        App::new(name)
            .with_secret(OLD_SECRET)
            .with_secret(NEW_SECRET),
    )
    .await
}

/// The `x5t#S256` header of the latest client assertion: which certificate signed it.
fn last_assertion_thumbprint(emulator: &Emulator) -> String {
    let assertion = sent(emulator, "client_assertion").expect("a client assertion");
    let header = assertion.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["x5t#S256"].as_str().unwrap().to_owned()
}

fn certificate_credential(
    emulator: &Emulator,
    app: &RegisteredApp,
    file: &TempFile,
    password: Option<&str>,
) -> ClientCertificateCredential {
    ClientCertificateCredential::builder(
        &app.tenant_id,
        &app.client_id,
        CertificateAssertion::from_file(file.path(), password).unwrap(),
    )
    .authority_host(emulator.authority_host())
    .build()
    .unwrap()
}

fn secret_credential(
    emulator: &Emulator,
    app: &RegisteredApp,
    file: &TempFile,
) -> ClientSecretCredential {
    ClientSecretCredential::builder(
        &app.tenant_id,
        &app.client_id,
        ClientSecret::from_file(file.path()).unwrap(),
    )
    .authority_host(emulator.authority_host())
    .build()
    .unwrap()
}

fn provider(credential: impl Credential) -> TokenProvider {
    TokenProvider::builder(credential, Emulator::DEMO_API_SCOPE)
        .refresh_jitter(Duration::ZERO)
        .build()
        .unwrap()
}

async fn request(credential: &impl Credential) -> Result<AccessToken, TokenError> {
    credential
        .request_token(TokenRequest::new(Emulator::DEMO_API_SCOPE))
        .await
}

/// How many times a credential file was read while `log` captured.
fn reads(log: &LogCapture) -> usize {
    log.text().matches("credential file read").count()
}

#[tokio::test]
async fn a_certificate_file_replaced_on_disk_is_used_for_the_next_token_request() {
    let (emulator, app, old, new) = register_two_certificates("cert-rotation").await;
    let file = TempFile::new("cert.pem", old.pem_bundle());
    let provider = provider(certificate_credential(&emulator, &app, &file, None));
    let first = provider.token().await.unwrap();
    assert_eq!(last_assertion_thumbprint(&emulator), old.x5t_s256());

    // Key Vault rotates: the CSI driver writes the new certificate, the old one is removed from
    // the app registration.
    file.write(new.pem_bundle());
    emulator.remove_certificate(&app, old.der());
    // The cached token stays in use: rotation changes what the next token request sends.
    assert_eq!(provider.token().await.unwrap().secret(), first.secret());
    assert_eq!(emulator.token_requests(), 1);

    pass_the_check_interval().await;
    provider.invalidate(&first);
    let second = provider.token().await.unwrap();
    assert_ne!(second.secret(), first.secret());
    // One request, signed with the new certificate: none was refused on the way.
    assert_eq!(emulator.token_requests(), 2);
    assert_eq!(last_assertion_thumbprint(&emulator), new.x5t_s256());
}

#[tokio::test]
async fn a_secret_file_replaced_on_disk_is_used_for_the_next_token_request() {
    let (emulator, app) = register_two_secrets("secret-rotation").await;
    let file = TempFile::new("secret", format!("{OLD_SECRET}\n"));
    let provider = provider(secret_credential(&emulator, &app, &file));
    let first = provider.token().await.unwrap();
    assert_eq!(
        sent(&emulator, "client_secret").as_deref(),
        Some(OLD_SECRET)
    );

    file.write(NEW_SECRET);
    emulator.remove_secret(&app, OLD_SECRET);
    assert_eq!(provider.token().await.unwrap().secret(), first.secret());
    assert_eq!(emulator.token_requests(), 1);

    pass_the_check_interval().await;
    provider.invalidate(&first);
    provider.token().await.unwrap();
    assert_eq!(emulator.token_requests(), 2);
    assert_eq!(
        sent(&emulator, "client_secret").as_deref(),
        Some(NEW_SECRET)
    );
}

#[tokio::test]
async fn an_invalid_secret_answer_rereads_the_file_once() {
    let (emulator, app) = register_two_secrets("secret-refused").await;
    let file = TempFile::new("refused-secret", OLD_SECRET);
    let credential = secret_credential(&emulator, &app, &file);
    request(&credential).await.unwrap();
    let (log, _guard) = LogCapture::start();

    // Rotated, and the old secret removed, before the file's next check: Entra refuses the old
    // secret (AADSTS7000215), the file is read at once, and the new secret gets the token.
    file.write(NEW_SECRET);
    emulator.remove_secret(&app, OLD_SECRET);
    request(&credential).await.unwrap();
    assert_eq!(reads(&log), 1);
    assert_eq!(emulator.token_requests(), 3);
    assert_eq!(
        sent(&emulator, "client_secret").as_deref(),
        Some(NEW_SECRET)
    );

    // Refused again with the file unchanged: one read, no second request, the error as Entra
    // gave it.
    emulator.remove_secret(&app, NEW_SECRET);
    let e = request(&credential).await.unwrap_err();
    assert_eq!(e.entra().map(|e| e.codes()), Some(&[7000215][..]), "{e}");
    assert_eq!(reads(&log), 2);
    assert_eq!(emulator.token_requests(), 4);
    assert!(!log.text().contains(NEW_SECRET), "{}", log.text());
}

#[tokio::test]
async fn a_half_written_certificate_file_keeps_the_certificate_loaded_before() {
    let (emulator, app, old, new) = register_two_certificates("half-written").await;
    let file = TempFile::new("half-written.pem", old.pem_bundle());
    let credential = certificate_credential(&emulator, &app, &file, None);
    let (log, _guard) = LogCapture::start();

    // The new certificate is there, its key not yet.
    file.write(new.certificate_pem());
    pass_the_check_interval().await;
    request(&credential).await.unwrap();
    assert_eq!(last_assertion_thumbprint(&emulator), old.x5t_s256());
    assert_eq!(credential.certificate().subject(), "CN=half-written-old");
    let text = log.text();
    assert!(
        text.contains("WARN") && text.contains("half-written"),
        "{text}"
    );
    for key in [old.private_key_pem(), new.private_key_pem()] {
        let key_line = key.lines().nth(1).unwrap();
        assert!(!text.contains(key_line), "{text}");
    }

    // Written completely: used from the next check on.
    file.write(new.pem_bundle());
    pass_the_check_interval().await;
    request(&credential).await.unwrap();
    assert_eq!(last_assertion_thumbprint(&emulator), new.x5t_s256());
}

#[tokio::test]
async fn a_truncated_pfx_file_keeps_the_certificate_loaded_before() {
    const PASSWORD: &str = "fixture-password";
    let pfx = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/client-aes.pfx"),
    )
    .unwrap();
    let certificate = ClientCertificate::from_pkcs12(&pfx, Some(PASSWORD)).unwrap();
    let (emulator, app) = register(
        App::new("pfx-truncated").with_certificate(certificate.certificate_der().to_vec()),
    )
    .await;
    let file = TempFile::new("truncated.pfx", &pfx);
    let credential = certificate_credential(&emulator, &app, &file, Some(PASSWORD));
    let (log, _guard) = LogCapture::start();

    file.write(&pfx[..pfx.len() / 2]);
    pass_the_check_interval().await;
    request(&credential).await.unwrap();
    assert!(log.text().contains("half-written"), "{}", log.text());
    assert!(!log.text().contains(PASSWORD), "{}", log.text());

    // The PFX constructor for the public cloud watches its file too; a truncated one is refused
    // at start-up, naming the path.
    let e = ClientCertificateCredential::from_pkcs12_file(
        "t",
        &app.client_id,
        file.path(),
        Some(PASSWORD),
    )
    .unwrap_err();
    assert!(e.to_string().contains("truncated.pfx"), "{e}");
    file.write(&pfx);
    let built = ClientCertificateCredential::from_pkcs12_file(
        "t",
        &app.client_id,
        file.path(),
        Some(PASSWORD),
    )
    .unwrap();
    assert_eq!(built.certificate_file(), Some(file.path()));
}

#[tokio::test]
async fn an_emptied_secret_file_keeps_the_secret_read_before() {
    let (emulator, app) = register(App::new("secret-emptied").with_secret(OLD_SECRET)).await;
    let file = TempFile::new("emptied-secret", OLD_SECRET);
    let credential = secret_credential(&emulator, &app, &file);
    let (log, _guard) = LogCapture::start();

    file.write("");
    pass_the_check_interval().await;
    request(&credential).await.unwrap();
    assert_eq!(
        sent(&emulator, "client_secret").as_deref(),
        Some(OLD_SECRET)
    );
    let text = log.text();
    assert!(
        text.contains("WARN") && text.contains("half-written"),
        "{text}"
    );
    assert!(!text.contains(OLD_SECRET), "{text}");

    // An empty file at start-up is refused, naming the path.
    let e = ClientSecretCredential::from_file("t", &app.client_id, file.path()).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    assert!(e.to_string().contains("emptied-secret"), "{e}");
}
