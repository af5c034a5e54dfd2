//! [`EnvironmentCredential`]: configuration from the Azure SDK's environment variables.

use futures::future::BoxFuture;
use zeroize::Zeroizing;

#[cfg(feature = "certificate")]
use crate::credential::CertificateAssertion;
use crate::credential::authentication::private::Authenticate;
use crate::credential::authentication::{ClientAuthentication, ClientProof};
use crate::credential::client::ConfidentialClient;
use crate::credential::{
    ClientSecret, ConfidentialClientCredential, ConfidentialClientCredentialBuilder, Credential,
    TokenRequest,
};
use crate::error::TokenError;
use crate::token::AccessToken;
use crate::transport::{TokenTransport, TransportChoice};

/// A credential configured by the environment variables the Azure SDKs read.
///
/// | variable | meaning |
/// |---|---|
/// | `AZURE_TENANT_ID` | the Directory (tenant) ID (required) |
/// | `AZURE_CLIENT_ID` | the Application (client) ID (required) |
/// | `AZURE_CLIENT_SECRET` | a client secret's Value |
/// | `AZURE_CLIENT_CERTIFICATE_PATH` | a PEM (certificate + RSA key) or PKCS#12 / PFX file, told apart by content |
/// | `AZURE_CLIENT_CERTIFICATE_PASSWORD` | the PFX's password, or the encrypted PKCS#8 key's (optional) |
/// | `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` | `true` / `1` to send the `x5c` chain, for subject name + issuer authentication (optional) |
/// | `AZURE_AUTHORITY_HOST` | optional; default `https://login.microsoftonline.com` |
///
/// `AZURE_CLIENT_SECRET` chooses [`ClientSecretCredential`](crate::ClientSecretCredential),
/// `AZURE_CLIENT_CERTIFICATE_PATH` [`ClientCertificateCredential`](crate::ClientCertificateCredential).
/// `AZURE_FEDERATED_TOKEN_FILE` is not read here (as in the Azure SDKs): it is
/// [`WorkloadIdentityCredential`](crate::WorkloadIdentityCredential)'s.
///
/// With neither variable set, the credential is
/// [`Unavailable`](crate::TokenErrorKind::Unavailable): nothing here says to use it. Setting both
/// is ambiguous and a [`Configuration`](crate::TokenErrorKind::Configuration) error, as is a
/// half-set configuration (`AZURE_CLIENT_CERTIFICATE_PASSWORD` or
/// `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` without `AZURE_CLIENT_CERTIFICATE_PATH`, a chain flag
/// that is not a boolean). A missing or empty required variable is an error that names it. The
/// certificate file is read here, and again when it changes (as
/// [`CertificateAssertion::from_file`](crate::CertificateAssertion::from_file) says).
///
/// ```no_run
/// let credential = tower_entra::EnvironmentCredential::new()?;
/// let provider = tower_entra::TokenProvider::new(credential, "https://graph.microsoft.com/.default")?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
#[derive(Debug, Clone)]
pub struct EnvironmentCredential {
    inner: ConfidentialClientCredential<FromEnvironment>,
}

/// The source of client authentication the variables chose.
#[derive(Debug, Clone)]
enum FromEnvironment {
    Secret(ClientSecret),
    #[cfg(feature = "certificate")]
    Certificate(CertificateAssertion),
}

impl ClientAuthentication for FromEnvironment {}

impl Authenticate for FromEnvironment {
    fn check(&self) -> Result<(), TokenError> {
        match self {
            FromEnvironment::Secret(s) => s.check(),
            #[cfg(feature = "certificate")]
            FromEnvironment::Certificate(c) => c.check(),
        }
    }

    fn authenticate<'a>(
        &'a self,
        client: &'a ConfidentialClient,
    ) -> BoxFuture<'a, Result<ClientProof<'a>, TokenError>> {
        match self {
            FromEnvironment::Secret(s) => s.authenticate(client),
            #[cfg(feature = "certificate")]
            FromEnvironment::Certificate(c) => c.authenticate(client),
        }
    }

    fn reload_after_refusal(&self) -> BoxFuture<'_, bool> {
        match self {
            FromEnvironment::Secret(s) => s.reload_after_refusal(),
            #[cfg(feature = "certificate")]
            FromEnvironment::Certificate(c) => c.reload_after_refusal(),
        }
    }
}

const TENANT_ID: &str = "AZURE_TENANT_ID";
const CLIENT_ID: &str = "AZURE_CLIENT_ID";
const AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
const SECRET: &str = "AZURE_CLIENT_SECRET";
const CERT_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
const CERT_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
const SEND_CHAIN: &str = "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN";
pub(crate) const TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// Why the credential is unavailable when neither of its variables is set.
const NOT_CONFIGURED: &str = "not configured: neither AZURE_CLIENT_SECRET (a client secret's Value) nor AZURE_CLIENT_CERTIFICATE_PATH (a PEM or PFX certificate file) is set; set one of them with AZURE_TENANT_ID and AZURE_CLIENT_ID (the app registration's Directory and Application IDs)";

/// Configuration read from environment variables (or a lookup standing in for them), with the
/// ids and authority host every credential reads.
pub(crate) struct EnvVars<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> EnvVars<F> {
    pub(crate) fn new(lookup: F) -> Self {
        EnvVars { lookup }
    }

    /// The variable, if set and not blank.
    pub(crate) fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// The variable as set (only an empty value counts as unset), for a secret held in memory
    /// that is zeroed on drop.
    pub(crate) fn secret(&self, name: &str) -> Option<Zeroizing<String>> {
        (self.lookup)(name)
            .map(Zeroizing::new)
            .filter(|v| !v.is_empty())
    }

    /// The variable, or an error naming it followed by `advice`.
    pub(crate) fn required(&self, name: &str, advice: &str) -> Result<String, TokenError> {
        self.var(name).ok_or_else(|| {
            TokenError::configuration(format!(
                "the environment variable {name} is missing or empty; {advice}"
            ))
        })
    }

    /// `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`, both required.
    pub(crate) fn ids(
        &self,
        tenant_advice: &str,
        client_advice: &str,
    ) -> Result<(String, String), TokenError> {
        Ok((
            self.required(TENANT_ID, tenant_advice)?,
            self.required(CLIENT_ID, client_advice)?,
        ))
    }

    /// `builder` with `AZURE_AUTHORITY_HOST` when it is set.
    pub(crate) fn with_authority_host<A: ClientAuthentication>(
        &self,
        builder: ConfidentialClientCredentialBuilder<A>,
    ) -> ConfidentialClientCredentialBuilder<A> {
        match self.var(AUTHORITY_HOST) {
            Some(host) => builder.authority_host(host),
            None => builder,
        }
    }
}

impl EnvironmentCredential {
    /// Reads the process environment. Token requests go through the default transport (reqwest,
    /// feature `reqwest`); without that feature, use [`with_transport`](Self::with_transport).
    pub fn new() -> Result<Self, TokenError> {
        Self::from_lookup(|name| std::env::var(name).ok(), TransportChoice::Default)
    }

    /// Reads the process environment; token requests go through `transport`, as with
    /// [`ConfidentialClientCredentialBuilder::transport`] (same bounds and guarantees).
    pub fn with_transport(transport: impl TokenTransport) -> Result<Self, TokenError> {
        Self::from_lookup(
            |name| std::env::var(name).ok(),
            TransportChoice::service(transport),
        )
    }

    /// Reads variables through `lookup` (for tests and for configuration held elsewhere).
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        transport: TransportChoice,
    ) -> Result<Self, TokenError> {
        let env = EnvVars::new(lookup);
        let secret = env.var(SECRET);
        let cert_path = env.var(CERT_PATH);
        // A password may legitimately be blank; its presence is what matters.
        let cert_password = env.secret(CERT_PASSWORD);
        let send_chain = env.var(SEND_CHAIN);

        if secret.is_some() && cert_path.is_some() {
            return Err(TokenError::configuration(format!(
                "both {SECRET} and {CERT_PATH} are set, so which credential to use is ambiguous; unset one of them"
            )));
        }
        if cert_path.is_none() {
            for (name, set) in [
                (CERT_PASSWORD, cert_password.is_some()),
                (SEND_CHAIN, send_chain.is_some()),
            ] {
                if set {
                    return Err(TokenError::configuration(format!(
                        "{name} is set but {CERT_PATH} is not; set {CERT_PATH} to the certificate file, or unset {name}"
                    )));
                }
            }
        }
        if secret.is_none() && cert_path.is_none() {
            return Err(TokenError::unavailable(NOT_CONFIGURED));
        }
        let (tenant_id, client_id) = env.ids(
            "set it to the Directory (tenant) ID from the app registration's Overview page",
            "set it to the Application (client) ID from the app registration's Overview page",
        )?;
        let authentication = match (secret, cert_path) {
            (Some(secret), _) => FromEnvironment::Secret(ClientSecret::from(secret)),
            (None, Some(path)) => certificate(&path, cert_password, send_chain)?,
            (None, None) => return Err(TokenError::unavailable(NOT_CONFIGURED)),
        };
        let builder = ConfidentialClientCredential::builder(tenant_id, client_id, authentication)
            .transport_choice(transport);
        Ok(EnvironmentCredential {
            inner: env.with_authority_host(builder).build()?,
        })
    }
}

/// The certificate source from `AZURE_CLIENT_CERTIFICATE_PATH` and its companions.
#[cfg(feature = "certificate")]
fn certificate(
    path: &str,
    password: Option<Zeroizing<String>>,
    send_chain: Option<String>,
) -> Result<FromEnvironment, TokenError> {
    let send_chain = match send_chain.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(_) => {
            return Err(TokenError::configuration(format!(
                "{SEND_CHAIN} must be true, false, 1 or 0"
            )));
        }
    };
    let certificate =
        CertificateAssertion::from_file(path, password.as_deref().map(String::as_str))
            .map_err(|e| TokenError::configuration(format!("{CERT_PATH}: {}", e.message())))?;
    Ok(FromEnvironment::Certificate(
        certificate.with_certificate_chain(send_chain),
    ))
}

/// Without the `certificate` feature, a configured certificate is an error that says so (rather
/// than falling through to another source).
#[cfg(not(feature = "certificate"))]
fn certificate(
    _path: &str,
    _password: Option<Zeroizing<String>>,
    _send_chain: Option<String>,
) -> Result<FromEnvironment, TokenError> {
    Err(TokenError::configuration(format!(
        "{CERT_PATH} is set, but tower-entra was built without its `certificate` feature; enable the feature, or configure {SECRET} instead"
    )))
}

impl Credential for EnvironmentCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        self.inner.request_token(request)
    }

    fn identity(&self) -> Option<(&str, &str)> {
        self.inner.identity()
    }

    fn timeout(&self) -> Option<std::time::Duration> {
        self.inner.timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<EnvironmentCredential, TokenError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Configuration only: nothing is sent.
        EnvironmentCredential::from_lookup(
            |k| vars.get(k).cloned(),
            TransportChoice::service(crate::transport::tests::Offline),
        )
    }

    #[test]
    fn names_the_missing_variable() {
        let e = from(&[("AZURE_CLIENT_SECRET", "s")]).unwrap_err();
        assert_eq!(e.kind(), crate::TokenErrorKind::Configuration, "{e}");
        assert!(e.to_string().contains("AZURE_TENANT_ID"), "{e}");
        let e = from(&[("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_SECRET", "s")]).unwrap_err();
        assert!(e.to_string().contains("AZURE_CLIENT_ID"), "{e}");
        let e = from(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", " "),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("AZURE_CLIENT_SECRET"), "{e}");
    }

    #[test]
    fn reads_secret_and_authority_host() {
        let c = from(&[
            ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "hunter2-secret"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us"),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("login.microsoftonline.us"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let e = from(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_AUTHORITY_HOST", "http://evil.example"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("plain http"), "{e}");
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    const IDS: [(&str, &str); 2] = [("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")];

    fn with_ids(extra: &[(&'static str, &str)]) -> Result<EnvironmentCredential, TokenError> {
        let mut vars = IDS.to_vec();
        vars.extend_from_slice(extra);
        from(&vars)
    }

    #[cfg(feature = "certificate")]
    #[test]
    fn reads_a_pem_or_pfx_certificate_told_apart_by_content() {
        let pem = fixture("client-pkcs8.pem");
        let c = with_ids(&[(CERT_PATH, &pem)]).unwrap();
        assert!(
            matches!(c.inner.authentication(), FromEnvironment::Certificate(_)),
            "{c:?}"
        );
        let pfx = fixture("client-aes.pfx");
        let c = with_ids(&[
            (CERT_PATH, &pfx),
            (CERT_PASSWORD, "fixture-password"),
            (SEND_CHAIN, "True"),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("send_certificate_chain: true"), "{debug}");
        assert!(!debug.contains("fixture-password"), "{debug}");
        let enc = fixture("client-encrypted.pem");
        with_ids(&[(CERT_PATH, &enc), (CERT_PASSWORD, "fixture-password")]).unwrap();
    }

    #[cfg(not(feature = "certificate"))]
    #[test]
    fn without_the_certificate_feature_a_certificate_path_is_an_error_that_says_so() {
        let e = with_ids(&[(CERT_PATH, &fixture("client-pkcs8.pem"))]).unwrap_err();
        assert!(
            e.to_string().contains(CERT_PATH) && e.to_string().contains("`certificate` feature"),
            "{e}"
        );
    }

    #[cfg(feature = "certificate")]
    #[test]
    fn certificate_errors_name_the_variable() {
        let e = with_ids(&[(CERT_PATH, &fixture("client-aes.pfx"))]).unwrap_err();
        assert!(
            e.to_string().contains(CERT_PATH) && e.to_string().contains("password is wrong"),
            "{e}"
        );
        let e = with_ids(&[(CERT_PATH, &fixture("nope.pem"))]).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let e = with_ids(&[(CERT_PATH, &fixture("cert.pem")), (SEND_CHAIN, "yes")]).unwrap_err();
        assert!(e.to_string().contains(SEND_CHAIN), "{e}");
    }

    #[test]
    fn ambiguous_or_half_set_configuration_is_an_error_naming_the_variables() {
        let pem = fixture("client-pkcs8.pem");
        let e = with_ids(&[(SECRET, "s"), (CERT_PATH, &pem)]).unwrap_err();
        assert!(
            e.to_string().contains(SECRET) && e.to_string().contains(CERT_PATH),
            "{e}"
        );
        for half in [CERT_PASSWORD, SEND_CHAIN] {
            let e = with_ids(&[(SECRET, "s"), (half, "true")]).unwrap_err();
            assert!(
                e.to_string().contains(half) && e.to_string().contains(CERT_PATH),
                "{e}"
            );
        }
    }

    #[test]
    fn without_a_secret_or_certificate_it_is_unavailable_and_ignores_the_token_file() {
        // The workload identity webhook sets the ids and the token file: not this credential's.
        for vars in [
            vec![],
            IDS.to_vec(),
            vec![IDS[0], IDS[1], (TOKEN_FILE, "/var/run/token")],
        ] {
            let e = from(&vars).unwrap_err();
            assert_eq!(
                e.kind(),
                crate::TokenErrorKind::Unavailable,
                "{vars:?}: {e}"
            );
            assert!(
                e.message().contains(SECRET) && e.message().contains(CERT_PATH),
                "{e}"
            );
        }
    }
}
