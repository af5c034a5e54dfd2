//! [`ClientCertificateCredential`]: the app proves itself with a certificate's private key.

use std::future::ready;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use crate::credential::assertion::{AssertionAlgorithm, sign_assertion};
use crate::credential::authentication::ClientAuthentication;
use crate::credential::authentication::private::Authenticate;
use crate::credential::certificate_key::ClientCertificate;
use crate::credential::client::ClientProof;
use crate::credential::client::ConfidentialClient;
use crate::credential::rotation::{Material, WatchedFile};
use crate::credential::{ConfidentialClientCredential, ConfidentialClientCredentialBuilder};
use crate::error::TokenError;

/// Authenticates with a certificate uploaded to an app registration: each token request carries
/// a new client assertion (a JWT) signed with the certificate's RSA private key.
///
/// The assertion follows Entra's certificate-credentials document: header `alg` `PS256`, `typ`
/// `JWT`, `x5t#S256` (the certificate's SHA-256 thumbprint); claims `aud` (the token endpoint),
/// `iss` = `sub` = the client id, a random `jti`, `nbf` = `iat` = now, `exp` = now + 10 minutes.
/// [`AssertionAlgorithm::Rs256`] switches to RS256 with a SHA-1 `x5t`, for identity providers or
/// older set-ups that expect that;
/// [`send_certificate_chain(true)`](ClientCertificateCredentialBuilder::send_certificate_chain)
/// adds the `x5c` chain for subject name + issuer authentication.
///
/// [`from_pem`](Self::from_pem), [`from_pem_file`](Self::from_pem_file),
/// [`from_pkcs12`](Self::from_pkcs12) and [`from_pkcs12_file`](Self::from_pkcs12_file) build one
/// for the public cloud with the default timeout;
/// [`builder`](ConfidentialClientCredential::builder)`(tenant_id, client_id, certificate)` takes
/// a loaded [`ClientCertificate`] or a [`CertificateAssertion::from_file`] and sets the cloud, the
/// timeout, the HTTP client, the chain or the algorithm.
///
/// A credential built from a file follows the file's rotation without a restart (a Key Vault
/// certificate mounted by the Secrets Store CSI driver): the file is checked every two minutes,
/// and read at once when Entra answers that the certificate is unknown or expired; a file that
/// cannot be used (half-written) keeps the certificate loaded before. See
/// [`CertificateAssertion::from_file`].
///
/// Pure Rust (RustCrypto); the key never reaches `Debug`, logs or errors. Cheap to clone.
///
/// ```
/// use tower_entra::{ClientCertificate, ClientCertificateCredential, Cloud};
///
/// let credential = ClientCertificateCredential::from_pem_file(
///     "contoso.onmicrosoft.com",
///     "00000000-0000-0000-0000-000000000001",
///     "tests/fixtures/client-pkcs8.pem",
/// )?;
///
/// // Or with the builder: a PFX, the US Government cloud, the chain sent.
/// let pfx = std::fs::read("tests/fixtures/client-aes.pfx")?;
/// let certificate = ClientCertificate::from_pkcs12(&pfx, Some("fixture-password"))?;
/// let credential = ClientCertificateCredential::builder(
///     "contoso.onmicrosoft.com",
///     "00000000-0000-0000-0000-000000000001",
///     certificate,
/// )
/// .authority_host(Cloud::AZURE_US_GOVERNMENT.authority_host())
/// .send_certificate_chain(true)
/// .build()?;
/// assert!(!format!("{credential:?}").contains("PRIVATE"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type ClientCertificateCredential = ConfidentialClientCredential<CertificateAssertion>;

/// Builds a [`ClientCertificateCredential`].
pub type ClientCertificateCredentialBuilder =
    ConfidentialClientCredentialBuilder<CertificateAssertion>;

impl ClientCertificateCredential {
    /// A credential from PEM text holding the certificate and its unencrypted RSA private key
    /// (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`), for the public cloud.
    pub fn from_pem(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        pem: impl AsRef<[u8]>,
    ) -> Result<Self, TokenError> {
        Self::new(tenant_id, client_id, ClientCertificate::from_pem(pem)?)
    }

    /// A credential from a PEM file holding the certificate and its unencrypted RSA private key,
    /// read now and again when it changes (see [`CertificateAssertion::from_file`]). For an
    /// encrypted key, or other options, pass [`CertificateAssertion::from_file`] to
    /// [`builder`](Self::builder).
    pub fn from_pem_file(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> Result<Self, TokenError> {
        let from_pem = Box::new(|pem: &[u8]| ClientCertificate::from_pem(pem));
        Self::new(
            tenant_id,
            client_id,
            CertificateAssertion::watching(path, from_pem)?,
        )
    }

    /// A credential from a PKCS#12 / PFX file (`password` is `None` for an archive exported
    /// without one), read now and again when it changes (see
    /// [`CertificateAssertion::from_file`]).
    pub fn from_pkcs12_file(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        path: impl Into<PathBuf>,
        password: Option<&str>,
    ) -> Result<Self, TokenError> {
        let password = password.map(|p| Zeroizing::new(p.to_owned()));
        let from_pkcs12 = Box::new(move |der: &[u8]| {
            ClientCertificate::from_pkcs12(der, password.as_ref().map(|p| p.as_str()))
        });
        Self::new(
            tenant_id,
            client_id,
            CertificateAssertion::watching(path, from_pkcs12)?,
        )
    }

    /// A credential from a PKCS#12 / PFX archive (DER bytes); `password` is `None` for an
    /// archive exported without one.
    pub fn from_pkcs12(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        der: impl AsRef<[u8]>,
        password: Option<&str>,
    ) -> Result<Self, TokenError> {
        Self::new(
            tenant_id,
            client_id,
            ClientCertificate::from_pkcs12(der, password)?,
        )
    }

    /// The certificate this credential signs with now (for a credential built from a file, the
    /// one loaded from it last).
    pub fn certificate(&self) -> ClientCertificate {
        self.authentication().certificate.current()
    }

    /// The file the certificate is read from, if it is read from one.
    pub fn certificate_file(&self) -> Option<&Path> {
        self.authentication().certificate.path()
    }
}

impl ClientCertificateCredentialBuilder {
    /// Whether each assertion carries the certificate chain (`x5c`, leaf first, standard base64
    /// DER). Needed for subject name + issuer (SNI) authentication, where the app trusts a
    /// subject and issuer instead of one uploaded certificate. Default `false`.
    pub fn send_certificate_chain(mut self, send: bool) -> Self {
        self.authentication_mut().send_certificate_chain = send;
        self
    }

    /// The signature algorithm. Default [`AssertionAlgorithm::Ps256`]; use
    /// [`AssertionAlgorithm::Rs256`] for identity providers or older set-ups that expect RS256
    /// with a SHA-1 `x5t`.
    pub fn algorithm(mut self, algorithm: AssertionAlgorithm) -> Self {
        self.authentication_mut().algorithm = algorithm;
        self
    }
}

/// The largest certificate file read: a certificate with its key and chain is a few KiB.
const MAX_CERTIFICATE_FILE: usize = 1024 * 1024;

/// Loads a certificate from a file's bytes.
type CertificateParse = Box<dyn Fn(&[u8]) -> Result<ClientCertificate, TokenError> + Send + Sync>;

/// A certificate and how assertions are signed with it: the [`ClientAuthentication`] of a
/// [`ClientCertificateCredential`]. Each token request gets a newly signed assertion.
#[derive(Debug, Clone)]
pub struct CertificateAssertion {
    certificate: Material<ClientCertificate>,
    algorithm: AssertionAlgorithm,
    send_certificate_chain: bool,
}

/// PS256 assertions without the chain, until the builder says otherwise.
impl From<ClientCertificate> for CertificateAssertion {
    fn from(certificate: ClientCertificate) -> Self {
        CertificateAssertion {
            certificate: Material::Fixed(certificate),
            algorithm: AssertionAlgorithm::default(),
            send_certificate_chain: false,
        }
    }
}

impl CertificateAssertion {
    /// A certificate read from a file holding PEM (the certificate and its RSA private key) or a
    /// PKCS#12 / PFX archive, told apart by content; `password` decrypts an encrypted PKCS#8 key
    /// or the PFX. Give it to [`ClientCertificateCredential::builder`].
    ///
    /// The file is read now and again when it changes, so that a rotated certificate (a Key
    /// Vault certificate mounted by the Secrets Store CSI driver) is used without a restart: it
    /// is checked every two minutes (its modification time and length; no read unless they
    /// moved), never on every token request, and read at once when Entra answers that the
    /// certificate is unknown or expired (AADSTS700027, AADSTS7000274, AADSTS1000502), in which
    /// case an assertion signed with a changed certificate is sent before the error reaches
    /// callers. A cached token stays in use: rotation changes what the next token request
    /// sends. A file that cannot be used (half-written: a PEM without its key, a truncated PFX,
    /// an expired certificate) keeps the certificate loaded before, with a warning.
    ///
    /// Fails with a [`Configuration`](crate::TokenErrorKind::Configuration) error naming the
    /// path when the file cannot be read or holds no usable certificate and key.
    ///
    /// ```
    /// use tower_entra::{CertificateAssertion, ClientCertificateCredential};
    ///
    /// let credential = ClientCertificateCredential::builder(
    ///     "contoso.onmicrosoft.com",
    ///     "00000000-0000-0000-0000-000000000001",
    ///     CertificateAssertion::from_file("tests/fixtures/client-aes.pfx", Some("fixture-password"))?,
    /// )
    /// .send_certificate_chain(true)
    /// .build()?;
    /// assert!(credential.certificate_file().is_some());
    /// # Ok::<(), tower_entra::TokenError>(())
    /// ```
    pub fn from_file(path: impl Into<PathBuf>, password: Option<&str>) -> Result<Self, TokenError> {
        let password = password.map(|p| Zeroizing::new(p.to_owned()));
        Self::watching(
            path,
            Box::new(move |bytes| {
                ClientCertificate::from_bytes(bytes, password.as_ref().map(|p| p.as_str()))
            }),
        )
    }

    fn watching(path: impl Into<PathBuf>, parse: CertificateParse) -> Result<Self, TokenError> {
        let file = WatchedFile::load(path, "certificate file", MAX_CERTIFICATE_FILE, parse)?;
        Ok(CertificateAssertion {
            certificate: Material::File(file),
            algorithm: AssertionAlgorithm::default(),
            send_certificate_chain: false,
        })
    }

    pub(crate) fn with_certificate_chain(mut self, send: bool) -> Self {
        self.send_certificate_chain = send;
        self
    }

    /// A new assertion for `client` signed with `certificate`, now; an expired certificate
    /// fails here rather than at Entra.
    fn sign(
        &self,
        certificate: &ClientCertificate,
        client: &ConfidentialClient,
    ) -> Result<ClientProof<'static>, TokenError> {
        let now = SystemTime::now();
        certificate.check_validity(now)?;
        let assertion = sign_assertion(
            certificate,
            self.algorithm,
            self.send_certificate_chain,
            client.client_id(),
            client.token_url().as_str(),
            now,
        )?;
        Ok(ClientProof::Assertion(assertion))
    }
}

impl ClientAuthentication for CertificateAssertion {}

impl Authenticate for CertificateAssertion {
    fn authenticate<'a>(
        &'a self,
        client: &'a ConfidentialClient,
    ) -> BoxFuture<'a, Result<ClientProof<'a>, TokenError>> {
        match &self.certificate {
            Material::Fixed(certificate) => Box::pin(ready(self.sign(certificate, client))),
            file => Box::pin(async move { self.sign(&file.for_request().await, client) }),
        }
    }

    fn may_reload(&self) -> bool {
        self.certificate.path().is_some()
    }

    fn reload_after_refusal(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.certificate.reload_after_refusal())
    }
}
