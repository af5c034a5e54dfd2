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
//! The lease names its provider weakly, which pins the provider's address (see
//! [`local`](super::local)), so comparing addresses compares providers. A tenant's lease is
//! served only for a request that names the same tenant, through the same registry (the entry's
//! provider names its registry weakly, which pins that address too), while the entry has not
//! been dropped from the registry. The generation and the fresh bit are read from the provider
//! on every request, as the thread's table does: a refresh, an invalidation or a claims
//! challenge is seen by the next request.

use std::sync::Arc;

use http::HeaderValue;

use super::coarse::{monotonic_clock, wall_clock};
use super::tenants::Entry;
use super::ticket::Ticket;
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

struct Held {
    lease: Lease,
    /// What the response future keeps of the token (no count).
    ticket: Ticket,
    /// The wall clock's second when the monotonic clock was last read, and that read's second.
    checked_at_wall: u64,
    monotonic_secs: u64,
    /// For a tenant: its handle, and its entry in the registry (its provider, its dropped mark,
    /// its use mark).
    tenant: Option<(Tenant, Arc<Entry>)>,
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
        let (inner, registry): (&Inner, _) = match (tenant, &held.tenant) {
            (None, None) => (&provider.inner, None),
            (Some(asked), Some((remembered, entry))) => {
                let TenantsLink::Home(registry) = &provider.inner.tenants else {
                    return None;
                };
                if !remembered.same(asked) || !entry.serves(registry) {
                    return None;
                }
                (&entry.provider().inner, Some(registry))
            }
            _ => return None,
        };
        let lease = &held.lease;
        if !lease.of(inner) {
            return None;
        }
        let published = inner.generation.read();
        if !published.fresh || lease.generation() != published.generation {
            return None;
        }
        let wall = wall_clock();
        if !lease.fresh_at_wall(wall) {
            return None;
        }
        // The monotonic clock, the bound on the fresh bit, is read again once the wall clock's
        // second has moved: within one second of the last read, it cannot have passed the
        // refresh point by more than that second (minutes before expiry), and a wall clock
        // stepped or a machine suspended moves the second.
        if wall.as_secs() != held.checked_at_wall {
            let monotonic = monotonic_clock();
            if !lease.fresh_at_monotonic(monotonic) {
                return None;
            }
            held.checked_at_wall = wall.as_secs();
            held.monotonic_secs = monotonic.as_secs();
        }
        if let (Some(registry), Some((_, entry))) = (registry, &held.tenant) {
            registry.mark_used(entry, held.monotonic_secs);
        }
        Some((lease.token().header_value(), held.ticket))
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
                self.held = Some(Held::new(Ticket::new(&provider.inner, lease), lease, None));
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
        if lease.of(&entry.provider().inner) {
            let ticket = Ticket::new(&entry.provider().inner, lease);
            self.held = Some(Held::new(ticket, lease, Some((tenant.clone(), entry))));
        }
    }
}

impl Held {
    fn new(ticket: Ticket, lease: &Lease, tenant: Option<(Tenant, Arc<Entry>)>) -> Held {
        Held {
            lease: lease.clone(),
            ticket,
            // No second yet: the first request reads both clocks.
            checked_at_wall: u64::MAX,
            monotonic_secs: 0,
            tenant,
        }
    }
}
