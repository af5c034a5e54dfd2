//! [`ConfidentialClientCredential`]: an app registration asking for tokens in its own name, with
//! one of the [`ClientAuthentication`] sources, and its one builder.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::aadsts::is_credential_rotation_answer;
use crate::credential::authentication::ClientAuthentication;
use crate::credential::client::{ConfidentialClient, ConfidentialClientOptions};
use crate::credential::tenants::AllowedTenants;
use crate::credential::{Credential, TokenRequest};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;
use crate::transport::{TokenTransport, TransportChoice};

/// A confidential client (an app registration with its own credentials) that gets tokens with
/// the client credentials flow, proving itself with the source `A`.
///
/// Reached through the names of its sources:
/// [`ClientSecretCredential`](crate::ClientSecretCredential),
/// [`ClientCertificateCredential`](crate::ClientCertificateCredential),
/// [`ClientAssertionCredential`](crate::ClientAssertionCredential) and
/// [`WorkloadIdentityCredential`](crate::WorkloadIdentityCredential). Each token request asks
/// the source for a new proof (a secret, a newly signed assertion, the callback's or the file's
/// token) and POSTs it to `{authority host}/{tenant}/oauth2/v2.0/token`.
///
/// Cheap to clone; `Debug` shows the tenant, client id and token endpoint, never a secret.
#[derive(Clone)]
pub struct ConfidentialClientCredential<A> {
    client: ConfidentialClient,
    authentication: A,
}

impl<A> ConfidentialClientCredential<A> {
    /// The source of client authentication, for the accessors of one source.
    pub(crate) fn authentication(&self) -> &A {
        &self.authentication
    }
}

impl<A: ClientAuthentication> ConfidentialClientCredential<A> {
    /// A credential for the public cloud with the default timeout (30 s):
    /// [`builder`](Self::builder)`(..).build()`.
    ///
    /// Fails with a [`Configuration`](crate::TokenErrorKind::Configuration) error on a malformed
    /// tenant or client id, or a source that cannot work (an empty secret or token file path).
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        authentication: impl Into<A>,
    ) -> Result<Self, TokenError> {
        Self::builder(tenant_id, client_id, authentication).build()
    }

    /// A builder, to set the cloud, the timeout, the HTTP client, or the source's own settings.
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        authentication: impl Into<A>,
    ) -> ConfidentialClientCredentialBuilder<A> {
        ConfidentialClientCredentialBuilder {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            authentication: authentication.into(),
            options: ConfidentialClientOptions::default(),
        }
    }

    /// The longest one call of `request_token` takes: the source's work and the token request,
    /// twice when a source read from a file may ask again after a refusal.
    fn time_bound(&self) -> Duration {
        let request = self.client.timeout();
        let attempt = self
            .authentication
            .time_bound(request)
            .saturating_add(request);
        if self.authentication.may_reload() {
            attempt.saturating_mul(2)
        } else {
            attempt
        }
    }

    /// [`fetch`](Self::fetch) within [`time_bound`](Self::time_bound): whatever a source does
    /// (a blocking file read on a hung mount included) ends by the time the credential's
    /// timeout says, so a provider can tell a parked fetch from a slow one.
    async fn bounded_fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let bound = self.time_bound();
        match tokio::time::timeout(bound, self.fetch(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(TokenError::new(
                TokenErrorKind::Timeout,
                format!(
                    "the token request, with the work of its client authentication, did not finish within {bound:?}; raise the credential's timeout or check what the authentication waits on"
                ),
            )),
        }
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        // Nothing is sent for a tenant the allow-list does not hold.
        let client = self.client.for_request(&request)?;
        let proof = self.authentication.authenticate(&client).await?;
        match client.request_token(request, proof).await {
            // The secret or certificate may have been rotated, its file updated and the old
            // one removed before the file's next check: read it now and, if it changed, ask
            // once more, so that callers see no error for a rotation.
            Err(e)
                if e.entra().is_some_and(is_credential_rotation_answer)
                    && self.authentication.reload_after_refusal().await =>
            {
                tracing::info!(
                    code = ?e.entra().map(|entra| entra.codes()),
                    "Entra refused the credential, and its file holds a new one: asking again with it"
                );
                let proof = self.authentication.authenticate(&client).await?;
                client.request_token(request, proof).await
            }
            answer => answer,
        }
    }
}

impl<A: ClientAuthentication> Credential for ConfidentialClientCredential<A> {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(self.bounded_fetch(request))
    }

    fn identity(&self) -> Option<(&str, &str)> {
        self.client.identity()
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.time_bound())
    }

    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        crate::shared_cache::CacheBinding::confidential(
            self.client.token_url().as_str(),
            self.client.tenant_id(),
            self.client.client_id(),
            self.authentication.cache_secret(),
        )
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        self.client.check_tenant(tenant)
    }
}

impl<A: fmt::Debug> fmt::Debug for ConfidentialClientCredential<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfidentialClientCredential")
            .field("tenant_id", &self.client.tenant_id())
            .field("client_id", &self.client.client_id())
            .field("token_url", &self.client.token_url().as_str())
            .field("authentication", &self.authentication)
            .finish()
    }
}

/// Builds a [`ConfidentialClientCredential`]: the settings every source shares are here, a
/// source's own (such as [`send_certificate_chain`](Self::send_certificate_chain)) beside it.
///
/// Reached as [`ClientSecretCredentialBuilder`](crate::ClientSecretCredentialBuilder),
/// [`ClientCertificateCredentialBuilder`](crate::ClientCertificateCredentialBuilder),
/// [`ClientAssertionCredentialBuilder`](crate::ClientAssertionCredentialBuilder) and
/// [`WorkloadIdentityCredentialBuilder`](crate::WorkloadIdentityCredentialBuilder).
#[derive(Debug)]
pub struct ConfidentialClientCredentialBuilder<A> {
    tenant_id: String,
    client_id: String,
    authentication: A,
    options: ConfidentialClientOptions,
}

impl<A: ClientAuthentication> ConfidentialClientCredentialBuilder<A> {
    /// The source's own settings, for the builder methods of one source.
    #[cfg_attr(not(feature = "certificate"), allow(dead_code))]
    pub(crate) fn authentication_mut(&mut self) -> &mut A {
        &mut self.authentication
    }

    /// The authority host: a [`Cloud`](crate::Cloud)'s
    /// [`authority_host`](crate::Cloud::authority_host), or any other URL (`https`, or `http`
    /// only for a loopback emulator). Default: the public cloud.
    pub fn authority_host(mut self, host: impl Into<String>) -> Self {
        self.options.authority_host = host.into();
        self
    }

    /// The bound on one token request, connecting included; it also bounds the work done before
    /// it (an assertion callback). Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// The transport for token requests: any `tower::Service` that takes an
    /// `http::Request<http_body_util::Full<bytes::Bytes>>` ([`TransportRequest`](crate::TransportRequest))
    /// and answers an `http::Response<B>` with `B: http_body::Body` — a hyper-util client with
    /// your TLS set-up, a service with your proxy or tracing layers, a test double. Default: a
    /// reqwest 0.13 client with rustls (feature `reqwest`); without that feature a credential
    /// needs a transport, and `build()` says so.
    ///
    /// Whatever the service, the credential keeps its guarantees: a 3xx answer is an
    /// [`InvalidResponse`](crate::TokenErrorKind::InvalidResponse) error and is never followed
    /// (the service itself must not follow redirects: a followed 307/308 re-sends the form,
    /// secret included, to the redirect target), the answer is read into at most 1 MiB of
    /// memory that is zeroed when dropped, the whole exchange is bounded by
    /// [`timeout`](Self::timeout), and the request form lives in memory that is zeroed when the
    /// service drops it. Each request gets its own clone of the service, readied before it is
    /// called. Errors of the service or its body are
    /// [`Connection`](crate::TokenErrorKind::Connection) errors (or
    /// [`Timeout`](crate::TokenErrorKind::Timeout) when their chain says so), retried by the
    /// provider.
    ///
    /// Every request carries the telemetry headers Microsoft's own libraries send, so that Entra
    /// support can tell which library asked: `x-client-SKU: tower-entra`, `x-client-Ver` (this
    /// crate's version), `x-client-OS` (`std::env::consts::OS`) and
    /// `User-Agent: tower-entra/<version>`, beside `client-request-id` (a new UUID per request,
    /// which Entra logs as its correlation id).
    ///
    /// Replaces an earlier [`http_client`](Self::http_client) (the last call wins).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use hyper_util::client::legacy::Client;
    /// use hyper_util::rt::TokioExecutor;
    /// use tower_entra::ClientSecretCredential;
    ///
    /// let https = hyper_rustls::HttpsConnectorBuilder::new()
    ///     .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
    ///     .https_only()
    ///     .enable_http1()
    ///     .build();
    /// let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https);
    /// let credential = ClientSecretCredential::builder(
    ///     "contoso.onmicrosoft.com",
    ///     "00000000-0000-0000-0000-000000000001",
    ///     "the secret's Value",
    /// )
    /// .transport(client)
    /// .build()?;
    /// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// ```
    pub fn transport(mut self, service: impl TokenTransport) -> Self {
        self.options.transport = TransportChoice::service(service);
        self
    }

    /// The tenants besides its own that this credential may get tokens in, when a request names
    /// one ([`Tenant`](crate::Tenant), [`TokenProvider::for_tenant`](crate::TokenProvider::for_tenant),
    /// [`TokenRequest::tenant`]): each a GUID or a domain, or `"*"` for any tenant. A request
    /// for a tenant not listed is a [`TenantNotAllowed`](crate::TokenErrorKind::TenantNotAllowed)
    /// error, and nothing is sent. Default: none. The environment's credentials read
    /// `AZURE_ADDITIONALLY_ALLOWED_TENANTS` (names separated by `;`) into it.
    ///
    /// A request for another tenant goes to that tenant's token endpoint on the same authority
    /// host, with the same client id and credentials: the app must be multi-tenant and an
    /// administrator of that tenant must have consented to it. When the tenant is named by its
    /// GUID, the token's `tid` must name it too. A domain and its GUID are two names here:
    /// list the name your requests use.
    ///
    /// ```
    /// use tower_entra::ClientSecretCredential;
    ///
    /// let credential = ClientSecretCredential::builder(
    ///     "11111111-1111-1111-1111-111111111111",
    ///     "00000000-0000-0000-0000-000000000001",
    ///     "the secret's Value",
    /// )
    /// .additionally_allowed_tenants(["contoso.onmicrosoft.com", "fabrikam.onmicrosoft.com"])
    /// .build()?;
    /// # Ok::<(), tower_entra::TokenError>(())
    /// ```
    pub fn additionally_allowed_tenants<I>(mut self, tenants: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options.allowed_tenants = AllowedTenants::new(tenants);
        self
    }

    /// The allow-list as read from the environment.
    pub(crate) fn allowed_tenants(mut self, allowed: AllowedTenants) -> Self {
        self.options.allowed_tenants = allowed;
        self
    }

    /// The transport as a configuration (for `EnvironmentCredential`).
    pub(crate) fn transport_choice(mut self, choice: TransportChoice) -> Self {
        self.options.transport = choice;
        self
    }

    /// The HTTP client for token requests, as a `reqwest::ClientBuilder` (feature `reqwest`):
    /// configure proxies, TLS roots, etc. on the builder.
    ///
    /// The credential always sets `.redirect(reqwest::redirect::Policy::none())` on it (a token
    /// endpoint never redirects, and following a 307/308 would re-send the client secret or
    /// assertion to the redirect target; a redirect is an
    /// [`InvalidResponse`](crate::TokenErrorKind::InvalidResponse) error) and a connect timeout
    /// (at most the request [`timeout`](Self::timeout), 10 s at most) before building it. For a
    /// plain-http loopback authority (a local emulator) it also sets `.no_proxy()`: plain http
    /// through a proxy would hand the form, secret included, to the proxy in clear (https
    /// through a proxy stays a `CONNECT` tunnel, so the proxy sees only encrypted bytes). If it
    /// cannot be built, `build()` returns a
    /// [`Configuration`](crate::TokenErrorKind::Configuration) error.
    ///
    /// Replaces an earlier [`transport`](Self::transport) (the last call wins).
    #[cfg(feature = "reqwest")]
    pub fn http_client(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.options.transport = TransportChoice::Reqwest(Box::new(builder));
        self
    }

    /// Checks the settings and builds the credential. A
    /// [`Configuration`](crate::TokenErrorKind::Configuration) error names what is wrong: an
    /// empty secret or token file path, a malformed tenant or client id, an authority host that
    /// is not https, a zero timeout, an HTTP client that cannot be built, no transport (a build
    /// without the `reqwest` feature needs [`transport`](Self::transport)).
    pub fn build(mut self) -> Result<ConfidentialClientCredential<A>, TokenError> {
        self.authentication.check()?;
        self.options.transport = self
            .authentication
            .transport(std::mem::take(&mut self.options.transport))?;
        Ok(ConfidentialClientCredential {
            client: ConfidentialClient::new(&self.tenant_id, &self.client_id, self.options)?,
            authentication: self.authentication,
        })
    }
}
