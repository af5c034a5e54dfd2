//! The one place managed identity requests are sent: an `http::Request` in, the status, headers
//! and a bounded, zeroed-on-drop body out. reqwest for now; the crate's pluggable transport
//! can take its place here without touching the sources.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use zeroize::Zeroizing;

use crate::error::{TokenError, TokenErrorKind};

/// The largest answer read; a token response is a few KiB.
const MAX_BODY: usize = 1024 * 1024;

/// An answer as read: never a redirect, at most [`MAX_BODY`] bytes of body in memory that is
/// zeroed when dropped (it holds a token).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Zeroizing<Vec<u8>>,
}

/// Sends managed identity requests.
#[derive(Clone, Debug)]
pub(super) struct MiHttp {
    client: reqwest::Client,
    timeout: Duration,
}

impl MiHttp {
    /// A client that never uses a proxy (the endpoints are on the host or link-local: through
    /// `HTTP_PROXY` a request would fail, or hand the identity header to the proxy), never
    /// follows a redirect, and gives up connecting after `connect_timeout` (short for IMDS, so
    /// that off Azure the first request fails fast). `tls` is a TLS configuration of its own
    /// (Service Fabric's pinned certificate).
    pub(super) fn new(
        timeout: Duration,
        connect_timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, TokenError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout.min(timeout));
        if let Some(tls) = tls {
            builder = builder.tls_backend_preconfigured(tls);
        }
        let client = builder.build().map_err(|e| {
            TokenError::configuration(
                "could not build the HTTP client for managed identity requests",
            )
            .with_source(e)
        })?;
        Ok(MiHttp { client, timeout })
    }

    /// Sends `request` and reads the answer, within the timeout. A redirect is an
    /// [`InvalidResponse`](TokenErrorKind::InvalidResponse) error, never followed.
    pub(super) async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<Answer, TokenError> {
        let exchange = async {
            let (parts, body) = request.into_parts();
            // `Full` cannot fail; the body (a Cloud Shell form) is a few bytes.
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let request = http::Request::from_parts(parts, body);
            let request = reqwest::Request::try_from(request).map_err(|e| {
                TokenError::configuration(
                    "the managed identity endpoint URL is not a valid request URI",
                )
                .with_source(e.without_url())
            })?;
            let response = self.client.execute(request).await.map_err(send_error)?;
            let status = response.status();
            if status.is_redirection() {
                return Err(TokenError::invalid_response(format!(
                    "the managed identity endpoint answered with a redirect (HTTP {}); it never redirects, so check the endpoint variable",
                    status.as_u16()
                )));
            }
            let headers = response.headers().clone();
            let body = read_bounded(response).await?;
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::new(
                TokenErrorKind::Timeout,
                format!(
                    "the managed identity endpoint did not answer within {:?}; raise the credential's timeout",
                    self.timeout
                ),
            )),
        }
    }
}

/// Reads the answer into memory that is zeroed when dropped, at most [`MAX_BODY`] bytes.
async fn read_bounded(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let expected = response.content_length();
    if expected.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(oversized());
    }
    let mut body = Zeroizing::new(Vec::with_capacity(
        expected.map_or(8 * 1024, |n| n as usize),
    ));
    while let Some(chunk) = response.chunk().await.map_err(send_error)? {
        let needed = body.len() + chunk.len();
        if needed > MAX_BODY {
            return Err(oversized());
        }
        if needed > body.capacity() {
            // Grown by hand: `Vec`'s own reallocation would free the old buffer unzeroed.
            let mut grown = Zeroizing::new(Vec::with_capacity(
                needed.max(body.capacity() * 2).min(MAX_BODY),
            ));
            grown.extend_from_slice(&body);
            body = grown;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn oversized() -> TokenError {
    TokenError::invalid_response(format!(
        "the managed identity endpoint's answer is larger than {MAX_BODY} bytes; a token response is a few KiB"
    ))
}

/// The message of a failure to connect: nothing answered at the endpoint's address.
const UNREACHABLE: &str = "could not connect to the managed identity endpoint";

fn send_error(e: reqwest::Error) -> TokenError {
    let (kind, what) = if e.is_connect() {
        (TokenErrorKind::Connection, UNREACHABLE)
    } else if e.is_timeout() {
        (
            TokenErrorKind::Timeout,
            "the managed identity endpoint did not answer in time",
        )
    } else {
        (
            TokenErrorKind::Connection,
            "the managed identity request failed in transit",
        )
    };
    // The URL holds no secret (the identity header travels in a header), but keep errors short.
    TokenError::new(kind, what).with_source(e.without_url())
}

/// Whether the error is a failure to connect at all: no endpoint listens at the address.
pub(super) fn is_unreachable(e: &TokenError) -> bool {
    e.kind() == TokenErrorKind::Connection && e.message() == UNREACHABLE
}
