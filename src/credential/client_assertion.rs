//! [`ClientAssertionCredential`]: the client assertion comes from the caller (federation).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use crate::credential::authentication::private::Authenticate;
use crate::credential::authentication::{ClientAuthentication, ClientProof, trim_in_place};
use crate::credential::client::ConfidentialClient;
use crate::credential::{ConfidentialClientCredential, ConfidentialClientCredentialBuilder};
use crate::error::{TokenError, TokenErrorKind};

type BoxError = Box<dyn StdError + Send + Sync>;
type Callback = dyn Fn() -> BoxFuture<'static, Result<String, BoxError>> + Send + Sync;

/// Authenticates with a client assertion your code provides: a token from another identity
/// provider that the app registration trusts through a federated identity credential (GitHub
/// Actions, Google Cloud, AWS, SPIFFE, another Entra tenant), or an assertion you sign yourself.
///
/// The callback runs once per token request (the [`TokenProvider`](crate::TokenProvider)
/// caches the access token, so that is rarely), and its assertion is sent as
/// `client_assertion` with the jwt-bearer type. If it fails, the token request fails with a
/// [`TokenErrorKind::Transient`] error (retried with backoff) carrying its message, or with the
/// callback's own [`TokenError`] if it returns one. The assertion never reaches `Debug`, logs
/// or errors.
///
/// `ClientAssertionCredential::new(tenant_id, client_id, callback)` is a credential for the
/// public cloud with the default timeout; [`builder`](ConfidentialClientCredential::builder)
/// with the same arguments sets the cloud, the timeout or the HTTP client.
///
/// For a token in a file (Kubernetes), use [`WorkloadIdentityCredential`](crate::WorkloadIdentityCredential).
///
/// ```
/// use tower_entra::ClientAssertionCredential;
///
/// let credential = ClientAssertionCredential::new(
///     "contoso.onmicrosoft.com",
///     "00000000-0000-0000-0000-000000000001",
///     || async {
///         // e.g. ask GitHub Actions' OIDC endpoint for a token with audience
///         // api://AzureADTokenExchange.
///         Ok::<_, std::io::Error>("eyJ...".to_owned())
///     },
/// )?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
pub type ClientAssertionCredential = ConfidentialClientCredential<AssertionCallback>;

/// Builds a [`ClientAssertionCredential`].
pub type ClientAssertionCredentialBuilder = ConfidentialClientCredentialBuilder<AssertionCallback>;

/// Your callback that returns a client assertion: the [`ClientAuthentication`] of a
/// [`ClientAssertionCredential`]. Called once per token request, bounded by the credential's
/// timeout.
#[derive(Clone)]
pub struct AssertionCallback(Arc<Callback>);

/// Any async source of assertions: the caller's callback, or one of this crate's (such as a
/// token from another credential).
impl<F, Fut, E> From<F> for AssertionCallback
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn from(callback: F) -> Self {
        AssertionCallback(Arc::new(move || {
            let fut = callback();
            Box::pin(async move { fut.await.map_err(Into::into) })
        }))
    }
}

impl AssertionCallback {
    async fn assertion<'a>(
        &'a self,
        client: &ConfidentialClient,
    ) -> Result<ClientProof<'a>, TokenError> {
        // The callback is the caller's I/O (an OIDC endpoint, a file); bound it like the token
        // request itself, so a hung callback cannot hold every waiting request forever.
        let timeout = client.timeout();
        let assertion = match tokio::time::timeout(timeout, (self.0)()).await {
            Ok(result) => Zeroizing::new(result.map_err(callback_error)?),
            Err(_) => {
                return Err(TokenError::new(
                    TokenErrorKind::Timeout,
                    format!(
                        "the client assertion callback did not return within {timeout:?}; make it faster or raise the credential's timeout"
                    ),
                ));
            }
        };
        let assertion = trim_in_place(assertion);
        if assertion.is_empty() {
            return Err(TokenError::configuration(
                "the client assertion callback returned an empty assertion; return the token issued for the app's federated identity credential",
            ));
        }
        Ok(ClientProof::Assertion(assertion))
    }
}

fn callback_error(e: BoxError) -> TokenError {
    match e.downcast::<TokenError>() {
        Ok(token_error) => *token_error,
        Err(e) => TokenError::new(
            TokenErrorKind::Transient,
            "the client assertion callback failed",
        )
        .with_source(e),
    }
}

impl ClientAuthentication for AssertionCallback {}

impl Authenticate for AssertionCallback {
    fn authenticate<'a>(
        &'a self,
        client: &'a ConfidentialClient,
    ) -> BoxFuture<'a, Result<ClientProof<'a>, TokenError>> {
        Box::pin(self.assertion(client))
    }
}

impl fmt::Debug for AssertionCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AssertionCallback(..)")
    }
}
