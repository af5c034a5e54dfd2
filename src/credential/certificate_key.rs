//! [`ClientCertificate`]: an X.509 certificate and its RSA private key, from PEM or PKCS#12.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pkcs8::der::{DateTime, Decode, Encode};
use pkcs8::{DecodePublicKey, ObjectIdentifier, PrivateKeyInfoRef};
use rsa::PrivateKey as RsaPrivateKey;
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

/// The most key-derivation (PBKDF2) iterations a password-protected key may ask for. A key file
/// sets its own cost, so without a bound a crafted one stalls the loading thread for minutes;
/// OpenSSL writes 2,048 by default (PKCS#12 tools up to 600,000). p12-keystore applies the same
/// bound to PKCS#12 / PFX archives.
const MAX_KDF_ITERATIONS: u32 = 1_000_000;

/// The most work a scrypt-encrypted key may ask for, as scrypt's memory times its passes:
/// `128·N·r` bytes, `p` times over. The key file sets N, r and p itself, and the key is derived
/// before the password can be checked, so without a bound a crafted file asks for petabytes
/// (the allocation aborts the process) or minutes of CPU. `openssl pkcs8 -topk8 -scrypt` writes
/// N=16384, r=8, p=1 (16 MiB once), and OpenSSL 3 refuses to write or read more than 32 MiB of
/// scrypt memory; RustCrypto's pkcs8 writes the same defaults. 256 MiB is 16 times those.
const MAX_SCRYPT_COST: u64 = 256 * 1024 * 1024;

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
        // p12-keystore bounds scrypt too, but at 1 GiB sixteen times over, and lets N=0 through
        // to a panic in pkcs5: every scheme readable before decryption gets our bound first.
        check_pkcs12_kdf_costs(der, 0)?;
        // Strict: a key without its certificate is not imported (and is then "no private key
        // with its certificate" below).
        let store = p12_keystore::KeyStore::from_pkcs12(
            der,
            password,
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .map_err(pkcs12_error)?;
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
        let key = rsa_key_from_pkcs8(chain.key().as_der(), "the PFX")?;
        let certificates: Vec<Vec<u8>> =
            chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
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
                    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(&block.der[..])
                        .map_err(|e| {
                            TokenError::configuration(format!(
                                "the ENCRYPTED PRIVATE KEY block is not valid encrypted PKCS#8 ({e})"
                            ))
                        })?;
                    check_kdf_cost(&info.encryption_algorithm, ENCRYPTED_PEM)?;
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
            let spki = &cert.tbs_certificate().subject_public_key_info();
            if spki.algorithm.oid != RSA_ENCRYPTION && spki.algorithm.oid != RSASSA_PSS {
                continue;
            }
            let spki_der = spki.to_der().map_err(|e| {
                TokenError::configuration(format!("cannot encode the certificate's key ({e})"))
            })?;
            if let Ok(cert_key) = rsa::PublicKey::from_public_key_der(&spki_der)
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
        let validity = &cert.tbs_certificate().validity();
        let inner = Inner {
            key,
            subject: cert.tbs_certificate().subject().to_string(),
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
    let info = PrivateKeyInfoRef::try_from(der).map_err(|e| {
        TokenError::configuration(format!(
            "the private key in {source} is not a valid PKCS#8 key ({e})"
        ))
    })?;
    match info.algorithm.oid {
        RSA_ENCRYPTION => RsaPrivateKey::from_pkcs1_der(info.private_key.as_bytes()).map_err(|e| {
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

/// Refuses an encrypted key whose key derivation would cost more than [`MAX_KDF_ITERATIONS`]
/// (PBKDF2) or [`MAX_SCRYPT_COST`] (scrypt), or whose scrypt parameters are not scrypt's (a cost
/// N that is not a power of two above 1, a zero r or p): the derivation runs before the password
/// is checked, and pkcs5 panics on N=0.
fn check_kdf_cost(
    scheme: &pkcs8::pkcs5::EncryptionScheme,
    source: KeySource,
) -> Result<(), TokenError> {
    use pkcs8::pkcs5::{EncryptionScheme, pbes2::Kdf};
    let KeySource { what, fix } = source;
    let EncryptionScheme::Pbes2(params) = scheme else {
        return Ok(());
    };
    match &params.kdf {
        Kdf::Pbkdf2(pbkdf2) if pbkdf2.iteration_count > MAX_KDF_ITERATIONS => {
            Err(TokenError::configuration(format!(
                "{what} asks for {} key-derivation iterations, more than the {MAX_KDF_ITERATIONS} accepted; {fix}",
                pbkdf2.iteration_count
            )))
        }
        Kdf::Scrypt(scrypt) => {
            let (n, r, p) = (
                scrypt.cost_parameter,
                u64::from(scrypt.block_size),
                u64::from(scrypt.parallelization),
            );
            if n < 2 || !n.is_power_of_two() || r == 0 || p == 0 {
                return Err(TokenError::configuration(format!(
                    "{what} names scrypt parameters N={n}, r={r}, p={p}, which are not valid (N must be a power of two above 1, r and p at least 1); {fix}"
                )));
            }
            // Saturating: a product past u64 is over the bound all the same.
            let memory = 128u64.saturating_mul(n).saturating_mul(r);
            let cost = memory.saturating_mul(p);
            if cost > MAX_SCRYPT_COST {
                return Err(TokenError::configuration(format!(
                    "{what} asks for scrypt with N=2^{}, r={r}, p={p}: {} of memory (128·N·r) {p} time(s) over, more than the {} accepted; {fix}",
                    n.trailing_zeros(),
                    mebibytes(memory),
                    mebibytes(MAX_SCRYPT_COST)
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `id-PBES2`: the encryption scheme whose key derivation (PBKDF2 or scrypt) a file chooses.
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");

/// How deep [`check_pkcs12_kdf_costs`] looks: a PFX nests its key bags about ten levels down.
const MAX_PKCS12_DEPTH: usize = 16;

/// Applies [`check_kdf_cost`] to every PBES2 scheme in a PKCS#12 archive that can be read before
/// decrypting (the content encryption and the key bags outside it, where OpenSSL puts them),
/// walking the DER, octet strings that hold DER included. Anything that is not DER is left to
/// p12-keystore to refuse.
fn check_pkcs12_kdf_costs(mut der: &[u8], depth: usize) -> Result<(), TokenError> {
    if depth > MAX_PKCS12_DEPTH {
        return Ok(());
    }
    while let Some((tag, content, rest)) = split_tlv(der) {
        match tag {
            // SEQUENCE: an AlgorithmIdentifier naming PBES2 is checked, anything else walked.
            0x30 => {
                let pbes2 = split_tlv(content).is_some_and(|(tag, oid, _)| {
                    tag == 0x06 && ObjectIdentifier::from_bytes(oid).is_ok_and(|oid| oid == PBES2)
                });
                if pbes2 {
                    let scheme = &der[..der.len() - rest.len()];
                    if let Ok(scheme) = pkcs8::pkcs5::EncryptionScheme::from_der(scheme) {
                        check_kdf_cost(&scheme, PKCS12)?;
                    }
                } else {
                    check_pkcs12_kdf_costs(content, depth + 1)?;
                }
            }
            // OCTET STRING (the PFX's data content) and other constructed values.
            0x04 => check_pkcs12_kdf_costs(content, depth + 1)?,
            tag if tag & 0x20 != 0 => check_pkcs12_kdf_costs(content, depth + 1)?,
            _ => {}
        }
        der = rest;
    }
    Ok(())
}

/// The first DER value of `der`: its tag (one byte), content and what follows; `None` when it
/// is not DER (a high tag number, an indefinite or overlong length, a value past the end).
fn split_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut der) = der.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || der.len() < count {
            return None;
        }
        let (bytes, after) = der.split_at(count);
        der = after;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    if der.len() < len {
        return None;
    }
    let (content, rest) = der.split_at(len);
    Some((tag, content, rest))
}

/// Where an encryption scheme was read, and how to re-encrypt it, for [`check_kdf_cost`]'s
/// errors.
#[derive(Clone, Copy)]
struct KeySource {
    what: &'static str,
    fix: &'static str,
}

const ENCRYPTED_PEM: KeySource = KeySource {
    what: "the ENCRYPTED PRIVATE KEY",
    fix: "re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key.enc.pem`",
};

const PKCS12: KeySource = KeySource {
    what: "the PKCS#12 / PFX file",
    fix: "re-export it with `openssl pkcs12 -export`",
};

/// Bytes as MiB (rounded up) for a message.
fn mebibytes(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1024 * 1024))
}

fn pkcs12_error(e: p12_keystore::error::Error) -> TokenError {
    use p12_keystore::error::Error as E;
    match e {
        // p12-keystore's answer to, among others, a key-derivation or MAC iteration count above
        // its bound (1,000,000).
        E::InvalidParameters => TokenError::configuration(format!(
            "the PKCS#12 / PFX file's encryption or MAC parameters are invalid, or ask for more than {MAX_KDF_ITERATIONS} key-derivation iterations; re-export it with `openssl pkcs12 -export`"
        )),
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
            // Sized for the whole text up front: growing the string would free its old buffer
            // (base64 of a private key) unzeroed.
            let body = Zeroizing::new(String::with_capacity(text.len()));
            current = Some((label.to_owned(), body, false));
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

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    }

    /// The fixture's encrypted key re-encoded to ask for `iterations` PBKDF2 rounds (the
    /// ciphertext is unchanged, so only the cap can give the answer quickly).
    #[test]
    fn an_encrypted_key_asking_for_too_many_kdf_iterations_is_refused_before_decrypting() {
        use pkcs8::pkcs5::{EncryptionScheme, pbes2::Kdf};
        let blocks = pem_blocks(&fixture("key.encrypted.pem")).unwrap();
        let mut info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(&blocks[0].der[..]).unwrap();
        let EncryptionScheme::Pbes2(params) = &mut info.encryption_algorithm else {
            panic!("the fixture is PBES2");
        };
        let Kdf::Pbkdf2(kdf) = &mut params.kdf else {
            panic!("the fixture uses PBKDF2");
        };
        kdf.iteration_count = MAX_KDF_ITERATIONS * 2;
        let text = String::from_utf8(fixture("cert.pem")).unwrap()
            + &pem("ENCRYPTED PRIVATE KEY", &info.to_der().unwrap());
        let e = ClientCertificate::from_pem_with_password(text, "fixture-password").unwrap_err();
        assert!(
            e.to_string().contains("2000000 key-derivation iterations"),
            "{e}"
        );
    }

    /// The fixture's encrypted key re-encoded to name scrypt with `n`, `r` and `p` (the
    /// ciphertext is the PBKDF2 one, so a derivation would fail the password anyway: only the
    /// bound can answer without deriving), as an `EncryptedPrivateKeyInfo`.
    fn scrypt_key(n: u64, r: u16, p: u16) -> Vec<u8> {
        use pkcs8::pkcs5::{EncryptionScheme, pbes2};
        let blocks = pem_blocks(&fixture("key.encrypted.pem")).unwrap();
        let mut info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(&blocks[0].der[..]).unwrap();
        let EncryptionScheme::Pbes2(params) = &mut info.encryption_algorithm else {
            panic!("the fixture is PBES2");
        };
        params.kdf = pbes2::Kdf::Scrypt(pbes2::ScryptParams {
            salt: pbes2::Salt::try_from(&[7u8; 16][..]).unwrap(),
            cost_parameter: n,
            block_size: r,
            parallelization: p,
            key_length: None,
        });
        info.to_der().unwrap()
    }

    /// Scrypt parameters past the bound: N=2^40 would allocate 1 PiB (the allocation failure
    /// aborts the process), p=65535 would run N=2^14 65,535 times (minutes), N=0 panics in
    /// pkcs5 (`leading_zeros` underflow).
    const HOSTILE_SCRYPT: [(u64, u16, u16, &str); 4] = [
        (1 << 40, 8, 1, "N=2^40, r=8, p=1: 1073741824 MiB"),
        (1 << 14, 8, u16::MAX, "N=2^14, r=8, p=65535"),
        (1 << 22, 64, 1, "N=2^22, r=64, p=1"),
        (0, 8, 1, "N=0, r=8, p=1, which are not valid"),
    ];

    #[test]
    fn a_pem_key_asking_for_too_much_scrypt_is_refused_before_deriving() {
        for (n, r, p, said) in HOSTILE_SCRYPT {
            let text = String::from_utf8(fixture("cert.pem")).unwrap()
                + &pem("ENCRYPTED PRIVATE KEY", &scrypt_key(n, r, p));
            let e =
                ClientCertificate::from_pem_with_password(text, "fixture-password").unwrap_err();
            assert_eq!(e.kind(), crate::error::TokenErrorKind::Configuration, "{e}");
            assert!(e.message().contains(said), "{said}: {e}");
            assert!(e.message().contains("ENCRYPTED PRIVATE KEY"), "{e}");
        }
    }

    /// What `openssl pkcs8 -topk8 -scrypt` writes (N=16384, r=8, p=1) loads, and the largest
    /// cost accepted is still only refused by the (wrong) password, not by the bound.
    #[test]
    fn scrypt_keys_as_openssl_writes_them_load() {
        let certificate = ClientCertificate::from_pem_with_password(
            String::from_utf8(fixture("cert.pem")).unwrap()
                + &String::from_utf8(fixture("key.scrypt.pem")).unwrap(),
            "fixture-password",
        )
        .unwrap();
        assert_eq!(certificate.subject(), "CN=tower-entra-test");
        use pkcs8::pkcs5::EncryptionScheme;
        for (n, r, p) in [(1 << 14, 8, 1), (1 << 18, 8, 1), (1 << 14, 8, 16)] {
            let der = scrypt_key(n, r, p);
            let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(&der[..]).unwrap();
            assert!(matches!(
                info.encryption_algorithm,
                EncryptionScheme::Pbes2(_)
            ));
            check_kdf_cost(&info.encryption_algorithm, ENCRYPTED_PEM).unwrap();
        }
    }

    /// A PFX holding a shrouded key bag (outside any encrypted content, where OpenSSL puts it)
    /// encrypted with scrypt: p12-keystore's own bound lets p=16 at 1 GiB through (minutes of
    /// CPU) and N=0 into pkcs5's panic.
    #[test]
    fn a_pfx_asking_for_too_much_scrypt_is_refused_before_deriving() {
        // OIDs: data (1.2.840.113549.1.7.1), pkcs8ShroudedKeyBag (1.2.840.113549.1.12.10.1.2).
        const DATA: &[u8] = &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
        ];
        const SHROUDED_KEY_BAG: &[u8] = &[
            0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
        ];
        let tagged =
            |tag: u8, body: &[u8]| [vec![tag], der_len(body.len()), body.to_vec()].concat();
        let data = |content: &[u8]| sequence(&[DATA, &tagged(0xa0, &tagged(0x04, content))]);
        for (n, r, p, said) in [
            (1u64 << 20, 8u16, 16u16, "N=2^20, r=8, p=16"),
            (0, 8, 1, "N=0, r=8, p=1, which are not valid"),
        ] {
            let bag = sequence(&[SHROUDED_KEY_BAG, &tagged(0xa0, &scrypt_key(n, r, p))]);
            let safe_contents = sequence(&[&bag]);
            let authenticated_safe = sequence(&[&data(&safe_contents)]);
            let pfx = sequence(&[&[0x02, 0x01, 0x03], &data(&authenticated_safe)]);
            let e = ClientCertificate::from_pkcs12(&pfx, Some("fixture-password")).unwrap_err();
            assert_eq!(e.kind(), crate::error::TokenErrorKind::Configuration, "{e}");
            assert!(e.message().contains(said), "{said}: {e}");
            assert!(e.message().contains("PKCS#12"), "{e}");
        }
        // The fixtures, PBES2 with PBKDF2 throughout, pass the walk.
        for name in ["client-aes.pfx", "client-legacy.pfx", "chain.pfx"] {
            check_pkcs12_kdf_costs(&fixture(name), 0).unwrap();
        }
    }

    /// A DER length.
    fn der_len(len: usize) -> Vec<u8> {
        match len {
            0..0x80 => vec![len as u8],
            0x80..0x100 => vec![0x81, len as u8],
            _ => vec![0x82, (len >> 8) as u8, len as u8],
        }
    }

    /// Splits DER `input` into its top-level TLVs (short lengths and 1-2 byte long ones).
    fn tlvs(mut input: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (header, len) = match input[1] {
                n if n < 0x80 => (2, n as usize),
                0x81 => (3, input[2] as usize),
                0x82 => (4, ((input[2] as usize) << 8) | input[3] as usize),
                n => panic!("length form {n:#x}"),
            };
            out.push(&input[..header + len]);
            input = &input[header + len..];
        }
        out
    }

    fn sequence(parts: &[&[u8]]) -> Vec<u8> {
        let body = parts.concat();
        [vec![0x30], der_len(body.len()), body].concat()
    }

    #[test]
    fn a_pfx_asking_for_too_many_mac_iterations_is_refused() {
        // PFX ::= SEQUENCE { version, authSafe, macData SEQUENCE { mac, macSalt, iterations } }
        let pfx = fixture("client-aes.pfx");
        let pfx_body = tlvs(&pfx)[0];
        let header = if pfx_body[1] == 0x82 { 4 } else { 3 };
        let fields = tlvs(&pfx_body[header..]);
        assert_eq!(fields.len(), 3, "version, authSafe, macData");
        let mac_header = if fields[2][1] == 0x82 {
            4
        } else if fields[2][1] == 0x81 {
            3
        } else {
            2
        };
        let mac = tlvs(&fields[2][mac_header..]);
        assert_eq!(mac.len(), 3, "mac, macSalt, iterations");
        // INTEGER 2,000,000.
        let iterations = [0x02, 0x03, 0x1e, 0x84, 0x80];
        let patched = sequence(&[
            fields[0],
            fields[1],
            &sequence(&[mac[0], mac[1], &iterations]),
        ]);
        let e = ClientCertificate::from_pkcs12(&patched, Some("fixture-password")).unwrap_err();
        assert!(e.to_string().contains("key-derivation iterations"), "{e}");
    }
}
