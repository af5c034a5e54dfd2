//! [`EntraAuthMiddleware`]: the same token handling for `reqwest_middleware::ClientBuilder`
//! (feature `reqwest-middleware`).
//!
//! It shares the provider (and so the cache) and the destination rules of
//! [`EntraAuthLayer`](crate::EntraAuthLayer), and replays a request once after a 401 Bearer
//! challenge (`invalid_token`, or a Continuous Access Evaluation `insufficient_claims`
//! challenge, for which a token carrying the claims is fetched first) when the request can be
//! cloned (any non-streaming body).
//!
//! ```no_run
//! # async fn demo(provider: tower_entra::TokenProvider) -> Result<(), Box<dyn std::error::Error>> {
//! use reqwest_middleware::ClientBuilder;
//! use tower_entra::EntraAuthMiddleware;
//!
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(EntraAuthMiddleware::new(provider))
//!     .build();
//! let response = client.get("https://graph.microsoft.com/v1.0/organization").send().await?;
//! # let _ = response;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use crate::authorize::AuthorizeRequest;
use crate::destination::{Decision, Targets};
use crate::layer::EntraAuthLayer;
use crate::provider::TokenProvider;
use crate::refusal::{self, Answer, Replays};
use crate::tenant::Tenant;

/// A `reqwest_middleware` middleware that sets `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct EntraAuthMiddleware {
    targets: Arc<Targets>,
    replay: bool,
}

impl EntraAuthMiddleware {
    /// Tokens from `provider` for the hosts its audience serves, as
    /// [`EntraAuthLayer::new`](crate::EntraAuthLayer::new); [`from_layer`](Self::from_layer)
    /// takes an allow-list or routes.
    pub fn new(provider: TokenProvider) -> Self {
        EntraAuthMiddleware {
            targets: Arc::new(Targets::one(provider)),
            replay: true,
        }
    }

    /// The provider(s), allow-list or routes of `layer`.
    pub fn from_layer(layer: &EntraAuthLayer) -> Self {
        EntraAuthMiddleware {
            targets: layer.targets().clone(),
            replay: true,
        }
    }

    /// Whether to replay a request once after a 401 Bearer challenge. Default: yes.
    pub fn replay_on_challenge(mut self, replay: bool) -> Self {
        self.replay = replay;
        self
    }
}

#[async_trait::async_trait]
impl Middleware for EntraAuthMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if req.has_authorization() {
            return next.run(req, extensions).await;
        }
        let provider = match self.targets.decide(&req) {
            Decision::Attach(p) => p.clone(),
            Decision::SendWithoutToken => return next.run(req, extensions).await,
            Decision::Refuse(e) => return Err(reqwest_middleware::Error::middleware(e)),
        };
        // The tenant, from the middleware's extensions (`RequestBuilder::with_extension`).
        let provider = match extensions.get::<Tenant>() {
            None => provider,
            Some(tenant) => provider
                .in_tenant(tenant)
                .map_err(reqwest_middleware::Error::middleware)?,
        };
        // The same decision as `RetryOnChallenge`: one replay, when the refused token was renewed.
        let mut replays = Replays::up_to(u8::from(self.replay));
        loop {
            let copy = if replays.any_left() {
                req.try_clone()
            } else {
                None
            };
            let token = provider
                .token()
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            req.set_authorization(token.header_value().clone());
            let response = next.clone().run(req, extensions).await?;
            let response =
                match refusal::answer(|| Some((&provider, Some(token.clone()))), response) {
                    Answer::Ready(response) => response,
                    Answer::Renewing(renewing) => renewing
                        .await
                        .map_err(reqwest_middleware::Error::middleware)?,
                };
            match copy {
                Some(again) if replays.take(&response) => req = again,
                _ => return Ok(response),
            }
        }
    }
}
