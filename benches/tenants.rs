//! Many tenants: what a held tenant costs in memory, on one thread and after 2, 8 and 16 worker
//! threads served it, and what a cached request naming a tenant costs with 10,000 tenants held.
//!
//! One credential serves every tenant at once, without a network (the figures are the
//! library's); its tokens are 1,600 bytes, about what Entra issues. Memory is counted by the
//! global allocator (live bytes, so the threads' stacks, which it does not allocate, are not in
//! it), per tenant and beyond the token itself, for tenants from `for_tenant` and for providers
//! built by hand (a service that calls many APIs holds many providers). Each worker thread
//! serves every tenant, and stays alive while its memory is counted (a thread's copies go with
//! it); twice in turn (one pass after the other) and twice in a row (each tenant asked twice
//! before the next: a tenant that is hot for a moment).
//!
//! Time: ns per request through `EntraAuth` naming a tenant in the request's `Tenant`
//! extension, 10,000 tenants held, the tenants in turn and one hot tenant, beside the
//! static-header floor (one shared `HeaderValue` cloned into requests carrying the same
//! extension), one caller and one per core, in interleaved batches (medians), as
//! `benches/hot_path` measures. Callers in turn start at different tenants, as a service's
//! threads serve different customers. Also allocations per request beyond the floor's.
//!
//! Beside them, the least any middleware must do for the hot tenant's request
//! (`support/least.rs`: the checks written by hand for one tenant and one token): what the
//! floor leaves out, so that a figure over the floor can be read against what is possible on
//! the machine at hand.
//!
//! ```text
//! cargo bench --bench tenants            # full run
//! cargo bench --bench tenants -- --quick # fewer rounds
//! cargo bench --bench tenants -- --time   # the times only
//! ```

#[path = "support/interleaved.rs"]
mod interleaved;
#[path = "support/least.rs"]
mod least;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service, service_fn};
use tower_entra::{
    AccessToken, Credential, EntraAuthLayer, Tenant, TokenError, TokenProvider, TokenRequest,
};
use tower_http::set_header::SetRequestHeaderLayer;

/// How many tenants are held.
const TENANTS: usize = 10_000;
/// How long each token is, in bytes.
const TOKEN_LEN: usize = 1_600;
/// The worker threads of the memory figures.
const THREADS: [usize; 3] = [2, 8, 16];

/// Counts allocations made on this thread while counting is on, and the live bytes of the whole
/// process while tracking is on.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Off while requests are timed: one count every core writes would slow the arms that allocate.
static TRACKING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn track(bytes: isize) {
    if TRACKING.load(Ordering::Relaxed) {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: thread-local storage may be gone while a thread exits.
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
        track(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
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

fn live() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// One app registration allowed in every tenant, answering at once: the bench measures the
/// library, not Entra.
#[derive(Debug)]
struct AnyTenant;

impl Credential for AnyTenant {
    fn request_token<'a>(
        &'a self,
        _: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(async { AccessToken::new(token_string(), Duration::from_secs(3600)) })
    }

    fn check_tenant(&self, _: &str) -> Result<(), TokenError> {
        Ok(())
    }
}

fn token_string() -> String {
    let mut token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.".to_owned();
    while token.len() < TOKEN_LEN - 4 {
        token.push('x');
    }
    token.push_str(".sig");
    token
}

const SCOPE: &str = "https://graph.microsoft.com/.default";

fn tenant_name(i: usize) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

fn new_home() -> TokenProvider {
    TokenProvider::builder(AnyTenant, SCOPE)
        .max_tenants(2 * TENANTS)
        .build()
        .unwrap()
}

fn noop() -> impl Service<
    Request<()>,
    Response = Response<usize>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<usize>, Infallible>>,
> + Clone {
    service_fn(|req: Request<()>| std::future::ready(Ok(Response::new(req.headers().len()))))
}

/// A request as a service sends it, naming `tenant`.
fn request(tenant: Option<&Tenant>) -> Request<()> {
    let mut request = Request::new(());
    *request.uri_mut() = http::Uri::from_static("https://graph.microsoft.com/v1.0/organization");
    if let Some(tenant) = tenant {
        request.extensions_mut().insert(tenant.clone());
    }
    request
}

/// `poll_ready` then `call`, as a caller must; every stack here answers without waiting.
fn call<S: Service<Request<()>, Response = Response<usize>>>(
    svc: &mut S,
    tenant: Option<&Tenant>,
) -> usize
where
    S::Error: std::fmt::Debug,
{
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match svc.poll_ready(&mut cx) {
        std::task::Poll::Ready(Ok(())) => {}
        other => panic!("service not ready: {other:?}"),
    }
    *svc.call(request(tenant))
        .now_or_never()
        .expect("answers at once")
        .expect("no error")
        .body()
}

/// How each worker thread serves every tenant.
#[derive(Clone, Copy)]
enum Pass {
    /// Every tenant, then every tenant again.
    TwiceInTurn,
    /// Each tenant twice before the next.
    TwiceInARow,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::TwiceInTurn => "twice in turn",
            Pass::TwiceInARow => "twice in a row",
        }
    }

    fn order(self) -> Vec<usize> {
        match self {
            Pass::TwiceInTurn => (0..TENANTS).chain(0..TENANTS).collect(),
            Pass::TwiceInARow => (0..TENANTS).flat_map(|i| [i, i]).collect(),
        }
    }
}

/// Bytes per tenant beyond the token: of the tenants' providers once each got its token, then
/// with each count of worker threads alive after each served every tenant.
fn memory(serve: &(dyn Fn(usize) + Sync), pass: Pass, before: isize) -> Vec<f64> {
    let per_tenant = |bytes: isize| bytes as f64 / TENANTS as f64 - TOKEN_LEN as f64;
    let mut figures = vec![per_tenant(live() - before)];
    let order = pass.order();
    for threads in THREADS {
        let served = Barrier::new(threads + 1);
        let counted = Barrier::new(threads + 1);
        let grown = std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for &i in &order {
                        serve(i);
                    }
                    served.wait();
                    // Alive, with its copies, until counted.
                    counted.wait();
                });
            }
            served.wait();
            let grown = live() - before;
            counted.wait();
            grown
        });
        figures.push(per_tenant(grown));
    }
    figures
}

/// One way of sending requests: made once per thread (given the thread's index), then called
/// in a loop.
type Arm = Box<dyn Fn(usize) -> Box<dyn FnMut() -> usize + Send> + Send + Sync>;

/// Each thread's own `Tenant` values (a `Tenant` is shared by count, and requests of different
/// threads would not share one), from a different tenant on each thread.
fn tenants_from(thread: usize) -> (Vec<Tenant>, usize) {
    let tenants = (0..TENANTS).map(|i| Tenant::new(tenant_name(i))).collect();
    (tenants, thread * TENANTS / 2 % TENANTS)
}

fn arms(home: &TokenProvider, token: &AccessToken) -> Vec<(&'static str, Arm)> {
    let shared = token.header_value().clone();
    let floor = move || {
        SetRequestHeaderLayer::overriding(http::header::AUTHORIZATION, shared.clone()).layer(noop())
    };
    let floor_hot = floor.clone();
    let (entra, entra_hot) = (
        EntraAuthLayer::new(home.clone()),
        EntraAuthLayer::new(home.clone()),
    );
    let entra_home = EntraAuthLayer::new(home.clone());
    let least_header = token.header_value().clone();
    vec![
        (
            "static header, shared HeaderValue, in turn",
            Box::new(move |thread| {
                let mut s = floor();
                let (tenants, mut next) = tenants_from(thread);
                Box::new(move || {
                    next = (next + 1) % TENANTS;
                    call(&mut s, Some(&tenants[next]))
                })
            }),
        ),
        (
            "EntraAuth, 10,000 tenants in turn",
            Box::new(move |thread| {
                let mut s = entra.layer(noop());
                let (tenants, mut next) = tenants_from(thread);
                Box::new(move || {
                    next = (next + 1) % TENANTS;
                    call(&mut s, Some(&tenants[next]))
                })
            }),
        ),
        (
            "static header, shared HeaderValue, one tenant",
            Box::new(move |_| {
                let mut s = floor_hot();
                let tenant = Tenant::new(tenant_name(TENANTS / 3));
                Box::new(move || call(&mut s, Some(&tenant)))
            }),
        ),
        (
            "EntraAuth, one hot tenant (10,000 held)",
            Box::new(move |_| {
                let mut s = entra_hot.layer(noop());
                let tenant = Tenant::new(tenant_name(TENANTS / 3));
                Box::new(move || call(&mut s, Some(&tenant)))
            }),
        ),
        (
            "EntraAuth, no tenant (the home provider)",
            Box::new(move |_| {
                let mut s = entra_home.layer(noop());
                Box::new(move || call(&mut s, None))
            }),
        ),
        (
            "the least the hot tenant's checks cost",
            Box::new(move |_| {
                let tenant = Tenant::new(tenant_name(TENANTS / 3));
                let mut s = least::Least::new(
                    noop(),
                    least_header.clone(),
                    tenant.clone(),
                    "graph.microsoft.com",
                );
                Box::new(move || call(&mut s, Some(&tenant)))
            }),
        ),
    ]
}

fn print_memory(title: &str, rows: &[(Pass, Vec<f64>)]) {
    println!("{title}");
    print!("  {:<16} {:>10}", "each thread", "1 thread");
    for threads in THREADS {
        print!(" {:>12}", format!("{threads} threads"));
    }
    println!();
    for (pass, figures) in rows {
        print!("  {:<16}", pass.name());
        for f in figures {
            print!(" {f:>10.0} B");
        }
        println!();
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let time_only = std::env::args().any(|a| a == "--time");
    let (rounds, batch) = if quick { (5, 100_000) } else { (15, 300_000) };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The runtime stays, with the timers of the tokens' refresh points, as a service's does;
    // requests are sent from threads outside it, as in `benches/hot_path`.
    println!(
        "{TENANTS} tenants, tokens of {TOKEN_LEN} bytes; bytes per tenant beyond the token, counted by the allocator\n"
    );

    let home = new_home();
    let token = runtime.block_on(home.token()).unwrap();
    assert_eq!(token.header_value().len(), TOKEN_LEN + "Bearer ".len());
    if !time_only {
        memory_figures(&runtime);
    }
    // Time, with the tenants of `home` held.
    runtime
        .block_on(async {
            for i in 0..TENANTS {
                home.for_tenant(&tenant_name(i))?.token().await?;
            }
            Ok::<_, TokenError>(())
        })
        .unwrap();
    let arms = arms(&home, &token);
    println!("\nallocations per request, after warm-up (beyond the floor's):");
    let mut floor = 0;
    for (i, (name, arm)) in arms.iter().enumerate() {
        let mut send = arm(0);
        for _ in 0..2 * TENANTS {
            // The inner service answers with the request's header count: each arm set one.
            assert_eq!(
                send(),
                1,
                "{name}: a request went without its Authorization header"
            );
        }
        let n = allocations(|| {
            for _ in 0..TENANTS {
                black_box(send());
            }
        });
        if i == 0 {
            floor = n;
        }
        println!(
            "  {name:<46} {:>6.2}  ({:+.2})",
            n as f64 / TENANTS as f64,
            (n as f64 - floor as f64) / TENANTS as f64
        );
    }

    let names: Vec<&str> = arms.iter().map(|(name, _)| *name).collect();
    let table = interleaved::table(
        &names,
        |i, threads| interleaved::measure(&*arms[i].1, threads, 2 * TENANTS, batch),
        rounds,
        batch,
        cores,
        46,
    );
    let medians = &table.medians;
    // Differences between arms are the medians of each round's (both arms timed in the same
    // round), with their range: on a shared machine one round's difference can be far off.
    let over = |a, b| {
        let (median, low, high) = table.over(a, b);
        format!("{median:+.1} ns ({low:+.0}..{high:+.0})")
    };
    println!(
        "\nover the floor, 1 caller, medians of {rounds} rounds' differences (their range): tenants in turn {}, one hot tenant {} (budget: 100 ns)",
        over(1, 0),
        over(3, 2),
    );
    println!(
        "one hot tenant over the least its checks cost: {} (the least itself: {} over the floor)",
        over(3, 5),
        over(5, 2),
    );
    println!(
        "{cores} callers vs 1 (budget: 1.8x): tenants in turn {:.2}x, one hot tenant {:.2}x, floor {:.2}x / {:.2}x",
        medians[1].0 / medians[1].1,
        medians[3].0 / medians[3].1,
        medians[0].0 / medians[0].1,
        medians[2].0 / medians[2].1,
    );
}

/// Tenants from `for_tenant`, held by a home provider, then providers built by hand: bytes per
/// tenant.
fn memory_figures(runtime: &tokio::runtime::Runtime) {
    TRACKING.store(true, Ordering::SeqCst);
    let mut rows = Vec::new();
    for pass in [Pass::TwiceInTurn, Pass::TwiceInARow] {
        let names: Vec<Tenant> = (0..TENANTS).map(|i| Tenant::new(tenant_name(i))).collect();
        let tenants = new_home();
        let service = EntraAuthLayer::new(tenants.clone());
        let before = live();
        runtime
            .block_on(async {
                for i in 0..TENANTS {
                    tenants.for_tenant(&tenant_name(i))?.token().await?;
                }
                Ok::<_, TokenError>(())
            })
            .unwrap();
        assert_eq!(tenants.tenants_held(), TENANTS);
        let serve = |i: usize| {
            let mut s = service.layer(noop());
            assert_eq!(call(&mut s, Some(&names[i])), 1);
        };
        rows.push((pass, memory(&serve, pass, before)));
    }
    print_memory(
        "tenants of one provider (for_tenant), served through EntraAuth:",
        &rows,
    );

    // Providers built by hand, one per tenant.
    let mut rows = Vec::new();
    for pass in [Pass::TwiceInTurn, Pass::TwiceInARow] {
        let before = live();
        let providers: Vec<TokenProvider> = runtime.block_on(async {
            let mut providers = Vec::with_capacity(TENANTS);
            for _ in 0..TENANTS {
                let p = TokenProvider::new(AnyTenant, SCOPE).unwrap();
                p.token().await.unwrap();
                providers.push(p);
            }
            providers
        });
        let serve = |i: usize| {
            black_box(providers[i].token().now_or_never().unwrap().unwrap());
        };
        rows.push((pass, memory(&serve, pass, before)));
    }
    print_memory(
        "providers built by hand, one per tenant, served by TokenProvider::token():",
        &rows,
    );
    TRACKING.store(false, Ordering::SeqCst);
}
