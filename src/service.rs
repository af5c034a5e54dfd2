//! [`EntraAuth`]: the service that attaches the token.

use std::task::{Context, Poll};

use tower_service::Service;

use std::sync::Arc;

use crate::authorize::AuthorizeRequest;
use crate::destination::{Decision, LastDestination, ProviderRoutes, Targets};
use crate::error::Error;
use crate::future::ResponseFuture;
use crate::provider::{LastLease, Leased, TokenProvider};
use crate::refusal::InspectResponse;

/// Sets `Authorization: Bearer <token>` on each request, then calls the inner service.
///
/// Made by [`EntraAuthLayer`](crate::EntraAuthLayer). With a cached token the header is set and
/// the inner service called at once. Without one, the ready inner service moves into the
/// response future (a clone takes its place) and is called when the token arrives, so an
/// unreadied clone is never called and token errors never surface from `poll_ready`.
///
/// Which requests get a token, and from which provider, is described in
/// [`EntraAuthLayer`](crate::EntraAuthLayer#where-tokens-go): never over plain http to a remote host
/// ([`TokenErrorKind::UnsafeDestination`](crate::TokenErrorKind::UnsafeDestination)), only to
/// allowed or routed hosts when so configured, and a request that already has an
/// `Authorization` header passes unchanged.
///
/// A 401 response whose Bearer challenge says `error="invalid_token"` drops the token it
/// carried from the cache; one that says `error="insufficient_claims"` with a `claims` value (a
/// Continuous Access Evaluation challenge) makes the provider fetch a token carrying those
/// claims before the response is returned. Either way the next request, or a replay by
/// `RetryOnChallenge` (feature `retry`), carries a new token, and the response is marked so;
/// each kind of renewal happens at most once per 30 s, so an API that refuses every token gets
/// its answer back unchanged in between.
#[derive(Debug, Clone)]
pub struct EntraAuth<S> {
    inner: S,
    targets: Arc<Targets>,
    /// This clone's last destination and verdict (see `LastDestination`).
    last: LastDestination,
    /// This clone's last lease, served again while it is fresh (see `LastLease`).
    last_lease: LastLease,
}

impl<S> EntraAuth<S> {
    /// Wraps `inner`, with tokens from `provider` for the hosts its audience serves (over https,
    /// or plain http to loopback), as [`EntraAuthLayer::new`](crate::EntraAuthLayer::new).
    pub fn new(inner: S, provider: TokenProvider) -> Self {
        EntraAuth {
            inner,
            targets: Arc::new(Targets::one(provider)),
            last: LastDestination::default(),
            last_lease: LastLease::default(),
        }
    }

    pub(crate) fn with_targets(inner: S, targets: Arc<Targets>) -> Self {
        EntraAuth {
            inner,
            targets,
            last: LastDestination::default(),
            last_lease: LastLease::default(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The provider tokens come from; `None` for a [routed](crate::EntraAuthLayer::routed) layer.
    pub fn provider(&self) -> Option<&TokenProvider> {
        self.targets.provider()
    }

    /// The routes of a [routed](crate::EntraAuthLayer::routed) layer.
    pub fn routes(&self) -> Option<&ProviderRoutes> {
        self.targets.routes()
    }
}

impl<S, R> Service<R> for EntraAuth<S>
where
    S: Service<R> + Clone,
    S::Response: InspectResponse,
    R: AuthorizeRequest,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    #[inline]
    fn call(&mut self, mut request: R) -> Self::Future {
        // The cached path, inline: a remembered destination and a remembered lease. The rest,
        // out of line, decides and leases anew.
        let remembered = self.targets.remembered(&request, &self.last);
        if let Some(provider) = remembered
            && let Some((header, ticket)) = self.last_lease.serve(provider, request.tenant())
        {
            if request.has_authorization() {
                return ResponseFuture::passthrough(self.inner.call(request));
            }
            request.set_authorization(header.clone());
            let future = self.inner.call(request);
            return ResponseFuture::calling(future, ticket);
        }
        call_through_provider(
            &mut self.inner,
            &self.targets,
            &mut self.last,
            &mut self.last_lease,
            remembered,
            request,
        )
    }
}

/// The request through the destination's decision (unless `remembered` already names the
/// provider) and the provider's lease.
#[inline(never)]
fn call_through_provider<S, R>(
    inner: &mut S,
    targets: &Targets,
    last: &mut LastDestination,
    last_lease: &mut LastLease,
    remembered: Option<&TokenProvider>,
    mut request: R,
) -> ResponseFuture<S, R>
where
    S: Service<R> + Clone,
    R: AuthorizeRequest,
{
    if request.has_authorization() {
        return ResponseFuture::passthrough(inner.call(request));
    }
    let provider = match remembered {
        Some(provider) => provider,
        None => match targets.decide_remembering(&request, last) {
            Decision::Attach(provider) => provider,
            Decision::SendWithoutToken => {
                return ResponseFuture::passthrough(inner.call(request));
            }
            Decision::Refuse(e) => return ResponseFuture::failed(e),
        },
    };
    match provider.lease_and_remember(request.tenant(), last_lease) {
        Err(e) => ResponseFuture::failed(e),
        Ok(Leased::Cached(lease, ticket)) => {
            request.set_authorization(lease.token().header_value().clone());
            let future = inner.call(request);
            ResponseFuture::calling(future, ticket)
        }
        Ok(Leased::Cold(provider)) => {
            // Take the service that poll_ready readied; leave a fresh clone for the next call.
            let clone = inner.clone();
            let ready = std::mem::replace(inner, clone);
            ResponseFuture::acquiring(provider.acquire(), ready, request, provider)
        }
    }
}
