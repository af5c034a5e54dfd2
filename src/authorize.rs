//! The seam between the middleware and request types: where the header goes and where the
//! request is headed. (What a response says about the token is in `refusal.rs`.)

use http::HeaderValue;
use http::header::AUTHORIZATION;

use crate::tenant::Tenant;

mod sealed {
    /// Sealed so that [`AuthorizeRequest`](super::AuthorizeRequest) has implementations in this
    /// crate only: its answers decide where tokens are sent.
    pub trait Sealed {}
}

/// A request the layer can authorize. Implemented for `http::Request<B>` and, with the
/// `reqwest` feature, `reqwest::Request`. It is sealed: no other type can implement it.
pub trait AuthorizeRequest: sealed::Sealed {
    /// Whether the request already carries an `Authorization` header (then it is left as it is).
    fn has_authorization(&self) -> bool;
    /// Sets the `Authorization` header.
    fn set_authorization(&mut self, value: HeaderValue);
    /// The URI scheme, when the request names one (a relative URI, as tonic sends to a
    /// `Channel`, does not).
    fn scheme(&self) -> Option<&str>;
    /// The URI host, when the request names one. Only asked for when the layer needs it (plain
    /// http, an allow-list or routes): parsing it is most of the layer's per-request cost.
    fn host(&self) -> Option<&str>;
    /// The URI's authority as written (host, and port or userinfo if any), without parsing it:
    /// a service remembers the last destination it judged by scheme and authority.
    fn authority(&self) -> Option<&str>;
    /// The [`Tenant`] the request's token is for, if its extensions name one.
    fn tenant(&self) -> Option<&Tenant>;
}

impl<B> sealed::Sealed for http::Request<B> {}

impl<B> AuthorizeRequest for http::Request<B> {
    #[inline]
    fn has_authorization(&self) -> bool {
        self.headers().contains_key(AUTHORIZATION)
    }
    #[inline]
    fn set_authorization(&mut self, value: HeaderValue) {
        self.headers_mut().insert(AUTHORIZATION, value);
    }
    fn scheme(&self) -> Option<&str> {
        self.uri().scheme_str()
    }
    fn host(&self) -> Option<&str> {
        self.uri().host()
    }
    fn authority(&self) -> Option<&str> {
        self.uri().authority().map(http::uri::Authority::as_str)
    }
    fn tenant(&self) -> Option<&Tenant> {
        self.extensions().get()
    }
}

#[cfg(feature = "reqwest")]
impl sealed::Sealed for reqwest::Request {}

#[cfg(feature = "reqwest")]
impl AuthorizeRequest for reqwest::Request {
    #[inline]
    fn has_authorization(&self) -> bool {
        self.headers().contains_key(AUTHORIZATION)
    }
    #[inline]
    fn set_authorization(&mut self, value: HeaderValue) {
        self.headers_mut().insert(AUTHORIZATION, value);
    }
    fn scheme(&self) -> Option<&str> {
        Some(self.url().scheme())
    }
    fn authority(&self) -> Option<&str> {
        Some(self.url().authority())
    }
    fn host(&self) -> Option<&str> {
        self.url().host_str()
    }
    /// reqwest keeps a request's extensions to itself: the tenant comes through the
    /// middleware's extensions instead.
    fn tenant(&self) -> Option<&Tenant> {
        None
    }
}
