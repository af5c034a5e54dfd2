//! tonic integration (feature `tonic`): token failures reach gRPC callers as a meaningful
//! [`tonic::Status`] instead of `Unknown`.
//!
//! [`crate::EntraAuthLayer`] works on a tonic `Channel` without this feature;
//! a token failure then reaches the generated client as `Code::Unknown`. With
//! [`GrpcStatusLayer`] above it (or [`EntraAuthLayer::grpc`](crate::EntraAuthLayer::grpc)), it
//! becomes `Code::Unavailable` when a retry may help (Entra or the network failed) and
//! `Code::Unauthenticated` otherwise, with the message and fix hint of the
//! [`crate::TokenError`].
//!
//! ```no_run
//! # async fn demo(provider: tower_entra::TokenProvider) -> Result<(), Box<dyn std::error::Error>> {
//! use tonic::transport::Endpoint;
//! use tower::ServiceBuilder;
//! use tower_entra::EntraAuthLayer;
//!
//! let endpoint = Endpoint::from_static("https://grpc.example.com");
//! let channel = endpoint.connect().await?;
//! let channel = ServiceBuilder::new()
//!     // Generated clients send relative URIs; the origin is where the channel sends them.
//!     .layer(EntraAuthLayer::builder(provider).origin(endpoint.uri().clone()).build()?.grpc())
//!     .service(channel);
//! // let mut client = MyServiceClient::new(channel);
//! # let _ = channel;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tonic::Status;
use tower_layer::{Layer, Stack};
use tower_service::Service;

use crate::error::{Error, TokenError};
use crate::layer::EntraAuthLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl From<TokenError> for Status {
    /// `Unavailable` for transient failures, `Unauthenticated` otherwise; the message has the
    /// fix hint.
    fn from(e: TokenError) -> Status {
        let message = format!("could not authorize the request: {e}");
        if e.is_transient() {
            Status::unavailable(message)
        } else {
            Status::unauthenticated(message)
        }
    }
}

impl EntraAuthLayer {
    /// This layer with [`GrpcStatusLayer`] above it, for tonic clients.
    pub fn grpc(self) -> Stack<EntraAuthLayer, GrpcStatusLayer> {
        Stack::new(self, GrpcStatusLayer)
    }
}

/// Turns an [`Error::Token`] into a boxed [`Status`] that tonic hands to the caller as it is;
/// other errors pass unchanged (boxed).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatusLayer;

impl<S> Layer<S> for GrpcStatusLayer {
    type Service = GrpcStatus<S>;
    fn layer(&self, inner: S) -> GrpcStatus<S> {
        GrpcStatus { inner }
    }
}

/// The service of [`GrpcStatusLayer`].
#[derive(Debug, Clone)]
pub struct GrpcStatus<S> {
    inner: S,
}

impl<S> GrpcStatus<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn to_box<E: Into<BoxError>>(e: Error<E>) -> BoxError {
    match e {
        Error::Token(t) => Box::new(Status::from(t)),
        Error::Inner(e) => e.into(),
    }
}

impl<S, R, E> Service<R> for GrpcStatus<S>
where
    S: Service<R, Error = Error<E>>,
    E: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GrpcStatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(to_box)
    }

    fn call(&mut self, request: R) -> Self::Future {
        GrpcStatusFuture {
            future: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The response future of [`GrpcStatus`].
    pub struct GrpcStatusFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F, T, E> Future for GrpcStatusFuture<F>
where
    F: Future<Output = Result<T, Error<E>>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().future.poll(cx)).map_err(to_box))
    }
}
