//! [`ClientCertificateCredential`]: the app proves itself with a certificate's private key.

use std::future::ready;
use std::path::Path;
use std::time::SystemTime;

use futures::future::BoxFuture;

use crate::credential::assertion::{AssertionAlgorithm, sign_assertion};
use crate::credential::authentication::private::Authenticate;
use crate::credential::authentication::{ClientAuthentication, ClientProof};
use crate::credential::certificate_key::ClientCertificate;
use crate::credential::client::ConfidentialClient;
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
/// [`from_pem`](Self::from_pem), [`from_pem_file`](Self::from_pem_file) and
/// [`from_pkcs12`](Self::from_pkcs12) build one for the public cloud with the default timeout;
/// [`builder`](ConfidentialClientCredential::builder)`(tenant_id, client_id, certificate)` takes
/// a loaded [`ClientCertificate`] and sets the cloud, the timeout, the HTTP client, the chain or
/// the algorithm.
///
/// Pure Rust (RustCrypto); the key never reaches `Debug`, logs or errors. Cheap to clone.
///
/// ```
/// use tower_entra::{AuthorityHost, ClientCertificate, ClientCertificateCredential};
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
/// .authority_host(AuthorityHost::AZURE_GOVERNMENT)
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

    /// A credential from a PEM file holding the certificate and its unencrypted RSA private key.
    /// For an encrypted key or a PFX file use [`ClientCertificate::from_file`] and
    /// [`builder`](Self::builder).
    pub fn from_pem_file(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, TokenError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            TokenError::configuration(format!(
                "cannot read the certificate file {}: {e}; check the path and that this process may read it",
                path.display()
            ))
        })?;
        let pem = zeroize::Zeroizing::new(pem);
        let certificate = ClientCertificate::from_pem(&*pem).map_err(|e| {
            TokenError::configuration(format!("{} ({})", e.message(), path.display()))
        })?;
        Self::new(tenant_id, client_id, certificate)
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

    /// The certificate this credential signs with.
    pub fn certificate(&self) -> &ClientCertificate {
        &self.authentication().certificate
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

/// A certificate and how assertions are signed with it: the [`ClientAuthentication`] of a
/// [`ClientCertificateCredential`]. Each token request gets a newly signed assertion.
#[derive(Debug, Clone)]
pub struct CertificateAssertion {
    certificate: ClientCertificate,
    algorithm: AssertionAlgorithm,
    send_certificate_chain: bool,
}

/// PS256 assertions without the chain, until the builder says otherwise.
impl From<ClientCertificate> for CertificateAssertion {
    fn from(certificate: ClientCertificate) -> Self {
        CertificateAssertion {
            certificate,
            algorithm: AssertionAlgorithm::default(),
            send_certificate_chain: false,
        }
    }
}

impl CertificateAssertion {
    pub(crate) fn with_certificate_chain(mut self, send: bool) -> Self {
        self.send_certificate_chain = send;
        self
    }

    /// A new assertion for `client`, signed now; an expired certificate fails here rather than
    /// at Entra.
    fn sign(&self, client: &ConfidentialClient) -> Result<ClientProof<'static>, TokenError> {
        let now = SystemTime::now();
        self.certificate.check_validity(now)?;
        let assertion = sign_assertion(
            &self.certificate,
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
        Box::pin(ready(self.sign(client)))
    }
}
