//! [`DefaultCredential`]: the credential a server app gets from where it runs, as a
//! [`ChainedCredential`] of the Azure SDKs' order, narrowed by `AZURE_TOKEN_CREDENTIALS`.

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::credential::env::{
    AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_POD_IDENTITY_AUTHORITY_HOST,
    AZURE_TOKEN_CREDENTIALS as TOKEN_CREDENTIALS, IDENTITY_ENDPOINT, Lookup, MSI_ENDPOINT,
};
use crate::credential::{
    AzureCliCredential, AzureDeveloperCliCredential, ChainedCredential, Credential,
    EnvironmentCredential, ManagedIdentityCredential, ManagedIdentityId, TokenRequest,
    WorkloadIdentityCredential,
};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;
use crate::transport::TransportChoice;

/// Variables that say this host has a managed or workload identity: a developer credential
/// chosen here is logged at warn.
const IDENTITY_VARIABLES: [&str; 4] = [
    IDENTITY_ENDPOINT,
    MSI_ENDPOINT,
    AZURE_POD_IDENTITY_AUTHORITY_HOST,
    AZURE_FEDERATED_TOKEN_FILE,
];

/// The credential for a server app, chosen from where it runs, in the Azure SDKs' order:
///
/// 1. [`EnvironmentCredential`]: an app registration's secret or certificate
///    (`AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`, with `AZURE_TENANT_ID` and
///    `AZURE_CLIENT_ID`);
/// 2. [`WorkloadIdentityCredential`]: AKS workload identity (`AZURE_FEDERATED_TOKEN_FILE`,
///    `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, as the webhook sets them);
/// 3. [`ManagedIdentityCredential`]: user-assigned when `AZURE_CLIENT_ID` is set (as the Azure
///    SDKs do), else system-assigned. Off Azure, IMDS is probed first, so a host without it
///    moves on within a second;
/// 4. only when asked for ([`azure_cli`](DefaultCredentialBuilder::azure_cli),
///    [`azure_developer_cli`](DefaultCredentialBuilder::azure_developer_cli)), or when
///    `AZURE_TOKEN_CREDENTIALS=dev`: [`AzureCliCredential`], then
///    [`AzureDeveloperCliCredential`], for a developer's machine.
///
/// It is a [`ChainedCredential`]: only a credential that cannot work on this host
/// ([`Unavailable`](TokenErrorKind::Unavailable)) hands over to the next. Any other error is the
/// answer: a host whose managed identity is misconfigured (several user-assigned identities and
/// none chosen, a refused `IDENTITY_HEADER`) fails with that error and never runs as the
/// developer signed in to `az`. A configured but broken first choice (a secret without
/// `AZURE_TENANT_ID`) is an error from [`new`](Self::new).
///
/// `AZURE_TOKEN_CREDENTIALS` (case-insensitive) narrows the chain, as in the Azure SDKs:
///
/// | value | credentials |
/// |---|---|
/// | unset or empty | the chain above |
/// | `prod` | environment, workload identity, managed identity (developer tools never, even when asked for) |
/// | `dev` | Azure CLI, Azure Developer CLI (the variable is the operator's opt-in) |
/// | `EnvironmentCredential`, `WorkloadIdentityCredential`, `ManagedIdentityCredential`, `AzureCliCredential`, `AzureDeveloperCliCredential` | exactly that one: its error is the answer, and managed identity is not probed |
///
/// Any other value is a [`Configuration`](TokenErrorKind::Configuration) error that lists these.
///
/// Named `DefaultCredential`, not the Azure SDKs' `DefaultAzureCredential`, because it differs
/// on purpose: developer tools are opt-in, never silently used in production.
///
/// The first credential that answers is logged once, at `info`, or at `warn` when it is a
/// developer tool on a host whose variables name a managed or workload identity. When none can
/// work here, the error says what each one said.
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
    selection: Selection,
    links: Vec<(Slot, Built)>,
    chain: ChainedCredential,
    /// Whether the variables name a managed or workload identity.
    identity_host: bool,
    /// The position of the credential whose choice was logged last, or `usize::MAX`.
    announced: AtomicUsize,
    /// What the app asked for.
    options: DefaultCredentialBuilder,
    /// Where `az` and `azd` are looked up instead of `PATH` (tests).
    tool_path: Option<OsString>,
}

/// Builds a [`DefaultCredential`]: the developer tools it may fall back to, and AKS identity
/// bindings.
///
/// ```no_run
/// use tower_entra::{AzureCliCredential, AzureDeveloperCliCredential, DefaultCredential};
///
/// // On Azure, its managed identity; on a developer's machine, `az login`'s or `azd`'s user.
/// let credential = DefaultCredential::builder()
///     .azure_cli(AzureCliCredential::new())
///     .azure_developer_cli(AzureDeveloperCliCredential::new())
///     .build()?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct DefaultCredentialBuilder {
    azure_cli: Option<AzureCliCredential>,
    azure_developer_cli: Option<AzureDeveloperCliCredential>,
    token_proxy: bool,
}

impl DefaultCredentialBuilder {
    /// After the managed identity, try `cli` (`az account get-access-token`) when the host has
    /// no managed identity (none answers, or none is assigned): for apps run on a developer's
    /// machine as well as on Azure. Off by default; `AZURE_TOKEN_CREDENTIALS=prod` (or naming
    /// another credential) leaves it out.
    pub fn azure_cli(mut self, cli: AzureCliCredential) -> Self {
        self.azure_cli = Some(cli);
        self
    }

    /// After the managed identity (and the Azure CLI), try `azd` (`azd auth token`) when the
    /// host has no managed identity. Off by default; `AZURE_TOKEN_CREDENTIALS=prod` (or naming
    /// another credential) leaves it out.
    pub fn azure_developer_cli(mut self, azd: AzureDeveloperCliCredential) -> Self {
        self.azure_developer_cli = Some(azd);
        self
    }

    /// Send workload identity's token requests to AKS identity bindings' token proxy when the
    /// platform names one (`AZURE_KUBERNETES_TOKEN_PROXY`, `AZURE_KUBERNETES_SNI_NAME`,
    /// `AZURE_KUBERNETES_CA_FILE` / `AZURE_KUBERNETES_CA_DATA`; see
    /// [`kubernetes_token_proxy`](crate::WorkloadIdentityCredentialBuilder::kubernetes_token_proxy)).
    /// Off by default, as in the Azure SDKs. A half-set or non-https proxy configuration makes
    /// workload identity's slot answer with that
    /// [`Configuration`](TokenErrorKind::Configuration) error.
    pub fn kubernetes_token_proxy(mut self) -> Self {
        self.token_proxy = true;
        self
    }

    /// Chooses from the process environment. A first choice that is configured but wrong, and
    /// an unknown `AZURE_TOKEN_CREDENTIALS`, are errors here (see [`DefaultCredential`]).
    pub fn build(self) -> Result<DefaultCredential, TokenError> {
        DefaultCredential::from_lookup(Lookup::process(), self, None)
    }
}

/// What `AZURE_TOKEN_CREDENTIALS` lets the chain use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    /// Unset: the deployed credentials, and the developer tools the app asks for.
    Default,
    Prod,
    Dev,
    Only(Slot),
}

/// A place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Environment,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
    AzureDeveloperCli,
}

impl Slot {
    const ALL: [Slot; 5] = [
        Slot::Environment,
        Slot::WorkloadIdentity,
        Slot::ManagedIdentity,
        Slot::AzureCli,
        Slot::AzureDeveloperCli,
    ];

    fn name(self) -> &'static str {
        match self {
            Slot::Environment => "EnvironmentCredential",
            Slot::WorkloadIdentity => "WorkloadIdentityCredential",
            Slot::ManagedIdentity => "ManagedIdentityCredential",
            Slot::AzureCli => "AzureCliCredential",
            Slot::AzureDeveloperCli => "AzureDeveloperCliCredential",
        }
    }

    fn is_developer_tool(self) -> bool {
        matches!(self, Slot::AzureCli | Slot::AzureDeveloperCli)
    }
}

impl Selection {
    /// `AZURE_TOKEN_CREDENTIALS`'s meaning: trimmed, case-insensitive, as the Azure SDKs read it.
    fn parse(value: Option<&str>) -> Result<Selection, TokenError> {
        let value = value.unwrap_or_default().trim();
        if value.is_empty() {
            return Ok(Selection::Default);
        }
        if value.eq_ignore_ascii_case("prod") {
            return Ok(Selection::Prod);
        }
        if value.eq_ignore_ascii_case("dev") {
            return Ok(Selection::Dev);
        }
        if let Some(slot) = Slot::ALL
            .into_iter()
            .find(|slot| value.eq_ignore_ascii_case(slot.name()))
        {
            return Ok(Selection::Only(slot));
        }
        let names: Vec<_> = Slot::ALL.iter().map(|slot| slot.name()).collect();
        Err(TokenError::configuration(format!(
            "{TOKEN_CREDENTIALS} is {value:?}, which tower-entra does not know; use prod, dev or one of {} (case-insensitive), or unset it",
            names.join(", ")
        )))
    }

    /// The slots it starts with; developer tools may be added on request under `Default`.
    fn slots(self) -> Vec<Slot> {
        match self {
            Selection::Default | Selection::Prod => vec![
                Slot::Environment,
                Slot::WorkloadIdentity,
                Slot::ManagedIdentity,
            ],
            Selection::Dev => vec![Slot::AzureCli, Slot::AzureDeveloperCli],
            Selection::Only(slot) => vec![slot],
        }
    }
}

/// A slot's credential, or why it could not be built.
enum Built {
    Ready(Arc<dyn Credential>),
    Failed(TokenError),
}

/// A credential that could not be built: its error is its answer.
#[derive(Debug)]
struct NotBuilt(TokenError);

impl Credential for NotBuilt {
    fn request_token<'a>(
        &'a self,
        _request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        let error = self.0.clone();
        Box::pin(async move { Err(error) })
    }

    fn timeout(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::ZERO)
    }
}

impl DefaultCredential {
    /// Chooses from the process environment; the same as `DefaultCredential::builder().build()`.
    pub fn new() -> Result<Self, TokenError> {
        Self::builder().build()
    }

    /// A builder, for the developer tools and AKS identity bindings.
    pub fn builder() -> DefaultCredentialBuilder {
        DefaultCredentialBuilder::default()
    }

    /// Chooses from variables read through `lookup` (tests, configuration held elsewhere);
    /// `az` and `azd` are looked up in `tool_path` when given.
    pub(crate) fn from_lookup(
        lookup: Lookup,
        options: DefaultCredentialBuilder,
        tool_path: Option<OsString>,
    ) -> Result<Self, TokenError> {
        let selection = Selection::parse(lookup.var(TOKEN_CREDENTIALS).as_deref())?;
        let mut this = DefaultCredential {
            selection,
            links: Vec::new(),
            chain: ChainedCredential::named([]),
            identity_host: IDENTITY_VARIABLES
                .into_iter()
                .any(|name| lookup.is_set(name)),
            announced: AtomicUsize::new(usize::MAX),
            options,
            tool_path,
        };
        let probe = !matches!(selection, Selection::Only(_));
        let mut slots = selection.slots();
        if selection == Selection::Default {
            // The developer tools the app asked for, in the Azure SDKs' order.
            if this.options.azure_cli.is_some() {
                slots.push(Slot::AzureCli);
            }
            if this.options.azure_developer_cli.is_some() {
                slots.push(Slot::AzureDeveloperCli);
            }
        } else if this.options.azure_cli.is_some() || this.options.azure_developer_cli.is_some() {
            tracing::debug!(
                "DefaultCredential: {TOKEN_CREDENTIALS} decides which developer tools are used"
            );
        }
        for slot in slots {
            let credential = this.build(slot, &lookup, probe);
            this.links.push((slot, credential));
        }
        if let Selection::Only(_) | Selection::Dev = selection {
            tracing::debug!(
                credentials = %selection_names(&this.links),
                "DefaultCredential narrowed by {TOKEN_CREDENTIALS}"
            );
        }
        this.check_first_answer()?;
        this.chain = this.rebuild();
        Ok(this)
    }

    /// Builds the credential of `slot`.
    fn build(&self, slot: Slot, lookup: &Lookup, probe: bool) -> Built {
        let built: Result<Arc<dyn Credential>, TokenError> = match slot {
            Slot::Environment => {
                EnvironmentCredential::from_lookup(lookup, TransportChoice::Default)
                    .map(|c| Arc::new(c) as Arc<dyn Credential>)
            }
            Slot::WorkloadIdentity => {
                WorkloadIdentityCredential::from_lookup(lookup, self.options.token_proxy)
                    .map(|c| Arc::new(c) as Arc<dyn Credential>)
            }
            Slot::ManagedIdentity => {
                let mut builder = ManagedIdentityCredential::builder().lookup(lookup.clone());
                if let Some(client_id) = lookup.var(AZURE_CLIENT_ID) {
                    builder = builder.user_assigned(ManagedIdentityId::ClientId(client_id));
                }
                if probe {
                    builder = builder.probe_imds();
                }
                builder.build().map(|c| Arc::new(c) as Arc<dyn Credential>)
            }
            Slot::AzureCli => {
                let mut cli = self.options.azure_cli.clone().unwrap_or_default();
                if let Some(path) = &self.tool_path {
                    cli = cli.with_search_path(path.clone());
                }
                Ok(Arc::new(cli))
            }
            Slot::AzureDeveloperCli => {
                let mut azd = self.options.azure_developer_cli.clone().unwrap_or_default();
                if let Some(path) = &self.tool_path {
                    azd = azd.with_search_path(path.clone());
                }
                Ok(Arc::new(azd))
            }
        };
        match built {
            Ok(credential) => Built::Ready(credential),
            Err(e) => Built::Failed(e),
        }
    }

    /// When the chain's answer is already known to be an error (the first credential that is
    /// not unavailable could not be built, or the one credential named could not), says so now.
    fn check_first_answer(&self) -> Result<(), TokenError> {
        let only = matches!(self.selection, Selection::Only(_));
        for (slot, built) in &self.links {
            let Built::Failed(error) = built else {
                return Ok(());
            };
            if only || error.kind() != TokenErrorKind::Unavailable {
                return Err(error.clone().in_context(&format!(
                    "DefaultCredential: {} is configured but failed",
                    slot.name()
                )));
            }
        }
        Ok(())
    }

    fn rebuild(&self) -> ChainedCredential {
        ChainedCredential::named(self.links.iter().map(|(slot, built)| {
            let credential = match built {
                Built::Ready(credential) => credential.clone(),
                // Its error is its answer.
                Built::Failed(e) => Arc::new(NotBuilt(e.clone())) as Arc<dyn Credential>,
            };
            (slot.name(), credential)
        }))
    }

    /// The name of the credential that answered the last request (`EnvironmentCredential`,
    /// `WorkloadIdentityCredential`, `ManagedIdentityCredential`, `AzureCliCredential`,
    /// `AzureDeveloperCliCredential`), or `None` before one did.
    pub fn chosen(&self) -> Option<&str> {
        self.chain.answered_by()
    }

    /// The names of the credentials it tries, in order.
    pub fn credentials(&self) -> Vec<&'static str> {
        self.links.iter().map(|(slot, _)| slot.name()).collect()
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        match self.chain.request_token(request).await {
            Ok(token) => {
                self.announce();
                Ok(token)
            }
            Err(e) => Err(e.in_context("DefaultCredential")),
        }
    }

    /// Logs the credential that answered, once for each change.
    fn announce(&self) {
        let Some(i) = self.chain.answered() else {
            return;
        };
        if self.announced.swap(i, Ordering::Relaxed) == i {
            return;
        }
        let slot = self.links[i].0;
        if slot.is_developer_tool() && self.identity_host {
            tracing::warn!(
                credential = slot.name(),
                "DefaultCredential chose {}, a developer's sign-in, on a host whose variables name a managed or workload identity; set {TOKEN_CREDENTIALS}=prod to never use developer tools here",
                slot.name()
            );
        } else {
            tracing::info!(
                credential = slot.name(),
                "DefaultCredential chose {}",
                slot.name()
            );
        }
    }
}

fn selection_names(links: &[(Slot, Built)]) -> String {
    links
        .iter()
        .map(|(slot, _)| slot.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Credential for DefaultCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        self.fetch(request).boxed()
    }

    fn timeout(&self) -> Option<std::time::Duration> {
        self.chain.timeout()
    }

    fn identity(&self) -> Option<(&str, &str)> {
        self.chain.identity()
    }

    /// The chosen credential's: the environment's and workload identity's serve the tenants of
    /// `AZURE_ADDITIONALLY_ALLOWED_TENANTS`; managed identity only its own.
    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        self.chain.check_tenant(tenant)
    }

    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        self.chain.cache_binding()
    }
}

impl fmt::Debug for DefaultCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCredential")
            .field("selection", &self.selection)
            .field("chain", &self.chain)
            .finish()
    }
}

// The chain's credentials need the default transport.
#[cfg(all(test, feature = "reqwest"))]
mod tests {
    use super::*;
    use entra_emulator::{App, Emulator, FederatedIssuer, ManagedIdentity};
    use std::collections::HashMap;

    const ARM: &str = "https://management.azure.com/.default";

    fn from_with(
        vars: &[(&str, String)],
        options: DefaultCredentialBuilder,
        tool_path: Option<OsString>,
    ) -> Result<DefaultCredential, TokenError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        DefaultCredential::from_lookup(
            Lookup::new(move |k| vars.get(k).cloned()),
            options,
            tool_path,
        )
    }

    fn from(vars: &[(&str, String)]) -> Result<DefaultCredential, TokenError> {
        from_with(vars, DefaultCredential::builder(), None)
    }

    async fn token(c: &DefaultCredential) -> Result<AccessToken, TokenError> {
        c.request_token(TokenRequest::new(ARM)).await
    }

    fn imds(em: &Emulator) -> (&'static str, String) {
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", em.imds_host())
    }

    /// Token requests to the identity endpoint (a probe carries no `Metadata` header).
    fn identity_requests(em: &Emulator) -> Vec<entra_emulator::RecordedRequest> {
        em.managed_identity_request_log()
            .into_iter()
            .filter(|r| r.header("metadata") == Some("true"))
            .collect()
    }

    fn probes(em: &Emulator) -> usize {
        em.managed_identity_request_log().len() - identity_requests(em).len()
    }

    /// An app registration with a secret, as the environment names it.
    fn secret_app(em: &Emulator) -> Vec<(&'static str, String)> {
        let app = em.register_app(&em.tenant_id(), App::new("daemon").with_secret("s3cret"));
        vec![
            ("AZURE_TENANT_ID", app.tenant_id),
            ("AZURE_CLIENT_ID", app.client_id),
            ("AZURE_CLIENT_SECRET", "s3cret".to_owned()),
            ("AZURE_AUTHORITY_HOST", em.authority_host()),
        ]
    }

    #[tokio::test]
    async fn the_environment_wins_when_it_is_configured() {
        let em = Emulator::start().await;
        em.assign_managed_identity(ManagedIdentity::system_assigned());
        let mut vars = secret_app(&em);
        vars.push(imds(&em));
        let c = from(&vars).unwrap();
        assert!(
            c.timeout().is_some(),
            "the chain's bound is passed on to the provider"
        );
        token(&c).await.unwrap();
        assert_eq!(c.chosen(), Some("EnvironmentCredential"));
        assert_eq!(em.token_requests(), 1);
        assert!(em.managed_identity_request_log().is_empty());
    }

    #[tokio::test]
    async fn a_configured_but_broken_environment_is_an_error_not_a_fallback() {
        let e = from(&[("AZURE_CLIENT_SECRET", "s".to_owned())]).unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
        assert!(
            e.message().contains("EnvironmentCredential")
                && e.message().contains("AZURE_TENANT_ID"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn otherwise_the_managed_identity_user_assigned_by_azure_client_id() {
        let em = Emulator::start().await;
        em.assign_managed_identity(ManagedIdentity::system_assigned());
        let worker = em.assign_managed_identity(ManagedIdentity::user_assigned("worker"));
        let c = from(&[imds(&em)]).unwrap();
        token(&c).await.unwrap();
        assert_eq!(c.chosen(), Some("ManagedIdentityCredential"));
        let c = from(&[imds(&em), ("AZURE_CLIENT_ID", worker.client_id.clone())]).unwrap();
        token(&c).await.unwrap();
        let log = identity_requests(&em);
        assert_eq!(log[0].query_param("client_id"), None);
        assert_eq!(
            log[1].query_param("client_id"),
            Some(worker.client_id.as_str())
        );
    }

    #[tokio::test]
    async fn the_federated_token_file_is_workload_identitys_not_the_environments() {
        const ISSUER: &str = "https://oidc.aks.example/issuer";
        let em = Emulator::start().await;
        let issuer = FederatedIssuer::new(ISSUER);
        em.add_trusted_issuer_jwks(ISSUER, issuer.jwks());
        let app = em.register_app(
            &em.tenant_id(),
            App::new("aks").with_federated_credential(
                ISSUER,
                "system:serviceaccount:ns:sa",
                "api://AzureADTokenExchange",
            ),
        );
        let file = std::env::temp_dir().join(format!("tower-entra-dc-{}", uuid::Uuid::new_v4()));
        std::fs::write(
            &file,
            issuer.issue(
                "system:serviceaccount:ns:sa",
                "api://AzureADTokenExchange",
                std::time::Duration::from_secs(3600),
            ),
        )
        .unwrap();
        let vars = vec![
            ("AZURE_TENANT_ID", app.tenant_id.clone()),
            ("AZURE_CLIENT_ID", app.client_id.clone()),
            ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
            ("AZURE_AUTHORITY_HOST", em.authority_host()),
            imds(&em),
        ];
        let c = from(&vars).unwrap();
        token(&c).await.unwrap();
        assert_eq!(c.chosen(), Some("WorkloadIdentityCredential"));
        // Named alone, EnvironmentCredential does not use the file.
        let mut only_environment = vars.clone();
        only_environment.push((TOKEN_CREDENTIALS, "EnvironmentCredential".to_owned()));
        let e = from(&only_environment).unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
        assert_eq!(em.token_requests(), 1);
        let _ = std::fs::remove_file(&file);
    }

    #[tokio::test]
    async fn naming_the_managed_identity_uses_it_over_a_configured_secret_without_a_probe() {
        let em = Emulator::start().await;
        let worker = em.assign_managed_identity(ManagedIdentity::user_assigned("worker"));
        let mut vars = secret_app(&em);
        // AZURE_CLIENT_ID names the managed identity too, as in the Azure SDKs.
        vars.retain(|(name, _)| *name != "AZURE_CLIENT_ID");
        vars.push(("AZURE_CLIENT_ID", worker.client_id.clone()));
        vars.push(imds(&em));
        vars.push((TOKEN_CREDENTIALS, "managedidentitycredential".to_owned()));
        let c = from(&vars).unwrap();
        assert_eq!(c.credentials(), ["ManagedIdentityCredential"]);
        token(&c).await.unwrap();
        assert_eq!(em.token_requests(), 0, "the secret was used");
        let log = identity_requests(&em);
        assert_eq!(log.len(), 1);
        assert_eq!(
            log[0].query_param("client_id"),
            Some(worker.client_id.as_str())
        );
        assert_eq!(probes(&em), 0, "named explicitly, IMDS is not probed");
    }

    #[tokio::test]
    async fn prod_never_adds_developer_tools_and_unknown_values_are_refused() {
        let both = DefaultCredential::builder()
            .azure_developer_cli(AzureDeveloperCliCredential::new())
            .azure_cli(AzureCliCredential::new());
        let c = from_with(
            &[(TOKEN_CREDENTIALS, " Prod ".to_owned())],
            both.clone(),
            None,
        )
        .unwrap();
        assert_eq!(
            c.credentials(),
            [
                "EnvironmentCredential",
                "WorkloadIdentityCredential",
                "ManagedIdentityCredential"
            ]
        );
        let c = from(&[(TOKEN_CREDENTIALS, "DEV".to_owned())]).unwrap();
        assert_eq!(
            c.credentials(),
            ["AzureCliCredential", "AzureDeveloperCliCredential"]
        );
        // Asked for in another order, the developer tools keep the Azure SDKs' order.
        let c = from_with(&[], both, None).unwrap();
        assert_eq!(
            &c.credentials()[3..],
            ["AzureCliCredential", "AzureDeveloperCliCredential"]
        );
        for unknown in ["production", "VisualStudioCodeCredential", "dev,prod"] {
            let e = from(&[(TOKEN_CREDENTIALS, unknown.to_owned())]).unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
            for valid in [
                "prod",
                "dev",
                "ManagedIdentityCredential",
                "AzureDeveloperCliCredential",
            ] {
                assert!(e.message().contains(valid), "{unknown}: {e}");
            }
        }
    }

    #[tokio::test]
    async fn the_aks_token_proxy_is_read_only_when_asked_for() {
        // A proxy half-set: ignored unless asked for, then the workload identity slot's error.
        let vars = [
            ("AZURE_TENANT_ID", "contoso.onmicrosoft.com".to_owned()),
            (
                "AZURE_CLIENT_ID",
                "00000000-0000-0000-0000-000000000001".to_owned(),
            ),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/nonexistent/token".to_owned(),
            ),
            ("AZURE_KUBERNETES_SNI_NAME", "proxy.aks.test".to_owned()),
        ];
        let e = token(&from(&vars).unwrap()).await.unwrap_err();
        assert!(!e.message().contains("AZURE_KUBERNETES_TOKEN_PROXY"), "{e}");
        let proxy = DefaultCredential::builder().kubernetes_token_proxy();
        // Workload identity is the first credential that can work here, so its error is known
        // when the chain is built.
        let e = from_with(&vars, proxy, None).unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
        assert!(
            e.message().contains("WorkloadIdentityCredential")
                && e.message().contains("AZURE_KUBERNETES_TOKEN_PROXY"),
            "{e}"
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
    async fn when_none_can_work_here_the_error_says_what_each_said() {
        let c = from(&[nowhere()]).unwrap();
        let e = token(&c).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
        for said in [
            "DefaultCredential: no credential in the chain can work here",
            "EnvironmentCredential: not configured",
            "WorkloadIdentityCredential: not configured: AZURE_FEDERATED_TOKEN_FILE",
            "ManagedIdentityCredential: no managed identity endpoint answered",
        ] {
            assert!(e.message().contains(said), "{said}: {e}");
        }
        assert_eq!(c.chosen(), None);
        // A half-set managed identity environment is a misconfiguration, found at once.
        let e = from(&[("IDENTITY_HEADER", "h".to_owned())]).unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
        assert!(
            e.message().contains("ManagedIdentityCredential")
                && e.message().contains("IDENTITY_ENDPOINT"),
            "{e}"
        );
    }

    #[cfg(unix)]
    mod with_developer_tools {
        use super::*;
        use crate::credential::developer_tool::tests::FakeTool;

        /// A directory with a signed-in `az` and `azd`, each printing its own token.
        fn signed_in() -> FakeTool {
            let expires_on = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600;
            let tools = FakeTool::new(
                "az",
                &format!("echo '{{\"accessToken\":\"from-az\",\"expires_on\":{expires_on}}}'"),
            );
            let azd = tools.0.join("azd");
            std::fs::write(
                &azd,
                "#!/bin/sh\necho '{\"token\":\"from-azd\",\"expiresOn\":\"2099-01-01T00:00:00Z\"}'\n",
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&azd, std::fs::Permissions::from_mode(0o755)).unwrap();
            tools
        }

        fn with(
            vars: &[(&str, String)],
            tools: &FakeTool,
            options: DefaultCredentialBuilder,
        ) -> DefaultCredential {
            from_with(vars, options, Some(tools.search_path())).unwrap()
        }

        fn cli() -> DefaultCredentialBuilder {
            DefaultCredential::builder().azure_cli(AzureCliCredential::new())
        }

        #[tokio::test]
        async fn several_user_assigned_identities_and_none_chosen_is_the_answer_not_the_developer()
        {
            let em = Emulator::start().await;
            em.assign_managed_identity(ManagedIdentity::user_assigned("a"));
            em.assign_managed_identity(ManagedIdentity::user_assigned("b"));
            let tools = signed_in();
            let c = with(&[imds(&em)], &tools, cli());
            let e = token(&c).await.unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
            assert!(
                e.message().contains("ManagedIdentityCredential")
                    && e.message().contains("several user-assigned identities"),
                "{e}"
            );
            assert!(!tools.ran(), "az ran");
        }

        #[tokio::test]
        async fn a_host_without_an_identity_falls_through_to_the_tools_asked_for() {
            let tools = signed_in();
            // Not asked for: never used.
            let e = token(&with(&[nowhere()], &tools, DefaultCredential::builder()))
                .await
                .unwrap_err();
            assert!(!e.message().contains("AzureCliCredential"), "{e}");
            assert!(!tools.ran());
            // Asked for: used when no managed identity answers, and remembered.
            let c = with(&[nowhere()], &tools, cli());
            assert_eq!(token(&c).await.unwrap().secret(), "from-az");
            assert_eq!(c.chosen(), Some("AzureCliCredential"));
            // A host with IMDS but no identity assigned has no identity either.
            let em = Emulator::start().await;
            let c = with(
                &[imds(&em)],
                &tools,
                DefaultCredential::builder()
                    .azure_developer_cli(AzureDeveloperCliCredential::new()),
            );
            assert_eq!(token(&c).await.unwrap().secret(), "from-azd");
        }

        #[tokio::test]
        async fn dev_uses_the_cli_even_where_imds_answers() {
            let em = Emulator::start().await;
            em.assign_managed_identity(ManagedIdentity::system_assigned());
            let tools = signed_in();
            let c = with(
                &[imds(&em), (TOKEN_CREDENTIALS, "dev".to_owned())],
                &tools,
                DefaultCredential::builder(),
            );
            assert_eq!(token(&c).await.unwrap().secret(), "from-az");
            assert!(em.managed_identity_request_log().is_empty());
        }

        #[tokio::test]
        async fn an_imds_address_that_never_answers_does_not_hold_the_chain() {
            // Connections are accepted by the kernel and never answered.
            let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let host = (
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                format!("http://{}", silent.local_addr().unwrap()),
            );
            let tools = signed_in();
            let c = with(&[host], &tools, cli());
            // Without the probe, the full retry schedule would run first (minutes).
            let t = tokio::time::timeout(std::time::Duration::from_secs(60), token(&c))
                .await
                .expect("the chain waited on the silent IMDS address")
                .unwrap();
            assert_eq!(t.secret(), "from-az");
        }
    }
}
