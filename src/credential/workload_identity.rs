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
use crate::credential::token_proxy::TokenProxy;
use crate::credential::{ConfidentialClientCredential, ConfidentialClientCredentialBuilder};
use crate::error::TokenError;
use crate::transport::TransportChoice;

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
    /// `AZURE_AUTHORITY_HOST`. Without `AZURE_FEDERATED_TOKEN_FILE` the error is
    /// [`Unavailable`](crate::TokenErrorKind::Unavailable) (this is not such a pod); with it, a
    /// missing or empty id is a [`Configuration`](crate::TokenErrorKind::Configuration) error that
    /// names the variable.
    pub fn from_env() -> Result<Self, TokenError> {
        Self::from_lookup(&Lookup::process(), false)
    }

    /// [`from_env`](Self::from_env), with token requests sent to AKS identity bindings' token
    /// proxy when `AZURE_KUBERNETES_TOKEN_PROXY` names one (see
    /// [`kubernetes_token_proxy`](WorkloadIdentityCredentialBuilder::kubernetes_token_proxy)).
    pub fn from_env_with_token_proxy() -> Result<Self, TokenError> {
        Self::from_lookup(&Lookup::process(), true)
    }

    /// Reads the variables through `env`; with `token_proxy`, the `AZURE_KUBERNETES_*` ones too.
    pub(crate) fn from_lookup(env: &Lookup, token_proxy: bool) -> Result<Self, TokenError> {
        const ADVICE: &str = "workload identity needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (the AKS webhook sets them when the pod's service account is annotated with azure.workload.identity/client-id and the pod is labelled azure.workload.identity/use: \"true\")";
        // No token file: this is not a pod with workload identity. A token file without the
        // ids is a webhook set-up gone wrong.
        let Some(file) = env.var(AZURE_FEDERATED_TOKEN_FILE) else {
            return Err(TokenError::unavailable(format!(
                "not configured: {AZURE_FEDERATED_TOKEN_FILE} is not set; {ADVICE}"
            )));
        };
        let (tenant_id, client_id) = env.ids(ADVICE, ADVICE)?;
        let mut authentication = FederatedTokenFile::from(file);
        if token_proxy {
            authentication.1 = TokenProxySetting::Read(TokenProxy::from_env(env)?.map(Arc::new));
        }
        env.with_client_settings(Self::builder(tenant_id, client_id, authentication))
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
pub struct FederatedTokenFile(Arc<TokenFile>, pub(crate) TokenProxySetting);

/// Whether token requests go to AKS identity bindings' token proxy.
#[derive(Clone)]
pub(crate) enum TokenProxySetting {
    Off,
    /// As the process environment says when the credential is built.
    FromProcessEnvironment,
    /// As variables read earlier said: `None` when they name no proxy.
    Read(Option<Arc<TokenProxy>>),
}

/// The file at a path; it is read on the first token request.
impl<P: Into<PathBuf>> From<P> for FederatedTokenFile {
    fn from(path: P) -> Self {
        FederatedTokenFile(
            Arc::new(TokenFile {
                path: path.into(),
                cached: Mutex::new(None),
            }),
            TokenProxySetting::Off,
        )
    }
}

impl WorkloadIdentityCredentialBuilder {
    /// Send token requests to AKS identity bindings' token proxy when the platform names one:
    /// `AZURE_KUBERNETES_TOKEN_PROXY` (https only), `AZURE_KUBERNETES_SNI_NAME` (the name presented
    /// in TLS and checked in the proxy's certificate), and `AZURE_KUBERNETES_CA_FILE` or
    /// `AZURE_KUBERNETES_CA_DATA` (the only CA trusted for the proxy; the file is read for each
    /// token request, and a changed CA is used at once). Identity bindings lift Entra's limit of
    /// 20 federated credentials per identity for large AKS estates. Read when the credential is
    /// built; without `AZURE_KUBERNETES_TOKEN_PROXY` requests go to Entra as usual.
    ///
    /// `build()` fails with a [`Configuration`](crate::TokenErrorKind::Configuration) error on a
    /// half-set or non-https configuration, and when a [`transport`](Self::transport) or
    /// [`http_client`](Self::http_client) was given too (the proxy needs its own TLS set-up).
    pub fn kubernetes_token_proxy(mut self) -> Self {
        self.authentication_mut().1 = TokenProxySetting::FromProcessEnvironment;
        self
    }
}

impl ClientAuthentication for FederatedTokenFile {}

impl fmt::Debug for FederatedTokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path only: the copy in memory is a bearer credential.
        let mut d = f.debug_tuple("FederatedTokenFile");
        d.field(&self.0.path);
        if let TokenProxySetting::Read(Some(proxy)) = &self.1 {
            d.field(proxy);
        }
        d.finish()
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

    #[allow(private_interfaces)]
    fn transport(&self, given: TransportChoice) -> Result<TransportChoice, TokenError> {
        let proxy = match &self.1 {
            TokenProxySetting::Off => return Ok(given),
            TokenProxySetting::FromProcessEnvironment => {
                TokenProxy::from_env(&Lookup::process())?.map(Arc::new)
            }
            TokenProxySetting::Read(proxy) => proxy.clone(),
        };
        let Some(proxy) = proxy else {
            return Ok(given);
        };
        if !matches!(given, TransportChoice::Default) {
            return Err(TokenError::configuration(
                "the AKS token proxy (AZURE_KUBERNETES_TOKEN_PROXY) and a transport of your own are both set; the proxy needs its own TLS set-up (its SNI name and CA), so drop `.transport(..)` / `.http_client(..)` or the proxy",
            ));
        }
        tracing::debug!(proxy = ?proxy, "workload identity token requests go to the AKS token proxy");
        proxy.transport()
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
