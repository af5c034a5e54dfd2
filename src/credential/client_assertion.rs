//! [`ClientAssertionCredential`]: the client assertion comes from the caller (federation).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::credential::confidential_client_builder_methods;
use zeroize::Zeroizing;

use crate::credential::{
    ClientAuth, ConfidentialClient, ConfidentialClientOptions, Credential, TokenRequest,
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
#[derive(Clone)]
pub struct ClientAssertionCredential {
    client: ConfidentialClient,
    callback: Arc<Callback>,
}

impl ClientAssertionCredential {
    /// A credential for the public cloud with the default timeout (30 s).
    pub fn new<F, Fut, E>(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        callback: F,
    ) -> Result<Self, TokenError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self::builder(tenant_id, client_id, callback).build()
    }

    /// A builder, to set the cloud, the timeout or the HTTP client.
    pub fn builder<F, Fut, E>(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        callback: F,
    ) -> ClientAssertionCredentialBuilder
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let callback: Arc<Callback> = Arc::new(move || {
            let fut = callback();
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        ClientAssertionCredentialBuilder {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            callback,
            options: ConfidentialClientOptions::default(),
        }
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        // The callback is the caller's I/O (an OIDC endpoint, a file); bound it like the token
        // request itself, so a hung callback cannot hold every waiting request forever.
        let timeout = self.client.timeout();
        let assertion = match tokio::time::timeout(timeout, (self.callback)()).await {
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
        let assertion = assertion.trim();
        if assertion.is_empty() {
            return Err(TokenError::configuration(
                "the client assertion callback returned an empty assertion; return the token issued for the app's federated identity credential",
            ));
        }
        self.client
            .request_token(request, ClientAuth::Assertion(assertion))
            .await
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

impl Credential for ClientAssertionCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(self.fetch(request))
    }

    fn identity(&self) -> Option<(&str, &str)> {
        self.client.identity()
    }
}

impl fmt::Debug for ClientAssertionCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client
            .debug_struct(f, "ClientAssertionCredential")
            .finish_non_exhaustive()
    }
}

/// Builds a [`ClientAssertionCredential`].
pub struct ClientAssertionCredentialBuilder {
    tenant_id: String,
    client_id: String,
    callback: Arc<Callback>,
    options: ConfidentialClientOptions,
}

impl ClientAssertionCredentialBuilder {
    confidential_client_builder_methods!();

    /// Checks the settings and builds the credential.
    pub fn build(self) -> Result<ClientAssertionCredential, TokenError> {
        Ok(ClientAssertionCredential {
            client: ConfidentialClient::new(&self.tenant_id, &self.client_id, self.options)?,
            callback: self.callback,
        })
    }
}

impl fmt::Debug for ClientAssertionCredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertionCredentialBuilder")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
