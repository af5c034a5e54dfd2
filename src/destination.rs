//! Where tokens go: the per-request decision (host, scheme, audience, allow-list, routes) that
//! [`EntraAuthLayer`](crate::EntraAuthLayer)'s "Where tokens go" section states, and routing
//! by host to one of several providers.

use std::fmt;

use crate::audience::Audience;
use crate::authorize::AuthorizeRequest;
use crate::error::{TokenError, TokenErrorKind};
use crate::host::{HostPattern, is_loopback_host};
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
/// let graph = TokenProvider::builder(app.clone(), "https://graph.microsoft.com/.default").build()?;
/// let arm = TokenProvider::builder(app, "https://management.azure.com/.default").build()?;
///
/// let layer = EntraAuthLayer::routed(
///     ProviderRoutes::new()
///         .route("graph.microsoft.com", graph)
///         .route("management.azure.com", arm),
/// )
/// .build()?;
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ProviderRoutes {
    routes: Vec<(HostPattern, TokenProvider)>,
    /// The first host that was not a host pattern, said by the layer's `build`.
    invalid: Option<TokenError>,
}

impl ProviderRoutes {
    /// No routes yet.
    pub fn new() -> Self {
        ProviderRoutes::default()
    }

    /// Sends requests for `host` (`graph.microsoft.com`, or `*.vault.azure.net` for every
    /// subdomain; a URL's host is taken) tokens from `provider`.
    ///
    /// A `host` that is not a host pattern (a port, a path without a scheme, a wildcard other
    /// than a leading `*.`, or one over a top-level domain such as `*.com`) makes the layer's
    /// [`build`](crate::EntraAuthLayerBuilder::build) fail with
    /// [`TokenErrorKind::Configuration`] naming it: at start-up, with a message, rather than a
    /// panic or a refusal at the first request.
    pub fn route(mut self, host: &str, provider: TokenProvider) -> Self {
        match HostPattern::parse(host) {
            Ok(pattern) => self.routes.push((pattern, provider)),
            Err(e) => {
                self.invalid.get_or_insert(e);
            }
        }
        self
    }

    /// The first route whose host was not a host pattern.
    pub(crate) fn invalid(&self) -> Option<&TokenError> {
        self.invalid.as_ref()
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

/// The layer's token configuration, one shape for every layer: routes, tried first, then a
/// default provider for the hosts it reaches.
///
/// [`EntraAuthLayer::new`](crate::EntraAuthLayer::new) makes no routes and a default provider
/// that reaches its audience's hosts;
/// [`EntraAuthLayer::routed`](crate::EntraAuthLayer::routed) makes routes and no default.
#[derive(Clone, Debug)]
pub(crate) struct Targets {
    routes: ProviderRoutes,
    default: Option<DefaultProvider>,
    unlisted: UnlistedHost,
    /// Where the inner service sends requests (a tonic `Channel`'s endpoint).
    origin: Option<http::Uri>,
}

/// The provider for hosts no route names, and which of them its tokens may go to.
#[derive(Clone, Debug)]
struct DefaultProvider {
    provider: TokenProvider,
    reach: Reach,
}

/// The hosts a default provider's tokens go to.
#[derive(Clone, Debug)]
enum Reach {
    /// The hosts its audience serves (the default).
    Audience(Audience),
    /// Only these ([`EntraAuthLayer::allow_hosts`](crate::EntraAuthLayer::allow_hosts)).
    Listed(Vec<HostPattern>),
    /// Every host ([`EntraAuthLayer::allow_any_https_host`](crate::EntraAuthLayer::allow_any_https_host)).
    AnyHost,
}

impl DefaultProvider {
    fn reaches(&self, host: Option<&str>) -> bool {
        match (&self.reach, host) {
            (Reach::AnyHost, _) => true,
            (Reach::Audience(audience), Some(host)) => audience.serves(host),
            (Reach::Listed(list), Some(host)) => list.iter().any(|p| p.matches(host)),
            (Reach::Audience(_) | Reach::Listed(_), None) => false,
        }
    }
}

/// The last destination one service clone judged, and its verdict, so that a stream of
/// requests to one host is judged once: inline bytes (no heap, no count shared with other
/// clones or threads), compared as written, so the host is not parsed again per request.
/// Refusals are not remembered (each gets its own error), nor requests judged by an origin.
#[derive(Clone, Copy)]
pub(crate) struct LastDestination {
    /// The authority as written, `len` bytes of it; `len == 0` when nothing is remembered.
    authority: [u8; LAST_DESTINATION_BYTES],
    len: u8,
    /// The scheme: https, or else http (requests with any other scheme are judged every time).
    https: bool,
    verdict: Verdict,
}

/// Authorities longer than this are judged every time (hosts are short; the key stays small
/// enough to copy with the service).
const LAST_DESTINATION_BYTES: usize = 96;

#[derive(Clone, Copy)]
enum Verdict {
    Route(usize),
    Default,
    SendWithoutToken,
}

impl Default for LastDestination {
    fn default() -> Self {
        LastDestination {
            authority: [0; LAST_DESTINATION_BYTES],
            len: 0,
            https: true,
            verdict: Verdict::SendWithoutToken,
        }
    }
}

impl fmt::Debug for LastDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LastDestination")
    }
}

impl LastDestination {
    /// Compared with the scheme as a flag and one comparison of the authority's bytes: this
    /// runs on every request.
    fn is(&self, scheme: &str, authority: &str) -> bool {
        self.len != 0
            && usize::from(self.len) == authority.len()
            // Each side a constant: compared inline, not by a call.
            && if self.https {
                scheme == "https"
            } else {
                scheme == "http"
            }
            && self.authority.get(..authority.len()) == Some(authority.as_bytes())
    }

    fn remember(&mut self, scheme: &str, authority: &str, verdict: Verdict) {
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => {
                self.len = 0;
                return;
            }
        };
        let (Ok(len), Some(key)) = (
            u8::try_from(authority.len()),
            self.authority.get_mut(..authority.len()),
        ) else {
            self.len = 0;
            return;
        };
        key.copy_from_slice(authority.as_bytes());
        self.len = len;
        self.https = https;
        self.verdict = verdict;
    }
}

/// What to do with one request.
pub(crate) enum Decision<'a> {
    Attach(&'a TokenProvider),
    SendWithoutToken,
    Refuse(TokenError),
}

impl Targets {
    pub(crate) fn one(provider: TokenProvider) -> Self {
        let audience = Audience::of_scope(provider.scope());
        Targets {
            routes: ProviderRoutes::new(),
            default: Some(DefaultProvider {
                provider,
                reach: Reach::Audience(audience),
            }),
            unlisted: UnlistedHost::Refuse,
            origin: None,
        }
    }

    pub(crate) fn routed(routes: ProviderRoutes) -> Self {
        Targets {
            routes,
            default: None,
            unlisted: UnlistedHost::Refuse,
            origin: None,
        }
    }

    pub(crate) fn set_origin(&mut self, origin: http::Uri) {
        self.origin = Some(origin);
    }

    /// The default provider, which a routed layer lacks: its routes are its allow-list, so
    /// widening or narrowing it there is a mistake, said at once.
    fn default_mut(&mut self, method: &str) -> Result<&mut DefaultProvider, TokenError> {
        self.default.as_mut().ok_or_else(|| {
            TokenError::configuration(format!(
                "{method} was called on a routed layer, whose routes are its allow-list; add a route (ProviderRoutes::route) instead"
            ))
        })
    }

    /// Limits the default provider to `hosts` instead of its audience's (calls add up).
    pub(crate) fn allow(&mut self, hosts: Vec<HostPattern>) -> Result<(), TokenError> {
        let default = self.default_mut("allow_hosts")?;
        match &mut default.reach {
            Reach::Listed(list) => list.extend(hosts),
            reach => *reach = Reach::Listed(hosts),
        }
        Ok(())
    }

    /// Lets the default provider's tokens go to any host.
    pub(crate) fn allow_any_host(&mut self) -> Result<(), TokenError> {
        self.default_mut("allow_any_https_host")?.reach = Reach::AnyHost;
        Ok(())
    }

    pub(crate) fn set_unlisted(&mut self, unlisted: UnlistedHost) {
        self.unlisted = unlisted;
    }

    /// The default provider, when there is one.
    pub(crate) fn provider(&self) -> Option<&TokenProvider> {
        self.default.as_ref().map(|d| &d.provider)
    }

    /// The routes of a routed layer (one without a default provider).
    pub(crate) fn routes(&self) -> Option<&ProviderRoutes> {
        self.default.is_none().then_some(&self.routes)
    }

    /// Decides whether, and from which provider, `request` gets a token.
    ///
    /// With an origin set, the inner service may send any request there whatever its URI (a
    /// tonic `Channel` rewrites even absolute URIs to its endpoint), so an absolute URI must
    /// pass and the origin must pass too, choosing the same provider.
    /// [`decide`](Self::decide), remembering the verdict for the next request to the same
    /// scheme and authority in `last` (one per service clone).
    /// The provider `last` remembers for `request`'s destination, if it remembers one that
    /// attaches a token: the cached path's check, inline. Anything else (another destination, a
    /// destination that gets no token, an origin to judge too) is for
    /// [`decide_remembering`](Self::decide_remembering).
    #[inline]
    pub(crate) fn remembered<R: AuthorizeRequest>(
        &self,
        request: &R,
        last: &LastDestination,
    ) -> Option<&TokenProvider> {
        if self.origin.is_some() {
            return None;
        }
        let (Some(scheme), Some(authority)) = (request.scheme(), request.authority()) else {
            return None;
        };
        if !last.is(scheme, authority) {
            return None;
        }
        match last.verdict {
            Verdict::Route(i) => self.routes.routes.get(i).map(|(_, provider)| provider),
            Verdict::Default => self.default.as_ref().map(|d| &d.provider),
            Verdict::SendWithoutToken => None,
        }
    }

    pub(crate) fn decide_remembering<R: AuthorizeRequest>(
        &self,
        request: &R,
        last: &mut LastDestination,
    ) -> Decision<'_> {
        let (Some(scheme), Some(authority), None) =
            (request.scheme(), request.authority(), &self.origin)
        else {
            return self.decide(request);
        };
        if last.is(scheme, authority) {
            return match last.verdict {
                Verdict::Route(i) => match self.routes.routes.get(i) {
                    Some((_, provider)) => Decision::Attach(provider),
                    None => self.decide(request),
                },
                Verdict::Default => match &self.default {
                    Some(d) => Decision::Attach(&d.provider),
                    None => self.decide(request),
                },
                Verdict::SendWithoutToken => Decision::SendWithoutToken,
            };
        }
        let decision = self.decide(request);
        let verdict = match &decision {
            Decision::Attach(p) => {
                let route = self
                    .routes
                    .routes
                    .iter()
                    .position(|(_, r)| std::ptr::eq(r, *p));
                match route {
                    Some(i) => Some(Verdict::Route(i)),
                    None => Some(Verdict::Default),
                }
            }
            Decision::SendWithoutToken => Some(Verdict::SendWithoutToken),
            Decision::Refuse(_) => None,
        };
        match verdict {
            Some(v) => last.remember(scheme, authority, v),
            None => last.len = 0,
        }
        decision
    }

    pub(crate) fn decide<R: AuthorizeRequest>(&self, request: &R) -> Decision<'_> {
        let origin = self.origin.as_ref();
        match (request.scheme(), request.host(), origin) {
            (Some(scheme), host, None) => self.judge(Some(scheme), host),
            (Some(scheme), host, Some(origin)) => both(
                self.judge(Some(scheme), host),
                self.judge(origin.scheme_str(), origin.host()),
            ),
            (None, Some(host), _) => Decision::Refuse(TokenError::new(
                TokenErrorKind::UnsafeDestination,
                format!(
                    "the request names the host {host} but no scheme (an authority-form URI, as for CONNECT), so whether a token would travel over https is unknown; send an absolute URI (https://{host}/path) or a relative one with the layer's origin set"
                ),
            )),
            (None, None, Some(origin)) => self.judge(origin.scheme_str(), origin.host()),
            (None, None, None) => Decision::Refuse(TokenError::new(
                TokenErrorKind::UnsafeDestination,
                "the request has a relative URI, so where it goes (and whether over https) is unknown here; tell the layer the origin its inner service sends to, e.g. `EntraAuthLayer::builder(provider).origin(endpoint.uri().clone()).build()?` for a tonic Channel",
            )),
        }
    }

    /// Whether a token may go to `scheme://host`, and from which provider.
    fn judge(&self, scheme: Option<&str>, host: Option<&str>) -> Decision<'_> {
        let routed = host.and_then(|h| self.routes.provider_for(h));
        let provider = routed.or_else(|| {
            self.default
                .as_ref()
                .filter(|d| d.reaches(host))
                .map(|d| &d.provider)
        });
        let Some(provider) = provider else {
            return self.unlisted(host);
        };
        if scheme.is_some_and(|s| s.eq_ignore_ascii_case("https")) {
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

    /// A request for a host that no route, allow-list entry or audience names.
    fn unlisted(&self, host: Option<&str>) -> Decision<'_> {
        if self.unlisted == UnlistedHost::SendWithoutToken {
            return Decision::SendWithoutToken;
        }
        let Some(host) = host else {
            return Decision::Refuse(TokenError::new(
                TokenErrorKind::UnsafeDestination,
                "the request names no host, so no route, allow-list entry or audience can match it; send absolute URIs (https://host/path)",
            ));
        };
        let message = match self.default.as_ref().map(|d| &d.reach) {
            Some(Reach::Audience(audience)) if audience.names_hosts() => format!(
                "refusing to send a bearer token for {audience} to {host}: a token goes only to the hosts its audience serves; if {host} is meant to receive it, name it with EntraAuthLayer::allow_hosts, or choose UnlistedHost::SendWithoutToken to send such requests without a token"
            ),
            Some(Reach::Audience(audience)) => format!(
                "refusing to send a bearer token for {audience} to {host}: the hosts of an api:// or application-id audience cannot be known, so its tokens go nowhere until they are named; name the API's hosts with EntraAuthLayer::allow_hosts([\"{host}\"]) (or, knowing the risk, allow_any_https_host())"
            ),
            Some(_) => format!(
                "refusing to send a bearer token to {host}: the host is not on this layer's allow-list (EntraAuthLayer::allow_hosts); add it there if the token is meant for it, or choose UnlistedHost::SendWithoutToken to send such requests without a token"
            ),
            None => format!(
                "refusing to send a bearer token to {host}: the host is not on this layer's routes (ProviderRoutes::route); add a route if the token is meant for it, or choose UnlistedHost::SendWithoutToken to send such requests without a token"
            ),
        };
        Decision::Refuse(TokenError::new(TokenErrorKind::UnsafeDestination, message))
    }
}

/// The decision for a request whose URI and origin were both judged: a token only when both
/// allow the same provider's.
fn both<'a>(uri: Decision<'a>, origin: Decision<'a>) -> Decision<'a> {
    match (uri, origin) {
        (Decision::Refuse(e), _) | (_, Decision::Refuse(e)) => Decision::Refuse(e),
        (Decision::Attach(p), Decision::Attach(q)) if std::ptr::eq(p, q) => Decision::Attach(p),
        (Decision::Attach(_), Decision::Attach(_)) => Decision::Refuse(TokenError::new(
            TokenErrorKind::UnsafeDestination,
            "the request's URI and the layer's origin (where the inner service sends it) take tokens from different providers; send relative URIs, or make the URI's host the origin's",
        )),
        // One of them is an unlisted host whose requests go without a token.
        _ => Decision::SendWithoutToken,
    }
}
