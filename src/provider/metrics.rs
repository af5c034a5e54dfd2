//! The provider's OpenTelemetry instruments (feature `opentelemetry`), and their no-op twin
//! when the feature is off, so that the provider calls the same methods either way.
//!
//! Everything here runs off the cached path: where a token request or fetch ends, where a
//! token is dropped after an API refused it, where a claims fetch starts. The gauge of seconds
//! until the cached token expires is read by the exporter, in a callback, from the token the
//! provider publishes; the callback holds the provider weakly, so that a meter provider that
//! outlives a token provider keeps neither alive nor reports for it.
//!
//! No instrument carries the tenant: a tenant per request would make a series per customer, up
//! to [`max_tenants`](crate::TokenProviderBuilder::max_tenants). The providers of a provider's
//! other tenants ([`TokenProvider::for_tenant`](crate::TokenProvider::for_tenant)) count into
//! the same `scope` series as their home provider, and register no gauges: one gauge per scope,
//! the home tenant's token (many providers observing one attribute set would report whichever
//! ran last). Their own figures are in each one's [`stats`](crate::TokenProvider::stats), and
//! the fetch logs name the tenant (logs are per event, not per series).
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `tower_entra.token.requests` | counter | `scope`, `outcome` (`ok` or the error kind, e.g. `authentication`), `aadsts` (the AADSTS code, when Entra gave one) |
//! | `tower_entra.token.fetch.duration` | histogram, s | `scope`, `outcome`, `mode` (`cold`, `ahead`, `claims`) |
//! | `tower_entra.token.expires_in` | observable gauge, s | `scope` |
//! | `tower_entra.token.invalidations` | counter | `scope` |
//! | `tower_entra.token.claims_challenges` | counter | `scope` |

pub(super) use imp::{MeterChoice, Metrics};

#[cfg(feature = "opentelemetry")]
mod imp {
    use std::sync::{Arc, Weak};
    use std::time::{Duration, SystemTime};

    use opentelemetry::KeyValue;
    use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};

    use crate::error::TokenError;
    use crate::provider::Inner;
    use crate::provider::state::Mode;
    use crate::token::AccessToken;

    /// The meter the instruments come from: the one given to
    /// [`TokenProviderBuilder::meter`](crate::TokenProviderBuilder::meter), else the global one.
    pub(in crate::provider) type MeterChoice = Option<Meter>;

    /// The name of the global meter the instruments come from by default.
    const METER_NAME: &str = "tower-entra";

    /// Histogram bucket bounds for a fetch's duration, in seconds.
    const FETCH_SECONDS_BUCKETS: [f64; 17] = [
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0,
        60.0, 120.0,
    ];

    /// One provider's instruments, and its `scope` attribute.
    pub(in crate::provider) struct Metrics {
        scope: KeyValue,
        requests: Counter<u64>,
        fetch_duration: Histogram<f64>,
        invalidations: Counter<u64>,
        claims_challenges: Counter<u64>,
        /// The instruments read from the provider when exported; none for another tenant's
        /// provider (see the module docs).
        _observed: Option<Observed>,
    }

    /// The instruments the exporter reads from the provider. Kept so that they live as long as
    /// the provider (their callbacks hold it weakly, and report nothing once it is gone).
    struct Observed {
        _expires_in: ObservableGauge<f64>,
        /// The shared cache's counts and breaker.
        _shared_cache: [opentelemetry::metrics::ObservableCounter<u64>; 4],
        _shared_cache_skipping: ObservableGauge<u64>,
    }

    impl Metrics {
        /// The instruments of a provider of `scope`; those read from the provider (`observed`)
        /// only for a home provider.
        pub(in crate::provider) fn new(
            meter: MeterChoice,
            scope: &str,
            observed: Option<Weak<Inner>>,
        ) -> Self {
            let meter = meter.unwrap_or_else(|| opentelemetry::global::meter(METER_NAME));
            // An `Arc<str>` value: attributes are cloned cheaply at each recording.
            let scope = KeyValue::new("scope", Arc::<str>::from(scope));
            Metrics {
                _observed: observed.map(|inner| Observed::new(&meter, &scope, inner)),
                requests: meter
                    .u64_counter("tower_entra.token.requests")
                    .with_description(
                        "Token requests sent to the token endpoint (each attempt), by outcome and AADSTS code",
                    )
                    .with_unit("{request}")
                    .build(),
                fetch_duration: meter
                    .f64_histogram("tower_entra.token.fetch.duration")
                    .with_description(
                        "How long a token fetch took, retries and their backoff included",
                    )
                    .with_unit("s")
                    // The SDK's default buckets suit milliseconds; these suit seconds (the
                    // semantic conventions' HTTP buckets, then the reach of retries).
                    .with_boundaries(FETCH_SECONDS_BUCKETS.to_vec())
                    .build(),
                invalidations: meter
                    .u64_counter("tower_entra.token.invalidations")
                    .with_description("Cached tokens dropped because an API refused them")
                    .with_unit("{token}")
                    .build(),
                claims_challenges: meter
                    .u64_counter("tower_entra.token.claims_challenges")
                    .with_description(
                        "Token fetches started for a claims challenge (Continuous Access Evaluation)",
                    )
                    .with_unit("{fetch}")
                    .build(),
                scope,
            }
        }

        /// One token request (one attempt of a fetch) ended with `result`.
        pub(in crate::provider) fn request_ended(&self, result: &Result<AccessToken, TokenError>) {
            let outcome = KeyValue::new("outcome", outcome(result));
            let code = result
                .as_ref()
                .err()
                .and_then(|e| e.entra())
                .and_then(|e| e.codes().first().copied());
            match code {
                Some(code) => self.requests.add(
                    1,
                    &[
                        self.scope.clone(),
                        outcome,
                        KeyValue::new("aadsts", i64::from(code)),
                    ],
                ),
                None => self.requests.add(1, &[self.scope.clone(), outcome]),
            }
        }

        /// A fetch in `mode` ended with `result` after `took`.
        pub(in crate::provider) fn fetch_ended(
            &self,
            mode: &Mode,
            result: &Result<AccessToken, TokenError>,
            took: Duration,
        ) {
            self.fetch_duration.record(
                took.as_secs_f64(),
                &[
                    self.scope.clone(),
                    KeyValue::new("outcome", outcome(result)),
                    KeyValue::new("mode", mode.name()),
                ],
            );
        }

        /// A cached token was dropped because an API refused it.
        pub(in crate::provider) fn invalidated(&self) {
            self.invalidations.add(1, std::slice::from_ref(&self.scope));
        }

        /// A fetch for a claims challenge started.
        pub(in crate::provider) fn claims_challenge(&self) {
            self.claims_challenges
                .add(1, std::slice::from_ref(&self.scope));
        }
    }

    impl Observed {
        fn new(meter: &Meter, scope: &KeyValue, inner: Weak<Inner>) -> Self {
            let gauge_scope = [scope.clone()];
            let shared_cache = shared_cache_counters(meter, scope, &inner);
            let shared_cache_skipping = meter
                .u64_observable_gauge("tower_entra.shared_cache.skipping")
                .with_description(
                    "1 while the shared cache's breaker is open (its store skipped after failures), else 0",
                )
                .with_callback({
                    let (inner, attributes) = (inner.clone(), [scope.clone()]);
                    move |observer| {
                        if let Some(counts) = inner.upgrade().and_then(|i| i.shared_cache_counts()) {
                            observer.observe(u64::from(counts.skipping), &attributes);
                        }
                    }
                })
                .build();
            Observed {
                _expires_in: meter
                    .f64_observable_gauge("tower_entra.token.expires_in")
                    .with_description("Seconds until the cached token expires")
                    .with_unit("s")
                    .with_callback(move |observer| {
                        if let Some(left) = inner.upgrade().and_then(|i| expires_in(&i)) {
                            observer.observe(left.as_secs_f64(), &gauge_scope);
                        }
                    })
                    .build(),
                _shared_cache: shared_cache,
                _shared_cache_skipping: shared_cache_skipping,
            }
        }
    }

    /// The shared cache's hits, misses, lease waits and errors, as observable counters (nothing
    /// is observed for a provider without a shared cache).
    fn shared_cache_counters(
        meter: &Meter,
        scope: &KeyValue,
        inner: &Weak<Inner>,
    ) -> [opentelemetry::metrics::ObservableCounter<u64>; 4] {
        type Read = fn(&super::SharedCounts) -> u64;
        let instruments: [(&'static str, &'static str, Read); 4] = [
            (
                "tower_entra.shared_cache.hits",
                "Tokens taken from the shared cache instead of asking Entra",
                |c| c.hits,
            ),
            (
                "tower_entra.shared_cache.misses",
                "Reads of the shared cache that found no token to take",
                |c| c.misses,
            ),
            (
                "tower_entra.shared_cache.lease_waits",
                "Times another replica held the lease and this one waited for its token",
                |c| c.lease_waits,
            ),
            (
                "tower_entra.shared_cache.errors",
                "Shared-cache calls that failed, timed out or were skipped by its breaker",
                |c| c.errors,
            ),
        ];
        instruments.map(|(name, description, read)| {
            let (inner, attributes) = (inner.clone(), [scope.clone()]);
            meter
                .u64_observable_counter(name)
                .with_description(description)
                .with_callback(move |observer| {
                    if let Some(counts) = inner.upgrade().and_then(|i| i.shared_cache_counts()) {
                        observer.observe(read(&counts), &attributes);
                    }
                })
                .build()
        })
    }

    fn outcome(result: &Result<AccessToken, TokenError>) -> &'static str {
        use crate::error::TokenErrorKind as K;
        match result {
            Ok(_) => "ok",
            Err(e) => match e.kind() {
                K::Configuration => "configuration",
                K::Unavailable => "unavailable",
                K::InvalidScope => "invalid_scope",
                K::Authentication => "authentication",
                K::Rejected => "rejected",
                K::Transient => "transient",
                K::Timeout => "timeout",
                K::Connection => "connection",
                K::InvalidResponse => "invalid_response",
                K::UnsafeDestination => "unsafe_destination",
                K::MissingPermission => "missing_permission",
                K::TenantNotAllowed => "tenant_not_allowed",
                K::ConsentRequired => "consent_required",
            },
        }
    }

    /// How long until the published token expires (zero once it has), if one is held.
    fn expires_in(inner: &Inner) -> Option<Duration> {
        let expires_on = inner.current.load().as_ref()?.token.expires_on();
        Some(
            expires_on
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

#[cfg(not(feature = "opentelemetry"))]
mod imp {
    use std::sync::Weak;
    use std::time::Duration;

    use crate::error::TokenError;
    use crate::provider::Inner;
    use crate::provider::state::Mode;
    use crate::token::AccessToken;

    /// Without the feature there is no meter to choose: always `None`.
    pub(in crate::provider) type MeterChoice = Option<std::convert::Infallible>;

    /// No instruments: every recording compiles to nothing.
    pub(in crate::provider) struct Metrics;

    impl Metrics {
        pub(in crate::provider) fn new(_: MeterChoice, _: &str, _: Option<Weak<Inner>>) -> Self {
            Metrics
        }
        pub(in crate::provider) fn request_ended(&self, _: &Result<AccessToken, TokenError>) {}
        pub(in crate::provider) fn fetch_ended(
            &self,
            _: &Mode,
            _: &Result<AccessToken, TokenError>,
            _: Duration,
        ) {
        }
        pub(in crate::provider) fn invalidated(&self) {}
        pub(in crate::provider) fn claims_challenge(&self) {}
    }
}

/// What [`ProviderStats`](crate::ProviderStats) and the meters report of the shared cache (zero without one).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SharedCounts {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) lease_waits: u64,
    pub(crate) errors: u64,
    pub(crate) skipping: bool,
}
