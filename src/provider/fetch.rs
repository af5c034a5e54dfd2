//! One token fetch: spawned so that no caller's cancellation stops it, retried with backoff,
//! traced, and recorded in the provider's state when it ends. Its slot is freed, and its waiters
//! answered, by one guard ([`FetchSlot`]) however it ends.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use super::roles;
use super::state::{Finished, Mode, Start, longest_retry_delay, retry_delay};
use super::{Inner, SharedFetch};
use crate::credential::TokenRequest;
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

impl Mode {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Ahead => "ahead",
            Mode::Claims(_) => "claims",
        }
    }
}

/// Fetch `start` as a future every waiter can share, and the task to spawn that runs it. The
/// task owns the fetch's [`FetchSlot`] from the start, so that a task dropped before it ever
/// runs (a runtime shutting down) still frees its slot and answers its waiters.
pub(super) fn prepare(
    inner: Arc<Inner>,
    start: &Start,
) -> (SharedFetch, impl Future<Output = ()> + Send + 'static) {
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
        let span = fetch_span(&inner, &mode);
        slot.result = Some(run_fetch(&inner, &mode, id).instrument(span).await);
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
        self.inner.lock_state().free(self.id);
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

fn fetch_span(inner: &Inner, mode: &Mode) -> tracing::Span {
    let (tenant, client) = inner.credential.identity().unwrap_or(("", ""));
    tracing::info_span!(
        "entra_token_fetch",
        tenant_id = %tenant,
        client_id = %client,
        scope = %inner.scope,
        mode = mode.name(),
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
        aadsts = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    )
}

async fn run_fetch(inner: &Arc<Inner>, mode: &Mode, id: u64) -> Result<AccessToken, TokenError> {
    tracing::debug!(
        "{}",
        match mode {
            Mode::Cold => "no usable token; fetching",
            Mode::Ahead => "token in its refresh window; refreshing in the background",
            Mode::Claims(_) =>
                "claims challenge; fetching a token with the claims, bypassing the cache",
        }
    );
    let started = Instant::now();
    let (result, attempt) = through_shared_cache(inner, mode, attempts(inner, mode)).await;

    let now = Instant::now();
    record(&result, attempt, now - started);
    inner.metrics.fetch_ended(mode, &result, now - started);
    let mut state = inner.lock_state();
    let finished = state.finish(
        &inner.options,
        id,
        mode,
        result.as_ref(),
        now,
        fastrand::f64(),
    );
    if finished == Finished::Stored {
        inner.publish(&state);
    }
    drop(state);
    // Logged after the lock is released: a subscriber is user code.
    match &result {
        Ok(_) => inner.last_error.store(None),
        Err(error) => inner.last_error.store(Some(Arc::new(error.clone()))),
    }
    if let Err(error) = &result {
        match finished {
            Finished::ClaimsFailed => tracing::warn!(
                error = %error,
                "token request with the claims of a claims challenge failed"
            ),
            Finished::AheadFailed { retry_in } => tracing::warn!(
                error = %error,
                retry_in_ms = retry_in.as_millis() as u64,
                "refresh ahead of expiry failed; still using the cached token"
            ),
            Finished::ColdFailed { retry_in } => tracing::warn!(
                error = %error,
                retry_in_ms = retry_in.as_millis() as u64,
                "token request failed"
            ),
            Finished::AbandonedFailed => tracing::debug!(
                error = %error,
                "a token fetch that ran past its deadline, and was replaced, failed"
            ),
            Finished::Stored | Finished::Discarded => {}
        }
    }
    result
}

/// The token requests of one fetch: retried with backoff while transient failures allow. Gives
/// the result and how many requests were sent.
async fn attempts(inner: &Arc<Inner>, mode: &Mode) -> (Result<AccessToken, TokenError>, u32) {
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        inner
            .counters
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = match mode {
            Mode::Claims(claims) => TokenRequest::new(&inner.scope).with_claims(claims),
            Mode::Cold | Mode::Ahead => inner.token_request(),
        };
        let fetched = inner
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
        inner.metrics.request_ended(&fetched);
        let error = match fetched {
            Ok(token) => {
                inner.counters.succeeded(SystemTime::now());
                break Ok(token);
            }
            Err(e) => e,
        };
        inner.counters.failed();
        let delay = retry_delay(&inner.options, attempt, &error, fastrand::f64());
        // Ahead of expiry nobody waits: one attempt. Once the held token is unusable, callers
        // wait on this fetch, so it retries like a cold one.
        let waited_on = *mode != Mode::Ahead || !inner.usable(Instant::now());
        let retry = waited_on
            && error.is_transient()
            && attempt < inner.options.max_attempts
            && delay <= longest_retry_delay(&inner.options);
        if !retry {
            break Err(error);
        }
        tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "token request failed; retrying");
        tokio::time::sleep(delay).await;
    };
    (result, attempt)
}

/// `fetch` through the provider's shared cache when it has one and `mode` may read it (claims
/// fetches never do): a token another replica got, or `fetch`'s, written for the others.
async fn through_shared_cache(
    inner: &Arc<Inner>,
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
                |token| super::state::refresh_on(token),
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

/// Records the fetch's outcome on its span.
fn record(result: &Result<AccessToken, TokenError>, attempts: u32, took: Duration) {
    let span = tracing::Span::current();
    span.record("attempts", attempts);
    span.record("duration_ms", took.as_millis() as u64);
    match result {
        Ok(_) => {
            span.record("outcome", "ok");
        }
        Err(error) => {
            span.record("outcome", tracing::field::debug(error.kind()));
            if let Some(e) = error.entra() {
                span.record("aadsts", tracing::field::debug(e.codes()));
                if let Some(t) = e.trace_id() {
                    span.record("trace_id", t);
                }
                if let Some(c) = e.correlation_id() {
                    span.record("correlation_id", c);
                }
            }
        }
    }
}
