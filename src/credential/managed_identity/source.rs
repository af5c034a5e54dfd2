//! Which managed identity endpoint serves this host, told by the environment variables each
//! Azure platform sets, in the order the Azure SDKs check them.

use std::fmt;

use url::Url;
use zeroize::Zeroizing;

use crate::credential::env::{
    AZURE_POD_IDENTITY_AUTHORITY_HOST, DEFAULT_IDENTITY_CLIENT_ID, IDENTITY_ENDPOINT,
    IDENTITY_HEADER, IDENTITY_SERVER_THUMBPRINT, IMDS_ENDPOINT, Lookup, MSI_ENDPOINT, MSI_SECRET,
};
use crate::error::TokenError;

/// IMDS's address on every Azure VM: link-local, plain http by design.
const IMDS_HOST: &str = "http://169.254.169.254";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";

/// The endpoint that issues this host's managed identity tokens.
#[derive(Clone)]
pub(super) enum Source {
    /// Azure Instance Metadata Service: VMs, scale sets, AKS nodes.
    Imds { url: Url },
    /// App Service, Azure Functions, Container Apps (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    AppService { url: Url, header: Zeroizing<String> },
    /// Azure Machine Learning compute (`MSI_ENDPOINT` + `MSI_SECRET`): App Service's 2017 API,
    /// with its default identity's client id (`DEFAULT_IDENTITY_CLIENT_ID`) sent for the
    /// system-assigned one, as MSAL does.
    MachineLearning {
        url: Url,
        secret: Zeroizing<String>,
        default_client_id: Option<String>,
    },
    /// An Azure Arc-enabled server's local agent (`IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`).
    Arc { url: Url },
    /// Service Fabric (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER` + `IDENTITY_SERVER_THUMBPRINT`).
    ServiceFabric {
        url: Url,
        header: Zeroizing<String>,
        thumbprint: String,
    },
    /// Azure Cloud Shell (`MSI_ENDPOINT` alone).
    CloudShell { url: Url },
}

impl Source {
    /// The source's name, for logs and errors.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Source::Imds { .. } => "IMDS",
            Source::AppService { .. } => "App Service",
            Source::MachineLearning { .. } => "Azure Machine Learning",
            Source::Arc { .. } => "Azure Arc",
            Source::ServiceFabric { .. } => "Service Fabric",
            Source::CloudShell { .. } => "Cloud Shell",
        }
    }

    /// The endpoint's URL (it holds no secret).
    pub(super) fn url(&self) -> &Url {
        match self {
            Source::Imds { url }
            | Source::AppService { url, .. }
            | Source::MachineLearning { url, .. }
            | Source::Arc { url }
            | Source::ServiceFabric { url, .. }
            | Source::CloudShell { url } => url,
        }
    }

    /// Detects the source from the variables, or says which half-set configuration is wrong.
    pub(super) fn detect(env: &Lookup) -> Result<Source, TokenError> {
        let identity_endpoint = env.var(IDENTITY_ENDPOINT);
        let identity_header = env.secret(IDENTITY_HEADER);
        let thumbprint = env.var(IDENTITY_SERVER_THUMBPRINT);
        let imds_endpoint = env.var(IMDS_ENDPOINT);
        let msi_endpoint = env.var(MSI_ENDPOINT);
        let msi_secret = env.secret(MSI_SECRET);

        if let Some(endpoint) = identity_endpoint {
            let url = parse(IDENTITY_ENDPOINT, &endpoint)?;
            return match (identity_header, thumbprint, imds_endpoint) {
                (Some(header), Some(thumbprint), _) => {
                    require_https_for_service_fabric(&url)?;
                    Ok(Source::ServiceFabric {
                        url,
                        header,
                        thumbprint: normalize_thumbprint(&thumbprint)?,
                    })
                }
                (Some(header), None, _) => {
                    check_secret_destination(IDENTITY_ENDPOINT, &url, "IDENTITY_HEADER")?;
                    Ok(Source::AppService { url, header })
                }
                (None, Some(_), _) => Err(TokenError::configuration(format!(
                    "{IDENTITY_ENDPOINT} and {IDENTITY_SERVER_THUMBPRINT} are set but {IDENTITY_HEADER} is not; Service Fabric sets all three for an application with a managed identity, so check the application manifest's ManagedIdentity settings"
                ))),
                (None, None, Some(imds)) => {
                    parse(IMDS_ENDPOINT, &imds)?;
                    check_secret_destination(IDENTITY_ENDPOINT, &url, "the Azure Arc agent's key")?;
                    Ok(Source::Arc { url })
                }
                (None, None, None) => Err(TokenError::configuration(format!(
                    "{IDENTITY_ENDPOINT} is set but neither {IDENTITY_HEADER} (App Service, Functions, Container Apps) nor {IMDS_ENDPOINT} (Azure Arc) is; enable the app's managed identity (`az webapp identity assign`, `az containerapp identity assign`) so the platform sets both, or unset {IDENTITY_ENDPOINT}"
                ))),
            };
        }
        for (name, set) in [
            (IDENTITY_HEADER, identity_header.is_some()),
            (IDENTITY_SERVER_THUMBPRINT, thumbprint.is_some()),
        ] {
            if set {
                return Err(TokenError::configuration(format!(
                    "{name} is set but {IDENTITY_ENDPOINT} is not; the platform sets both together, so unset {name} or set {IDENTITY_ENDPOINT} to the identity endpoint"
                )));
            }
        }
        if let Some(endpoint) = msi_endpoint {
            let url = parse(MSI_ENDPOINT, &endpoint)?;
            return Ok(match msi_secret {
                Some(secret) => {
                    check_secret_destination(MSI_ENDPOINT, &url, "MSI_SECRET")?;
                    Source::MachineLearning {
                        url,
                        secret,
                        default_client_id: env.var(DEFAULT_IDENTITY_CLIENT_ID),
                    }
                }
                None => Source::CloudShell { url },
            });
        }
        if msi_secret.is_some() {
            return Err(TokenError::configuration(format!(
                "{MSI_SECRET} is set but {MSI_ENDPOINT} is not; unset {MSI_SECRET} or set {MSI_ENDPOINT}"
            )));
        }
        let host = env
            .var(AZURE_POD_IDENTITY_AUTHORITY_HOST)
            .unwrap_or_else(|| IMDS_HOST.to_owned());
        let url = parse(
            AZURE_POD_IDENTITY_AUTHORITY_HOST,
            &format!("{}{IMDS_PATH}", host.trim_end_matches('/')),
        )?;
        Ok(Source::Imds { url })
    }
}

/// The variables that would select a source other than IMDS, for the error of a host where
/// IMDS does not answer.
pub(super) const OTHER_SOURCES: &str = "IDENTITY_ENDPOINT + IDENTITY_HEADER select App Service, Functions and Container Apps, IDENTITY_ENDPOINT + IMDS_ENDPOINT Azure Arc, IDENTITY_ENDPOINT + IDENTITY_HEADER + IDENTITY_SERVER_THUMBPRINT Service Fabric, MSI_ENDPOINT + MSI_SECRET Azure Machine Learning, MSI_ENDPOINT alone Cloud Shell, AZURE_POD_IDENTITY_AUTHORITY_HOST another IMDS address";

fn parse(name: &str, value: &str) -> Result<Url, TokenError> {
    let url = Url::parse(value.trim()).map_err(|e| {
        TokenError::configuration(format!(
            "{name} is not a URL ({e}); the platform sets it to the identity endpoint, e.g. http://localhost:42356/msi/token"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(TokenError::configuration(format!(
            "{name} must be an http or https URL of the identity endpoint"
        )));
    }
    Ok(url)
}

/// Service Fabric's endpoint is https: the server certificate pinned by
/// `IDENTITY_SERVER_THUMBPRINT` is what keeps the `secret` header from anyone else, and plain
/// http would send it in clear with nothing pinned.
fn require_https_for_service_fabric(url: &Url) -> Result<(), TokenError> {
    if url.scheme() == "https" {
        return Ok(());
    }
    Err(TokenError::configuration(format!(
        "{IDENTITY_ENDPOINT} is {}, but Service Fabric's identity endpoint is https (its certificate is pinned by {IDENTITY_SERVER_THUMBPRINT}, and the secret header must not travel in clear); Service Fabric sets it to https://<node>:2377/metadata/identity/oauth2/token, so check what overrides it",
        url.origin().ascii_serialization()
    )))
}

/// A secret (the identity header, the Arc agent's key) goes over plain http only to where the
/// platforms put their endpoints: this host (App Service on Windows `127.0.0.1`, Container Apps
/// and Functions `localhost`, the Arc agent `localhost:40342`), a link-local address
/// (`169.254.0.0/16`, `fe80::/10`: App Service on Linux, IMDS-style agents) or a private network
/// (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`: Azure ML compute, pod identity). Anywhere
/// else, a name or a public address, it would cross networks in clear; https goes anywhere.
fn check_secret_destination(name: &str, url: &Url, secret: &str) -> Result<(), TokenError> {
    use std::net::IpAddr;
    if url.scheme() == "https" {
        return Ok(());
    }
    let local = match url.host() {
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_link_local() || ip.is_private(),
        Some(url::Host::Ipv6(ip)) => {
            IpAddr::V6(ip).is_loopback() || ip.is_unicast_link_local() || ip.is_unique_local()
        }
        None => false,
    };
    if local {
        return Ok(());
    }
    Err(TokenError::configuration(format!(
        "{name} is {}: plain http to a host that is neither this machine, a link-local nor a private address, so {secret} would cross networks in clear; the platform's endpoint is local (e.g. http://127.0.0.1:41566/MSI/token/, http://localhost:42356/msi/token): check what overrides {name}, or use https",
        url.origin().ascii_serialization()
    )))
}

/// The thumbprint as uppercase hex without separators (it is compared with the SHA-1 of the
/// server's certificate).
fn normalize_thumbprint(value: &str) -> Result<String, TokenError> {
    let hex: String = value
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::configuration(format!(
            "{IDENTITY_SERVER_THUMBPRINT} is not a SHA-1 thumbprint (40 hex digits); Service Fabric sets it to its identity endpoint certificate's thumbprint"
        )));
    }
    Ok(hex)
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the identity header: it is the secret that lets a caller ask for tokens.
        let mut d = f.debug_struct(self.name());
        d.field("endpoint", &self.url().as_str());
        if let Source::ServiceFabric { thumbprint, .. } = self {
            d.field("thumbprint", thumbprint);
        }
        if let Source::MachineLearning {
            default_client_id, ..
        } = self
        {
            d.field("default_client_id", default_client_id);
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn detect(vars: &[(&str, &str)]) -> Result<Source, TokenError> {
        Source::detect(&Lookup::of(vars))
    }

    const EP: &str = "http://127.0.0.1:41000/msi/token";
    const THUMB: &str = "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd";

    #[test]
    fn detects_each_source_as_the_azure_sdks_do() {
        let name = |vars: &[(&str, &str)]| detect(vars).unwrap().name();
        assert_eq!(name(&[]), "IMDS");
        assert_eq!(
            detect(&[]).unwrap().url().as_str(),
            "http://169.254.169.254/metadata/identity/oauth2/token"
        );
        let pod = detect(&[(AZURE_POD_IDENTITY_AUTHORITY_HOST, "http://10.0.0.9:2579/")]).unwrap();
        assert_eq!(
            pod.url().as_str(),
            "http://10.0.0.9:2579/metadata/identity/oauth2/token"
        );
        assert_eq!(
            name(&[(IDENTITY_ENDPOINT, EP), (IDENTITY_HEADER, "h")]),
            "App Service"
        );
        assert_eq!(
            name(&[
                (IDENTITY_ENDPOINT, EP),
                (IMDS_ENDPOINT, "http://localhost:40342")
            ]),
            "Azure Arc"
        );
        let sf = detect(&[
            (
                IDENTITY_ENDPOINT,
                "https://10.0.0.4:2377/metadata/identity/oauth2/token",
            ),
            (IDENTITY_HEADER, "h"),
            (IDENTITY_SERVER_THUMBPRINT, THUMB),
        ])
        .unwrap();
        assert_eq!(sf.name(), "Service Fabric");
        assert!(
            format!("{sf:?}").contains("AABBCCDDEEFF00112233445566778899AABBCCDD"),
            "{sf:?}"
        );
        assert_eq!(name(&[(MSI_ENDPOINT, EP)]), "Cloud Shell");
        let ml = detect(&[
            (MSI_ENDPOINT, EP),
            (MSI_SECRET, "s"),
            (DEFAULT_IDENTITY_CLIENT_ID, "ml-default"),
        ])
        .unwrap();
        assert_eq!(ml.name(), "Azure Machine Learning");
        assert!(format!("{ml:?}").contains("ml-default"), "{ml:?}");
        // IDENTITY_* wins over MSI_* (App Service sets both on older stacks).
        assert_eq!(
            name(&[
                (IDENTITY_ENDPOINT, EP),
                (IDENTITY_HEADER, "h"),
                (MSI_ENDPOINT, EP),
                (MSI_SECRET, "s")
            ]),
            "App Service"
        );
    }

    #[test]
    fn half_set_environments_are_configuration_errors_naming_the_variables() {
        for (vars, names) in [
            (
                vec![(IDENTITY_ENDPOINT, EP)],
                vec![IDENTITY_HEADER, IMDS_ENDPOINT],
            ),
            (vec![(IDENTITY_HEADER, "h")], vec![IDENTITY_ENDPOINT]),
            (
                vec![(IDENTITY_SERVER_THUMBPRINT, THUMB)],
                vec![IDENTITY_ENDPOINT],
            ),
            (
                vec![(IDENTITY_ENDPOINT, EP), (IDENTITY_SERVER_THUMBPRINT, THUMB)],
                vec![IDENTITY_HEADER],
            ),
            (vec![(MSI_SECRET, "s")], vec![MSI_ENDPOINT]),
            (
                vec![(IDENTITY_ENDPOINT, "not a url"), (IDENTITY_HEADER, "h")],
                vec![IDENTITY_ENDPOINT],
            ),
            (
                vec![
                    (IDENTITY_ENDPOINT, EP),
                    (IDENTITY_HEADER, "h"),
                    (IDENTITY_SERVER_THUMBPRINT, "abc"),
                ],
                vec![IDENTITY_SERVER_THUMBPRINT],
            ),
        ] {
            let e = detect(&vars).unwrap_err();
            assert_eq!(e.kind(), crate::error::TokenErrorKind::Configuration, "{e}");
            for name in names {
                assert!(e.message().contains(name), "{vars:?}: {e}");
            }
        }
    }

    #[test]
    fn service_fabric_must_be_https() {
        let e = detect(&[
            (
                IDENTITY_ENDPOINT,
                "http://10.0.0.4:2377/metadata/identity/oauth2/token",
            ),
            (IDENTITY_HEADER, "h"),
            (IDENTITY_SERVER_THUMBPRINT, THUMB),
        ])
        .unwrap_err();
        assert_eq!(e.kind(), crate::error::TokenErrorKind::Configuration, "{e}");
        assert!(e.message().contains("https"), "{e}");
        assert!(e.message().contains("http://10.0.0.4:2377"), "{e}");
    }

    /// Plain http carries a secret only to the addresses the platforms use; https anywhere.
    #[test]
    fn a_secret_over_plain_http_goes_only_to_local_link_local_or_private_hosts() {
        let app_service =
            |endpoint: &str| detect(&[(IDENTITY_ENDPOINT, endpoint), (IDENTITY_HEADER, "h")]);
        let legacy = |endpoint: &str| detect(&[(MSI_ENDPOINT, endpoint), (MSI_SECRET, "s")]);
        let arc = |endpoint: &str| {
            detect(&[
                (IDENTITY_ENDPOINT, endpoint),
                (IMDS_ENDPOINT, "http://localhost:40342"),
            ])
        };
        for endpoint in [
            "http://127.0.0.1:41566/MSI/token/",
            "http://localhost:42356/msi/token",
            "http://LOCALHOST.:42356/msi/token",
            "http://169.254.129.5:8081/msi/token",
            "http://10.0.0.4:46808/MSI/auth",
            "http://172.16.0.9:8081/msi/token",
            "http://192.168.1.2:8081/msi/token",
            "http://[::1]:8081/msi/token",
            "http://[fe80::1]:8081/msi/token",
            "http://[fd00::7]:8081/msi/token",
            "https://identity.example.com/msi/token",
            "https://203.0.113.9/msi/token",
        ] {
            app_service(endpoint).unwrap();
            legacy(endpoint).unwrap();
        }
        arc("http://localhost:40342/metadata/identity/oauth2/token").unwrap();
        for endpoint in [
            "http://203.0.113.9:8081/msi/token",
            "http://8.8.8.8/msi/token",
            "http://identity.example.com/msi/token",
            "http://172.32.0.1/msi/token",
            "http://[2001:db8::1]/msi/token",
        ] {
            for (e, name, secret) in [
                (app_service(endpoint), IDENTITY_ENDPOINT, "IDENTITY_HEADER"),
                (legacy(endpoint), MSI_ENDPOINT, "MSI_SECRET"),
                (arc(endpoint), IDENTITY_ENDPOINT, "Azure Arc"),
            ] {
                let e = e.unwrap_err();
                assert_eq!(e.kind(), crate::error::TokenErrorKind::Configuration, "{e}");
                assert!(e.message().contains(name), "{endpoint}: {e}");
                assert!(e.message().contains(secret), "{endpoint}: {e}");
                assert!(e.message().contains("in clear"), "{endpoint}: {e}");
            }
        }
        // No secret, no limit: IMDS through pod identity and Cloud Shell.
        detect(&[(
            AZURE_POD_IDENTITY_AUTHORITY_HOST,
            "http://identity.example.com",
        )])
        .unwrap();
        detect(&[(MSI_ENDPOINT, "http://identity.example.com/msi")]).unwrap();
    }

    #[test]
    fn debug_never_shows_the_identity_header() {
        let s = detect(&[(IDENTITY_ENDPOINT, EP), (IDENTITY_HEADER, "hunter2-header")]).unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("41000"), "{debug}");
    }
}
