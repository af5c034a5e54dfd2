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

use std::sync::Arc;

use tower_layer::Layer;

use crate::destination::{ProviderRoutes, Targets};
use crate::provider::TokenProvider;
use crate::service::EntraAuth;

mod builder;

pub use builder::EntraAuthLayerBuilder;

/// Wraps a service in [`EntraAuth`], which sets `Authorization: Bearer <token>` on each request.
///
/// Cheap to clone: every service it makes shares the provider's token cache. In a
/// `ServiceBuilder`, put it below retry and timeout and right above the client, so that each
/// retry carries a current token and a timeout bounds the token fetch too.
///
/// Where tokens go is described [below](#where-tokens-go): https or loopback only, to the
/// hosts the token's audience serves or the [allowed hosts](EntraAuthLayerBuilder::allow_hosts), or
/// [routed by host](Self::routed) to one of several providers.
///
/// # Where tokens go
///
/// A bearer token sent to the wrong host is a leaked credential, so [`EntraAuth`](crate::EntraAuth)
/// decides, per request, before any token is fetched:
///
/// 1. A request that already has an `Authorization` header passes unchanged.
/// 2. The request's host picks the provider: the first [route](crate::ProviderRoutes) that matches
///    it, else the layer's default provider (the one given to
///    [`EntraAuthLayer::new`](crate::EntraAuthLayer::new)) when the host is one it reaches:
///    - by default, a host its **audience** serves: the scope's own host for
///      `https://<host>/.default` (`graph.microsoft.com` for Microsoft Graph), plus, for the
///      well-known Microsoft resources whose tokens are used on other hosts, those hosts in every
///      cloud (`https://storage.azure.com`: `*.blob|queue|table|file|dfs.core.windows.net`;
///      `https://vault.azure.net`: `*.vault.azure.net`; `https://database.windows.net`; Service Bus
///      and Event Hubs; Cosmos DB; Cognitive Services and Azure OpenAI; PostgreSQL and MySQL
///      flexible servers). An `api://...` or application-id scope names no host, so its tokens go
///      nowhere until hosts are named;
///    - the [allow-list](crate::EntraAuthLayerBuilder::allow_hosts), when one is given, instead;
///    - any host, after [`allow_any_https_host`](crate::EntraAuthLayerBuilder::allow_any_https_host).
///
///    A host that nothing matches is refused with
///    [`TokenErrorKind::UnsafeDestination`](crate::TokenErrorKind::UnsafeDestination) naming the
///    host, the audience and the fix, or sent without a token with
///    [`UnlistedHost::SendWithoutToken`](crate::UnlistedHost::SendWithoutToken).
/// 3. A token goes over `https`, or plain `http` to a loopback address (for tests). Anything else
///    (plain http to another host, another scheme, an origin without a scheme) is refused.
///
/// Loopback gets no exemption from the audience: a token for `http://127.0.0.1:7071/.default` goes
/// to `127.0.0.1`, its own host, but one for `api://my-api` goes to a local server only once it is
/// named (`.allow_hosts(["127.0.0.1"])`), as any other host; another process on the machine is not
/// the API.
///
/// A request with a relative URI (as tonic's generated clients send into a `Channel`, which adds
/// the origin itself) names neither scheme nor host: it is judged by the layer's
/// [origin](crate::EntraAuthLayerBuilder::origin), and refused when none is set. With an origin set, a
/// request with an absolute URI is judged by both (the inner service sends it to the origin
/// whatever its URI says). A request that names a host without a scheme (`evil.example:443`, as for
/// CONNECT) is refused.
///
/// Host patterns ([`ProviderRoutes::route`](crate::ProviderRoutes::route),
/// [`EntraAuthLayerBuilder::allow_hosts`]) are checked by
/// [`EntraAuthLayerBuilder::build`]: a pattern that is not a host fails there with
/// [`TokenErrorKind::Configuration`](crate::TokenErrorKind::Configuration), at start-up, not at
/// the first request.
#[derive(Debug, Clone)]
pub struct EntraAuthLayer {
    targets: Arc<Targets>,
}

impl EntraAuthLayer {
    /// A layer that takes tokens from `provider` and attaches them only to the hosts its
    /// audience serves: the scope's own host for `https://<host>/.default`, and the hosts of
    /// well-known Microsoft resources (`https://storage.azure.com` for
    /// `*.blob.core.windows.net`, `https://vault.azure.net` for `*.vault.azure.net`, ...). An
    /// `api://` or application-id scope names no host, so its tokens go nowhere until
    /// [`allow_hosts`](EntraAuthLayerBuilder::allow_hosts) names them. See [where tokens go](Self#where-tokens-go).
    ///
    /// To name the hosts, set an origin or send unlisted hosts without a token, start from
    /// [`builder`](Self::builder) instead.
    pub fn new(provider: TokenProvider) -> Self {
        EntraAuthLayer {
            targets: Arc::new(Targets::one(provider)),
        }
    }

    /// A layer taking tokens from `provider`, configured by the builder's setters (which cannot
    /// fail) and checked once by [`build`](EntraAuthLayerBuilder::build), as the credentials'
    /// and the provider's builders are.
    ///
    /// ```
    /// # fn demo(provider: tower_entra::TokenProvider) -> Result<(), tower_entra::TokenError> {
    /// use tower_entra::{EntraAuthLayer, UnlistedHost};
    ///
    /// let layer = EntraAuthLayer::builder(provider)
    ///     .allow_hosts(["graph.microsoft.com"])
    ///     .unlisted_hosts(UnlistedHost::SendWithoutToken)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(provider: TokenProvider) -> EntraAuthLayerBuilder {
        EntraAuthLayerBuilder::new(Targets::one(provider), None)
    }

    /// A layer that picks the provider by the request's host; hosts without a route get no
    /// token (see [`unlisted_hosts`](EntraAuthLayerBuilder::unlisted_hosts)). Its routes are
    /// checked by [`build`](EntraAuthLayerBuilder::build).
    pub fn routed(routes: ProviderRoutes) -> EntraAuthLayerBuilder {
        let invalid = routes.invalid().cloned();
        EntraAuthLayerBuilder::new(Targets::routed(routes), invalid)
    }

    /// The provider tokens come from; `None` for a [routed](Self::routed) layer.
    pub fn provider(&self) -> Option<&TokenProvider> {
        self.targets.provider()
    }

    /// The routes of a [routed](Self::routed) layer.
    pub fn routes(&self) -> Option<&ProviderRoutes> {
        self.targets.routes()
    }

    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    pub(crate) fn targets(&self) -> &Arc<Targets> {
        &self.targets
    }
}

impl<S> Layer<S> for EntraAuthLayer {
    type Service = EntraAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EntraAuth::with_targets(inner, self.targets.clone())
    }
}
