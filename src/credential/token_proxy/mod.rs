//! AKS identity bindings: a workload identity's token requests sent to the cluster's token
//! proxy instead of Entra, which lifts Entra's limit of 20 federated credentials per identity.
//!
//! The platform names the proxy in `AZURE_KUBERNETES_TOKEN_PROXY` (https only), the name to
//! present in TLS (`AZURE_KUBERNETES_SNI_NAME`, the proxy's certificate is issued for it) and the
//! CA that issued that certificate (`AZURE_KUBERNETES_CA_FILE`, which the platform rotates, or
//! `AZURE_KUBERNETES_CA_DATA`). A request keeps its path and query, appended to the proxy URL's
//! path, as the Azure SDKs send it. With a CA given, it is the only one trusted; the file is read
//! for each token request and the HTTP client is rebuilt when it changed.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use url::Url;

use crate::credential::env::Lookup;
use crate::error::TokenError;
use crate::transport::{TransportChoice, TransportService};

#[cfg(feature = "reqwest")]
mod transport;

pub(crate) use crate::credential::env::{
    AZURE_KUBERNETES_CA_DATA as CA_DATA, AZURE_KUBERNETES_CA_FILE as CA_FILE,
    AZURE_KUBERNETES_SNI_NAME as SNI_NAME, AZURE_KUBERNETES_TOKEN_PROXY as TOKEN_PROXY,
};

/// The largest CA file read: a CA bundle is a few KiB.
#[cfg(feature = "reqwest")]
const MAX_CA_FILE: usize = 1024 * 1024;

/// The token proxy the `AZURE_KUBERNETES_*` variables name.
pub(crate) struct TokenProxy {
    url: Url,
    sni: Option<String>,
    ca: Ca,
    /// The client for the CA last read, rebuilt when the CA changes.
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    current: Mutex<Option<Current>>,
}

/// Which certificate authorities the proxy's certificate is checked against.
enum Ca {
    /// The platform's roots (no CA variable set).
    Platform,
    /// `AZURE_KUBERNETES_CA_DATA`: fixed for the life of the process.
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    Data(Vec<u8>),
    /// `AZURE_KUBERNETES_CA_FILE`: read for each request, as the platform rotates it.
    File(PathBuf),
}

#[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
struct Current {
    ca: Vec<u8>,
    transport: Arc<dyn TransportService>,
}

impl TokenProxy {
    /// The proxy the variables name; `None` when none of them is set. Any of them set without
    /// `AZURE_KUBERNETES_TOKEN_PROXY`, a URL that is not https or carries a query, fragment or
    /// user, and both CA variables set are [`Configuration`](crate::TokenErrorKind::Configuration)
    /// errors.
    pub(crate) fn from_env(env: &Lookup) -> Result<Option<TokenProxy>, TokenError> {
        let sni = env.var(SNI_NAME).map(|s| s.trim().to_owned());
        let ca_file = env.var(CA_FILE);
        let ca_data = env.var(CA_DATA);
        let Some(proxy) = env.var(TOKEN_PROXY) else {
            if sni.is_some() || ca_file.is_some() || ca_data.is_some() {
                return Err(TokenError::configuration(format!(
                    "{SNI_NAME}, {CA_FILE} or {CA_DATA} is set but {TOKEN_PROXY} is not; the AKS identity binding sets them together, so set {TOKEN_PROXY} or unset the others"
                )));
            }
            return Ok(None);
        };
        let url = Url::parse(proxy.trim()).map_err(|e| {
            TokenError::configuration(format!(
                "{TOKEN_PROXY} is not a URL ({e}); it names the AKS token proxy, e.g. https://10.0.0.1"
            ))
        })?;
        if url.scheme() != "https" || url.host().is_none() {
            return Err(TokenError::configuration(format!(
                "{TOKEN_PROXY} must be an https URL: the proxy receives the federated token"
            )));
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(TokenError::configuration(format!(
                "{TOKEN_PROXY} must not carry a user, a query or a fragment"
            )));
        }
        if let Some(sni) = &sni
            && url::Host::parse(sni).is_err()
        {
            return Err(TokenError::configuration(format!(
                "{SNI_NAME} is not a host name; it is the name the proxy's certificate is issued for"
            )));
        }
        let ca = match (ca_file, ca_data) {
            (Some(_), Some(_)) => {
                return Err(TokenError::configuration(format!(
                    "both {CA_FILE} and {CA_DATA} are set; set only one"
                )));
            }
            (Some(file), None) => Ca::File(PathBuf::from(file)),
            (None, Some(data)) => Ca::Data(data.into_bytes()),
            (None, None) => Ca::Platform,
        };
        Ok(Some(TokenProxy {
            url,
            sni,
            ca,
            current: Mutex::new(None),
        }))
    }

    /// The transport that sends token requests to the proxy.
    pub(crate) fn transport(self: Arc<Self>) -> Result<TransportChoice, TokenError> {
        #[cfg(feature = "reqwest")]
        {
            Ok(TransportChoice::Service(Arc::new(transport::ToProxy(self))))
        }
        #[cfg(not(feature = "reqwest"))]
        {
            Err(TokenError::configuration(format!(
                "{TOKEN_PROXY} is set, but tower-entra was built without its `reqwest` feature, which the AKS token proxy needs; enable the feature"
            )))
        }
    }

    /// Where a request for `uri` goes: the proxy URL's path followed by the request's, with its
    /// query; the host is the SNI name when one is given (it resolves to the proxy).
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    fn target(&self, uri: &http::Uri) -> Result<http::Uri, TokenError> {
        let mut target = self.url.clone();
        target.set_path(&format!(
            "{}{}",
            self.url.path().trim_end_matches('/'),
            uri.path()
        ));
        target.set_query(uri.query());
        if let Some(sni) = &self.sni {
            target
                .set_host(Some(sni))
                .map_err(|_| TokenError::configuration(format!("{SNI_NAME} is not a host name")))?;
        }
        target.as_str().parse().map_err(|e| {
            TokenError::configuration(format!("{TOKEN_PROXY} does not make a valid request URI"))
                .with_source(e)
        })
    }
}

impl fmt::Debug for TokenProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ca = match &self.ca {
            Ca::Platform => "platform roots".to_owned(),
            Ca::Data(_) => CA_DATA.to_owned(),
            Ca::File(path) => path.display().to_string(),
        };
        f.debug_struct("TokenProxy")
            .field("url", &self.url.as_str())
            .field("sni", &self.sni)
            .field("ca", &ca)
            .finish()
    }
}

#[cfg(all(test, feature = "reqwest"))]
mod tls_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Option<TokenProxy>, TokenError> {
        TokenProxy::from_env(&Lookup::of(vars))
    }

    #[test]
    fn requests_keep_their_path_and_query_under_the_proxy_url() {
        let token = "https://login.microsoftonline.com/t/oauth2/v2.0/token?x=1"
            .parse::<http::Uri>()
            .unwrap();
        let proxy = from(&[(TOKEN_PROXY, "https://10.0.0.1:8443/base/")])
            .unwrap()
            .unwrap();
        assert_eq!(
            proxy.target(&token).unwrap().to_string(),
            "https://10.0.0.1:8443/base/t/oauth2/v2.0/token?x=1"
        );
        let proxy = from(&[
            (TOKEN_PROXY, "https://10.0.0.1"),
            (SNI_NAME, "proxy.aks.test"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            proxy.target(&token).unwrap().to_string(),
            "https://proxy.aks.test/t/oauth2/v2.0/token?x=1"
        );
    }

    #[test]
    fn unset_is_no_proxy_and_half_set_or_unsafe_is_a_configuration_error() {
        assert!(from(&[]).unwrap().is_none());
        for (vars, named) in [
            (vec![(SNI_NAME, "s")], TOKEN_PROXY),
            (vec![(CA_FILE, "/ca.pem")], TOKEN_PROXY),
            (vec![(TOKEN_PROXY, "http://10.0.0.1")], "https"),
            (vec![(TOKEN_PROXY, "https://10.0.0.1/?q=1")], "query"),
            (vec![(TOKEN_PROXY, "https://u:p@10.0.0.1")], "user"),
            (
                vec![
                    (TOKEN_PROXY, "https://10.0.0.1"),
                    (CA_FILE, "/a"),
                    (CA_DATA, "b"),
                ],
                "only one",
            ),
        ] {
            let e = from(&vars).unwrap_err();
            assert_eq!(e.kind(), crate::error::TokenErrorKind::Configuration, "{e}");
            assert!(e.message().contains(named), "{vars:?}: {e}");
        }
    }
}
