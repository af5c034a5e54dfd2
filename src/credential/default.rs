//! [`DefaultCredential`]: the credential a server app gets from where it runs.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::credential::env::{
    AZURE_CLIENT_CERTIFICATE_PATH, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
    AZURE_FEDERATED_TOKEN_FILE, Lookup,
};
use crate::credential::{
    AzureCliCredential, Credential, EnvironmentCredential, ManagedIdentityCredential,
    ManagedIdentityId, TokenRequest,
};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// The credential for a server app, chosen from where it runs:
///
/// 1. [`EnvironmentCredential`] when `AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PATH` or
///    `AZURE_FEDERATED_TOKEN_FILE` is set (an app registration's secret or certificate, or AKS
///    workload identity). Configured but wrong (a missing `AZURE_TENANT_ID`, an unreadable
///    certificate) is an error here: an app meant to run as its app registration never
///    silently runs as something else.
/// 2. Otherwise [`ManagedIdentityCredential`]: user-assigned when `AZURE_CLIENT_ID` is set
///    (as the Azure SDKs do), else system-assigned.
/// 3. Only when asked for with [`azure_cli`](DefaultCredentialBuilder::azure_cli):
///    [`AzureCliCredential`], when no managed identity endpoint answers (a developer's machine).
///
/// Named `DefaultCredential`, not the Azure SDKs' `DefaultAzureCredential`, because it differs
/// on purpose: developer tools are opt-in, never silently used in production.
///
/// It logs once, at `info`, which credential it chose. When none can get a token, the error
/// says what each one said.
///
/// Its credentials send through the default transport (feature `reqwest`); without that
/// feature, build the credential you want with `.transport(..)` on its builder instead.
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
    Environment(Box<EnvironmentCredential>),
    ManagedIdentity {
        credential: ManagedIdentityCredential,
        /// Why the environment was passed over, for the error when nothing works.
        environment: &'static str,
    },
}

const ENVIRONMENT_UNSET: &str = "not configured (none of AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH, AZURE_FEDERATED_TOKEN_FILE is set)";

/// Builds a [`DefaultCredential`].
///
/// ```no_run
/// use tower_entra::{AzureCliCredential, DefaultCredential};
///
/// // On Azure, its managed identity; on a developer's machine, `az login`'s user.
/// let credential = DefaultCredential::builder()
///     .azure_cli(AzureCliCredential::new())
///     .build()?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
#[derive(Debug, Default)]
pub struct DefaultCredentialBuilder {
    azure_cli: Option<AzureCliCredential>,
}

impl DefaultCredentialBuilder {
    /// After the managed identity, try `cli` (`az account get-access-token`) when no managed
    /// identity endpoint answers or the host has no identity: for apps run on a developer's
    /// machine as well as on Azure. Off by default.
    pub fn azure_cli(mut self, cli: AzureCliCredential) -> Self {
        self.azure_cli = Some(cli);
        self
    }

    /// Chooses the credential from the process environment. A credential that is configured
    /// but wrong is an error here (see [`DefaultCredential`]).
    pub fn build(self) -> Result<DefaultCredential, TokenError> {
        let mut credential = DefaultCredential::from_lookup(Lookup::process())?;
        credential.azure_cli = self.azure_cli;
        Ok(credential)
    }
}

impl DefaultCredential {
    /// Chooses from the process environment; the same as `DefaultCredential::builder().build()`.
    pub fn new() -> Result<Self, TokenError> {
        Self::builder().build()
    }

    /// A builder, for the options (the Azure CLI after the managed identity).
    pub fn builder() -> DefaultCredentialBuilder {
        DefaultCredentialBuilder::default()
    }

    /// Chooses from variables read through `lookup` (tests, configuration held elsewhere).
    pub(crate) fn from_lookup(lookup: Lookup) -> Result<Self, TokenError> {
        let configured = [
            AZURE_CLIENT_SECRET,
            AZURE_CLIENT_CERTIFICATE_PATH,
            AZURE_FEDERATED_TOKEN_FILE,
        ];
        let chosen = if configured.into_iter().any(|name| lookup.is_set(name)) {
            let credential = EnvironmentCredential::from_lookup(&lookup, Default::default())
                .map_err(|e| chain_error("EnvironmentCredential is configured but", &e))?;
            tracing::info!(
                credential = "EnvironmentCredential",
                "DefaultCredential chose EnvironmentCredential"
            );
            Chosen::Environment(Box::new(credential))
        } else {
            let mut builder = ManagedIdentityCredential::builder().lookup(lookup.clone());
            if let Some(client_id) = lookup.var(AZURE_CLIENT_ID) {
                builder = builder.user_assigned(ManagedIdentityId::ClientId(client_id));
            }
            let credential = builder.build().map_err(|e| {
                TokenError::new(
                    e.kind(),
                    format!(
                        "DefaultCredential has no usable credential: EnvironmentCredential: {ENVIRONMENT_UNSET}; ManagedIdentityCredential: {e}"
                    ),
                )
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

    #[cfg(all(test, feature = "reqwest", unix))]
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
        // Each one's error is in the message, its cause included, so none is a `source`.
        Err(TokenError::new(
            last.kind(),
            format!("DefaultCredential could not get a token: {said}"),
        )
        .with_retry_after(last.retry_after()))
    }
}

fn chain_error(context: &str, e: &TokenError) -> TokenError {
    TokenError::new(e.kind(), format!("{context} failed: {e}"))
}

impl Credential for DefaultCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        self.fetch(request).boxed()
    }

    /// The chosen credential's bound on one call, for the provider's fetch deadline, with the
    /// Azure CLI's after managed identity when the chain has it (it runs when managed identity
    /// fails).
    fn timeout(&self) -> Option<std::time::Duration> {
        match &self.chosen {
            Chosen::Environment(env) => env.timeout(),
            Chosen::ManagedIdentity { credential, .. } => {
                let cli = self.azure_cli.as_ref().and_then(|cli| cli.timeout());
                Some(
                    credential
                        .timeout()?
                        .saturating_add(cli.unwrap_or_default()),
                )
            }
        }
    }

    fn identity(&self) -> Option<(&str, &str)> {
        match &self.chosen {
            Chosen::Environment(env) => env.identity(),
            Chosen::ManagedIdentity { .. } => None,
        }
    }

    /// The environment's credential serves the tenants of `AZURE_ADDITIONALLY_ALLOWED_TENANTS`;
    /// managed identity only its own.
    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        match &self.chosen {
            Chosen::Environment(env) => env.check_tenant(tenant),
            Chosen::ManagedIdentity { credential, .. } => credential.check_tenant(tenant),
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

// The chain's credentials need the default transport.
#[cfg(all(test, feature = "reqwest"))]
mod tests {
    use super::*;
    use entra_emulator::{App, Emulator, ManagedIdentity};
    use std::collections::HashMap;

    const ARM: &str = "https://management.azure.com/.default";

    fn from(vars: &[(&str, String)]) -> Result<DefaultCredential, TokenError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        DefaultCredential::from_lookup(Lookup::new(move |k: &str| vars.get(k).cloned()))
    }

    async fn token(c: &DefaultCredential) -> Result<AccessToken, TokenError> {
        c.request_token(TokenRequest::new(ARM)).await
    }

    #[tokio::test]
    async fn the_environment_wins_when_it_is_configured() {
        let em = Emulator::start().await;
        em.assign_managed_identity(ManagedIdentity::system_assigned());
        let app = em.register_app(&em.tenant_id(), App::new("daemon").with_secret("s3cret"));
        let c = from(&[
            ("AZURE_TENANT_ID", app.tenant_id.clone()),
            ("AZURE_CLIENT_ID", app.client_id.clone()),
            ("AZURE_CLIENT_SECRET", "s3cret".to_owned()),
            ("AZURE_AUTHORITY_HOST", em.authority_host()),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", em.imds_host()),
        ])
        .unwrap();
        assert_eq!(c.chosen(), "EnvironmentCredential");
        // The provider's fetch deadline comes from the chosen credential's own bound.
        assert!(
            c.timeout().is_some(),
            "the chosen credential's timeout is passed on"
        );
        token(&c).await.unwrap();
        assert_eq!(em.token_requests(), 1);
        assert!(em.managed_identity_request_log().is_empty());
    }

    #[tokio::test]
    async fn a_configured_but_broken_environment_is_an_error_not_a_fallback() {
        let e = from(&[("AZURE_CLIENT_SECRET", "s".to_owned())]).unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
        assert!(e.message().contains("AZURE_TENANT_ID"), "{e}");
    }

    #[tokio::test]
    async fn otherwise_the_managed_identity_user_assigned_by_azure_client_id() {
        let em = Emulator::start().await;
        em.assign_managed_identity(ManagedIdentity::system_assigned());
        let worker = em.assign_managed_identity(ManagedIdentity::user_assigned("worker"));
        let host = ("AZURE_POD_IDENTITY_AUTHORITY_HOST", em.imds_host());
        let c = from(std::slice::from_ref(&host)).unwrap();
        assert_eq!(c.chosen(), "ManagedIdentityCredential");
        token(&c).await.unwrap();
        let c = from(&[host, ("AZURE_CLIENT_ID", worker.client_id.clone())]).unwrap();
        token(&c).await.unwrap();
        let log = em.managed_identity_request_log();
        assert_eq!(log[0].query_param("client_id"), None);
        assert_eq!(
            log[1].query_param("client_id"),
            Some(worker.client_id.as_str())
        );
    }

    fn nowhere() -> (&'static str, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            format!("http://{addr}"),
        )
    }

    #[tokio::test]
    async fn when_all_fail_the_error_says_what_each_said() {
        let c = from(&[nowhere()]).unwrap();
        let e = token(&c).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
        for said in [
            "EnvironmentCredential: not configured",
            "AZURE_CLIENT_SECRET",
            "ManagedIdentityCredential (IMDS)",
            "no managed identity endpoint answered",
        ] {
            assert!(e.message().contains(said), "{said}: {e}");
        }
        let e = from(&[("IDENTITY_HEADER", "h".to_owned())]).unwrap_err();
        assert!(
            e.message().contains("EnvironmentCredential")
                && e.message().contains("IDENTITY_ENDPOINT"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_azure_cli_only_when_asked_and_only_without_a_managed_identity() {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("tower-entra-default-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let az = dir.join("az");
        let expires_on = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        std::fs::write(
            &az,
            format!(
                "#!/bin/sh\necho '{{\"accessToken\":\"from-az\",\"expires_on\":{expires_on}}}'\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cli = AzureCliCredential::builder()
            .search_path(dir.as_os_str())
            .build()
            .unwrap();

        // Not asked for: never used.
        let e = token(&from(&[nowhere()]).unwrap()).await.unwrap_err();
        assert!(!e.message().contains("; AzureCliCredential:"), "{e}");
        // Asked for, and no managed identity answers: used.
        let c = from(&[nowhere()]).unwrap().with_this_azure_cli(cli.clone());
        assert_eq!(token(&c).await.unwrap().secret(), "from-az");
        // Asked for, but the host's managed identity was refused: not used.
        let em = Emulator::start().await;
        em.assign_managed_identity(ManagedIdentity::system_assigned());
        em.push_managed_identity_fault(entra_emulator::Fault::status(403));
        let c = from(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", em.imds_host())])
            .unwrap()
            .with_this_azure_cli(cli);
        let e = token(&c).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
        assert!(!e.message().contains("; AzureCliCredential:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
