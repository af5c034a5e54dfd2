//! App Service's, Functions' and Container Apps' request: `GET {IDENTITY_ENDPOINT}
//! ?api-version=2019-08-01&resource=…` with `X-IDENTITY-HEADER: {IDENTITY_HEADER}`; a
//! user-assigned identity as `client_id`, `principal_id` or `mi_res_id`. The 2017 API, which
//! Azure Machine Learning serves (`MSI_ENDPOINT` + `MSI_SECRET`), takes the header `secret` and
//! only `clientid`.

use bytes::Bytes;
use http_body_util::Full;
use url::Url;

use super::{ManagedIdentityId, secret_get};
use crate::error::TokenError;

pub(super) const API_VERSION: &str = "2019-08-01";
pub(super) const LEGACY_API_VERSION: &str = "2017-09-01";

pub(super) fn request(
    endpoint: &Url,
    header: &str,
    legacy: bool,
    resource: &str,
    id: Option<&ManagedIdentityId>,
    extra: &[(&str, String)],
) -> Result<http::Request<Full<Bytes>>, TokenError> {
    let mut url = endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query.append_pair(
            "api-version",
            if legacy {
                LEGACY_API_VERSION
            } else {
                API_VERSION
            },
        );
        query.append_pair("resource", resource);
        match id {
            Some(ManagedIdentityId::ClientId(v)) if legacy => {
                query.append_pair("clientid", v);
            }
            Some(ManagedIdentityId::ClientId(v)) => {
                query.append_pair("client_id", v);
            }
            other => secret_get::append_object_or_resource_id(&mut query, other),
        }
        for (name, value) in extra {
            query.append_pair(name, value);
        }
    }
    let header_name = if legacy {
        "secret"
    } else {
        "X-IDENTITY-HEADER"
    };
    secret_get::request(&url, header_name, header, "the platform")
}
