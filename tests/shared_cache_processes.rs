//! Forty OS processes (this binary again, with `--replica`) share one redis-server and one
//! Entra emulator: all start at once, each with its own provider and Redis connection, and the
//! fleet sends at most 2 token requests, every replica served. Then, with Redis stopped, new
//! processes get their tokens straight from the emulator.
//!
//! Its own binary with `harness = false`: the parent and the replicas are processes.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use entra_emulator::{App, Emulator};
use tower_entra::{ClientSecretCredential, RedisTokenCache, TokenProvider};

#[path = "support/redis_server.rs"]
mod redis_server;

const REPLICAS: usize = 40;
const SECRET: &str = "processes-Secret~never-in-redis";

fn main() {
    if std::env::args().any(|a| a == "--replica") {
        replica();
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(parent());
    println!("test shared_cache_processes ... ok");
}

/// One replica: a token through the shared cache, printed as `ok <fingerprint> <ms>`.
fn replica() {
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let credential =
            ClientSecretCredential::builder(env("TENANT"), env("CLIENT"), env("SECRET"))
                .authority_host(env("AUTHORITY"))
                .build()
                .unwrap();
        let cache = RedisTokenCache::builder(env("REDIS_URL"))
            .call_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let provider = TokenProvider::builder(credential, Emulator::DEMO_API_SCOPE)
            .shared_cache(cache)
            .build()
            .unwrap();
        match provider.token().await {
            Ok(token) => {
                let mut hasher = DefaultHasher::new();
                token.secret().hash(&mut hasher);
                println!(
                    "ok {:016x} {}",
                    hasher.finish(),
                    started.elapsed().as_millis()
                );
            }
            Err(e) => println!("failed {e}"),
        }
    });
}

async fn parent() {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("processes").with_secret(SECRET),
    );
    let mut redis = redis_server::RedisServer::start();
    let exe = std::env::current_exe().expect("this test's path");
    let spawn = |redis_url: &str| {
        Command::new(&exe)
            .arg("--replica")
            .env("TENANT", &app.tenant_id)
            .env("CLIENT", &app.client_id)
            .env("SECRET", SECRET)
            .env("AUTHORITY", emulator.authority_host())
            .env("REDIS_URL", redis_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a replica process")
    };
    let answer = |child: std::process::Child| {
        let out = child.wait_with_output().expect("the replica's output");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };

    // All at once.
    let children: Vec<_> = (0..REPLICAS).map(|_| spawn(&redis.url())).collect();
    let answers =
        tokio::task::spawn_blocking(move || children.into_iter().map(answer).collect::<Vec<_>>())
            .await
            .unwrap();
    let failed: Vec<_> = answers.iter().filter(|a| !a.starts_with("ok ")).collect();
    assert!(failed.is_empty(), "replicas failed: {failed:?}");
    let tokens: BTreeSet<&str> = answers.iter().filter_map(|a| a.split(' ').nth(1)).collect();
    let requests = emulator.token_requests();
    println!(
        "{REPLICAS} processes at once: {requests} token request(s), {} distinct token(s)",
        tokens.len()
    );
    assert!(
        requests <= 2,
        "{requests} token requests for {REPLICAS} processes"
    );
    assert!(tokens.len() <= requests);
    let dump = redis.dump();
    assert!(
        !dump.contains(&app.client_id) && !dump.contains(&app.tenant_id),
        "{dump}"
    );

    // Redis stopped: each new process asks the emulator itself, within a few seconds.
    redis.stop();
    for n in 0..3 {
        let url = redis.url();
        let answer = tokio::task::spawn_blocking({
            let child = spawn(&url);
            move || answer(child)
        })
        .await
        .unwrap();
        let ms: u64 = answer
            .strip_prefix("ok ")
            .and_then(|rest| rest.split(' ').nth(1))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("replica {n} without Redis: {answer}"));
        println!("replica {n} with Redis stopped: token in {ms} ms");
        assert!(ms < 5_000, "replica {n} took {ms} ms without Redis");
    }
    assert_eq!(emulator.token_requests(), requests + 3);
}
