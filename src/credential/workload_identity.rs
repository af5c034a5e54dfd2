//! [`WorkloadIdentityCredential`]: a federated token read from a file (Kubernetes).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::credential::confidential_client_builder_methods;
use crate::credential::environment::{EnvVars, TOKEN_FILE};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::credential::{
    ClientAuth, ConfidentialClient, ConfidentialClientOptions, Credential, TokenRequest,
};
use crate::error::TokenError;
use crate::token::AccessToken;

/// How long a token read from the file is used before the file is read again, even if it looks
/// unchanged. Kubernetes rotates projected service account tokens at 80 % of their lifetime
/// (one hour at least), so five minutes is always well within a token's life.
pub(crate) const REREAD_AFTER: Duration = Duration::from_secs(300);

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
#[derive(Clone)]
pub struct WorkloadIdentityCredential {
    client: ConfidentialClient,
    file: Arc<TokenFile>,
}

impl WorkloadIdentityCredential {
    /// A credential for the public cloud reading the federated token from `token_file`.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        token_file: impl Into<PathBuf>,
    ) -> Result<Self, TokenError> {
        Self::builder(tenant_id, client_id, token_file).build()
    }

    /// A credential configured as the AKS workload identity webhook does it:
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and, optionally,
    /// `AZURE_AUTHORITY_HOST`. A missing or empty variable is an error that names it.
    pub fn from_env() -> Result<Self, TokenError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, TokenError> {
        const ADVICE: &str = "workload identity needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (the AKS webhook sets them when the pod's service account is annotated with azure.workload.identity/client-id and the pod is labelled azure.workload.identity/use: \"true\")";
        let env = EnvVars::new(lookup);
        let (tenant_id, client_id) = env.ids(ADVICE, ADVICE)?;
        let file = env.required(TOKEN_FILE, ADVICE)?;
        let mut builder = Self::builder(tenant_id, client_id, file);
        if let Some(host) = env.authority_host() {
            builder = builder.authority_host(host);
        }
        builder.build()
    }

    /// A builder, to set the cloud, the timeout or the HTTP client.
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        token_file: impl Into<PathBuf>,
    ) -> WorkloadIdentityCredentialBuilder {
        WorkloadIdentityCredentialBuilder {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            token_file: token_file.into(),
            options: ConfidentialClientOptions::default(),
        }
    }

    /// The file the federated token is read from.
    pub fn token_file(&self) -> &Path {
        &self.file.path
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let assertion = self.file.assertion()?;
        self.client
            .request_token(request, ClientAuth::Assertion(&assertion))
            .await
    }
}

impl Credential for WorkloadIdentityCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(self.fetch(request))
    }

    fn identity(&self) -> Option<(&str, &str)> {
        self.client.identity()
    }
}

impl fmt::Debug for WorkloadIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client
            .debug_struct(f, "WorkloadIdentityCredential")
            .field("token_file", &self.file.path)
            .finish()
    }
}

/// Builds a [`WorkloadIdentityCredential`].
#[derive(Debug)]
pub struct WorkloadIdentityCredentialBuilder {
    tenant_id: String,
    client_id: String,
    token_file: PathBuf,
    options: ConfidentialClientOptions,
}

impl WorkloadIdentityCredentialBuilder {
    confidential_client_builder_methods!();

    /// Checks the settings and builds the credential. The file is not read yet (the platform
    /// may write it after the process starts); a missing file fails the first token request.
    pub fn build(self) -> Result<WorkloadIdentityCredential, TokenError> {
        if self.token_file.as_os_str().is_empty() {
            return Err(TokenError::configuration(
                "the federated token file path is empty; set AZURE_FEDERATED_TOKEN_FILE to the projected service account token's path",
            ));
        }
        Ok(WorkloadIdentityCredential {
            client: ConfidentialClient::new(&self.tenant_id, &self.client_id, self.options)?,
            file: Arc::new(TokenFile {
                path: self.token_file,
                cached: Mutex::new(None),
            }),
        })
    }
}

struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    assertion: Arc<Zeroizing<String>>,
    read_at: Instant,
    modified: Option<SystemTime>,
    len: u64,
}

impl TokenFile {
    /// The token: from memory while the file looks unchanged and the copy is recent, else read.
    fn assertion(&self) -> Result<Arc<Zeroizing<String>>, TokenError> {
        // A small local file (tmpfs on Kubernetes): reading it inline is cheaper than a thread hop.
        let metadata = std::fs::metadata(&self.path).ok();
        let stamp = metadata.as_ref().map(|m| (m.modified().ok(), m.len()));
        {
            let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cached.as_ref() {
                let unchanged =
                    stamp.is_none_or(|(modified, len)| modified == c.modified && len == c.len);
                if unchanged && c.read_at.elapsed() < REREAD_AFTER {
                    return Ok(c.assertion.clone());
                }
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(&self.path).map_err(|e| {
            TokenError::configuration(format!(
                "cannot read the federated token file {} (AZURE_FEDERATED_TOKEN_FILE): {e}; check that workload identity is enabled for this pod and the path is right",
                self.path.display()
            ))
        })?);
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::configuration(format!(
                "the federated token file {} (AZURE_FEDERATED_TOKEN_FILE) is empty; it must hold the service account token",
                self.path.display()
            )));
        }
        let assertion = Arc::new(Zeroizing::new(token.to_owned()));
        let (modified, len) = stamp.unwrap_or((None, 0));
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            assertion: assertion.clone(),
            read_at: Instant::now(),
            modified,
            len,
        });
        tracing::debug!(file = %self.path.display(), "read the federated token file");
        Ok(assertion)
    }
}
