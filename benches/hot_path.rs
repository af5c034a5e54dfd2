//! The cached path, per request: `EntraAuth` and `TokenProvider::token()` holding a cached
//! token, next to the floors a middleware cannot beat — the same no-op service with no header,
//! with a `&'static str` header, and with one shared `HeaderValue` cloned per request (what
//! tower-http's `SetRequestHeader` does) — with one caller, and with one caller per core on OS
//! threads; and `token()` over [`PROVIDERS_IN_TURN`] providers asked in turn, as a multi-tenant service does. Also
//! counts heap allocations per cached request beyond the request's own.
//!
//! Not criterion: the arms are measured in batches that alternate (which arm goes first rotates
//! too), so that a noisy, shared machine slows all of them alike; the medians of the batches and
//! their ratios print at the end. The credential is local, so the figures are the middleware's.
//!
//! ```text
//! cargo bench --bench hot_path            # full run
//! cargo bench --bench hot_path -- --quick # fewer rounds
//! ```

#[path = "support/interleaved.rs"]
mod interleaved;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service, service_fn};
use tower_entra::{
    AccessToken, Credential, EntraAuthLayer, TokenError, TokenProvider, TokenRequest,
};
use tower_http::set_header::SetRequestHeaderLayer;

/// Counts allocations made on this thread while counting is on, and nothing else.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: thread-local storage may be gone while a thread exits.
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

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
    // A static URI: building the request allocates nothing, so a count above 0 is the arm's own.
    let mut request = Request::new(());
    *request.uri_mut() = http::Uri::from_static("https://graph.microsoft.com/v1.0/organization");
    request
}

/// `poll_ready` then `call`, as a caller must; every stack here answers without waiting.
fn call<S: Service<Request<()>, Response = Response<usize>>>(svc: &mut S) -> usize
where
    S::Error: std::fmt::Debug,
{
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match svc.poll_ready(&mut cx) {
        std::task::Poll::Ready(Ok(())) => {}
        other => panic!("service not ready: {other:?}"),
    }
    *svc.call(request())
        .now_or_never()
        .expect("answers at once")
        .expect("no error")
        .body()
}

/// One way of sending a request: made once per thread, then called in a loop.
type Arm = Box<dyn Fn() -> Box<dyn FnMut() -> usize + Send> + Send + Sync>;

/// How many providers the last arm asks in turn on each thread: a multi-tenant service holds one
/// per tenant and API.
const PROVIDERS_IN_TURN: usize = 16;

fn arms(
    provider: &TokenProvider,
    token: &AccessToken,
    in_turn: &[TokenProvider],
) -> Vec<(&'static str, Arm)> {
    fn noop() -> impl Service<
        Request<()>,
        Response = Response<usize>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<usize>, Infallible>>,
    > + Clone {
        service_fn(|req: Request<()>| std::future::ready(Ok(Response::new(req.headers().len()))))
    }
    let shared = token.header_value().clone();
    let entra = EntraAuthLayer::new(provider.clone());
    let provider = provider.clone();
    let in_turn = in_turn.to_vec();
    vec![
        (
            "no Authorization header",
            Box::new(|| {
                let mut s = noop();
                Box::new(move || call(&mut s))
            }),
        ),
        (
            "static header, &'static str",
            Box::new(|| {
                let mut s = SetRequestHeaderLayer::overriding(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_static("Bearer a-static-token-of-no-consequence"),
                )
                .layer(noop());
                Box::new(move || call(&mut s))
            }),
        ),
        (
            "static header, shared HeaderValue cloned",
            Box::new(move || {
                let mut s =
                    SetRequestHeaderLayer::overriding(http::header::AUTHORIZATION, shared.clone())
                        .layer(noop());
                Box::new(move || call(&mut s))
            }),
        ),
        (
            "TokenProvider::token()",
            Box::new(move || {
                let p = provider.clone();
                Box::new(move || {
                    let token = p
                        .token()
                        .now_or_never()
                        .expect("cached: answers at once")
                        .expect("a token");
                    black_box(&token);
                    1
                })
            }),
        ),
        (
            "EntraAuth<S> (poll_ready + call)",
            Box::new(move || {
                let mut s = entra.layer(noop());
                Box::new(move || call(&mut s))
            }),
        ),
        (
            // Leaked once: the arms' names are static, and this one says how many providers.
            Box::leak(
                format!("TokenProvider::token(), {PROVIDERS_IN_TURN} providers").into_boxed_str(),
            ),
            Box::new(move || {
                let providers = in_turn.clone();
                let mut next = 0;
                Box::new(move || {
                    next = (next + 1) % providers.len();
                    let token = providers[next]
                        .token()
                        .now_or_never()
                        .expect("cached: answers at once")
                        .expect("a token");
                    black_box(&token);
                    1
                })
            }),
        ),
        // What the cached path's mechanisms spare it, one read each (see the provider's module
        // docs): the precise clock the fresh bit spares, the precise wall clock that the coarse
        // one stands in for, and the coarse one.
        (
            "  one Instant::now() (the fresh bit spares it)",
            Box::new(|| {
                Box::new(|| {
                    black_box(Instant::now());
                    1
                })
            }),
        ),
        (
            "  one SystemTime::now()",
            Box::new(|| {
                Box::new(|| {
                    black_box(SystemTime::now());
                    1
                })
            }),
        ),
        #[cfg(target_os = "linux")]
        (
            "  one coarse wall clock read",
            Box::new(|| {
                Box::new(|| {
                    black_box(rustix::time::clock_gettime(
                        rustix::time::ClockId::RealtimeCoarse,
                    ));
                    1
                })
            }),
        ),
    ]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, batch) = if quick { (5, 100_000) } else { (15, 300_000) };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let provider = TokenProvider::new(LocalToken, "https://graph.microsoft.com/.default").unwrap();
    let token = runtime.block_on(provider.token()).unwrap();
    let in_turn: Vec<TokenProvider> = (0..PROVIDERS_IN_TURN)
        .map(|_| {
            let p = TokenProvider::new(LocalToken, "https://graph.microsoft.com/.default").unwrap();
            runtime.block_on(p.token()).unwrap();
            p
        })
        .collect();
    // The runtime stays: it keeps the timer of the token's refresh point, as a service's runtime
    // does. Requests are measured on threads outside its context all the same: the
    // dev-dependency on tokio's `test-util` (for the paused clock in tests) makes
    // `tokio::time::Instant::now()` consult the runtime's mockable clock inside a runtime, a cost
    // production builds do not have.

    let arms = arms(&provider, &token, &in_turn);
    {
        let mut entra = (arms[4].1)();
        assert_eq!(entra(), 1, "the token was not attached");
    }

    // Allocations per request. Inserting any header into a request's empty header map
    // allocates the map (2), so the static-header arms are the request's own for arms that set
    // one; the no-header arm is the request's own for `token()`, which sets none.
    println!("allocations per request, after warm-up:");
    let mut own = [0u64; 2];
    for (i, (name, arm)) in arms.iter().enumerate() {
        let mut send = arm();
        for _ in 0..100 {
            send();
        }
        let n = allocations(|| {
            for _ in 0..1_000 {
                black_box(send());
            }
        });
        let per = n as f64 / 1_000.0;
        match i {
            0 => own[0] = n,
            1 => own[1] = n,
            _ => {}
        }
        // token() sets no header: its floor is the no-header arm's.
        let floor = if i >= 3 && i != 4 {
            own[0]
        } else {
            own[i.min(1)]
        };
        println!(
            "  {name:<42} {per:>6.2}  (beyond the request's own: {:.2})",
            (n as f64 - floor as f64) / 1_000.0
        );
    }

    let names: Vec<&str> = arms.iter().map(|(name, _)| *name).collect();
    let table = interleaved::table(
        &names,
        |i, threads| interleaved::measure(&|_| (arms[i].1)(), threads, 1_000, batch),
        rounds,
        batch,
        cores,
        42,
    );
    let medians = &table.medians;
    let (over, low, high) = table.over(4, 2);
    println!(
        "\nEntraAuth over the shared-HeaderValue floor, 1 caller: {over:+.1} ns (budget: 50 ns; the median of {rounds} rounds' differences, which ranged {low:+.1} to {high:+.1})"
    );
    println!(
        "throughput with {cores} callers vs 1: TokenProvider::token() {:.2}x, EntraAuth {:.2}x, no header {:.2}x (goal: 1.8x on 2 cores)",
        medians[3].0 / medians[3].1,
        medians[4].0 / medians[4].1,
        medians[0].0 / medians[0].1,
    );
}
