//! Credentials: how this app proves who it is to Entra.
//!
//! A [`Credential`] asks Entra for a new token each time it is called; caching, single-flight
//! and refresh belong to [`TokenProvider`](crate::TokenProvider).

#[cfg(feature = "certificate")]
mod assertion;
mod authentication;
mod azure_cli;
mod azure_developer_cli;
#[cfg(feature = "certificate")]
mod certificate;
#[cfg(feature = "certificate")]
mod certificate_key;
mod chained;
mod client;
mod client_assertion;
mod client_secret;
mod confidential;
mod default;
mod developer_tool;
mod env;
mod environment;
mod managed_identity;
mod rotation;
pub(crate) mod tenants;
mod token_proxy;
mod workload_identity;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

#[cfg(feature = "certificate")]
pub use assertion::AssertionAlgorithm;
pub use authentication::ClientAuthentication;
pub use azure_cli::{AzureCliCredential, AzureCliCredentialBuilder};
pub use azure_developer_cli::{AzureDeveloperCliCredential, AzureDeveloperCliCredentialBuilder};
#[cfg(feature = "certificate")]
pub use certificate::{
    CertificateAssertion, ClientCertificateCredential, ClientCertificateCredentialBuilder,
};
#[cfg(feature = "certificate")]
pub use certificate_key::ClientCertificate;
pub use chained::ChainedCredential;
pub use client_assertion::{
    AssertionCallback, ClientAssertionCredential, ClientAssertionCredentialBuilder,
};
pub use client_secret::{ClientSecret, ClientSecretCredential, ClientSecretCredentialBuilder};
pub use confidential::{ConfidentialClientCredential, ConfidentialClientCredentialBuilder};
pub use default::{DefaultCredential, DefaultCredentialBuilder};
pub use environment::EnvironmentCredential;
pub use managed_identity::{
    ManagedIdentityCredential, ManagedIdentityCredentialBuilder, ManagedIdentityId,
};
pub use workload_identity::{
    FederatedTokenFile, WorkloadIdentityCredential, WorkloadIdentityCredentialBuilder,
};

use crate::error::TokenError;
use crate::token::AccessToken;

/// What a token is requested for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRequest<'a> {
    /// The scope: `<application ID URI>/.default`.
    pub scope: &'a str,
    /// Extra claims to request (a JSON object; e.g. a Continuous Access Evaluation challenge).
    pub claims: Option<&'a str>,
    /// The tenant to get the token in (a GUID or a domain), when not the credential's own. A
    /// credential that cannot serve it must refuse with a
    /// [`TenantNotAllowed`](crate::TokenErrorKind::TenantNotAllowed) error, never answer with a
    /// token of its own tenant; see [`Credential::check_tenant`].
    pub tenant: Option<&'a str>,
}

impl<'a> TokenRequest<'a> {
    /// A request for `scope` with no extra claims.
    pub fn new(scope: &'a str) -> Self {
        TokenRequest {
            scope,
            claims: None,
            tenant: None,
        }
    }

    /// The same request for the tenant `tenant` (a GUID or a domain).
    pub fn for_tenant(mut self, tenant: &'a str) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// The same request with `claims` (a JSON object) added.
    pub fn with_claims(mut self, claims: &'a str) -> Self {
        self.claims = Some(claims);
        self
    }
}

/// Something that can get a new token from Entra.
///
/// Implement it for a credential this crate does not ship. `request_token` must send a new
/// request each time (no caching: [`TokenProvider`](crate::TokenProvider) does that), and its
/// `Debug` must not show secrets.
///
/// ```
/// use futures::future::BoxFuture;
/// use std::time::Duration;
/// use tower_entra::{AccessToken, Credential, TokenError, TokenRequest};
///
/// #[derive(Debug)]
/// struct Fixed;
///
/// impl Credential for Fixed {
///     fn request_token<'a>(
///         &'a self,
///         _request: TokenRequest<'a>,
///     ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
///         Box::pin(async { AccessToken::new("token-from-elsewhere", Duration::from_secs(3600)) })
///     }
/// }
/// ```
pub trait Credential: fmt::Debug + Send + Sync + 'static {
    /// Requests a new token.
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>>;

    /// The tenant and client ids, for tracing (never secrets). `None` if not applicable.
    fn identity(&self) -> Option<(&str, &str)> {
        None
    }

    /// The longest one call of [`request_token`](Self::request_token) takes (its request
    /// timeout), when the credential bounds it. A [`TokenProvider`](crate::TokenProvider) derives
    /// from it, the attempts and the backoff a deadline for each fetch: a fetch still running past
    /// it counts as dead (its task may sit on a runtime that is no longer driven), and the next
    /// caller starts a new one. `None` (the default) assumes 5 minutes.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// What a [shared token cache](crate::SharedTokenCache) binds this credential's entries to
    /// and derives their keys from (feature `shared-cache`): its authority, tenant and client,
    /// and its secret (a client secret, a certificate's private key). Only this crate's
    /// credentials say more than the default, which knows nothing: a provider with a shared
    /// cache then takes the [`identity`](Self::identity) and needs an
    /// [`EncryptionKey`](crate::EncryptionKey). A credential that wraps another returns the
    /// other's.
    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        crate::shared_cache::CacheBinding::unknown()
    }

    /// Whether this credential gets tokens in `tenant` (a GUID or a domain) when a
    /// [`TokenRequest`] names it, checked before anything is sent; a
    /// [`TenantNotAllowed`](crate::TokenErrorKind::TenantNotAllowed) error says why not.
    ///
    /// The default serves only the tenant [`identity`](Self::identity) names: a custom
    /// credential that can serve others overrides this, and must then honour
    /// [`TokenRequest::tenant`]. The credentials of this crate with a client secret,
    /// certificate, assertion or federated token (and the Azure CLI) serve the tenants of their
    /// `additionally_allowed_tenants` and `AZURE_ADDITIONALLY_ALLOWED_TENANTS`; managed
    /// identity serves only its own.
    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        match self.identity() {
            Some((home, _)) if home.eq_ignore_ascii_case(tenant) => Ok(()),
            _ => Err(tenants::only_own_tenant("this credential", tenant)),
        }
    }
}

/// A shared credential is a credential: one app's credential behind several providers, or a
/// credential chosen at run time (`Arc<dyn Credential>`).
impl<C: Credential + ?Sized> Credential for Arc<C> {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        (**self).request_token(request)
    }

    fn identity(&self) -> Option<(&str, &str)> {
        (**self).identity()
    }

    fn timeout(&self) -> Option<Duration> {
        (**self).timeout()
    }

    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        (**self).cache_binding()
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        (**self).check_tenant(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shared_credential_answers_as_the_credential_it_shares() {
        // Offline: the callback's own error is the answer, so it shows which credential answered.
        let inner = client_assertion::tests::refusing("answered by the shared credential");
        let shared: Arc<dyn Credential> = Arc::new(inner);
        assert_eq!(shared.identity(), Some(("tenant", "client")));
        let e = shared
            .request_token(TokenRequest::new("api://x/.default"))
            .await
            .unwrap_err();
        assert_eq!(e.message(), "answered by the shared credential");
        // Where any credential goes, a shared one goes too.
        crate::provider::TokenProvider::new(shared.clone(), "api://x/.default").unwrap();
        crate::provider::TokenProvider::new(Arc::new(shared), "api://x/.default").unwrap();
    }
}
