//! [`ResponseFuture`]: waits for a token when none is cached, then calls the inner service.
//!
//! Nearly every request is sent at once with a cached token and its response is no refusal, so
//! the future is laid out for that: the inner future and a ticket (three numbers, see
//! [`Ticket`]) in the open, and every other state (waiting for a token, renewing after a claims
//! challenge, failed) in one box, a word that is null on the cached path. There it holds no
//! count and nothing to drop but the inner future, and its poll hands out of line only values,
//! never its own address: a refusal goes out with the ticket and the response, a rare state is
//! taken out of the future, polled, and put back.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::authorize::AuthorizeRequest;
use crate::error::{Error, TokenError};
use crate::provider::{Acquire, Ticket, TokenProvider};
use crate::refusal::{self, Answer, InspectResponse, Renewing};

pin_project! {
    /// The response future of [`EntraAuth`](crate::EntraAuth).
    ///
    /// With a cached token it is the inner future and a ticket, nothing boxed. Its `Debug`
    /// shows the state it is in, nothing else.
    pub struct ResponseFuture<S, R>
    where
        S: Service<R>,
    {
        // The inner service's future, once the request is sent.
        #[pin]
        call: Option<S::Future>,
        // What acting on the API's refusal of the request's token needs (see `refusal`); `None`
        // for a request sent as it came.
        ticket: Option<Ticket>,
        // Every state but a call's, in one box: a word on the cached path.
        rare: Option<Box<Rare<S, R>>>,
    }
}

/// The states off the cached path.
enum Rare<S: Service<R>, R> {
    /// No usable token: the request waits for one, with the ready service that will send it.
    Acquiring(Waiting<S, R>),
    /// A claims challenge came back: a token with those claims is fetched before the response
    /// is returned, so that a replay carries it.
    Renewing(Renewing<S::Response>),
    /// The request was not sent.
    Failed(TokenError),
}

/// A request waiting for a token, with the ready service that will send it.
struct Waiting<S, R> {
    acquire: Acquire,
    service: S,
    request: R,
    provider: TokenProvider,
}

/// What polling a rare state came to.
enum Step<S: Service<R>, R> {
    Pending(Box<Rare<S, R>>),
    Done(Result<S::Response, Error<S::Error>>),
    /// The token came: the request is sent.
    Call(S::Future, Ticket),
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    pub(crate) fn calling(future: S::Future, ticket: Ticket) -> Self {
        ResponseFuture {
            call: Some(future),
            ticket: Some(ticket),
            rare: None,
        }
    }

    pub(crate) fn passthrough(future: S::Future) -> Self {
        ResponseFuture {
            call: Some(future),
            ticket: None,
            rare: None,
        }
    }

    pub(crate) fn acquiring(
        acquire: Acquire,
        service: S,
        request: R,
        provider: TokenProvider,
    ) -> Self {
        ResponseFuture {
            call: None,
            ticket: None,
            rare: Some(Box::new(Rare::Acquiring(Waiting {
                acquire,
                service,
                request,
                provider,
            }))),
        }
    }

    pub(crate) fn failed(error: TokenError) -> Self {
        ResponseFuture {
            call: None,
            ticket: None,
            rare: Some(Box::new(Rare::Failed(error))),
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
        let mut this = self.project();
        loop {
            if let Some(call) = this.call.as_mut().as_pin_mut() {
                let response = ready!(call.poll(cx)).map_err(Error::Inner)?;
                let Some(ticket) = this.ticket.filter(|_| refusal::refuses(&response)) else {
                    return Poll::Ready(Ok(response));
                };
                *this.ticket = None;
                match refused(ticket, response) {
                    Answer::Ready(response) => return Poll::Ready(Ok(response)),
                    Answer::Renewing(renewing) => {
                        this.call.set(None);
                        *this.rare = Some(Box::new(Rare::Renewing(*renewing)));
                    }
                }
            }
            // Taken out and put back, so that only this local's address goes out of line, never
            // the future's.
            let Some(rare) = this.rare.take() else {
                return Poll::Ready(Err(spent()));
            };
            match poll_rare(rare, cx) {
                Step::Pending(rare) => {
                    *this.rare = Some(rare);
                    return Poll::Pending;
                }
                Step::Done(output) => return Poll::Ready(output),
                Step::Call(future, ticket) => {
                    this.call.set(Some(future));
                    *this.ticket = Some(ticket);
                }
            }
        }
    }
}

/// The API refused the token `ticket` names: the provider's reaction (see `refusal`).
#[inline(never)]
fn refused<Res: InspectResponse>(ticket: Ticket, response: Res) -> Answer<Res> {
    refusal::answer(|| ticket.redeem(), response)
}

/// Polls a state off the cached path.
#[inline(never)]
fn poll_rare<S, R>(mut rare: Box<Rare<S, R>>, cx: &mut Context<'_>) -> Step<S, R>
where
    S: Service<R>,
    S::Response: InspectResponse,
    R: AuthorizeRequest,
{
    match &mut *rare {
        Rare::Acquiring(waiting) => match Pin::new(&mut waiting.acquire).poll(cx) {
            Poll::Pending => Step::Pending(rare),
            Poll::Ready(Err(e)) => Step::Done(Err(Error::Token(e))),
            Poll::Ready(Ok(token)) => {
                let Rare::Acquiring(Waiting {
                    mut service,
                    mut request,
                    provider,
                    ..
                }) = *rare
                else {
                    return Step::Done(Err(spent()));
                };
                request.set_authorization(token.header_value().clone());
                Step::Call(service.call(request), Ticket::fetched(&provider, &token))
            }
        },
        Rare::Renewing(renewing) => match Pin::new(renewing).poll(cx) {
            Poll::Pending => Step::Pending(rare),
            Poll::Ready(output) => Step::Done(output.map_err(Error::Token)),
        },
        Rare::Failed(_) => match *rare {
            Rare::Failed(error) => Step::Done(Err(Error::Token(error))),
            _ => Step::Done(Err(spent())),
        },
    }
}

/// What a future polled after it returned answers.
fn spent<E>() -> Error<E> {
    Error::Token(TokenError::configuration(
        "response future polled after completion",
    ))
}

impl<S, R> fmt::Debug for ResponseFuture<S, R>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The state's name only: the service and the response need not be Debug, and the
        // request may carry the token.
        let state = match (&self.call, self.rare.as_deref()) {
            (Some(_), _) => "Calling",
            (None, Some(Rare::Acquiring(_))) => "Acquiring",
            (None, Some(Rare::Renewing(_))) => "Renewing",
            (None, Some(Rare::Failed(_))) => "Failed",
            (None, None) => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &format_args!("{state}"))
            .finish()
    }
}
