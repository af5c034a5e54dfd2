//! One provider's entry in a shared cache: the slow path through it. Read before asking Entra,
//! take the lease or wait for its holder, ask Entra, write for the fleet.
//!
//! Everything here runs in a provider's fetch, never on the cached path, and every failure of
//! the store ends in asking Entra as if there were no shared cache.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::time::Instant;

use crate::error::TokenError;
use crate::shared_cache::binding::Owner;
use crate::shared_cache::lease::{self, Lease, LeaseOutcome, Waited};
use crate::shared_cache::seal::{EntryBinding, Keyring, SealedToken};
use crate::shared_cache::{CacheBinding, EncryptionKey, SharedCacheError, SharedTokenCache};
use crate::token::AccessToken;

/// The bound a provider puts on each store call, whatever the store does itself.
pub(crate) const CALL_BOUND: Duration = Duration::from_secs(2);

/// What a provider's shared cache did, for its stats and meters.
#[derive(Debug, Default)]
pub(crate) struct SharedCacheCounts {
    /// Tokens taken from the cache (read before asking Entra, or written by a lease holder that
    /// was waited for).
    pub(crate) hits: AtomicU64,
    /// Reads that found nothing usable.
    pub(crate) misses: AtomicU64,
    /// Times another replica held the lease and this one waited for its token.
    pub(crate) lease_waits: AtomicU64,
    /// Store calls that failed or were skipped by its breaker.
    pub(crate) errors: AtomicU64,
}

/// The tokens a value read must be newer than.
#[derive(Debug, Clone, Default)]
pub(crate) struct Floor {
    /// The token the provider holds (it is refreshing it).
    pub(crate) held: Option<AccessToken>,
    /// A token the API just refused (it must never come back from the cache).
    pub(crate) refused: Option<AccessToken>,
}

/// A provider's entry: its store, whose tokens, and the keys to name and seal them.
pub(crate) struct SharedEntry {
    store: Arc<dyn SharedTokenCache>,
    owner: Owner,
    scope: String,
    capabilities: String,
    key: Option<EncryptionKey>,
    /// Derived at the first fetch, then followed through the credential's rotations.
    keyring: Mutex<Option<Keyring>>,
    /// How long to wait for another replica's token request: one token request's bound.
    wait_for: Duration,
    counts: Arc<SharedCacheCounts>,
}

impl SharedEntry {
    /// The entry for `scope` of the credential bound by `binding`; a
    /// [`Configuration`](crate::TokenErrorKind::Configuration) error when its tokens may not be
    /// shared (see [`CacheBinding::owner`]).
    pub(crate) fn new(
        store: Arc<dyn SharedTokenCache>,
        binding: &CacheBinding,
        identity: Option<(&str, &str)>,
        key: Option<EncryptionKey>,
        scope: &str,
        capabilities: &[String],
        wait_for: Duration,
    ) -> Result<SharedEntry, TokenError> {
        let owner = binding.owner(identity, key.as_ref())?;
        Ok(SharedEntry {
            store,
            owner,
            scope: scope.to_owned(),
            capabilities: capabilities.join(","),
            key,
            keyring: Mutex::new(None),
            wait_for,
            counts: Arc::default(),
        })
    }

    /// The entry of the same credential and scope in `tenant` (a tenant provider's, see
    /// [`TokenProvider::for_tenant`](crate::TokenProvider::for_tenant)): bound to that tenant, so
    /// that each tenant's token is shared fleet-wide and never served for another tenant. Its
    /// keys are derived at its first fetch; its counts are its own.
    pub(crate) fn for_tenant(&self, tenant: &str) -> SharedEntry {
        SharedEntry {
            store: self.store.clone(),
            owner: Owner {
                tenant: tenant.to_owned(),
                ..self.owner.clone()
            },
            scope: self.scope.clone(),
            capabilities: self.capabilities.clone(),
            key: self.key.clone(),
            keyring: Mutex::new(None),
            wait_for: self.wait_for,
            counts: Arc::default(),
        }
    }

    pub(crate) fn counts(&self) -> &Arc<SharedCacheCounts> {
        &self.counts
    }

    /// Whether the store skips its backend now (its breaker is open).
    pub(crate) fn is_skipping(&self) -> bool {
        self.store.is_skipping()
    }

    fn binding(&self) -> EntryBinding<'_> {
        EntryBinding {
            prefix: self.store.key_prefix(),
            authority: &self.owner.authority,
            tenant: &self.owner.tenant,
            client: &self.owner.client,
            scope: &self.scope,
            claims: None,
            capabilities: &self.capabilities,
        }
    }

    /// The names to read (current key generation first) and the one to write, with the keys
    /// following the credential's secret as loaded now.
    fn names(&self, binding: CacheBinding) -> Option<(Vec<String>, String)> {
        let secret = binding.secret(self.key.as_ref())?;
        let mut keyring = self.keyring.lock().unwrap_or_else(|e| e.into_inner());
        match keyring.as_mut() {
            Some(keys) => {
                if keys.rotate_to(&secret) {
                    tracing::info!(
                        key_id = %keys.key_id(),
                        "shared token cache: the credential's secret changed; writing under its new key, still reading the old one"
                    );
                }
            }
            None => *keyring = Some(Keyring::derive(&secret)),
        }
        let keys = keyring.as_ref()?;
        let binding = self.binding();
        Some((keys.names(&binding), keys.name(&binding)))
    }

    fn open(&self, name: &str, value: &[u8]) -> Option<SealedToken> {
        let keyring = self.keyring.lock().unwrap_or_else(|e| e.into_inner());
        match keyring.as_ref()?.open(self.store.key_prefix(), name, value) {
            Ok(entry) => Some(entry),
            Err(why) => {
                tracing::debug!(%why, "shared token cache: ignoring a value that does not open");
                None
            }
        }
    }

    /// The current key generation served a token (read or written): the one before is no
    /// longer read.
    fn current_generation_served(&self) {
        let mut keyring = self.keyring.lock().unwrap_or_else(|e| e.into_inner());
        if keyring.as_mut().is_some_and(Keyring::retire_previous) {
            tracing::info!(
                "shared token cache: the credential's new key serves the fleet; no longer reading entries of the old one"
            );
        }
    }

    fn error(&self, e: &SharedCacheError) {
        self.counts.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(error = %e, "shared token cache: going on without it");
    }

    /// A token from the shared cache newer than `floor`, not yet at its refresh point and for
    /// this request; `None` when there is none or the store failed.
    async fn read(
        &self,
        names: &[String],
        floor: &Floor,
    ) -> Result<Option<AccessToken>, SharedCacheError> {
        for (generation, name) in names.iter().enumerate() {
            let value =
                lease::bounded(CALL_BOUND, "reading the shared cache", self.store.get(name))
                    .await?;
            let Some(value) = value else { continue };
            let Some(entry) = self.open(name, &value) else {
                continue;
            };
            if let Some(token) = self.accept(entry, floor) {
                if generation == 0 {
                    self.current_generation_served();
                }
                return Ok(Some(token));
            }
        }
        Ok(None)
    }

    /// `entry` as a token, if a provider may serve it instead of asking Entra.
    fn accept(&self, entry: SealedToken, floor: &Floor) -> Option<AccessToken> {
        let now = SystemTime::now();
        if now >= entry.refresh_on {
            return None;
        }
        let older_than = |token: &AccessToken| {
            token.secret() == entry.token.as_str() || entry.expires_on <= token.expires_on()
        };
        if floor.held.as_ref().is_some_and(older_than)
            || floor.refused.as_ref().is_some_and(older_than)
        {
            return None;
        }
        if !for_request(&entry.token, &self.scope, &self.owner.tenant) {
            tracing::warn!(
                scope = %self.scope,
                "shared token cache: a value's token is for another audience or tenant; ignoring it"
            );
            return None;
        }
        entry.into_token(now)
    }

    /// Writes `token` (which its provider refreshes at `refresh_on`) for the fleet, until it
    /// expires.
    async fn write(&self, name: &str, token: &AccessToken, refresh_on: SystemTime) {
        let Ok(ttl) = token.expires_on().duration_since(SystemTime::now()) else {
            return;
        };
        let sealed = {
            let keyring = self.keyring.lock().unwrap_or_else(|e| e.into_inner());
            keyring.as_ref().and_then(|keys| {
                keys.seal(
                    self.store.key_prefix(),
                    name,
                    &SealedToken::new(token, refresh_on),
                )
            })
        };
        let Some(sealed) = sealed else { return };
        match lease::bounded(
            CALL_BOUND,
            "writing the shared cache",
            self.store.put(name, &sealed, ttl),
        )
        .await
        {
            Ok(()) => self.current_generation_served(),
            Err(e) => self.error(&e),
        }
    }

    /// The slow path through the shared cache: a token read from it (newer than `floor`), the
    /// token of the replica holding the lease, or `fetch`'s (written for the others). `binding`
    /// is the credential's now (its secret may have rotated); `refresh_on` says when the
    /// provider would refresh a token.
    pub(crate) async fn fetch_through<Fut>(
        &self,
        binding: CacheBinding,
        floor: &Floor,
        refresh_on: impl Fn(&AccessToken) -> SystemTime,
        fetch: Fut,
    ) -> Result<AccessToken, TokenError>
    where
        Fut: Future<Output = Result<AccessToken, TokenError>>,
    {
        let Some((names, name)) = self.names(binding) else {
            return fetch.await;
        };
        match self.read(&names, floor).await {
            Ok(Some(token)) => {
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(token);
            }
            Ok(None) => {
                self.counts.misses.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.error(&e);
                return self.fetch_and_write(&name, None, refresh_on, fetch).await;
            }
        }
        let lease = match Lease::acquire(&self.store, &name, CALL_BOUND).await {
            LeaseOutcome::Held(lease) => {
                // Another replica may have written between the read and the lease.
                if let Ok(Some(token)) = self.read(&names, floor).await {
                    lease.release().await;
                    self.counts.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(token);
                }
                Some(lease)
            }
            LeaseOutcome::Busy => {
                self.counts.lease_waits.fetch_add(1, Ordering::Relaxed);
                let deadline = Instant::now() + self.wait_for;
                let waited =
                    lease::wait_for_holder(&self.store, &name, CALL_BOUND, deadline, || {
                        self.read(&names, floor)
                    })
                    .await;
                match waited {
                    Waited::Value(token) => {
                        self.counts.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(token);
                    }
                    Waited::Held(lease) => Some(lease),
                    Waited::GaveUp => {
                        tracing::debug!(
                            "shared token cache: no token from the lease holder in time; asking Entra"
                        );
                        None
                    }
                }
            }
            LeaseOutcome::Unavailable(e) => {
                self.error(&e);
                None
            }
        };
        self.fetch_and_write(&name, lease, refresh_on, fetch).await
    }

    async fn fetch_and_write<Fut>(
        &self,
        name: &str,
        lease: Option<Lease>,
        refresh_on: impl Fn(&AccessToken) -> SystemTime,
        fetch: Fut,
    ) -> Result<AccessToken, TokenError>
    where
        Fut: Future<Output = Result<AccessToken, TokenError>>,
    {
        let fetched = fetch.await;
        if let Ok(token) = &fetched {
            self.write(name, token, refresh_on(token)).await;
        }
        if let Some(lease) = lease {
            lease.release().await;
        }
        fetched
    }
}

impl fmt::Debug for SharedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedEntry")
            .field("store", &self.store)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The claims checked before a token read from the cache is served.
#[derive(Deserialize)]
struct Addressed {
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    tid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Whether `token`, when it is a JWT, is for the resource of `scope` and for `tenant`: a value
/// sealed by a holder of the credential is trusted for its origin, this checks it was not meant
/// for another request. What cannot be compared passes (tokens that are not JWTs, an audience
/// given as an app id, a tenant given as a domain name).
fn for_request(token: &str, scope: &str, tenant: &str) -> bool {
    let Some(claims) = crate::jwt::claims::<Addressed>(token) else {
        return true;
    };
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    let same = |aud: &str| {
        let (aud, resource) = (aud.trim_end_matches('/'), resource.trim_end_matches('/'));
        !aud.is_empty()
            && (aud.eq_ignore_ascii_case(resource)
                || uuid::Uuid::parse_str(aud).is_ok()
                || resource
                    .strip_suffix(aud)
                    .is_some_and(|rest| rest.ends_with('/')))
    };
    let aud_ok = match &claims.aud {
        None => true,
        Some(Audience::One(aud)) => same(aud),
        Some(Audience::Many(auds)) => auds.iter().any(|aud| same(aud)),
    };
    let tid_ok = match &claims.tid {
        Some(tid) if uuid::Uuid::parse_str(tenant).is_ok() => tid.eq_ignore_ascii_case(tenant),
        _ => true,
    };
    aud_ok && tid_ok
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "eyJhbGciOiJub25lIn0.{}.c2ln",
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn a_token_for_another_audience_or_tenant_is_not_for_this_request() {
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let ok = jwt(&format!(
            r#"{{"aud":"https://graph.microsoft.com","tid":"{tenant}"}}"#
        ));
        assert!(for_request(
            &ok,
            "https://graph.microsoft.com/.default",
            tenant
        ));
        assert!(for_request(
            &ok,
            "https://graph.microsoft.com//.default",
            tenant
        ));
        let other_aud = jwt(&format!(
            r#"{{"aud":"https://management.azure.com","tid":"{tenant}"}}"#
        ));
        assert!(!for_request(
            &other_aud,
            "https://graph.microsoft.com/.default",
            tenant
        ));
        let other_tid = jwt(
            r#"{"aud":"https://graph.microsoft.com","tid":"00000000-0000-0000-0000-000000000001"}"#,
        );
        assert!(!for_request(
            &other_tid,
            "https://graph.microsoft.com/.default",
            tenant
        ));
        // Not comparable: passes.
        assert!(for_request(
            &other_tid,
            "https://graph.microsoft.com/.default",
            "contoso.onmicrosoft.com"
        ));
        assert!(for_request("opaque-token", "api://x/.default", tenant));
        let app_id = jwt(r#"{"aud":"00000003-0000-0000-c000-000000000000"}"#);
        assert!(for_request(
            &app_id,
            "https://graph.microsoft.com/.default",
            tenant
        ));
        let many = jwt(r#"{"aud":["api://a","api://x"]}"#);
        assert!(for_request(&many, "api://x/.default", tenant));
        assert!(!for_request(&many, "api://y/.default", tenant));
    }
}
