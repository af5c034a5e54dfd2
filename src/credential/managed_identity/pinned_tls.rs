//! Service Fabric's TLS (default transport): its identity endpoint's certificate is self-signed,
//! so it is trusted by its SHA-1 thumbprint, `IDENTITY_SERVER_THUMBPRINT`, as MSAL checks it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha1::{Digest, Sha1};

use crate::error::TokenError;

/// A TLS configuration that trusts exactly the certificate whose SHA-1 thumbprint is
/// `thumbprint` (40 uppercase hex digits), and still checks that the server holds its key.
pub(super) fn config(thumbprint: &str) -> Result<rustls::ClientConfig, TokenError> {
    let mut pin = [0u8; 20];
    for (i, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&thumbprint[2 * i..2 * i + 2], 16).map_err(|_| {
            TokenError::configuration("IDENTITY_SERVER_THUMBPRINT is not 40 hex digits")
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            TokenError::configuration("could not set up TLS for Service Fabric").with_source(e)
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate { pin, provider }))
        .with_no_client_auth();
    Ok(config)
}

/// Trusts the one certificate Service Fabric names by thumbprint: its identity endpoint's
/// certificate is self-signed, so no CA could vouch for it.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 20],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha1::digest(end_entity.as_ref()).as_slice() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn fixture_der() -> Vec<u8> {
        let pem = std::fs::read_to_string(format!(
            "{}/tests/fixtures/cert.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let b64: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    fn verify(pin: [u8; 20], der: &[u8]) -> Result<ServerCertVerified, rustls::Error> {
        let v = PinnedCertificate {
            pin,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        };
        v.verify_server_cert(
            &CertificateDer::from(der.to_vec()),
            &[],
            &ServerName::try_from("10.0.0.4").unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn trusts_only_the_certificate_with_the_pinned_thumbprint() {
        let der = fixture_der();
        // The thumbprint as openssl computed it when the fixture was made.
        let thumbprint = std::fs::read_to_string(format!(
            "{}/tests/fixtures/cert.sha1",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let config = config(thumbprint.trim());
        assert!(config.is_ok());
        let pin: [u8; 20] = Sha1::digest(&der).into();
        let hex: String = pin.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, thumbprint.trim());
        assert!(verify(pin, &der).is_ok());
        let mut other = pin;
        other[0] ^= 1;
        assert!(verify(other, &der).is_err());
    }
}
