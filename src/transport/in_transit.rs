//! A transport's failure as a typed error: [`Timeout`](TokenErrorKind::Timeout) or
//! [`Connection`](TokenErrorKind::Connection), and, when no connection was ever made, tagged so
//! (a managed identity credential tells "nothing listens at IMDS" apart from a broken exchange
//! by that tag, never by the message).

use std::fmt;

use super::BoxError;
use crate::error::{TokenError, TokenErrorKind};

/// A transport's error, as a [`Timeout`](TokenErrorKind::Timeout) or
/// [`Connection`](TokenErrorKind::Connection) error (both transient: retried by the provider).
/// A failure to connect at all is a `Connection` error whose source is [`NotConnected`], even
/// when connecting timed out.
pub(crate) fn in_transit(error: impl Into<BoxError>) -> TokenError {
    let error = error.into();
    if never_connected(&*error) {
        return TokenError::new(
            TokenErrorKind::Connection,
            "could not connect to the endpoint",
        )
        .with_source(NotConnected(error));
    }
    let kind = if timed_out(&*error) {
        TokenErrorKind::Timeout
    } else {
        TokenErrorKind::Connection
    };
    TokenError::new(kind, "the request failed in transit").with_source(error)
}

/// Whether `error` says that no connection to the endpoint was made: nothing accepted one
/// (refused, unreachable, or the connect timeout passed), so no byte of the request was sent.
pub(crate) fn is_not_connected(error: &TokenError) -> bool {
    error.kind() == TokenErrorKind::Connection
        && error
            .cause()
            .is_some_and(|cause| cause.is::<NotConnected>())
}

/// The marker of a failure to connect: the transport's error as it is (same `Display`, same
/// chain below it), under a type only this crate can make.
struct NotConnected(BoxError);

impl fmt::Debug for NotConnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for NotConnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for NotConnected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Transparent: the wrapped error's own cause comes next, so no message repeats.
        self.0.source()
    }
}

/// Whether anything in the error's chain says that connecting failed: reqwest's connect
/// errors (its connect timeout among them), or the socket errors of a connect that was refused
/// or had no route (what a hyper-util client's connect error holds).
fn never_connected(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    chain(error).any(|e| {
        #[cfg(feature = "reqwest")]
        if e.downcast_ref::<::reqwest::Error>()
            .is_some_and(::reqwest::Error::is_connect)
        {
            return true;
        }
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            )
        })
    })
}

/// Whether anything in the error's chain says it timed out.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    chain(error).any(|e| {
        #[cfg(feature = "reqwest")]
        if e.downcast_ref::<::reqwest::Error>()
            .is_some_and(::reqwest::Error::is_timeout)
        {
            return true;
        }
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// The error and its causes, outermost first. A [`TokenError`]'s `source()` skips the cause its
/// `Display` shows; its [`cause`](TokenError::cause) is the next link here (a custom transport
/// may fail with a `TokenError` around the socket's error).
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| match e.downcast_ref::<TokenError>() {
        Some(token) => token
            .cause()
            .map(|cause| cause as &(dyn std::error::Error + 'static)),
        None => e.source(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn a_refused_or_unroutable_connect_is_tagged_and_nothing_else_is() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
        ] {
            // Deeper in the chain too, as a hyper-util client's connect error holds it.
            let wrapped = TokenError::new(TokenErrorKind::Connection, "client")
                .with_source(io::Error::from(kind));
            for error in [in_transit(io::Error::from(kind)), in_transit(wrapped)] {
                assert!(is_not_connected(&error), "{kind:?}: {error}");
                assert_eq!(error.kind(), TokenErrorKind::Connection);
            }
        }
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::TimedOut,
            io::ErrorKind::UnexpectedEof,
        ] {
            let error = in_transit(io::Error::from(kind));
            assert!(!is_not_connected(&error), "{kind:?}: {error}");
        }
        // The tag is a type, not a message: a look-alike message is not one.
        let lookalike = TokenError::new(
            TokenErrorKind::Connection,
            "could not connect to the endpoint",
        )
        .with_source(io::Error::other("connection refused"));
        assert!(!is_not_connected(&lookalike));
    }

    #[test]
    fn the_tag_keeps_the_transports_message_and_chain() {
        let inner = TokenError::new(TokenErrorKind::Connection, "tcp connect error")
            .with_source(io::Error::from(io::ErrorKind::ConnectionRefused));
        let error = in_transit(inner);
        assert!(error.to_string().contains("tcp connect error"), "{error}");
        let tagged = error.cause().unwrap();
        let NotConnected(transports) = tagged.downcast_ref::<NotConnected>().unwrap();
        assert!(
            chain(&**transports).any(|e| e.is::<io::Error>()),
            "{error:?}"
        );
    }
}
