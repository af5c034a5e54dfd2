//! X.509 certificates: parsing registered credentials, and [`TestCertificate`].

use der::{Decode as _, Encode as _};
use getrandom::SysRng;
use getrandom::rand_core::UnwrapErr;
use rsa::pkcs8::{DecodePublicKey as _, EncodePrivateKey as _, LineEnding};
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use rsa::{PrivateKey, PublicKey, pkcs1v15, pss};
use serde_json::{Value, json};
use sha1::Digest as _;
use sha2::Sha256;
use x509_cert::Certificate;

use crate::util::{b64url, guid, unix_now};

/// A registered certificate credential, parsed.
#[derive(Clone, Debug)]
pub(crate) struct CertInfo {
    /// base64url SHA-1 of the DER (`x5t`).
    pub(crate) x5t: String,
    /// base64url SHA-256 of the DER (`x5t#S256`).
    pub(crate) x5t_s256: String,
    pub(crate) public_key: PublicKey,
    /// The subject's common name, if any.
    pub(crate) subject_cn: Option<String>,
}

/// Parses a DER certificate with an RSA public key.
pub(crate) fn parse_certificate(der_bytes: &[u8]) -> Result<CertInfo, String> {
    let cert =
        Certificate::from_der(der_bytes).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki_der = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| format!("cannot re-encode the public key: {e}"))?;
    let public_key = PublicKey::from_public_key_der(&spki_der)
        .map_err(|e| format!("the certificate's key is not an RSA key: {e}"))?;
    let subject_cn = common_name(cert.tbs_certificate().subject());
    Ok(CertInfo {
        x5t: b64url(&sha1::Sha1::digest(der_bytes)),
        x5t_s256: b64url(&Sha256::digest(der_bytes)),
        public_key,
        subject_cn,
    })
}

fn common_name(name: &x509_cert::name::Name) -> Option<String> {
    use der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    const CN: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    name.iter().find_map(|atv| {
        if atv.oid != CN {
            return None;
        }
        let v = &atv.value;
        v.decode_as::<Utf8StringRef<'_>>()
            .map(|s| s.as_str().to_owned())
            .or_else(|_| {
                v.decode_as::<PrintableStringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
            })
            .or_else(|_| {
                v.decode_as::<Ia5StringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
            })
            .ok()
    })
}

/// A self-signed RSA certificate with its private key, for tests of
/// certificate credentials ([`App::with_certificate`](crate::App::with_certificate)).
///
/// ```no_run
/// use entra_emulator::{App, Emulator, TestCertificate};
///
/// # async fn demo() {
/// let emulator = Emulator::start().await;
/// let cert = TestCertificate::new("my-daemon");
/// let app = emulator.register_app(
///     &emulator.tenant_id(),
///     App::new("daemon").with_certificate(cert.der().to_vec()),
/// );
/// let assertion = cert.client_assertion(&app.client_id, &emulator.token_url(&app.tenant_id));
/// // POST client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
/// // and client_assertion=<assertion> to the token URL.
/// # let _ = assertion;
/// # }
/// ```
#[derive(Clone)]
pub struct TestCertificate {
    key: PrivateKey,
    der: Vec<u8>,
    info: CertInfo,
}

impl std::fmt::Debug for TestCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCertificate")
            .field("subject_cn", &self.info.subject_cn)
            .field("x5t#S256", &self.info.x5t_s256)
            .finish_non_exhaustive()
    }
}

impl TestCertificate {
    /// Generates a 2048-bit RSA key and a self-signed certificate for
    /// `CN=<subject_cn>`, valid from an hour ago for a year.
    ///
    /// # Panics
    ///
    /// If `subject_cn` cannot be used in a distinguished name (e.g. it contains `,` or `=`).
    pub fn new(subject_cn: &str) -> TestCertificate {
        use std::str::FromStr as _;
        use x509_cert::builder::{Builder as _, CertificateBuilder};
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        use x509_cert::time::Validity;

        let key = PrivateKey::new(&mut SysRng, 2048)
            .unwrap_or_else(|e| panic!("entra-emulator: RSA key generation failed: {e}"));
        let signer = pkcs1v15::SigningKey::<Sha256>::new(key.clone());
        let subject = Name::from_str(&format!("CN={subject_cn}"))
            .unwrap_or_else(|e| panic!("entra-emulator: bad subject CN {subject_cn:?}: {e}"));
        let mut serial = *uuid::Uuid::new_v4().as_bytes();
        serial[0] &= 0x7f;
        let serial = SerialNumber::new(&serial)
            .unwrap_or_else(|e| panic!("entra-emulator: serial number: {e}"));
        let now = unix_now();
        let not_before = std::time::Duration::from_secs(now.saturating_sub(3600));
        let not_after = std::time::Duration::from_secs(now + 365 * 86_400);
        let validity = Validity::new(
            x509_cert::time::Time::try_from(std::time::UNIX_EPOCH + not_before)
                .unwrap_or_else(|e| panic!("entra-emulator: validity: {e}")),
            x509_cert::time::Time::try_from(std::time::UNIX_EPOCH + not_after)
                .unwrap_or_else(|e| panic!("entra-emulator: validity: {e}")),
        );
        let spki = SubjectPublicKeyInfoOwned::from_key(&key.to_public_key())
            .unwrap_or_else(|e| panic!("entra-emulator: public key encoding: {e}"));
        let cert = CertificateBuilder::new(SelfSignedLeaf { subject }, serial, validity, spki)
            .and_then(|b| {
                b.build_with_rng::<_, pkcs1v15::Signature, _>(&signer, &mut UnwrapErr(SysRng))
            })
            .unwrap_or_else(|e| panic!("entra-emulator: building the certificate failed: {e}"));
        let der = cert
            .to_der()
            .unwrap_or_else(|e| panic!("entra-emulator: certificate encoding: {e}"));
        let info = parse_certificate(&der)
            .unwrap_or_else(|e| panic!("entra-emulator: generated certificate: {e}"));
        TestCertificate { key, der, info }
    }

    /// The certificate, DER-encoded (what [`App::with_certificate`](crate::App::with_certificate) takes).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate as PEM (`-----BEGIN CERTIFICATE-----`).
    pub fn certificate_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.der)
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn private_key_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .unwrap_or_else(|e| panic!("entra-emulator: PKCS#8 encoding failed: {e}"))
    }

    /// The private key as PKCS#8 DER.
    pub fn private_key_der(&self) -> Vec<u8> {
        self.key
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_else(|e| panic!("entra-emulator: PKCS#8 encoding failed: {e}"))
    }

    /// The private key PEM followed by the certificate PEM, the bundle format
    /// Azure tooling commonly uses.
    pub fn pem_bundle(&self) -> String {
        format!("{}{}", self.private_key_pem(), self.certificate_pem())
    }

    /// The SHA-1 thumbprint, base64url without padding (the `x5t` header value).
    pub fn x5t(&self) -> String {
        self.info.x5t.clone()
    }

    /// The SHA-256 thumbprint, base64url without padding (the `x5t#S256` header value).
    pub fn x5t_s256(&self) -> String {
        self.info.x5t_s256.clone()
    }

    /// The certificate as an `x5c` header value: standard base64 DER, in an array.
    pub fn x5c(&self) -> Value {
        use base64::Engine as _;
        json!([base64::engine::general_purpose::STANDARD.encode(&self.der)])
    }

    /// A valid client assertion for `client_id` at `token_url`: RS256,
    /// `x5t#S256` header, `aud` = `token_url`, `iss` = `sub` = `client_id`,
    /// a fresh `jti`, valid for 10 minutes.
    pub fn client_assertion(&self, client_id: &str, token_url: &str) -> String {
        let now = unix_now();
        self.sign_jwt(
            &json!({"alg": "RS256", "typ": "JWT", "x5t#S256": self.info.x5t_s256}),
            &json!({
                "aud": token_url,
                "iss": client_id,
                "sub": client_id,
                "jti": guid(),
                "iat": now,
                "nbf": now,
                "exp": now + 600,
            }),
        )
    }

    /// Signs arbitrary `claims` under an arbitrary protected `header` with this
    /// certificate's key: RSASSA-PSS/SHA-256 if `header.alg` is `"PS256"`,
    /// else RSASSA-PKCS1-v1_5/SHA-256 (whatever `alg` says). For crafting
    /// malformed or hostile assertions.
    pub fn sign_jwt(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = if header.get("alg").and_then(Value::as_str) == Some("PS256") {
            pss::SigningKey::<Sha256>::new(self.key.clone())
                .sign_with_rng(&mut UnwrapErr(SysRng), input.as_bytes())
                .to_vec()
        } else {
            pkcs1v15::SigningKey::<Sha256>::new(self.key.clone())
                .sign_with_rng(&mut UnwrapErr(SysRng), input.as_bytes())
                .to_vec()
        };
        format!("{input}.{}", b64url(&sig))
    }
}

/// The extensions of an end-entity certificate that signs for itself (what
/// `New-SelfSignedCertificate` and `openssl req -x509` make for a client): key
/// identifiers, `CA:FALSE`, and signing-only key usage. x509-cert 0.3 dropped its
/// generic leaf profile; its CA/B Forum profiles are for CAs and TLS servers.
struct SelfSignedLeaf {
    subject: x509_cert::name::Name,
}

impl x509_cert::builder::profile::BuilderProfile for SelfSignedLeaf {
    fn get_issuer(&self, subject: &x509_cert::name::Name) -> x509_cert::name::Name {
        subject.clone()
    }

    fn get_subject(&self) -> x509_cert::name::Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: spki::SubjectPublicKeyInfoRef<'_>,
        issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<x509_cert::ext::Extension>> {
        #![allow(
            clippy::vec_init_then_push,
            reason = "each extension is encoded seeing the ones pushed before it"
        )]
        use x509_cert::ext::ToExtension as _;
        use x509_cert::ext::pkix::{
            AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
        };
        let mut extensions = Vec::new();
        extensions
            .push(SubjectKeyIdentifier::try_from(spk)?.to_extension(tbs.subject(), &extensions)?);
        extensions.push(
            AuthorityKeyIdentifier::try_from(issuer_spk)?
                .to_extension(tbs.subject(), &extensions)?,
        );
        extensions.push(
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_extension(tbs.subject(), &extensions)?,
        );
        extensions.push(
            KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation)
                .to_extension(tbs.subject(), &extensions)?,
        );
        Ok(extensions)
    }
}

fn pem_block(label: &str, der_bytes: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der_bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
