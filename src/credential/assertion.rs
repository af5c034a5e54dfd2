//! The signed client assertion (RFC 7523 `private_key_jwt`) of a certificate credential.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use getrandom::SysRng;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::credential::certificate_key::ClientCertificate;
use crate::error::TokenError;

/// How long an assertion is valid: Entra's document asks for 5 to 10 minutes after `nbf`.
pub(crate) const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// The signature algorithm of a certificate credential's client assertion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256, the certificate named by `x5t#S256` (the SHA-256 thumbprint).
    /// What Entra's certificate-credentials document asks for today. The default.
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, the certificate named by `x5t` (the SHA-1 thumbprint).
    /// For identity providers or older set-ups that expect RS256 with a SHA-1 `x5t`.
    Rs256,
}

impl AssertionAlgorithm {
    /// The JOSE name: `PS256` or `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlgorithm::Ps256 => "PS256",
            AssertionAlgorithm::Rs256 => "RS256",
        }
    }
}

/// Signs a new assertion: fresh `jti`, `nbf` = `iat` = `now`, `exp` = `now` + 10 minutes.
pub(crate) fn sign_assertion(
    certificate: &ClientCertificate,
    algorithm: AssertionAlgorithm,
    send_chain: bool,
    client_id: &str,
    audience: &str,
    now: SystemTime,
) -> Result<Zeroizing<String>, TokenError> {
    let iat = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| {
            TokenError::configuration("the system clock is before 1970; set the clock (NTP)")
        })?
        .as_secs();
    let mut header = Map::new();
    header.insert("alg".into(), algorithm.as_str().into());
    header.insert("typ".into(), "JWT".into());
    match algorithm {
        AssertionAlgorithm::Ps256 => {
            header.insert(
                "x5t#S256".into(),
                URL_SAFE_NO_PAD.encode(certificate.sha256()).into(),
            );
        }
        AssertionAlgorithm::Rs256 => {
            header.insert(
                "x5t".into(),
                URL_SAFE_NO_PAD.encode(certificate.sha1()).into(),
            );
        }
    }
    if send_chain {
        let x5c: Vec<Value> = certificate
            .chain()
            .iter()
            .map(|der| Value::String(STANDARD.encode(der)))
            .collect();
        header.insert("x5c".into(), Value::Array(x5c));
    }
    let claims = json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": iat,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME.as_secs(),
    });
    let header = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| TokenError::configuration(format!("cannot encode the assertion ({e})")))?;
    let claims = serde_json::to_vec(&claims)
        .map_err(|e| TokenError::configuration(format!("cannot encode the assertion ({e})")))?;
    let mut jwt = Zeroizing::new(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    ));
    let key = certificate.key().clone();
    // Both signers take the RNG: it blinds the private-key operation (RSA without blinding
    // leaks timing about the key), and PSS draws its salt from it.
    let signature = match algorithm {
        AssertionAlgorithm::Ps256 => rsa::pss::SigningKey::<Sha256>::new(key)
            .try_sign_with_rng(&mut SysRng, jwt.as_bytes())
            .map(|s| s.to_vec()),
        AssertionAlgorithm::Rs256 => rsa::pkcs1v15::SigningKey::<Sha256>::new(key)
            .try_sign_with_rng(&mut SysRng, jwt.as_bytes())
            .map(|s| s.to_vec()),
    }
    .map_err(|e| TokenError::configuration(format!("cannot sign the client assertion ({e})")))?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jwt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::signature::Verifier;

    fn certificate() -> ClientCertificate {
        ClientCertificate::from_pem(include_bytes!("../../tests/fixtures/client-pkcs8.pem"))
            .unwrap()
    }

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn ps256_header_claims_and_signature() {
        let cert = certificate();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let aud = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
        let jwt = sign_assertion(&cert, AssertionAlgorithm::Ps256, false, "cid", aud, now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        let sha256 = URL_SAFE_NO_PAD.encode(cert.sha256());
        assert_eq!(
            header,
            json!({"alg": "PS256", "typ": "JWT", "x5t#S256": sha256})
        );
        let claims = decode(parts[1]);
        let jti = claims["jti"].as_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&jti).is_ok());
        assert_eq!(
            claims,
            json!({"aud": aud, "iss": "cid", "sub": "cid", "jti": jti,
                   "nbf": 1_700_000_000u64, "iat": 1_700_000_000u64, "exp": 1_700_000_600u64})
        );
        let signature =
            rsa::pss::Signature::try_from(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()[..]).unwrap();
        let verifier = rsa::pss::VerifyingKey::<Sha256>::new(cert.key().to_public_key());
        let signed = format!("{}.{}", parts[0], parts[1]);
        verifier.verify(signed.as_bytes(), &signature).unwrap();
        assert!(verifier.verify(b"tampered", &signature).is_err());
    }

    #[test]
    fn rs256_uses_sha1_x5t_and_pkcs1_signature() {
        let cert = certificate();
        let jwt = sign_assertion(
            &cert,
            AssertionAlgorithm::Rs256,
            false,
            "cid",
            "aud",
            SystemTime::now(),
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let header = decode(parts[0]);
        assert_eq!(
            header,
            json!({"alg": "RS256", "typ": "JWT", "x5t": URL_SAFE_NO_PAD.encode(cert.sha1())})
        );
        let signature =
            rsa::pkcs1v15::Signature::try_from(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()[..])
                .unwrap();
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(cert.key().to_public_key())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn x5c_is_standard_base64_der_leaf_first() {
        let cert =
            ClientCertificate::from_pem(include_bytes!("../../tests/fixtures/chain.pem")).unwrap();
        let jwt = sign_assertion(
            &cert,
            AssertionAlgorithm::Ps256,
            true,
            "c",
            "a",
            SystemTime::now(),
        )
        .unwrap();
        let header = decode(jwt.split('.').next().unwrap());
        let x5c: Vec<Vec<u8>> = header["x5c"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| STANDARD.decode(v.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(x5c, cert.chain());
        assert_eq!(x5c.len(), 2);
        assert_eq!(x5c[0], cert.certificate_der());
    }

    #[test]
    fn every_assertion_has_a_new_jti() {
        let cert = certificate();
        let jti = || {
            let jwt = sign_assertion(
                &cert,
                AssertionAlgorithm::Ps256,
                false,
                "c",
                "a",
                SystemTime::now(),
            )
            .unwrap();
            decode(jwt.split('.').nth(1).unwrap())["jti"].clone()
        };
        assert_ne!(jti(), jti());
    }
}
