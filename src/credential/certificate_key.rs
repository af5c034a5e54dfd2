//! [`ClientCertificate`]: an X.509 certificate and its RSA private key, from PEM or PKCS#12.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pkcs8::der::{DateTime, Decode, Encode};
use pkcs8::{DecodePublicKey, ObjectIdentifier, PrivateKeyInfo};
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::error::TokenError;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

const RSA_REQUIRED: &str = "Entra accepts only RSA certificates for client assertions (ES256 and other elliptic-curve signatures are refused); create an RSA key, e.g. `openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 365 -subj /CN=my-app`";

/// An X.509 certificate with its RSA private key: what a
/// [`ClientCertificateCredential`](crate::ClientCertificateCredential) signs assertions with.
///
/// Load it from PEM (the certificate and a PKCS#8, encrypted PKCS#8 or PKCS#1 RSA key, in one
/// file or byte string) or from a PKCS#12 / PFX file (AES / PBES2 as OpenSSL 3 writes them, or
/// the legacy RC2 / 3DES encryption of older tools and Windows). Further certificates in the
/// input are kept as the chain sent with [`send_certificate_chain`](crate::ClientCertificateCredentialBuilder::send_certificate_chain).
///
/// Loading fails with a [`TokenErrorKind::Configuration`](crate::TokenErrorKind::Configuration)
/// error on anything Entra would refuse: no certificate, no key, a key that is not the
/// certificate's, an elliptic-curve key (Entra verifies RSA signatures only), or a certificate
/// outside its validity period (Entra refuses those with AADSTS1000502 / AADSTS7000274).
///
/// Cheap to clone. `Debug` shows the subject, the SHA-1 thumbprint (as the Azure portal does) and
/// the expiry, never the key.
///
/// ```
/// use tower_entra::ClientCertificate;
///
/// let pem = std::fs::read("tests/fixtures/client-pkcs8.pem")?;
/// let certificate = ClientCertificate::from_pem(&pem)?;
/// assert_eq!(certificate.subject(), "CN=tower-entra-test");
/// assert!(!format!("{certificate:?}").contains("PRIVATE KEY"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ClientCertificate {
    inner: Arc<Inner>,
}

struct Inner {
    key: RsaPrivateKey,
    /// DER certificates, leaf first.
    chain: Vec<Vec<u8>>,
    subject: String,
    sha1: [u8; 20],
    sha256: [u8; 32],
    /// The validity period: `DateTime` displays as RFC 3339 for messages.
    not_before: DateTime,
    not_after: DateTime,
}

impl ClientCertificate {
    /// Loads a certificate and its unencrypted RSA private key (`PRIVATE KEY` or
    /// `RSA PRIVATE KEY`) from PEM text. The certificate whose public key matches the key is the
    /// leaf; other certificates are kept, in order, as its chain.
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Self, TokenError> {
        Self::parse_pem(pem.as_ref(), None)
    }

    /// Like [`from_pem`](Self::from_pem), with the password of an `ENCRYPTED PRIVATE KEY`
    /// (encrypted PKCS#8, as `openssl pkcs8 -topk8` writes it).
    pub fn from_pem_with_password(
        pem: impl AsRef<[u8]>,
        password: &str,
    ) -> Result<Self, TokenError> {
        Self::parse_pem(pem.as_ref(), Some(password))
    }

    /// Loads a PKCS#12 / PFX archive (DER bytes). `password` is `None` (or `Some("")`) for an
    /// archive exported without a password.
    pub fn from_pkcs12(der: impl AsRef<[u8]>, password: Option<&str>) -> Result<Self, TokenError> {
        let der = der.as_ref();
        let password = password.unwrap_or("");
        let store = p12_keystore::KeyStore::from_pkcs12(der, password).map_err(pkcs12_error)?;
        let mut chains = store.entries().filter_map(|(_, entry)| match entry {
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => Some(chain),
            _ => None,
        });
        let chain = chains.next().ok_or_else(|| {
            TokenError::configuration(
                "the PKCS#12 / PFX file holds no private key with its certificate; export the certificate with its private key (`openssl pkcs12 -export -in cert.pem -inkey key.pem -out client.pfx`)",
            )
        })?;
        if chains.next().is_some() {
            return Err(TokenError::configuration(
                "the PKCS#12 / PFX file holds more than one private key; export only the certificate this app authenticates with",
            ));
        }
        let key_der = Zeroizing::new(chain.key().to_vec());
        let key = rsa_key_from_pkcs8(&key_der, "the PFX")?;
        let certificates: Vec<Vec<u8>> =
            chain.chain().iter().map(|c| c.as_der().to_vec()).collect();
        Self::assemble(key, certificates, "the PFX")
    }

    /// Reads a file holding either PEM text or a PKCS#12 / PFX archive, told apart by content.
    /// `password` decrypts an encrypted PKCS#8 key or the PFX.
    pub fn from_file(path: impl AsRef<Path>, password: Option<&str>) -> Result<Self, TokenError> {
        let path = path.as_ref();
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
            TokenError::configuration(format!(
                "cannot read the certificate file {}: {e}; check the path and that this process may read it",
                path.display()
            ))
        })?);
        Self::from_bytes(&bytes, password)
            .map_err(|e| TokenError::configuration(format!("{} ({})", e.message(), path.display())))
    }

    /// PEM or PKCS#12, told apart by content.
    pub(crate) fn from_bytes(bytes: &[u8], password: Option<&str>) -> Result<Self, TokenError> {
        if find(bytes, b"-----BEGIN ").is_some() {
            Self::parse_pem(bytes, password)
        } else if bytes.first() == Some(&0x30) {
            Self::from_pkcs12(bytes, password)
        } else if bytes.is_empty() {
            Err(TokenError::configuration(
                "the certificate file is empty; it must hold PEM (certificate and private key) or a PKCS#12 / PFX archive",
            ))
        } else {
            Err(TokenError::configuration(
                "the certificate file is neither PEM (no `-----BEGIN` line) nor a PKCS#12 / PFX archive; it must hold the certificate and its private key",
            ))
        }
    }

    fn parse_pem(pem: &[u8], password: Option<&str>) -> Result<Self, TokenError> {
        if pem.first() == Some(&0x30) && find(pem, b"-----BEGIN ").is_none() {
            return Err(TokenError::configuration(
                "this is DER (a PKCS#12 / PFX archive?), not PEM; load it with ClientCertificate::from_pkcs12 or ClientCertificate::from_file",
            ));
        }
        let blocks = pem_blocks(pem)?;
        let mut certificates = Vec::new();
        let mut key: Option<RsaPrivateKey> = None;
        for block in &blocks {
            let parsed = match block.label.as_str() {
                "CERTIFICATE" => {
                    certificates.push(block.der.to_vec());
                    continue;
                }
                "PRIVATE KEY" => rsa_key_from_pkcs8(&block.der, "the PEM")?,
                "ENCRYPTED PRIVATE KEY" => {
                    let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
                        TokenError::configuration(
                            "the private key is encrypted (ENCRYPTED PRIVATE KEY) and no password was given; pass it (AZURE_CLIENT_CERTIFICATE_PASSWORD, or ClientCertificate::from_pem_with_password)",
                        )
                    })?;
                    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(&block.der[..])
                        .map_err(|e| {
                            TokenError::configuration(format!(
                                "the ENCRYPTED PRIVATE KEY block is not valid encrypted PKCS#8 ({e})"
                            ))
                        })?;
                    let document = info.decrypt(password).map_err(|_| {
                        TokenError::configuration(
                            "cannot decrypt the ENCRYPTED PRIVATE KEY: the password is wrong, or the key uses an encryption scheme other than PBES2 (AES or 3DES); re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key.enc.pem`",
                        )
                    })?;
                    rsa_key_from_pkcs8(document.as_bytes(), "the PEM")?
                }
                "RSA PRIVATE KEY" => {
                    if block.encrypted_header {
                        return Err(TokenError::configuration(
                            "the RSA PRIVATE KEY is encrypted the legacy OpenSSL way (Proc-Type: 4,ENCRYPTED), which is not supported; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key.enc.pem`",
                        ));
                    }
                    RsaPrivateKey::from_pkcs1_der(&block.der).map_err(|e| {
                        TokenError::configuration(format!(
                            "the RSA PRIVATE KEY block is not a valid PKCS#1 RSA key ({e})"
                        ))
                    })?
                }
                "EC PRIVATE KEY" => {
                    return Err(TokenError::configuration(format!(
                        "the PEM holds an elliptic-curve key (EC PRIVATE KEY): {RSA_REQUIRED}"
                    )));
                }
                _ => continue,
            };
            if key.replace(parsed).is_some() {
                return Err(TokenError::configuration(
                    "the PEM holds more than one private key; keep only the key of the certificate this app authenticates with",
                ));
            }
        }
        let key = key.ok_or_else(|| {
            TokenError::configuration(if blocks.is_empty() {
                "the PEM holds no PEM block; it must hold the certificate (BEGIN CERTIFICATE) and its private key (BEGIN PRIVATE KEY)".to_owned()
            } else {
                "the PEM holds no private key; add the certificate's private key (a PRIVATE KEY, ENCRYPTED PRIVATE KEY or RSA PRIVATE KEY block), e.g. `cat cert.pem key.pem > client.pem`".to_owned()
            })
        })?;
        Self::assemble(key, certificates, "the PEM")
    }

    /// Finds the certificate of `key`, puts it first, and checks what Entra would check.
    fn assemble(
        key: RsaPrivateKey,
        mut certificates: Vec<Vec<u8>>,
        source: &str,
    ) -> Result<Self, TokenError> {
        if certificates.is_empty() {
            return Err(TokenError::configuration(format!(
                "{source} holds a private key but no certificate; add the certificate (BEGIN CERTIFICATE) that was uploaded to the app registration"
            )));
        }
        let public = key.to_public_key();
        let mut leaf = None;
        for (i, der) in certificates.iter().enumerate() {
            let cert = Certificate::from_der(der).map_err(|e| {
                TokenError::configuration(format!(
                    "{source} holds a certificate that is not valid X.509 ({e})"
                ))
            })?;
            let spki = &cert.tbs_certificate.subject_public_key_info;
            if spki.algorithm.oid != RSA_ENCRYPTION && spki.algorithm.oid != RSASSA_PSS {
                continue;
            }
            let spki_der = spki.to_der().map_err(|e| {
                TokenError::configuration(format!("cannot encode the certificate's key ({e})"))
            })?;
            if let Ok(cert_key) = rsa::RsaPublicKey::from_public_key_der(&spki_der)
                && cert_key.n() == public.n()
                && cert_key.e() == public.e()
            {
                leaf = Some((i, cert));
                break;
            }
        }
        let Some((index, cert)) = leaf else {
            return Err(TokenError::configuration(format!(
                "the private key in {source} does not match its certificate; use the key the certificate was created with (compare `openssl x509 -noout -modulus -in cert.pem` with `openssl rsa -noout -modulus -in key.pem`)"
            )));
        };
        let leaf_der = certificates.remove(index);
        certificates.insert(0, leaf_der);
        let validity = &cert.tbs_certificate.validity;
        let inner = Inner {
            key,
            subject: cert.tbs_certificate.subject.to_string(),
            sha1: Sha1::digest(&certificates[0]).into(),
            sha256: Sha256::digest(&certificates[0]).into(),
            not_before: validity.not_before.to_date_time(),
            not_after: validity.not_after.to_date_time(),
            chain: certificates,
        };
        let certificate = ClientCertificate {
            inner: Arc::new(inner),
        };
        certificate.check_validity(SystemTime::now())?;
        Ok(certificate)
    }

    /// The leaf certificate's subject, e.g. `CN=my-app`.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The SHA-1 thumbprint in upper-case hex, as the Azure portal and `az ad app credential
    /// list` show it.
    pub fn thumbprint(&self) -> String {
        self.inner.sha1.iter().map(|b| format!("{b:02X}")).collect()
    }

    /// The SHA-256 thumbprint in upper-case hex.
    pub fn thumbprint_sha256(&self) -> String {
        self.inner
            .sha256
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    /// When the certificate stops being valid; Entra refuses it from then on.
    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after.to_system_time()
    }

    /// When the certificate starts being valid.
    pub fn not_before(&self) -> SystemTime {
        self.inner.not_before.to_system_time()
    }

    /// The leaf certificate, DER: what to upload to the app registration.
    pub fn certificate_der(&self) -> &[u8] {
        &self.inner.chain[0]
    }

    /// The leaf certificate as PEM text, for `az ad app credential reset --cert @cert.pem`.
    pub fn certificate_pem(&self) -> String {
        let b64 = STANDARD.encode(self.certificate_der());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// The number of certificates held: the leaf and its chain.
    pub fn chain_len(&self) -> usize {
        self.inner.chain.len()
    }

    pub(crate) fn key(&self) -> &RsaPrivateKey {
        &self.inner.key
    }

    pub(crate) fn chain(&self) -> &[Vec<u8>] {
        &self.inner.chain
    }

    pub(crate) fn sha1(&self) -> &[u8; 20] {
        &self.inner.sha1
    }

    pub(crate) fn sha256(&self) -> &[u8; 32] {
        &self.inner.sha256
    }

    /// An error if `now` is outside the certificate's validity period.
    pub(crate) fn check_validity(&self, now: SystemTime) -> Result<(), TokenError> {
        if now >= self.not_after() {
            return Err(TokenError::configuration(format!(
                "the certificate {} (thumbprint {}) expired at {}; Entra refuses expired certificates (AADSTS1000502): create a new one and upload it to the app registration",
                self.subject(),
                self.thumbprint(),
                self.inner.not_after
            )));
        }
        if now < self.not_before() {
            return Err(TokenError::configuration(format!(
                "the certificate {} (thumbprint {}) is not valid before {}; Entra refuses it until then (AADSTS1000502): check this machine's clock or use a certificate valid now",
                self.subject(),
                self.thumbprint(),
                self.inner.not_before
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("subject", &self.subject())
            .field("thumbprint", &self.thumbprint())
            .field("not_after", &self.inner.not_after.to_string())
            .field("chain_len", &self.inner.chain.len())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

fn rsa_key_from_pkcs8(der: &[u8], source: &str) -> Result<RsaPrivateKey, TokenError> {
    let info = PrivateKeyInfo::try_from(der).map_err(|e| {
        TokenError::configuration(format!(
            "the private key in {source} is not a valid PKCS#8 key ({e})"
        ))
    })?;
    match info.algorithm.oid {
        RSA_ENCRYPTION => RsaPrivateKey::from_pkcs1_der(info.private_key).map_err(|e| {
            TokenError::configuration(format!(
                "the RSA private key in {source} is malformed ({e})"
            ))
        }),
        EC_PUBLIC_KEY => Err(TokenError::configuration(format!(
            "the private key in {source} is an elliptic-curve key: {RSA_REQUIRED}"
        ))),
        oid => Err(TokenError::configuration(format!(
            "the private key in {source} is not an RSA key (algorithm {oid}): {RSA_REQUIRED}"
        ))),
    }
}

fn pkcs12_error(e: p12_keystore::error::Error) -> TokenError {
    use p12_keystore::error::Error as E;
    match e {
        E::MacError(_) => TokenError::configuration(
            "cannot open the PKCS#12 / PFX file: the password is wrong (check AZURE_CLIENT_CERTIFICATE_PASSWORD, or pass None for a file exported without a password)",
        ),
        E::Pkcs5Error(_) | E::UnpadError => TokenError::configuration(
            "cannot decrypt the PKCS#12 / PFX file: the password is wrong or its encryption is unsupported",
        ),
        E::UnsupportedEncryptionScheme | E::UnsupportedMacAlgorithm => TokenError::configuration(
            "the PKCS#12 / PFX file uses an unsupported encryption or MAC algorithm (supported: PBES2 with AES or 3DES, pbeWithSHAAnd3-KeyTripleDES-CBC, pbeWithSHAAnd40BitRC2-CBC, HMAC-SHA1/SHA-256); re-export it with `openssl pkcs12 -export`",
        ),
        other => TokenError::configuration(format!(
            "the file is not a valid PKCS#12 / PFX archive ({other}); export the certificate with its private key as PFX, or use PEM"
        )),
    }
}

struct PemBlock {
    label: String,
    der: Zeroizing<Vec<u8>>,
    encrypted_header: bool,
}

/// Splits PEM text into its blocks, tolerating text between them (`Bag Attributes` lines from
/// `openssl pkcs12 -nodes`), CRLF line ends and any line width.
fn pem_blocks(pem: &[u8]) -> Result<Vec<PemBlock>, TokenError> {
    let text = std::str::from_utf8(pem).map_err(|_| {
        TokenError::configuration("the PEM is not UTF-8 text; it must hold `-----BEGIN ...` blocks")
    })?;
    let mut blocks = Vec::new();
    let mut current: Option<(String, Zeroizing<String>, bool)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_owned(), Zeroizing::new(String::new()), false));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let Some((begin, body, encrypted_header)) = current.take() else {
                continue;
            };
            if begin != label {
                return Err(TokenError::configuration(format!(
                    "the PEM block BEGIN {begin} ends with END {label}; the PEM is damaged"
                )));
            }
            let der = Zeroizing::new(STANDARD.decode(body.as_bytes()).map_err(|_| {
                TokenError::configuration(format!(
                    "the PEM block {label} is not valid base64; the PEM is damaged"
                ))
            })?);
            blocks.push(PemBlock {
                label: begin,
                der,
                encrypted_header,
            });
        } else if let Some((_, body, encrypted_header)) = current.as_mut() {
            if line.contains(':') {
                // RFC 1421 headers (Proc-Type, DEK-Info) of legacy encrypted keys.
                if line.starts_with("Proc-Type:") && line.contains("ENCRYPTED") {
                    *encrypted_header = true;
                }
            } else {
                body.push_str(line);
            }
        }
    }
    if let Some((label, _, _)) = current {
        return Err(TokenError::configuration(format!(
            "the PEM block BEGIN {label} has no END line; the PEM is truncated"
        )));
    }
    Ok(blocks)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_crlf_and_text_between_blocks() {
        let pem = b"Bag Attributes\r\n    localKeyId: 01\r\n-----BEGIN X-----\r\nAQID\r\n-----END X-----\r\n";
        let blocks = pem_blocks(pem).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "X");
        assert_eq!(&blocks[0].der[..], &[1, 2, 3]);
        assert!(pem_blocks(b"-----BEGIN X-----\nAQID\n").is_err());
        assert!(pem_blocks(b"-----BEGIN X-----\nAQID\n-----END Y-----\n").is_err());
    }
}
