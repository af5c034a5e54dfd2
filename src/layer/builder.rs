//! [`EntraAuthLayerBuilder`]: the layer's hosts, origin and routes, checked once.

use std::sync::Arc;

use super::EntraAuthLayer;
use crate::destination::{Targets, UnlistedHost};
use crate::error::TokenError;
use crate::host::HostPattern;

/// Configures an [`EntraAuthLayer`]: made by [`EntraAuthLayer::builder`] (one provider) or
/// [`EntraAuthLayer::routed`] (routes by host).
///
/// The setters cannot fail; [`build`](Self::build) checks everything and names the first
/// mistake, so that a host pattern read from configuration fails start-up with a message.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()`"]
pub struct EntraAuthLayerBuilder {
    targets: Targets,
    /// The first mistake, said by `build`.
    invalid: Option<TokenError>,
}

impl EntraAuthLayerBuilder {
    pub(super) fn new(targets: Targets, invalid: Option<TokenError>) -> Self {
        EntraAuthLayerBuilder { targets, invalid }
    }

    /// Runs `change` unless a mistake was already found: the first one is the one `build` says.
    fn change(mut self, change: impl FnOnce(&mut Targets) -> Result<(), TokenError>) -> Self {
        if self.invalid.is_none() {
            self.invalid = change(&mut self.targets).err();
        }
        self
    }

    /// Attaches tokens only to these hosts (`graph.microsoft.com`, `*.vault.azure.net` for
    /// every subdomain, `127.0.0.1`; compared without port), instead of the hosts the
    /// provider's audience serves. Requests to other hosts are refused, or sent without a
    /// token, as [`unlisted_hosts`](Self::unlisted_hosts) says. Requests are also judged by the
    /// [`origin`](Self::origin) when one is set. Calls add up.
    ///
    /// [`build`](Self::build) fails with
    /// [`TokenErrorKind::Configuration`](crate::TokenErrorKind::Configuration), naming the
    /// pattern, when one is not a host (a port, a path without a scheme, a wildcard other than
    /// a leading `*.` or one over a top-level domain such as `*.com`); and on a
    /// [routed](EntraAuthLayer::routed) layer, whose routes are its allow-list.
    pub fn allow_hosts<I>(self, hosts: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let hosts: Result<Vec<_>, _> = hosts
            .into_iter()
            .map(|h| HostPattern::parse(h.as_ref()))
            .collect();
        self.change(|targets| targets.allow(hosts?))
    }

    /// Attaches tokens to any host the request names (still only over https, or plain http to
    /// a loopback address), whatever the provider's audience: the explicit opt-out of
    /// audience-bound tokens. Only for a client whose every request is meant for the API (no
    /// followed links, no user-supplied URLs): any host it is sent to receives the token.
    ///
    /// [`build`](Self::build) fails with
    /// [`TokenErrorKind::Configuration`](crate::TokenErrorKind::Configuration) on a
    /// [routed](EntraAuthLayer::routed) layer, whose routes are its allow-list.
    pub fn allow_any_https_host(self) -> Self {
        self.change(Targets::allow_any_host)
    }

    /// Where the inner service sends requests: a tonic `Channel` sends every request to its
    /// endpoint, adding it to the path-only URIs generated clients send and rewriting absolute
    /// ones. The origin's scheme and host are checked as an absolute URI's would be (https or
    /// loopback, audience, allow-list, routes); a request with an absolute URI must pass too, and
    /// both must take tokens from the same provider. Without an origin, a request with a
    /// relative URI is refused with
    /// [`TokenErrorKind::UnsafeDestination`](crate::TokenErrorKind::UnsafeDestination): the
    /// layer cannot tell whether the token would travel over https.
    ///
    /// ```
    /// # fn demo(provider: tower_entra::TokenProvider) -> Result<(), tower_entra::TokenError> {
    /// // The API's app ID URI is api://..., which names no host: name it.
    /// let layer = tower_entra::EntraAuthLayer::builder(provider)
    ///     .origin(http::Uri::from_static("https://grpc.contoso.com:443"))
    ///     .allow_hosts(["grpc.contoso.com"])
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn origin(mut self, origin: http::Uri) -> Self {
        self.targets.set_origin(origin);
        self
    }

    /// What happens to requests for hosts outside the allow-list or routes. Default:
    /// [`UnlistedHost::Refuse`].
    pub fn unlisted_hosts(mut self, unlisted: UnlistedHost) -> Self {
        self.targets.set_unlisted(unlisted);
        self
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`TokenErrorKind::Configuration`](crate::TokenErrorKind::Configuration), naming the
    /// first mistake: a host pattern (of a route or of [`allow_hosts`](Self::allow_hosts))
    /// that is not a host, or an allow-list on a routed layer. An error rather than a panic
    /// because host lists are often read from configuration, where a typo should fail start-up
    /// with a message rather than abort the process.
    pub fn build(self) -> Result<EntraAuthLayer, TokenError> {
        match self.invalid {
            Some(e) => Err(e),
            None => Ok(EntraAuthLayer {
                targets: Arc::new(self.targets),
            }),
        }
    }
}
