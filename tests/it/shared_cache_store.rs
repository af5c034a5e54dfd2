//! `RedisTokenCache` as a store, against a real redis-server started per test: values and their
//! time to live, the lease protocol, and Redis failing (down, restarted, refusing the password).

use std::time::Duration;

use tower_entra::{RedisTokenCache, SharedTokenCache, TokenProvider};

use crate::support::redis_server::RedisServer;

const TTL: Duration = Duration::from_secs(60);

#[tokio::test]
async fn values_live_under_the_prefix_until_their_time_to_live() {
    let server = RedisServer::start();
    let cache = RedisTokenCache::builder(server.url())
        .key_prefix("staging:")
        .build()
        .unwrap();
    assert_eq!(cache.get("entry").await.unwrap(), None);
    cache.put("entry", b"sealed bytes", TTL).await.unwrap();
    assert_eq!(
        cache.get("entry").await.unwrap().as_deref(),
        Some(&b"sealed bytes"[..])
    );
    assert_eq!(server.keys(), ["staging:entry"]);
    // -1: no time to live (the value would outlive its token).
    let pttl: i64 = server
        .cli(&["PTTL", "staging:entry"])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");
    // Replaced, not appended.
    cache.put("entry", b"newer", TTL).await.unwrap();
    assert_eq!(
        cache.get("entry").await.unwrap().as_deref(),
        Some(&b"newer"[..])
    );
}

#[tokio::test]
async fn a_lease_has_one_holder_and_only_that_holder_renews_or_releases_it() {
    let server = RedisServer::start();
    let cache = RedisTokenCache::new(server.url()).unwrap();
    let ttl = Duration::from_secs(30);
    assert!(cache.acquire_lease("l", "holder-a", ttl).await.unwrap());
    assert!(!cache.acquire_lease("l", "holder-b", ttl).await.unwrap());

    // Another holder neither renews nor releases it (compare-and-set, compare-and-delete).
    assert!(!cache.renew_lease("l", "holder-b", ttl).await.unwrap());
    assert!(!cache.release_lease("l", "holder-b").await.unwrap());
    assert_eq!(server.cli(&["GET", "tower-entra:l"]).trim(), "holder-a");

    // Its holder renews it (the time to live starts again) and releases it.
    server.cli(&["PEXPIRE", "tower-entra:l", "1000"]);
    assert!(cache.renew_lease("l", "holder-a", ttl).await.unwrap());
    let pttl: u64 = server
        .cli(&["PTTL", "tower-entra:l"])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 1000, "renewed PTTL {pttl}");
    assert!(cache.release_lease("l", "holder-a").await.unwrap());
    assert!(server.keys().is_empty());
    assert!(cache.acquire_lease("l", "holder-b", ttl).await.unwrap());
}

#[tokio::test]
async fn redis_down_is_skipped_after_failures_and_used_again_once_back() {
    let mut server = RedisServer::start();
    let cache = RedisTokenCache::builder(server.url())
        .call_timeout(Duration::from_millis(300))
        .breaker(2, Duration::from_millis(500))
        .build()
        .unwrap();
    cache.put("entry", b"v", TTL).await.unwrap();
    assert!(!cache.is_skipping());

    server.stop();
    for _ in 0..2 {
        let e = cache.get("entry").await.unwrap_err();
        assert!(!e.message().contains("circuit breaker"), "{e}");
    }
    assert!(cache.is_skipping());
    let e = cache.get("entry").await.unwrap_err();
    assert!(e.message().contains("circuit breaker"), "{e}");

    // Back (empty: no persistence): after the breaker's pause, one trial call and it is used
    // again, on a new connection.
    server.restart();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut answer = cache.get("entry").await;
    // The first call after a restart may meet the dead connection once; the manager reconnects.
    if answer.is_err() {
        tokio::time::sleep(Duration::from_millis(600)).await;
        answer = cache.get("entry").await;
    }
    assert_eq!(answer.unwrap(), None);
    assert!(!cache.is_skipping());
    cache.put("entry", b"v2", TTL).await.unwrap();
    assert_eq!(server.keys(), ["tower-entra:entry"]);
}

#[tokio::test]
async fn a_refused_password_is_an_error_that_never_shows_the_password() {
    let server = RedisServer::start_with(&["--requirepass", "right-Pw-4242"]);
    let wrong = RedisTokenCache::new(server.url_with(":wrong-Pw-1717@")).unwrap();
    let e = wrong.get("entry").await.unwrap_err();
    let shown = format!("{e} {e:?} {wrong:?}");
    assert!(!shown.contains("wrong-Pw-1717"), "{shown}");
    assert!(shown.to_ascii_lowercase().contains("pass"), "{shown}");

    let right = RedisTokenCache::new(server.url_with(":right-Pw-4242@")).unwrap();
    right.put("entry", b"v", TTL).await.unwrap();
    assert_eq!(
        right.get("entry").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// Hands out `tokens` in turn (the last one again once they run out), each living 8 s.
#[derive(Debug)]
struct Issued {
    tokens: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
}

impl tower_entra::Credential for Issued {
    fn request_token<'a>(
        &'a self,
        _request: tower_entra::TokenRequest<'a>,
    ) -> futures::future::BoxFuture<'a, Result<tower_entra::AccessToken, tower_entra::TokenError>>
    {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let token = &self.tokens[n.min(self.tokens.len() - 1)];
        Box::pin(async move { tower_entra::AccessToken::new(token, Duration::from_secs(8)) })
    }
}

/// A JWT (unsigned: Redis only compares it) for the principal `oid`.
fn redis_token(oid: &str, n: u32) -> String {
    use base64::Engine;
    let claims = format!(r#"{{"aud":"https://redis.azure.com","oid":"{oid}","n":{n}}}"#);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
    format!("eyJhbGciOiJub25lIn0.{payload}.c2ln")
}

/// The cache's own connection in `CLIENT LIST` (user `oid`, not redis-cli's): its id and last
/// command.
fn replica_connection(server: &RedisServer, oid: &str) -> Option<(String, String)> {
    let list = server.cli(&["CLIENT", "LIST"]);
    let line = list
        .lines()
        .find(|l| l.contains(&format!("user={oid}")) && !l.contains("cmd=client|list"))?;
    let field = |name: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    Some((field("id")?, field("cmd")?))
}

#[tokio::test]
async fn entra_auth_signs_in_with_the_token_and_again_on_the_live_connection_with_each_new_one() {
    let oid = "5f1e0a3c-0000-4000-8000-00000000beef";
    let tokens: Vec<String> = (1..=3).map(|n| redis_token(oid, n)).collect();
    let mut args = vec!["--user", oid, "on"];
    let passwords: Vec<String> = tokens.iter().map(|t| format!(">{t}")).collect();
    args.extend(passwords.iter().map(String::as_str));
    args.extend(["~*", "&*", "+@all", "--user", "default", "off"]);
    let server = RedisServer::start_with(&args).cli_as(oid, &tokens[0]);

    let credential = Issued {
        tokens: tokens.clone(),
        next: Default::default(),
    };
    let provider = TokenProvider::new(credential, "https://redis.azure.com/.default").unwrap();
    let cache = RedisTokenCache::builder(server.url())
        .entra_auth(provider.clone())
        .build()
        .unwrap();
    // The default user is off: this works only if the connection signed in as the principal.
    cache.put("entry", b"v", TTL).await.unwrap();
    // redis-rs signs in again at once with the token it connected with (its re-authentication
    // task starts with the current credentials); after that the connection's last command is
    // ours.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cache.get("entry").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let (id, cmd) = replica_connection(&server, oid).expect("the cache's connection");
    assert_eq!(cmd, "get");

    // The provider refreshes its 8 s token at about 4 s; the live connection signs in again.
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no AUTH on the live connection after the token changed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = provider.token().await.unwrap();
        let connection = replica_connection(&server, oid);
        if now.secret() != tokens[0] && connection.as_ref().is_some_and(|(_, cmd)| cmd == "auth") {
            break;
        }
    }
    let (same_id, _) = replica_connection(&server, oid).unwrap();
    assert_eq!(
        same_id, id,
        "signed in again on the same connection, not a new one"
    );
    assert_eq!(
        cache.get("entry").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}
