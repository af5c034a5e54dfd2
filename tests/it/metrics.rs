//! The provider's OpenTelemetry instruments against the Entra emulator, read through the SDK's
//! in-memory exporter: one good fetch, one failed fetch (an injected fault), an invalidation, a
//! claims challenge, and the expiry gauge; none recorded when a cached token is served.

use std::time::Duration;

use entra_emulator::{Emulator, Fault};
use opentelemetry::metrics::MeterProvider;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tower_entra::{TokenErrorKind, TokenProvider, TokenProviderBuilder};

use crate::support::{SECRET, Setup, credential, setup};

/// One exported data point: instrument name, attributes (sorted key, value), value.
type Point = (String, Vec<(String, String)>, f64);

/// An SDK meter provider exporting to memory; flushed by hand.
struct Recorder {
    exporter: InMemoryMetricExporter,
    meters: SdkMeterProvider,
}

impl Recorder {
    fn new() -> Recorder {
        let exporter = InMemoryMetricExporter::default();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        Recorder { exporter, meters }
    }

    /// The instruments' data points now, as (name, attributes sorted, value): a sum's value, a
    /// histogram's count, a gauge's value.
    fn points(&self) -> Vec<Point> {
        self.exporter.reset();
        self.meters.force_flush().unwrap();
        let exported: Vec<ResourceMetrics> = self.exporter.get_finished_metrics().unwrap();
        let mut points = Vec::new();
        for resource in &exported {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics() {
                    let name = metric.name().to_owned();
                    let mut push = |attrs: Vec<&KeyValue>, value: f64| {
                        let mut attrs: Vec<(String, String)> = attrs
                            .into_iter()
                            .map(|kv| (kv.key.to_string(), value_text(&kv.value)))
                            .collect();
                        attrs.sort();
                        points.push((name.clone(), attrs, value));
                    };
                    match metric.data() {
                        AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                            for p in sum.data_points() {
                                push(p.attributes().collect(), p.value() as f64);
                            }
                        }
                        AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                            for p in h.data_points() {
                                push(p.attributes().collect(), p.count() as f64);
                            }
                        }
                        AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                            for p in g.data_points() {
                                push(p.attributes().collect(), p.value());
                            }
                        }
                        AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                            for p in g.data_points() {
                                push(p.attributes().collect(), p.value() as f64);
                            }
                        }
                        other => panic!("{name}: unexpected data {other:?}"),
                    }
                }
            }
        }
        points.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        points
    }

    /// The value of `name`'s data point with exactly `attrs` (besides `scope`), if any.
    fn value(&self, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(String, String)> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("scope".to_owned(), Emulator::DEMO_API_SCOPE.to_owned())])
            .collect();
        want.sort();
        self.points()
            .into_iter()
            .find(|(n, a, _)| n == name && *a == want)
            .map(|(_, _, v)| v)
    }
}

fn value_text(value: &Value) -> String {
    value.as_str().into_owned()
}

/// A fresh [`Recorder`], the emulator set-up, and a provider of the demo API's token from it
/// whose instruments record into that recorder; `configure` sets what the test varies.
async fn metered_provider(
    configure: impl FnOnce(TokenProviderBuilder) -> TokenProviderBuilder,
) -> (Recorder, Setup, TokenProvider) {
    let recorder = Recorder::new();
    let s = setup().await;
    let builder = TokenProvider::builder(
        credential(&s.emulator, &s.app, SECRET),
        Emulator::DEMO_API_SCOPE,
    );
    let provider = configure(builder)
        .meter(recorder.meters.meter("tower-entra"))
        .build()
        .unwrap();
    (recorder, s, provider)
}

const REQUESTS: &str = "tower_entra.token.requests";
const DURATION: &str = "tower_entra.token.fetch.duration";
const EXPIRES_IN: &str = "tower_entra.token.expires_in";

#[tokio::test(start_paused = true)]
async fn one_ok_and_one_failed_fetch_are_counted_by_outcome_and_aadsts_code() {
    let (recorder, s, provider) = metered_provider(|b| b.max_attempts(1)).await;

    // Nothing yet: no token request, and no token for the gauge to report.
    assert_eq!(recorder.points(), []);

    provider.token().await.unwrap();
    // Served from the cache: no more recordings.
    for _ in 0..10 {
        provider.token().await.unwrap();
    }
    assert_eq!(recorder.value(REQUESTS, &[("outcome", "ok")]), Some(1.0));
    assert_eq!(
        recorder.value(DURATION, &[("outcome", "ok"), ("mode", "cold")]),
        Some(1.0)
    );
    let left = recorder.value(EXPIRES_IN, &[]).expect("the expiry gauge");
    assert!(left > 3000.0 && left <= 3600.0, "{left}");

    // The token is refused by an API, dropped; the next fetch meets a 500 from Entra.
    let token = provider.token().await.unwrap();
    provider.invalidate(&token);
    s.emulator.push_fault(Fault::status(500));
    let e = provider.token().await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Transient);

    assert_eq!(
        recorder.value(REQUESTS, &[("aadsts", "50000"), ("outcome", "transient")]),
        Some(1.0)
    );
    assert_eq!(recorder.value(REQUESTS, &[("outcome", "ok")]), Some(1.0));
    assert_eq!(
        recorder.value(DURATION, &[("outcome", "transient"), ("mode", "cold")]),
        Some(1.0)
    );
    assert_eq!(
        recorder.value("tower_entra.token.invalidations", &[]),
        Some(1.0)
    );
    // No token held: the gauge reports none.
    assert_eq!(recorder.value(EXPIRES_IN, &[]), None);
    assert_eq!(s.emulator.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_a_request_and_a_fetch_is_timed_once() {
    let (recorder, s, provider) = metered_provider(|b| b).await;
    s.emulator.push_fault(Fault::status(503));
    provider.token().await.unwrap();
    assert_eq!(
        recorder.value(REQUESTS, &[("aadsts", "90033"), ("outcome", "transient")]),
        Some(1.0)
    );
    assert_eq!(recorder.value(REQUESTS, &[("outcome", "ok")]), Some(1.0));
    // One fetch, retried: one duration, at least the backoff (paused clock: exact delays).
    assert_eq!(
        recorder.value(DURATION, &[("outcome", "ok"), ("mode", "cold")]),
        Some(1.0)
    );

    provider
        .token_with_claims(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#)
        .await
        .unwrap();
    assert_eq!(
        recorder.value("tower_entra.token.claims_challenges", &[]),
        Some(1.0)
    );
    assert_eq!(
        recorder.value(DURATION, &[("outcome", "ok"), ("mode", "claims")]),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn the_expiry_gauge_counts_down_and_stops_with_the_provider() {
    // The set-up is kept: its emulator serves the token.
    let (recorder, _setup, provider) = metered_provider(|b| b).await;
    provider.token().await.unwrap();
    let expires_on = provider.stats().token_expires_on.unwrap();
    let left = recorder.value(EXPIRES_IN, &[]).unwrap();
    let want = expires_on
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    // Read from the same published token, a moment apart.
    assert!((want - left).abs() < 5.0, "gauge {left}, stats {want}");
    // Once the provider is gone, the callback (still registered with the SDK) reports nothing,
    // and does not keep the provider alive.
    drop(provider);
    assert_eq!(recorder.value(EXPIRES_IN, &[]), None);
}

/// Another tenant's provider counts into its scope's series and leaves the gauge to the home
/// provider: no series per tenant, and one gauge value per scope, the home token's. Seen
/// failing with tenant providers registering their own gauge (it reported their 600 s).
#[tokio::test(start_paused = true)]
async fn another_tenants_provider_counts_into_its_scope_and_leaves_the_gauge_to_home() {
    let recorder = Recorder::new();
    let home = TokenProvider::builder(
        crate::support::any_tenant::AnyTenant,
        Emulator::DEMO_API_SCOPE,
    )
    .meter(recorder.meters.meter("tower-entra"))
    .build()
    .unwrap();
    home.token().await.unwrap();
    let contoso = home.for_tenant("contoso.onmicrosoft.com").unwrap();
    contoso.token().await.unwrap();

    assert_eq!(recorder.value(REQUESTS, &[("outcome", "ok")]), Some(2.0));
    let points = recorder.points();
    assert!(
        points
            .iter()
            .all(|(_, attrs, _)| attrs.iter().all(|(k, _)| k != "tenant")),
        "{points:?}"
    );
    let gauges: Vec<f64> = points
        .iter()
        .filter(|(name, _, _)| name == EXPIRES_IN)
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(gauges.len(), 1, "{points:?}");
    assert!(
        gauges[0] > 3000.0,
        "the home token's expiry, got {}",
        gauges[0]
    );
}

/// The shared cache's instruments, against a real redis-server (real time): a hit, then Redis
/// stopped (an error, and the breaker open).
#[cfg(feature = "redis")]
#[tokio::test]
async fn shared_cache_hits_errors_and_the_breaker_are_exported() {
    use crate::support::redis_server::RedisServer;
    use tower_entra::RedisTokenCache;

    let mut redis = RedisServer::start();
    let cache = || {
        RedisTokenCache::builder(redis.url())
            .breaker(1, Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let (recorder, s, provider) = metered_provider(|b| b.shared_cache(cache())).await;
    // Another replica wrote the token; this one reads it.
    TokenProvider::builder(
        credential(&s.emulator, &s.app, SECRET),
        Emulator::DEMO_API_SCOPE,
    )
    .shared_cache(cache())
    .build()
    .unwrap()
    .token()
    .await
    .unwrap();
    let token = provider.token().await.unwrap();
    assert_eq!(s.emulator.token_requests(), 1);
    assert_eq!(
        recorder.value("tower_entra.shared_cache.hits", &[]),
        Some(1.0)
    );
    assert_eq!(
        recorder.value("tower_entra.shared_cache.misses", &[]),
        Some(0.0)
    );
    assert_eq!(
        recorder.value("tower_entra.shared_cache.lease_waits", &[]),
        Some(0.0)
    );
    assert_eq!(
        recorder.value("tower_entra.shared_cache.skipping", &[]),
        Some(0.0)
    );

    redis.stop();
    provider.invalidate(&token);
    provider.token().await.unwrap();
    assert_eq!(s.emulator.token_requests(), 2);
    assert!(recorder.value("tower_entra.shared_cache.errors", &[]) >= Some(1.0));
    assert_eq!(
        recorder.value("tower_entra.shared_cache.skipping", &[]),
        Some(1.0)
    );
}
