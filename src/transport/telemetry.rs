//! The headers that tell Entra which library asks, as Microsoft's own libraries send them, so
//! that Entra support can tell this library's requests apart in its logs.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, USER_AGENT};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Adds `x-client-SKU`, `x-client-Ver`, `x-client-OS` and `User-Agent`, leaving any a request
/// already has.
pub(crate) fn add_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (HeaderName::from_static("x-client-sku"), "tower-entra"),
        (HeaderName::from_static("x-client-ver"), VERSION),
        (HeaderName::from_static("x-client-os"), std::env::consts::OS),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    headers
        .entry(USER_AGENT)
        .or_insert(HeaderValue::from_static(concat!(
            "tower-entra/",
            env!("CARGO_PKG_VERSION")
        )));
}
