//! [`EnvironmentCredential`]: configuration from the Azure SDK's environment variables.

use futures::future::BoxFuture;
use zeroize::Zeroizing;

#[cfg(feature = "certificate")]
use crate::credential::CertificateAssertion;
use crate::credential::authentication::ClientAuthentication;
use crate::credential::authentication::private::Authenticate;
use crate::credential::client::ClientProof;
use crate::credential::client::ConfidentialClient;
use crate::credential::env::{
    AZURE_CLIENT_CERTIFICATE_PASSWORD, AZURE_CLIENT_CERTIFICATE_PATH, AZURE_CLIENT_SECRET,
    AZURE_CLIENT_SEND_CERTIFICATE_CHAIN, Lookup,
};
use crate::credential::{ClientSecret, ConfidentialClientCredential, Credential, TokenRequest};
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

    fn time_bound(&self, request_timeout: std::time::Duration) -> std::time::Duration {
        match self {
            FromEnvironment::Secret(s) => s.time_bound(request_timeout),
            #[cfg(feature = "certificate")]
            FromEnvironment::Certificate(c) => c.time_bound(request_timeout),
        }
    }

    fn may_reload(&self) -> bool {
        match self {
            FromEnvironment::Secret(s) => s.may_reload(),
            #[cfg(feature = "certificate")]
            FromEnvironment::Certificate(c) => c.may_reload(),
        }
    }

    fn reload_after_refusal(&self) -> BoxFuture<'_, bool> {
        match self {
            FromEnvironment::Secret(s) => s.reload_after_refusal(),
            #[cfg(feature = "certificate")]
            FromEnvironment::Certificate(c) => c.reload_after_refusal(),
        }
    }

    #[cfg(feature = "shared-cache")]
    fn cache_secret(&self) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        match self {
            FromEnvironment::Secret(s) => s.cache_secret(),
            #[cfg(feature = "certificate")]
            FromEnvironment::Certificate(c) => c.cache_secret(),
        }
    }
}

/// Why the credential is unavailable when neither of its variables is set.
const NOT_CONFIGURED: &str = "not configured: neither AZURE_CLIENT_SECRET (a client secret's Value) nor AZURE_CLIENT_CERTIFICATE_PATH (a PEM or PFX certificate file) is set; set one of them with AZURE_TENANT_ID and AZURE_CLIENT_ID (the app registration's Directory and Application IDs)";

impl EnvironmentCredential {
    /// Reads the process environment. Token requests go through the default transport (reqwest,
    /// feature `reqwest`); without that feature, use [`with_transport`](Self::with_transport).
    pub fn new() -> Result<Self, TokenError> {
        Self::from_lookup(&Lookup::process(), TransportChoice::Default)
    }

    /// Reads the process environment; token requests go through `transport`, as with
    /// [`ConfidentialClientCredentialBuilder::transport`](crate::ConfidentialClientCredentialBuilder::transport) (same bounds and guarantees).
    pub fn with_transport(transport: impl TokenTransport) -> Result<Self, TokenError> {
        Self::from_lookup(&Lookup::process(), TransportChoice::service(transport))
    }

    /// Reads variables through `lookup` (for tests and for configuration held elsewhere).
    pub(crate) fn from_lookup(
        env: &Lookup,
        transport: TransportChoice,
    ) -> Result<Self, TokenError> {
        let secret = env.var(AZURE_CLIENT_SECRET);
        let cert_path = env.var(AZURE_CLIENT_CERTIFICATE_PATH);
        // A password may legitimately be blank; its presence is what matters.
        let cert_password = env.secret(AZURE_CLIENT_CERTIFICATE_PASSWORD);
        let send_chain = env.var(AZURE_CLIENT_SEND_CERTIFICATE_CHAIN);

        if secret.is_some() && cert_path.is_some() {
            return Err(TokenError::configuration(format!(
                "both {AZURE_CLIENT_SECRET} and {AZURE_CLIENT_CERTIFICATE_PATH} are set, so which credential to use is ambiguous; unset one of them"
            )));
        }
        if cert_path.is_none() {
            for (name, set) in [
                (AZURE_CLIENT_CERTIFICATE_PASSWORD, cert_password.is_some()),
                (AZURE_CLIENT_SEND_CERTIFICATE_CHAIN, send_chain.is_some()),
            ] {
                if set {
                    return Err(TokenError::configuration(format!(
                        "{name} is set but {AZURE_CLIENT_CERTIFICATE_PATH} is not; set {AZURE_CLIENT_CERTIFICATE_PATH} to the certificate file, or unset {name}"
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
            inner: env.with_client_settings(builder).build()?,
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
                "{AZURE_CLIENT_SEND_CERTIFICATE_CHAIN} must be true, false, 1 or 0"
            )));
        }
    };
    let certificate = CertificateAssertion::from_file(
        path,
        password.as_deref().map(String::as_str),
    )
    .map_err(|e| {
        TokenError::configuration(format!("{AZURE_CLIENT_CERTIFICATE_PATH}: {}", e.message()))
    })?;
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
        "{AZURE_CLIENT_CERTIFICATE_PATH} is set, but tower-entra was built without its `certificate` feature; enable the feature, or configure {AZURE_CLIENT_SECRET} instead"
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

    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        self.inner.cache_binding()
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        self.inner.check_tenant(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<EnvironmentCredential, TokenError> {
        // Configuration only: nothing is sent.
        EnvironmentCredential::from_lookup(
            &Lookup::of(vars),
            TransportChoice::service(crate::transport::tests::Offline),
        )
    }

    #[test]
    fn additionally_allowed_tenants_come_from_the_environment() {
        let ids = [
            ("AZURE_TENANT_ID", "home.onmicrosoft.com"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ];
        let none = from(&ids).unwrap();
        let e = none.check_tenant("contoso.onmicrosoft.com").unwrap_err();
        assert_eq!(e.kind(), crate::error::TokenErrorKind::TenantNotAllowed);
        assert!(none.check_tenant("HOME.onmicrosoft.com").is_ok());
        let mut listed = ids.to_vec();
        listed.push((
            "AZURE_ADDITIONALLY_ALLOWED_TENANTS",
            "contoso.onmicrosoft.com;fabrikam.onmicrosoft.com",
        ));
        let listed = from(&listed).unwrap();
        assert!(listed.check_tenant("fabrikam.onmicrosoft.com").is_ok());
        assert!(listed.check_tenant("northwind.onmicrosoft.com").is_err());
        let mut bad = ids.to_vec();
        bad.push(("AZURE_ADDITIONALLY_ALLOWED_TENANTS", "a/b"));
        let e = from(&bad).unwrap_err();
        assert!(
            e.message().contains("AZURE_ADDITIONALLY_ALLOWED_TENANTS"),
            "{e}"
        );
    }

    #[test]
    fn names_the_missing_variable() {
        let e = from(&[("AZURE_CLIENT_SECRET", "s")]).unwrap_err();
        assert_eq!(e.kind(), crate::error::TokenErrorKind::Configuration, "{e}");
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
        let c = with_ids(&[(AZURE_CLIENT_CERTIFICATE_PATH, &pem)]).unwrap();
        assert!(
            matches!(c.inner.authentication(), FromEnvironment::Certificate(_)),
            "{c:?}"
        );
        let pfx = fixture("client-aes.pfx");
        let c = with_ids(&[
            (AZURE_CLIENT_CERTIFICATE_PATH, &pfx),
            (AZURE_CLIENT_CERTIFICATE_PASSWORD, "fixture-password"),
            (AZURE_CLIENT_SEND_CERTIFICATE_CHAIN, "True"),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("send_certificate_chain: true"), "{debug}");
        assert!(!debug.contains("fixture-password"), "{debug}");
        let enc = fixture("client-encrypted.pem");
        with_ids(&[
            (AZURE_CLIENT_CERTIFICATE_PATH, &enc),
            (AZURE_CLIENT_CERTIFICATE_PASSWORD, "fixture-password"),
        ])
        .unwrap();
    }

    #[cfg(not(feature = "certificate"))]
    #[test]
    fn without_the_certificate_feature_a_certificate_path_is_an_error_that_says_so() {
        let e =
            with_ids(&[(AZURE_CLIENT_CERTIFICATE_PATH, &fixture("client-pkcs8.pem"))]).unwrap_err();
        assert!(
            e.to_string().contains(AZURE_CLIENT_CERTIFICATE_PATH)
                && e.to_string().contains("`certificate` feature"),
            "{e}"
        );
    }

    #[cfg(feature = "certificate")]
    #[test]
    fn certificate_errors_name_the_variable() {
        let e =
            with_ids(&[(AZURE_CLIENT_CERTIFICATE_PATH, &fixture("client-aes.pfx"))]).unwrap_err();
        assert!(
            e.to_string().contains(AZURE_CLIENT_CERTIFICATE_PATH)
                && e.to_string().contains("password is wrong"),
            "{e}"
        );
        let e = with_ids(&[(AZURE_CLIENT_CERTIFICATE_PATH, &fixture("nope.pem"))]).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let e = with_ids(&[
            (AZURE_CLIENT_CERTIFICATE_PATH, &fixture("cert.pem")),
            (AZURE_CLIENT_SEND_CERTIFICATE_CHAIN, "yes"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains(AZURE_CLIENT_SEND_CERTIFICATE_CHAIN),
            "{e}"
        );
    }

    #[test]
    fn ambiguous_or_half_set_configuration_is_an_error_naming_the_variables() {
        let pem = fixture("client-pkcs8.pem");
        let e = with_ids(&[
            (AZURE_CLIENT_SECRET, "s"),
            (AZURE_CLIENT_CERTIFICATE_PATH, &pem),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains(AZURE_CLIENT_SECRET)
                && e.to_string().contains(AZURE_CLIENT_CERTIFICATE_PATH),
            "{e}"
        );
        for half in [
            AZURE_CLIENT_CERTIFICATE_PASSWORD,
            AZURE_CLIENT_SEND_CERTIFICATE_CHAIN,
        ] {
            let e = with_ids(&[(AZURE_CLIENT_SECRET, "s"), (half, "true")]).unwrap_err();
            assert!(
                e.to_string().contains(half)
                    && e.to_string().contains(AZURE_CLIENT_CERTIFICATE_PATH),
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
            vec![
                IDS[0],
                IDS[1],
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ],
        ] {
            let e = from(&vars).unwrap_err();
            assert_eq!(
                e.kind(),
                crate::error::TokenErrorKind::Unavailable,
                "{vars:?}: {e}"
            );
            assert!(
                e.message().contains(AZURE_CLIENT_SECRET)
                    && e.message().contains(AZURE_CLIENT_CERTIFICATE_PATH),
                "{e}"
            );
        }
    }
}
