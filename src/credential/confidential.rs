//! [`ConfidentialClientCredential`]: an app registration asking for tokens in its own name, with
//! one of the [`ClientAuthentication`] sources, and its one builder.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::credential::authentication::ClientAuthentication;
use crate::credential::client::{ConfidentialClient, ConfidentialClientOptions};
use crate::credential::{Credential, TokenRequest};
use crate::error::TokenError;
use crate::token::AccessToken;

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

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let proof = self.authentication.authenticate(&self.client).await?;
        self.client.request_token(request, proof).await
    }
}

impl<A: ClientAuthentication> Credential for ConfidentialClientCredential<A> {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(self.fetch(request))
    }

    fn identity(&self) -> Option<(&str, &str)> {
        self.client.identity()
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.client.timeout())
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
    pub(crate) fn authentication_mut(&mut self) -> &mut A {
        &mut self.authentication
    }

    /// The authority host: one of [`AuthorityHost`](crate::AuthorityHost)'s clouds or your own
    /// (`https`, or `http` only for a loopback emulator). Default: the public cloud.
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

    /// The HTTP client for token requests, as a `reqwest::ClientBuilder`: configure proxies, TLS
    /// roots, etc. on the builder.
    ///
    /// The credential always sets `.redirect(reqwest::redirect::Policy::none())` on it (a token
    /// endpoint never redirects, and following a 307/308 would re-send the client secret or
    /// assertion to the redirect target; a redirect is an
    /// [`InvalidResponse`](crate::TokenErrorKind::InvalidResponse) error) and a connect timeout
    /// (at most the request [`timeout`](Self::timeout), 10 s at most) before building it. If it
    /// cannot be built, `build()` returns a
    /// [`Configuration`](crate::TokenErrorKind::Configuration) error.
    pub fn http_client(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.options.http_client = Some(builder);
        self
    }

    /// Checks the settings and builds the credential. A
    /// [`Configuration`](crate::TokenErrorKind::Configuration) error names what is wrong: an
    /// empty secret or token file path, a malformed tenant or client id, an authority host that
    /// is not https, a zero timeout, an HTTP client that cannot be built.
    pub fn build(self) -> Result<ConfidentialClientCredential<A>, TokenError> {
        self.authentication.check()?;
        Ok(ConfidentialClientCredential {
            client: ConfidentialClient::new(&self.tenant_id, &self.client_id, self.options)?,
            authentication: self.authentication,
        })
    }
}
