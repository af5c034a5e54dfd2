//! The default transport (feature `reqwest`): a reqwest 0.13 client with rustls, redirects off,
//! adapted to the `tower::Service<http::Request<Full<Bytes>>>` shape every transport has.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use tower_service::Service;
use url::Url;

use super::service::ServiceTransport;
use super::{Route, TransportRequest, TransportService};
use crate::error::TokenError;
use crate::host::is_loopback;

/// The reqwest client for requests to `destination`, from the caller's builder (proxies, TLS
/// roots) or a default one, always with redirects off and a connect timeout.
pub(super) fn transport(
    builder: Option<reqwest::ClientBuilder>,
    timeout: Duration,
    destination: &Url,
) -> Result<(Arc<dyn TransportService>, Route), TokenError> {
    let direct = destination.scheme() == "http" && is_loopback(destination);
    let route = match &builder {
        _ if direct => Route::Direct,
        Some(_) => Route::CallerClient,
        None => Route::environment(destination),
    };
    let mut builder = builder
        .unwrap_or_default()
        // A token endpoint never redirects; following a 307/308 would re-POST the form (the
        // client secret or assertion) to wherever the redirect points.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(10)));
    if direct {
        // A plain-http request through a proxy is sent to the proxy in clear, form and all (only
        // https is tunnelled with CONNECT). A loopback endpoint (an emulator, a local identity
        // endpoint) is on this machine, so no proxy is needed to reach it.
        builder = builder.no_proxy();
    }
    let client = builder.build().map_err(|e| {
        TokenError::configuration(
            "could not build the HTTP client for token requests; check the reqwest::ClientBuilder passed to http_client (proxy, TLS roots)",
        )
        .with_source(e)
    })?;
    Ok((from_client(client), route))
}

/// A reqwest client the caller built as a transport (the managed identity credential's, with
/// its own proxy, connect-timeout and TLS settings). Redirects are refused whatever the client's
/// policy; the client should still have them off, so that it never sends a request to a target.
pub(crate) fn from_client(client: reqwest::Client) -> Arc<dyn TransportService> {
    Arc::new(ServiceTransport::new(ReqwestService(client)))
}

/// A `reqwest::Client` as an `http` service.
#[derive(Clone)]
struct ReqwestService(reqwest::Client);

impl Service<TransportRequest> for ReqwestService {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: TransportRequest) -> Self::Future {
        let (parts, body) = request.into_parts();
        let request =
            reqwest::Request::try_from(http::Request::from_parts(parts, into_bytes(body)));
        let client = self.0.clone();
        Box::pin(async move {
            // The URL in reqwest's errors is dropped: it is noise in a token error's chain.
            let response = client
                .execute(request.map_err(reqwest::Error::without_url)?)
                .await
                .map_err(reqwest::Error::without_url)?;
            Ok(http::Response::from(response))
        })
    }
}

/// The one chunk a `Full` holds, moved out (not copied: the form's zeroed-on-drop memory goes
/// to reqwest as it is).
fn into_bytes(mut body: Full<Bytes>) -> Bytes {
    // `Full` answers its first poll at once, with its chunk or (when empty) with the end.
    match body.frame().now_or_never() {
        Some(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}
