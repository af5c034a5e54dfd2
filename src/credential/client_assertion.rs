//! [`ClientAssertionCredential`]: the client assertion comes from the caller (federation).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use crate::credential::authentication::private::Authenticate;
use crate::credential::authentication::{ClientAuthentication, trim_in_place};
use crate::credential::client::ClientProof;
use crate::credential::client::ConfidentialClient;
use crate::credential::{
    ConfidentialClientCredential, ConfidentialClientCredentialBuilder, Credential,
    ManagedIdentityCredential, TokenRequest,
};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

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
/// For a token in a file (Kubernetes), use [`WorkloadIdentityCredential`](crate::WorkloadIdentityCredential);
/// for a managed identity as the app's federated credential,
/// [`from_managed_identity`](ConfidentialClientCredential::from_managed_identity).
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
pub struct AssertionCallback(AssertionSource);

#[derive(Clone)]
enum AssertionSource {
    Callback(Arc<Callback>),
    ManagedIdentity(Arc<ManagedIdentityAssertion>),
}

/// Any async source of assertions: the caller's callback, or one of this crate's (such as a
/// token from another credential).
impl<F, Fut, E> From<F> for AssertionCallback
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn from(callback: F) -> Self {
        AssertionCallback(AssertionSource::Callback(Arc::new(move || {
            let fut = callback();
            Box::pin(async move { fut.await.map_err(Into::into) })
        })))
    }
}

impl ClientAssertionCredential {
    /// An app registration that signs in with a managed identity as its federated credential:
    /// no secret, and the app's permissions (Microsoft Graph application roles, other tenants)
    /// stay on the app registration. The managed identity's token for
    /// `api://AzureADTokenExchange` is the client assertion; add a federated identity credential
    /// to the app with the managed identity's issuer (`https://login.microsoftonline.com/<tenant>/v2.0`)
    /// and object (principal) id as subject.
    ///
    /// For the public cloud; for another, use
    /// [`builder`](ConfidentialClientCredential::builder) with
    /// [`AssertionCallback::from_managed_identity`] and set the authority host (the audience
    /// follows it: `api://AzureADTokenExchangeUSGov`, `api://AzureADTokenExchangeChina`).
    ///
    /// ```no_run
    /// use tower_entra::{ClientAssertionCredential, ManagedIdentityCredential, TokenProvider};
    ///
    /// let app = ClientAssertionCredential::from_managed_identity(
    ///     "contoso.onmicrosoft.com",
    ///     "00000000-0000-0000-0000-000000000001",
    ///     ManagedIdentityCredential::new()?,
    /// )?;
    /// let graph = TokenProvider::new(app, "https://graph.microsoft.com/.default")?;
    /// # Ok::<(), tower_entra::TokenError>(())
    /// ```
    pub fn from_managed_identity(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        managed_identity: ManagedIdentityCredential,
    ) -> Result<Self, TokenError> {
        Self::new(
            tenant_id,
            client_id,
            AssertionCallback::from_managed_identity(managed_identity),
        )
    }
}

impl AssertionCallback {
    /// Client assertions from `managed_identity`: its token for the token exchange audience
    /// of the credential's cloud (`api://AzureADTokenExchange` on the public cloud), reused
    /// until 5 minutes before it expires.
    ///
    /// ```
    /// use tower_entra::{AssertionCallback, ClientAssertionCredential, Cloud, ManagedIdentityCredential};
    ///
    /// let app = ClientAssertionCredential::builder(
    ///     "contoso.onmicrosoft.us",
    ///     "00000000-0000-0000-0000-000000000001",
    ///     AssertionCallback::from_managed_identity(ManagedIdentityCredential::new()?),
    /// )
    /// .authority_host(Cloud::AZURE_US_GOVERNMENT.authority_host())
    /// .build()?;
    /// # Ok::<(), tower_entra::TokenError>(())
    /// ```
    pub fn from_managed_identity(managed_identity: ManagedIdentityCredential) -> Self {
        AssertionCallback(AssertionSource::ManagedIdentity(Arc::new(
            ManagedIdentityAssertion {
                credential: managed_identity,
                cached: std::sync::Mutex::new(None),
            },
        )))
    }

    async fn assertion<'a>(
        &'a self,
        client: &ConfidentialClient,
    ) -> Result<ClientProof<'a>, TokenError> {
        match &self.0 {
            AssertionSource::Callback(callback) => {
                callback_assertion(callback.as_ref(), client).await
            }
            AssertionSource::ManagedIdentity(mi) => mi.assertion(client).await,
        }
    }
}

/// A managed identity's token as the client assertion, cached per audience.
struct ManagedIdentityAssertion {
    credential: ManagedIdentityCredential,
    /// The last token and its audience. Held only to read or replace it, never across the
    /// managed identity request: a request parked on a runtime that is no longer driven must
    /// not hold the fetch that replaces it (two token requests of the app at once may each ask
    /// the managed identity; the provider's single flight makes that rare).
    cached: std::sync::Mutex<Option<(&'static str, AccessToken)>>,
}

/// How long before its expiry a managed identity token stops being reused as an assertion
/// (Entra must still find it valid when the token request reaches it).
const ASSERTION_REUSE_MARGIN: Duration = Duration::from_secs(5 * 60);

impl ManagedIdentityAssertion {
    async fn assertion<'a>(
        &self,
        client: &ConfidentialClient,
    ) -> Result<ClientProof<'a>, TokenError> {
        let audience = token_exchange_audience(client.token_url());
        let now = tokio::time::Instant::now();
        let reusable = self.cached().as_ref().and_then(|(aud, token)| {
            (*aud == audience
                && token.expires_at().saturating_duration_since(now) > ASSERTION_REUSE_MARGIN)
                .then(|| token.clone())
        });
        let token = match reusable {
            Some(token) => token,
            None => {
                let scope = format!("{audience}/.default");
                let token = self
                    .credential
                    .request_token(TokenRequest::new(&scope))
                    .await
                    .map_err(|e| {
                        TokenError::new(
                            e.kind(),
                            format!(
                                "the managed identity's token for {audience}, the app's client assertion, could not be had: {}",
                                e.message()
                            ),
                        )
                        .with_source(e)
                    })?;
                *self.cached() = Some((audience, token.clone()));
                token
            }
        };
        Ok(ClientProof::Assertion(Zeroizing::new(
            token.secret().to_owned(),
        )))
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<(&'static str, AccessToken)>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The audience Entra expects of a federated token, by the cloud of the token endpoint.
fn token_exchange_audience(token_url: &url::Url) -> &'static str {
    match token_url.host_str().unwrap_or_default() {
        "login.microsoftonline.us" | "login.usgovcloudapi.net" => "api://AzureADTokenExchangeUSGov",
        "login.chinacloudapi.cn" | "login.partner.microsoftonline.cn" => {
            "api://AzureADTokenExchangeChina"
        }
        _ => "api://AzureADTokenExchange",
    }
}

async fn callback_assertion<'a>(
    callback: &Callback,
    client: &ConfidentialClient,
) -> Result<ClientProof<'a>, TokenError> {
    // The callback is the caller's I/O (an OIDC endpoint, a file); bound it like the token
    // request itself, so a hung callback cannot hold every waiting request forever.
    let timeout = client.timeout();
    let assertion = match tokio::time::timeout(timeout, callback()).await {
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
    /// A callback is bounded like the token request; a managed identity step by the managed
    /// identity credential's own timeout (its retries included).
    fn time_bound(&self, request_timeout: Duration) -> Duration {
        match &self.0 {
            AssertionSource::Callback(_) => request_timeout,
            AssertionSource::ManagedIdentity(mi) => {
                mi.credential.timeout().unwrap_or(request_timeout)
            }
        }
    }

    fn authenticate<'a>(
        &'a self,
        client: &'a ConfidentialClient,
    ) -> BoxFuture<'a, Result<ClientProof<'a>, TokenError>> {
        Box::pin(self.assertion(client))
    }
}

impl fmt::Debug for AssertionCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            AssertionSource::Callback(_) => f.write_str("AssertionCallback(..)"),
            AssertionSource::ManagedIdentity(mi) => f
                .debug_tuple("AssertionCallback")
                .field(&mi.credential)
                .finish(),
        }
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

    /// The managed identity step counts in the credential's timeout (its retries take minutes),
    /// so that a provider's liveness deadline never cuts a healthy fetch short.
    #[test]
    fn the_timeout_covers_the_managed_identity_step() {
        let mi = crate::credential::ManagedIdentityCredential::builder()
            .environment(|_| None)
            .transport(Offline)
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mi_bound = mi.timeout().unwrap();
        assert!(mi_bound >= Duration::from_secs(3), "{mi_bound:?}");
        let app = ClientAssertionCredential::builder(
            "t",
            "c",
            AssertionCallback::from_managed_identity(mi),
        )
        .authority_host(NOWHERE)
        .transport(Offline)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
        assert_eq!(app.timeout(), Some(mi_bound + Duration::from_secs(5)));
        let callback = ClientAssertionCredential::builder("t", "c", || async {
            Ok::<_, std::io::Error>("a".to_owned())
        })
        .authority_host(NOWHERE)
        .transport(Offline)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
        assert_eq!(callback.timeout(), Some(Duration::from_secs(10)));
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
