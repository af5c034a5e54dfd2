//! [`ClientSecretCredential`]: the app proves itself with a client secret.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use crate::credential::authentication::private::Authenticate;
use crate::credential::authentication::{ClientAuthentication, trim_in_place};
use crate::credential::client::ClientProof;
use crate::credential::client::ConfidentialClient;
use crate::credential::rotation::{Material, WatchedFile};
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
/// [`from_file`](Self::from_file) reads the secret from a file (as the Secrets Store CSI driver
/// mounts a Key Vault secret) and follows its rotation without a restart: the file is checked
/// every two minutes, and read at once when Entra answers that the secret is invalid or expired.
///
/// ```
/// use tower_entra::{ClientSecretCredential, Cloud};
///
/// let credential = ClientSecretCredential::builder(
///     "contoso.onmicrosoft.com",
///     "00000000-0000-0000-0000-000000000001",
///     "the secret's Value",
/// )
/// .authority_host(Cloud::AZURE_US_GOVERNMENT.authority_host())
/// .timeout(std::time::Duration::from_secs(10))
/// .build()?;
/// assert!(!format!("{credential:?}").contains("Value"));
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
pub type ClientSecretCredential = ConfidentialClientCredential<ClientSecret>;

/// Builds a [`ClientSecretCredential`].
pub type ClientSecretCredentialBuilder = ConfidentialClientCredentialBuilder<ClientSecret>;

/// The largest client secret file read: a secret's Value is about 40 characters.
const MAX_SECRET_FILE: usize = 64 * 1024;

impl ClientSecretCredential {
    /// A credential for the public cloud whose secret is read from a file, as the Secrets Store
    /// CSI driver mounts a Key Vault secret: [`ClientSecret::from_file`]. For another cloud or
    /// options, pass `ClientSecret::from_file(path)?` to [`builder`](Self::builder).
    ///
    /// ```no_run
    /// use tower_entra::ClientSecretCredential;
    ///
    /// let credential = ClientSecretCredential::from_file(
    ///     "contoso.onmicrosoft.com",
    ///     "00000000-0000-0000-0000-000000000001",
    ///     "/mnt/secrets-store/client-secret",
    /// )?;
    /// # Ok::<(), tower_entra::TokenError>(())
    /// ```
    pub fn from_file(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> Result<Self, TokenError> {
        Self::new(tenant_id, client_id, ClientSecret::from_file(path)?)
    }

    /// The file the secret is read from, if it is read from one.
    pub fn secret_file(&self) -> Option<&Path> {
        self.authentication().0.path()
    }
}

/// A client secret's Value: the [`ClientAuthentication`] of a [`ClientSecretCredential`]. Zeroed
/// on drop; `Debug` shows `<redacted>` (and the file's path for a secret read from a file).
#[derive(Clone)]
pub struct ClientSecret(Material<Arc<Zeroizing<String>>>);

impl<S: Into<String>> From<S> for ClientSecret {
    fn from(secret: S) -> Self {
        ClientSecret(Material::Fixed(Arc::new(Zeroizing::new(secret.into()))))
    }
}

impl ClientSecret {
    /// The secret held by a file (surrounding white space and line ends trimmed), read now and
    /// again when the file changes: it is checked every two minutes (its modification time and
    /// length, no read unless they moved), never on every token request, and read at once when
    /// Entra answers that the secret is invalid or expired (AADSTS7000215, AADSTS7000222), in
    /// which case a changed secret is sent again before the error reaches callers. A file found
    /// empty or unreadable later keeps the secret read before, with a warning.
    ///
    /// Fails with a [`Configuration`](crate::TokenErrorKind::Configuration) error naming the
    /// path when the file cannot be read, is empty, is not UTF-8 or is larger than 64 KiB.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, TokenError> {
        let file = WatchedFile::load(
            path,
            "client secret file",
            MAX_SECRET_FILE,
            Box::new(secret_in),
        )?;
        Ok(ClientSecret(Material::File(file)))
    }
}

/// The secret a file holds: UTF-8 text, trimmed, not empty.
fn secret_in(bytes: &[u8]) -> Result<Arc<Zeroizing<String>>, TokenError> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        TokenError::configuration(
            "the client secret file is not UTF-8 text; it must hold the secret's Value",
        )
    })?;
    let secret = trim_in_place(Zeroizing::new(text.to_owned()));
    if secret.is_empty() {
        return Err(TokenError::configuration(
            "the client secret file is empty; it must hold the secret's Value",
        ));
    }
    Ok(Arc::new(secret))
}

impl ClientAuthentication for ClientSecret {}

impl Authenticate for ClientSecret {
    fn check(&self) -> Result<(), TokenError> {
        if self.0.current().trim().is_empty() {
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
        Box::pin(async move {
            let secret = match &self.0 {
                Material::Fixed(secret) => Cow::Borrowed(&**secret),
                file => Cow::Owned((*file.for_request().await).clone()),
            };
            Ok(ClientProof::Secret(secret))
        })
    }

    fn may_reload(&self) -> bool {
        self.0.path().is_some()
    }

    fn reload_after_refusal(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.0.reload_after_refusal())
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.path() {
            Some(path) => write!(f, "ClientSecret(<redacted>, file {})", path.display()),
            None => f.write_str("ClientSecret(<redacted>)"),
        }
    }
}
