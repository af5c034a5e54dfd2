//! Nothing is logged on the cached hot path.
//!
//! Its own test binary (process): tracing's callsite interest is global, and a test that runs
//! code with no subscriber in parallel with one that captures can hide spans from the capture.

mod support;

use support::setup_with;
use tower::ServiceExt;

#[tokio::test]
async fn no_events_on_the_cached_hot_path() {
    let s = setup_with(false).await;
    let service = support::authorized_client(&s.provider);
    let url = s.emulator.demo_api_url();
    let get = || support::get(&url);
    service.clone().oneshot(get()).await.unwrap();

    let (capture, _guard) = support::LogCapture::start();
    for _ in 0..10 {
        service.clone().oneshot(get()).await.unwrap();
    }
    let out = capture.text();
    assert!(
        !out.contains("tower_entra") && !out.contains("entra_token_fetch"),
        "{out}"
    );
}
