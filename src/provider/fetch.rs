//! One token fetch: spawned so that no caller's cancellation stops it, retried with backoff,
//! traced, and recorded in the provider's state when it ends, however it ends.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::builder::ProviderOptions;
use super::{Shared_, SharedFetch};
use crate::credential::TokenRequest;
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// No usable token: callers wait; transient failures are retried within the fetch.
    Cold,
    /// A usable token is held: one attempt (more once the held token stops being usable, as
    /// callers then wait on this fetch); on failure the next waits for a backoff.
    Ahead,
    /// A claims challenge: a token carrying these (merged) claims, bypassing the cache; callers
    /// wait, so transient failures are retried as for `Cold`.
    Claims(String),
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Ahead => "ahead",
            Mode::Claims(_) => "claims",
        }
    }
}

/// Starts fetch `id` in a spawned task and returns a future every waiter can share. Fails only
/// when no tokio runtime is running.
pub(super) fn spawn_fetch(
    shared: Arc<Shared_>,
    mode: Mode,
    id: u64,
) -> Result<(SharedFetch, tokio::task::AbortHandle), TokenError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        TokenError::configuration(
            "TokenProvider fetches tokens on the tokio runtime, and none is running here; use it from within a tokio runtime (e.g. #[tokio::main])",
        )
    })?;
    // The span is made in the task, not here: this runs under the provider's state lock, and
    // neither user code (`identity`) nor a subscriber should run there.
    let task = runtime.spawn(async move {
        let span = fetch_span(&shared, &mode);
        run_fetch(shared, mode, id).instrument(span).await
    });
    let handle = task.abort_handle();
    let fetch = async move {
        task.await.unwrap_or_else(|e| {
            Err(TokenError::new(
                TokenErrorKind::Connection,
                if e.is_cancelled() {
                    "the token fetch was cancelled (the runtime is shutting down)"
                } else {
                    "the token fetch panicked"
                },
            ))
        })
    }
    .boxed()
    .shared();
    Ok((fetch, handle))
}

fn fetch_span(shared: &Shared_, mode: &Mode) -> tracing::Span {
    let (tenant, client) = shared.credential.identity().unwrap_or(("", ""));
    tracing::info_span!(
        "entra_token_fetch",
        tenant_id = %tenant,
        client_id = %client,
        scope = %shared.scope,
        mode = mode.name(),
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
        aadsts = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    )
}

/// Frees the fetch's slot when the task ends after it started running (a panic included), so
/// that the next caller starts a new fetch instead of joining a dead one. A task dropped before
/// it ran never makes this guard; its slot reads as free because the task is finished.
struct FreeSlot {
    shared: Arc<Shared_>,
    id: u64,
}

impl Drop for FreeSlot {
    fn drop(&mut self) {
        self.shared.lock_state().free(self.id);
    }
}

async fn run_fetch(shared: Arc<Shared_>, mode: Mode, id: u64) -> Result<AccessToken, TokenError> {
    let slot = FreeSlot {
        shared: shared.clone(),
        id,
    };
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
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        shared
            .counters
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = match &mode {
            Mode::Claims(claims) => TokenRequest::new(&shared.scope).with_claims(claims),
            Mode::Cold | Mode::Ahead => shared.token_request(),
        };
        let error = match shared.credential.request_token(request).await {
            Ok(token) => break Ok(token),
            Err(e) => e,
        };
        shared
            .counters
            .failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delay = retry_delay(&shared.options, attempt, &error);
        // Ahead of expiry nobody waits: one attempt. Once the held token is unusable, callers
        // wait on this fetch, so it retries like a cold one.
        let waited_on = mode != Mode::Ahead || shared.usable(Instant::now()).is_none();
        let retry = waited_on
            && error.is_transient()
            && attempt < shared.options.max_attempts
            && delay <= shared.options.max_backoff.max(Duration::from_secs(60));
        if !retry {
            break Err(error);
        }
        tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "token request failed; retrying");
        tokio::time::sleep(delay).await;
    };

    let now = Instant::now();
    record(&result, attempt, now - started);
    // Logged after the lock is released: a subscriber is user code.
    let mut warning: Option<(&'static str, Option<Duration>)> = None;
    let mut state = shared.lock_state();
    match (&result, &mode) {
        (Ok(token), Mode::Claims(claims)) => {
            shared.store(&state, id, Some(claims.clone()), token, now);
            shared.last_error.store(None);
        }
        (Ok(token), Mode::Cold | Mode::Ahead) => {
            shared.store(&state, id, None, token, now);
            state.refresh_not_before = None;
            state.cold_error = None;
            state.consecutive_failures = 0;
            shared.last_error.store(None);
        }
        (Err(error), Mode::Claims(_)) => {
            warning = Some((
                "token request with the claims of a claims challenge failed",
                None,
            ));
            shared.last_error.store(Some(Arc::new(error.clone())));
        }
        (Err(error), Mode::Cold | Mode::Ahead) => {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            let backoff = retry_delay(&shared.options, state.consecutive_failures, error);
            state.refresh_not_before = Some(now + backoff);
            shared.last_error.store(Some(Arc::new(error.clone())));
            if shared.usable(now).is_some() {
                warning = Some((
                    "refresh ahead of expiry failed; still using the cached token",
                    Some(backoff),
                ));
            } else {
                let until = now + backoff.min(shared.options.max_backoff);
                state.cold_error = Some((until, error.clone()));
                warning = Some(("token request failed", None));
            }
        }
    }
    // Free the slot under the same lock that stored the result, so that no caller sees
    // neither; the guard's own free is then a no-op.
    state.free(id);
    drop(state);
    drop(slot);
    if let (Some((message, retry_in)), Err(error)) = (warning, &result) {
        match retry_in {
            Some(r) => {
                tracing::warn!(error = %error, retry_in_ms = r.as_millis() as u64, "{message}")
            }
            None => tracing::warn!(error = %error, "{message}"),
        }
    }
    result
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

/// Exponential backoff with full jitter in its upper half, never less than `Retry-After`.
pub(super) fn retry_delay(options: &ProviderOptions, attempt: u32, error: &TokenError) -> Duration {
    let exp = options
        .initial_backoff
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(options.max_backoff);
    let jittered = exp.mul_f64(0.5 + fastrand::f64() / 2.0);
    match error.retry_after() {
        Some(ra) => ra.max(jittered.min(ra.saturating_add(options.initial_backoff))),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let o = ProviderOptions::default();
        let plain = TokenError::new(TokenErrorKind::Transient, "x");
        let d1 = retry_delay(&o, 1, &plain);
        let d4 = retry_delay(&o, 4, &plain);
        assert!(
            d1 >= Duration::from_millis(250) && d1 <= Duration::from_millis(500),
            "{d1:?}"
        );
        assert!(
            d4 >= Duration::from_secs(2) && d4 <= Duration::from_secs(4),
            "{d4:?}"
        );
        assert!(retry_delay(&o, 20, &plain) <= o.max_backoff);
        let ra = plain
            .clone()
            .with_retry_after(Some(Duration::from_secs(10)));
        assert!(retry_delay(&o, 1, &ra) >= Duration::from_secs(10));
    }
}
