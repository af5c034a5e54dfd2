//! Where tokens go: https (or loopback) only, an optional allow-list of hosts, and routing by
//! host to one of several providers.
//!
//! A bearer token sent to the wrong host is a leaked credential, so [`EntraAuth`] decides, per
//! request, before any token is fetched:
//!
//! 1. A request that already has an `Authorization` header passes unchanged.
//! 2. The request's host picks the provider: the layer's one provider, limited to the
//!    [allow-list](crate::EntraAuthLayer::allow_hosts) when there is one, or the
//!    [route](ProviderRoutes) that matches. A host that nothing matches is refused, or sent
//!    without a token with [`UnlistedHost::SendWithoutToken`].
//! 3. A token goes over `https`, or plain `http` to a loopback address (for tests). Anything
//!    else (plain http to another host, another scheme, an origin without a scheme) is refused
//!    with [`TokenErrorKind::UnsafeDestination`].
//!
//! A request with a relative URI (as tonic's generated clients send into a `Channel`, which
//! adds the origin itself) names neither scheme nor host: it is judged by the layer's
//! [origin](crate::EntraAuthLayer::origin), and refused when none is set.
//!
//! [`EntraAuth`]: crate::EntraAuth

use std::fmt;

use crate::authority::is_loopback_host;
use crate::authorize::AuthorizeRequest;
use crate::error::{TokenError, TokenErrorKind};
use crate::provider::TokenProvider;

/// What the layer does with a request to a host that is not on its allow-list or in its routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnlistedHost {
    /// Fail the request with [`TokenErrorKind::UnsafeDestination`]; nothing is sent. The default.
    #[default]
    Refuse,
    /// Send the request without a token (for a client that also calls public endpoints).
    SendWithoutToken,
}

/// A host name, or `*.suffix` for every subdomain of `suffix`. Compared case-insensitively,
/// without port or trailing dot.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    Subdomains(String),
    /// Not a host pattern: matches nothing, and makes the layer refuse every request with an
    /// error saying why, so that the mistake shows at the first request.
    Invalid {
        pattern: String,
        why: &'static str,
    },
}

impl HostPattern {
    /// Reads `graph.microsoft.com`, `*.blob.core.windows.net`, `127.0.0.1`, `[::1]`, or a URL
    /// (`https://graph.microsoft.com/`), whose host is taken.
    pub(crate) fn parse(pattern: &str) -> HostPattern {
        let input = pattern.trim();
        // A URL: keep its authority (`https://*.vault.azure.net/` is not a parsable URL).
        let host = match input.split_once("://") {
            Some((_, rest)) => rest.split(['/', '?', '#']).next().unwrap_or_default(),
            None => input,
        };
        let host = normalize(host);
        let invalid = |why| HostPattern::Invalid {
            pattern: input.to_owned(),
            why,
        };
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, host.as_str()),
        };
        if name.is_empty() || name.starts_with('.') || name.contains("..") {
            return invalid("it names no host");
        }
        if name.contains('*') {
            return invalid("a wildcard may only be a leading `*.`");
        }
        if name.contains('@') || name.contains(char::is_whitespace) {
            return invalid("a host has no user, path or spaces");
        }
        // IPv6 addresses have colons; anything else with one has a port.
        if name.contains(':') && name.parse::<std::net::Ipv6Addr>().is_err() {
            return invalid("hosts are compared without port: drop the `:port`");
        }
        if wildcard {
            HostPattern::Subdomains(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        }
    }

    fn problem(&self) -> Option<String> {
        match self {
            HostPattern::Invalid { pattern, why } => Some(format!(
                "the host pattern {pattern:?} is not valid ({why}); use a host such as `graph.microsoft.com`, or `*.vault.azure.net` for its subdomains"
            )),
            _ => None,
        }
    }

    fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match self {
            HostPattern::Invalid { .. } => false,
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Subdomains(suffix) => {
                // Bytes, not str slices: a host is any &str here, and may not be ASCII.
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && host[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }
}

fn normalize(host: &str) -> String {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*.{s}"),
            HostPattern::Invalid { pattern, .. } => write!(f, "invalid {pattern:?}"),
        }
    }
}

/// Several providers behind one layer, chosen by the request's host: one app registration
/// calling Microsoft Graph and Azure Resource Manager through one client.
///
/// A host that no route matches gets no token (see [`UnlistedHost`]); routes are tried in the
/// order they were added.
///
/// ```
/// # fn demo() -> Result<(), tower_entra::TokenError> {
/// use std::sync::Arc;
/// use tower_entra::{ClientSecretCredential, Credential, EntraAuthLayer, ProviderRoutes, TokenProvider};
///
/// let app: Arc<dyn Credential> =
///     Arc::new(ClientSecretCredential::new("contoso.onmicrosoft.com", "client-id", "secret")?);
/// let graph = TokenProvider::builder_shared(app.clone(), "https://graph.microsoft.com/.default").build()?;
/// let arm = TokenProvider::builder_shared(app, "https://management.azure.com/.default").build()?;
///
/// let layer = EntraAuthLayer::routed(
///     ProviderRoutes::new()
///         .route("graph.microsoft.com", graph)
///         .route("management.azure.com", arm),
/// );
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ProviderRoutes {
    routes: Vec<(HostPattern, TokenProvider)>,
}

impl ProviderRoutes {
    /// No routes yet.
    pub fn new() -> Self {
        ProviderRoutes::default()
    }

    /// Sends requests for `host` (`graph.microsoft.com`, or `*.vault.azure.net` for every
    /// subdomain; a URL's host is taken) tokens from `provider`.
    pub fn route(mut self, host: &str, provider: TokenProvider) -> Self {
        self.routes.push((HostPattern::parse(host), provider));
        self
    }

    /// The provider for `host`, if a route matches it.
    pub fn provider_for(&self, host: &str) -> Option<&TokenProvider> {
        self.routes
            .iter()
            .find(|(p, _)| p.matches(host))
            .map(|(_, provider)| provider)
    }

    /// The providers, in route order.
    pub fn providers(&self) -> impl Iterator<Item = &TokenProvider> {
        self.routes.iter().map(|(_, p)| p)
    }
}

impl fmt::Debug for ProviderRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.routes.iter().map(|(h, p)| (h, p.scope())))
            .finish()
    }
}

/// The layer's token configuration: which provider serves which host.
#[derive(Clone, Debug)]
pub(crate) struct Targets {
    source: Source,
    unlisted: UnlistedHost,
    /// Where requests with a relative URI go (a tonic `Channel`'s endpoint).
    origin: Option<http::Uri>,
    /// A configuration mistake (an invalid host pattern, an allow-list on a routed layer):
    /// every request is refused with it.
    mistake: Option<TokenError>,
}

#[derive(Clone, Debug)]
enum Source {
    One {
        provider: TokenProvider,
        allow: Option<Vec<HostPattern>>,
    },
    Routed(ProviderRoutes),
}

/// What to do with one request.
pub(crate) enum Decision<'a> {
    Attach(&'a TokenProvider),
    SendWithoutToken,
    Refuse(TokenError),
}

impl Targets {
    pub(crate) fn one(provider: TokenProvider) -> Self {
        Targets {
            source: Source::One {
                provider,
                allow: None,
            },
            unlisted: UnlistedHost::Refuse,
            origin: None,
            mistake: None,
        }
    }

    pub(crate) fn routed(routes: ProviderRoutes) -> Self {
        let mistake = routes
            .routes
            .iter()
            .find_map(|(p, _)| p.problem())
            .map(misconfigured);
        Targets {
            source: Source::Routed(routes),
            unlisted: UnlistedHost::Refuse,
            origin: None,
            mistake,
        }
    }

    pub(crate) fn set_origin(&mut self, origin: http::Uri) {
        self.origin = Some(origin);
    }

    /// Adds hosts to the allow-list (a routed layer's routes are its allow-list already).
    pub(crate) fn allow(&mut self, hosts: impl IntoIterator<Item = HostPattern>) {
        match &mut self.source {
            Source::One { allow, .. } => {
                let list = allow.get_or_insert_with(Vec::new);
                list.extend(hosts);
                if let Some(problem) = list.iter().find_map(HostPattern::problem) {
                    self.mistake.get_or_insert(misconfigured(problem));
                }
            }
            Source::Routed(_) => {
                self.mistake.get_or_insert(misconfigured(
                    "allow_hosts was set on a routed layer, whose routes are its allow-list; add a route instead".to_owned(),
                ));
            }
        }
    }

    pub(crate) fn set_unlisted(&mut self, unlisted: UnlistedHost) {
        self.unlisted = unlisted;
    }

    /// The single provider, when there is one.
    pub(crate) fn provider(&self) -> Option<&TokenProvider> {
        match &self.source {
            Source::One { provider, .. } => Some(provider),
            Source::Routed(_) => None,
        }
    }

    pub(crate) fn routes(&self) -> Option<&ProviderRoutes> {
        match &self.source {
            Source::Routed(r) => Some(r),
            Source::One { .. } => None,
        }
    }

    /// Decides whether, and from which provider, `request` gets a token.
    pub(crate) fn decide<R: AuthorizeRequest>(&self, request: &R) -> Decision<'_> {
        // A relative URI (tonic's) goes where the inner service says; the layer must be told.
        let origin = match (request.scheme(), &self.origin) {
            (Some(_), _) => None,
            (None, Some(origin)) => Some(origin),
            (None, None) => {
                return Decision::Refuse(TokenError::new(
                    TokenErrorKind::UnsafeDestination,
                    "the request has a relative URI, so where it goes (and whether over https) is unknown here; tell the layer the origin its inner service sends to, e.g. `EntraAuthLayer::new(provider).origin(endpoint.uri().clone())` for a tonic Channel",
                ));
            }
        };
        let scheme = match origin {
            Some(o) => o.scheme_str(),
            None => request.scheme(),
        };
        let https = scheme.is_some_and(|s| s.eq_ignore_ascii_case("https"));
        if let (
            Source::One {
                provider,
                allow: None,
            },
            true,
        ) = (&self.source, https)
        {
            // The common case needs no host: one provider, no allow-list, https.
            return Decision::Attach(provider);
        }
        if let Some(mistake) = &self.mistake {
            return Decision::Refuse(mistake.clone());
        }
        let host = match origin {
            Some(o) => o.host(),
            None => request.host(),
        };
        let provider = match (&self.source, host) {
            (Source::One { provider, allow }, host) => match (allow, host) {
                (None, _) => Some(provider),
                (Some(list), Some(h)) => list.iter().any(|p| p.matches(h)).then_some(provider),
                // No host to check against the allow-list.
                (Some(_), None) => None,
            },
            (Source::Routed(routes), Some(h)) => routes.provider_for(h),
            (Source::Routed(_), None) => {
                return Decision::Refuse(TokenError::new(
                    TokenErrorKind::UnsafeDestination,
                    "the request names no host, so no provider route can be chosen for it; send absolute URIs (https://host/path) through a routed EntraAuthLayer, or use one EntraAuthLayer per provider",
                ));
            }
        };
        let Some(provider) = provider else {
            return match self.unlisted {
                UnlistedHost::SendWithoutToken => Decision::SendWithoutToken,
                UnlistedHost::Refuse => Decision::Refuse(TokenError::new(
                    TokenErrorKind::UnsafeDestination,
                    format!(
                        "refusing to send a bearer token to {}: the host is not on this layer's {}; add it there if the token is meant for it, or choose UnlistedHost::SendWithoutToken to send such requests without a token",
                        host.unwrap_or("an unnamed host"),
                        if self.routes().is_some() {
                            "routes (ProviderRoutes::route)"
                        } else {
                            "allow-list (EntraAuthLayer::allow_hosts)"
                        }
                    ),
                )),
            };
        };
        if https {
            return Decision::Attach(provider);
        }
        let plain_http = scheme.is_some_and(|s| s.eq_ignore_ascii_case("http"));
        match host {
            Some(h) if plain_http && is_loopback_host(h) => Decision::Attach(provider),
            _ => Decision::Refuse(TokenError::new(
                TokenErrorKind::UnsafeDestination,
                format!(
                    "refusing to send a bearer token to {} over {}; use https (plain http is allowed only for loopback addresses)",
                    host.unwrap_or("an unnamed host"),
                    match scheme {
                        Some(s) => format!("{s}://"),
                        None => "an unknown scheme (an origin without one?)".to_owned(),
                    }
                ),
            )),
        }
    }
}

fn misconfigured(problem: String) -> TokenError {
    TokenError::new(
        TokenErrorKind::Configuration,
        format!("the layer refuses every request: {problem}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let exact = HostPattern::parse("Graph.Microsoft.com");
        assert!(exact.matches("graph.microsoft.com"));
        assert!(exact.matches("GRAPH.microsoft.com."));
        assert!(!exact.matches("evil-graph.microsoft.com"));
        assert!(!exact.matches("graph.microsoft.com.evil.example"));
        let sub = HostPattern::parse("*.vault.azure.net");
        assert!(sub.matches("myvault.vault.azure.net"));
        assert!(sub.matches("a.b.vault.azure.net"));
        assert!(!sub.matches("vault.azure.net"));
        assert!(!sub.matches("evilvault.azure.net"));
        assert!(!sub.matches("x.vault.azure.net.evil"));
        let url = HostPattern::parse("https://management.azure.com/");
        assert!(url.matches("management.azure.com"));
        let v6 = HostPattern::parse("[::1]");
        assert!(v6.matches("[::1]"));
        assert!(HostPattern::parse("127.0.0.1").matches("127.0.0.1"));
        // Not ASCII: no panic, no match.
        assert!(!HostPattern::parse("*.b").matches("xé"));
        assert!(HostPattern::parse("*.b").matches("é.b"));
        assert!(HostPattern::parse("https://*.vault.azure.net/").matches("kv.vault.azure.net"));
        for bad in [
            "",
            "*.",
            "localhost:8080",
            "a.*.b",
            "https://",
            "a..b",
            "user@host",
        ] {
            let p = HostPattern::parse(bad);
            assert!(p.problem().is_some(), "{bad:?} accepted as {p:?}");
            assert!(!p.matches("localhost"));
        }
    }
}
