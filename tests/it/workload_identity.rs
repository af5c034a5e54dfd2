//! Federated credentials against the Entra emulator: `WorkloadIdentityCredential` (token file,
//! re-read on rotation, not on every request) and `ClientAssertionCredential` (callback).

use std::path::{Path, PathBuf};
use std::time::Duration;

use entra_emulator::{App, Emulator, FederatedIssuer, RegisteredApp};
use tower_entra::{
    ClientAssertionCredential, Credential, TokenError, TokenErrorKind, TokenRequest,
    WorkloadIdentityCredential,
};

use crate::support::sent_assertion;

const ISSUER: &str = "https://oidc.prod-aks.azure.com/00000000-0000-0000-0000-00000000000a/";
const SUBJECT: &str = "system:serviceaccount:default:workload";
const AUDIENCE: &str = "api://AzureADTokenExchange";
const HOUR: Duration = Duration::from_secs(3600);

struct Setup {
    emulator: Emulator,
    app: RegisteredApp,
    issuer: FederatedIssuer,
    dir: TempDir,
}

async fn setup() -> Setup {
    let emulator = Emulator::start().await;
    let issuer = FederatedIssuer::new(ISSUER);
    emulator.add_trusted_issuer_jwks(ISSUER, issuer.jwks());
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("aks-workload")
            .with_federated_credential(ISSUER, SUBJECT, AUDIENCE)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    Setup {
        emulator,
        app,
        issuer,
        dir: TempDir::new(),
    }
}

/// A directory removed on drop (no tempfile dependency for one use).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("tower-entra-wi-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workload(s: &Setup, file: &Path) -> WorkloadIdentityCredential {
    WorkloadIdentityCredential::builder(&s.app.tenant_id, &s.app.client_id, file)
        .authority_host(s.emulator.authority_host())
        // Long enough that a paused clock's auto-advance never fires it.
        .timeout(Duration::from_secs(24 * 3600))
        .build()
        .unwrap()
}

async fn token(c: &impl Credential) -> Result<tower_entra::AccessToken, TokenError> {
    c.request_token(TokenRequest::new(Emulator::DEMO_API_SCOPE))
        .await
}

#[tokio::test(start_paused = true)]
async fn a_rotated_token_file_is_used_by_the_next_fetch() {
    let s = setup().await;
    let file = s.dir.path().join("azure-identity-token");
    let first = s.issuer.issue(SUBJECT, AUDIENCE, HOUR);
    std::fs::write(&file, &first).unwrap();
    let c = workload(&s, &file);

    token(&c).await.unwrap();
    assert_eq!(sent_assertion(&s.emulator), first);

    // The kubelet rotates the token (a new file, here with a trailing newline as some writers
    // add); a minute later the next fetch must send the new one.
    tokio::time::advance(Duration::from_secs(60)).await;
    let second = s.issuer.issue(SUBJECT, AUDIENCE, HOUR);
    assert_ne!(first, second);
    std::fs::write(&file, format!("{second}\n")).unwrap();
    token(&c).await.unwrap();
    assert_eq!(sent_assertion(&s.emulator), second);
    assert_eq!(s.emulator.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_file_is_not_read_on_every_request() {
    let s = setup().await;
    let file = s.dir.path().join("token");
    let first = s.issuer.issue(SUBJECT, AUDIENCE, HOUR);
    std::fs::write(&file, &first).unwrap();
    let c = workload(&s, &file);
    token(&c).await.unwrap();

    // Gone: the copy read a moment ago is still used...
    std::fs::remove_file(&file).unwrap();
    tokio::time::advance(Duration::from_secs(240)).await;
    token(&c).await.unwrap();
    assert_eq!(sent_assertion(&s.emulator), first);

    // ...until it is five minutes old; then the file is read again, and its absence is an error
    // that names it.
    tokio::time::advance(Duration::from_secs(61)).await;
    let e = token(&c).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("AZURE_FEDERATED_TOKEN_FILE") && text.contains(&file.display().to_string()),
        "{text}"
    );
    assert_eq!(s.emulator.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_file_that_looks_unchanged_is_reread_after_five_minutes() {
    let s = setup().await;
    let file = s.dir.path().join("token");
    let first = s.issuer.issue(SUBJECT, AUDIENCE, HOUR);
    std::fs::write(&file, &first).unwrap();
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let c = workload(&s, &file);
    token(&c).await.unwrap();

    // Same size, same modification time: indistinguishable without reading.
    let second = s.issuer.issue(SUBJECT, AUDIENCE, HOUR);
    assert_eq!(first.len(), second.len());
    std::fs::write(&file, &second).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    tokio::time::advance(Duration::from_secs(299)).await;
    token(&c).await.unwrap();
    assert_eq!(
        sent_assertion(&s.emulator),
        first,
        "re-read before five minutes"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    token(&c).await.unwrap();
    assert_eq!(
        sent_assertion(&s.emulator),
        second,
        "not re-read after five minutes"
    );
}

#[tokio::test]
async fn missing_empty_and_untrusted_token_files() {
    let s = setup().await;
    let missing = s.dir.path().join("missing");
    let e = token(&workload(&s, &missing)).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration);
    assert!(
        e.to_string()
            .contains("cannot read the federated token file"),
        "{e}"
    );
    assert_eq!(s.emulator.token_requests(), 0);

    let empty = s.dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e = token(&workload(&s, &empty)).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration);
    assert!(e.to_string().contains("is empty"), "{e}");

    // A token for another service account: no federated credential matches.
    let other = s.dir.path().join("other");
    let wrong = s
        .issuer
        .issue("system:serviceaccount:default:other", AUDIENCE, HOUR);
    std::fs::write(&other, &wrong).unwrap();
    let c = workload(&s, &other);
    let e = token(&c).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
    assert_eq!(e.entra().unwrap().codes(), [70021]);
    let shown = format!("{e} {e:?} {c:?}");
    assert!(!shown.contains(&wrong[wrong.len() - 20..]), "{shown}");

    let e = WorkloadIdentityCredential::new(&s.app.tenant_id, &s.app.client_id, "").unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration);
    assert!(e.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"), "{e}");
}

#[tokio::test]
async fn client_assertion_callback() {
    let s = setup().await;
    let issuer = std::sync::Arc::new(s.issuer);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (i, n) = (issuer.clone(), calls.clone());
    let c = ClientAssertionCredential::builder(&s.app.tenant_id, &s.app.client_id, move || {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let assertion = i.issue(SUBJECT, AUDIENCE, HOUR);
        async move { Ok::<_, std::io::Error>(assertion) }
    })
    .authority_host(s.emulator.authority_host())
    .build()
    .unwrap();
    token(&c).await.unwrap();
    token(&c).await.unwrap();
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one call per token request"
    );

    // The callback fails: a transient error carrying its message.
    let failing =
        ClientAssertionCredential::builder(&s.app.tenant_id, &s.app.client_id, || async {
            Err::<String, _>(std::io::Error::other("OIDC endpoint unreachable"))
        })
        .authority_host(s.emulator.authority_host())
        .build()
        .unwrap();
    let e = token(&failing).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("OIDC endpoint unreachable"), "{e}");

    // Empty assertion: a configuration error, nothing sent.
    let before = s.emulator.token_requests();
    let empty = ClientAssertionCredential::builder(&s.app.tenant_id, &s.app.client_id, || async {
        Ok::<_, std::io::Error>("  ".to_owned())
    })
    .authority_host(s.emulator.authority_host())
    .build()
    .unwrap();
    let e = token(&empty).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert_eq!(s.emulator.token_requests(), before);
    assert!(!format!("{c:?}").is_empty());
}
