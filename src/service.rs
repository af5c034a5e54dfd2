//! [`EntraAuth`]: the service that attaches the token.

use std::task::{Context, Poll};

use tower_service::Service;

use crate::authority::is_loopback_host;
use crate::authorize::{AuthorizeRequest, InspectResponse};
use crate::error::{Error, TokenError, TokenErrorKind};
use crate::future::ResponseFuture;
use crate::provider::TokenProvider;

/// Sets `Authorization: Bearer <token>` on each request, then calls the inner service.
///
/// Made by [`EntraAuthLayer`](crate::EntraAuthLayer). With a cached token the header is set and
/// the inner service called at once. Without one, the ready inner service moves into the
/// response future (a clone takes its place) and is called when the token arrives, so an
/// unreadied clone is never called and token errors never surface from `poll_ready`.
///
/// Requests are refused with [`TokenErrorKind::UnsafeDestination`] when they name a plain-http
/// host that is not a loopback address. A request that already has an `Authorization` header
/// passes unchanged. A 401 response whose challenge says `error="invalid_token"` drops the token
/// it carried from the cache.
#[derive(Debug, Clone)]
pub struct EntraAuth<S> {
    inner: S,
    provider: TokenProvider,
}

impl<S> EntraAuth<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, provider: TokenProvider) -> Self {
        EntraAuth { inner, provider }
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

    /// The provider tokens come from.
    pub fn provider(&self) -> &TokenProvider {
        &self.provider
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

    fn call(&mut self, mut request: R) -> Self::Future {
        if request.has_authorization() {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        if let Err(e) = check_destination(&request) {
            return ResponseFuture::failed(e);
        }
        match self.provider.cached() {
            Some(token) => {
                request.set_authorization(token.header_value().clone());
                let future = self.inner.call(request);
                ResponseFuture::calling(future, self.provider.clone(), token)
            }
            None => {
                // Take the service that poll_ready readied; leave a fresh clone for the next call.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::acquiring(
                    self.provider.acquire(),
                    ready,
                    request,
                    self.provider.clone(),
                )
            }
        }
    }
}

/// A token goes only over https, or plain http to a loopback address.
fn check_destination<R: AuthorizeRequest>(request: &R) -> Result<(), TokenError> {
    match request.destination() {
        (Some(scheme), host) if scheme.eq_ignore_ascii_case("http") => match host {
            Some(h) if is_loopback_host(h) => Ok(()),
            _ => Err(TokenError::new(
                TokenErrorKind::UnsafeDestination,
                format!(
                    "refusing to send a bearer token over plain http to {}; use https (plain http is allowed only for loopback addresses)",
                    host.unwrap_or("an unnamed host")
                ),
            )),
        },
        _ => Ok(()),
    }
}
