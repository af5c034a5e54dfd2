//! [`WorkloadIdentityCredential`]: a federated token read from a file (Kubernetes).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::credential::authentication::private::Authenticate;
use crate::credential::authentication::{ClientAuthentication, trim_in_place};
use crate::credential::client::ClientProof;
use crate::credential::client::ConfidentialClient;
use crate::credential::env::{AZURE_FEDERATED_TOKEN_FILE, Lookup};
use crate::credential::rotation::{on_blocking_pool, read_bounded};
use crate::credential::{ConfidentialClientCredential, ConfidentialClientCredentialBuilder};
use crate::error::TokenError;

/// How long a token read from the file is used before the file is read again, even if it looks
/// unchanged. Kubernetes rotates projected service account tokens at 80 % of their lifetime
/// (one hour at least), so five minutes is always well within a token's life.
pub(crate) const REREAD_AFTER: Duration = Duration::from_secs(300);

/// The largest federated token file read: a projected service account token is 1-2 KiB.
const MAX_TOKEN_FILE: usize = 64 * 1024;

/// Authenticates with a federated token that the platform writes to a file: Azure Kubernetes
/// Service workload identity (the webhook sets `AZURE_FEDERATED_TOKEN_FILE`,
/// `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_AUTHORITY_HOST`), or any Kubernetes
/// projected service account token trusted by a federated identity credential.
///
/// The file is read on the first token request, then again when its modification time or size
/// changes (the kubelet rotated it) or when the copy in memory is older than five minutes — never
/// on every request. The token never reaches `Debug`, logs or errors. Cheap to clone; clones
/// share the copy in memory.
///
/// `WorkloadIdentityCredential::new(tenant_id, client_id, token_file)` is a credential for the
/// public cloud with the default timeout; [`builder`](ConfidentialClientCredential::builder)
/// with the same arguments sets the cloud, the timeout or the HTTP client;
/// [`from_env`](Self::from_env) reads the webhook's variables.
///
/// ```no_run
/// use tower_entra::{TokenProvider, WorkloadIdentityCredential};
///
/// // In an AKS pod with workload identity enabled:
/// let credential = WorkloadIdentityCredential::from_env()?;
/// // Or explicitly:
/// let credential = WorkloadIdentityCredential::new(
///     "contoso.onmicrosoft.com",
///     "00000000-0000-0000-0000-000000000001",
///     "/var/run/secrets/azure/tokens/azure-identity-token",
/// )?;
/// let provider = TokenProvider::new(credential, "https://graph.microsoft.com/.default")?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
pub type WorkloadIdentityCredential = ConfidentialClientCredential<FederatedTokenFile>;

/// Builds a [`WorkloadIdentityCredential`].
pub type WorkloadIdentityCredentialBuilder =
    ConfidentialClientCredentialBuilder<FederatedTokenFile>;

impl WorkloadIdentityCredential {
    /// A credential configured as the AKS workload identity webhook does it:
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and, optionally,
    /// `AZURE_AUTHORITY_HOST`. A missing or empty variable is an error that names it.
    pub fn from_env() -> Result<Self, TokenError> {
        Self::from_lookup(&Lookup::process())
    }

    pub(crate) fn from_lookup(env: &Lookup) -> Result<Self, TokenError> {
        const ADVICE: &str = "workload identity needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (the AKS webhook sets them when the pod's service account is annotated with azure.workload.identity/client-id and the pod is labelled azure.workload.identity/use: \"true\")";
        let (tenant_id, client_id) = env.ids(ADVICE, ADVICE)?;
        let file = env.required(AZURE_FEDERATED_TOKEN_FILE, ADVICE)?;
        env.with_client_settings(Self::builder(tenant_id, client_id, file))
            .build()
    }

    /// The file the federated token is read from.
    pub fn token_file(&self) -> &Path {
        &self.authentication().0.path
    }
}

/// A file the platform keeps a federated token in: the [`ClientAuthentication`] of a
/// [`WorkloadIdentityCredential`]. Clones share the copy in memory.
#[derive(Clone)]
pub struct FederatedTokenFile(Arc<TokenFile>);

/// The file at a path; it is read on the first token request.
impl<P: Into<PathBuf>> From<P> for FederatedTokenFile {
    fn from(path: P) -> Self {
        FederatedTokenFile(Arc::new(TokenFile {
            path: path.into(),
            cached: Mutex::new(None),
        }))
    }
}

impl ClientAuthentication for FederatedTokenFile {}

impl fmt::Debug for FederatedTokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path only: the copy in memory is a bearer credential.
        f.debug_tuple("FederatedTokenFile")
            .field(&self.0.path)
            .finish()
    }
}

impl Authenticate for FederatedTokenFile {
    /// The file is not read yet (the platform may write it after the process starts); a missing
    /// file fails the first token request.
    fn check(&self) -> Result<(), TokenError> {
        if self.0.path.as_os_str().is_empty() {
            return Err(TokenError::configuration(
                "the federated token file path is empty; set AZURE_FEDERATED_TOKEN_FILE to the projected service account token's path",
            ));
        }
        Ok(())
    }

    fn authenticate<'a>(
        &'a self,
        _client: &'a ConfidentialClient,
    ) -> BoxFuture<'a, Result<ClientProof<'a>, TokenError>> {
        let file = self.0.clone();
        // The clock is read here: a blocking-pool thread may not see a test's paused clock.
        let now = Instant::now();
        Box::pin(async move {
            match on_blocking_pool(move || file.assertion(now)).await {
                Ok(assertion) => assertion.map(ClientProof::Assertion),
                Err(e) => Err(TokenError::configuration(
                    "reading the federated token file did not finish (the blocking task panicked or the runtime is shutting down)",
                )
                .with_source(e)),
            }
        })
    }
}

struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    assertion: Zeroizing<String>,
    read_at: Instant,
    modified: Option<SystemTime>,
    len: u64,
}

impl TokenFile {
    /// The token: from memory while the file looks unchanged and the copy is recent, else read.
    /// Blocking: called on the blocking pool.
    fn assertion(&self, now: Instant) -> Result<Zeroizing<String>, TokenError> {
        let metadata = std::fs::metadata(&self.path).ok();
        let stamp = metadata.as_ref().map(|m| (m.modified().ok(), m.len()));
        {
            let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cached.as_ref() {
                let unchanged =
                    stamp.is_none_or(|(modified, len)| modified == c.modified && len == c.len);
                if unchanged && now.saturating_duration_since(c.read_at) < REREAD_AFTER {
                    return Ok(c.assertion.clone());
                }
            }
        }
        let token = trim_in_place(self.read()?);
        if token.is_empty() {
            return Err(TokenError::configuration(format!(
                "the federated token file {} (AZURE_FEDERATED_TOKEN_FILE) is empty; it must hold the service account token",
                self.path.display()
            )));
        }
        let (modified, len) = stamp.unwrap_or((None, 0));
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            assertion: token.clone(),
            read_at: now,
            modified,
            len,
        });
        tracing::debug!(file = %self.path.display(), "read the federated token file");
        Ok(token)
    }

    /// The file's text, at most [`MAX_TOKEN_FILE`] bytes, in memory zeroed when dropped.
    fn read(&self) -> Result<Zeroizing<String>, TokenError> {
        let bytes = read_bounded(&self.path, "federated token file", MAX_TOKEN_FILE).map_err(|e| {
            TokenError::configuration(format!(
                "{} (AZURE_FEDERATED_TOKEN_FILE); check that workload identity is enabled for this pod",
                e.message()
            ))
        })?;
        match std::str::from_utf8(&bytes) {
            Ok(text) => Ok(Zeroizing::new(text.to_owned())),
            Err(_) => Err(TokenError::configuration(format!(
                "the federated token file {} (AZURE_FEDERATED_TOKEN_FILE) is not UTF-8 text; it must hold a service account token (a JWT)",
                self.path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{Credential, TokenRequest};
    use crate::transport::TransportRequest;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::convert::Infallible;
    use std::path::PathBuf;

    /// A path in the temp directory, unique to this test and process.
    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tower-entra-{}-{name}", std::process::id()))
    }

    /// A credential reading `path` whose transport answers every request with a token.
    fn credential(path: &Path) -> WorkloadIdentityCredential {
        let answering = tower::service_fn(|_: TransportRequest| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                br#"{"token_type":"Bearer","expires_in":3599,"access_token":"a.b.c"}"#,
            ))))
        });
        WorkloadIdentityCredential::builder("t", "c", path)
            .transport(answering)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_token_file_over_the_bound_is_refused_unread() {
        let path = temp_path("oversized-token");
        std::fs::write(&path, vec![b'e'; MAX_TOKEN_FILE + 1]).unwrap();
        let e = credential(&path)
            .request_token(TokenRequest::new("api://x/.default"))
            .await
            .unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
        assert!(!e.to_string().contains("eeee"), "{e}");
    }

    /// The token file is a FIFO that the test writes only after the credential started reading:
    /// on a current-thread runtime, a read on the runtime's thread would block the writer task
    /// for ever. The runtime runs on a thread of its own, so that this test fails (after a minute)
    /// rather than hangs.
    #[test]
    fn the_token_file_is_read_off_the_runtimes_worker_threads() {
        let path = temp_path("token-fifo");
        let _ = std::fs::remove_file(&path);
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        if !made.is_ok_and(|s| s.success()) {
            // No mkfifo (not a Unix system): nothing to show here.
            return;
        }
        let (done, finished) = std::sync::mpsc::channel();
        let fifo = path.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let result = runtime.block_on(async {
                let writer = tokio::spawn({
                    let fifo = fifo.clone();
                    async move { tokio::fs::write(fifo, "eyJ.federated.token").await }
                });
                let token = credential(&fifo)
                    .request_token(TokenRequest::new("api://x/.default"))
                    .await;
                writer.await.unwrap().unwrap();
                token
            });
            let _ = done.send(result.map(|t| t.secret().to_owned()));
        });
        let result = finished.recv_timeout(Duration::from_secs(60));
        let _ = std::fs::remove_file(&path);
        let token = result
            .expect("the token file read blocked the runtime's only thread")
            .unwrap();
        assert_eq!(token, "a.b.c");
    }
}
