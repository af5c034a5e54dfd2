//! [`Ticket`]: what a response future keeps of the token its request was sent with, without a
//! count.
//!
//! The future needs the token and its provider only if the API refuses the token (a 401), to
//! drop it or fetch one with the challenge's claims. Keeping a [`Lease`] for that costs an
//! atomic increment when the request is sent and a decrement when its response is in, on every
//! request, though nearly none is refused. A ticket is three numbers: the provider's slot and
//! slot id (see [`local`](super::local)), which find the provider in the slots' table under its
//! lock, and the id of the cache entry the token came from, which says whether the token is
//! still the provider's cached one. Redeeming it takes that lock and a count: on the refusal
//! path only.

use std::num::NonZeroU64;
use std::sync::Arc;

use super::local::{self, Lease};
use super::{Inner, TokenProvider};
use crate::token::AccessToken;

/// A provider's token, named by numbers: see the module docs. A slot id is never zero, so an
/// `Option<Ticket>` is as small as a ticket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    slot: usize,
    slot_id: NonZeroU64,
    cached_id: u64,
}

impl Ticket {
    /// The ticket of `lease`, a lease on `inner`'s token.
    pub(super) fn new(inner: &Inner, lease: &Lease) -> Ticket {
        Ticket::at(inner, lease.cached_id())
    }

    /// The ticket of `token`, just fetched by `provider` for a request that waited: it names
    /// the provider's cache entry if the token is the cached one, else none (`0` is no entry's
    /// id), which a refusal reads as a token already replaced.
    pub(crate) fn fetched(provider: &TokenProvider, token: &AccessToken) -> Ticket {
        let inner = &provider.inner;
        let cached_id = inner
            .current
            .load()
            .as_ref()
            .filter(|cached| cached.token.same_token(token))
            .map_or(0, |cached| cached.id);
        Ticket::at(inner, cached_id)
    }

    fn at(inner: &Inner, cached_id: u64) -> Ticket {
        let (slot, slot_id) = inner.slot.key();
        Ticket {
            slot,
            slot_id,
            cached_id,
        }
    }

    /// The provider, if it is still alive; with the token, if it is still the provider's cached
    /// one (else it was replaced, which is all a refusal needs to know of it).
    pub(crate) fn redeem(&self) -> Option<(TokenProvider, Option<AccessToken>)> {
        let inner: Arc<Inner> = local::provider_at(self.slot, self.slot_id)?;
        let token = inner
            .current
            .load()
            .as_ref()
            .filter(|cached| cached.id == self.cached_id)
            .map(|cached| cached.token.clone());
        Some((TokenProvider { inner }, token))
    }
}
