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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::credential::{Credential, TokenRequest};
    use crate::transport::tests::Offline;
    use std::time::Duration;

    /// Nothing is sent: every case here fails before the token request.
    const NOWHERE: &str = "http://127.0.0.1:9";

    async fn token(c: &ClientAssertionCredential) -> TokenError {
        c.request_token(TokenRequest::new("api://x/.default"))
            .await
            .unwrap_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_callback_fails_after_the_credentials_timeout() {
        let c = ClientAssertionCredential::builder("t", "c", || {
            std::future::pending::<Result<String, std::io::Error>>()
        })
        .authority_host(NOWHERE)
        .transport(Offline)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
        // Paused time: the bound below fires only if the credential's own does not.
        let e = tokio::time::timeout(Duration::from_secs(60), token(&c))
            .await
            .expect("the callback was not bounded by the credential's timeout");
        assert_eq!(e.kind(), TokenErrorKind::Timeout, "{e}");
        assert!(
            e.to_string().contains("callback did not return within 5s"),
            "{e}"
        );
    }

    /// A credential whose callback fails with its own `Authentication` error saying `message`.
    pub(crate) fn refusing(message: &'static str) -> ClientAssertionCredential {
        ClientAssertionCredential::builder("tenant", "client", move || async move {
            Err::<String, _>(TokenError::new(TokenErrorKind::Authentication, message))
        })
        .authority_host(NOWHERE)
        .transport(Offline)
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn a_callbacks_own_token_error_reaches_the_caller_unchanged() {
        let e = token(&refusing("this CI job has no OIDC token")).await;
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
        assert_eq!(e.message(), "this CI job has no OIDC token");
    }
}
