//! [`ResponseFuture`]: waits for a token when none is cached, then calls the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::authorize::{AuthorizeRequest, InspectResponse};
use crate::error::{Error, TokenError};
use crate::provider::{Acquire, Renewal, TokenProvider};
use crate::token::AccessToken;

pin_project! {
    /// The response future of [`EntraAuth`](crate::EntraAuth).
    ///
    /// With a cached token it is the inner future and a token handle, nothing boxed.
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
            // Kept to drop this token from the cache if the API answers invalid_token, or to
            // replace it after a claims challenge.
            used: Option<(TokenProvider, AccessToken)>,
        },
        // A claims challenge came back: a token with those claims is fetched before the
        // response is returned, so that a replay carries it.
        Reauthorizing {
            acquire: Acquire,
            response: Option<S::Response>,
            refused: AccessToken,
        },
        Failed {
            error: Option<TokenError>,
        },
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
    pub(crate) fn calling(future: S::Future, provider: TokenProvider, token: AccessToken) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                used: Some((provider, token)),
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquiring { waiting } => {
                    let Waiting {
                        acquire,
                        service,
                        request,
                        provider,
                    } = &mut **waiting;
                    let token = match ready!(Pin::new(acquire).poll(cx)) {
                        Ok(token) => token,
                        Err(e) => return Poll::Ready(Err(Error::Token(e))),
                    };
                    let (Some(mut service), Some(mut request)) = (service.take(), request.take())
                    else {
                        return Poll::Ready(Err(Error::Token(TokenError::configuration(
                            "response future polled after completion",
                        ))));
                    };
                    request.set_authorization(token.header_value().clone());
                    let future = service.call(request);
                    let used = Some((provider.clone(), token));
                    this.state.set(State::Calling { future, used });
                }
                StateProj::Calling { future, used } => {
                    let mut response = ready!(future.poll(cx)).map_err(Error::Inner)?;
                    let Some((provider, token)) = used.take() else {
                        return Poll::Ready(Ok(response));
                    };
                    match provider.on_challenge(&token, &response.bearer_challenges()) {
                        Renewal::None => return Poll::Ready(Ok(response)),
                        Renewal::Renewed => {
                            response.mark_token_renewed();
                            return Poll::Ready(Ok(response));
                        }
                        Renewal::Fetching(acquire) => {
                            this.state.set(State::Reauthorizing {
                                acquire,
                                response: Some(response),
                                refused: token,
                            });
                        }
                    }
                }
                StateProj::Reauthorizing {
                    acquire,
                    response,
                    refused,
                } => {
                    let renewed = ready!(Pin::new(acquire).poll(cx))
                        .is_ok_and(|token| !token.same_token(refused));
                    let Some(mut response) = response.take() else {
                        return Poll::Ready(Err(Error::Token(TokenError::configuration(
                            "response future polled after completion",
                        ))));
                    };
                    // A failed claims fetch is in the provider's stats and logs; the caller
                    // still gets the API's own answer.
                    if renewed {
                        response.mark_token_renewed();
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Failed { error } => {
                    let error = error.take().unwrap_or_else(|| {
                        TokenError::configuration("response future polled after completion")
                    });
                    return Poll::Ready(Err(Error::Token(error)));
                }
            }
        }
    }
}
