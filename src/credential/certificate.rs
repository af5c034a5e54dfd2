//! [`ClientCertificateCredential`]: the app proves itself with a certificate's private key.

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use futures::future::BoxFuture;

use crate::credential::confidential_client_builder_methods;

use crate::credential::assertion::{AssertionAlgorithm, sign_assertion};
use crate::credential::certificate_key::ClientCertificate;
use crate::credential::{
    ClientAuth, ConfidentialClient, ConfidentialClientOptions, Credential, TokenRequest,
};
use crate::error::TokenError;
use crate::token::AccessToken;

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
#[derive(Clone)]
pub struct ClientCertificateCredential {
    client: ConfidentialClient,
    certificate: ClientCertificate,
    algorithm: AssertionAlgorithm,
    send_chain: bool,
}

impl ClientCertificateCredential {
    /// A credential from PEM text holding the certificate and its unencrypted RSA private key
    /// (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`), for the public cloud.
    pub fn from_pem(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        pem: impl AsRef<[u8]>,
    ) -> Result<Self, TokenError> {
        Self::builder(tenant_id, client_id, ClientCertificate::from_pem(pem)?).build()
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
        Self::builder(tenant_id, client_id, certificate).build()
    }

    /// A credential from a PKCS#12 / PFX archive (DER bytes); `password` is `None` for an
    /// archive exported without one.
    pub fn from_pkcs12(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        der: impl AsRef<[u8]>,
        password: Option<&str>,
    ) -> Result<Self, TokenError> {
        Self::builder(
            tenant_id,
            client_id,
            ClientCertificate::from_pkcs12(der, password)?,
        )
        .build()
    }

    /// A builder, to set the cloud, the timeout, the HTTP client, the chain or the algorithm.
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        certificate: ClientCertificate,
    ) -> ClientCertificateCredentialBuilder {
        ClientCertificateCredentialBuilder {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            certificate,
            algorithm: AssertionAlgorithm::default(),
            send_chain: false,
            options: ConfidentialClientOptions::default(),
        }
    }

    /// The certificate this credential signs with.
    pub fn certificate(&self) -> &ClientCertificate {
        &self.certificate
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let now = SystemTime::now();
        self.certificate.check_validity(now)?;
        let assertion = sign_assertion(
            &self.certificate,
            self.algorithm,
            self.send_chain,
            self.client.client_id(),
            self.client.token_url().as_str(),
            now,
        )?;
        self.client
            .request_token(request, ClientAuth::Assertion(&assertion))
            .await
    }
}

impl Credential for ClientCertificateCredential {
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

impl fmt::Debug for ClientCertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client
            .debug_struct(f, "ClientCertificateCredential")
            .field("certificate", &self.certificate)
            .field("algorithm", &self.algorithm)
            .field("send_certificate_chain", &self.send_chain)
            .finish()
    }
}

/// Builds a [`ClientCertificateCredential`].
#[derive(Debug)]
pub struct ClientCertificateCredentialBuilder {
    tenant_id: String,
    client_id: String,
    certificate: ClientCertificate,
    algorithm: AssertionAlgorithm,
    send_chain: bool,
    options: ConfidentialClientOptions,
}

impl ClientCertificateCredentialBuilder {
    confidential_client_builder_methods!();

    /// Whether each assertion carries the certificate chain (`x5c`, leaf first, standard base64
    /// DER). Needed for subject name + issuer (SNI) authentication, where the app trusts a
    /// subject and issuer instead of one uploaded certificate. Default `false`.
    pub fn send_certificate_chain(mut self, send: bool) -> Self {
        self.send_chain = send;
        self
    }

    /// The signature algorithm. Default [`AssertionAlgorithm::Ps256`]; use
    /// [`AssertionAlgorithm::Rs256`] for identity providers or older set-ups that expect RS256
    /// with a SHA-1 `x5t`.
    pub fn algorithm(mut self, algorithm: AssertionAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Checks the settings and builds the credential.
    pub fn build(self) -> Result<ClientCertificateCredential, TokenError> {
        Ok(ClientCertificateCredential {
            client: ConfidentialClient::new(&self.tenant_id, &self.client_id, self.options)?,
            certificate: self.certificate,
            algorithm: self.algorithm,
            send_chain: self.send_chain,
        })
    }
}
