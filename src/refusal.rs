//! An API's refusal of a token, in one place.
//!
//! A protected API refuses a token with `401` (over gRPC: `UNAUTHENTICATED`, status 16 in the
//! headers of a trailers-only answer) and a Bearer challenge in `WWW-Authenticate`. Whoever sent
//! the request ([`ResponseFuture`](crate::ResponseFuture), the reqwest middleware) hands the
//! response to [`answer`], which:
//!
//! 1. reads the refusal into the provider's [`Reaction`] ([`reaction`]): drop the token (`invalid_token`), fetch one carrying
//!    the challenge's claims (`insufficient_claims`, Continuous Access Evaluation), or nothing;
//! 2. has the provider act on it (the provider decides whether it may, and merges the claims
//!    with the client capabilities);
//! 3. marks the response when the token it refused has been renewed, so that a replay would
//!    carry a new one.
//!
//! The mark is all a replay is decided on ([`Replays`]), alike in
//! [`RetryOnChallenge`](crate::RetryOnChallenge) and the reqwest middleware.

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::WWW_AUTHENTICATE;
use http::{Extensions, HeaderMap, HeaderName, StatusCode};
use pin_project_lite::pin_project;

use crate::challenge::BearerChallenge;
use crate::error::TokenError;
use crate::provider::{Acquire, Reaction, Renewal, TokenProvider};
use crate::token::AccessToken;

mod sealed {
    use http::{Extensions, HeaderMap, StatusCode};

    /// The parts of a response a refusal is read from and the renewed mark is kept in.
    ///
    /// Sealed so that [`InspectResponse`](super::InspectResponse) has implementations in this
    /// crate only: an outside one could not read refusals, and would turn replays off silently.
    pub trait ResponseParts {
        fn status_code(&self) -> StatusCode;
        fn header_map(&self) -> &HeaderMap;
        fn extension_map(&self) -> &Extensions;
        fn extension_map_mut(&mut self) -> &mut Extensions;
    }
}

/// A response the layer can read a token refusal from, and mark when it renewed the refused
/// token (so that a retry policy knows a replay would carry a new one).
///
/// Implemented for `http::Response<B>` and, with the `reqwest` feature, `reqwest::Response`.
/// It is sealed: no other type can implement it. Only the layer marks a response as renewed:
/// a mark set elsewhere would have a retry policy replay a request with the same token.
///
/// ```compile_fail
/// use tower_entra::InspectResponse;
///
/// let mut response = http::Response::new(());
/// response.mark_token_renewed(); // not part of the public API
/// ```
pub trait InspectResponse: sealed::ResponseParts {
    /// The `WWW-Authenticate` values of a 401 response (or of a gRPC `UNAUTHENTICATED` answer,
    /// status 16 in the headers); empty for any other response.
    fn bearer_challenges(&self) -> Vec<&str> {
        challenges(self.status_code(), self.header_map()).collect()
    }

    /// Whether the token this response refused was renewed: a replay of the request would carry
    /// a new token.
    fn token_renewed(&self) -> bool {
        self.extension_map().get::<TokenRenewed>().is_some()
    }
}

/// The response extension that marks a renewed token.
#[derive(Debug, Clone, Copy)]
struct TokenRenewed;

/// Records that the token `response` refused was renewed: a replay of the request would carry a
/// new one. Only the layer marks a response (a mark from user code would trigger replays that
/// carry the same token); a retry policy reads it with
/// [`token_renewed`](InspectResponse::token_renewed).
pub(crate) fn mark_token_renewed(response: &mut impl InspectResponse) {
    response.extension_map_mut().insert(TokenRenewed);
}

impl<B> sealed::ResponseParts for http::Response<B> {
    fn status_code(&self) -> StatusCode {
        self.status()
    }
    fn header_map(&self) -> &HeaderMap {
        self.headers()
    }
    fn extension_map(&self) -> &Extensions {
        self.extensions()
    }
    fn extension_map_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

impl<B> InspectResponse for http::Response<B> {}

#[cfg(feature = "reqwest")]
impl sealed::ResponseParts for reqwest::Response {
    fn status_code(&self) -> StatusCode {
        self.status()
    }
    fn header_map(&self) -> &HeaderMap {
        self.headers()
    }
    fn extension_map(&self) -> &Extensions {
        self.extensions()
    }
    fn extension_map_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

#[cfg(feature = "reqwest")]
impl InspectResponse for reqwest::Response {}

/// Named once: looking a header up by a `&str` parses the name on every response.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether `response` refuses the token it was sent with (a 401, or gRPC's UNAUTHENTICATED).
#[inline]
pub(crate) fn refuses(response: &impl InspectResponse) -> bool {
    is_refusal(response.status_code(), response.header_map())
}

/// Whether the answer refuses the request's credentials: 401, or gRPC `UNAUTHENTICATED`.
#[inline]
fn is_refusal(status: StatusCode, headers: &HeaderMap) -> bool {
    // gRPC answers HTTP 200 and says UNAUTHENTICATED (16) in `grpc-status`, in the headers of a
    // trailers-only response.
    status == StatusCode::UNAUTHORIZED || headers.get(&GRPC_STATUS).is_some_and(|v| v == "16")
}

/// The challenges of a refusal; none for any other answer.
fn challenges(status: StatusCode, headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let refused = is_refusal(status, headers);
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter(move |_| refused)
        .filter_map(|v| v.to_str().ok())
}

/// What `response` asks of the provider about the token its request carried. Cheap for a
/// response that is not a refusal: its status and one header are read, nothing is allocated.
pub(crate) fn reaction(response: &impl InspectResponse) -> Reaction {
    let (status, headers) = (response.status_code(), response.header_map());
    if !is_refusal(status, headers) {
        return Reaction::None;
    }
    reaction_to_challenges(challenges(status, headers))
}

/// What a refusal with these `WWW-Authenticate` values asks for. An `insufficient_claims`
/// challenge whose claims cannot be read still says the token will not do: it is dropped.
fn reaction_to_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Reaction {
    match BearerChallenge::find(values) {
        Some(c) if c.is_insufficient_claims() => match c.claims().map(str::to_owned) {
            Some(claims) => Reaction::Claims(claims),
            None => Reaction::Invalidate,
        },
        Some(c) if c.is_invalid_token() => Reaction::Invalidate,
        _ => Reaction::None,
    }
}

/// A response to a request that carried `used`, with its refusal (if any) acted on.
pub(crate) enum Answer<Res> {
    /// Ready to return: not a refusal, or one already acted on (and marked when the token was
    /// renewed).
    Ready(Res),
    /// A claims challenge: the response waits for the token with the claims.
    Renewing(Box<Renewing<Res>>),
}

/// Reads `response` to a request, and has the provider of the token it carried act on a
/// refusal. A refused token is dealt with even when the request will not be replayed, so that
/// the next request carries a new one. `used` gives the provider and the token only on a
/// refusal: the tower future holds them by a ticket (finding them touches counts shared by
/// every core), and may find the provider gone (`None`), or the token no longer cached
/// (`Some((provider, None))`).
pub(crate) fn answer<Res: InspectResponse, P: Borrow<TokenProvider>>(
    used: impl FnOnce() -> Option<(P, Option<AccessToken>)>,
    mut response: Res,
) -> Answer<Res> {
    let reaction = reaction(&response);
    if reaction == Reaction::None {
        return Answer::Ready(response);
    }
    let Some((provider, used)) = used() else {
        return Answer::Ready(response);
    };
    match provider.borrow().on_refusal(used.as_ref(), reaction) {
        Renewal::None => Answer::Ready(response),
        Renewal::Renewed => {
            mark_token_renewed(&mut response);
            Answer::Ready(response)
        }
        // Boxed: a claims challenge is rare, and the response future that holds it stays the
        // size of the inner future on the path every request takes.
        Renewal::Fetching(acquire) => Answer::Renewing(Box::new(Renewing {
            acquire,
            refused: used,
            response: Some(response),
        })),
    }
}

pin_project! {
    /// A refused response held until the token with the challenge's claims is fetched; then
    /// the response, marked when it brought a new token.
    pub(crate) struct Renewing<Res> {
        acquire: Acquire,
        // `None`: the refused token was already replaced, so any token is a renewal.
        refused: Option<AccessToken>,
        response: Option<Res>,
    }
}

impl<Res: InspectResponse> Future for Renewing<Res> {
    /// The API's response; an error only when polled after completion. A failed claims fetch
    /// is in the provider's stats and logs, and the caller still gets the API's own answer.
    type Output = Result<Res, TokenError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let renewed = ready!(Pin::new(this.acquire).poll(cx))
            .is_ok_and(|token| this.refused.as_ref().is_none_or(|r| !token.same_token(r)));
        let Some(mut response) = this.response.take() else {
            return Poll::Ready(Err(TokenError::configuration(
                "response future polled after completion",
            )));
        };
        if renewed {
            mark_token_renewed(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

/// Whether to replay a refused request: the one decision of
/// [`RetryOnChallenge`](crate::RetryOnChallenge) and the reqwest middleware.
#[cfg(any(feature = "retry", feature = "reqwest-middleware"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replays {
    left: u8,
}

#[cfg(any(feature = "retry", feature = "reqwest-middleware"))]
impl Replays {
    /// At most `left` replays of one request.
    pub(crate) const fn up_to(left: u8) -> Self {
        Replays { left }
    }

    /// Whether a replay may still be asked for (so a copy of the request is worth making).
    pub(crate) fn any_left(&self) -> bool {
        self.left > 0
    }

    /// Whether to replay the request that got `response`, counting the replay. Only when the
    /// refused token was renewed: otherwise (no token sent, or another refusal within the
    /// renewal interval) a replay would be refused the same way.
    pub(crate) fn take(&mut self, response: &impl InspectResponse) -> bool {
        if self.left == 0 || !response.token_renewed() {
            return false;
        }
        self.left -= 1;
        tracing::debug!("the refused token was renewed; replaying the request");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
        let mut r = http::Response::builder().status(status);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    const INVALID_TOKEN: (&str, &str) = ("www-authenticate", r#"Bearer error="invalid_token""#);

    #[test]
    fn challenges_come_from_401s_and_grpc_unauthenticated_only() {
        assert_eq!(response(401, &[INVALID_TOKEN]).bearer_challenges().len(), 1);
        let grpc = response(200, &[("grpc-status", "16"), INVALID_TOKEN]);
        assert_eq!(grpc.bearer_challenges().len(), 1);
        assert_eq!(reaction(&grpc), Reaction::Invalidate);
        for other in [
            response(200, &[INVALID_TOKEN]),
            response(200, &[("grpc-status", "0"), INVALID_TOKEN]),
            response(403, &[INVALID_TOKEN]),
        ] {
            assert!(other.bearer_challenges().is_empty());
            assert_eq!(reaction(&other), Reaction::None);
        }
        assert_eq!(
            reaction(&response(401, &[INVALID_TOKEN])),
            Reaction::Invalidate
        );
    }

    #[test]
    fn the_reaction_follows_the_bearer_challenge() {
        let to = |values: &[&str]| reaction_to_challenges(values.iter().copied());
        assert_eq!(
            to(&[
                r#"Bearer error="invalid_token", error_description="The token expired, at 12:00""#
            ]),
            Reaction::Invalidate
        );
        assert_eq!(to(&["bearer error=invalid_token"]), Reaction::Invalidate);
        // {"a":1}
        assert_eq!(
            to(&[r#"Bearer error="insufficient_claims", claims="eyJhIjoxfQ""#]),
            Reaction::Claims(r#"{"a":1}"#.to_owned())
        );
        assert_eq!(to(&[r#"Bearer realm="""#]), Reaction::None);
        assert_eq!(to(&[r#"Basic error="invalid_token""#]), Reaction::None);
        assert_eq!(to(&[]), Reaction::None);
        // Unreadable claims: the token is dropped instead.
        assert_eq!(
            to(&[r#"Bearer error="insufficient_claims", claims="%%%""#]),
            Reaction::Invalidate
        );
        assert_eq!(
            to(&[r#"Bearer error="insufficient_claims", claims="WzEsMl0""#]), // [1,2]
            Reaction::Invalidate
        );
    }

    #[test]
    fn the_renewed_mark_round_trips() {
        let mut r = response(401, &[]);
        assert!(!r.token_renewed());
        mark_token_renewed(&mut r);
        assert!(r.token_renewed());
    }

    #[cfg(any(feature = "retry", feature = "reqwest-middleware"))]
    #[test]
    fn replays_need_a_renewed_token_and_a_replay_left() {
        let mut refused = response(401, &[INVALID_TOKEN]);
        let mut replays = Replays::up_to(1);
        assert!(replays.any_left());
        assert!(!replays.take(&refused), "not renewed: no replay");
        assert!(replays.any_left(), "a declined replay is not counted");
        mark_token_renewed(&mut refused);
        assert!(replays.take(&refused));
        assert!(!replays.any_left());
        assert!(!replays.take(&refused), "one replay only");
        assert!(!Replays::up_to(0).take(&refused));
    }
}
