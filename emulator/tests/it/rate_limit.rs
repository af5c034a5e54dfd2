//! Token endpoint admission rate limit and per-second request counts.

use std::time::Duration;

use crate::common::*;
use entra_emulator::{Emulator, Fault};

#[tokio::test(start_paused = true)]
async fn admits_a_burst_then_throttles_until_the_bucket_refills() {
    let (em, app) = start_with_demo_app().await;
    em.set_token_rate_limit(Some(3));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            assert_eq!(resp.headers()["retry-after"], "1");
            assert_entra_error(resp, 429, "temporarily_unavailable", 90055).await;
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    // A third of a second refills one token.
    tokio::time::advance(Duration::from_millis(334)).await;
    assert_eq!(
        request_token(&em, &app, Emulator::DEMO_API_SCOPE)
            .await
            .status(),
        200
    );
    assert_eq!(
        request_token(&em, &app, Emulator::DEMO_API_SCOPE)
            .await
            .status(),
        429
    );
    let stats = em.token_request_stats();
    assert_eq!((stats.total, stats.admitted, stats.throttled), (7, 4, 3));
    assert_eq!(em.token_requests(), 7);
}

#[tokio::test(start_paused = true)]
async fn throttling_comes_before_queued_faults_and_none_lifts_the_limit() {
    let (em, app) = start_with_demo_app().await;
    em.set_token_rate_limit(Some(1));
    em.push_fault(Fault::status(503));
    let first = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(first.status(), 503, "the admitted request takes the fault");
    em.push_fault(Fault::status(503));
    let throttled = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(throttled.status(), 429, "the fault stays queued");
    em.set_token_rate_limit(None);
    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 503);
    for _ in 0..5 {
        let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test(start_paused = true)]
async fn stats_count_requests_per_second_with_peak_and_mean() {
    let (em, app) = start_with_demo_app().await;
    let send = |n: usize| {
        let (em, app) = (em.clone(), app.clone());
        async move {
            for _ in 0..n {
                request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
            }
        }
    };
    assert_eq!(em.token_request_stats().mean_per_second(), 0.0);
    // Seconds 1, 2 and 3 (second 0 and 2 get none).
    tokio::time::advance(Duration::from_secs(1)).await;
    send(4).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    em.set_token_rate_limit(Some(1));
    send(2).await;
    let stats = em.token_request_stats();
    assert_eq!(stats.received_per_second, [0, 4, 0, 2]);
    assert_eq!(stats.admitted_per_second, [0, 4, 0, 1]);
    assert_eq!(stats.peak_per_second(), 4);
    // 6 requests over the 3 seconds from the first to the last busy one.
    assert_eq!(stats.mean_per_second(), 2.0);
    assert_eq!((stats.total, stats.throttled), (6, 1));

    em.reset_token_request_stats();
    send(1).await;
    let stats = em.token_request_stats();
    assert_eq!(stats.received_per_second, [1]);
    assert_eq!(stats.total, 1);
    assert_eq!(em.token_requests(), 7);
}

#[tokio::test]
async fn a_get_is_neither_counted_nor_throttled() {
    let em = Emulator::start().await;
    em.set_token_rate_limit(Some(1));
    for _ in 0..3 {
        let resp = client()
            .get(em.token_url(&em.tenant_id()))
            .send()
            .await
            .unwrap();
        assert_entra_error(resp, 400, "invalid_request", 900561).await;
    }
    assert_eq!(em.token_request_stats().total, 0);
}
