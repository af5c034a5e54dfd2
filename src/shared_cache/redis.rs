//! [`RedisTokenCache`]: the shared token cache on Redis, through redis-rs's tokio
//! `ConnectionManager` (one multiplexed connection per cache, reconnected when it drops).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::error::TokenError;
use crate::provider::TokenProvider;
use crate::shared_cache::entra_auth::EntraRedisAuth;
use crate::shared_cache::{Breaker, BreakerSettings, SharedCacheError, SharedTokenCache};

/// Renews a lease only for its holder (the value compared, then the time to live extended).
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes a lease only for its holder: a holder whose lease lapsed never frees the next one's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// A token cache on Redis shared by the replicas of a service: feature `redis`.
///
/// Give it to [`TokenProviderBuilder::shared_cache`](crate::TokenProviderBuilder::shared_cache):
/// a provider then reads it before asking Entra and writes what Entra gave, and one replica at a
/// time asks for the fleet (a lease per entry). Names in Redis are HMAC digests, values are
/// sealed with AES-256-GCM under keys only holders of the credential can derive: Redis is
/// trusted with availability, never with a token.
///
/// Connects lazily (on its first use, inside the tokio runtime), reconnects when the connection
/// drops. Every call is bounded ([`call_timeout`](RedisTokenCacheBuilder::call_timeout)); after
/// failures in a row a breaker skips Redis for a while
/// ([`breaker`](RedisTokenCacheBuilder::breaker)), and providers get their tokens straight from
/// Entra meanwhile: Redis down, slow or refusing us is never a new way for a request to fail.
///
/// Cheap to clone: clones share the connection and the breaker. `Debug` shows the host, never a
/// password.
///
/// ```
/// # fn demo() -> Result<(), tower_entra::TokenError> {
/// use tower_entra::RedisTokenCache;
///
/// let cache = RedisTokenCache::builder("rediss://:the-password@cache.example.net:6380")
///     .key_prefix("prod:tokens:")
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisTokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// For `Debug` and logs: scheme, host and port only.
    shown: String,
    prefix: String,
    call_timeout: Duration,
    breaker: Breaker,
    entra: Option<EntraRedisAuth>,
    connection: OnceCell<ConnectionManager>,
    renew: redis::Script,
    release: redis::Script,
}

impl RedisTokenCache {
    /// A cache on the Redis at `url` with the default settings: `builder(url).build()`.
    pub fn new(url: impl Into<String>) -> Result<RedisTokenCache, TokenError> {
        Self::builder(url).build()
    }

    /// A builder for the cache on the Redis at `url`: `redis://[user][:password@]host[:port][/db]`
    /// or `rediss://…` (TLS, as Azure Cache for Redis and Azure Managed Redis require).
    pub fn builder(url: impl Into<String>) -> RedisTokenCacheBuilder {
        RedisTokenCacheBuilder {
            url: url.into(),
            prefix: "tower-entra:".to_owned(),
            call_timeout: Duration::from_millis(500),
            breaker: BreakerSettings::default(),
            entra: None,
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, SharedCacheError> {
        let inner = &self.inner;
        inner
            .connection
            .get_or_try_init(|| async {
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(inner.call_timeout))
                    .set_response_timeout(Some(inner.call_timeout))
                    // One quick retry: the breaker, not the client, decides when to try again.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50));
                if let Some(entra) = &inner.entra {
                    config = config.set_credentials_provider(entra.clone());
                }
                ConnectionManager::new_lazy_with_config(inner.client.clone(), config)
                    .map_err(|e| redis_error("connecting", &e))
            })
            .await
            .cloned()
    }

    /// Runs one command through the breaker, bounded.
    async fn call<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        command: Command<'_>,
    ) -> Result<T, SharedCacheError> {
        self.inner
            .breaker
            .call(what, self.inner.call_timeout, async {
                let mut connection = self.connection().await?;
                let answer = match command {
                    Command::Plain(cmd) => cmd.query_async(&mut connection).await,
                    Command::Script(invocation) => invocation.invoke_async(&mut connection).await,
                };
                answer.map_err(|e| redis_error(what, &e))
            })
            .await
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }
}

enum Command<'a> {
    Plain(redis::Cmd),
    Script(redis::ScriptInvocation<'a>),
}

/// A Redis error as a shared-cache error: the kind and Redis's answer (never the URL, which may
/// hold the password).
fn redis_error(what: &str, error: &redis::RedisError) -> SharedCacheError {
    SharedCacheError::new(format!("{what}: {error}"))
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl SharedTokenCache for RedisTokenCache {
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedCacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key(name));
            self.call("GET", Command::Plain(cmd)).await
        })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), SharedCacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(name))
                .arg(value)
                .arg("PX")
                .arg(millis(ttl));
            self.call::<()>("SET", Command::Plain(cmd)).await
        })
    }

    fn acquire_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(name))
                .arg(holder)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl));
            let set: Option<String> = self.call("SET NX", Command::Plain(cmd)).await?;
            Ok(set.is_some())
        })
    }

    fn renew_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
        Box::pin(async move {
            let mut invocation = self.inner.renew.key(self.key(name));
            invocation.arg(holder).arg(millis(ttl));
            let renewed: i64 = self
                .call("renewing a lease", Command::Script(invocation))
                .await?;
            Ok(renewed == 1)
        })
    }

    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
        Box::pin(async move {
            let mut invocation = self.inner.release.key(self.key(name));
            invocation.arg(holder);
            let released: i64 = self
                .call("releasing a lease", Command::Script(invocation))
                .await?;
            Ok(released == 1)
        })
    }

    fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn is_skipping(&self) -> bool {
        self.inner.breaker.is_open()
    }
}

impl fmt::Debug for RedisTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenCache")
            .field("server", &self.inner.shown)
            .field("key_prefix", &self.inner.prefix)
            .field("call_timeout", &self.inner.call_timeout)
            .field("entra_auth", &self.inner.entra.is_some())
            .field("skipping", &self.inner.breaker.is_open())
            .finish()
    }
}

/// Builds a [`RedisTokenCache`].
pub struct RedisTokenCacheBuilder {
    url: String,
    prefix: String,
    call_timeout: Duration,
    breaker: BreakerSettings,
    entra: Option<EntraRedisAuth>,
}

impl RedisTokenCacheBuilder {
    /// What every name in Redis starts with: one per environment (or per service) sharing a
    /// Redis. Default: `tower-entra:`. Entries are bound to it (their names' HMAC and their
    /// seals' associated data): a value copied from one prefix to another does not open.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bound on each Redis call, connecting included: a call that takes longer counts as a
    /// failure, and the provider goes on without the cache. Default 500 ms (Redis answers in
    /// well under a millisecond nearby).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The circuit breaker: after `failures` failed calls in a row, Redis is skipped for
    /// `open_for` (providers ask Entra directly), then tried with one call. Default: 3 failures,
    /// 30 s.
    pub fn breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.breaker = BreakerSettings { failures, open_for };
        self
    }

    /// Authenticates to Redis with Microsoft Entra ID (Azure Cache for Redis, Azure Managed
    /// Redis): the password is a token from `provider` (scope `https://redis.azure.com/.default`),
    /// the user name the principal's object id, read from the token's `oid` claim. The live
    /// connection is authenticated again (`AUTH`) with each new token the provider gets, before
    /// the one in use expires. Leave the URL without user or password.
    pub fn entra_auth(mut self, provider: TokenProvider) -> Self {
        self.entra = Some(EntraRedisAuth::new(provider));
        self
    }

    /// Checks the settings and builds the cache (no connection yet). A
    /// [`Configuration`](crate::TokenErrorKind::Configuration) error says what is wrong: a URL
    /// that is not `redis://` or `rediss://`, a zero call timeout or breaker threshold.
    pub fn build(self) -> Result<RedisTokenCache, TokenError> {
        let parsed = url::Url::parse(&self.url).map_err(|e| {
            TokenError::configuration(format!(
                "the shared cache's Redis URL does not parse ({e}); expected \
                 redis://[user][:password@]host[:port][/db] or rediss://…"
            ))
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(TokenError::configuration(format!(
                "the shared cache's Redis URL has the scheme `{}`; use redis:// or rediss:// (TLS)",
                parsed.scheme()
            )));
        }
        let shown = format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            parsed.port().unwrap_or(6379)
        );
        if self.call_timeout.is_zero() || self.breaker.failures == 0 {
            return Err(TokenError::configuration(
                "the shared cache's call timeout and breaker threshold must be above zero",
            ));
        }
        let client = redis::Client::open(parsed.as_str()).map_err(|e| {
            TokenError::configuration(format!(
                "the shared cache's Redis URL ({shown}) cannot be used: {:?}",
                e.kind()
            ))
        })?;
        Ok(RedisTokenCache {
            inner: Arc::new(Inner {
                client,
                breaker: Breaker::new(shown.clone(), self.breaker),
                shown,
                prefix: self.prefix,
                call_timeout: self.call_timeout,
                entra: self.entra,
                connection: OnceCell::new(),
                renew: redis::Script::new(RENEW),
                release: redis::Script::new(RELEASE),
            }),
        })
    }
}

impl fmt::Debug for RedisTokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenCacheBuilder")
            .field("key_prefix", &self.prefix)
            .field("call_timeout", &self.call_timeout)
            .field("entra_auth", &self.entra.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_configuration_errors_that_never_show_the_password() {
        for url in [
            "http://:hunter2@cache:6379",
            "not a url hunter2",
            "unix:///tmp/hunter2.sock",
        ] {
            let e = RedisTokenCache::new(url).unwrap_err();
            assert_eq!(
                e.kind(),
                crate::error::TokenErrorKind::Configuration,
                "{url}"
            );
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let cache = RedisTokenCache::new("rediss://user:hunter2@cache.example.net:6380/0").unwrap();
        let shown = format!("{cache:?}");
        assert!(shown.contains("rediss://cache.example.net:6380"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("user"),
            "{shown}"
        );
        assert!(
            RedisTokenCache::builder("redis://cache")
                .call_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
    }
}
