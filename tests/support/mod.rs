//! Shared set-up for the integration tests: an emulator with a consented app and a provider for
//! its demo API, a hyper-util client, and real servers on 127.0.0.1 that verify the bearer token
//! they receive.
#![allow(dead_code)]

pub mod any_tenant;
pub mod fixtures;
pub mod recording_transport;
pub mod redis_server;
pub mod secret_app;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use entra_emulator::{App, Emulator, RegisteredApp};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::{BoxedUint, PublicKey};
use serde_json::Value;
use sha2::Sha256;
use tower::ServiceBuilder;
use tower_entra::{ClientSecretCredential, EntraAuth, EntraAuthLayer, TokenProvider};

pub const SECRET: &str = "stack-secret-Zq8~never-in-logs";
/// The demo API's `aud`.
pub const DEMO_AUDIENCE: &str = "api://entra-emulator-demo";

pub struct Setup {
    pub emulator: Emulator,
    pub app: RegisteredApp,
    pub provider: TokenProvider,
}

/// An emulator, one consented app, and a provider for the demo API; `cp1` declares the CAE
/// client capability.
pub async fn setup_with(cp1: bool) -> Setup {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("stack")
            .with_secret(SECRET)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let mut builder = TokenProvider::builder(
        credential(&emulator, &app, SECRET),
        Emulator::DEMO_API_SCOPE,
    )
    .refresh_jitter(Duration::ZERO);
    if cp1 {
        builder = builder.client_capabilities(["cp1"]);
    }
    let provider = builder.build().expect("provider");
    Setup {
        emulator,
        app,
        provider,
    }
}

pub async fn setup() -> Setup {
    setup_with(false).await
}

pub fn credential(
    emulator: &Emulator,
    app: &RegisteredApp,
    secret: &str,
) -> ClientSecretCredential {
    // A token request timeout long enough that a paused clock's auto-advance does not fire it.
    ClientSecretCredential::builder(&app.tenant_id, &app.client_id, secret)
        .authority_host(emulator.authority_host())
        .timeout(Duration::from_secs(24 * 3600))
        .build()
        .expect("credential")
}

/// The `client_assertion` of the emulator's last token request.
pub fn sent_assertion(emulator: &Emulator) -> String {
    emulator
        .last_token_request()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "client_assertion")
        .map(|(_, v)| v)
        .unwrap()
}

/// Checks access tokens the way a resource server does: RS256 signature against the emulator's
/// JWKS, audience, expiry, and the demo role.
#[derive(Clone)]
pub struct TokenChecker {
    key: VerifyingKey<Sha256>,
    audience: String,
}

impl TokenChecker {
    pub fn new(emulator: &Emulator, audience: &str) -> TokenChecker {
        let jwks = emulator.signing_jwks();
        let jwk = &jwks["keys"][0];
        let b = |f: &str| {
            BoxedUint::from_be_slice_vartime(
                &URL_SAFE_NO_PAD
                    .decode(jwk[f].as_str().expect("jwk field"))
                    .expect("jwk base64"),
            )
        };
        let key = PublicKey::new(b("n"), b("e")).expect("rsa key");
        TokenChecker {
            key: VerifyingKey::new(key),
            audience: audience.to_owned(),
        }
    }

    /// The claims of a valid `Authorization: Bearer <jwt>` value, or why it is refused.
    pub fn check(&self, authorization: Option<&str>) -> Result<Value, String> {
        let value = authorization.ok_or("no Authorization header")?;
        let jwt = value
            .strip_prefix("Bearer ")
            .ok_or("not a Bearer authorization")?;
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?;
        let sig = Signature::try_from(sig.as_slice()).map_err(|e| e.to_string())?;
        self.key
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| "bad signature".to_string())?;
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        if claims["aud"] != self.audience.as_str() {
            return Err(format!("wrong audience {}", claims["aud"]));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
            return Err("expired".into());
        }
        let roles = claims["roles"].as_array().cloned().unwrap_or_default();
        if !roles.iter().any(|r| r == Emulator::DEMO_API_ROLE) {
            return Err("missing role".into());
        }
        Ok(claims)
    }
}

/// A hyper HTTP/1 server on 127.0.0.1 that answers 200 to a valid token, 401 `invalid_token`
/// otherwise; it counts the requests it accepted.
pub struct CheckingServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

impl CheckingServer {
    pub async fn start(checker: TokenChecker) -> CheckingServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (a, r) = (accepted.clone(), refused.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (checker, a, r) = (checker.clone(), a.clone(), r.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let auth = req
                                .headers()
                                .get(http::header::AUTHORIZATION)
                                .and_then(|v| v.to_str().ok());
                            let response = match checker.check(auth) {
                                Ok(claims) => {
                                    a.fetch_add(1, Ordering::SeqCst);
                                    http::Response::new(Full::new(Bytes::from(format!(
                                        "hello {}",
                                        claims["appid"].as_str().unwrap_or_default()
                                    ))))
                                }
                                Err(why) => {
                                    r.fetch_add(1, Ordering::SeqCst);
                                    http::Response::builder()
                                    .status(401)
                                    .header(
                                        http::header::WWW_AUTHENTICATE,
                                        format!(r#"Bearer error="invalid_token", error_description="{why}""#),
                                    )
                                    .body(Full::new(Bytes::new()))
                                    .unwrap()
                                }
                            };
                            async move { Ok::<_, Infallible>(response) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CheckingServer {
            addr,
            accepted,
            refused,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A hyper-util client; its body type is clonable, so `RetryOnChallenge` can replay requests.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `EntraAuthLayer` for `provider` with 127.0.0.1 allowed: the emulator's demo API and
/// [`CheckingServer`] listen there, outside the audience's own hosts.
pub fn loopback_auth(provider: &TokenProvider) -> EntraAuthLayer {
    EntraAuthLayer::builder(provider.clone())
        .allow_hosts(["127.0.0.1"])
        .build()
        .unwrap()
}

/// An [`http_client`] that sends `provider`'s token to 127.0.0.1 ([`loopback_auth`]).
pub fn authorized_client(provider: &TokenProvider) -> EntraAuth<HttpClient> {
    ServiceBuilder::new()
        .layer(loopback_auth(provider))
        .service(http_client())
}

/// An [`authorized_client`] under `RetryOnChallenge`, which replays a request refused with a
/// Bearer challenge once.
#[cfg(feature = "retry")]
pub fn replaying_client(
    provider: &TokenProvider,
) -> tower::retry::Retry<tower_entra::RetryOnChallenge, EntraAuth<HttpClient>> {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(
            tower_entra::RetryOnChallenge::new(),
        ))
        .service(authorized_client(provider))
}

pub fn get(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(url).body(Full::default()).unwrap()
}

/// Readies `service`, sends `request` through it, and returns the response's status.
pub async fn status<S, B, RB>(service: &mut S, request: http::Request<B>) -> http::StatusCode
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    service
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap()
        .status()
}

/// Everything tracing writes, at TRACE level with span opens and closes, while the guard lives.
/// On a current_thread runtime the provider's spawned fetches run under it too.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn start() -> (LogCapture, tracing::subscriber::DefaultGuard) {
        let capture = LogCapture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An in-memory [`Credential`](tower_entra::Credential) with no sockets, for tests of the
/// provider's behaviour on a paused clock: every request succeeds after `latency` with a new
/// token (`token-0`, `token-1`, ...) of the given lifetime and `refresh_in`, and is logged with
/// the instant it was made.
#[derive(Debug)]
pub struct ScriptedCredential {
    lifetime: Duration,
    refresh_in: Option<Duration>,
    latency: Duration,
    log: RequestLog,
}

/// When a [`ScriptedCredential`]'s requests were made, on tokio's clock.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>);

impl RequestLog {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn instants(&self) -> Vec<tokio::time::Instant> {
        self.0.lock().unwrap().clone()
    }
}

impl ScriptedCredential {
    pub fn new(lifetime: Duration) -> ScriptedCredential {
        ScriptedCredential {
            lifetime,
            refresh_in: None,
            latency: Duration::ZERO,
            log: RequestLog::default(),
        }
    }

    pub fn refresh_in(mut self, refresh_in: Duration) -> ScriptedCredential {
        self.refresh_in = Some(refresh_in);
        self
    }

    pub fn latency(mut self, latency: Duration) -> ScriptedCredential {
        self.latency = latency;
        self
    }

    /// The log of its requests, to keep after the credential moves into a provider.
    pub fn log(&self) -> RequestLog {
        self.log.clone()
    }
}

impl tower_entra::Credential for ScriptedCredential {
    fn request_token<'a>(
        &'a self,
        _request: tower_entra::TokenRequest<'a>,
    ) -> futures::future::BoxFuture<'a, Result<tower_entra::AccessToken, tower_entra::TokenError>>
    {
        let n = {
            let mut log = self.log.0.lock().unwrap();
            log.push(tokio::time::Instant::now());
            log.len() - 1
        };
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            let token = tower_entra::AccessToken::new(format!("token-{n}"), self.lifetime)?;
            Ok(match self.refresh_in {
                Some(r) => token.with_refresh_in(r),
                None => token,
            })
        })
    }
}
