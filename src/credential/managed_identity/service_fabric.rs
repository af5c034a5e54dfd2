//! Service Fabric's request: `GET {IDENTITY_ENDPOINT}?api-version=2019-07-01-preview&resource=…`
//! with `secret: {IDENTITY_HEADER}`, over TLS whose server certificate is self-signed and
//! pinned by `IDENTITY_SERVER_THUMBPRINT` (the default transport's pinning is in
//! [`pinned_tls`](super::pinned_tls)).

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use url::Url;

use super::ManagedIdentityId;
use super::imds::invalid_url;
use crate::error::TokenError;

pub(super) const API_VERSION: &str = "2019-07-01-preview";

pub(super) fn request(
    endpoint: &Url,
    header: &str,
    resource: &str,
    id: Option<&ManagedIdentityId>,
) -> Result<http::Request<Full<Bytes>>, TokenError> {
    let mut url = endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("api-version", API_VERSION);
        query.append_pair("resource", resource);
        match id {
            None | Some(ManagedIdentityId::ClientId(_)) => {}
            Some(ManagedIdentityId::ObjectId(v)) => {
                query.append_pair("principal_id", v);
            }
            Some(ManagedIdentityId::ResourceId(v)) => {
                query.append_pair("mi_res_id", v);
            }
        }
    }
    let mut secret = HeaderValue::from_str(header).map_err(|_| {
        TokenError::configuration(
            "IDENTITY_HEADER has characters that cannot be sent in an HTTP header; Service Fabric sets it, so check what overrides it",
        )
    })?;
    secret.set_sensitive(true);
    http::Request::get(url.as_str())
        .header("secret", secret)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(invalid_url)
}
