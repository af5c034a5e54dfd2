//! The providers of one provider's other tenants ([`TokenProvider::for_tenant`]): made on first
//! use, each with its own state, single flight, cache, backoff and stats, and dropped when idle.
//!
//! A request naming a tenant finds its provider in a map read without a lock (an `ArcSwap` of
//! the map), serves it in place (the provider is borrowed from the map, not cloned: no count
//! taken on it) and marks it used on a coarse clock (whole seconds, written only when the second
//! changed): a cached request makes no shared write here. Adding a tenant copies
//! the map under a lock, off the cached path, and sweeps it then: tenants idle past
//! [`max_tenant_idle`](crate::TokenProviderBuilder::max_tenant_idle) go, and beyond
//! [`max_tenants`](crate::TokenProviderBuilder::max_tenants) the least recently used go
//! (approximate: by the coarse mark). A provider a caller still holds keeps working; the map
//! just forgets it.
//!
//! A tenant dropped while its last fetch had failed (a tenant without consent, say) leaves its
//! error in a small negative cache for the provider's `max_backoff`: asked again within it, the
//! error is the answer at once, so an eviction does not turn into a new request to Entra.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::TokenProvider;
use super::coarse::monotonic_clock;
use crate::error::TokenError;

/// How many failed tenants the negative cache remembers.
const REMEMBERED_FAILURES: usize = 256;

/// The bounds on a provider's tenants.
#[derive(Debug, Clone, Copy)]
pub(super) struct TenantLimits {
    pub(super) max_tenants: usize,
    pub(super) max_idle: Duration,
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits {
            max_tenants: 10_000,
            max_idle: Duration::from_secs(3600),
        }
    }
}

/// Makes the provider of one tenant, with the home provider's settings.
pub(super) type MakeProvider = dyn Fn(&str, Weak<TenantProviders>) -> TokenProvider + Send + Sync;

/// A provider's other tenants.
pub(super) struct TenantProviders {
    providers: ArcSwap<Map>,
    /// Serialises changes of `providers`; holds the negative cache.
    changes: Mutex<Failures>,
    limits: TenantLimits,
    /// The failure backoff remembered for an evicted tenant.
    failure_memory: Duration,
    make: Box<MakeProvider>,
    epoch: Instant,
    /// The coarse monotonic clock at `epoch`.
    coarse_epoch: Duration,
    /// Whole seconds by which tokio's clock is ahead of the coarse one since `epoch`, as last
    /// read off the cached path: 0 in a service (tokio's clock is the monotonic clock, give or
    /// take a tick), what a test advanced a paused clock by.
    skew: AtomicU64,
}

type Map = HashMap<Box<str>, Arc<Entry>, foldhash::fast::RandomState>;

struct Entry {
    provider: TokenProvider,
    /// Seconds since `epoch` when last used.
    last_used: AtomicU64,
}

/// Tenants dropped while failing: their error, until when.
#[derive(Default)]
struct Failures(VecDeque<(Box<str>, TokenError, Instant)>);

impl TenantProviders {
    pub(super) fn new(
        limits: TenantLimits,
        failure_memory: Duration,
        make: Box<MakeProvider>,
    ) -> Self {
        TenantProviders {
            providers: ArcSwap::from_pointee(Map::default()),
            changes: Mutex::new(Failures::default()),
            limits,
            failure_memory,
            make,
            epoch: Instant::now(),
            coarse_epoch: monotonic_clock(),
            skew: AtomicU64::new(0),
        }
    }

    fn coarse_secs(&self) -> u64 {
        monotonic_clock()
            .saturating_sub(self.coarse_epoch)
            .as_secs()
    }

    /// Seconds since `epoch` for a use mark, on the cached path: the coarse clock.
    fn mark(&self) -> u64 {
        self.coarse_secs() + self.skew.load(Ordering::Relaxed)
    }

    /// Seconds since `epoch`, off the cached path: tokio's clock, which tests pause; keeps
    /// `skew` so that the marks follow it.
    fn now_secs(&self) -> u64 {
        let now = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_secs();
        let skew = now.saturating_sub(self.coarse_secs());
        if self.skew.load(Ordering::Relaxed) != skew {
            self.skew.store(skew, Ordering::Relaxed);
        }
        now
    }

    /// `serve` run on the provider of `tenant` (ASCII lower case) if it has one, marked used:
    /// borrowed from the map, so that a cached request takes no count on it.
    pub(super) fn with_cached<T>(
        &self,
        tenant: &str,
        serve: impl FnOnce(&TokenProvider) -> T,
    ) -> Option<T> {
        let providers = self.providers.load();
        let entry = providers.get(tenant)?;
        let now = self.mark();
        // Written only when the second changed: many requests of one tenant on many cores do
        // not all write the same line.
        if entry.last_used.load(Ordering::Relaxed) != now {
            entry.last_used.store(now, Ordering::Relaxed);
        }
        Some(serve(&entry.provider))
    }

    /// How many tenants have a provider now.
    pub(super) fn len(&self) -> usize {
        self.providers.load().len()
    }

    /// The provider of `tenant` (ASCII lower case, checked), made if it has none; sweeps the
    /// idle and the least recently used beyond the limit.
    pub(super) fn add(self: &Arc<Self>, tenant: &str) -> Result<TokenProvider, TokenError> {
        let mut failures = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let current = self.providers.load_full();
        if let Some(entry) = current.get(tenant) {
            return Ok(entry.provider.clone());
        }
        failures.0.retain(|(_, _, until)| *until > now);
        if let Some((_, error, _)) = failures.0.iter().find(|(t, _, _)| &**t == tenant) {
            return Err(error.clone());
        }
        let now_secs = self.now_secs();
        let mut providers =
            Map::with_capacity_and_hasher(current.len() + 1, current.hasher().clone());
        let idle = self.limits.max_idle.as_secs();
        let mut kept: Vec<(&Box<str>, &Arc<Entry>)> = Vec::with_capacity(current.len());
        for (name, entry) in current.iter() {
            if now_secs.saturating_sub(entry.last_used.load(Ordering::Relaxed)) > idle {
                failures.remember(name, &entry.provider, now + self.failure_memory);
            } else {
                kept.push((name, entry));
            }
        }
        // Room for the new tenant: the least recently used go first.
        let room = self.limits.max_tenants.saturating_sub(1);
        if kept.len() > room {
            kept.sort_by_key(|(_, e)| std::cmp::Reverse(e.last_used.load(Ordering::Relaxed)));
            for (name, entry) in kept.drain(room..) {
                failures.remember(name, &entry.provider, now + self.failure_memory);
            }
        }
        providers.extend(kept.into_iter().map(|(n, e)| (n.clone(), e.clone())));
        let provider = (self.make)(tenant, Arc::downgrade(self));
        if self.limits.max_tenants > 0 {
            providers.insert(
                tenant.into(),
                Arc::new(Entry {
                    provider: provider.clone(),
                    last_used: AtomicU64::new(now_secs),
                }),
            );
        }
        self.providers.store(Arc::new(providers));
        Ok(provider)
    }
}

impl Failures {
    /// Remembers `provider`'s error when its last fetch failed and it holds no token.
    fn remember(&mut self, tenant: &str, provider: &TokenProvider, until: Instant) {
        let stats = provider.stats();
        let (Some(error), 1..) = (stats.last_error, stats.consecutive_failures) else {
            return;
        };
        if provider.inner.current.load().is_some() {
            return;
        }
        if self.0.len() >= REMEMBERED_FAILURES {
            self.0.pop_front();
        }
        self.0.push_back((tenant.into(), error, until));
    }
}
