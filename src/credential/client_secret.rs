//! [`ClientSecretCredential`]: the app proves itself with a client secret.

use std::fmt;

use futures::future::BoxFuture;

use crate::credential::confidential_client_builder_methods;
use zeroize::Zeroizing;

use crate::credential::{
    ClientAuth, ConfidentialClient, ConfidentialClientOptions, Credential, TokenRequest,
};
use crate::error::TokenError;
use crate::token::AccessToken;

/// Authenticates with a client secret of an app registration.
///
/// Prefer a certificate in production; a secret is the quickest start. The secret is zeroed on
/// drop and never shown by `Debug`.
///
/// ```
/// use tower_entra::{AuthorityHost, ClientSecretCredential};
///
/// let credential = ClientSecretCredential::builder(
///     "contoso.onmicrosoft.com",
///     "00000000-0000-0000-0000-000000000001",
///     "the secret's Value",
/// )
/// .authority_host(AuthorityHost::AZURE_GOVERNMENT)
/// .timeout(std::time::Duration::from_secs(10))
/// .build()?;
/// assert!(!format!("{credential:?}").contains("Value"));
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
#[derive(Clone)]
pub struct ClientSecretCredential {
    client: ConfidentialClient,
    secret: Zeroizing<String>,
}

impl ClientSecretCredential {
    /// A credential for the public cloud with the default timeout (30 s).
    ///
    /// Fails on a malformed tenant or client id or an empty secret.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Result<Self, TokenError> {
        Self::builder(tenant_id, client_id, client_secret).build()
    }

    /// A builder, to set the cloud, the timeout or the HTTP client.
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> ClientSecretCredentialBuilder {
        ClientSecretCredentialBuilder {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            secret: Zeroizing::new(client_secret.into()),
            options: ConfidentialClientOptions::default(),
        }
    }
}

impl Credential for ClientSecretCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(
            self.client
                .request_token(request, ClientAuth::Secret(&self.secret)),
        )
    }

    fn identity(&self) -> Option<(&str, &str)> {
        self.client.identity()
    }
}

impl fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client
            .debug_struct(f, "ClientSecretCredential")
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// Builds a [`ClientSecretCredential`].
pub struct ClientSecretCredentialBuilder {
    tenant_id: String,
    client_id: String,
    secret: Zeroizing<String>,
    options: ConfidentialClientOptions,
}

impl ClientSecretCredentialBuilder {
    confidential_client_builder_methods!();

    /// Checks the settings and builds the credential.
    pub fn build(self) -> Result<ClientSecretCredential, TokenError> {
        if self.secret.trim().is_empty() {
            return Err(TokenError::configuration(
                "the client secret is empty; use the Value of a client secret from the app registration's Certificates & secrets page",
            ));
        }
        Ok(ClientSecretCredential {
            client: ConfidentialClient::new(&self.tenant_id, &self.client_id, self.options)?,
            secret: self.secret,
        })
    }
}

impl fmt::Debug for ClientSecretCredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretCredentialBuilder")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("options", &self.options)
            .finish()
    }
}
