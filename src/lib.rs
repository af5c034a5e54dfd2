//! Tower middleware that authenticates requests to Microsoft APIs (Microsoft Graph, Azure
//! Resource Manager, any API registered in Entra ID) with the OAuth 2.0 client credentials flow
//! of Microsoft Entra ID.
//!
//! - [`EntraAuthLayer`] wraps any `tower::Service` over `http::Request` (hyper-util, tonic,
//!   reqwest) and puts `Authorization: Bearer <token>` on each request.
//! - [`TokenProvider`] caches the token for one scope: one token request however many requests
//!   arrive at once, refreshed in the background ahead of expiry.
//! - Credentials: [`ClientSecretCredential`], [`EnvironmentCredential`], or your own
//!   [`Credential`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_entra::{EntraAuthLayer, EnvironmentCredential, TokenProvider};
//!
//! let provider = TokenProvider::new(
//!     EnvironmentCredential::new()?,
//!     "https://graph.microsoft.com/.default",
//! )?;
//! let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<String>();
//! let service = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(10))
//!     .layer(EntraAuthLayer::new(provider))
//!     .service(client);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), forbid(unsafe_code))]
// The unit tests' allocator reads freed memory for tokens that were not zeroed (endpoint.rs);
// everything else stays free of `unsafe`.
#![cfg_attr(test, deny(unsafe_code))]

mod aadsts;
mod audience;
mod authority;
mod authorize;
mod challenge;
mod cloud;
mod credential;
mod destination;
mod endpoint;
mod error;
mod future;
mod host;
mod jwt;
mod layer;
mod provider;
mod refusal;
#[cfg(feature = "reqwest-middleware")]
mod reqwest_middleware;
#[cfg(feature = "retry")]
pub mod retry;
mod service;
#[cfg(feature = "shared-cache")]
mod shared_cache;
mod tenant;
mod token;
#[cfg(feature = "tonic")]
pub mod tonic;
mod transport;

#[cfg(test)]
mod scanning_allocator;

/// The property tests' settings, one for all: bounded, so that CI stays fast, and no
/// regression files written into the tree.
#[cfg(test)]
fn proptest_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: 256,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

pub use authorize::AuthorizeRequest;
pub use challenge::BearerChallenge;
pub use cloud::Cloud;
#[cfg(feature = "certificate")]
pub use credential::{
    AssertionAlgorithm, CertificateAssertion, ClientCertificate, ClientCertificateCredential,
    ClientCertificateCredentialBuilder,
};
pub use credential::{
    AssertionCallback, AzureCliCredential, AzureCliCredentialBuilder, AzureDeveloperCliCredential,
    AzureDeveloperCliCredentialBuilder, ChainedCredential, ClientAssertionCredential,
    ClientAssertionCredentialBuilder, ClientAuthentication, ClientSecret, ClientSecretCredential,
    ClientSecretCredentialBuilder, ConfidentialClientCredential,
    ConfidentialClientCredentialBuilder, Credential, DefaultCredential, DefaultCredentialBuilder,
    EnvironmentCredential, FederatedTokenFile, ManagedIdentityCredential,
    ManagedIdentityCredentialBuilder, ManagedIdentityId, TokenRequest, WorkloadIdentityCredential,
    WorkloadIdentityCredentialBuilder,
};
pub use destination::{ProviderRoutes, UnlistedHost};
pub use error::{EntraError, Error, TokenError, TokenErrorKind};
pub use future::ResponseFuture;
pub use layer::{EntraAuthLayer, EntraAuthLayerBuilder};
pub use provider::{ProviderStats, TokenProvider, TokenProviderBuilder};
pub use refusal::InspectResponse;
#[cfg(feature = "reqwest-middleware")]
pub use reqwest_middleware::EntraAuthMiddleware;
#[cfg(feature = "retry")]
pub use retry::RetryOnChallenge;
pub use service::EntraAuth;
#[cfg(feature = "shared-cache")]
pub use shared_cache::{CacheBinding, EncryptionKey, SharedCacheError, SharedTokenCache};
#[cfg(feature = "redis")]
pub use shared_cache::{RedisTokenCache, RedisTokenCacheBuilder};
pub use tenant::Tenant;
pub use token::AccessToken;
pub use transport::{TokenTransport, TransportRequest};

// The README's examples compile as doctests (they use every optional feature).
#[cfg(all(
    doctest,
    feature = "retry",
    feature = "tonic",
    feature = "reqwest-middleware"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
