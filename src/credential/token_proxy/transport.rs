//! The token proxy as a transport (feature `reqwest`): a reqwest client per CA, presenting the
//! SNI name and trusting exactly the given CA.

use std::sync::{Arc, PoisonError};

use futures::future::BoxFuture;

use super::{CA_DATA, CA_FILE, Ca, Current, MAX_CA_FILE, TokenProxy};
use crate::error::TokenError;
use crate::transport::{BufferedResponse, TransportRequest, TransportService};

/// The proxy as a transport.
pub(super) struct ToProxy(pub(super) Arc<TokenProxy>);

impl TransportService for ToProxy {
    fn send(
        &self,
        mut request: TransportRequest,
    ) -> BoxFuture<'static, Result<BufferedResponse, TokenError>> {
        let proxy = self.0.clone();
        Box::pin(async move {
            *request.uri_mut() = proxy.target(request.uri())?;
            let transport = proxy.client().await?;
            transport.send(request).await
        })
    }

    fn name(&self) -> &'static str {
        "AKS token proxy"
    }
}

impl TokenProxy {
    /// The client for the CA as it is now: the last one while the CA is unchanged, else a new
    /// one.
    async fn client(&self) -> Result<Arc<dyn TransportService>, TokenError> {
        let ca = match &self.ca {
            Ca::Platform => Vec::new(),
            Ca::Data(data) => data.clone(),
            Ca::File(path) => {
                let path = path.clone();
                let read = crate::credential::rotation::on_blocking_pool(move || {
                    crate::credential::rotation::read_bounded(&path, CA_FILE, MAX_CA_FILE)
                })
                .await
                .map_err(|e| {
                    TokenError::configuration(format!("reading {CA_FILE} did not finish"))
                        .with_source(e)
                })?;
                read?.to_vec()
            }
        };
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match current.as_ref() {
            Some(c) if c.ca == ca => return Ok(c.transport.clone()),
            // Mid-rotation the platform may leave the file empty for a moment: keep the client.
            Some(c) if ca.is_empty() && matches!(self.ca, Ca::File(_)) => {
                return Ok(c.transport.clone());
            }
            _ => {}
        }
        let transport = self.build(&ca)?;
        if current.is_some() {
            tracing::info!(proxy = %self.url, "the AKS token proxy's CA changed; using the new one");
        }
        *current = Some(Current {
            ca,
            transport: transport.clone(),
        });
        Ok(transport)
    }

    /// A reqwest client that reaches the proxy directly (never through `HTTPS_PROXY`: the SNI
    /// name resolves only here), presents the SNI name, and trusts exactly `ca` when one is given.
    fn build(&self, ca: &[u8]) -> Result<Arc<dyn TransportService>, TokenError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if !matches!(self.ca, Ca::Platform) {
            builder = builder.tls_backend_preconfigured(tls(ca, self.ca_name())?);
        }
        if let Some(sni) = &self.sni {
            let host = self.url.host_str().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = self.url.port_or_known_default().unwrap_or(443);
            builder = builder.dns_resolver(Arc::new(ProxyAddress {
                sni: sni.to_ascii_lowercase(),
                host,
                port,
            }));
        }
        let client = builder.build().map_err(|e| {
            TokenError::configuration("could not build the HTTP client for the AKS token proxy")
                .with_source(e)
        })?;
        Ok(crate::transport::reqwest_transport(client))
    }

    fn ca_name(&self) -> &'static str {
        match self.ca {
            Ca::File(_) => CA_FILE,
            _ => CA_DATA,
        }
    }
}

/// TLS that trusts exactly the certificates in `pem` (from the variable `name`).
fn tls(pem: &[u8], name: &str) -> Result<rustls::ClientConfig, TokenError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| {
            TokenError::configuration(format!("{name} is not PEM certificates ({e})"))
        })?;
        roots.add(cert).map_err(|e| {
            TokenError::configuration(format!(
                "{name} holds a certificate that cannot be a CA ({e})"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(TokenError::configuration(format!(
            "{name} holds no PEM certificate; it must hold the CA that issued the token proxy's certificate"
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            TokenError::configuration("could not set up TLS for the AKS token proxy").with_source(e)
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Resolves the SNI name to the proxy's address, so that the connection goes to the proxy while
/// TLS presents (and checks the certificate for) the SNI name.
struct ProxyAddress {
    sni: String,
    host: String,
    port: u16,
}

impl reqwest::dns::Resolve for ProxyAddress {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (host, port) = (self.host.clone(), self.port);
        let ours = name.as_str().eq_ignore_ascii_case(&self.sni);
        let name = name.as_str().to_owned();
        Box::pin(async move {
            if !ours {
                return Err(format!("{name} is not the AKS token proxy's SNI name").into());
            }
            let addrs = tokio::task::spawn_blocking(move || {
                use std::net::ToSocketAddrs;
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|addrs| addrs.collect::<Vec<_>>())
            })
            .await??;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
