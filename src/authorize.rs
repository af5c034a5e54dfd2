//! The seam between the middleware and request/response types: where the header goes, where the
//! request is headed, and whether a response says the token was refused.

use http::HeaderValue;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};

/// A request the layer can authorize. Implemented for `http::Request<B>` and, with the
/// `reqwest` feature, `reqwest::Request`.
pub trait AuthorizeRequest {
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
}

impl<B> AuthorizeRequest for http::Request<B> {
    fn has_authorization(&self) -> bool {
        self.headers().contains_key(AUTHORIZATION)
    }
    fn set_authorization(&mut self, value: HeaderValue) {
        self.headers_mut().insert(AUTHORIZATION, value);
    }
    fn scheme(&self) -> Option<&str> {
        self.uri().scheme_str()
    }
    fn host(&self) -> Option<&str> {
        self.uri().host()
    }
}

#[cfg(feature = "reqwest")]
impl AuthorizeRequest for reqwest::Request {
    fn has_authorization(&self) -> bool {
        self.headers().contains_key(AUTHORIZATION)
    }
    fn set_authorization(&mut self, value: HeaderValue) {
        self.headers_mut().insert(AUTHORIZATION, value);
    }
    fn scheme(&self) -> Option<&str> {
        Some(self.url().scheme())
    }
    fn host(&self) -> Option<&str> {
        self.url().host_str()
    }
}

/// A response the layer can read a bearer challenge from, and mark when it renewed the token the
/// request carried (so that a retry policy knows a replay would carry a new one). Implemented
/// for `http::Response<B>` and, with the `reqwest` feature, `reqwest::Response`.
pub trait InspectResponse {
    /// The `WWW-Authenticate` values of a 401 response (or of a gRPC `UNAUTHENTICATED` answer,
    /// status 16 in the headers); empty for any other response.
    fn bearer_challenges(&self) -> Vec<&str>;

    /// Records that the layer renewed the token this response refused.
    fn mark_token_renewed(&mut self) {}

    /// Whether [`mark_token_renewed`](Self::mark_token_renewed) was called: a replay of the
    /// request would carry a new token.
    fn token_renewed(&self) -> bool {
        false
    }
}

/// The response extension that marks a renewed token.
#[derive(Debug, Clone, Copy)]
struct TokenRenewed;

impl<B> InspectResponse for http::Response<B> {
    fn bearer_challenges(&self) -> Vec<&str> {
        challenges(self.status(), self.headers())
    }
    fn mark_token_renewed(&mut self) {
        self.extensions_mut().insert(TokenRenewed);
    }
    fn token_renewed(&self) -> bool {
        self.extensions().get::<TokenRenewed>().is_some()
    }
}

#[cfg(feature = "reqwest")]
impl InspectResponse for reqwest::Response {
    fn bearer_challenges(&self) -> Vec<&str> {
        challenges(self.status(), self.headers())
    }
    fn mark_token_renewed(&mut self) {
        self.extensions_mut().insert(TokenRenewed);
    }
    fn token_renewed(&self) -> bool {
        self.extensions().get::<TokenRenewed>().is_some()
    }
}

fn challenges(status: http::StatusCode, headers: &http::HeaderMap) -> Vec<&str> {
    // gRPC answers HTTP 200 and says UNAUTHENTICATED (16) in `grpc-status`, in the headers of a
    // trailers-only response.
    let grpc_unauthenticated = || headers.get("grpc-status").is_some_and(|v| v == "16");
    if status != http::StatusCode::UNAUTHORIZED && !grpc_unauthenticated() {
        return Vec::new();
    }
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
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

    #[test]
    fn challenges_come_from_401s_and_grpc_unauthenticated_only() {
        let challenge = ("www-authenticate", r#"Bearer error="invalid_token""#);
        assert_eq!(response(401, &[challenge]).bearer_challenges().len(), 1);
        assert_eq!(
            response(200, &[("grpc-status", "16"), challenge])
                .bearer_challenges()
                .len(),
            1
        );
        assert!(response(200, &[challenge]).bearer_challenges().is_empty());
        assert!(
            response(200, &[("grpc-status", "0"), challenge])
                .bearer_challenges()
                .is_empty()
        );
        assert!(response(403, &[challenge]).bearer_challenges().is_empty());
    }

    #[test]
    fn the_renewed_mark_round_trips() {
        let mut r = response(401, &[]);
        assert!(!r.token_renewed());
        r.mark_token_renewed();
        assert!(r.token_renewed());
    }
}
