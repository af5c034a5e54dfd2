//! Each thread's own copy of the tokens it serves, so that a cached request writes no memory
//! that another core reads.
//!
//! A shared token costs a contended cache line per request: cloning it (or its header value)
//! bumps one reference count that every core bumps. So each thread keeps its own copy of a
//! provider's current token in a [`Lease`] (its own allocation, its own counts), tagged with the
//! provider's *generation*, which the provider bumps whenever it publishes a new token or drops
//! one. A request reads the generation (a shared read: the line stays shared across cores),
//! and serves the thread's copy while the generations agree; otherwise it copies the newly
//! published token, once per thread per token. A refresh, an invalidation or a claims
//! challenge is thus seen by the next request on every core.
//!
//! A thread finds its copy without a search, whatever the number of providers (a multi-tenant
//! service holds one per tenant and API): each provider has a [`Slot`], a small number of its
//! own, which indexes every thread's table of copies. Slots are dense and reused once their
//! provider is gone, so a table is as long as the most providers alive at once.
//!
//! A lease names its provider weakly: the refusal path (a 401) upgrades it, the cached path
//! never touches it. Copies of providers that are gone are dropped when the thread next copies
//! a token, and each copy's memory is zeroed when its last request is done with it.
//!
//! # What it buys
//!
//! `benches/hot_path` measures it against its alternative, with one caller and with one per
//! core: the arm "static header, shared `HeaderValue` cloned" is a shared token (one count every
//! core bumps per request), the arm `EntraAuth<S>` serves this thread's copy, and the arm
//! "`TokenProvider::token()`, 16 providers" shows the slot table keeping a thread that serves
//! many providers at the cost of one (a thread that kept a few copies re-copied a token on
//! nearly every request, and did not scale). The copies are what lets two callers do about
//! twice the work of one; neither mechanism allocates on the cached path.
//!
//! Measured on a shared 2-core VM (`cargo bench --bench hot_path -- --quick`, medians of 5
//! interleaved batches, ns per request, one caller / one per core): the shared `HeaderValue`
//! 364.8 / 247.5 (1.47x with two callers), `TokenProvider::token()` serving this thread's copy
//! 155.8 / 81.9 (1.90x), over 16 providers in turn 172.5 / 86.5 (2.00x); 0 allocations per
//! request beyond the request's own in every arm. This box is slow and noisy (a static header
//! costs 335 ns here): read the ratios, not the nanoseconds.
//!
//! # Why serving a copy is sound
//!
//! A copy is served only when it sits at its provider's slot, carries the generation the
//! provider last published, and [`Lease::of`] says it was made for this very provider. The
//! first two are not enough: a slot and a generation number are reused by the next provider
//! once one is dropped. `Lease::of` compares addresses, the copy's provider against this one,
//! which is sound only because the copy holds its provider as a [`Weak`]: a `Weak` keeps the
//! allocation (not the value) alive, so while the copy exists no other provider can be allocated
//! at that address, and equal addresses mean the same provider. A copy that kept a bare address
//! could match a new provider allocated where a dropped one was, and serve it the old provider's
//! token (for another audience).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::state::{Cached, Freshness};
use super::{Inner, TokenProvider};
use crate::token::AccessToken;

thread_local! {
    /// This thread's copies, at their providers' slots.
    static HELD: RefCell<Vec<Option<Lease>>> = const { RefCell::new(Vec::new()) };
}

/// The slots of the providers alive, and those free for the next.
static SLOTS: Mutex<Slots> = Mutex::new(Slots {
    next: 0,
    free: BinaryHeap::new(),
});

struct Slots {
    next: usize,
    /// Lowest first, so that tables stay as short as the providers alive allow.
    free: BinaryHeap<Reverse<usize>>,
}

/// A provider's index in every thread's table of copies: its own while it lives, taken back
/// when it is dropped (a copy left at a reused slot names its old provider, so it is never
/// served for the new one).
pub(super) struct Slot(usize);

impl Slot {
    pub(super) fn new() -> Slot {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        match slots.free.pop() {
            Some(Reverse(slot)) => Slot(slot),
            None => {
                slots.next += 1;
                Slot(slots.next - 1)
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        SLOTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .free
            .push(Reverse(self.0));
    }
}

/// A token as one thread holds it, with what a request needs to act on the API's refusal.
///
/// Cloned per request: the count it bumps is this thread's own.
#[derive(Clone)]
pub(crate) struct Lease(Arc<Held>);

struct Held {
    token: AccessToken,
    /// The id of the cache entry it copies, to drop exactly that entry after a suspend.
    cached_id: u64,
    /// `usable_until` and `refresh_at` on the wall clock (since the Unix epoch): tokio's clock
    /// stops while the machine is suspended, the wall clock does not.
    wall_usable_until: Duration,
    wall_refresh_at: Duration,
    /// `refresh_at` on the coarse monotonic clock, converted when the copy was made: the bound
    /// on the fresh bit (see [`Lease::fresh_by_monotonic_clock`]).
    monotonic_refresh_at: Duration,
    provider: Weak<Inner>,
    /// The provider's generation this copy was made under; `None` for a lease made on the cold
    /// path, which no thread serves from.
    generation: Option<u64>,
    usable_until: Instant,
    refresh_at: Instant,
}

impl Lease {
    /// A lease for a token that was just fetched (the cold path): no thread serves it again.
    pub(crate) fn fetched(provider: &TokenProvider, token: AccessToken) -> Lease {
        Lease(Arc::new(Held {
            usable_until: token.expires_at(),
            refresh_at: token.expires_at(),
            cached_id: 0,
            wall_usable_until: since_epoch(token.expires_on()),
            wall_refresh_at: since_epoch(token.expires_on()),
            monotonic_refresh_at: Duration::ZERO,
            token,
            provider: Arc::downgrade(&provider.inner),
            generation: None,
        }))
    }

    /// The token the request carries.
    pub(crate) fn token(&self) -> &AccessToken {
        &self.0.token
    }

    /// The provider, if it still exists: for the refusal path only (it touches shared counts).
    pub(crate) fn provider(&self) -> Option<TokenProvider> {
        self.0
            .provider
            .upgrade()
            .map(|inner| TokenProvider { inner })
    }

    pub(super) fn freshness(&self, now: Instant) -> Freshness {
        Freshness::at(now, self.0.refresh_at, self.0.usable_until)
    }

    /// Where the token stands by the wall clock, which goes on while the machine is suspended
    /// (tokio's clock does not). A coarse clock: a few milliseconds against margins of seconds,
    /// at a fraction of the cost of a precise read.
    pub(super) fn by_wall_clock(&self) -> Freshness {
        Freshness::at(
            wall_clock(),
            self.0.wall_refresh_at,
            self.0.wall_usable_until,
        )
    }

    /// Whether the coarse monotonic clock says the copy is still before its refresh point: what
    /// bounds the fresh bit. The bit is cleared by a timer on the runtime that published the
    /// token; should that runtime no longer be driven, the bit stays set, and the wall clock,
    /// which may be stepped backwards, is no bound. The monotonic clock is never stepped, so
    /// a copy past its refresh point on it goes to tokio's clock, which decides. It stops while
    /// the machine is suspended; the wall clock covers that.
    pub(super) fn fresh_by_monotonic_clock(&self) -> bool {
        monotonic_clock() < self.0.monotonic_refresh_at
    }

    /// The id of the cache entry this lease copies.
    pub(super) fn cached_id(&self) -> u64 {
        self.0.cached_id
    }

    /// Whether this copy was made for `inner`'s provider. Comparing addresses is sound because
    /// `provider` is a `Weak`, which pins the allocation: no other provider can live at this
    /// address while the copy exists (see the module docs).
    fn of(&self, inner: &Arc<Inner>) -> bool {
        std::ptr::eq(self.0.provider.as_ptr(), Arc::as_ptr(inner))
    }
}

/// This thread's copy of `inner`'s token made under `generation`, if it holds one.
pub(super) fn find(inner: &Arc<Inner>, generation: u64) -> Option<Lease> {
    // `try_with`: thread-local storage is gone while a thread exits; then there is no copy.
    HELD.try_with(|held| {
        held.borrow()
            .get(inner.slot.0)?
            .as_ref()
            .filter(|l| l.0.generation == Some(generation) && l.of(inner))
            .cloned()
    })
    .ok()
    .flatten()
}

/// Copies `cached` (published under `generation`) into this thread, replacing the thread's
/// older copy for `inner`, and returns the copy.
pub(super) fn hold(inner: &Arc<Inner>, generation: u64, cached: &Cached) -> Lease {
    let (expires_at, wall_expires) = (
        cached.token.expires_at(),
        since_epoch(cached.token.expires_on()),
    );
    let before_expiry =
        |at: Instant| wall_expires.saturating_sub(expires_at.saturating_duration_since(at));
    // Off the cached path (once per thread per token): a precise read of tokio's clock, so that
    // a copy made past its refresh point is never fresh by the monotonic clock.
    let monotonic_refresh_at = monotonic_clock()
        .saturating_add(cached.refresh_at.saturating_duration_since(Instant::now()));
    let lease = Lease(Arc::new(Held {
        cached_id: cached.id,
        wall_usable_until: before_expiry(cached.usable_until),
        wall_refresh_at: before_expiry(cached.refresh_at),
        monotonic_refresh_at,
        token: cached.token.thread_copy(),
        provider: Arc::downgrade(inner),
        generation: Some(generation),
        usable_until: cached.usable_until,
        refresh_at: cached.refresh_at,
    }));
    let _ = HELD.try_with(|held| {
        let mut held = held.borrow_mut();
        // Once per thread per token: the time to drop the copies of providers that are gone.
        for copy in held.iter_mut() {
            if copy
                .as_ref()
                .is_some_and(|l| l.0.provider.strong_count() == 0)
            {
                *copy = None;
            }
        }
        let slot = inner.slot.0;
        if held.len() <= slot {
            held.resize_with(slot + 1, || None);
        }
        held[slot] = Some(lease.clone());
    });
    lease
}

/// Drops this thread's copy for `inner` (its provider published "no token").
pub(super) fn forget(inner: &Arc<Inner>) {
    let _ = HELD.try_with(|held| {
        if let Some(copy) = held.borrow_mut().get_mut(inner.slot.0) {
            *copy = None;
        }
    });
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

/// The wall clock, since the Unix epoch: the kernel's coarse clock where there is one (read
/// without a system call, at tick resolution), which keeps the check within the hot path's
/// budget.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn wall_clock() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or_default(),
        u32::try_from(t.tv_nsec).unwrap_or_default(),
    )
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn wall_clock() -> Duration {
    since_epoch(SystemTime::now())
}

/// The monotonic clock, which is never stepped: the kernel's coarse one where there is one
/// (read without a system call, at tick resolution, a few milliseconds against margins of
/// seconds).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn monotonic_clock() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or_default(),
        u32::try_from(t.tv_nsec).unwrap_or_default(),
    )
}

/// Elsewhere, the standard monotonic clock, since the first read (a precise read: correctness
/// before the saving).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn monotonic_clock() -> Duration {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::state::ProviderOptions;

    fn cached(secret: &str) -> Cached {
        let token = AccessToken::new(secret, Duration::from_secs(3600)).unwrap();
        Cached::new(
            &ProviderOptions::default(),
            token,
            Instant::now(),
            0.5,
            1,
            None,
        )
    }

    fn provider() -> TokenProvider {
        #[derive(Debug)]
        struct Never;
        impl crate::Credential for Never {
            fn request_token<'a>(
                &'a self,
                _: crate::TokenRequest<'a>,
            ) -> futures::future::BoxFuture<'a, Result<AccessToken, crate::TokenError>>
            {
                Box::pin(std::future::pending())
            }
        }
        TokenProvider::new(Never, "https://graph.microsoft.com/.default").unwrap()
    }

    #[test]
    fn a_copy_is_served_only_under_its_generation_and_only_for_its_provider() {
        let (a, b) = (provider(), provider());
        let held = hold(&a.inner, 7, &cached("a.b.c"));
        assert_eq!(held.token().secret(), "a.b.c");
        assert!(find(&a.inner, 7).is_some());
        assert!(
            find(&a.inner, 8).is_none(),
            "a newer generation needs a new copy"
        );
        assert!(find(&b.inner, 7).is_none(), "another provider's copy");
        forget(&a.inner);
        assert!(find(&a.inner, 7).is_none());
    }

    #[test]
    fn each_thread_has_its_own_copy_not_a_shared_count() {
        let p = provider();
        let source = cached("x.y.z");
        let here = hold(&p.inner, 1, &source);
        let there = std::thread::scope(|s| {
            s.spawn(|| hold(&p.inner, 1, &source).token().header_value().clone())
                .join()
                .unwrap()
        });
        assert_eq!(here.token().header_value(), &there);
        // Distinct memory: cloning one never touches the other's reference count.
        assert_ne!(
            here.token().header_value().as_bytes().as_ptr(),
            there.as_bytes().as_ptr()
        );
        assert_ne!(
            here.token().header_value().as_bytes().as_ptr(),
            source.token.header_value().as_bytes().as_ptr()
        );
    }

    #[test]
    fn copies_of_dropped_providers_go_and_their_slots_are_reused() {
        let keep = provider();
        hold(&keep.inner, 1, &cached("k.k.k"));
        let mut slots = std::collections::HashSet::new();
        for _ in 0..64 {
            let gone = provider();
            slots.insert(gone.inner.slot.0);
            hold(&gone.inner, 1, &cached("g.g.g"));
        }
        // Dropped providers' slots go to the next ones (other tests' providers come and go
        // meanwhile, so only a bound far below one slot per provider is certain).
        assert!(slots.len() < 32, "{} slots for 64 providers", slots.len());
        // A dropped provider's copy goes at the thread's next copy, even with its slot unused
        // (it holds the token's secret); the live one stays.
        let gone = provider();
        hold(&gone.inner, 1, &cached("g.g.g"));
        drop(gone);
        hold(&keep.inner, 2, &cached("k.k.k"));
        let dead = HELD.with(|h| {
            h.borrow()
                .iter()
                .flatten()
                .filter(|l| l.0.provider.strong_count() == 0)
                .count()
        });
        assert_eq!(dead, 0, "copies of dropped providers kept");
        assert!(find(&keep.inner, 2).is_some());
    }

    /// A multi-tenant service asks many providers in turn on one thread: each keeps its copy,
    /// so none is copied again per request. Seen failing with a thread's copies capped at 8.
    #[test]
    fn a_thread_keeps_a_copy_for_each_of_many_providers() {
        let providers: Vec<_> = (0..40).map(|_| provider()).collect();
        for p in &providers {
            hold(&p.inner, 1, &cached("t.t.t"));
        }
        for (i, p) in providers.iter().enumerate() {
            assert!(find(&p.inner, 1).is_some(), "provider {i} lost its copy");
        }
    }
}
