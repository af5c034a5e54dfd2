//! [`EnvironmentCredential`]: configuration from the Azure SDK's environment variables.

use futures::future::BoxFuture;

use crate::credential::{
    ClientSecretCredential, ConfidentialClientOptions, Credential, TokenRequest,
};
use crate::error::TokenError;
use crate::token::AccessToken;

/// A credential configured by the environment variables the Azure SDKs read.
///
/// | variable | meaning |
/// |---|---|
/// | `AZURE_TENANT_ID` | the Directory (tenant) ID (required) |
/// | `AZURE_CLIENT_ID` | the Application (client) ID (required) |
/// | `AZURE_CLIENT_SECRET` | a client secret's Value |
/// | `AZURE_AUTHORITY_HOST` | optional; default `https://login.microsoftonline.com` |
///
/// A missing or empty required variable is an error that names it.
///
/// ```no_run
/// let credential = tower_entra::EnvironmentCredential::new()?;
/// let provider = tower_entra::TokenProvider::new(credential, "https://graph.microsoft.com/.default")?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
#[derive(Debug, Clone)]
pub struct EnvironmentCredential {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Secret(ClientSecretCredential),
}

impl EnvironmentCredential {
    /// Reads the process environment.
    pub fn new() -> Result<Self, TokenError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (for tests and for configuration held elsewhere).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, TokenError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &str, what: &str| {
            var(name).ok_or_else(|| {
                TokenError::configuration(format!(
                    "the environment variable {name} is missing or empty; set it to {what}"
                ))
            })
        };
        let tenant_id = required(
            "AZURE_TENANT_ID",
            "the Directory (tenant) ID from the app registration's Overview page",
        )?;
        let client_id = required(
            "AZURE_CLIENT_ID",
            "the Application (client) ID from the app registration's Overview page",
        )?;
        let mut options = ConfidentialClientOptions::default();
        if let Some(host) = var("AZURE_AUTHORITY_HOST") {
            options.authority_host = host;
        }
        let secret = required(
            "AZURE_CLIENT_SECRET",
            "a client secret's Value from the app registration's Certificates & secrets page",
        )?;
        let mut builder = ClientSecretCredential::builder(tenant_id, client_id, secret);
        builder = builder.authority_host(options.authority_host);
        Ok(EnvironmentCredential {
            inner: Inner::Secret(builder.build()?),
        })
    }
}

impl Credential for EnvironmentCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        match &self.inner {
            Inner::Secret(c) => c.request_token(request),
        }
    }

    fn identity(&self) -> Option<(&str, &str)> {
        match &self.inner {
            Inner::Secret(c) => c.identity(),
        }
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
        EnvironmentCredential::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn names_the_missing_variable() {
        let e = from(&[]).unwrap_err();
        assert!(e.to_string().contains("AZURE_TENANT_ID"), "{e}");
        let e = from(&[("AZURE_TENANT_ID", "t")]).unwrap_err();
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
}
