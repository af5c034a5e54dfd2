//! Providers sharing tokens through Redis: a real redis-server per test and the Entra emulator,
//! in real time (the paused clock would fire every Redis time-out at once). Each test checks
//! that Redis was used (the emulator's request count, the keys in Redis, the provider's stats).

use std::time::{Duration, Instant};

use entra_emulator::{App, Emulator, RegisteredApp};
use tower_entra::{
    ClientSecretCredential, EncryptionKey, RedisTokenCache, TokenErrorKind, TokenProvider,
};

use crate::support::redis_server::RedisServer;

const SECRET: &str = "shared-cache-Secret~never-in-redis";
const SCOPE: &str = Emulator::DEMO_API_SCOPE;

struct Fleet {
    emulator: Emulator,
    app: RegisteredApp,
    redis: RedisServer,
}

impl Fleet {
    async fn start() -> Fleet {
        let emulator = Emulator::start().await;
        let app = emulator.register_app(
            &emulator.tenant_id(),
            App::new("shared-cache").with_secret(SECRET),
        );
        Fleet {
            emulator,
            app,
            redis: RedisServer::start(),
        }
    }

    fn credential(&self, secret: &str) -> ClientSecretCredential {
        ClientSecretCredential::builder(&self.app.tenant_id, &self.app.client_id, secret)
            .authority_host(self.emulator.authority_host())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn cache(&self) -> RedisTokenCache {
        RedisTokenCache::builder(self.redis.url())
            .call_timeout(Duration::from_millis(300))
            .breaker(2, Duration::from_millis(500))
            .build()
            .unwrap()
    }

    /// A replica: its own credential, provider and Redis connection.
    fn replica(&self, scope: &str) -> TokenProvider {
        TokenProvider::builder(self.credential(SECRET), scope)
            .shared_cache(self.cache())
            .build()
            .unwrap()
    }

    /// The entry's name in Redis (the one key that is not a lease).
    fn entry_keys(&self) -> Vec<String> {
        let mut keys = self.redis.keys();
        keys.retain(|k| !k.ends_with(":lease"));
        keys
    }
}

#[tokio::test]
async fn providers_share_one_token_and_redis_holds_nothing_readable() {
    let fleet = Fleet::start().await;
    let replicas: Vec<TokenProvider> = (0..12).map(|_| fleet.replica(SCOPE)).collect();
    let tokens = futures::future::join_all(
        replicas
            .iter()
            .map(|p| async move { p.token().await.unwrap() }),
    )
    .await;

    assert_eq!(
        fleet.emulator.token_requests(),
        1,
        "one token request for the fleet"
    );
    assert!(tokens.iter().all(|t| t.same_token(&tokens[0])));
    let stats: Vec<_> = replicas.iter().map(TokenProvider::stats).collect();
    assert_eq!(stats.iter().map(|s| s.fetches).sum::<u64>(), 1);
    assert_eq!(stats.iter().map(|s| s.shared_cache_hits).sum::<u64>(), 11);

    // What an operator with access to Redis sees: an opaque name, sealed bytes.
    let dump = fleet.redis.dump();
    assert_eq!(fleet.entry_keys().len(), 1, "{dump}");
    let token = tokens[0].secret();
    for clear in [
        &token[..20],
        &token[token.len() - 20..],
        fleet.app.client_id.as_str(),
        fleet.app.tenant_id.as_str(),
        "entra-emulator-demo",
        SECRET,
    ] {
        assert!(!dump.contains(clear), "Redis shows {clear:?}: {dump}");
    }
    // The entry expires with the token.
    let pttl: u64 = fleet
        .redis
        .cli(&["PTTL", &fleet.entry_keys()[0]])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= 3_600_000, "PTTL {pttl}");
}

#[tokio::test]
async fn a_value_moved_under_another_name_or_sealed_by_another_credential_is_ignored_and_overwritten()
 {
    let fleet = Fleet::start().await;
    // Another app's value, sealed under its own secret.
    let other = fleet.emulator.register_app(
        &fleet.emulator.tenant_id(),
        App::new("other").with_secret("other-Secret-9"),
    );
    let stranger = TokenProvider::builder(
        ClientSecretCredential::builder(&other.tenant_id, &other.client_id, "other-Secret-9")
            .authority_host(fleet.emulator.authority_host())
            .build()
            .unwrap(),
        SCOPE,
    )
    .shared_cache(fleet.cache())
    .build()
    .unwrap();
    stranger.token().await.unwrap();
    let stranger_key = fleet.entry_keys().remove(0);

    // Our entry, then the stranger's value copied over it.
    fleet.replica(SCOPE).token().await.unwrap();
    let ours = fleet
        .entry_keys()
        .into_iter()
        .find(|k| *k != stranger_key)
        .unwrap();
    fleet.redis.cli(&["COPY", &stranger_key, &ours, "REPLACE"]);
    let requests = fleet.emulator.token_requests();

    let replica = fleet.replica(SCOPE);
    replica.token().await.unwrap();
    assert_eq!(
        fleet.emulator.token_requests(),
        requests + 1,
        "the foreign value was taken"
    );
    assert_eq!(replica.stats().shared_cache_hits, 0);
    // Overwritten with our own: the next replica takes it.
    let next = fleet.replica(SCOPE);
    next.token().await.unwrap();
    assert_eq!(fleet.emulator.token_requests(), requests + 1);
    assert_eq!(next.stats().shared_cache_hits, 1);

    // Our own value moved under the name of another entry (the same scope with client
    // capabilities: a token for the same audience, so only the seal can tell) does not open
    // there: the name is the seal's associated data.
    let capable = || {
        TokenProvider::builder(fleet.credential(SECRET), SCOPE)
            .client_capabilities(["cp1"])
            .shared_cache(fleet.cache())
            .build()
            .unwrap()
    };
    capable().token().await.unwrap();
    let capable_key = fleet
        .entry_keys()
        .into_iter()
        .find(|k| *k != stranger_key && *k != ours)
        .unwrap();
    fleet.redis.cli(&["COPY", &ours, &capable_key, "REPLACE"]);
    let requests = fleet.emulator.token_requests();
    let moved_to = capable();
    moved_to.token().await.unwrap();
    assert_eq!(
        fleet.emulator.token_requests(),
        requests + 1,
        "a moved value was taken"
    );
    assert_eq!(moved_to.stats().shared_cache_hits, 0);
}

#[tokio::test]
async fn a_value_past_its_refresh_point_or_refused_by_the_api_is_not_taken() {
    let fleet = Fleet::start().await;
    // 4 s tokens: refreshed at 2 s (half their life).
    fleet.emulator.set_token_lifetime(Duration::from_secs(4));
    let first = fleet.replica(SCOPE).token().await.unwrap();

    // A refused token never comes back from the cache.
    let refused_by_api = fleet.replica(SCOPE);
    let read = refused_by_api.token().await.unwrap();
    assert!(read.same_token(&first));
    refused_by_api.invalidate(&read);
    let after_refusal = refused_by_api.token().await.unwrap();
    assert!(
        !after_refusal.same_token(&first),
        "the refused token came back"
    );
    assert_eq!(fleet.emulator.token_requests(), 2);

    // The newest value (after_refusal's) is past its refresh point 2 s later: not taken.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = fleet.replica(SCOPE);
    let token = late.token().await.unwrap();
    assert!(!token.same_token(&after_refusal));
    assert_eq!(fleet.emulator.token_requests(), 3);
    assert_eq!(late.stats().shared_cache_hits, 0);
}

#[tokio::test]
async fn claims_fetches_never_read_the_shared_cache() {
    let fleet = Fleet::start().await;
    let replica = fleet.replica(SCOPE);
    replica.token().await.unwrap();
    let other = fleet.replica(SCOPE);
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#;
    other.token_with_claims(claims).await.unwrap();
    assert_eq!(fleet.emulator.token_requests(), 2);
    assert_eq!(
        other.stats().shared_cache_hits + other.stats().shared_cache_misses,
        0
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_run_costs_no_token() {
    let mut fleet = Fleet::start().await;
    fleet.replica(SCOPE).token().await.unwrap();
    fleet.redis.stop();

    // Redis down: each new replica gets its token straight from Entra.
    for n in 0..3 {
        let replica = fleet.replica(SCOPE);
        let token = replica.token().await;
        assert!(token.is_ok(), "replica {n} without Redis: {token:?}");
        assert!(replica.stats().shared_cache_errors > 0);
    }
    assert_eq!(fleet.emulator.token_requests(), 4);

    // Back, empty: used again.
    fleet.redis.restart();
    fleet.replica(SCOPE).token().await.unwrap();
    let later = fleet.replica(SCOPE);
    later.token().await.unwrap();
    assert_eq!(fleet.emulator.token_requests(), 5);
    assert_eq!(later.stats().shared_cache_hits, 1);
}

#[tokio::test]
async fn a_redis_refusing_the_password_is_bypassed_without_a_trace_of_secrets() {
    let fleet = Fleet::start().await;
    let guarded = RedisServer::start_with(&["--requirepass", "redis-Pw-right"]);
    let replica = TokenProvider::builder(fleet.credential(SECRET), SCOPE)
        .shared_cache(RedisTokenCache::new(guarded.url_with(":redis-Pw-wrong@")).unwrap())
        .build()
        .unwrap();
    let token = replica.token().await.unwrap();
    let stats = replica.stats();
    assert!(stats.shared_cache_errors > 0, "{stats:?}");
    assert_eq!(fleet.emulator.token_requests(), 1);
    let shown = format!("{stats:?} {replica:?}");
    for secret in ["redis-Pw-wrong", SECRET, token.secret()] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[tokio::test]
async fn a_holder_that_died_holding_the_lease_holds_the_fleet_up_one_lease_at_most() {
    let fleet = Fleet::start().await;
    fleet.replica(SCOPE).token().await.unwrap();
    let entry = fleet.entry_keys().remove(0);
    // The value is gone and a dead replica's lease (5 s, never renewed) is in the way.
    fleet.redis.cli(&["DEL", &entry]);
    fleet.redis.cli(&[
        "SET",
        &format!("{entry}:lease"),
        "dead-holder",
        "PX",
        "5000",
    ]);

    let replica = fleet.replica(SCOPE);
    let started = Instant::now();
    replica.token().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(replica.stats().shared_cache_lease_waits, 1);
    assert_eq!(fleet.emulator.token_requests(), 2);
    // It took the lease when it lapsed, before waiting out the token request's timeout (10 s).
    assert!(waited < Duration::from_secs(9), "waited {waited:?}");
    assert_eq!(fleet.entry_keys(), [entry]);
    assert!(
        !fleet.redis.keys().iter().any(|k| k.ends_with(":lease")),
        "the lease was left behind"
    );
}

/// A credential of the user's: `identity` says whose tokens it gets, when it knows.
#[derive(Debug)]
struct Custom {
    identity: Option<(String, String)>,
}

impl tower_entra::Credential for Custom {
    fn request_token<'a>(
        &'a self,
        _request: tower_entra::TokenRequest<'a>,
    ) -> futures::future::BoxFuture<'a, Result<tower_entra::AccessToken, tower_entra::TokenError>>
    {
        Box::pin(async { tower_entra::AccessToken::new("a.b.c", Duration::from_secs(3600)) })
    }

    fn identity(&self) -> Option<(&str, &str)> {
        self.identity
            .as_ref()
            .map(|(tenant, client)| (tenant.as_str(), client.as_str()))
    }
}

#[tokio::test]
async fn credentials_that_cannot_share_say_so_when_built() {
    let fleet = Fleet::start().await;
    let cache = fleet.cache();
    let key = || EncryptionKey::from_bytes([7u8; 32].to_vec()).unwrap();
    // Refused whatever the key: the platform's and the developer's own tokens.
    let refused = |credential: Box<dyn tower_entra::Credential>, named: &str| {
        let e = TokenProvider::builder(
            std::sync::Arc::<dyn tower_entra::Credential>::from(credential),
            SCOPE,
        )
        .shared_cache(cache.clone())
        .encryption_key(key())
        .build()
        .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration);
        assert!(e.to_string().contains(named), "{e}");
    };
    refused(
        Box::new(tower_entra::ManagedIdentityCredential::new().unwrap()),
        "managed identity",
    );
    refused(
        Box::new(tower_entra::AzureCliCredential::new()),
        "Azure CLI",
    );
    refused(
        Box::new(tower_entra::AzureDeveloperCliCredential::new()),
        "Azure Developer CLI",
    );
    // A credential of yours: only with an identity (whose tokens) and a key.
    refused(Box::new(Custom { identity: None }), "no identity");
    let custom = || Custom {
        identity: Some((fleet.app.tenant_id.clone(), fleet.app.client_id.clone())),
    };
    let e = TokenProvider::builder(custom(), SCOPE)
        .shared_cache(cache.clone())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("encryption_key"), "{e}");
    TokenProvider::builder(custom(), SCOPE)
        .shared_cache(cache.clone())
        .encryption_key(key())
        .build()
        .unwrap();

    // No secret of its own: needs an encryption key.
    let assertion = || {
        tower_entra::ClientAssertionCredential::new(
            &fleet.app.tenant_id,
            &fleet.app.client_id,
            || async { Ok::<_, std::io::Error>("an-assertion".to_owned()) },
        )
        .unwrap()
    };
    let e = TokenProvider::builder(assertion(), SCOPE)
        .shared_cache(cache.clone())
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration);
    assert!(e.to_string().contains("encryption_key"), "{e}");
    TokenProvider::builder(assertion(), SCOPE)
        .shared_cache(cache)
        .encryption_key(key())
        .build()
        .unwrap();
}

#[tokio::test]
async fn a_value_copied_from_one_key_prefix_to_another_does_not_open() {
    let fleet = Fleet::start().await;
    let in_env = |prefix: &str| {
        TokenProvider::builder(fleet.credential(SECRET), SCOPE)
            .shared_cache(
                RedisTokenCache::builder(fleet.redis.url())
                    .key_prefix(prefix)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let staging_token = in_env("staging:").token().await.unwrap();
    in_env("prod:").token().await.unwrap();
    let key = |prefix: &str| {
        fleet
            .entry_keys()
            .into_iter()
            .find(|k| k.starts_with(prefix))
            .unwrap()
    };
    let (staging, prod) = (key("staging:"), key("prod:"));
    // The prefix is part of the name's HMAC: the two environments' names differ past it.
    assert_ne!(staging["staging:".len()..], prod["prod:".len()..]);

    // Staging's value copied over prod's entry: it does not open there (the prefix is in the
    // seal's associated data), so prod asks Entra and overwrites it.
    fleet.redis.cli(&["COPY", &staging, &prod, "REPLACE"]);
    let requests = fleet.emulator.token_requests();
    let replica = in_env("prod:");
    let token = replica.token().await.unwrap();
    assert!(
        !token.same_token(&staging_token),
        "staging's token served in prod"
    );
    assert_eq!(replica.stats().shared_cache_hits, 0);
    assert_eq!(fleet.emulator.token_requests(), requests + 1);
}

#[tokio::test]
async fn a_tenants_token_is_shared_fleet_wide_in_its_own_entry() {
    let fleet = Fleet::start().await;
    let saas = fleet.emulator.register_app(
        &fleet.emulator.tenant_id(),
        App::new("saas").multi_tenant().with_secret(SECRET),
    );
    let contoso = fleet.emulator.add_tenant();
    // A domain name: the token's `tid` (a GUID) cannot be compared with it, so only the entry's
    // binding keeps the home tenant's token from being served for contoso.
    fleet
        .emulator
        .add_domain(&contoso, "contoso.onmicrosoft.com");
    fleet.emulator.grant_admin_consent(&saas, &contoso);
    let replica = || {
        let credential = ClientSecretCredential::builder(&saas.tenant_id, &saas.client_id, SECRET)
            .authority_host(fleet.emulator.authority_host())
            .additionally_allowed_tenants(["contoso.onmicrosoft.com"])
            .build()
            .unwrap();
        TokenProvider::builder(credential, SCOPE)
            .shared_cache(fleet.cache())
            .build()
            .unwrap()
    };
    let (first, second) = (replica(), replica());

    // The home tenant's entry first: it must not be served for contoso.
    let home = first.token().await.unwrap();
    let in_contoso = first
        .for_tenant("contoso.onmicrosoft.com")
        .unwrap()
        .token()
        .await
        .unwrap();
    assert!(
        !in_contoso.same_token(&home),
        "the home token served for contoso"
    );
    assert_eq!(fleet.emulator.token_requests_to(&contoso), 1);

    // The other replica's contoso provider reads contoso's entry: one request in all.
    let theirs = second.for_tenant("contoso.onmicrosoft.com").unwrap();
    assert!(theirs.token().await.unwrap().same_token(&in_contoso));
    assert_eq!(theirs.stats().shared_cache_hits, 1);
    assert_eq!(fleet.emulator.token_requests_to(&contoso), 1);

    // And contoso's entry is not served for the home tenant.
    let home_requests = fleet.emulator.token_requests_to(&saas.tenant_id);
    let fresh = replica();
    let fresh_home = fresh.token().await.unwrap();
    assert!(fresh_home.same_token(&home), "{:?}", fresh.stats());
    assert!(!fresh_home.same_token(&in_contoso));
    assert_eq!(
        fleet.emulator.token_requests_to(&saas.tenant_id),
        home_requests
    );
    assert_eq!(fleet.entry_keys().len(), 2, "one entry per tenant");
}
