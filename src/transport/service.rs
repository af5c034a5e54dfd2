//! The caller's `tower::Service` behind one object-safe trait, so that a credential holds any
//! transport without a type parameter.

use std::any::type_name;
use std::future::poll_fn;
use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;
use http_body::Body;
use tower_service::Service;

use super::in_transit::in_transit;
use super::{BoxError, BufferedResponse, TransportRequest, read_bounded, refuse_redirect};
use crate::error::TokenError;

/// A transport with its type erased: sends one request and reads the answer under our rules
/// (no redirect, a bounded body). The deadline is [`Transport::send`](super::Transport::send)'s.
pub(crate) trait TransportService: Send + Sync + 'static {
    fn send(
        &self,
        request: TransportRequest,
    ) -> BoxFuture<'static, Result<BufferedResponse, TokenError>>;

    /// The service's type, for `Debug`.
    fn name(&self) -> &'static str;
}

/// A `tower::Service` used as a transport. Each request gets its own clone, readied before it is
/// called (as tower asks); the mutex only guards the clone, so the service need not be `Sync`.
pub(crate) struct ServiceTransport<S> {
    service: Mutex<S>,
}

impl<S> ServiceTransport<S> {
    pub(crate) fn new(service: S) -> Self {
        ServiceTransport {
            service: Mutex::new(service),
        }
    }
}

impl<S, B> TransportService for ServiceTransport<S>
where
    S: Service<TransportRequest, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn send(
        &self,
        request: TransportRequest,
    ) -> BoxFuture<'static, Result<BufferedResponse, TokenError>> {
        let mut service = self
            .service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(in_transit)?;
            let (parts, body) = service
                .call(request)
                .await
                .map_err(in_transit)?
                .into_parts();
            refuse_redirect(parts.status)?;
            Ok(BufferedResponse {
                status: parts.status,
                headers: parts.headers,
                body: read_bounded(body).await?,
            })
        })
    }

    fn name(&self) -> &'static str {
        type_name::<S>()
    }
}
