//! [`RetryOnChallenge`]: a `tower::retry::Policy` that replays a request once after a 401
//! Bearer challenge (feature `retry`, on by default).
//!
//! When an API refuses a token, [`EntraAuth`](crate::EntraAuth) has already acted by the time
//! the 401 reaches this policy: `error="invalid_token"` dropped the token from the cache, and a
//! Continuous Access Evaluation challenge (`error="insufficient_claims"` with `claims`) fetched
//! a token carrying the claims. When it did, it marked the response, and the policy replays the
//! request once with the new token. Any other response or error is returned as it is,
//! including a refusal the layer did not act on (a request sent without a token, or a second
//! refusal within the renewal interval).
//!
//! Put the `Retry` layer above [`EntraAuthLayer`](crate::EntraAuthLayer) (requests are cloned
//! before the token is attached). Requests must be clonable: `http::Request<B>` with a `Clone`
//! body (`String`, `Full<Bytes>`, …) or a `reqwest::Request` with a non-streaming body. A
//! request that cannot be cloned, or that carried its own `Authorization` header, is not
//! replayed. tonic's request bodies are streams and cannot be replayed.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower::retry::RetryLayer;
//! use tower_entra::{EntraAuthLayer, RetryOnChallenge, TokenProvider};
//!
//! # fn demo(provider: TokenProvider) {
//! let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<String>();
//! let service = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryOnChallenge::new()))
//!     .timeout(Duration::from_secs(10))
//!     .layer(EntraAuthLayer::new(provider))
//!     .service(client);
//! # let _ = service;
//! # }
//! ```

use std::future::{Ready, ready};

use tower::retry::Policy;

use crate::refusal::{InspectResponse, Replays};

/// Replays a request once when the response is 401 with a Bearer challenge saying
/// `invalid_token` or `insufficient_claims`. See the [module docs](crate::retry).
#[derive(Debug, Clone)]
pub struct RetryOnChallenge {
    replays: Replays,
}

impl RetryOnChallenge {
    /// One replay per request.
    pub fn new() -> Self {
        RetryOnChallenge {
            replays: Replays::up_to(1),
        }
    }
}

impl Default for RetryOnChallenge {
    fn default() -> Self {
        Self::new()
    }
}

/// A request that can be copied for a replay.
pub trait CloneRequest: Sized {
    /// A copy of the request, or `None` when its body cannot be copied.
    fn clone_request(&self) -> Option<Self>;
}

impl<B: Clone> CloneRequest for http::Request<B> {
    fn clone_request(&self) -> Option<Self> {
        Some(self.clone())
    }
}

#[cfg(feature = "reqwest")]
impl CloneRequest for reqwest::Request {
    fn clone_request(&self) -> Option<Self> {
        self.try_clone()
    }
}

impl<Req, Res, E> Policy<Req, Res, E> for RetryOnChallenge
where
    Req: CloneRequest,
    Res: InspectResponse,
{
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        self.replays.take(response).then(|| ready(()))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if !self.replays.any_left() {
            return None;
        }
        req.clone_request()
    }
}
