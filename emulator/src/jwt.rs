//! Minimal JWS compact serialisation: RS256 signing, RS256/PS256 verification, JWK export.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use getrandom::SysRng;
use getrandom::rand_core::UnwrapErr;
use rsa::pkcs1v15;
use rsa::pss;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Verifier as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{BoxedUint, PrivateKey, PublicKey};
use serde_json::{Map, Value, json};
use sha1::Digest as _;
use sha2::Sha256;

use crate::util::b64url;

/// An RSA key pair able to sign RS256 JWTs, with its key id.
pub(crate) struct SigningKey {
    signer: pkcs1v15::SigningKey<Sha256>,
    public: PublicKey,
    kid: String,
}

impl SigningKey {
    /// Generates a fresh 2048-bit key. Slow-ish (a fraction of a second optimised).
    pub(crate) fn generate() -> SigningKey {
        let private = PrivateKey::new(&mut SysRng, 2048)
            .unwrap_or_else(|e| panic!("entra-emulator: RSA key generation failed: {e}"));
        SigningKey::from_private(private)
    }

    /// Wraps an existing private key.
    pub(crate) fn from_private(private: PrivateKey) -> SigningKey {
        let public = private.to_public_key();
        // Like Entra's `kid`/`x5t`: base64url of a SHA-1 thumbprint (here of the modulus).
        let kid = b64url(&sha1::Sha1::digest(public.n_bytes()));
        SigningKey {
            signer: pkcs1v15::SigningKey::<Sha256>::new(private),
            public,
            kid,
        }
    }

    /// The key id.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub(crate) fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The public key as a JWK (`kty`, `use`, `kid`, `x5t`, `n`, `e`).
    pub(crate) fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": b64url(&self.public.n_bytes()),
            "e": b64url(&self.public.e_bytes()),
        })
    }

    /// Signs `claims` with the given protected `header` (which must say RS256).
    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        let mut input = b64url(header.to_string().as_bytes());
        input.push('.');
        input.push_str(&b64url(claims.to_string().as_bytes()));
        // The RNG blinds the private-key operation (as the library's signer does).
        let sig = self
            .signer
            .sign_with_rng(&mut UnwrapErr(SysRng), input.as_bytes());
        input.push('.');
        input.push_str(&b64url(&sig.to_bytes()));
        input
    }
}

/// The emulator's process-wide token signing key (generated once).
pub(crate) fn emulator_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate)
}

/// A JWT split into its decoded parts; the signature is not yet checked.
pub(crate) struct Parsed {
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Errors describe what is malformed.
pub(crate) fn parse(token: &str) -> Result<Parsed, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWS in compact serialization (three dot-separated parts)");
    };
    let decode_obj = |part: &str| -> Option<Map<String, Value>> {
        let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    };
    let header = decode_obj(h).ok_or("the token header is not base64url-encoded JSON")?;
    let claims = decode_obj(c).ok_or("the token payload is not base64url-encoded JSON")?;
    let signature = URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "the token signature is not base64url-encoded")?;
    Ok(Parsed {
        header,
        claims,
        signing_input: format!("{h}.{c}"),
        signature,
    })
}

/// Signature algorithms the emulator verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Ps256,
}

impl Parsed {
    /// The `alg` header, if it is one we verify.
    pub(crate) fn alg(&self) -> Option<Alg> {
        match self.header.get("alg").and_then(Value::as_str) {
            Some("RS256") => Some(Alg::Rs256),
            Some("PS256") => Some(Alg::Ps256),
            _ => None,
        }
    }

    /// A string header parameter.
    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// A string claim.
    pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric claim (integer or float seconds; strings of digits tolerated).
    pub(crate) fn claim_secs(&self, name: &str) -> Option<i64> {
        match self.claims.get(name)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Verifies the signature with `key` using `alg`.
    pub(crate) fn verify(&self, alg: Alg, key: &PublicKey) -> bool {
        let msg = self.signing_input.as_bytes();
        match alg {
            Alg::Rs256 => {
                let Ok(sig) = pkcs1v15::Signature::try_from(self.signature.as_slice()) else {
                    return false;
                };
                pkcs1v15::VerifyingKey::<Sha256>::new(key.clone())
                    .verify(msg, &sig)
                    .is_ok()
            }
            Alg::Ps256 => {
                let Ok(sig) = pss::Signature::try_from(self.signature.as_slice()) else {
                    return false;
                };
                pss::VerifyingKey::<Sha256>::new(key.clone())
                    .verify(msg, &sig)
                    .is_ok()
            }
        }
    }
}

/// Builds an RSA public key from a JWK object (`kty` RSA, `n`, `e`).
pub(crate) fn public_key_from_jwk(jwk: &Value) -> Option<PublicKey> {
    if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
        return None;
    }
    let n = URL_SAFE_NO_PAD
        .decode(jwk.get("n")?.as_str()?.trim_end_matches('='))
        .ok()?;
    let e = URL_SAFE_NO_PAD
        .decode(jwk.get("e")?.as_str()?.trim_end_matches('='))
        .ok()?;
    PublicKey::new(
        BoxedUint::from_be_slice_vartime(&n),
        BoxedUint::from_be_slice_vartime(&e),
    )
    .ok()
}
