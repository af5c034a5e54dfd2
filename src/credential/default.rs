//! [`DefaultCredential`]: the credential a server app gets from where it runs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;

use crate::credential::environment::TOKEN_FILE;
use crate::credential::{
    AzureCliCredential, Credential, EnvironmentCredential, ManagedIdentityCredential,
    ManagedIdentityId, TokenRequest,
};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

const CLIENT_ID: &str = "AZURE_CLIENT_ID";
const SECRET: &str = "AZURE_CLIENT_SECRET";
const CERT_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";

type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The credential for a server app, chosen from where it runs:
///
/// 1. [`EnvironmentCredential`] when `AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PATH` or
///    `AZURE_FEDERATED_TOKEN_FILE` is set (an app registration's secret or certificate, or AKS
///    workload identity). Configured but wrong (a missing `AZURE_TENANT_ID`, an unreadable
///    certificate) is an error here: an app meant to run as its app registration never
///    silently runs as something else.
/// 2. Otherwise [`ManagedIdentityCredential`]: user-assigned when `AZURE_CLIENT_ID` is set
///    (as the Azure SDKs do), else system-assigned.
/// 3. Only when asked for with [`with_azure_cli`](Self::with_azure_cli):
///    [`AzureCliCredential`], when no managed identity endpoint answers (a developer's machine).
///
/// Named `DefaultCredential`, not the Azure SDKs' `DefaultAzureCredential`, because it differs
/// on purpose: developer tools are opt-in, never silently used in production.
///
/// It logs once, at `info`, which credential it chose. When none can get a token, the error
/// says what each one said.
///
/// ```no_run
/// use tower_entra::{DefaultCredential, TokenProvider};
///
/// let provider = TokenProvider::new(DefaultCredential::new()?, "https://graph.microsoft.com/.default")?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
pub struct DefaultCredential {
    chosen: Chosen,
    azure_cli: Option<AzureCliCredential>,
    /// Whether falling back to the Azure CLI has been logged.
    cli_announced: AtomicBool,
}

enum Chosen {
    Environment(EnvironmentCredential),
    ManagedIdentity {
        credential: ManagedIdentityCredential,
        /// Why the environment was passed over, for the error when nothing works.
        environment: &'static str,
    },
}

const ENVIRONMENT_UNSET: &str = "not configured (none of AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH, AZURE_FEDERATED_TOKEN_FILE is set)";

impl DefaultCredential {
    /// Chooses from the process environment.
    pub fn new() -> Result<Self, TokenError> {
        Self::from_lookup(Arc::new(|name: &str| std::env::var(name).ok()))
    }

    /// Chooses from variables read through `lookup` (tests, configuration held elsewhere).
    pub(crate) fn from_lookup(lookup: Lookup) -> Result<Self, TokenError> {
        let set = |name: &str| lookup(name).is_some_and(|v| !v.trim().is_empty());
        let chosen = if [SECRET, CERT_PATH, TOKEN_FILE].into_iter().any(set) {
            let credential = EnvironmentCredential::from_lookup(|name| lookup(name))
                .map_err(|e| chain_error("EnvironmentCredential is configured but", &e))?;
            tracing::info!(
                credential = "EnvironmentCredential",
                "DefaultCredential chose EnvironmentCredential"
            );
            Chosen::Environment(credential)
        } else {
            let mut builder = ManagedIdentityCredential::builder().environment({
                let lookup = lookup.clone();
                move |name| lookup(name)
            });
            if let Some(client_id) = lookup(CLIENT_ID).filter(|v| !v.trim().is_empty()) {
                builder = builder.user_assigned(ManagedIdentityId::ClientId(client_id));
            }
            let credential = builder.build().map_err(|e| {
                let message = format!(
                    "DefaultCredential has no usable credential: EnvironmentCredential: {ENVIRONMENT_UNSET}; ManagedIdentityCredential: {}",
                    e.message()
                );
                TokenError::new(e.kind(), message).with_source(e)
            })?;
            tracing::info!(
                credential = "ManagedIdentityCredential",
                source = credential.source_name(),
                "DefaultCredential chose ManagedIdentityCredential ({})",
                credential.source_name()
            );
            Chosen::ManagedIdentity {
                credential,
                environment: ENVIRONMENT_UNSET,
            }
        };
        Ok(DefaultCredential {
            chosen,
            azure_cli: None,
            cli_announced: AtomicBool::new(false),
        })
    }

    /// After the managed identity, try `az account get-access-token` when no managed identity
    /// endpoint answers or the host has no identity: for apps run on a developer's machine
    /// as well as on Azure. Off by default.
    pub fn with_azure_cli(mut self) -> Self {
        self.azure_cli = Some(AzureCliCredential::new());
        self
    }

    #[cfg(test)]
    pub(crate) fn with_this_azure_cli(mut self, cli: AzureCliCredential) -> Self {
        self.azure_cli = Some(cli);
        self
    }

    /// The name of the credential chosen (`EnvironmentCredential`, `ManagedIdentityCredential`).
    pub fn chosen(&self) -> &'static str {
        match &self.chosen {
            Chosen::Environment(_) => "EnvironmentCredential",
            Chosen::ManagedIdentity { .. } => "ManagedIdentityCredential",
        }
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let (credential, environment) = match &self.chosen {
            Chosen::Environment(env) => return env.request_token(request).await,
            Chosen::ManagedIdentity {
                credential,
                environment,
            } => (credential, environment),
        };
        let mi_error = match credential.request_token(request).await {
            Ok(token) => return Ok(token),
            Err(e) => e,
        };
        let mut said = format!(
            "EnvironmentCredential: {environment}; ManagedIdentityCredential ({}): {mi_error}",
            credential.source_name()
        );
        let last = match &self.azure_cli {
            // Only when the host has no managed identity: a transient failure of one is retried,
            // never answered with a developer's token.
            Some(cli) if mi_error.kind() == TokenErrorKind::Configuration => {
                match cli.request_token(request).await {
                    Ok(token) => {
                        if !self.cli_announced.swap(true, Ordering::Relaxed) {
                            tracing::info!(
                                credential = "AzureCliCredential",
                                "DefaultCredential chose AzureCliCredential: no managed identity answered"
                            );
                        }
                        return Ok(token);
                    }
                    Err(cli_error) => {
                        said.push_str(&format!("; AzureCliCredential: {cli_error}"));
                        cli_error
                    }
                }
            }
            _ => mi_error,
        };
        Err(TokenError::new(
            last.kind(),
            format!("DefaultCredential could not get a token: {said}"),
        )
        .with_retry_after(last.retry_after())
        .with_source(last))
    }
}

fn chain_error(context: &str, e: &TokenError) -> TokenError {
    TokenError::new(e.kind(), format!("{context} failed: {}", e.message())).with_source(e.clone())
}

impl Credential for DefaultCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(self.fetch(request))
    }

    fn identity(&self) -> Option<(&str, &str)> {
        match &self.chosen {
            Chosen::Environment(env) => env.identity(),
            Chosen::ManagedIdentity { .. } => None,
        }
    }
}

impl fmt::Debug for DefaultCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DefaultCredential");
        match &self.chosen {
            Chosen::Environment(env) => d.field("chosen", env),
            Chosen::ManagedIdentity { credential, .. } => d.field("chosen", credential),
        };
        d.field("azure_cli", &self.azure_cli.is_some()).finish()
    }
}
