//! [`ManagedIdentityCredential`]: tokens for the managed identity of the Azure host this runs
//! on, from whichever endpoint the platform provides.

mod app_service;
mod arc;
mod claims;
mod cloud_shell;
mod default_transport;
mod imds;
#[cfg(feature = "reqwest")]
mod pinned_tls;
mod probe;
mod response;
mod retry;
mod secret_get;
mod service_fabric;
mod source;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use ::http::StatusCode;
use futures::future::BoxFuture;
use tokio::time::Instant;

use self::claims::{Asked, IssuedTokens};
use self::default_transport::{IMDS_CONNECT_TIMEOUT, default_transport};
use self::response::{ErrorBody, parse_token};
use self::retry::RetryPolicy;
use self::source::{OTHER_SOURCES, Source};
use crate::credential::env::Lookup;
use crate::credential::{Credential, TokenRequest};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;
use crate::transport::{
    BufferedResponse, TokenTransport, Transport, TransportChoice, is_not_connected, retry_after,
};

/// Which user-assigned managed identity to use, by any of its ids.
///
/// Find them with `az identity show -g <group> -n <name>` (`clientId`, `principalId`, `id`).
#[derive(Clone, PartialEq, Eq)]
pub enum ManagedIdentityId {
    /// The client (application) id: `az identity show … --query clientId`.
    ClientId(String),
    /// The object (principal) id of its service principal: `… --query principalId`.
    ObjectId(String),
    /// Its Azure resource id, `/subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>`.
    ResourceId(String),
}

impl ManagedIdentityId {
    fn describe(&self) -> String {
        match self {
            ManagedIdentityId::ClientId(v) => format!("with client id {v}"),
            ManagedIdentityId::ObjectId(v) => format!("with object id {v}"),
            ManagedIdentityId::ResourceId(v) => format!("with resource id {v}"),
        }
    }
}

impl fmt::Debug for ManagedIdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids, not secrets: shown so that a log says which identity was asked for.
        match self {
            ManagedIdentityId::ClientId(v) => f.debug_tuple("ClientId").field(v).finish(),
            ManagedIdentityId::ObjectId(v) => f.debug_tuple("ObjectId").field(v).finish(),
            ManagedIdentityId::ResourceId(v) => f.debug_tuple("ResourceId").field(v).finish(),
        }
    }
}

/// Gets tokens for the managed identity of the Azure host it runs on: no secret, no
/// certificate, nothing to rotate.
///
/// The endpoint is detected from the environment, in the Azure SDKs' order:
///
/// | variables | source | request |
/// |---|---|---|
/// | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` + `IDENTITY_SERVER_THUMBPRINT` | Service Fabric | api-version 2019-07-01-preview, header `secret`, the server certificate pinned by the thumbprint |
/// | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` | App Service, Functions, Container Apps | api-version 2019-08-01, header `X-IDENTITY-HEADER` |
/// | `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT` | Azure Arc | api-version 2019-11-01, `Metadata: true`, the agent's key-file challenge |
/// | `MSI_ENDPOINT` (+ `MSI_SECRET`: App Service's 2017 API) | Cloud Shell | `POST`, `Metadata: true` |
/// | none of these | IMDS (VMs, scale sets, AKS) | `http://169.254.169.254` (or `AZURE_POD_IDENTITY_AUTHORITY_HOST`), api-version 2018-02-01, `Metadata: true` |
///
/// A half-set environment (say `IDENTITY_HEADER` without `IDENTITY_ENDPOINT`) is a
/// [`Configuration`](TokenErrorKind::Configuration) error when the credential is built, and so
/// is an endpoint a secret should not travel to: Service Fabric's over plain http, or an App
/// Service, Azure Arc or `MSI_SECRET` endpoint over plain http on a host that is neither this
/// machine nor a link-local or private address.
///
/// The scope's `/.default` is dropped to make the `resource` these endpoints take. Following
/// Microsoft's guidance for IMDS, answers 404, 410 (IMDS upgrading: retried for about 70 s),
/// 429 and 5xx are retried with exponential backoff; others fail at once with a typed error
/// that says how to fix them ("Identity not found": assign the identity, or pass the right
/// [`ManagedIdentityId`]). Off Azure, the first IMDS request fails fast (with the default
/// transport, a 1 s connect timeout) with a `Configuration` error that names the variables that
/// would select another source. The endpoints are reached directly (the default transport
/// ignores `HTTP_PROXY`), never following a redirect; requests go through the crate's transport
/// (see [`transport`](ManagedIdentityCredentialBuilder::transport)).
///
/// Claims (a Continuous Access Evaluation challenge) are handled as MSAL handles them: App
/// Service and Service Fabric are asked for a token in place of the refused one (the client
/// capabilities as `xms_cc`, the refused token's SHA-256 as `token_sha256_to_refresh`); an
/// answer with the refused token again, or a challenge to IMDS, Azure Arc, Cloud Shell or App
/// Service's 2017 API (whose endpoints take no such request), is an
/// [`Authentication`](TokenErrorKind::Authentication) error, never a token passed off as
/// carrying the claims. Client capabilities alone are no challenge.
///
/// ```no_run
/// use tower_entra::{ManagedIdentityCredential, ManagedIdentityId, TokenProvider};
///
/// // The host's system-assigned identity.
/// let system = ManagedIdentityCredential::new()?;
/// // A user-assigned identity.
/// let worker = ManagedIdentityCredential::user_assigned(ManagedIdentityId::ClientId(
///     "00000000-0000-0000-0000-000000000001".into(),
/// ))?;
/// let provider = TokenProvider::new(worker, "https://management.azure.com/.default")?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
///
/// Cheap to clone; `Debug` shows the source and endpoint, never the identity header.
#[derive(Clone)]
pub struct ManagedIdentityCredential {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    id: Option<ManagedIdentityId>,
    transport: Transport,
    retry: RetryPolicy,
    arc_key_directory: Option<PathBuf>,
    /// Whether the endpoint has answered once: until then, nothing listening at IMDS's address
    /// means this is not an Azure host, not a passing failure.
    answered: AtomicBool,
    /// Inside a chain: IMDS is probed before the first request (see `probe`).
    probe: bool,
    /// The hash of the last token per resource, for a claims challenge's refresh.
    issued: IssuedTokens,
}

impl ManagedIdentityCredential {
    /// The host's system-assigned identity, from the endpoint the environment selects.
    pub fn new() -> Result<Self, TokenError> {
        Self::builder().build()
    }

    /// A user-assigned identity of the host, from the endpoint the environment selects.
    pub fn user_assigned(id: ManagedIdentityId) -> Result<Self, TokenError> {
        Self::builder().user_assigned(id).build()
    }

    /// A builder, to choose the identity, read the configuration from elsewhere than the
    /// process environment, or tune timeouts and retries.
    pub fn builder() -> ManagedIdentityCredentialBuilder {
        ManagedIdentityCredentialBuilder {
            id: None,
            lookup: None,
            timeout: crate::transport::DEFAULT_TIMEOUT,
            transport: TransportChoice::Default,
            retry: RetryPolicy::default(),
            arc_key_directory: arc::default_key_directory(),
            probe: false,
        }
    }

    /// The detected source's name (`IMDS`, `App Service`, `Azure Arc`, `Service Fabric`,
    /// `Cloud Shell`), for logs.
    pub fn source_name(&self) -> &'static str {
        self.inner.source.name()
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let resource = resource(request.scope)?;
        let inner = &*self.inner;
        if let Source::Imds { url } = &inner.source
            && inner.probe
            && !inner.answered.load(Ordering::Relaxed)
        {
            probe::probe(&inner.transport, url).await?;
            inner.answered.store(true, Ordering::Relaxed);
        }
        let asked = Asked::read(request.claims);
        if asked.challenge && !claims::can_refresh(&inner.source) {
            return Err(claims::cannot_honour(&inner.source));
        }
        // What App Service and Service Fabric take instead of claims (MSAL's query): the
        // capabilities, and on a challenge the hash of the token to replace.
        let mut query: Vec<(&str, String)> = Vec::new();
        let refused = asked
            .challenge
            .then(|| inner.issued.last(resource))
            .flatten();
        if claims::can_refresh(&inner.source) {
            query.extend(asked.capabilities.map(|c| ("xms_cc", c)));
            query.extend(refused.clone().map(|h| ("token_sha256_to_refresh", h)));
        }
        let token = self.fetch_with(resource, &query).await?;
        let hash = claims::sha256_hex(token.secret());
        if refused.as_ref() == Some(&hash) {
            return Err(TokenError::new(
                TokenErrorKind::Authentication,
                format!(
                    "the API asked for a token with claims (a Continuous Access Evaluation challenge), and {} answered the refused token again; it is not stored as if it carried them",
                    inner.source.name()
                ),
            ));
        }
        inner.issued.record(resource, hash);
        Ok(token)
    }

    /// Asks the source for a token for `resource`, with `query` added, retrying as the policy
    /// says.
    async fn fetch_with(
        &self,
        resource: &str,
        query: &[(&str, String)],
    ) -> Result<AccessToken, TokenError> {
        let inner = &*self.inner;
        let started = Instant::now();
        let mut retries = 0;
        loop {
            let sent = Instant::now();
            let wall = SystemTime::now();
            let (status, retry_after, error) = match self.exchange(resource, query).await {
                Ok(answer) if answer.status.is_success() => {
                    return parse_token(&answer.body, sent, wall);
                }
                Ok(answer) => (
                    Some(answer.status),
                    retry_after(&answer.headers),
                    self.error(&answer, resource),
                ),
                Err(e) if is_not_connected(&e) && !inner.answered.load(Ordering::Relaxed) => {
                    return Err(self.unreachable(e));
                }
                Err(e) if e.is_transient() => (None, None, e),
                Err(e) => return Err(e),
            };
            let delay = inner.retry.next_delay(
                retries,
                started.elapsed(),
                status,
                retry_after,
                fastrand::f64(),
            );
            let Some(delay) = delay else {
                // This policy is the one for managed identity requests: the provider's fetch
                // does not retry on top of it (see `retry`).
                return Err(error.with_retries_spent());
            };
            retries += 1;
            tracing::debug!(
                source = inner.source.name(),
                retries,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "managed identity request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One request to the source (two for Azure Arc's challenge).
    async fn exchange(
        &self,
        resource: &str,
        query: &[(&str, String)],
    ) -> Result<BufferedResponse, TokenError> {
        let inner = &*self.inner;
        let id = inner.id.as_ref();
        let request = match &inner.source {
            Source::Imds { url } => imds::request(url, resource, id)?,
            Source::AppService { url, header } => {
                app_service::request(url, header, false, resource, id, query)?
            }
            Source::MachineLearning {
                url,
                secret,
                default_client_id,
            } => {
                // The system-assigned identity is asked for by the compute's default client id.
                let default = default_client_id.clone().map(ManagedIdentityId::ClientId);
                app_service::request(url, secret, true, resource, id.or(default.as_ref()), query)?
            }
            Source::Arc { url } => arc::request(url, resource, None)?,
            Source::ServiceFabric { url, header, .. } => {
                service_fabric::request(url, header, resource, id, query)?
            }
            Source::CloudShell { url } => cloud_shell::request(url, resource)?,
        };
        let answer = inner.transport.send(request).await?;
        inner.answered.store(true, Ordering::Relaxed);
        match &inner.source {
            Source::Arc { url } if answer.status == StatusCode::UNAUTHORIZED => {
                let key = arc::challenge_key(&answer, inner.arc_key_directory.as_deref()).await?;
                inner
                    .transport
                    .send(arc::request(url, resource, Some(&key))?)
                    .await
            }
            _ => Ok(answer),
        }
    }

    /// The error of a non-2xx answer, typed and with the fix where one is known.
    fn error(&self, answer: &BufferedResponse, resource: &str) -> TokenError {
        let source = &self.inner.source;
        let name = source.name();
        let status = answer.status.as_u16();
        let body = ErrorBody::parse(&answer.body);
        let said = body.summary();
        let which = match &self.inner.id {
            Some(id) => format!("user-assigned managed identity {}", id.describe()),
            None => "system-assigned managed identity".to_owned(),
        };
        let configuration = |fix: String| {
            TokenError::configuration(format!("{name} answered HTTP {status} ({said}): {fix}"))
        };
        if body.says("multiple user assigned identities") {
            return configuration(
                "several user-assigned identities are assigned to this host and none was chosen; use ManagedIdentityCredential::user_assigned(ManagedIdentityId::ClientId(..)) with one of them (DefaultCredential: set AZURE_CLIENT_ID)".to_owned(),
            );
        }
        if body.says("identity not found")
            || body.says("unable to load the proper managed identity")
            || body.says("managedidentitynotfound")
        {
            let message = format!(
                "{name} answered HTTP {status} ({said}): this host has no {which}; {}",
                assign_hint(source, self.inner.id.is_some())
            );
            // No identity at all is a host this credential cannot work on; a user-assigned
            // identity that was named but is not there is a misconfiguration.
            return match self.inner.id {
                None => TokenError::unavailable(message),
                Some(_) => TokenError::configuration(message),
            };
        }
        if body.says("invalid_resource") || body.says("AADSTS500011") {
            return TokenError::new(
                TokenErrorKind::InvalidScope,
                format!(
                    "{name} answered HTTP {status} ({said}): the resource {resource} is unknown in the identity's tenant; check the scope"
                ),
            );
        }
        match source {
            Source::AppService { .. } | Source::ServiceFabric { .. }
                if matches!(status, 401 | 403) =>
            {
                return configuration(
                    "the endpoint refused IDENTITY_HEADER; it is set by the platform for this process, so make sure nothing overrides it, and restart the app if the identity was just enabled".to_owned(),
                );
            }
            Source::MachineLearning { .. } if matches!(status, 401 | 403) => {
                return configuration(
                    "the endpoint refused MSI_SECRET; it is set by Azure Machine Learning for this job, so make sure nothing overrides it".to_owned(),
                );
            }
            _ => {}
        }
        let kind = if retry::is_retryable(answer.status) {
            TokenErrorKind::Transient
        } else if matches!(status, 401 | 403) {
            TokenErrorKind::Authentication
        } else {
            TokenErrorKind::Rejected
        };
        TokenError::new(kind, format!("{name} answered HTTP {status} ({said})"))
            .with_retry_after(retry_after(&answer.headers))
    }

    /// Nothing listens at the endpoint, and nothing ever answered there.
    fn unreachable(&self, e: TokenError) -> TokenError {
        let source = &self.inner.source;
        let message = match source {
            Source::Imds { url } => format!(
                "no managed identity endpoint answered: nothing accepted a connection at IMDS ({}) within {IMDS_CONNECT_TIMEOUT:?}, so this is probably not an Azure VM, scale set or AKS node; elsewhere {OTHER_SOURCES}; off Azure use EnvironmentCredential, or AzureCliCredential on a developer machine",
                url.origin().ascii_serialization()
            ),
            other => format!(
                "no managed identity endpoint answered: nothing accepted a connection at the {} endpoint {}; check the variable that names it",
                other.name(),
                other.url().origin().ascii_serialization()
            ),
        };
        let error = match source {
            Source::Imds { .. } => TokenError::unavailable(message),
            // The platform's variables name an endpoint that is not there: broken, not absent.
            _ => TokenError::configuration(message),
        };
        error.with_source(e)
    }
}

/// How to assign an identity where `source` runs.
fn assign_hint(source: &Source, user_assigned: bool) -> String {
    let identities = if user_assigned {
        " --identities <the identity's resource id>"
    } else {
        ""
    };
    let pass = if user_assigned {
        ", or pass the id of an identity assigned to it"
    } else {
        ", or pass the id of the user-assigned identity to use (ManagedIdentityCredential::user_assigned)"
    };
    match source {
        Source::Imds { .. } => format!(
            "assign it with `az vm identity assign -g <group> -n <vm>{identities}` (`az vmss identity assign` for a scale set; on AKS, the node pool's kubelet identity){pass}"
        ),
        Source::AppService { .. } => format!(
            "assign it with `az webapp identity assign -g <group> -n <app>{identities}` (`az functionapp identity assign`, `az containerapp identity assign`){pass}"
        ),
        Source::Arc { .. } => "enable the server's identity by connecting it with `azcmagent connect`".to_owned(),
        Source::ServiceFabric { .. } => "assign it in the application manifest's ManagedIdentity settings and the cluster's ARM template".to_owned(),
        Source::CloudShell { .. } => "Cloud Shell serves the signed-in user's identity only".to_owned(),
        Source::MachineLearning { .. } => format!(
            "assign it to the compute with `az ml compute update -n <compute> --identity-type SystemAssigned` (or UserAssigned with --user-assigned-identities); DEFAULT_IDENTITY_CLIENT_ID names the compute's default identity{pass}"
        ),
    }
}

/// `<resource>/.default` as the `resource` managed identity endpoints take.
fn resource(scope: &str) -> Result<&str, TokenError> {
    let scope = scope.trim();
    match scope.strip_suffix("/.default") {
        Some(resource) if !resource.is_empty() && !resource.contains(char::is_whitespace) => {
            Ok(resource)
        }
        _ => Err(TokenError::new(
            TokenErrorKind::InvalidScope,
            format!(
                "a managed identity token is for one resource: use its scope `<resource>/.default` (e.g. https://management.azure.com/.default), not {scope:?}"
            ),
        )),
    }
}

impl Credential for ManagedIdentityCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        // A managed identity lives in one tenant: asked for another, it refuses rather than
        // answer with a token of its own.
        if let Some(tenant) = request.tenant {
            let refusal = crate::credential::tenants::only_own_tenant("a managed identity", tenant);
            return Box::pin(async move { Err(refusal) });
        }
        Box::pin(self.fetch(request))
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        Err(crate::credential::tenants::only_own_tenant(
            "a managed identity",
            tenant,
        ))
    }

    /// The longest one call takes: every attempt its retry policy allows, each bounded by the
    /// request timeout (two requests for Azure Arc's challenge), and the waits between them.
    fn timeout(&self) -> Option<Duration> {
        let inner = &*self.inner;
        let requests_per_attempt = match inner.source {
            Source::Arc { .. } => 2,
            _ => 1,
        };
        Some(
            inner.retry.longest(
                inner
                    .transport
                    .timeout()
                    .saturating_mul(requests_per_attempt),
            ),
        )
    }

    /// The platform already caches managed identity tokens on each host, and anyone reaching
    /// the endpoint gets them: no shared cache.
    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        crate::shared_cache::CacheBinding::refused(
            "managed identity (its endpoint caches tokens on each host already)",
        )
    }
}

impl fmt::Debug for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentityCredential")
            .field("source", &self.inner.source)
            .field("id", &self.inner.id)
            .field("transport", &self.inner.transport)
            .finish()
    }
}

/// Builds a [`ManagedIdentityCredential`].
///
/// ```
/// use std::time::Duration;
/// use tower_entra::{ManagedIdentityCredential, ManagedIdentityId};
///
/// let credential = ManagedIdentityCredential::builder()
///     .user_assigned(ManagedIdentityId::ClientId("00000000-0000-0000-0000-000000000001".into()))
///     .timeout(Duration::from_secs(10))
///     .build()?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
pub struct ManagedIdentityCredentialBuilder {
    id: Option<ManagedIdentityId>,
    lookup: Option<Lookup>,
    timeout: Duration,
    transport: TransportChoice,
    retry: RetryPolicy,
    arc_key_directory: Option<PathBuf>,
    probe: bool,
}

impl ManagedIdentityCredentialBuilder {
    /// Use this user-assigned identity instead of the system-assigned one.
    pub fn user_assigned(mut self, id: ManagedIdentityId) -> Self {
        self.id = Some(id);
        self
    }

    /// Read the variables that select the source (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`, ...,
    /// see [`ManagedIdentityCredential`]) through `lookup` instead of the process environment:
    /// for configuration held elsewhere, or tests against an emulator.
    ///
    /// ```
    /// use tower_entra::ManagedIdentityCredential;
    ///
    /// let credential = ManagedIdentityCredential::builder()
    ///     .environment(|name| (name == "AZURE_POD_IDENTITY_AUTHORITY_HOST").then(|| "http://127.0.0.1:8080".to_owned()))
    ///     .build()?;
    /// assert_eq!(credential.source_name(), "IMDS");
    /// # Ok::<(), tower_entra::TokenError>(())
    /// ```
    pub fn environment(
        self,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.lookup(Lookup::new(lookup))
    }

    /// Read the variables through `lookup` (a chain passes its own on).
    pub(crate) fn lookup(mut self, lookup: Lookup) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// The bound on one request to the endpoint. Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The transport for the requests to the managed identity endpoint: any `tower::Service`
    /// that takes an `http::Request<http_body_util::Full<bytes::Bytes>>`
    /// ([`TransportRequest`](crate::TransportRequest)) and answers an `http::Response<B>` with
    /// `B: http_body::Body`, as for
    /// [`ConfidentialClientCredentialBuilder::transport`](crate::ConfidentialClientCredentialBuilder::transport),
    /// with the same guarantees around it (a 3xx is an error and never followed, the answer is
    /// bounded and zeroed when dropped, each exchange is bounded by [`timeout`](Self::timeout),
    /// the telemetry headers are sent).
    ///
    /// Default: with the `reqwest` feature, a reqwest client that never uses a proxy, connects
    /// to IMDS within a second (so that off Azure the first request fails fast), and pins
    /// Service Fabric's certificate by `IDENTITY_SERVER_THUMBPRINT`; without that feature,
    /// `build()` is a [`Configuration`](TokenErrorKind::Configuration) error until a transport
    /// is given. Your service takes those jobs over: reach the endpoint directly (a proxy would
    /// see the identity header), give it a short connect timeout for IMDS, and for Service
    /// Fabric trust the endpoint's self-signed certificate by its thumbprint. A refused or
    /// unroutable connection (an `std::io::Error` of that kind in the service's error chain)
    /// before any answer is the "no managed identity endpoint answered" error.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use hyper_util::client::legacy::Client;
    /// use hyper_util::client::legacy::connect::HttpConnector;
    /// use hyper_util::rt::TokioExecutor;
    /// use std::time::Duration;
    /// use tower_entra::ManagedIdentityCredential;
    ///
    /// let mut http = HttpConnector::new();
    /// http.set_connect_timeout(Some(Duration::from_secs(1)));
    /// let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(http);
    /// let credential = ManagedIdentityCredential::builder()
    ///     .environment(|_| None) // IMDS
    ///     .transport(client)
    ///     .build()?;
    /// # Ok::<(), tower_entra::TokenError>(())
    /// ```
    pub fn transport(mut self, service: impl TokenTransport) -> Self {
        self.transport = TransportChoice::service(service);
        self
    }

    /// The first wait before a retry (each next one doubles, up to 16 s). Default 1 s, as
    /// Microsoft's guidance for IMDS has it.
    pub fn retry_backoff(mut self, initial: Duration) -> Self {
        self.retry.initial = initial;
        self.retry.max_delay = self.retry.max_delay.max(initial);
        self
    }

    /// Where Azure Arc key files may be read from (tests; the default is the agent's
    /// documented directory).
    #[cfg(all(test, feature = "reqwest"))]
    pub(crate) fn arc_key_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.arc_key_directory = Some(dir.into());
        self
    }

    /// Probe IMDS before the first request, as a member of a chain: a host without IMDS is
    /// [`Unavailable`](TokenErrorKind::Unavailable) within a second instead of holding the chain
    /// for the retry schedule. Once IMDS answered, requests are retried in full.
    pub(crate) fn probe_imds(mut self) -> Self {
        self.probe = true;
        self
    }

    /// Detects the source and builds the credential. A
    /// [`Configuration`](TokenErrorKind::Configuration) error names a half-set environment, a
    /// malformed endpoint, or an identity id the source cannot select by.
    pub fn build(self) -> Result<ManagedIdentityCredential, TokenError> {
        if self.timeout.is_zero() {
            return Err(TokenError::configuration(
                "the managed identity request timeout is zero; use a positive duration (the default is 30 s)",
            ));
        }
        let lookup = self.lookup.clone().unwrap_or_else(Lookup::process);
        let source = Source::detect(&lookup)?;
        check_id(&source, self.id.as_ref())?;
        let choice = match self.transport {
            TransportChoice::Default => default_transport(&source, self.timeout)?,
            given => given,
        };
        let transport = Transport::new(choice, self.timeout, source.url())?;
        Ok(ManagedIdentityCredential {
            inner: Arc::new(Inner {
                transport,
                source,
                id: self.id,
                retry: self.retry,
                arc_key_directory: self.arc_key_directory,
                answered: AtomicBool::new(false),
                probe: self.probe,
                issued: IssuedTokens::default(),
            }),
        })
    }
}

/// Refuses an identity id the source cannot select by, rather than getting a token for
/// another identity.
fn check_id(source: &Source, id: Option<&ManagedIdentityId>) -> Result<(), TokenError> {
    let Some(id) = id else { return Ok(()) };
    let empty = match id {
        ManagedIdentityId::ClientId(v)
        | ManagedIdentityId::ObjectId(v)
        | ManagedIdentityId::ResourceId(v) => v.trim().is_empty(),
    };
    if empty {
        return Err(TokenError::configuration(
            "the user-assigned managed identity id is empty; use the identity's client id, object id or resource id (`az identity show -g <group> -n <name>`)",
        ));
    }
    let refusal = match (source, id) {
        (Source::Arc { .. }, _) => Some(
            "Azure Arc serves only the server's system-assigned identity; use ManagedIdentityCredential::new()",
        ),
        (Source::CloudShell { .. }, _) => Some(
            "Cloud Shell serves only the signed-in user's identity; use ManagedIdentityCredential::new()",
        ),
        (Source::ServiceFabric { .. }, ManagedIdentityId::ClientId(_)) => Some(
            "Service Fabric selects a user-assigned identity by object id or resource id, not client id",
        ),
        (
            Source::MachineLearning { .. },
            ManagedIdentityId::ObjectId(_) | ManagedIdentityId::ResourceId(_),
        ) => Some(
            "Azure Machine Learning (MSI_ENDPOINT, MSI_SECRET) selects a user-assigned identity by client id only",
        ),
        _ => None,
    };
    match refusal {
        Some(why) => Err(TokenError::configuration(why)),
        None => Ok(()),
    }
}

impl fmt::Debug for ManagedIdentityCredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentityCredentialBuilder")
            .field("id", &self.id)
            .field(
                "environment",
                &if self.lookup.is_some() {
                    "caller's lookup"
                } else {
                    "process"
                },
            )
            .field("timeout", &self.timeout)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "reqwest"))]
mod tests;
