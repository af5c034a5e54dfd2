//! Service Fabric's request: `GET {IDENTITY_ENDPOINT}?api-version=2019-07-01-preview&resource=…`
//! with `secret: {IDENTITY_HEADER}`, over TLS whose server certificate is self-signed and
//! pinned by `IDENTITY_SERVER_THUMBPRINT` (the default transport's pinning is in
//! [`pinned_tls`](super::pinned_tls)).

use bytes::Bytes;
use http_body_util::Full;
use url::Url;

use super::{ManagedIdentityId, secret_get};
use crate::error::TokenError;

pub(super) const API_VERSION: &str = "2019-07-01-preview";

pub(super) fn request(
    endpoint: &Url,
    header: &str,
    resource: &str,
    id: Option<&ManagedIdentityId>,
    extra: &[(&str, String)],
) -> Result<http::Request<Full<Bytes>>, TokenError> {
    let mut url = endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("api-version", API_VERSION);
        query.append_pair("resource", resource);
        secret_get::append_object_or_resource_id(&mut query, id);
        for (name, value) in extra {
            query.append_pair(name, value);
        }
    }
    secret_get::request(&url, "secret", header, "Service Fabric")
}
