//! Start-up and readiness against the Entra emulator: `warm_up` fails fast with the error, and
//! `stats()` says when the last token came, when the held one expires and how many token
//! requests failed in a row.

use std::time::{Duration, SystemTime};

use crate::support::{SECRET, credential, setup};
use entra_emulator::{Emulator, Fault};
use tower_entra::{TokenErrorKind, TokenProvider};

#[tokio::test(start_paused = true)]
async fn warm_up_fails_fast_on_a_wrong_secret() {
    let s = setup().await;
    let provider = TokenProvider::builder(
        credential(&s.emulator, &s.app, "not-the-secret"),
        Emulator::DEMO_API_SCOPE,
    )
    .build()
    .unwrap();
    let e = provider.warm_up().await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Authentication);
    assert!(e.to_string().contains("AADSTS7000215"), "{e}");
    // One request: a wrong secret is not retried.
    assert_eq!(s.emulator.token_requests(), 1);
    let stats = provider.stats();
    assert_eq!(stats.consecutive_failures, 1);
    assert!(stats.last_success.is_none() && stats.token_expires_on.is_none());
    assert_eq!(
        stats.last_error.map(|e| e.kind()),
        Some(TokenErrorKind::Authentication)
    );
}

#[tokio::test(start_paused = true)]
async fn warm_up_caches_the_token_that_requests_then_use() {
    let s = setup().await;
    assert!(s.provider.stats().last_success.is_none());
    let before = SystemTime::now();
    s.provider.warm_up().await.unwrap();
    assert_eq!(s.emulator.token_requests(), 1);
    let stats = s.provider.stats();
    assert!(stats.last_success.is_some_and(|t| t >= before), "{stats:?}");
    assert!(
        stats
            .token_expires_on
            .is_some_and(|t| t > before + Duration::from_secs(3000)),
        "{stats:?}"
    );
    assert_eq!(stats.consecutive_failures, 0);
    // The warmed token is what requests get, without another token request.
    s.provider.token().await.unwrap();
    s.provider.warm_up().await.unwrap();
    assert_eq!(s.emulator.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_count_failed_requests_until_one_succeeds() {
    let s = setup().await;
    let provider = TokenProvider::builder(
        credential(&s.emulator, &s.app, SECRET),
        Emulator::DEMO_API_SCOPE,
    )
    .max_attempts(2)
    .build()
    .unwrap();
    for _ in 0..3 {
        s.emulator.push_fault(Fault::status(503));
    }
    // Two attempts, both failed.
    let e = provider.warm_up().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(provider.stats().consecutive_failures, 2);
    // After the backoff: a third failure, then a success that resets the count.
    tokio::time::advance(Duration::from_secs(31)).await;
    provider.warm_up().await.unwrap();
    let stats = provider.stats();
    assert_eq!((stats.failures, stats.consecutive_failures), (3, 0));
    assert!(stats.last_success.is_some() && stats.last_error.is_none());
}
