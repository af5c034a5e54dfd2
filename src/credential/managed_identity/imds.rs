//! IMDS's request: `GET {host}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//! with `Metadata: true`; a user-assigned identity as `client_id`, `object_id` or `msi_res_id`.
//! Azure Arc's and Cloud Shell's endpoints take the same parameters and answer the same way.

use bytes::Bytes;
use http_body_util::Full;
use url::Url;

use super::ManagedIdentityId;
use crate::error::TokenError;

pub(super) const API_VERSION: &str = "2018-02-01";

/// The IMDS-shaped query: `api-version`, `resource` and the identity parameter.
pub(super) fn query_url(
    endpoint: &Url,
    api_version: &str,
    resource: &str,
    id: Option<&ManagedIdentityId>,
) -> Url {
    let mut url = endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("api-version", api_version);
        query.append_pair("resource", resource);
        if let Some((name, value)) = id.map(id_param) {
            query.append_pair(name, value);
        }
    }
    url
}

/// The parameter IMDS (and Cloud Shell) selects a user-assigned identity by.
pub(super) fn id_param(id: &ManagedIdentityId) -> (&'static str, &str) {
    match id {
        ManagedIdentityId::ClientId(v) => ("client_id", v),
        ManagedIdentityId::ObjectId(v) => ("object_id", v),
        ManagedIdentityId::ResourceId(v) => ("msi_res_id", v),
    }
}

/// A GET of `url` with `Metadata: true` (which IMDS requires, so that a server-side request
/// forgery that cannot set headers cannot get a token).
pub(super) fn metadata_get(url: &Url) -> Result<http::Request<Full<Bytes>>, TokenError> {
    http::Request::get(url.as_str())
        .header("Metadata", "true")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(invalid_url)
}

pub(super) fn request(
    endpoint: &Url,
    resource: &str,
    id: Option<&ManagedIdentityId>,
) -> Result<http::Request<Full<Bytes>>, TokenError> {
    metadata_get(&query_url(endpoint, API_VERSION, resource, id))
}

pub(super) fn invalid_url(e: http::Error) -> TokenError {
    TokenError::configuration("the managed identity endpoint URL is not a valid request URI")
        .with_source(e)
}
