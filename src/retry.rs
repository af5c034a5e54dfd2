//! [`RetryOnChallenge`]: a `tower::retry::Policy` that replays a request once after a 401
//! Bearer challenge (feature `retry`).
//!
//! When an API refuses a token, [`EntraAuth`](crate::EntraAuth) has already acted by the time
//! the 401 reaches this policy: `error="invalid_token"` dropped the token from the cache, and a
//! Continuous Access Evaluation challenge (`error="insufficient_claims"` with `claims`) fetched
//! a token carrying the claims. The policy then replays the request once, and the replay
//! carries the new token. Any other response or error is returned as it is.
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

use crate::authorize::{AuthorizeRequest, InspectResponse};
use crate::challenge::BearerChallenge;

/// Replays a request once when the response is 401 with a Bearer challenge saying
/// `invalid_token` or `insufficient_claims`. See the [module docs](crate::retry).
#[derive(Debug, Clone)]
pub struct RetryOnChallenge {
    replays_left: u8,
}

impl RetryOnChallenge {
    /// One replay per request.
    pub fn new() -> Self {
        RetryOnChallenge { replays_left: 1 }
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
    Req: CloneRequest + AuthorizeRequest,
    Res: InspectResponse,
{
    type Future = Ready<()>;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if self.replays_left == 0 || req.has_authorization() {
            return None;
        }
        let response = result.as_ref().ok()?;
        let challenge = BearerChallenge::find(response.bearer_challenges())?;
        if challenge.is_invalid_token() || challenge.is_insufficient_claims() {
            self.replays_left -= 1;
            tracing::debug!(
                error = challenge.error().unwrap_or_default(),
                "401 with a Bearer challenge; replaying the request with a new token"
            );
            Some(ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if self.replays_left == 0 {
            return None;
        }
        req.clone_request()
    }
}
