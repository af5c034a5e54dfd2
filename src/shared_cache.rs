//! A token cache shared by the replicas of a service: the store contract
//! ([`SharedTokenCache`]), its errors, and the key a provider seals entries with when its
//! credential has no secret of its own ([`EncryptionKey`]).
//!
//! A store only ever sees opaque names (HMAC digests) and sealed bytes (AES-256-GCM): naming,
//! sealing and the lease protocol are this crate's, in the modules below, so a store of yours
//! is trusted with availability, never with a token.

mod binding;
#[cfg(feature = "redis")]
mod breaker;
#[cfg(feature = "redis")]
mod entra_auth;
mod entry;
mod lease;
#[cfg(feature = "redis")]
mod redis;
mod seal;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use crate::error::TokenError;

pub use binding::CacheBinding;
#[cfg(feature = "redis")]
pub(crate) use breaker::{Breaker, BreakerSettings};
pub(crate) use entry::{Floor, SharedEntry};
#[cfg(feature = "redis")]
pub use redis::{RedisTokenCache, RedisTokenCacheBuilder};

/// A store that the replicas of a service share their tokens through (Redis:
/// [`RedisTokenCache`]; implement it for another).
///
/// Every name a store is given is an opaque, fixed-length name (an HMAC-SHA256 digest in hex,
/// 64 characters) and every value is sealed (AES-256-GCM): a store never sees a token, a client
/// id or a scope. What a store must do:
///
/// - [`get`](Self::get) / [`put`](Self::put): a value per name, expiring after its time to live.
/// - A lease per name, for one replica at a time to ask Entra while the others wait:
///   [`acquire_lease`](Self::acquire_lease) succeeds for one holder only (`SET NX PX`),
///   [`renew_lease`](Self::renew_lease) and [`release_lease`](Self::release_lease) act only for
///   the holder that has it (compare-and-set). Leases expire on their own: a holder that dies
///   holds nobody up for longer than the lease's time to live.
///
/// Calls should be bounded; a provider bounds each one anyway and takes any error or time-out as
/// a miss (it then asks Entra as if there were no shared cache). Failures are never shown to
/// callers.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use futures::future::BoxFuture;
/// use tower_entra::{SharedCacheError, SharedTokenCache};
///
/// /// Within one process only: a test double, or a model of what a store must do.
/// #[derive(Debug, Default)]
/// struct InMemory {
///     values: Mutex<HashMap<String, Vec<u8>>>,
///     leases: Mutex<HashMap<String, String>>,
/// }
///
/// impl SharedTokenCache for InMemory {
///     fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedCacheError>> {
///         Box::pin(async move { Ok(self.values.lock().unwrap().get(name).cloned()) })
///     }
///     fn put<'a>(&'a self, name: &'a str, value: &'a [u8], _ttl: Duration) -> BoxFuture<'a, Result<(), SharedCacheError>> {
///         Box::pin(async move { Ok(drop(self.values.lock().unwrap().insert(name.into(), value.into()))) })
///     }
///     fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, _ttl: Duration) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
///         Box::pin(async move {
///             let mut leases = self.leases.lock().unwrap();
///             Ok(!leases.contains_key(name) && leases.insert(name.into(), holder.into()).is_none())
///         })
///     }
///     fn renew_lease<'a>(&'a self, name: &'a str, holder: &'a str, _ttl: Duration) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
///         Box::pin(async move { Ok(self.leases.lock().unwrap().get(name).is_some_and(|h| h == holder)) })
///     }
///     fn release_lease<'a>(&'a self, name: &'a str, holder: &'a str) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
///         Box::pin(async move {
///             let mut leases = self.leases.lock().unwrap();
///             let held = leases.get(name).is_some_and(|h| h == holder);
///             if held {
///                 leases.remove(name);
///             }
///             Ok(held)
///         })
///     }
/// }
/// ```
pub trait SharedTokenCache: fmt::Debug + Send + Sync + 'static {
    /// The value stored under `name`, if any (expired values are gone).
    fn get<'a>(&'a self, name: &'a str)
    -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedCacheError>>;

    /// Stores `value` under `name` for `ttl`, replacing what was there.
    fn put<'a>(
        &'a self,
        name: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), SharedCacheError>>;

    /// Takes the lease on `name` for `holder` (a random value, new for each lease) for `ttl`, if
    /// nobody holds it; `true` if `holder` now has it.
    fn acquire_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>>;

    /// Extends the lease on `name` to `ttl` from now if `holder` still holds it; `false` if it
    /// does not (it expired, or another holder took it since).
    fn renew_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>>;

    /// Ends the lease on `name` if `holder` holds it (never another holder's); `true` if it did.
    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>>;

    /// Waits until a value may have been put under `name`, for at most `within`: a store with
    /// notifications returns when one arrives. The default waits `within` (the waiter then reads
    /// [`get`](Self::get) again: bounded polling).
    fn changed<'a>(&'a self, name: &'a str, within: Duration) -> BoxFuture<'a, ()> {
        let _ = name;
        Box::pin(tokio::time::sleep(within))
    }

    /// What the store puts before every name it is given (one prefix per environment sharing
    /// a backend). A provider binds its entries to it, in their names (HMAC) and in their seals'
    /// associated data, so that a value copied from one prefix to another does not open there.
    /// The default: none (`""`).
    fn key_prefix(&self) -> &str {
        ""
    }

    /// Whether the store skips its backend for now (a circuit breaker that opened after
    /// failures): a provider reports it in its stats. The default: `false`.
    fn is_skipping(&self) -> bool {
        false
    }
}

impl<S: SharedTokenCache + ?Sized> SharedTokenCache for std::sync::Arc<S> {
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedCacheError>> {
        (**self).get(name)
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), SharedCacheError>> {
        (**self).put(name, value, ttl)
    }

    fn acquire_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
        (**self).acquire_lease(name, holder, ttl)
    }

    fn renew_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
        (**self).renew_lease(name, holder, ttl)
    }

    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, SharedCacheError>> {
        (**self).release_lease(name, holder)
    }

    fn changed<'a>(&'a self, name: &'a str, within: Duration) -> BoxFuture<'a, ()> {
        (**self).changed(name, within)
    }

    fn key_prefix(&self) -> &str {
        (**self).key_prefix()
    }

    fn is_skipping(&self) -> bool {
        (**self).is_skipping()
    }
}

/// A [`SharedTokenCache`] call that failed: the store is down, slow, refused us, or answered
/// something else than expected. Never shown to callers (a provider then asks Entra itself);
/// logged, so its message must not hold secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCacheError {
    message: String,
}

impl SharedCacheError {
    /// An error saying `message` (no secrets: it is logged).
    pub fn new(message: impl Into<String>) -> Self {
        SharedCacheError {
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A call that took longer than its bound.
    pub(crate) fn timed_out(what: &str, after: Duration) -> Self {
        SharedCacheError::new(format!("{what} took longer than {} ms", after.as_millis()))
    }

    /// A call skipped because the breaker is open.
    #[cfg(feature = "redis")]
    pub(crate) fn skipped() -> Self {
        SharedCacheError::new("skipped: the shared cache failed recently (circuit breaker open)")
    }
}

impl fmt::Display for SharedCacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shared token cache: {}", self.message)
    }
}

impl std::error::Error for SharedCacheError {}

/// The key a provider derives its shared-cache keys from when its credential has no secret of
/// its own (a federated token file, an assertion callback, a credential of yours): at least 32
/// random bytes, the same on every replica (from Key Vault, a Kubernetes secret), never the
/// secret of anything else.
///
/// Replicas with other keys never read each other's entries. `Debug` never shows it; its memory
/// is zeroed when dropped.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: Zeroizing<Vec<u8>>,
}

impl EncryptionKey {
    /// The shortest key taken: 32 bytes (256 bits).
    pub const MIN_LEN: usize = 32;

    /// A key from `bytes` (at least [`MIN_LEN`](Self::MIN_LEN)); a shorter one is a
    /// [`Configuration`](crate::TokenErrorKind::Configuration) error.
    ///
    /// ```
    /// let key = tower_entra::EncryptionKey::from_bytes(vec![7u8; 32]).unwrap();
    /// assert!(!format!("{key:?}").contains('7'));
    /// assert!(tower_entra::EncryptionKey::from_bytes(b"short".to_vec()).is_err());
    /// ```
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, TokenError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < Self::MIN_LEN {
            return Err(TokenError::configuration(format!(
                "the shared cache's encryption key has {} bytes; it needs at least {} random bytes \
                 (e.g. `openssl rand 32`), the same on every replica",
                bytes.len(),
                Self::MIN_LEN
            )));
        }
        Ok(EncryptionKey { bytes })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}
