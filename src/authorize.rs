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
    /// The URI scheme and host, when the request names them (a relative URI, as tonic sends to
    /// a `Channel`, names neither).
    fn destination(&self) -> (Option<&str>, Option<&str>);
}

impl<B> AuthorizeRequest for http::Request<B> {
    fn has_authorization(&self) -> bool {
        self.headers().contains_key(AUTHORIZATION)
    }
    fn set_authorization(&mut self, value: HeaderValue) {
        self.headers_mut().insert(AUTHORIZATION, value);
    }
    fn destination(&self) -> (Option<&str>, Option<&str>) {
        (self.uri().scheme_str(), self.uri().host())
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
    fn destination(&self) -> (Option<&str>, Option<&str>) {
        (Some(self.url().scheme()), self.url().host_str())
    }
}

/// A response the layer can read a bearer challenge from. Implemented for `http::Response<B>`
/// and, with the `reqwest` feature, `reqwest::Response`.
pub trait InspectResponse {
    /// The `WWW-Authenticate` values of a 401 response; empty for any other status.
    fn bearer_challenges(&self) -> Vec<&str>;
}

impl<B> InspectResponse for http::Response<B> {
    fn bearer_challenges(&self) -> Vec<&str> {
        challenges(self.status(), self.headers())
    }
}

#[cfg(feature = "reqwest")]
impl InspectResponse for reqwest::Response {
    fn bearer_challenges(&self) -> Vec<&str> {
        challenges(self.status(), self.headers())
    }
}

fn challenges(status: http::StatusCode, headers: &http::HeaderMap) -> Vec<&str> {
    if status != http::StatusCode::UNAUTHORIZED {
        return Vec::new();
    }
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// Whether a `WWW-Authenticate` value is a Bearer challenge with `error="<error>"`.
pub(crate) fn challenge_has_error(challenge: &str, error: &str) -> bool {
    let Some(params) = strip_scheme(challenge, "bearer") else {
        return false;
    };
    params
        .split(',')
        .filter_map(|p| p.split_once('='))
        .any(|(k, v)| k.trim().eq_ignore_ascii_case("error") && v.trim().trim_matches('"') == error)
}

fn strip_scheme<'a>(challenge: &'a str, scheme: &str) -> Option<&'a str> {
    let challenge = challenge.trim_start();
    let (head, rest) = challenge.split_at_checked(scheme.len())?;
    (head.eq_ignore_ascii_case(scheme) && (rest.is_empty() || rest.starts_with(' ')))
        .then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_invalid_token_challenges() {
        assert!(challenge_has_error(
            r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="invalid_token", error_description="expired""#,
            "invalid_token"
        ));
        assert!(challenge_has_error(
            r#"bearer error=invalid_token"#,
            "invalid_token"
        ));
        assert!(!challenge_has_error(r#"Bearer realm="""#, "invalid_token"));
        assert!(!challenge_has_error(
            r#"Basic error="invalid_token""#,
            "invalid_token"
        ));
        assert!(!challenge_has_error(
            r#"Bearer error="insufficient_claims""#,
            "invalid_token"
        ));
    }
}
