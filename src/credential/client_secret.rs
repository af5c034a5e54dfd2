//! [`ClientSecretCredential`]: the app proves itself with a client secret.

use std::fmt;
use std::future::ready;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use crate::credential::authentication::private::Authenticate;
use crate::credential::authentication::{ClientAuthentication, ClientProof};
use crate::credential::client::ConfidentialClient;
use crate::credential::{ConfidentialClientCredential, ConfidentialClientCredentialBuilder};
use crate::error::TokenError;

/// Authenticates with a client secret of an app registration.
///
/// `ClientSecretCredential::new(tenant_id, client_id, secret)` is a credential for the public
/// cloud with the default timeout; [`builder`](ConfidentialClientCredential::builder) with the
/// same arguments sets the cloud, the timeout or the HTTP client. Building fails on a malformed
/// tenant or client id or an empty secret.
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
pub type ClientSecretCredential = ConfidentialClientCredential<ClientSecret>;

/// Builds a [`ClientSecretCredential`].
pub type ClientSecretCredentialBuilder = ConfidentialClientCredentialBuilder<ClientSecret>;

/// A client secret's Value: the [`ClientAuthentication`] of a [`ClientSecretCredential`]. Zeroed
/// on drop; `Debug` shows `<redacted>`.
#[derive(Clone)]
pub struct ClientSecret(Zeroizing<String>);

impl<S: Into<String>> From<S> for ClientSecret {
    fn from(secret: S) -> Self {
        ClientSecret(Zeroizing::new(secret.into()))
    }
}

impl ClientAuthentication for ClientSecret {}

impl Authenticate for ClientSecret {
    fn check(&self) -> Result<(), TokenError> {
        if self.0.trim().is_empty() {
            return Err(TokenError::configuration(
                "the client secret is empty; use the Value of a client secret from the app registration's Certificates & secrets page",
            ));
        }
        Ok(())
    }

    fn authenticate<'a>(
        &'a self,
        _client: &'a ConfidentialClient,
    ) -> BoxFuture<'a, Result<ClientProof<'a>, TokenError>> {
        Box::pin(ready(Ok(ClientProof::Secret(&self.0))))
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}
