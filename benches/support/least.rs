//! [`Least`]: the least any middleware must do for a cached request naming a tenant, written by
//! hand for one tenant and one token, as a reference beside `EntraAuth` in `benches/tenants`.
//!
//! The static-header floor does none of the checks the feature needs. This service does each
//! of them once, in the cheapest form we know, and nothing else: the request's `Tenant`
//! extension read and compared with the one it holds (by handle), the destination checked
//! (https, the same authority), the token's generation read from where every clone sees it,
//! the coarse wall clock against the refresh point, a caller's own `Authorization` left alone,
//! the header set, and a response future that keeps what a refusal needs (a ticket) and looks
//! at the response for one (401, gRPC's UNAUTHENTICATED). A miss goes out of line and calls the
//! inner service from there, as any middleware's cold path does (so the inner service's `call`
//! is not the one call site the compiler inlines for free). It keeps no use mark for eviction,
//! no dropped mark, no monotonic bound and no provider identity, which `EntraAuth` does; so
//! the gap between the two is what those, and the generality, cost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use tower::Service;
use tower_entra::Tenant;

/// The checks of a cached tenant request and nothing more, around `inner`.
#[derive(Clone)]
pub struct Least<S> {
    inner: S,
    header: HeaderValue,
    tenant: Tenant,
    authority: String,
    generation: Arc<AtomicU64>,
    generation_seen: u64,
    refresh_at: Duration,
}

impl<S> Least<S> {
    /// Serves `header` to requests for `tenant` at `https://{authority}`.
    pub fn new(inner: S, header: HeaderValue, tenant: Tenant, authority: &str) -> Self {
        Least {
            inner,
            header,
            tenant,
            authority: authority.to_owned(),
            generation: Arc::new(AtomicU64::new(1)),
            generation_seen: 1,
            // An hour ahead, as a fresh token's refresh point is.
            refresh_at: wall_clock() + Duration::from_secs(3600),
        }
    }

    #[inline]
    fn serves<B>(&self, request: &Request<B>) -> bool {
        let uri = request.uri();
        request
            .extensions()
            .get::<Tenant>()
            .is_some_and(|t| std::ptr::eq(t.as_str(), self.tenant.as_str()))
            && uri.scheme_str() == Some("https")
            && uri.authority().map(|a| a.as_str()) == Some(self.authority.as_str())
            && self.generation.load(Ordering::Acquire) == self.generation_seen
            && wall_clock() < self.refresh_at
    }
}

impl<S, B, RB> Service<Request<B>> for Least<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = LeastFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !self.serves(&request) || request.headers().contains_key(AUTHORIZATION) {
            return self.miss(request);
        }
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.header.clone());
        LeastFuture {
            future: self.inner.call(request),
            ticket: Some([1, 2, 3]),
        }
    }
}

impl<S> Least<S> {
    /// Where a middleware would fetch a token, or pass a request on as it is: out of line, and a
    /// second place the inner service is called from, as any middleware with a cold path has
    /// (the bench never comes here).
    #[inline(never)]
    fn miss<B, RB>(&mut self, request: Request<B>) -> LeastFuture<S::Future>
    where
        S: Service<Request<B>, Response = Response<RB>>,
    {
        LeastFuture {
            future: self.inner.call(request),
            ticket: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner future and a ticket (three words: `EntraAuth`'s is as big).
    pub struct LeastFuture<F> {
        #[pin]
        future: F,
        ticket: Option<[u64; 3]>,
    }
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

impl<F, RB, E> Future for LeastFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        if response.status() == StatusCode::UNAUTHORIZED
            || response
                .headers()
                .get(&GRPC_STATUS)
                .is_some_and(|v| v == "16")
        {
            // Where the provider would be told; kept from the optimiser.
            std::hint::black_box(this.ticket.take());
        }
        Poll::Ready(Ok(response))
    }
}

/// The coarse wall clock, read as the library reads it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn wall_clock() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn wall_clock() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
