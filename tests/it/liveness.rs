//! A fetch whose task sits on a runtime that is never driven again (a current-thread runtime
//! that went idle) does not hold callers on other runtimes past the fetch's deadline: past it the
//! fetch counts as dead, and the next caller starts a new one on its own runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower_entra::{AccessToken, Credential, TokenError, TokenProvider, TokenRequest};

const HOUR: Duration = Duration::from_secs(3600);
/// The credential's timeout hint; with one attempt, a fetch's deadline is this plus 5 s grace.
const TIMEOUT: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(7);

/// Answers at once with a new hour's token (`token-0`, `token-1`, ...), and says its requests
/// take at most [`TIMEOUT`].
#[derive(Debug, Default)]
struct Instant1h {
    requests: Arc<AtomicUsize>,
}

impl Credential for Instant1h {
    fn request_token<'a>(
        &'a self,
        _request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { AccessToken::new(format!("token-{n}"), HOUR) })
    }

    fn timeout(&self) -> Option<Duration> {
        Some(TIMEOUT)
    }
}

fn provider() -> (TokenProvider, Arc<AtomicUsize>) {
    let credential = Instant1h::default();
    let requests = credential.requests.clone();
    let provider = TokenProvider::builder(credential, "api://x/.default")
        .max_attempts(1)
        .refresh_jitter(Duration::ZERO)
        .build()
        .unwrap();
    (provider, requests)
}

fn paused_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn a_cold_fetch_parked_on_an_idle_runtime_holds_others_no_longer_than_its_deadline() {
    let (provider, requests) = provider();
    let parked = paused_runtime();
    let other = paused_runtime();
    // The fetch is spawned on `parked`, which returns at once and is never driven again.
    parked.block_on(async {
        let mut first = std::pin::pin!(provider.token());
        assert!(first.as_mut().now_or_never().is_none());
    });
    assert_eq!(requests.load(Ordering::SeqCst), 0, "the parked fetch ran");

    other.block_on(async {
        let joined = Instant::now();
        let token = tokio::time::timeout(HOUR, provider.token())
            .await
            .expect("a caller on another runtime waited on the parked fetch past its deadline")
            .unwrap();
        assert!(
            Instant::now() - joined <= DEADLINE,
            "waited past the deadline"
        );
        assert_eq!(token.secret(), "token-0");
        // Now cached: later callers get it at once.
        assert!(provider.token().await.unwrap().same_token(&token));
    });
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    drop(parked);
}

#[test]
fn a_refresh_ahead_parked_on_an_idle_runtime_is_started_again_past_its_deadline() {
    let (provider, requests) = provider();
    let parked = paused_runtime();
    let other = paused_runtime();
    let first = parked.block_on(async {
        let first = provider.token().await.unwrap();
        // Into the refresh window: the refresh ahead is spawned on `parked`, never to run.
        tokio::time::advance(Duration::from_secs(3301)).await;
        assert!(provider.token().await.unwrap().same_token(&first));
        first
    });
    assert_eq!(requests.load(Ordering::SeqCst), 1, "the parked refresh ran");

    other.block_on(async {
        // Past the parked refresh's deadline, the held token still usable: a caller here is
        // served at once and starts a new refresh, on this runtime.
        tokio::time::advance(Duration::from_secs(3301) + DEADLINE).await;
        assert!(provider.token().await.unwrap().same_token(&first));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let refreshed = tokio::time::timeout(HOUR, provider.token())
            .await
            .expect("a caller waited on the parked refresh")
            .unwrap();
        assert_eq!(refreshed.secret(), "token-1", "no new refresh started");
    });
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    drop(parked);
}

/// Issue 17: the fresh bit is cleared by a timer on the runtime that published the token. With
/// that runtime no longer driven and the wall clock stepped backwards (here: a paused test, where
/// the wall clock stays put while tokio's clock goes on 2 h), neither the timer nor the wall
/// clock says the token expired; the monotonic clock bounds the bit, so a request past expiry
/// gets a new token, not the expired one. Seen failing (the expired `token-0` served) with the
/// fast path trusting the bit without `fresh_by_monotonic_clock`.
#[test]
fn a_fresh_bit_whose_timer_is_not_driven_never_serves_a_token_past_its_expiry() {
    let (provider, requests) = provider();
    let parked = paused_runtime();
    let other = paused_runtime();
    // Published on `parked`, whose timer would clear the bit at the refresh point: it is never
    // driven again.
    let first = parked.block_on(provider.token()).unwrap();
    other.block_on(async {
        tokio::time::advance(2 * HOUR).await;
        let served = provider.token().await.unwrap();
        assert!(
            !served.same_token(&first),
            "{} served an hour past its expiry",
            first.secret()
        );
        assert!(served.expires_at() > Instant::now());
    });
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    drop(parked);
}

/// An app registration whose client assertion is a managed identity's token: the managed
/// identity's first request never answers (its task parked with it), later ones answer at once.
mod managed_identity_assertion {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::sync::Notify;
    use tower_entra::{
        AssertionCallback, ClientAssertionCredential, ManagedIdentityCredential, TokenProvider,
        TransportRequest,
    };

    use super::HOUR;

    const MI_TOKEN: &str =
        r#"{"access_token":"mi-assertion","expires_in":"86400","token_type":"Bearer"}"#;
    const APP_TOKEN: &str =
        r#"{"token_type":"Bearer","expires_in":3599,"access_token":"app-token"}"#;

    /// A transport answering `body`; when `park_first`, its first request signals `entered` and
    /// then never answers.
    fn answering(
        body: &'static str,
        calls: Arc<AtomicUsize>,
        park_first: Option<Arc<Notify>>,
    ) -> impl tower_entra::TokenTransport {
        tower::service_fn(move |_: TransportRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let park = park_first.clone().filter(|_| n == 0);
            async move {
                if let Some(entered) = park {
                    entered.notify_one();
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                    body.as_bytes(),
                ))))
            }
        })
    }

    #[test]
    fn a_fetch_parked_mid_managed_identity_request_does_not_wedge_its_replacement() {
        let entered = Arc::new(Notify::new());
        let mi_calls = Arc::new(AtomicUsize::new(0));
        let entra_calls = Arc::new(AtomicUsize::new(0));
        let managed_identity = ManagedIdentityCredential::builder()
            .environment(|name| {
                (name == "AZURE_POD_IDENTITY_AUTHORITY_HOST")
                    .then(|| "http://127.0.0.1:9".to_owned())
            })
            .transport(answering(MI_TOKEN, mi_calls.clone(), Some(entered.clone())))
            .build()
            .unwrap();
        let app = ClientAssertionCredential::builder(
            "contoso.onmicrosoft.com",
            "00000000-0000-0000-0000-000000000001",
            AssertionCallback::from_managed_identity(managed_identity),
        )
        .authority_host("http://127.0.0.1:9")
        .transport(answering(APP_TOKEN, entra_calls.clone(), None))
        .build()
        .unwrap();
        let provider = TokenProvider::builder(app, "api://x/.default")
            .max_attempts(1)
            .refresh_jitter(Duration::ZERO)
            .build()
            .unwrap();

        let parked = super::paused_runtime();
        let other = super::paused_runtime();
        // The fetch runs on `parked` until it waits on the managed identity's answer; then
        // `parked` is never driven again.
        parked.block_on(async {
            tokio::select! {
                _ = provider.token() => panic!("the parked request answered"),
                _ = entered.notified() => {}
            }
        });
        assert_eq!(mi_calls.load(Ordering::SeqCst), 1);

        other.block_on(async {
            let token = tokio::time::timeout(HOUR, provider.token())
                .await
                .expect(
                    "the replacement fetch waited on the parked fetch's managed identity request",
                )
                .unwrap();
            assert_eq!(token.secret(), "app-token");
        });
        assert_eq!(mi_calls.load(Ordering::SeqCst), 2);
        assert_eq!(entra_calls.load(Ordering::SeqCst), 1);
        drop(parked);
    }
}
