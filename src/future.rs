//! [`ResponseFuture`]: waits for a token when none is cached, then calls the inner service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::authorize::AuthorizeRequest;
use crate::error::{Error, TokenError};
use crate::provider::{Acquire, Lease, Ticket, TokenProvider};
use crate::refusal::{self, Answer, InspectResponse, Renewing};
use crate::token::AccessToken;

pin_project! {
    /// The response future of [`EntraAuth`](crate::EntraAuth).
    ///
    /// With a cached token it is the inner future and a token handle, nothing boxed. Its
    /// `Debug` shows the state it is in, nothing else.
    pub struct ResponseFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R>
    where
        S: Service<R>,
    {
        // Boxed: only the cold path pays for it, and the cached path's future stays small.
        Acquiring {
            waiting: Box<Waiting<S, R>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            // Kept to act on the API's refusal of this token (see `refusal`).
            used: Option<Used>,
        },
        // A claims challenge came back: a token with those claims is fetched before the
        // response is returned, so that a replay carries it.
        Renewing {
            renewing: Box<Renewing<S::Response>>,
        },
        Failed {
            error: Option<TokenError>,
        },
    }
}

/// What a request's future keeps of the token it was sent with, to act on the API's refusal.
pub(crate) enum Used {
    /// A lease (the token fetched for this request, or this thread's lease).
    Lease(Lease),
    /// A ticket: no count at all (a service clone's remembered lease, see `LastLease`).
    Ticket(Ticket),
}

impl Used {
    fn redeem(self) -> Option<(TokenProvider, Option<AccessToken>)> {
        match self {
            Used::Lease(lease) => lease
                .provider()
                .map(|provider| (provider, Some(lease.token().clone()))),
            Used::Ticket(ticket) => ticket.redeem(),
        }
    }
}

/// A request waiting for a token, with the ready service that will send it.
struct Waiting<S, R> {
    acquire: Acquire,
    service: Option<S>,
    request: Option<R>,
    provider: TokenProvider,
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    pub(crate) fn calling(future: S::Future, used: Used) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                used: Some(used),
            },
        }
    }

    pub(crate) fn passthrough(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { future, used: None },
        }
    }

    pub(crate) fn acquiring(
        acquire: Acquire,
        service: S,
        request: R,
        provider: TokenProvider,
    ) -> Self {
        ResponseFuture {
            state: State::Acquiring {
                waiting: Box::new(Waiting {
                    acquire,
                    service: Some(service),
                    request: Some(request),
                    provider,
                }),
            },
        }
    }

    pub(crate) fn failed(error: TokenError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R>,
    S::Response: InspectResponse,
    R: AuthorizeRequest,
{
    type Output = Result<S::Response, Error<S::Error>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            // The cached path's state, inline: nearly every response comes back at once and is
            // no refusal. Every other state, and a refusal, go out of line, so that this poll
            // stays small enough for its caller to inline.
            if let StateProj::Calling { future, used } = state.as_mut().project() {
                let response = ready!(future.poll(cx)).map_err(Error::Inner)?;
                if !refusal::refuses(&response) {
                    return Poll::Ready(Ok(response));
                }
                let Some(used) = used.take() else {
                    return Poll::Ready(Ok(response));
                };
                match refused(state.as_mut(), used, response) {
                    Some(response) => return Poll::Ready(Ok(response)),
                    None => continue,
                }
            }
            if let Some(output) = ready!(poll_states(state.as_mut(), cx)) {
                return Poll::Ready(output);
            }
        }
    }
}

/// The API refused the token `used`: the provider's reaction (see `refusal`). The response, or
/// `None` when the state is now renewing the token.
#[inline(never)]
fn refused<S, R>(
    mut state: Pin<&mut State<S, R>>,
    used: Used,
    response: S::Response,
) -> Option<S::Response>
where
    S: Service<R>,
    S::Response: InspectResponse,
{
    match refusal::answer(|| used.redeem(), response) {
        Answer::Ready(response) => Some(response),
        Answer::Renewing(renewing) => {
            state.set(State::Renewing { renewing });
            None
        }
    }
}

/// Every state but a call's: waiting for a token (`None` once the request is sent: the state is
/// now calling), renewing after a claims challenge, failed.
#[inline(never)]
#[allow(clippy::type_complexity)]
fn poll_states<S, R>(
    mut state: Pin<&mut State<S, R>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<S::Response, Error<S::Error>>>>
where
    S: Service<R>,
    S::Response: InspectResponse,
    R: AuthorizeRequest,
{
    match state.as_mut().project() {
        StateProj::Acquiring { waiting } => {
            let Waiting {
                acquire,
                service,
                request,
                provider,
            } = &mut **waiting;
            let token = match ready!(Pin::new(acquire).poll(cx)) {
                Ok(token) => token,
                Err(e) => return Poll::Ready(Some(Err(Error::Token(e)))),
            };
            let (Some(mut service), Some(mut request)) = (service.take(), request.take()) else {
                return Poll::Ready(Some(Err(Error::Token(TokenError::configuration(
                    "response future polled after completion",
                )))));
            };
            request.set_authorization(token.header_value().clone());
            let future = service.call(request);
            let used = Some(Used::Lease(Lease::fetched(provider, token)));
            state.set(State::Calling { future, used });
            Poll::Ready(None)
        }
        // Polled by the caller itself.
        StateProj::Calling { .. } => Poll::Ready(None),
        StateProj::Renewing { renewing } => Pin::new(&mut **renewing)
            .poll(cx)
            .map(|output| Some(output.map_err(Error::Token))),
        StateProj::Failed { error } => {
            let error = error.take().unwrap_or_else(|| {
                TokenError::configuration("response future polled after completion")
            });
            Poll::Ready(Some(Err(Error::Token(error))))
        }
    }
}

impl<S, R> fmt::Debug for ResponseFuture<S, R>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The state's name only: the service and the response need not be Debug, and the
        // request may carry the token.
        let state = match &self.state {
            State::Acquiring { .. } => "Acquiring",
            State::Calling { .. } => "Calling",
            State::Renewing { .. } => "Renewing",
            State::Failed { .. } => "Failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &format_args!("{state}"))
            .finish()
    }
}
