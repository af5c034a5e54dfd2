//! How a transport's requests reach their endpoint (directly, through a proxy, or however the
//! caller's client or service does it), so that a failure to connect says where it tried to go
//! and by which way.

use std::fmt;

#[cfg(feature = "reqwest")]
use url::Url;

/// The way requests reach the endpoint, as far as this crate knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
pub(crate) enum Route {
    /// A client this crate built without a proxy (managed identity, plain-http loopback).
    Direct,
    /// The default client, which takes its proxy from the environment: the proxy it uses for the
    /// destination (scheme, host and port only: a proxy URL may hold credentials), or none.
    Environment(Option<String>),
    /// The caller's `reqwest::ClientBuilder`, whose proxies this crate cannot see.
    CallerClient,
    /// The caller's own transport service.
    CallerService,
}

impl Route {
    /// What the default client does for `destination`: reqwest's own matcher over the proxy
    /// variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`), read as reqwest reads
    /// them when it builds its client.
    #[cfg(feature = "reqwest")]
    pub(crate) fn environment(destination: &Url) -> Route {
        let proxy = destination
            .as_str()
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| {
                hyper_util::client::proxy::matcher::Matcher::from_system().intercept(&uri)
            })
            .map(|intercept| endpoint_of(intercept.uri()));
        Route::Environment(proxy)
    }
}

/// `scheme://host:port` of a URI, without user information or path.
#[cfg(feature = "reqwest")]
fn endpoint_of(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("?");
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// `host:port` of the URI a request went to, for messages (no path or query: a query may name
/// the identity asked for, never a secret, but it is noise here).
pub(crate) fn destination_of(uri: &http::Uri) -> String {
    let host = uri.host().unwrap_or("the endpoint");
    let port = uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    });
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("directly (no proxy)"),
            Route::Environment(None) => {
                f.write_str("directly (no proxy: no HTTPS_PROXY, HTTP_PROXY or ALL_PROXY applies to it)")
            }
            Route::Environment(Some(proxy)) => write!(
                f,
                "through the proxy {proxy} (from HTTPS_PROXY, HTTP_PROXY or ALL_PROXY; NO_PROXY exempts hosts)"
            ),
            Route::CallerClient => f.write_str(
                "with the reqwest::ClientBuilder given to the credential (through its proxy, if it set one, or HTTPS_PROXY / ALL_PROXY unless it set no_proxy)",
            ),
            Route::CallerService => f.write_str(
                "through the credential's transport service (whether it uses a proxy is its own setting)",
            ),
        }
    }
}
