//! Token endpoint admission control (token buckets over the Tokio clock, one
//! for the endpoint and one per tenant) and the per-second request counts a
//! fleet simulation reads.

use std::time::Duration;

use tokio::time::Instant;

use crate::Emulator;

/// Counts of token requests (`POST`s to any tenant's token endpoint, or to
/// one tenant's) since the emulator started or
/// [`Emulator::reset_token_request_stats`], from
/// [`Emulator::token_request_stats`] and [`Emulator::tenant_token_request_stats`].
///
/// Seconds are counted on the Tokio clock (so a paused test clock applies),
/// from the start or the last reset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenRequestStats {
    /// Requests received, throttled ones included.
    pub total: u64,
    /// Requests the rate limits let through (answered normally, or by a queued fault).
    pub admitted: u64,
    /// Requests answered `429` by a rate limit (the endpoint's or their tenant's).
    pub throttled: u64,
    /// Requests received in each second: `received_per_second[i]` counts
    /// those that arrived in `[i s, i+1 s)`. It ends with the last second
    /// that received one.
    pub received_per_second: Vec<u64>,
    /// Requests admitted in each second, indexed like `received_per_second`.
    pub admitted_per_second: Vec<u64>,
}

impl TokenRequestStats {
    /// The most requests received in one second.
    pub fn peak_per_second(&self) -> u64 {
        self.received_per_second.iter().copied().max().unwrap_or(0)
    }

    /// The mean requests received per second, over the seconds from the
    /// first to the last that received a request (0 when none did).
    pub fn mean_per_second(&self) -> f64 {
        match self.received_per_second.iter().position(|&n| n > 0) {
            Some(first) => {
                let seconds = self.received_per_second.len() - first;
                self.total as f64 / seconds as f64
            }
            None => 0.0,
        }
    }
}

/// A token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is available.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Admission state of the token endpoint.
#[derive(Debug)]
pub(crate) struct Admission {
    bucket: Option<Bucket>,
    since: Instant,
    stats: TokenRequestStats,
}

impl Admission {
    pub(crate) fn new() -> Admission {
        Admission {
            bucket: None,
            since: Instant::now(),
            stats: TokenRequestStats::default(),
        }
    }

    fn set_limit(&mut self, per_second: Option<u32>) {
        self.bucket = per_second.filter(|&n| n > 0).map(|n| Bucket {
            rate: f64::from(n),
            capacity: f64::from(n),
            tokens: f64::from(n),
            refilled_at: Instant::now(),
        });
    }

    /// Counts a request that arrived at `now` and was admitted or not.
    fn count(&mut self, now: Instant, admitted: bool) {
        let second = now.saturating_duration_since(self.since).as_secs() as usize;
        let s = &mut self.stats;
        if s.received_per_second.len() <= second {
            s.received_per_second.resize(second + 1, 0);
            s.admitted_per_second.resize(second + 1, 0);
        }
        s.total += 1;
        s.received_per_second[second] += 1;
        if admitted {
            s.admitted += 1;
            s.admitted_per_second[second] += 1;
        } else {
            s.throttled += 1;
        }
    }

    /// Takes a token from the bucket, if there is a limit; `Err` carries the
    /// whole seconds for `Retry-After`.
    fn take(&mut self, now: Instant) -> Result<(), u64> {
        match &mut self.bucket {
            None => Ok(()),
            Some(bucket) => bucket
                .take(now)
                .map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64),
        }
    }

    /// Starts counting afresh from now; the limit is unchanged.
    fn reset_stats(&mut self) {
        self.stats = TokenRequestStats::default();
        self.since = Instant::now();
    }
}

/// Decides whether a token request is admitted: through its tenant's limit
/// (when it addresses a known tenant), then the endpoint's, so a request the
/// tenant refuses takes nothing from the endpoint's bucket. Both count it.
/// `Err` carries the whole seconds for `Retry-After`.
pub(crate) fn admit(endpoint: &mut Admission, tenant: Option<&mut Admission>) -> Result<(), u64> {
    let now = Instant::now();
    let mut tenant = tenant;
    let verdict = match tenant.as_deref_mut() {
        Some(t) => t.take(now),
        None => Ok(()),
    }
    .and_then(|()| endpoint.take(now));
    endpoint.count(now, verdict.is_ok());
    if let Some(t) = tenant {
        t.count(now, verdict.is_ok());
    }
    verdict
}

impl Emulator {
    /// Limits token requests (`POST`s to any tenant's token endpoint) to
    /// `per_second` on average, with bursts of up to `per_second`: a token
    /// bucket of that capacity, full at the call, refilled at `per_second`
    /// per second on the Tokio clock (a paused test clock applies). A
    /// request beyond it is answered `429` with `Retry-After: <whole
    /// seconds until the bucket has a token, at least 1>` and Entra's
    /// `temporarily_unavailable` `AADSTS90055` error JSON, before any
    /// queued [`Fault`](crate::Fault) is taken. `None` (the default) or
    /// `Some(0)` admits everything.
    ///
    /// Over any interval of `T` seconds at most `per_second × (T + 1)`
    /// requests are admitted.
    pub fn set_token_rate_limit(&self, per_second: Option<u32>) {
        self.inner.shared.lock().admission.set_limit(per_second);
    }

    /// Token request counts since the start or the last
    /// [`Emulator::reset_token_request_stats`]: totals, throttled, and
    /// per-second series (see [`TokenRequestStats::peak_per_second`] and
    /// [`TokenRequestStats::mean_per_second`]).
    pub fn token_request_stats(&self) -> TokenRequestStats {
        self.inner.shared.lock().admission.stats.clone()
    }

    /// Clears [`Emulator::token_request_stats`] and starts counting seconds
    /// from now. The rate limit and [`Emulator::token_requests`] are unchanged.
    ///
    /// Every tenant's [`Emulator::tenant_token_request_stats`] is cleared too.
    pub fn reset_token_request_stats(&self) {
        let mut st = self.inner.shared.lock();
        st.admission.reset_stats();
        for tenant in st.directory.tenants_mut() {
            tenant.admission.reset_stats();
        }
    }

    /// Limits token requests to one tenant's token endpoint (`tenant`: its
    /// GUID or a domain of it), as [`Emulator::set_token_rate_limit`] limits
    /// all of them: a token bucket of `per_second`, whose `429` answers are
    /// the same. A request to the tenant must pass both limits (the tenant's
    /// first: one it throttles takes nothing from the endpoint's), so one
    /// tenant can be throttled while the others are served. `None` or
    /// `Some(0)` lifts the tenant's limit.
    ///
    /// # Panics
    ///
    /// If `tenant` names no tenant of this emulator.
    pub fn set_tenant_token_rate_limit(&self, tenant: &str, per_second: Option<u32>) {
        self.with_tenant(tenant, "set_tenant_token_rate_limit", |t| {
            t.admission.set_limit(per_second)
        });
    }

    /// Token request counts for one tenant's token endpoint (`tenant`: its
    /// GUID or a domain of it; requests by either name count), since the
    /// start or the last [`Emulator::reset_token_request_stats`]: `throttled`
    /// counts those the tenant's limit or the endpoint's answered `429`.
    ///
    /// # Panics
    ///
    /// If `tenant` names no tenant of this emulator.
    pub fn tenant_token_request_stats(&self, tenant: &str) -> TokenRequestStats {
        self.with_tenant(tenant, "tenant_token_request_stats", |t| {
            t.admission.stats.clone()
        })
    }
}
