//! One token fetch: spawned so that no caller's cancellation stops it, retried with backoff,
//! and handed to the provider's `perform` when it ends. Its slot is freed, and its waiters
//! answered, by one guard ([`FetchSlot`]) however it ends.
//!
//! [`run_fetch`] is the retry loop and nothing else; [`answer`] is where a fetch's token comes
//! from. That is the seam for a cache shared across replicas: read it there before asking the
//! credential, and write to it after the credential answers, all off the cached path.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use super::state::{Input, Mode, Note, Start, longest_retry_delay, retry_delay};
use super::{Inner, SharedFetch};
use super::{roles, throttle};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// Fetch `start` as a future every waiter can share, and the task to spawn that runs it. The
/// task owns the fetch's [`FetchSlot`] from the start, so that a task dropped before it ever
/// runs (a runtime shutting down) still frees its slot and answers its waiters.
pub(super) fn prepare(
    inner: Arc<Inner>,
    start: &Start,
) -> (
    SharedFetch,
    impl Future<Output = ()> + Send + 'static + use<>,
) {
    let (answer, answered) = oneshot::channel();
    let slot = FetchSlot {
        inner: inner.clone(),
        id: start.id,
        answer: Some(answer),
        result: None,
    };
    let fetch = async move {
        answered.await.unwrap_or_else(|_| {
            Err(TokenError::new(
                TokenErrorKind::Connection,
                "the token fetch ended without an answer",
            ))
        })
    }
    .boxed()
    .shared();
    let (mode, id) = (start.mode.clone(), start.id);
    let task = async move {
        let mut slot = slot;
        // The span is made in the task: neither user code (`identity`) nor a subscriber runs
        // where the fetch is started, under the provider's lock.
        let span = inner
            .telemetry
            .fetch_span(inner.credential.identity(), &mode);
        slot.result = Some(fetch_and_finish(&inner, &mode, id).instrument(span).await);
    };
    (fetch, task)
}

/// A fetch's hold on its slot in the provider's state. Dropping it, and only that, frees the
/// slot (so that the next caller starts a new fetch instead of joining a dead one) and then
/// answers the waiters: with the fetch's result, or with why there is none (a panic, or a task
/// dropped by a runtime shutting down, before or while it ran).
struct FetchSlot {
    inner: Arc<Inner>,
    id: u64,
    answer: Option<oneshot::Sender<Result<AccessToken, TokenError>>>,
    result: Option<Result<AccessToken, TokenError>>,
}

impl Drop for FetchSlot {
    fn drop(&mut self) {
        // Nothing to publish: freeing a slot leaves the token as it is.
        let _ = self.inner.perform(Input::Freed(self.id));
        let result = self.result.take().unwrap_or_else(|| {
            Err(TokenError::new(
                TokenErrorKind::Connection,
                if std::thread::panicking() {
                    "the token fetch panicked"
                } else {
                    "the token fetch was cancelled (the runtime is shutting down)"
                },
            ))
        });
        if let Some(answer) = self.answer.take() {
            // Nobody waiting is fine: the result is in the cache.
            let _ = answer.send(result);
        }
    }
}

/// Runs fetch `id` in `mode`, then has the provider perform its end (which stores and
/// publishes its token) and records it.
async fn fetch_and_finish(
    inner: &Arc<Inner>,
    mode: &Mode,
    id: u64,
) -> Result<AccessToken, TokenError> {
    let started = Instant::now();
    let (result, attempts) = through_shared_cache(inner, mode, run_fetch(inner, mode)).await;
    let ended = Instant::now();
    let done = inner.perform(Input::Finished {
        id,
        mode,
        outcome: result.as_ref(),
        draw: fastrand::f64(),
    });
    if let Note::Finished(finished) = done.note {
        let took = ended - started;
        inner
            .telemetry
            .fetch_ended(mode, &result, (attempts, took), &finished);
    }
    result
}

/// What a 429 without `Retry-After` asks for.
const DEFAULT_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The retry loop: asks for a token until one comes, the error is not transient, the
/// attempts run out or the delay before the next is too long. Returns the outcome and the
/// number of attempts.
async fn run_fetch(inner: &Inner, mode: &Mode) -> (Result<AccessToken, TokenError>, u32) {
    // A streak of 429s left its next slot to this fetch.
    if let Some(due) = inner.throttle.due(Instant::now()) {
        tokio::time::sleep_until(due).await;
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match answer(inner, mode).await {
            Ok(token) => {
                inner.throttle.succeeded();
                return (Ok(token), attempt);
            }
            Err(e) => e,
        };
        let delay = match (throttle::is_throttled(&error), error.retry_after()) {
            (true, retry_after) => inner.throttle.throttled(
                Instant::now(),
                retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
                fastrand::f64(),
            ),
            (false, _) => retry_delay(&inner.options, attempt, &error, fastrand::f64()),
        };
        // Ahead of expiry nobody waits: one attempt. Once the held token is unusable, callers
        // wait on this fetch, so it retries like a cold one.
        let waited_on = *mode != Mode::Ahead || !inner.usable(Instant::now());
        // A credential that retried as its endpoint's guidance asks (managed identity) is not
        // retried again here: retries would multiply (4 provider attempts of 4 requests each).
        let retry = waited_on
            && error.is_transient()
            && !error.retries_spent()
            && attempt < inner.options.max_attempts
            && delay <= longest_retry_delay(&inner.options);
        if !retry {
            return (Err(error), attempt);
        }
        inner.telemetry.retrying(attempt, delay, &error);
        tokio::time::sleep(delay).await;
    }
}

/// `fetch` through the provider's shared cache when it has one and `mode` may read it (claims
/// fetches never do): a token another replica got, or `fetch`'s, written for the others. The
/// attempts counted are `fetch`'s (none when the token came from the cache).
async fn through_shared_cache(
    inner: &Inner,
    mode: &Mode,
    fetch: impl Future<Output = (Result<AccessToken, TokenError>, u32)>,
) -> (Result<AccessToken, TokenError>, u32) {
    #[cfg(feature = "shared-cache")]
    if let (Some(shared), Mode::Cold | Mode::Ahead) = (&inner.shared, mode) {
        let floor = crate::shared_cache::Floor {
            held: inner.current.load().as_ref().map(|c| c.token.clone()),
            refused: inner.refused.load_full().map(|t| (*t).clone()),
        };
        let sent = std::sync::atomic::AtomicU32::new(0);
        let result = shared
            .fetch_through(
                inner.credential.cache_binding(),
                &floor,
                super::state::refresh_on,
                async {
                    let (result, attempts) = fetch.await;
                    sent.store(attempts, std::sync::atomic::Ordering::Relaxed);
                    result
                },
            )
            .await;
        return (result, sent.load(std::sync::atomic::Ordering::Relaxed));
    }
    #[cfg(not(feature = "shared-cache"))]
    let _ = (inner, mode);
    fetch.await
}

/// One attempt: the credential's answer for `mode`, checked for the required roles.
async fn answer(inner: &Inner, mode: &Mode) -> Result<AccessToken, TokenError> {
    let request = match mode {
        Mode::Claims(claims) => inner.claims_request(claims),
        Mode::Cold | Mode::Ahead => inner.token_request(),
    };
    let answered = inner
        .credential
        .request_token(request)
        .await
        .and_then(|token| {
            let client_id = inner.credential.identity().map(|(_, client)| client);
            roles::check(
                &inner.options.required_roles,
                &token,
                &inner.scope,
                client_id,
            )?;
            Ok(token)
        });
    inner.telemetry.attempt_ended(&answered);
    answered
}
