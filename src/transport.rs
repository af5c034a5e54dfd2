//! How credentials send their requests: through any `tower::Service` over
//! `http::Request<Full<Bytes>>` (reqwest by default), with our guarantees around it whatever the
//! service does: a 3xx is an error and never followed, the answer is read into bounded memory
//! that is zeroed when dropped, the whole exchange has a deadline, the request form lives in
//! memory that is zeroed when the service drops it, and every request carries the telemetry
//! headers. A failure to connect at all is tagged as such (see [`is_not_connected`]), and a
//! token endpoint whose clock is off ours gets one warning per credential.
//!
//! The seam for credentials is [`Transport::send`] (any request) and
//! [`Transport::request_token`] (the token POST); a builder collects a [`TransportChoice`] and
//! turns it into a [`Transport`] with [`Transport::new`].

mod clock_skew;
mod in_transit;
#[cfg(feature = "reqwest")]
mod reqwest;
mod retry_after;
mod route;
mod service;
mod telemetry;

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use http::{HeaderMap, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use url::Url;
use zeroize::Zeroizing;

use self::clock_skew::ClockSkewWarning;
use crate::endpoint::{parse_error_response, parse_token_response};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

#[cfg(feature = "reqwest")]
pub(crate) use self::reqwest::from_client as reqwest_transport;
pub(crate) use in_transit::is_not_connected;
pub(crate) use retry_after::retry_after;
pub(crate) use route::Route;
pub(crate) use service::TransportService;

/// What a credential's transport is given to send: an `http::Request` whose body is the whole
/// request, in memory (a token request's form, or nothing).
///
/// A transport is any `tower::Service<TransportRequest>` answering `http::Response<B>` where
/// `B: http_body::Body`; see
/// [`ConfidentialClientCredentialBuilder::transport`](crate::ConfidentialClientCredentialBuilder::transport).
pub type TransportRequest = http::Request<Full<Bytes>>;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest answer read; a token response is a few KiB.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// The default bound on one request, connection included.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer as the transport read it: never a redirect, the body at most [`MAX_BODY`] bytes in
/// memory that is zeroed when dropped (it may hold a token).
pub(crate) struct BufferedResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Zeroizing<Vec<u8>>,
}

/// What a credential's `.transport(service)` takes: any `tower::Service` over
/// [`TransportRequest`] answering `http::Response` with a body, cloneable and `Send` (each
/// request gets its own clone, readied before it is called). Implemented for every such
/// service, such as a hyper-util client; you never implement it yourself.
pub trait TokenTransport:
    tower_service::Service<
        TransportRequest,
        Response = http::Response<Self::ResponseBody>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The body of the service's responses.
    type ResponseBody: Body<Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> TokenTransport for S
where
    S: tower_service::Service<TransportRequest, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    type ResponseBody = B;
}

/// The transport a builder was given, before it is built into a [`Transport`].
#[derive(Default)]
pub(crate) enum TransportChoice {
    /// reqwest with rustls when the `reqwest` feature is on; a configuration error otherwise.
    #[default]
    Default,
    /// A `reqwest::ClientBuilder` from the caller (proxies, TLS roots), built by us with
    /// redirects off.
    #[cfg(feature = "reqwest")]
    Reqwest(Box<::reqwest::ClientBuilder>),
    /// The caller's own service.
    Service(Arc<dyn TransportService>),
    /// A client a credential built itself, which never uses a proxy.
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    Direct(Arc<dyn TransportService>),
}

impl TransportChoice {
    /// The caller's service as the transport.
    pub(crate) fn service<S: TokenTransport>(service: S) -> Self {
        TransportChoice::Service(Arc::new(service::ServiceTransport::new(service)))
    }

    /// A reqwest client built by a credential with settings of its own (no proxy, a short
    /// connect timeout, a pinned certificate) as the transport.
    #[cfg(feature = "reqwest")]
    pub(crate) fn reqwest_client(client: ::reqwest::Client) -> Self {
        TransportChoice::Direct(reqwest::from_client(client))
    }
}

impl fmt::Debug for TransportChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the ClientBuilder itself: its default headers and proxy URLs may hold credentials.
        match self {
            TransportChoice::Default => f.write_str("default"),
            #[cfg(feature = "reqwest")]
            TransportChoice::Reqwest(_) => f.write_str("caller's reqwest::ClientBuilder"),
            TransportChoice::Service(service) | TransportChoice::Direct(service) => {
                write!(f, "{}", service.name())
            }
        }
    }
}

/// The HTTP side of a credential: a service and the guarantees around it. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Transport {
    service: Arc<dyn TransportService>,
    timeout: Duration,
    /// How requests reach the endpoint, for the error when they cannot.
    route: Route,
    /// Shared by the clones: the credential warns about a skewed clock once.
    clock_skew: Arc<ClockSkewWarning>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("service", &self.service.name())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Transport {
    /// Builds the chosen transport for requests to `destination` (the credential's one endpoint:
    /// with reqwest, a plain-http loopback destination is reached directly, never through a
    /// proxy, so that a form holding a secret never reaches a proxy in clear).
    pub(crate) fn new(
        choice: TransportChoice,
        timeout: Duration,
        destination: &Url,
    ) -> Result<Self, TokenError> {
        if timeout.is_zero() {
            return Err(TokenError::configuration(
                "the token request timeout is zero; use a positive duration (the default is 30 s)",
            ));
        }
        let (service, route) = match choice {
            TransportChoice::Service(service) => (service, Route::CallerService),
            TransportChoice::Direct(service) => (service, Route::Direct),
            #[cfg(feature = "reqwest")]
            TransportChoice::Default => reqwest::transport(None, timeout, destination)?,
            #[cfg(feature = "reqwest")]
            TransportChoice::Reqwest(builder) => {
                reqwest::transport(Some(*builder), timeout, destination)?
            }
            #[cfg(not(feature = "reqwest"))]
            TransportChoice::Default => {
                let _ = destination;
                return Err(TokenError::configuration(
                    "no transport for token requests: tower-entra was built without its `reqwest` feature, so give the credential one with `.transport(service)` on its builder (any tower::Service<http::Request<http_body_util::Full<bytes::Bytes>>>, such as a hyper-util client; EnvironmentCredential::with_transport for the environment), or enable the `reqwest` feature",
                ));
            }
        };
        Ok(Transport {
            service,
            timeout,
            route,
            clock_skew: Arc::default(),
        })
    }

    /// The bound on one exchange, connecting and reading the answer included.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` with the telemetry headers and reads the answer, within the timeout.
    /// A redirect is an [`InvalidResponse`](TokenErrorKind::InvalidResponse) error (never
    /// followed); an answer over [`MAX_BODY`] bytes too.
    pub(crate) async fn send(
        &self,
        mut request: TransportRequest,
    ) -> Result<BufferedResponse, TokenError> {
        telemetry::add_headers(request.headers_mut());
        let destination = route::destination_of(request.uri());
        match tokio::time::timeout(self.timeout, self.service.send(request)).await {
            Ok(Err(e)) if is_not_connected(&e) => {
                let message = format!("could not connect to {destination} {}", self.route);
                Err(e.reworded(message))
            }
            Ok(result) => result,
            Err(_) => Err(TokenError::new(
                TokenErrorKind::Timeout,
                format!(
                    "{destination} did not answer within {:?} (reached {}); raise the credential's timeout or check the network path to the endpoint",
                    self.timeout, self.route
                ),
            )),
        }
    }

    /// POSTs `form` to `url` and parses the answer as a token response. The form holds secrets:
    /// it never reaches an error or a log, and its bytes are zeroed when the service drops them.
    pub(crate) async fn request_token(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<AccessToken, TokenError> {
        let request = http::Request::post(url.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            // Entra echoes it as its correlation id, so its logs can be matched with ours.
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .header("return-client-request-id", "true")
            .body(Full::new(form_body(form)))
            .map_err(|e| {
                TokenError::configuration("the token endpoint URL is not a valid request URI")
                    .with_source(e)
            })?;
        let started = Instant::now();
        let wall = SystemTime::now();
        let response = self.send(request).await?;
        // Any answer says what time the token endpoint thinks it is, an error's too (an
        // assertion refused for its `nbf` is where a skewed clock shows first).
        self.clock_skew
            .check(&response.headers, SystemTime::now(), url);
        if response.status.is_success() {
            parse_token_response(&response.body, started, wall)
        } else {
            Err(parse_error_response(
                response.status.as_u16(),
                &response.body,
                retry_after(&response.headers),
            ))
        }
    }
}

/// The form-encoded request body, in memory that is zeroed when the last `Bytes` handle to it
/// (the transport's) is dropped.
fn form_body(form: &[(&str, &str)]) -> Bytes {
    // Sized up front (percent-encoding at most triples a byte) so that the string never
    // reallocates, which would leave a copy of the secret in freed memory.
    let capacity = form.iter().map(|(k, v)| 3 * (k.len() + v.len()) + 2).sum();
    let body = url::form_urlencoded::Serializer::new(String::with_capacity(capacity))
        .extend_pairs(form)
        .finish();
    Bytes::from_owner(Zeroizing::new(body.into_bytes()))
}

/// A redirect is refused before its body is read: a token endpoint never sends one, and
/// following a 307/308 would re-send the form (the client secret or assertion) to its target.
fn refuse_redirect(status: StatusCode) -> Result<(), TokenError> {
    if status.is_redirection() {
        return Err(TokenError::invalid_response(format!(
            "the endpoint answered with a redirect (HTTP {}), which is never followed; check the endpoint's URL (the authority host, or the variable naming a managed identity endpoint)",
            status.as_u16()
        )));
    }
    Ok(())
}

/// Reads an answer (which may hold a token) into memory that is zeroed when dropped, at most
/// [`MAX_BODY`] bytes. Trailers are ignored.
async fn read_bounded<B>(body: B) -> Result<Zeroizing<Vec<u8>>, TokenError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let hint = body.size_hint();
    if hint.lower() > MAX_BODY as u64 {
        return Err(oversized());
    }
    let capacity = hint.exact().map_or(8 * 1024, |n| n as usize);
    let mut body = pin!(body);
    let mut read = Zeroizing::new(Vec::with_capacity(capacity));
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(in_transit::in_transit)?.into_data() else {
            continue;
        };
        while data.has_remaining() {
            let chunk = data.chunk();
            let len = chunk.len();
            append(&mut read, chunk)?;
            data.advance(len);
        }
    }
    Ok(read)
}

/// Appends `chunk`, refusing to go past [`MAX_BODY`]. Grown by hand: `Vec`'s own reallocation
/// would free the old buffer unzeroed.
fn append(read: &mut Zeroizing<Vec<u8>>, chunk: &[u8]) -> Result<(), TokenError> {
    let needed = read.len() + chunk.len();
    if needed > MAX_BODY {
        return Err(oversized());
    }
    if needed > read.capacity() {
        let mut grown = Zeroizing::new(Vec::with_capacity(
            needed.max(read.capacity() * 2).min(MAX_BODY),
        ));
        grown.extend_from_slice(read);
        *read = grown;
    }
    read.extend_from_slice(chunk);
    Ok(())
}

fn oversized() -> TokenError {
    TokenError::invalid_response(format!(
        "the endpoint's answer is larger than {MAX_BODY} bytes; a token response is a few KiB, so this is not Entra"
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A transport for tests that send nothing: every call fails.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Offline;

    impl tower_service::Service<TransportRequest> for Offline {
        type Response = http::Response<Full<Bytes>>;
        type Error = std::io::Error;
        type Future = Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: TransportRequest) -> Self::Future {
            ready(Err(std::io::Error::other(
                "offline: this test sends nothing",
            )))
        }
    }

    /// A transport answering every request with `answer(request)`.
    fn answering<B, F>(answer: F) -> Transport
    where
        F: Fn(TransportRequest) -> http::Response<B> + Clone + Send + Sync + 'static,
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let service = tower::service_fn(move |request| ready(Ok::<_, Infallible>(answer(request))));
        let url = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
        Transport::new(TransportChoice::service(service), DEFAULT_TIMEOUT, &url).unwrap()
    }

    fn token_url() -> Url {
        Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap()
    }

    const TOKEN: &str = r#"{"token_type":"Bearer","expires_in":3599,"access_token":"a.b.c"}"#;

    #[tokio::test]
    async fn a_redirect_from_any_service_is_an_error() {
        for status in [301, 302, 303, 307, 308] {
            let transport = answering(move |_| {
                http::Response::builder()
                    .status(status)
                    .header(http::header::LOCATION, "https://attacker.example/")
                    .body(Full::new(Bytes::from_static(TOKEN.as_bytes())))
                    .unwrap()
            });
            let e = transport
                .request_token(&token_url(), &[("client_secret", "s")])
                .await
                .unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{status}: {e}");
            assert!(e.to_string().contains("redirect"), "{e}");
        }
    }

    /// A body of `chunks` chunks of 64 KiB that does not say how long it is.
    struct Endless {
        chunks: usize,
    }

    impl Body for Endless {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            if self.chunks == 0 {
                return Poll::Ready(None);
            }
            self.chunks -= 1;
            Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
                b' ';
                64 * 1024
            ])))))
        }
    }

    #[tokio::test]
    async fn the_answer_is_bounded_whatever_the_service() {
        // Announced (Content-Length) or not, past 1 MiB is an error.
        let announced =
            answering(|_| http::Response::new(Full::new(Bytes::from(vec![b' '; MAX_BODY + 1]))));
        let streamed = answering(|_| http::Response::new(Endless { chunks: 17 }));
        for transport in [announced, streamed] {
            let e = transport
                .request_token(&token_url(), &[])
                .await
                .unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{e}");
            assert!(e.to_string().contains("larger than"), "{e}");
        }
        // Up to the bound is read, in several chunks: 16 x 64 KiB of white space, then a token.
        let body = || {
            let mut body = vec![b' '; MAX_BODY - TOKEN.len()];
            body.extend_from_slice(TOKEN.as_bytes());
            body
        };
        let at_the_bound = answering(move |_| http::Response::new(Full::new(Bytes::from(body()))));
        let token = at_the_bound.request_token(&token_url(), &[]).await.unwrap();
        assert_eq!(token.secret(), "a.b.c");
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_never_answers_times_out() {
        let hung = tower::service_fn(|_: TransportRequest| {
            std::future::pending::<Result<http::Response<Full<Bytes>>, Infallible>>()
        });
        let transport = Transport::new(
            TransportChoice::service(hung),
            Duration::from_secs(7),
            &token_url(),
        )
        .unwrap();
        let e = tokio::time::timeout(
            Duration::from_secs(60),
            transport.request_token(&token_url(), &[]),
        )
        .await
        .expect("the transport's own deadline did not fire")
        .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Timeout, "{e}");
        assert!(e.to_string().contains("7s"), "{e}");
    }

    #[tokio::test]
    async fn service_errors_are_transient_and_timeouts_are_told_apart() {
        for (error, kind) in [
            (
                std::io::ErrorKind::ConnectionRefused,
                TokenErrorKind::Connection,
            ),
            (std::io::ErrorKind::TimedOut, TokenErrorKind::Timeout),
        ] {
            let failing = tower::service_fn(move |_: TransportRequest| {
                ready(Err::<http::Response<Full<Bytes>>, _>(std::io::Error::from(
                    error,
                )))
            });
            let transport = Transport::new(
                TransportChoice::service(failing),
                DEFAULT_TIMEOUT,
                &token_url(),
            )
            .unwrap();
            let e = transport
                .request_token(&token_url(), &[])
                .await
                .unwrap_err();
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.is_transient(), "{e}");
        }
    }

    /// A refused connection names the host and port it was for and the way it went.
    #[tokio::test]
    async fn a_failure_to_connect_names_the_destination_and_the_route() {
        let refusing = tower::service_fn(|_: TransportRequest| {
            ready(Err::<http::Response<Full<Bytes>>, _>(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))
        });
        let service = Arc::new(service::ServiceTransport::new(refusing));
        for (choice, way) in [
            (
                TransportChoice::Service(service.clone()),
                "through the credential's transport service",
            ),
            (TransportChoice::Direct(service), "directly (no proxy)"),
        ] {
            let transport = Transport::new(choice, DEFAULT_TIMEOUT, &token_url()).unwrap();
            let e = transport
                .request_token(&token_url(), &[])
                .await
                .unwrap_err();
            assert!(is_not_connected(&e), "{e}");
            assert!(
                e.message().starts_with(&format!(
                    "could not connect to login.microsoftonline.com:443 {way}"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn without_a_transport_or_reqwest_building_says_how_to_give_one() {
        let built = Transport::new(TransportChoice::Default, DEFAULT_TIMEOUT, &token_url());
        if cfg!(feature = "reqwest") {
            assert!(built.is_ok());
        } else {
            let e = built.unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
            assert!(e.to_string().contains(".transport(service)"), "{e}");
        }
        let e = Transport::new(
            TransportChoice::service(Offline),
            Duration::ZERO,
            &token_url(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    }

    #[test]
    fn the_form_body_is_form_encoded() {
        let body = form_body(&[
            ("grant_type", "client_credentials"),
            ("client_secret", "a b&c=d~ü"),
        ]);
        assert_eq!(
            &body[..],
            b"grant_type=client_credentials&client_secret=a+b%26c%3Dd%7E%C3%BC"
        );
        let decoded: Vec<(String, String)> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        assert_eq!(decoded[1].1, "a b&c=d~ü");
    }
}
