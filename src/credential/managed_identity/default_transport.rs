//! The transport a managed identity credential uses when its builder was given none: with the
//! `reqwest` feature, a reqwest client set up for identity endpoints; without it, a
//! configuration error that says how to give one.

use std::time::Duration;

use super::source::Source;
use crate::error::TokenError;
use crate::transport::TransportChoice;

/// The connect timeout of IMDS requests: a link-local endpoint connects in well under a
/// millisecond, so a host where it takes a second has no IMDS.
pub(super) const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The connect timeout of the other sources' endpoints (on the host, or the cluster's node).
#[cfg(feature = "reqwest")]
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A reqwest client that never uses a proxy (the endpoints are on the host or link-local:
/// through `HTTP_PROXY` a request would fail, or hand the identity header to the proxy), never
/// follows a redirect, and gives up connecting after a short while (for IMDS a second, so that
/// off Azure the first request fails fast). Service Fabric's endpoint is reached over TLS that
/// trusts exactly the certificate `IDENTITY_SERVER_THUMBPRINT` names.
#[cfg(feature = "reqwest")]
pub(super) fn default_transport(
    source: &Source,
    timeout: Duration,
) -> Result<TransportChoice, TokenError> {
    let (connect_timeout, tls) = match source {
        Source::Imds { .. } => (IMDS_CONNECT_TIMEOUT, None),
        Source::ServiceFabric {
            url, thumbprint, ..
        } if url.scheme() == "https" => (
            CONNECT_TIMEOUT,
            Some(super::pinned_tls::config(thumbprint)?),
        ),
        _ => (CONNECT_TIMEOUT, None),
    };
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout.min(timeout));
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls);
    }
    let client = builder.build().map_err(|e| {
        TokenError::configuration("could not build the HTTP client for managed identity requests")
            .with_source(e)
    })?;
    Ok(TransportChoice::reqwest_client(client))
}

#[cfg(not(feature = "reqwest"))]
pub(super) fn default_transport(
    source: &Source,
    _timeout: Duration,
) -> Result<TransportChoice, TokenError> {
    Err(TokenError::configuration(format!(
        "no transport for managed identity requests ({}): tower-entra was built without its `reqwest` feature, so give the credential one with `ManagedIdentityCredential::builder().transport(service)` (any tower::Service<http::Request<http_body_util::Full<bytes::Bytes>>>, such as a hyper-util client, that uses no proxy; for IMDS, with a connect timeout of about a second), or enable the `reqwest` feature",
        source.name()
    )))
}

#[cfg(test)]
mod tests {
    use crate::credential::ManagedIdentityCredential;
    use crate::error::TokenErrorKind;

    #[test]
    fn without_reqwest_or_a_transport_building_says_how_to_give_one() {
        let imds = || ManagedIdentityCredential::builder().environment(|_| None);
        let built = imds().build();
        if cfg!(feature = "reqwest") {
            assert!(built.is_ok(), "{built:?}");
        } else {
            let e = built.unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
            assert!(e.message().contains(".transport(service)"), "{e}");
            assert!(e.message().contains("`reqwest` feature"), "{e}");
        }
        // Given a transport, it builds with or without the feature.
        imds()
            .transport(crate::transport::tests::Offline)
            .build()
            .unwrap();
    }
}
