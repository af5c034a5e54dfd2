//! The cost per request of `EntraAuth` holding a cached token, next to the same no-op stack with
//! a static `Authorization` header (tower-http's `SetRequestHeader`) and with no header at all,
//! measured in one run. The credential is local, so the numbers are the middleware's alone.
//!
//! ```text
//! cargo bench --bench hot_path
//! ```

use std::convert::Infallible;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service, service_fn};
use tower_entra::{
    AccessToken, Credential, EntraAuthLayer, TokenError, TokenProvider, TokenRequest,
};
use tower_http::set_header::SetRequestHeaderLayer;

/// A credential that never goes to the network: the bench measures the middleware, not Entra.
#[derive(Debug)]
struct LocalToken;

impl Credential for LocalToken {
    fn request_token<'a>(
        &'a self,
        _: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(async {
            AccessToken::new(
                "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhcGkifQ.c2ln".repeat(8),
                Duration::from_secs(3600),
            )
        })
    }
}

fn request() -> Request<()> {
    Request::get("https://graph.microsoft.com/v1.0/organization")
        .body(())
        .unwrap()
}

/// Calls the service once; every stack here answers without waiting.
fn call<S: Service<Request<()>>>(svc: &mut S) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    svc.call(request()).now_or_never().unwrap().unwrap()
}

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let provider = TokenProvider::new(LocalToken, "https://graph.microsoft.com/.default").unwrap();
    let token = runtime.block_on(provider.token()).unwrap();
    // Measure outside the runtime context: the dev-dependency on tokio's `test-util` (for the
    // paused clock in tests) makes `tokio::time::Instant::now()` consult the runtime's mockable
    // clock inside a runtime, a cost production builds do not have.
    drop(runtime);

    let noop = service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(Response::new(req.headers().len()))
    });

    let mut group = c.benchmark_group("per_request");
    let mut bare = noop;
    group.bench_function("no_header", |b| b.iter(|| call(&mut bare)));

    let mut static_header = SetRequestHeaderLayer::overriding(
        http::header::AUTHORIZATION,
        token.header_value().clone(),
    )
    .layer(noop);
    group.bench_function("static_header", |b| b.iter(|| call(&mut static_header)));

    let mut entra = EntraAuthLayer::new(provider.clone()).layer(noop);
    assert_eq!(*call(&mut entra).body(), 1, "the token was not attached");
    group.bench_function("entra_auth_cached", |b| b.iter(|| call(&mut entra)));
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
