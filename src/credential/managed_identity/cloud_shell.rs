//! Cloud Shell's request: `POST {MSI_ENDPOINT}` with the form `resource=…` and `Metadata: true`,
//! answered as IMDS answers. It serves only the signed-in user's default identity.

use bytes::Bytes;
use http_body_util::Full;
use url::Url;

use super::imds::invalid_url;
use crate::error::TokenError;

pub(super) fn request(
    endpoint: &Url,
    resource: &str,
) -> Result<http::Request<Full<Bytes>>, TokenError> {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("resource", resource)
        .finish();
    http::Request::post(endpoint.as_str())
        .header("Metadata", "true")
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(Full::new(Bytes::from(form)))
        .map_err(invalid_url)
}
