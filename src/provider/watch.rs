//! What a cached request reads instead of a clock: the provider's generation word.
//!
//! A precise clock read (`Instant::now()`, which on most machines reads the time-stamp counter)
//! costs more than the rest of the cached path's own work. So the word a request reads anyway,
//! to know whether its thread's copy of the token is current (see [`local`](super::local)),
//! also says whether that token is known to be *fresh*: publishing a token sets the bit and
//! starts a timer on the tokio runtime that clears it at the token's refresh point. While the
//! bit is set a request needs no precise clock; once it is clear — the refresh point has come,
//! or the timer went with its runtime — requests read the clock and decide as before.
//!
//! The timer is a tokio timer, so that it follows tokio's clock, a paused one included; and it
//! is a bare timer whose waker clears the bit, not a task, so that the bit is clear as soon as
//! the runtime processes its timers: before it polls anything, so a test that advances a
//! paused clock past the refresh point sees the refresh at its very next request, as it would
//! with a clock read. The waker clears the bit only while the word is still the one it was made
//! for, so a late timer never marks a newer token. A runtime that shuts down fires its timers,
//! so a bit is never left set by a runtime that is gone; one that is no longer driven leaves
//! it set. So the bit is trusted only while the coarse *monotonic* clock, too, says the copy is
//! before its refresh point (converted with tokio's clock when the copy was made): the wall
//! clock alone was no bound, for it may be stepped backwards, and a token then went on being
//! served past its expiry from a bit nobody would clear (issue 17; the test
//! `a_fresh_bit_whose_timer_is_not_driven_never_serves_a_token_past_its_expiry` in
//! `tests/it/liveness.rs`). A timer is dropped when the next token is published, or with the
//! provider.
//!
//! # What it buys
//!
//! The bit spares a cached request a precise clock read, the largest single cost it would
//! have; `benches/hot_path` prints that cost ("one `Instant::now()`") beside a whole cached
//! `EntraAuth` request, and the coarse wall clock read beside `SystemTime::now()`.
//!
//! Measured on a shared 2-core VM (`cargo bench --bench hot_path -- --quick`, medians of 5
//! interleaved batches, one caller): one `Instant::now()` 50.7 ns, one `SystemTime::now()`
//! 51.5 ns, one coarse wall clock read 14.6 ns, beside a whole cached `EntraAuth` request of
//! 518.3 ns: the bit and the coarse clock together spare about 85 ns, a sixth of the request.
//!
//! # The four freshness checks, and the clock each reads
//!
//! A cached request (`TokenProvider::lease`) serves its thread's copy (or the provider's
//! published lease, see [`local`](super::local)) after:
//!
//! 1. **The fresh bit** of the generation word: no clock. Set when a token is published, cleared
//!    by a tokio timer at the token's refresh point, so it follows tokio's clock (a paused one in
//!    tests). Trusted only for a lease of the generation read with it (a newer one, published
//!    meanwhile, goes on to the clocks).
//! 2. **The wall clock**, the kernel's coarse realtime clock, against the copy's refresh point
//!    and end of use converted to the wall clock when the copy was made. Always read: it goes on
//!    while the machine is suspended, which tokio's clock does not, so a token that expired
//!    during a suspend is dropped, not served; and it sees the refresh point when the timer's
//!    runtime is no longer driven and the bit stays set. Coarse is enough: it is a few
//!    milliseconds behind, against margins of seconds.
//! 3. **The monotonic clock**, the kernel's coarse one, against the copy's refresh point
//!    converted when the copy was made, read only while the bit is set: it is never stepped, so
//!    it bounds a bit whose timer's runtime is no longer driven when the wall clock was stepped
//!    backwards.
//! 4. **tokio's `Instant::now()`**, read only when the bit is clear or a coarse clock says a
//!    refresh is due: the same decision as the state's (fresh, refresh due, unusable), on the
//!    clock the state decides on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Wake, Waker};

use tokio::runtime::Handle;
use tokio::task::coop::Unconstrained;
use tokio::time::{Instant, Sleep};

use super::Inner;

/// The bit of the word that says the published token is before its refresh point.
const FRESH: u64 = 1;

/// The generation of the published token (bumped at each publish, whether of a new token or of
/// none) and its fresh bit, in one word. Read by every request on every core, written only when
/// a token is published and when its refresh point comes, so it sits on a cache line of its own
/// (128 bytes: adjacent-line prefetch pairs lines on x86).
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Generation(AtomicU64);

/// What a request reads of the [`Generation`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Published {
    /// The generation of the token in `Inner::current`.
    pub(super) generation: u64,
    /// The token is before its refresh point, and a timer will say when that changes.
    pub(super) fresh: bool,
}

impl Generation {
    /// The generation the next publish is of. Under the state lock, as publishes are.
    pub(super) fn next(&self) -> u64 {
        (self.0.load(Ordering::Relaxed) >> 1) + 1
    }

    /// The word as it reads while the token of `generation` is published and fresh: what a
    /// request that remembers a lease compares [`word`](Self::word) with.
    pub(super) fn fresh_word(generation: u64) -> u64 {
        generation << 1 | FRESH
    }

    /// The word itself: what [`read`](Self::read) decodes.
    #[inline]
    pub(super) fn word(&self) -> u64 {
        // Acquire: pairs with `publish`, so that a token loaded after this is at least as new
        // as this generation's (a newer one is copied again at the next request).
        self.0.load(Ordering::Acquire)
    }

    #[inline]
    pub(super) fn read(&self) -> Published {
        let word = self.word();
        Published {
            generation: word >> 1,
            fresh: word & FRESH != 0,
        }
    }
}

/// The timer of the published token's refresh point: registered with the runtime's timers,
/// polled by nobody (its waker does the work). Unconstrained: registering it must not spend the
/// task budget of whoever publishes, which would wake it at once.
#[derive(Default)]
pub(super) struct RefreshTimer(Mutex<Option<Pin<Box<Unconstrained<Sleep>>>>>);

/// Publishes `generation` ([`Generation::next`]) of `inner.current`, which was just stored:
/// fresh until `refresh_at` when a token was stored and a tokio runtime is here to time it.
/// Called under the state lock, so publishes never race one another; only timers clear bits
/// meanwhile.
pub(super) fn publish(inner: &Arc<Inner>, generation: u64, refresh_at: Option<Instant>) {
    let mut timer = match refresh_at {
        Some(at) if at > Instant::now() && Handle::try_current().is_ok() => Some(Box::pin(
            tokio::task::coop::unconstrained(tokio::time::sleep_until(at)),
        )),
        _ => None,
    };
    let word = generation << 1 | u64::from(timer.is_some());
    // Release: a request that reads this word loads the token stored before it.
    inner.generation.0.store(word, Ordering::Release);
    if let Some(sleep) = &mut timer {
        let clear = ClearFresh {
            inner: Arc::downgrade(inner),
            word,
        };
        let waker = Waker::from(Arc::new(clear));
        // Registers the waker with the runtime's timers; done already if the clock moved past.
        if sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            waker.wake();
        }
    }
    // The superseded timer is dropped, which takes it off the runtime's timers.
    *inner
        .refresh_timer
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = timer;
}

/// The timer's waker: clears the fresh bit of `word`.
struct ClearFresh {
    inner: Weak<Inner>,
    word: u64,
}

impl Wake for ClearFresh {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(inner) = self.inner.upgrade() {
            // Fails, as it should, when a newer generation was published meanwhile.
            let _ = inner.generation.0.compare_exchange(
                self.word,
                self.word & !FRESH,
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
    }
}
