//! A fleet simulation (not a timed test): 1,000 replicas of one service, each with its own
//! `TokenProvider` and HTTP client, start within 10 s against an Entra emulator that admits 20
//! token requests/s (429 with `Retry-After` beyond that), then run for three token lifetimes
//! while each replica serves a request every 2 s. It prints how long until every replica held a
//! token, the token requests sent, the peak and mean requests per second at the endpoint, and how
//! the refreshes of each lifetime spread, with the default refresh jitter and without.
//!
//! Time is tokio's paused clock, which jumps ahead whenever every task waits (the emulator's
//! sockets are on loopback, in the same runtime, so a request in flight is rarely idle time): a
//! simulated hour takes seconds. Seconds below are simulated.
//!
//! The shared-cache arm (`--features redis`) runs in real time instead, against a real
//! redis-server started on a free port: [`SHARED_REPLICAS`] replicas, each with its own provider
//! and Redis connection, start within 10 s against the same rate-limited endpoint, with tokens
//! of [`SHARED_LIFETIME`], for two lifetimes. It prints the token requests per lifetime (per
//! lifetime of the run, and per lifetime counted from the first request), which replica sent
//! each and why (a cold start, or a refresh of the token it held), how long until every replica
//! held a token (how long each waited from its own start, and how many were served within 2 s),
//! the failed caller requests, and the Redis commands per replica.
//!
//! The budget (issue 19): at most 2 token requests per token lifetime for the fleet. A 60 s
//! token is refreshed at half its life; with a shared cache the refresh jitter moves a refresh
//! later, so the fleet refreshes every 30 s (one refresh per half lifetime), where jitter before
//! the point had the earliest of 250 replicas refresh for all every 24 s ([3, 2] per lifetime).
//!
//! ```text
//! cargo bench --bench fleet
//! cargo bench --bench fleet --features redis              # and the shared-cache arm (needs redis-server)
//! cargo bench --bench fleet --features redis -- shared    # the shared-cache arm alone
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use entra_emulator::{App, Emulator, TokenRequestStats};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower_entra::{ClientSecretCredential, TokenProvider};

const REPLICAS: usize = 1000;
const START_WITHIN: Duration = Duration::from_secs(10);
const RATE_LIMIT: u32 = 20;
/// A token lifetime shorter than Entra's hour, so that three lifetimes are quick to simulate, but
/// long enough for the refresh policy of real tokens: refresh 5 min before expiry (at 900 s),
/// jitter up to 60 s earlier.
const LIFETIME: Duration = Duration::from_secs(1200);
const LIFETIMES: u32 = 3;
/// Each replica asks its provider for a token this often (a request every 2 s).
const REQUEST_EVERY: Duration = Duration::from_secs(2);

/// What one replica saw, in seconds since the fleet started.
#[derive(Default)]
struct Replica {
    first_token: Option<f64>,
    /// When it first got each later token.
    refreshes: Vec<f64>,
    failed_requests: u64,
}

struct Run {
    all_held_after: f64,
    stats: TokenRequestStats,
    replicas: Vec<Replica>,
    /// The wall-clock time the simulation took.
    wall: Duration,
}

fn main() {
    println!(
        "fleet: {REPLICAS} replicas start within {}s; token endpoint admits {RATE_LIMIT}/s (429 + Retry-After beyond); \
         token lifetime {}s, run for {LIFETIMES} lifetimes; each replica asks for a token every {}s",
        START_WITHIN.as_secs(),
        LIFETIME.as_secs(),
        REQUEST_EVERY.as_secs()
    );
    // `cargo bench --bench fleet --features redis -- shared`: the shared-cache arm alone.
    let shared_only = std::env::args().any(|a| a == "shared");
    for (name, jitter) in [("default jitter (60 s)", true), ("no jitter", false)] {
        if shared_only {
            break;
        }
        let run = simulate(jitter);
        report(name, &run);
    }
    #[cfg(feature = "redis")]
    shared::run();
    #[cfg(not(feature = "redis"))]
    println!("\nshared-cache arm: run with --features redis (needs redis-server)");
}

fn simulate(jitter: bool) -> Run {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let wall = std::time::Instant::now();
    let mut run = runtime.block_on(fleet(jitter));
    run.wall = wall.elapsed();
    run
}

async fn fleet(jitter: bool) -> Run {
    let emulator = Emulator::start().await;
    emulator.set_token_lifetime(LIFETIME);
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("fleet")
            .with_secret("fleet-secret")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    emulator.set_token_rate_limit(Some(RATE_LIMIT));
    emulator.reset_token_request_stats();

    let started = Instant::now();
    let holding = Arc::new(AtomicUsize::new(0));
    let all_hold = Arc::new(Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let replicas: Vec<_> = (0..REPLICAS)
        .map(|_| {
            let credential =
                ClientSecretCredential::builder(&app.tenant_id, &app.client_id, "fleet-secret")
                    .authority_host(emulator.authority_host())
                    // The paused clock jumps while a request is in flight; no request timeout fires.
                    .timeout(Duration::from_secs(24 * 3600))
                    .build()
                    .expect("credential");
            let mut builder = TokenProvider::builder(credential, Emulator::DEMO_API_SCOPE);
            if !jitter {
                builder = builder.refresh_jitter(Duration::ZERO);
            }
            let provider = builder.build().expect("provider");
            let (holding, all_hold, stop) = (holding.clone(), all_hold.clone(), stop.clone());
            let delay = START_WITHIN.mul_f64(fastrand::f64());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                replica(provider, started, holding, all_hold, stop).await
            })
        })
        .collect();

    all_hold.notified().await;
    let all_held_after = started.elapsed().as_secs_f64();
    tokio::time::sleep(LIFETIME * LIFETIMES).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::with_capacity(REPLICAS);
    for r in replicas {
        seen.push(r.await.expect("replica"));
    }
    Run {
        all_held_after,
        stats: emulator.token_request_stats(),
        replicas: seen,
        wall: Duration::ZERO,
    }
}

async fn replica(
    provider: TokenProvider,
    started: Instant,
    holding: Arc<AtomicUsize>,
    all_hold: Arc<Notify>,
    stop: Arc<AtomicBool>,
) -> Replica {
    let mut seen = Replica::default();
    let mut last = None;
    while !stop.load(Ordering::Relaxed) {
        match provider.token().await {
            Ok(token) => {
                let now = started.elapsed().as_secs_f64();
                match &last {
                    None => {
                        seen.first_token = Some(now);
                        if holding.fetch_add(1, Ordering::Relaxed) + 1 == REPLICAS {
                            all_hold.notify_one();
                        }
                    }
                    Some(previous) if !token.same_token(previous) => seen.refreshes.push(now),
                    Some(_) => {}
                }
                last = Some(token);
            }
            Err(_) => seen.failed_requests += 1,
        }
        tokio::time::sleep(REQUEST_EVERY).await;
    }
    seen
}

fn report(name: &str, run: &Run) {
    let s = &run.stats;
    let failed: u64 = run.replicas.iter().map(|r| r.failed_requests).sum();
    println!(
        "\n{name} (simulated in {:.1} s of wall-clock time)",
        run.wall.as_secs_f64()
    );
    println!(
        "  every replica held a token after {:.1} s (the median one after {:.1} s); {failed} replica requests failed meanwhile (callers got the error)",
        run.all_held_after,
        median(run.replicas.iter().filter_map(|r| r.first_token).collect())
    );
    println!(
        "  token requests: {} ({} admitted, {} answered 429); {:.2} per replica",
        s.total,
        s.admitted,
        s.throttled,
        s.total as f64 / REPLICAS as f64
    );
    println!(
        "  requests/s at the endpoint: peak {}, mean {:.2} (over {} s)",
        s.peak_per_second(),
        s.mean_per_second(),
        s.received_per_second.len(),
    );
    // Every wave of refreshes: a token is refreshed 5 min before it expires, so a wave comes
    // every lifetime less 5 min; the last may be cut short by the end of the run.
    for wave in 0.. {
        let mut at: Vec<f64> = run
            .replicas
            .iter()
            .filter_map(|r| r.refreshes.get(wave).copied())
            .collect();
        if at.is_empty() {
            break;
        }
        at.sort_by(f64::total_cmp);
        let pct = |p: f64| at[((at.len() - 1) as f64 * p).round() as usize];
        // The busiest second of this wave, at the endpoint.
        let (lo, hi) = (at[0].floor() as usize, at[at.len() - 1].ceil() as usize);
        let wave_peak = s
            .received_per_second
            .get(lo..=hi.min(s.received_per_second.len().saturating_sub(1)))
            .and_then(|w| w.iter().copied().max())
            .unwrap_or(0);
        println!(
            "  refresh {}: {} replicas, from {:.0} s to {:.0} s (p10-p90 over {:.0} s), busiest second {} requests",
            wave + 1,
            at.len(),
            at[0],
            at[at.len() - 1],
            pct(0.9) - pct(0.1),
            wave_peak
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(feature = "redis")]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

/// The shared-cache arm: real time, a real redis-server.
#[cfg(feature = "redis")]
mod shared {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use entra_emulator::{App, Emulator};
    use futures::future::BoxFuture;
    use tokio::sync::Notify;
    use tokio::time::Instant;
    use tower_entra::{
        AccessToken, CacheBinding, ClientSecretCredential, Credential, ProviderStats,
        RedisTokenCache, TokenError, TokenProvider, TokenRequest,
    };

    use super::redis_server;
    use super::{RATE_LIMIT, REQUEST_EVERY, START_WITHIN, median};

    /// Replicas, each with its own provider and Redis connection.
    pub(super) const SHARED_REPLICAS: usize = 250;
    /// Short tokens, so that two lifetimes take minutes of real time.
    pub(super) const SHARED_LIFETIME: Duration = Duration::from_secs(60);
    const SHARED_LIFETIMES: u32 = 2;

    /// One token request a replica's credential sent: seconds since the fleet started.
    struct Sent {
        at: f64,
        replica: usize,
    }

    /// A replica's credential, noting each token request it sends (the emulator counts them
    /// too; this says which replica sent each, and when).
    #[derive(Debug)]
    struct Noted {
        inner: ClientSecretCredential,
        replica: usize,
        started: Instant,
        #[allow(clippy::type_complexity)]
        sent: Arc<Mutex<Vec<(f64, usize)>>>,
    }

    impl Credential for Noted {
        fn request_token<'a>(
            &'a self,
            request: TokenRequest<'a>,
        ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
            let at = self.started.elapsed().as_secs_f64();
            self.sent.lock().expect("log").push((at, self.replica));
            self.inner.request_token(request)
        }

        fn identity(&self) -> Option<(&str, &str)> {
            self.inner.identity()
        }

        fn timeout(&self) -> Option<Duration> {
            self.inner.timeout()
        }

        fn cache_binding(&self) -> CacheBinding {
            self.inner.cache_binding()
        }
    }

    #[derive(Default)]
    struct Seen {
        /// Seconds since the fleet started that the replica started.
        started_at: f64,
        /// Seconds from the replica's own start to its first token.
        served_after: Option<f64>,
        /// When (since the fleet started) it first held each token.
        tokens_at: Vec<f64>,
        failed_requests: u64,
        stats: Option<ProviderStats>,
    }

    pub(super) fn run() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(fleet());
    }

    async fn fleet() {
        let redis = redis_server::RedisServer::start();
        let emulator = Emulator::start().await;
        emulator.set_token_lifetime(SHARED_LIFETIME);
        let app = emulator.register_app(
            &emulator.tenant_id(),
            App::new("fleet").with_secret("fleet-secret"),
        );
        emulator.set_token_rate_limit(Some(RATE_LIMIT));
        emulator.reset_token_request_stats();
        println!(
            "\nshared cache on Redis (real time): {SHARED_REPLICAS} replicas, each with its own provider and Redis \
             connection, start within {} s; token lifetime {} s, run for {SHARED_LIFETIMES} lifetimes",
            START_WITHIN.as_secs(),
            SHARED_LIFETIME.as_secs()
        );

        let started = Instant::now();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let holding = Arc::new(AtomicUsize::new(0));
        let all_hold = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let replicas: Vec<_> = (0..SHARED_REPLICAS)
            .map(|n| {
                let credential = Noted {
                    inner: ClientSecretCredential::builder(
                        &app.tenant_id,
                        &app.client_id,
                        "fleet-secret",
                    )
                    .authority_host(emulator.authority_host())
                    .build()
                    .expect("credential"),
                    replica: n,
                    started,
                    sent: sent.clone(),
                };
                let cache = RedisTokenCache::new(redis.url()).expect("cache");
                let provider = TokenProvider::builder(credential, Emulator::DEMO_API_SCOPE)
                    .shared_cache(cache)
                    .build()
                    .expect("provider");
                let (holding, all_hold, stop) = (holding.clone(), all_hold.clone(), stop.clone());
                let delay = START_WITHIN.mul_f64(fastrand::f64());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    replica(provider, started, holding, all_hold, stop).await
                })
            })
            .collect();

        all_hold.notified().await;
        let all_held_after = started.elapsed().as_secs_f64();
        tokio::time::sleep_until(started + SHARED_LIFETIME * SHARED_LIFETIMES).await;
        stop.store(true, Ordering::Relaxed);
        let mut seen = Vec::with_capacity(SHARED_REPLICAS);
        for r in replicas {
            seen.push(r.await.expect("replica"));
        }
        let stats = emulator.token_request_stats();
        let commands = redis.commands();

        let failed: u64 = seen.iter().map(|s| s.failed_requests).sum();
        let served: Vec<f64> = seen.iter().filter_map(|s| s.served_after).collect();
        let longest = served.iter().copied().fold(0.0, f64::max);
        let within_2s = served.iter().filter(|&&s| s <= 2.0).count();
        println!(
            "  every replica held a token after {all_held_after:.1} s; from its own start a replica waited {:.3} s \
             (median), {longest:.3} s (longest); {within_2s} of {SHARED_REPLICAS} served within 2 s of their start; \
             {failed} replica requests failed",
            median(served.clone())
        );
        let lifetime = SHARED_LIFETIME.as_secs() as usize;
        let per_window: Vec<u64> = stats
            .received_per_second
            .chunks(lifetime)
            .map(|seconds| seconds.iter().sum())
            .collect();
        let sent: Vec<Sent> = sent
            .lock()
            .expect("log")
            .iter()
            .map(|&(at, replica)| Sent { at, replica })
            .collect();
        // Per token lifetime counted from the first token request (each token's issue time).
        let first = sent.first().map_or(0.0, |s| s.at);
        let mut per_lifetime = vec![0u64; SHARED_LIFETIMES as usize + 1];
        for s in &sent {
            let k = ((s.at - first) / SHARED_LIFETIME.as_secs_f64()) as usize;
            let last = per_lifetime.len() - 1;
            per_lifetime[k.min(last)] += 1;
        }
        println!(
            "  token requests: {} ({} admitted, {} answered 429); per {lifetime} s of the run: {per_window:?}; \
             per token lifetime from the first request: {per_lifetime:?}",
            stats.total, stats.admitted, stats.throttled
        );
        for s in &sent {
            explain(s, &seen[s.replica]);
        }
        println!(
            "  Redis commands: {commands} ({:.1} per replica over {SHARED_LIFETIMES} lifetimes)",
            commands as f64 / SHARED_REPLICAS as f64
        );
    }

    /// Why replica `seen` sent the token request `sent`: it held no token yet (a cold start), or
    /// it was refreshing the one it held (since when).
    fn explain(sent: &Sent, seen: &Seen) {
        let held = seen.tokens_at.iter().rev().find(|&&at| at <= sent.at);
        let why = match held {
            None => format!(
                "cold start ({:.2} s after the replica started)",
                sent.at - seen.started_at
            ),
            Some(at) => format!("refresh of the token it held since {at:.2} s"),
        };
        let stats = seen.stats.as_ref();
        println!(
            "    {:7.2} s: replica {:3} (started at {:.2} s): {why}; its shared cache: {} hits, {} misses, {} lease waits, {} errors",
            sent.at,
            sent.replica,
            seen.started_at,
            stats.map_or(0, |s| s.shared_cache_hits),
            stats.map_or(0, |s| s.shared_cache_misses),
            stats.map_or(0, |s| s.shared_cache_lease_waits),
            stats.map_or(0, |s| s.shared_cache_errors),
        );
    }

    async fn replica(
        provider: TokenProvider,
        fleet_started: Instant,
        holding: Arc<AtomicUsize>,
        all_hold: Arc<Notify>,
        stop: Arc<AtomicBool>,
    ) -> Seen {
        let start = Instant::now();
        let mut seen = Seen {
            started_at: (start - fleet_started).as_secs_f64(),
            ..Seen::default()
        };
        let mut last: Option<AccessToken> = None;
        while !stop.load(Ordering::Relaxed) {
            match provider.token().await {
                Ok(token) => {
                    if seen.served_after.is_none() {
                        seen.served_after = Some(start.elapsed().as_secs_f64());
                        if holding.fetch_add(1, Ordering::Relaxed) + 1 == SHARED_REPLICAS {
                            all_hold.notify_one();
                        }
                    }
                    if !last.as_ref().is_some_and(|l| l.same_token(&token)) {
                        seen.tokens_at.push(fleet_started.elapsed().as_secs_f64());
                        last = Some(token);
                    }
                }
                Err(_) => seen.failed_requests += 1,
            }
            tokio::time::sleep(REQUEST_EVERY).await;
        }
        seen.stats = Some(provider.stats());
        seen
    }
}
