//! [`LastLease`]: the lease one service clone served last, so that a stream of requests for one
//! provider and tenant is served from the service itself.
//!
//! A cached request otherwise finds its token through this thread's table of copies (see
//! [`local`](super::local)) and, when it names a tenant, through the thread's remembered tenant
//! or the tenants' map (see [`tenants`](super::tenants)): thread-local lookups, a borrow flag and
//! an enum of outcomes per request. A service clone is called with `&mut self`, one request at a
//! time, so it can keep what it served last in a field of its own and check it with a few
//! comparisons: the same provider (by address), the same tenant (the same handle, or the same
//! name), the same generation with the fresh bit set, and the coarse clocks before the refresh
//! point. Anything else falls through to the provider's own path, which refreshes, copies and
//! decides as before; so the remembered lease only ever skips lookups, never a decision.
//!
//! It is remembered when the same provider and tenant are asked twice in a row through the
//! provider's path, as the thread's table copies at the second ask: tenants asked in turn
//! remember nothing and take no count. A clone of the service starts with nothing remembered,
//! so that cloning a service takes no count another clone touches.
//!
//! # Why serving it is sound
//!
//! The remembered lease holds the provider it was asked of by count, which pins that
//! provider's address, so comparing addresses compares providers; and with the provider, its
//! registry of tenants, which never changes. A tenant's entry is remembered only if it is that
//! registry's (its provider names the registry weakly, which pins that address too), and served
//! only for a request that names the same tenant, while the entry has not been dropped from the
//! registry. The lease was checked to be the serving provider's when it was remembered. The
//! generation word (the generation and the fresh bit) is read from the serving provider on
//! every request, as the thread's table does: a refresh, an invalidation or a claims challenge
//! is seen by the next request.
//!
//! What a request compares is kept in the service clone itself (the header, the refresh points,
//! the word to expect), so that serving reads two shared words: the generation, and a tenant's
//! dropped mark.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::coarse::{monotonic_clock, wall_clock};
use super::tenants::{Entry, TenantProviders};
use super::ticket::Ticket;
use super::watch::Generation;
use super::{Inner, Lease, TenantsLink, TokenProvider};
use crate::tenant::Tenant;

/// The lease a service clone served last, and what it was for.
#[derive(Default)]
pub(crate) struct LastLease {
    held: Option<Held>,
    /// The provider (its address) and tenant (its handle's address, `0` for none) the provider's
    /// path served last: asked again next, they are remembered. Addresses: they decide only
    /// whether to remember, never what is served.
    missed: (usize, usize),
}

/// The remembered lease, with what a request compares kept by value (see the module docs).
struct Held {
    /// The provider asked (for a tenant, the home provider): compared by address, which the
    /// count pins.
    asked: Arc<Inner>,
    /// The provider the token is from: `asked`, or the tenant's.
    serving: Arc<Inner>,
    /// The generation word that says the token is still the published one and fresh.
    word: u64,
    header: HeaderValue,
    wall_refresh_at: Duration,
    monotonic_refresh_at: Duration,
    /// What the response future keeps of the token (no count).
    ticket: Ticket,
    /// The wall clock's second when the monotonic clock was last read, and that read's second.
    checked_at_wall: u64,
    monotonic_secs: u64,
    /// For a tenant: its handle, its entry in the registry (its dropped mark, its use mark),
    /// and the registry.
    tenant: Option<(Tenant, Arc<Entry>, Arc<TenantProviders>)>,
}

impl Clone for LastLease {
    /// Nothing remembered: a clone serves its first requests through the provider's path.
    fn clone(&self) -> Self {
        LastLease::default()
    }
}

impl std::fmt::Debug for LastLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LastLease")
    }
}

impl LastLease {
    /// The remembered token's header value and ticket, if it is `provider`'s for `tenant` and
    /// fresh; `None` sends the request through the provider's path.
    #[inline]
    pub(crate) fn serve(
        &mut self,
        provider: &TokenProvider,
        tenant: Option<&Tenant>,
    ) -> Option<(&HeaderValue, Ticket)> {
        let held = self.held.as_mut()?;
        if !Arc::ptr_eq(&held.asked, &provider.inner) {
            return None;
        }
        match (tenant, &held.tenant) {
            (None, None) => {}
            (Some(asked), Some((remembered, entry, _))) => {
                if !remembered.same(asked) || entry.dropped() {
                    return None;
                }
            }
            _ => return None,
        }
        if held.serving.generation.word() != held.word {
            return None;
        }
        let wall = wall_clock();
        if wall >= held.wall_refresh_at {
            return None;
        }
        // The monotonic clock, the bound on the fresh bit, is read again once the wall clock's
        // second has moved: within one second of the last read, it cannot have passed the
        // refresh point by more than that second (minutes before expiry), and a wall clock
        // stepped or a machine suspended moves the second.
        if wall.as_secs() != held.checked_at_wall {
            let monotonic = monotonic_clock();
            if monotonic >= held.monotonic_refresh_at {
                return None;
            }
            held.checked_at_wall = wall.as_secs();
            held.monotonic_secs = monotonic.as_secs();
        }
        if let Some((_, entry, registry)) = &held.tenant {
            registry.mark_used(entry, held.monotonic_secs);
        }
        Some((&held.header, held.ticket))
    }

    /// `lease`, served by `provider`'s path for `tenant`: remembered if the same provider and
    /// tenant were served there by the request before.
    #[inline(never)]
    pub(crate) fn served(
        &mut self,
        provider: &TokenProvider,
        tenant: Option<&Tenant>,
        lease: &Lease,
    ) {
        let key = (
            Arc::as_ptr(&provider.inner) as usize,
            tenant.map_or(0, Tenant::address),
        );
        if self.missed != key {
            self.missed = key;
            return;
        }
        let Some(tenant) = tenant else {
            if lease.of(&provider.inner) {
                self.held = Some(Held::new(provider, &provider.inner, lease, None));
            }
            return;
        };
        // Tenants served by the provider itself (its own, or the credential's home) have no
        // entry, nor do those of a provider that is itself a tenant's: not remembered.
        let TenantsLink::Home(registry) = &provider.inner.tenants else {
            return;
        };
        let Some(entry) = registry.entry(tenant.as_str()) else {
            return;
        };
        let serving = entry.provider().inner.clone();
        if lease.of(&serving) {
            let tenant = Some((tenant.clone(), entry, registry.clone()));
            self.held = Some(Held::new(provider, &serving, lease, tenant));
        }
    }
}

impl Held {
    /// `lease`, a lease on `serving`'s token, for requests asking `asked`.
    fn new(
        asked: &TokenProvider,
        serving: &Arc<Inner>,
        lease: &Lease,
        tenant: Option<(Tenant, Arc<Entry>, Arc<TenantProviders>)>,
    ) -> Held {
        Held {
            asked: asked.inner.clone(),
            serving: serving.clone(),
            word: Generation::fresh_word(lease.generation()),
            header: lease.token().header_value().clone(),
            wall_refresh_at: lease.wall_refresh_at(),
            monotonic_refresh_at: lease.monotonic_refresh_at(),
            ticket: Ticket::new(serving, lease),
            // No second yet: the first request reads both clocks.
            checked_at_wall: u64::MAX,
            monotonic_secs: 0,
            tenant,
        }
    }
}
