//! Against an in-process TLS proxy on loopback that serves its own CA's certificate only to a
//! client presenting the SNI name, and forwards token requests to the emulator.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entra_emulator::{App, Emulator, FederatedIssuer};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::*;
use crate::credential::{Credential, TokenRequest, WorkloadIdentityCredential};
use crate::error::TokenErrorKind;

const SNI: &str = "token-proxy.aks.test";
const ISSUER: &str = "https://oidc.aks.example/issuer";
const SUBJECT: &str = "system:serviceaccount:ns:sa";
const AUDIENCE: &str = "api://AzureADTokenExchange";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Serves the proxy's certificate only to a client that presents the SNI name, recording what
/// each client presented.
#[derive(Debug)]
struct SniChecked {
    key: Arc<CertifiedKey>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl ResolvesServerCert for SniChecked {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_owned);
        let ok = name.as_deref() == Some(SNI);
        self.seen.lock().unwrap().push(name);
        ok.then(|| self.key.clone())
    }
}

/// What the proxy saw: the SNI names presented, and the requests' paths and `Host` headers.
#[derive(Clone, Default)]
struct Seen {
    sni: Arc<Mutex<Vec<Option<String>>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

/// A TLS proxy on 127.0.0.1 forwarding each request's path and body to `upstream`.
async fn start_proxy(upstream: String) -> (std::net::SocketAddr, Seen) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(fixture("proxy.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("proxy.key.pem")).unwrap();
    let signing = provider.key_provider.load_private_key(key).unwrap();
    let seen = Seen::default();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniChecked {
            key: Arc::new(CertifiedKey::new(certs, signing)),
            seen: seen.sni.clone(),
        }));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = seen.requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (upstream, requests) = (upstream.clone(), requests.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (upstream, requests) = (upstream.clone(), requests.clone());
                    async move {
                        let path = request.uri().path().to_owned();
                        let host = request
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        requests.lock().unwrap().push((path.clone(), host));
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let answer = reqwest::Client::new()
                            .post(format!("{upstream}{path}"))
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        let status = answer.status();
                        let body = answer.bytes().await.unwrap();
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Setup {
    emulator: Emulator,
    tenant_id: String,
    vars: HashMap<String, String>,
    dir: PathBuf,
    seen: Seen,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An AKS pod with an identity binding: the webhook's variables, and the proxy's (its CA file
/// holding `ca`, and `sni` when given), with the proxy running in front of the emulator.
async fn setup(ca: &str, sni: Option<&str>) -> Setup {
    let emulator = Emulator::start().await;
    let issuer = FederatedIssuer::new(ISSUER);
    emulator.add_trusted_issuer_jwks(ISSUER, issuer.jwks());
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("bound").with_federated_credential(ISSUER, SUBJECT, AUDIENCE),
    );
    let dir = std::env::temp_dir().join(format!("tower-entra-proxy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(
        &token,
        issuer.issue(SUBJECT, AUDIENCE, Duration::from_secs(3600)),
    )
    .unwrap();
    std::fs::copy(fixture(ca), dir.join("ca.pem")).unwrap();
    let (proxy, seen) = start_proxy(emulator.authority_host()).await;
    let mut vars: HashMap<String, String> = [
        ("AZURE_TENANT_ID", app.tenant_id.clone()),
        ("AZURE_CLIENT_ID", app.client_id.clone()),
        ("AZURE_FEDERATED_TOKEN_FILE", token.display().to_string()),
        ("AZURE_AUTHORITY_HOST", emulator.authority_host()),
        (TOKEN_PROXY, format!("https://{proxy}")),
        (CA_FILE, dir.join("ca.pem").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(sni) = sni {
        vars.insert(SNI_NAME.to_owned(), sni.to_owned());
    }
    Setup {
        emulator,
        tenant_id: app.tenant_id,
        vars,
        dir,
        seen,
    }
}

impl Setup {
    fn credential(&self) -> Result<WorkloadIdentityCredential, TokenError> {
        let vars = self.vars.clone();
        WorkloadIdentityCredential::from_lookup(&Lookup::new(move |k| vars.get(k).cloned()), true)
    }

    fn sni_seen(&self) -> Vec<Option<String>> {
        self.seen.sni.lock().unwrap().clone()
    }
}

async fn token(c: &WorkloadIdentityCredential) -> Result<crate::token::AccessToken, TokenError> {
    c.request_token(TokenRequest::new(Emulator::DEMO_API_SCOPE))
        .await
}

#[tokio::test]
async fn token_requests_go_to_the_proxy_presenting_the_sni_name_and_trusting_its_ca() {
    let s = setup("ca.pem", Some(SNI)).await;
    let c = s.credential().unwrap();
    token(&c).await.unwrap();
    assert_eq!(s.emulator.token_requests(), 1, "the proxy forwarded it");
    assert_eq!(s.sni_seen(), [Some(SNI.to_owned())]);
    let requests = s.seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, format!("/{}/oauth2/v2.0/token", s.tenant_id));
    assert!(requests[0].1.starts_with(SNI), "Host: {}", requests[0].1);
    assert!(format!("{c:?}").contains(SNI), "{c:?}");
}

#[tokio::test]
async fn without_the_sni_name_the_proxy_refuses_the_handshake() {
    // The proxy is addressed by IP: a client that does not present the SNI name gets no
    // certificate, which is what this test's proxy checks.
    let s = setup("ca.pem", None).await;
    let e = token(&s.credential().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Connection, "{e}");
    assert_eq!(s.sni_seen(), [None]);
    assert_eq!(s.emulator.token_requests(), 0);
}

#[tokio::test]
async fn only_the_given_ca_is_trusted_and_a_changed_ca_file_is_picked_up() {
    // The file first holds another CA: the proxy's certificate is not trusted.
    let s = setup("cert.pem", Some(SNI)).await;
    let c = s.credential().unwrap();
    let e = token(&c).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Connection, "{e}");
    assert_eq!(s.emulator.token_requests(), 0);
    // The platform rotates the file: the next request trusts the new CA.
    std::fs::copy(fixture("ca.pem"), s.dir.join("ca.pem")).unwrap();
    token(&c).await.unwrap();
    assert_eq!(s.emulator.token_requests(), 1);
    // An empty file mid-rotation keeps the client in use.
    std::fs::write(s.dir.join("ca.pem"), "").unwrap();
    token(&c).await.unwrap();
}

#[tokio::test]
async fn a_transport_of_your_own_with_the_proxy_is_a_configuration_error() {
    let proxy = TokenProxy::from_env(&Lookup::of(&[(TOKEN_PROXY, "https://10.0.0.1")]))
        .unwrap()
        .map(Arc::new);
    let mut file = crate::FederatedTokenFile::from("/var/run/token");
    file.1 = crate::credential::workload_identity::TokenProxySetting::Read(proxy);
    let e = WorkloadIdentityCredential::builder("t", "c", file)
        .transport(crate::transport::tests::Offline)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert!(e.message().contains(TOKEN_PROXY), "{e}");
}
