//! The provider driven end to end on a paused clock by an in-memory credential whose failures the
//! test scripts (transient errors with `Retry-After`, which only the crate can make): no sockets.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::TokenProvider;
use crate::credential::{Credential, TokenRequest};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

const HOUR: Duration = Duration::from_secs(3600);

/// Answers each request after `latency`: the next scripted failure, else a new hour's token
/// (`token-0`, `token-1`, ...). Counts requests.
#[derive(Debug)]
struct Scripted {
    latency: Duration,
    failures: Mutex<VecDeque<TokenError>>,
    requests: Mutex<usize>,
}

impl Scripted {
    fn new(latency: Duration, failures: impl IntoIterator<Item = TokenError>) -> Arc<Scripted> {
        Arc::new(Scripted {
            latency,
            failures: Mutex::new(failures.into_iter().collect()),
            requests: Mutex::new(0),
        })
    }

    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    /// A provider over it, without jitter.
    fn provider(self: &Arc<Self>) -> TokenProvider {
        TokenProvider::builder(self.clone(), "api://x/.default")
            .refresh_jitter(Duration::ZERO)
            .build()
            .unwrap()
    }
}

impl Credential for Scripted {
    fn request_token<'a>(
        &'a self,
        _request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        let n = count(&self.requests);
        let failure = self.failures.lock().unwrap().pop_front();
        Box::pin(async move {
            tokio::time::sleep(self.latency).await;
            match failure {
                Some(error) => Err(error),
                None => AccessToken::new(format!("token-{n}"), HOUR),
            }
        })
    }
}

/// Counts a request; the number of those before it.
fn count(requests: &Mutex<usize>) -> usize {
    let mut requests = requests.lock().unwrap();
    *requests += 1;
    *requests - 1
}

fn unavailable(retry_after: Option<Duration>) -> TokenError {
    TokenError::new(TokenErrorKind::Transient, "503 Service Unavailable")
        .with_retry_after(retry_after)
}

#[tokio::test(start_paused = true)]
async fn failed_background_refresh_keeps_the_old_token_and_honours_retry_after() {
    let credential = Scripted::new(Duration::ZERO, []);
    let provider = credential.provider();
    let first = provider.token().await.unwrap();
    credential
        .failures
        .lock()
        .unwrap()
        .extend((0..3).map(|_| unavailable(Some(Duration::from_secs(120)))));

    tokio::time::advance(Duration::from_secs(3301)).await;
    assert!(provider.token().await.unwrap().same_token(&first));
    tokio::task::yield_now().await;
    assert_eq!(credential.requests(), 2, "the refresh did not start");

    // Within Retry-After: requests succeed on the old token and no new attempt goes out.
    for _ in 0..119 {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(provider.token().await.unwrap().same_token(&first));
        tokio::task::yield_now().await;
    }
    assert_eq!(credential.requests(), 2, "retried before Retry-After");
    let stats = provider.stats();
    assert_eq!(stats.last_error.unwrap().kind(), TokenErrorKind::Transient);

    // After it: the next request starts one attempt (failing again), still on the old token.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(provider.token().await.unwrap().same_token(&first));
    tokio::task::yield_now().await;
    assert_eq!(credential.requests(), 3);

    // Until expiry no request fails; the failures run out and the refresh succeeds.
    loop {
        tokio::time::advance(Duration::from_secs(5)).await;
        let t = provider
            .token()
            .await
            .expect("a request failed before the old token expired");
        tokio::task::yield_now().await;
        if !t.same_token(&first) {
            break;
        }
        assert!(Instant::now() < first.expires_at());
    }
    assert_eq!(credential.requests(), 5);
}

#[tokio::test(start_paused = true)]
async fn callers_waiting_on_a_refresh_ahead_get_its_retries() {
    let credential = Scripted::new(Duration::from_secs(400), []);
    let provider = credential.provider();
    let first = provider.token().await.unwrap();
    // The refresh ahead takes long enough for the held token to stop being usable, and fails.
    credential
        .failures
        .lock()
        .unwrap()
        .push_back(unavailable(None));
    tokio::time::advance(Duration::from_secs(3301)).await;
    assert!(provider.token().await.unwrap().same_token(&first));
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!(Instant::now() >= first.expires_at() - Duration::from_secs(30));
    // This caller joins the refresh in flight; its failure is retried, not handed out.
    let token = provider
        .token()
        .await
        .expect("the refresh's failure reached a waiter");
    assert!(!token.same_token(&first));
    assert_eq!(credential.requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_for_the_same_claims_share_one_fetch() {
    let credential = Scripted::new(Duration::from_secs(1), []);
    let provider = credential.provider();
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#;
    let (a, b) = tokio::join!(
        provider.token_with_claims(claims),
        provider.token_with_claims(claims)
    );
    assert!(a.unwrap().same_token(&b.unwrap()));
    assert_eq!(credential.requests(), 1);
    assert_eq!(provider.stats().claims_challenges, 1);
}

/// Each thread serves its own copy of the token (so that a cached request writes nothing
/// another core reads); a dropped token, and a new one, must still reach the next request on
/// every thread. Seen failing with `publish` not bumping the generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_thread_sees_a_dropped_and_a_new_token_at_its_next_request() {
    use std::sync::mpsc;

    let credential = Scripted::new(Duration::ZERO, []);
    let provider = credential.provider();
    let first = provider.token().await.unwrap();

    // Two long-lived OS threads, each asked in turn what it would serve now.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (ask, asked) = mpsc::channel::<()>();
            let (answer, answered) = mpsc::channel::<Option<String>>();
            let provider = provider.clone();
            let thread = std::thread::spawn(move || {
                while asked.recv().is_ok() {
                    let served = provider.lease().map(|l| l.token().secret().to_owned());
                    answer.send(served).unwrap();
                }
            });
            (ask, answered, thread)
        })
        .collect();
    let ask_all = || -> Vec<Option<String>> {
        workers
            .iter()
            .map(|(ask, answered, _)| {
                ask.send(()).unwrap();
                answered.recv().unwrap()
            })
            .collect()
    };
    let served = |token: &AccessToken| vec![Some(token.secret().to_owned()); 2];

    assert_eq!(ask_all(), served(&first));
    provider.invalidate(&first);
    assert_eq!(
        ask_all(),
        vec![None, None],
        "a dropped token is served by no thread"
    );
    let second = provider.token().await.unwrap();
    assert_ne!(second.secret(), first.secret());
    assert_eq!(
        ask_all(),
        served(&second),
        "every thread serves the new token"
    );
    for (ask, _, thread) in workers {
        drop(ask);
        thread.join().unwrap();
    }
}

/// Answers `token-0`, `token-1`, ... of an hour each; the first was received `slept` before the
/// wall clock's "now", while tokio's clock counts it as just received: as after a suspend of
/// that long.
#[derive(Debug)]
struct SleptAfterFirst {
    slept: Duration,
    requests: Mutex<usize>,
}

impl SleptAfterFirst {
    fn new(slept: Duration) -> Arc<SleptAfterFirst> {
        Arc::new(SleptAfterFirst {
            slept,
            requests: Mutex::new(0),
        })
    }

    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

impl Credential for SleptAfterFirst {
    fn request_token<'a>(
        &'a self,
        _: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        let n = count(&self.requests);
        let received = if n == 0 {
            std::time::SystemTime::now() - self.slept
        } else {
            std::time::SystemTime::now()
        };
        Box::pin(async move {
            AccessToken::issued(format!("token-{n}"), HOUR, None, Instant::now(), received)
        })
    }
}

/// A machine suspended after a fetch: tokio's clock stood still, the wall clock moved on past
/// the token's expiry. The next request fetches a new token instead of serving the dead one.
/// Seen failing with the wall-clock check removed from `lease`.
#[tokio::test]
async fn after_a_suspend_past_expiry_the_next_request_fetches_a_new_token() {
    let credential = SleptAfterFirst::new(2 * HOUR);
    let provider = TokenProvider::builder(credential.clone(), "api://x/.default")
        .build()
        .unwrap();
    assert_eq!(provider.token().await.unwrap().secret(), "token-0");
    assert_eq!(provider.token().await.unwrap().secret(), "token-1");
    assert_eq!(provider.token().await.unwrap().secret(), "token-1");
    assert_eq!(credential.requests(), 2);
}

/// The timer that clears a token's fresh bit (see `watch`) sits on the runtime that fetched the
/// token; when that runtime is no longer driven it never fires, and the requests served on
/// another runtime must still see the refresh point: on the wall clock, which `lease` reads
/// anyway. Seen failing with the wall clock's refresh point left out of `lease`.
#[test]
fn a_refresh_timer_on_an_undriven_runtime_does_not_hold_back_the_refresh() {
    let runtime = |paused| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .unwrap()
    };
    // By the wall clock the first token is 57 minutes old: 2 past its refresh point (5 minutes
    // before expiry), 2.5 before it stops being usable.
    let credential = SleptAfterFirst::new(Duration::from_secs(57 * 60));
    let provider = TokenProvider::builder(credential.clone(), "api://x/.default")
        .refresh_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let fetched_on = runtime(false);
    let first = fetched_on.block_on(provider.token()).unwrap();
    assert!(
        provider.inner.generation.read().fresh,
        "no refresh timer was set"
    );

    // `fetched_on` stays, never driven again; this runtime's clock is where the wall clock is.
    runtime(true).block_on(async {
        tokio::time::advance(Duration::from_secs(57 * 60)).await;
        assert!(provider.token().await.unwrap().same_token(&first));
        tokio::task::yield_now().await;
        assert_eq!(credential.requests(), 2, "the refresh did not start");
        assert_eq!(provider.token().await.unwrap().secret(), "token-1");
    });
    drop(fetched_on);
}

/// A runtime that shuts down fires its timers: the fresh bit set with a timer on it does not
/// outlive it, and requests read the clock again. Seen failing with `ClearFresh` not clearing.
#[test]
fn a_runtime_shutting_down_clears_the_fresh_bit_of_its_timer() {
    let credential = Scripted::new(Duration::ZERO, []);
    let provider = credential.provider();
    let fetched_on = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    fetched_on.block_on(provider.token()).unwrap();
    assert!(
        provider.inner.generation.read().fresh,
        "no refresh timer was set"
    );
    drop(fetched_on);
    assert!(!provider.inner.generation.read().fresh);
}

/// Publishing another token replaces the refresh timer: the first token's timer, due earlier,
/// does not clear the second token's fresh bit. Seen failing with the superseded timer kept and
/// the bit cleared whatever the generation (either alone holds it).
#[tokio::test(start_paused = true)]
async fn a_superseded_refresh_timer_does_not_clear_the_next_tokens_fresh_bit() {
    let credential = Scripted::new(Duration::ZERO, []);
    let provider = credential.provider();
    let first = provider.token().await.unwrap();
    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    provider.invalidate(&first);
    assert_eq!(provider.token().await.unwrap().secret(), "token-1");
    assert!(provider.inner.generation.read().fresh);
    // Past the first token's refresh point (55 minutes), well before the second's.
    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    tokio::task::yield_now().await;
    assert!(provider.inner.generation.read().fresh);
    assert_eq!(credential.requests(), 2);
}

/// Every transition that changes the state's token reaches the lock-free readers: a stored
/// token is served from this thread's copy, a refused one is no longer served, and the next is.
/// Seen failing with `perform`'s publish skipped (the stored token was never leased), and with
/// `State::apply` reporting no change.
#[tokio::test(start_paused = true)]
async fn every_change_of_the_current_token_is_published() {
    let credential = Scripted::new(Duration::ZERO, []);
    let provider = credential.provider();
    let before = provider.inner.generation.read().generation;
    let first = provider.token().await.unwrap();
    assert!(provider.inner.generation.read().generation > before);
    let lease = provider
        .lease()
        .expect("the stored token was not published");
    assert!(lease.token().same_token(&first));

    provider.invalidate(&first);
    assert!(provider.inner.current.load().is_none());
    assert!(
        provider.lease().is_none(),
        "a thread kept serving the refused token"
    );

    let second = provider.token().await.unwrap();
    assert!(!second.same_token(&first));
    let lease = provider.lease().expect("the new token was not published");
    assert!(lease.token().same_token(&second));
}
