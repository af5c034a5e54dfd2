//! The tower contract of `EntraAuth`, poll by poll, over `tower-test`'s mock service (which
//! panics when a service is called without `poll_ready` having said it is ready):
//! - token errors never come from `poll_ready` (only from the response future);
//! - the service that `poll_ready` readied is the one called, exactly once per request, and only
//!   once the token is there;
//! - the clone left behind on the cold path is never called unreadied.
//!
//! Tokens come from an in-memory credential the test answers by hand: no sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Mutex, mpsc};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::Service;
use tower_entra::{
    AccessToken, Credential, EntraAuth, TokenError, TokenErrorKind, TokenProvider, TokenRequest,
};
use tower_test::mock;

type Request = http::Request<&'static str>;
type Response = http::Response<&'static str>;
type Mocked = mock::Spawn<EntraAuth<mock::Mock<Request, Response>>>;

/// A credential that answers each token request with what the test sends it, when it sends it.
#[derive(Debug)]
struct ByHand {
    answers: Mutex<mpsc::UnboundedReceiver<Result<AccessToken, TokenError>>>,
    requests: Arc<AtomicUsize>,
}

impl Credential for ByHand {
    fn request_token<'a>(
        &'a self,
        _request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match self.answers.lock().await.recv().await {
                Some(answer) => answer,
                None => AccessToken::new("", Duration::from_secs(1)),
            }
        })
    }
}

/// The test's side of [`ByHand`].
struct Answers {
    tx: mpsc::UnboundedSender<Result<AccessToken, TokenError>>,
    requests: Arc<AtomicUsize>,
}

impl Answers {
    fn token(&self, secret: &str) {
        let token = AccessToken::new(secret, Duration::from_secs(3600));
        self.tx.send(token).expect("the credential is alive");
    }

    /// A token the provider cannot use: an `InvalidResponse`, which is not retried.
    fn unusable(&self) {
        let error = AccessToken::new("not a header\nvalue", Duration::from_secs(3600));
        assert!(error.is_err());
        self.tx.send(error).expect("the credential is alive");
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn provider() -> (TokenProvider, Answers) {
    let (tx, rx) = mpsc::unbounded_channel();
    let requests = Arc::new(AtomicUsize::new(0));
    let credential = ByHand {
        answers: Mutex::new(rx),
        requests: requests.clone(),
    };
    let provider =
        TokenProvider::new(credential, "https://api.example.com/.default").expect("provider");
    (provider, Answers { tx, requests })
}

/// `EntraAuth` over a mock inner service that is not ready until the handle allows requests.
fn service(provider: &TokenProvider) -> (Mocked, mock::Handle<Request, Response>) {
    let (inner, mut handle) = mock::pair();
    handle.allow(0);
    (
        mock::Spawn::new(EntraAuth::new(inner, provider.clone())),
        handle,
    )
}

fn get(url: &str) -> Request {
    http::Request::get(url).body("").expect("request")
}

fn authorization(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn token_errors_never_come_from_poll_ready() {
    let (provider, answers) = provider();
    let (mut service, mut handle) = service(&provider);

    // Not ready while the inner service is not, and ready when it is: nothing else is asked.
    assert_pending!(service.poll_ready());
    assert_eq!(answers.requests(), 0, "poll_ready asked for a token");
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());

    // The token fetch fails: the error comes from the response future.
    let mut response = tokio_test::task::spawn(service.call(get("https://api.example.com/")));
    assert_pending!(response.poll());
    answers.unusable();
    provider.token().await.expect_err("the one fetch fails");
    let error = assert_ready!(response.poll()).expect_err("no token, no response");
    let kind = error.as_token_error().map(TokenError::kind);
    assert_eq!(kind, Some(TokenErrorKind::InvalidResponse), "{error}");
    assert_pending!(handle.poll_request(), "called without a token");

    // The provider now serves that error at once until its backoff passes; the service is
    // still ready, and the error still comes from the call.
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut response = tokio_test::task::spawn(service.call(get("https://api.example.com/")));
    let error = assert_ready!(response.poll()).expect_err("the failed fetch's error");
    let kind = error.as_token_error().map(TokenError::kind);
    assert_eq!(kind, Some(TokenErrorKind::InvalidResponse), "{error}");
    assert_eq!(answers.requests(), 1, "one fetch, its error served after");

    // So does a request the layer refuses to send a token with.
    assert_ready_ok!(service.poll_ready());
    let mut response = tokio_test::task::spawn(service.call(get("http://api.example.com/")));
    let error = assert_ready!(response.poll()).expect_err("plain http to a remote host");
    let kind = error.as_token_error().map(TokenError::kind);
    assert_eq!(kind, Some(TokenErrorKind::UnsafeDestination), "{error}");
    assert_pending!(handle.poll_request(), "a refused request was sent");
}

#[tokio::test]
async fn the_readied_service_is_called_once_and_only_with_the_token() {
    let (provider, answers) = provider();
    let (mut service, mut handle) = service(&provider);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());

    // Cold: the request waits for the token; the inner service is not called meanwhile.
    let mut response = tokio_test::task::spawn(service.call(get("https://api.example.com/")));
    assert_pending!(response.poll());
    assert_pending!(handle.poll_request(), "called before the token arrived");
    assert_eq!(
        format!("{:?}", *response),
        "ResponseFuture { state: Acquiring }"
    );

    answers.token("cold-token");
    provider.token().await.expect("the one fetch");
    assert!(response.is_woken());
    assert_pending!(response.poll());
    assert_eq!(
        format!("{:?}", *response),
        "ResponseFuture { state: Calling }"
    );
    let Poll::Ready(Some((request, reply))) = handle.poll_request() else {
        panic!("the readied service was not called");
    };
    assert_eq!(authorization(&request), Some("Bearer cold-token"));
    assert_pending!(handle.poll_request(), "called twice");
    reply.send_response(http::Response::new("ok"));
    let ok = assert_ready!(response.poll()).expect("the inner response");
    assert_eq!(*ok.body(), "ok");
    assert_pending!(handle.poll_request(), "called again after the response");

    // Cached: the header is set and the readied service called at once, once.
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut response = tokio_test::task::spawn(service.call(get("https://api.example.com/")));
    let Poll::Ready(Some((request, reply))) = handle.poll_request() else {
        panic!("the cached path did not call the readied service");
    };
    assert_eq!(authorization(&request), Some("Bearer cold-token"));
    assert_pending!(handle.poll_request(), "called twice");
    assert_pending!(response.poll());
    reply.send_response(http::Response::new("ok"));
    assert_ready_ok!(response.poll());
    assert_eq!(answers.requests(), 1);
}

#[tokio::test]
async fn the_clone_left_on_the_cold_path_is_never_called_unreadied() {
    let (provider, answers) = provider();
    let (mut service, mut handle) = service(&provider);
    handle.allow(2);

    // Two cold requests in a row, each through a service readied for it (as a Buffer worker
    // does): the mock panics if either is sent through a clone that poll_ready never saw.
    assert_ready_ok!(service.poll_ready());
    let mut first = tokio_test::task::spawn(service.call(get("https://api.example.com/1")));
    assert_ready_ok!(service.poll_ready());
    let mut second = tokio_test::task::spawn(service.call(get("https://api.example.com/2")));
    assert_pending!(first.poll());
    assert_pending!(second.poll());

    answers.token("shared-token");
    provider.token().await.expect("the one fetch");
    assert_pending!(second.poll());
    assert_pending!(first.poll());
    let mut paths = Vec::new();
    for _ in 0..2 {
        let Poll::Ready(Some((request, reply))) = handle.poll_request() else {
            panic!("a readied service was not called");
        };
        assert_eq!(authorization(&request), Some("Bearer shared-token"));
        paths.push(request.uri().path().to_owned());
        reply.send_response(http::Response::new("ok"));
    }
    paths.sort();
    assert_eq!(paths, ["/1", "/2"]);
    assert_ready_ok!(first.poll());
    assert_ready_ok!(second.poll());
    assert_pending!(handle.poll_request());
    assert_eq!(answers.requests(), 1, "one fetch for both");
}

/// A service that is not `Debug`: the response future's `Debug` does not need it to be.
#[derive(Clone)]
struct Opaque;

impl Service<Request> for Opaque {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        std::future::ready(Ok(http::Response::new("ok")))
    }
}

#[tokio::test]
async fn the_response_future_debug_names_its_state_and_nothing_else() {
    let (provider, answers) = provider();
    answers.token("secret-token-value");
    provider.token().await.expect("a cached token");
    let mut service = EntraAuth::new(Opaque, provider.clone());
    let calling = service.call(get("https://api.example.com/"));
    let shown = format!("{calling:?}");
    assert_eq!(shown, "ResponseFuture { state: Calling }");
    assert!(!shown.contains("secret-token-value"));

    let failed = service.call(get("http://api.example.com/"));
    assert_eq!(format!("{failed:?}"), "ResponseFuture { state: Failed }");
}
