//! The request shape App Service and Service Fabric share: a GET whose query names the
//! api-version, the resource and the user-assigned identity, with the platform's identity
//! secret in a header.

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use url::Url;
use url::form_urlencoded::Serializer;
use zeroize::Zeroizing;

use super::ManagedIdentityId;
use super::imds::invalid_url;
use crate::error::TokenError;

/// Appends an identity given by object or resource id, as both platforms name them
/// (`principal_id`, `mi_res_id`). A client id is the caller's to append: its name differs.
pub(super) fn append_object_or_resource_id(
    query: &mut Serializer<'_, url::UrlQuery<'_>>,
    id: Option<&ManagedIdentityId>,
) {
    match id {
        Some(ManagedIdentityId::ObjectId(v)) => {
            query.append_pair("principal_id", v);
        }
        Some(ManagedIdentityId::ResourceId(v)) => {
            query.append_pair("mi_res_id", v);
        }
        None | Some(ManagedIdentityId::ClientId(_)) => {}
    }
}

/// `GET url` with `secret` in the header `header_name` (marked sensitive). `platform` names
/// who sets the secret, for the error when it cannot be a header value.
pub(super) fn request(
    url: &Url,
    header_name: &'static str,
    secret: &str,
    platform: &str,
) -> Result<http::Request<Full<Bytes>>, TokenError> {
    let secret = sensitive_header("", secret).ok_or_else(|| {
        TokenError::configuration(format!(
            "IDENTITY_HEADER has characters that cannot be sent in an HTTP header; {platform} sets it, so check what overrides it"
        ))
    })?;
    http::Request::get(url.as_str())
        .header(header_name, secret)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(invalid_url)
}

/// `prefix` and `secret` as a header value marked sensitive, in memory of its exact size that is
/// zeroed when the request drops it (`HeaderValue::from_str` would leave a copy of the secret
/// in freed memory after every request, and a `format!` another); `None` when it cannot be a
/// header value.
pub(super) fn sensitive_header(prefix: &str, secret: &str) -> Option<HeaderValue> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(prefix.len() + secret.len()));
    bytes.extend_from_slice(prefix.as_bytes());
    bytes.extend_from_slice(secret.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(bytes)).ok()?;
    value.set_sensitive(true);
    Some(value)
}
