//! The environment variables credentials read: every name in one place, and one way to read
//! them, [`Lookup`] (the process environment, or a function standing in for it, for tests and
//! for configuration held elsewhere).
//!
//! To read a new variable: add its name below, then read it with [`Lookup::var`] (or
//! [`Lookup::secret`] for a secret, [`Lookup::required`] for one that must be set).

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::credential::ConfidentialClientCredentialBuilder;
use crate::credential::authentication::ClientAuthentication;
use crate::credential::tenants::AllowedTenants;
use crate::error::TokenError;

// An app registration, as `EnvironmentCredential` and workload identity read it.

/// The Directory (tenant) ID.
pub(crate) const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
/// The Application (client) ID; for managed identity, the user-assigned identity's client id.
pub(crate) const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// The authority host (default: the public cloud's).
pub(crate) const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
/// A client secret's Value.
pub(crate) const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
/// A PEM or PKCS#12 certificate file with its private key.
pub(crate) const AZURE_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
/// The certificate file's password.
pub(crate) const AZURE_CLIENT_CERTIFICATE_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
/// Whether to send the certificate chain (`x5c`), for subject name + issuer authentication.
pub(crate) const AZURE_CLIENT_SEND_CERTIFICATE_CHAIN: &str = "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN";
/// The tenants besides `AZURE_TENANT_ID` a credential may get tokens in (`;`-separated, `*`
/// for any).
pub(crate) const AZURE_ADDITIONALLY_ALLOWED_TENANTS: &str = "AZURE_ADDITIONALLY_ALLOWED_TENANTS";
/// A federated token file, as the AKS workload identity webhook sets it.
pub(crate) const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

// The managed identity endpoints, as each Azure platform sets them.

/// App Service, Functions, Container Apps, Azure Arc and Service Fabric's identity endpoint.
pub(crate) const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// The secret header App Service and Service Fabric's endpoints ask for.
pub(crate) const IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// The thumbprint of Service Fabric's identity endpoint certificate.
pub(crate) const IDENTITY_SERVER_THUMBPRINT: &str = "IDENTITY_SERVER_THUMBPRINT";
/// Azure Arc's local IMDS endpoint.
pub(crate) const IMDS_ENDPOINT: &str = "IMDS_ENDPOINT";
/// Cloud Shell's endpoint, or Azure Machine Learning's (with `MSI_SECRET`).
pub(crate) const MSI_ENDPOINT: &str = "MSI_ENDPOINT";
/// Azure Machine Learning's secret header (App Service's 2017 API).
pub(crate) const MSI_SECRET: &str = "MSI_SECRET";
/// Another address for IMDS (AAD Pod Identity).
pub(crate) const AZURE_POD_IDENTITY_AUTHORITY_HOST: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
/// Azure Machine Learning's compute: its default identity's client id.
pub(crate) const DEFAULT_IDENTITY_CLIENT_ID: &str = "DEFAULT_IDENTITY_CLIENT_ID";
// AKS identity bindings' token proxy, as the platform sets it.

/// The token proxy's https URL.
pub(crate) const AZURE_KUBERNETES_TOKEN_PROXY: &str = "AZURE_KUBERNETES_TOKEN_PROXY";
/// The name presented in TLS to the proxy, which its certificate is issued for.
pub(crate) const AZURE_KUBERNETES_SNI_NAME: &str = "AZURE_KUBERNETES_SNI_NAME";
/// A file holding the CA of the proxy's certificate (rotated by the platform).
pub(crate) const AZURE_KUBERNETES_CA_FILE: &str = "AZURE_KUBERNETES_CA_FILE";
/// The CA of the proxy's certificate, as PEM text.
pub(crate) const AZURE_KUBERNETES_CA_DATA: &str = "AZURE_KUBERNETES_CA_DATA";

// Which credentials `DefaultCredential` may use, as the Azure SDKs read it.

/// `prod`, `dev`, or one credential's name.
pub(crate) const AZURE_TOKEN_CREDENTIALS: &str = "AZURE_TOKEN_CREDENTIALS";

/// Windows' data directory, under which the Azure Arc agent keeps its key files (read as a
/// path, not through [`Lookup`]).
pub(crate) const PROGRAM_DATA: &str = "ProgramData";

/// Where variables are read from: the process environment, or a function standing in for it.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Lookup(Arc<ReadVariable>);

/// Reads one variable by name.
type ReadVariable = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Lookup {
    /// The process environment.
    pub(crate) fn process() -> Lookup {
        Lookup::new(|name| std::env::var(name).ok())
    }

    /// `lookup` in place of the process environment.
    pub(crate) fn new(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Lookup {
        Lookup(Arc::new(lookup))
    }

    /// These variables and no others.
    #[cfg(test)]
    pub(crate) fn of(vars: &[(&str, &str)]) -> Lookup {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Lookup::new(move |name| vars.get(name).cloned())
    }

    /// The variable as set, blank or not.
    pub(crate) fn raw(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    /// The variable, if set and not blank.
    pub(crate) fn var(&self, name: &str) -> Option<String> {
        self.raw(name).filter(|v| !v.trim().is_empty())
    }

    /// Whether the variable is set and not blank.
    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.var(name).is_some()
    }

    /// The variable as set (only an empty value counts as unset), for a secret held in memory
    /// that is zeroed on drop.
    pub(crate) fn secret(&self, name: &str) -> Option<Zeroizing<String>> {
        self.raw(name).map(Zeroizing::new).filter(|v| !v.is_empty())
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
            self.required(AZURE_TENANT_ID, tenant_advice)?,
            self.required(AZURE_CLIENT_ID, client_advice)?,
        ))
    }

    /// `builder` with `AZURE_AUTHORITY_HOST` and `AZURE_ADDITIONALLY_ALLOWED_TENANTS` when set.
    pub(crate) fn with_client_settings<A: ClientAuthentication>(
        &self,
        builder: ConfidentialClientCredentialBuilder<A>,
    ) -> ConfidentialClientCredentialBuilder<A> {
        let builder = builder.allowed_tenants(self.allowed_tenants());
        match self.var(AZURE_AUTHORITY_HOST) {
            Some(host) => builder.authority_host(host),
            None => builder,
        }
    }

    /// `AZURE_ADDITIONALLY_ALLOWED_TENANTS`, none when unset.
    pub(crate) fn allowed_tenants(&self) -> AllowedTenants {
        self.var(AZURE_ADDITIONALLY_ALLOWED_TENANTS)
            .map(|v| AllowedTenants::from_variable(&v))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_unset_except_for_a_secret() {
        let env = Lookup::of(&[(AZURE_TENANT_ID, " "), (AZURE_CLIENT_SECRET, " ")]);
        assert_eq!(env.var(AZURE_TENANT_ID), None);
        assert!(!env.is_set(AZURE_TENANT_ID));
        assert_eq!(
            env.secret(AZURE_CLIENT_SECRET)
                .as_deref()
                .map(String::as_str),
            Some(" ")
        );
        let e = env.required(AZURE_TENANT_ID, "set it").unwrap_err();
        assert!(
            e.to_string()
                .contains("AZURE_TENANT_ID is missing or empty; set it"),
            "{e}"
        );
    }
}
