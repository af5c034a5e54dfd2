//! [`EntraAuthLayer`]: puts a Microsoft Entra access token on every request.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_entra::{AccessToken, Credential, EntraAuthLayer, TokenError, TokenProvider, TokenRequest};
//!
//! # #[derive(Debug)] struct Fixed;
//! # impl Credential for Fixed {
//! #     fn request_token<'a>(&'a self, _: TokenRequest<'a>) -> futures::future::BoxFuture<'a, Result<AccessToken, TokenError>> {
//! #         Box::pin(async { AccessToken::new("t0ken", std::time::Duration::from_secs(3600)) })
//! #     }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // In a real service: ClientSecretCredential::new(tenant, client, secret)?
//! let provider = TokenProvider::new(Fixed, "https://graph.microsoft.com/.default")?;
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(EntraAuthLayer::new(provider))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
//!         Ok::<_, Infallible>(Response::new(auth))
//!     }));
//!
//! let request = Request::get("https://graph.microsoft.com/v1.0/organization").body(String::new())?;
//! let response = client.ready().await?.call(request).await?;
//! assert_eq!(response.body(), "Bearer t0ken");
//! # Ok(()) }
//! ```

use tower_layer::Layer;

use crate::provider::TokenProvider;
use crate::service::EntraAuth;

/// Wraps a service in [`EntraAuth`], which sets `Authorization: Bearer <token>` on each request.
///
/// Cheap to clone: every service it makes shares the provider's token cache. In a
/// `ServiceBuilder`, put it below retry and timeout and right above the client, so that each
/// retry carries a current token and a timeout bounds the token fetch too.
#[derive(Debug, Clone)]
pub struct EntraAuthLayer {
    provider: TokenProvider,
}

impl EntraAuthLayer {
    /// A layer that takes tokens from `provider`.
    pub fn new(provider: TokenProvider) -> Self {
        EntraAuthLayer { provider }
    }

    /// The provider tokens come from.
    pub fn provider(&self) -> &TokenProvider {
        &self.provider
    }
}

impl<S> Layer<S> for EntraAuthLayer {
    type Service = EntraAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EntraAuth::new(inner, self.provider.clone())
    }
}
