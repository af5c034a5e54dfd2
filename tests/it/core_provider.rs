//! TokenProvider against the Entra emulator: single flight, refresh ahead, backoff, errors.

use crate::support;

use std::time::Duration;

use entra_emulator::{App, Emulator, Fault};
use support::{RequestLog, SECRET, ScriptedCredential, Setup, credential, setup};
use tokio::time::Instant;
use tower_entra::{
    ClientSecretCredential, Credential, TokenErrorKind, TokenProvider, TokenRequest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_cold_callers_make_one_token_request() {
    let s = setup().await;
    s.emulator.set_latency(Duration::from_millis(100));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let p = s.provider.clone();
            tokio::spawn(async move { p.token().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    assert_eq!(s.emulator.token_requests(), 1);
    assert!(tokens.iter().all(|t| t.same_token(&tokens[0])));
    assert_eq!(s.provider.stats().fetches, 1);
}

const SCOPE: &str = "api://x/.default";
const HOUR: Duration = Duration::from_secs(3600);

/// A provider over `credential` with no refresh jitter, so that it refreshes exactly at the
/// refresh point, and the credential's log of requests.
fn without_jitter(credential: ScriptedCredential) -> (TokenProvider, RequestLog) {
    let log = credential.log();
    let provider = TokenProvider::builder(credential, SCOPE)
        .refresh_jitter(Duration::ZERO)
        .build()
        .unwrap();
    (provider, log)
}

#[tokio::test(start_paused = true)]
async fn refresh_window_serves_the_old_token_without_waiting_and_refreshes_once() {
    let (provider, log) =
        without_jitter(ScriptedCredential::new(HOUR).latency(Duration::from_millis(200)));
    let first = provider.token().await.unwrap();
    assert_eq!(log.count(), 1);

    // 5 minutes before expiry is the refresh point for a 1 h token; go just past it.
    tokio::time::advance(Duration::from_secs(3300) + Duration::from_millis(1)).await;
    let before = Instant::now();
    for _ in 0..100 {
        let t = provider.token().await.unwrap();
        assert!(t.same_token(&first), "a request waited for the refresh");
    }
    // On the paused clock, any wait for the 200 ms credential would have moved time.
    assert_eq!(Instant::now(), before, "requests waited for the credential");

    // Let the background refresh land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = provider.token().await.unwrap();
    assert!(
        !second.same_token(&first),
        "the refresh did not replace the token"
    );
    assert_eq!(log.count(), 2, "exactly one refresh request");
    assert_eq!(provider.stats().refreshes_ahead, 1);
}

#[tokio::test(start_paused = true)]
async fn refresh_in_decides_when_to_refresh() {
    let (provider, log) = without_jitter(
        ScriptedCredential::new(Duration::from_secs(86_400))
            .refresh_in(Duration::from_secs(43_200)),
    );
    let first = provider.token().await.unwrap();
    tokio::time::advance(Duration::from_secs(43_199)).await;
    provider.token().await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(log.count(), 1, "refreshed before refresh_in");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(provider.token().await.unwrap().same_token(&first));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(log.count(), 2, "did not refresh at refresh_in");
}

/// Issue 8: with `expires_in=301, refresh_in=31` the jitter (up to 54 s by the window) used to
/// exceed the wait for the refresh point, so a fresh token was often due at once and refreshes
/// chained. Each token must lead to one refresh, between half its wait and its refresh point.
#[tokio::test(start_paused = true)]
async fn a_small_refresh_in_refreshes_once_per_token_and_never_at_once() {
    let credential =
        ScriptedCredential::new(Duration::from_secs(301)).refresh_in(Duration::from_secs(31));
    let log = credential.log();
    // The default (random) jitter.
    let provider = TokenProvider::new(credential, SCOPE).unwrap();
    let start = Instant::now();
    // A request every second for 20 minutes (about 40 to 80 tokens).
    while Instant::now() - start < Duration::from_secs(1200) {
        provider.token().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fetches = log.instants();
    assert!(fetches.len() >= 1200 / 32, "{} fetches", fetches.len());
    for pair in fetches.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(15_500) && gap <= Duration::from_secs(32),
            "a token was refreshed {gap:?} after the previous one (of {} fetches)",
            fetches.len()
        );
    }
    assert_eq!(provider.stats().refreshes_ahead as usize, fetches.len() - 1);
}

/// Jitter spreads the refreshes of a fleet started together: each refresh lands in the last
/// minute before the refresh point (the default 60 s jitter), and not all at the same moment.
#[tokio::test(start_paused = true)]
async fn jitter_spreads_the_refreshes_of_providers_started_together() {
    let mut fleet = Vec::new();
    for _ in 0..8 {
        let credential = ScriptedCredential::new(HOUR);
        let log = credential.log();
        let provider = TokenProvider::new(credential, SCOPE).unwrap();
        provider.token().await.unwrap();
        fleet.push((provider, log));
    }
    let start = Instant::now();
    tokio::time::advance(Duration::from_secs(3200)).await;
    let mut refreshed_after = Vec::new();
    while refreshed_after.len() < fleet.len() {
        assert!(
            Instant::now() - start <= Duration::from_secs(3301),
            "a provider did not refresh"
        );
        for (provider, _) in &fleet {
            provider.token().await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        refreshed_after = fleet
            .iter()
            .filter_map(|(_, log)| log.instants().get(1).map(|at| *at - start))
            .collect();
    }
    for after in &refreshed_after {
        assert!(
            *after >= Duration::from_secs(3240) && *after <= Duration::from_secs(3300),
            "refreshed {after:?} after the token was fetched"
        );
    }
    refreshed_after.sort();
    refreshed_after.dedup();
    assert!(
        refreshed_after.len() > 1,
        "every provider refreshed at the same moment: {refreshed_after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cold_fetch_retries_transient_failures_then_succeeds() {
    let s = setup().await;
    s.emulator.push_fault(Fault::status(500));
    s.emulator.push_fault(Fault::status(429).retry_after(3));
    let started = Instant::now();
    s.provider.token().await.unwrap();
    assert_eq!(s.emulator.token_requests(), 3);
    assert!(
        Instant::now() - started >= Duration::from_secs(3),
        "Retry-After not honoured"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lone_429_waits_no_longer_than_retry_after_and_one_second() {
    let s = setup().await;
    // Ten lone 429s (each a new fetch, after the last token was refused): each retry within a
    // second past Retry-After, wherever its jitter put it.
    for n in 0..10 {
        s.emulator.push_fault(Fault::status(429).retry_after(1));
        let started = Instant::now();
        let token = s.provider.token().await.unwrap();
        let waited = Instant::now() - started;
        assert_eq!(s.emulator.token_requests(), 2 * (n + 1));
        assert!(
            waited >= Duration::from_secs(1) && waited <= Duration::from_millis(2100),
            "a lone 429 (Retry-After: 1) waited {waited:?}"
        );
        // Refusals drop a token at most once per 30 s.
        tokio::time::sleep(Duration::from_secs(31)).await;
        s.provider.invalidate(&token);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_caller_that_started_the_fetch_cancels_nothing() {
    let s = setup().await;
    s.emulator.set_latency(Duration::from_millis(200));
    let p = s.provider.clone();
    let starter = tokio::spawn(async move { p.token().await });
    // Let the starter begin the fetch, then drop it mid-flight.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!starter.is_finished());
    starter.abort();
    assert!(starter.await.unwrap_err().is_cancelled());

    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let p = s.provider.clone();
            tokio::spawn(async move { p.token().await })
        })
        .collect();
    for w in waiters {
        w.await
            .unwrap()
            .expect("a waiter lost the token when the starter was dropped");
    }
    assert_eq!(s.emulator.token_requests(), 1);
}

/// Many concurrent waiters on a failing configuration: one request, the same typed error for all.
async fn concurrent_error(provider: TokenProvider, emulator: &Emulator) -> tower_entra::TokenError {
    emulator.set_latency(Duration::from_millis(50));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let p = provider.clone();
            tokio::spawn(async move { p.token().await })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        errors.push(
            t.await
                .unwrap()
                .expect_err("a bad configuration produced a token"),
        );
    }
    assert_eq!(
        emulator.token_requests(),
        1,
        "waiters did not share one request"
    );
    let first = errors[0].to_string();
    assert!(errors.iter().all(|e| e.to_string() == first));
    errors.remove(0)
}

/// What a misconfigured `credential` gets, through [`concurrent_error`]: an authentication
/// error with Entra's `code` and a hint that names `fix`.
async fn misconfigured(
    credential: ClientSecretCredential,
    emulator: &Emulator,
    code: u32,
    fix: &str,
) -> tower_entra::TokenError {
    let provider = TokenProvider::new(credential, Emulator::DEMO_API_SCOPE).unwrap();
    let e = concurrent_error(provider, emulator).await;
    assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
    assert_eq!(e.entra().unwrap().codes(), &[code], "{e}");
    assert!(
        e.hint().unwrap().contains(fix),
        "the hint should name {fix}: {e}"
    );
    e
}

/// A credential for the emulator with `tenant_id` and `client_id` as given, one of them wrong.
fn credential_for(s: &Setup, tenant_id: &str, client_id: &str) -> ClientSecretCredential {
    ClientSecretCredential::builder(tenant_id, client_id, SECRET)
        .authority_host(s.emulator.authority_host())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_aadsts7000215_with_hint() {
    let s = setup().await;
    let e = misconfigured(
        credential(&s.emulator, &s.app, "not-the-secret"),
        &s.emulator,
        7000215,
        "Value",
    )
    .await;
    assert!(
        e.entra().unwrap().trace_id().is_some() && e.entra().unwrap().correlation_id().is_some()
    );
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("not-the-secret") && !shown.contains(SECRET),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_is_aadsts90002_with_hint() {
    let s = setup().await;
    let cred = credential_for(&s, "11111111-2222-3333-4444-555555555555", &s.app.client_id);
    misconfigured(cred, &s.emulator, 90002, "AZURE_TENANT_ID").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client_is_aadsts700016_with_hint() {
    let s = setup().await;
    let cred = credential_for(&s, &s.app.tenant_id, "99999999-0000-0000-0000-000000000000");
    misconfigured(cred, &s.emulator, 700016, "AZURE_CLIENT_ID").await;
}

#[tokio::test]
async fn scope_without_default_is_refused_up_front_and_by_entra() {
    let s = setup().await;
    let e = TokenProvider::new(
        credential(&s.emulator, &s.app, SECRET),
        "https://graph.microsoft.com/User.Read",
    )
    .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::InvalidScope);
    assert!(e.to_string().contains("/.default"), "{e}");
    assert_eq!(s.emulator.token_requests(), 0);

    // A credential used directly reaches Entra, which says the same with its code.
    let e = credential(&s.emulator, &s.app, SECRET)
        .request_token(TokenRequest::new("https://graph.microsoft.com/User.Read"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::InvalidScope);
    assert_eq!(e.entra().unwrap().codes(), &[1002012]);
    assert!(e.hint().unwrap().contains("/.default"), "{e}");
}

#[tokio::test]
async fn expired_secret_and_unknown_resource_have_their_codes() {
    let s = setup().await;
    let app = s.emulator.register_app(
        &s.emulator.tenant_id(),
        App::new("old").with_secret_expired("old-secret"),
    );
    let e = TokenProvider::new(
        credential(&s.emulator, &app, "old-secret"),
        Emulator::DEMO_API_SCOPE,
    )
    .unwrap()
    .token()
    .await
    .unwrap_err();
    assert_eq!(e.entra().unwrap().codes(), &[7000222]);
    assert!(e.hint().unwrap().contains("expired"));

    let e = TokenProvider::new(
        credential(&s.emulator, &s.app, SECRET),
        "api://no-such-api/.default",
    )
    .unwrap()
    .token()
    .await
    .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::InvalidScope);
    assert_eq!(e.entra().unwrap().codes(), &[500011]);
}

#[tokio::test]
async fn malformed_and_oversized_answers_are_typed_errors() {
    let s = setup().await;
    let cases = [
        Fault::status(200)
            .body("<html>captive portal</html>")
            .content_type("text/html"),
        Fault::status(200).body(r#"{"token_type":"mac","expires_in":60,"access_token":"abc"}"#),
        Fault::status(200).body(format!(
            r#"{{"token_type":"Bearer","expires_in":60,"access_token":"{}"}}"#,
            "a".repeat(2 << 20)
        )),
        Fault::status(302).body(""),
    ];
    for fault in cases {
        s.emulator.push_fault(fault);
        let e = credential(&s.emulator, &s.app, SECRET)
            .request_token(TokenRequest::new(Emulator::DEMO_API_SCOPE))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{e}");
    }
}

#[tokio::test]
async fn secrets_and_tokens_never_reach_debug_display_or_errors() {
    let s = setup().await;
    let token = s.provider.token().await.unwrap();
    let raw = token.secret().to_owned();
    assert!(raw.len() > 100, "not a JWT");
    let cred = credential(&s.emulator, &s.app, SECRET);
    let shown = [
        format!("{token:?}"),
        format!("{:?}", s.provider),
        format!("{cred:?}"),
        format!("{:?}", s.provider.stats()),
        format!("{:?}", token.header_value()),
    ];
    for text in shown {
        assert!(!text.contains(&raw[..40]), "token in {text}");
        assert!(!text.contains(SECRET), "secret in {text}");
    }

    // Errors built from answers that hold the secret and the token (a proxy or a broken
    // endpoint echoing the request, a token response that fails validation) show neither.
    let form = s.emulator.last_token_request().expect("the token request");
    let echoed_form: String = form
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    assert!(echoed_form.contains(SECRET), "the form carries the secret");
    let json = |v: serde_json::Value| v.to_string();
    let answers = [
        // An Entra error that also echoes the request form.
        Fault::status(400).body(json(serde_json::json!({
            "error": "invalid_request",
            "error_description": "AADSTS900144: nope",
            "error_codes": [900144],
            "request": form.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "access_token": raw,
        }))),
        // The form echoed as plain text, with no Entra error body.
        Fault::status(400)
            .content_type("text/plain")
            .body(format!("{echoed_form}&access_token={raw}")),
        // A 2xx that is not JSON.
        Fault::status(200)
            .content_type("text/plain")
            .body(format!("{echoed_form}&access_token={raw}")),
        // A 2xx cut short in the token.
        Fault::status(200).body(format!(
            r#"{{"token_type":"Bearer","expires_in":3599,"client_secret":"{SECRET}","access_token":"{raw}"#
        )),
        // Well-formed tokens that fail validation.
        Fault::status(200).body(json(serde_json::json!({
            "token_type": "pop", "expires_in": 3599, "access_token": raw, "client_secret": SECRET,
        }))),
        Fault::status(200).body(json(serde_json::json!({
            "token_type": "Bearer", "expires_in": 3599, "access_token": format!("{raw} {SECRET}"),
        }))),
        Fault::status(200).body(json(serde_json::json!({
            "token_type": "Bearer", "expires_in": "soon", "access_token": raw,
        }))),
        Fault::status(200).body(json(serde_json::json!({
            "token_type": "Bearer", "expires_in": 0, "access_token": raw,
        }))),
    ];
    let count = answers.len();
    for fault in answers {
        s.emulator.push_fault(fault);
    }
    for i in 0..count {
        let e = cred
            .request_token(TokenRequest::new(Emulator::DEMO_API_SCOPE))
            .await
            .expect_err("a faulty answer");
        let mut text = format!("{e} {e:?}");
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            text.push_str(&format!(" {inner} {inner:?}"));
            source = inner.source();
        }
        assert!(!text.contains(SECRET), "answer {i}: the secret in {text}");
        assert!(
            !text.contains(&raw[..40]),
            "answer {i}: the token in {text}"
        );
    }
    // Through the provider too, and what it keeps for health endpoints.
    s.emulator
        .push_fault(Fault::status(400).body(format!("{echoed_form}&access_token={raw}")));
    s.provider.invalidate(&token);
    let e = s.provider.token().await.unwrap_err();
    let text = format!("{e} {e:?} {:?}", s.provider.stats());
    assert!(
        !text.contains(SECRET) && !text.contains(&raw[..40]),
        "{text}"
    );
}

#[tokio::test]
async fn invalidate_drops_only_the_current_token() {
    let s = setup().await;
    let first = s.provider.token().await.unwrap();
    s.provider.invalidate(&first);
    let second = s.provider.token().await.unwrap();
    assert!(!second.same_token(&first));
    assert_eq!(s.emulator.token_requests(), 2);
    // A stale token's invalidation leaves the new one alone.
    s.provider.invalidate(&first);
    assert!(s.provider.token().await.unwrap().same_token(&second));
    assert_eq!(s.emulator.token_requests(), 2);
    assert_eq!(s.provider.stats().invalidations, 1);
}

#[tokio::test]
async fn the_request_is_the_documented_form() {
    let s = setup().await;
    s.provider.token().await.unwrap();
    let form = s.emulator.last_token_request().unwrap();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("grant_type"), Some("client_credentials"));
    assert_eq!(get("client_id"), Some(s.app.client_id.as_str()));
    assert_eq!(get("client_secret"), Some(SECRET));
    assert_eq!(get("scope"), Some(Emulator::DEMO_API_SCOPE));
    assert_eq!(form.len(), 4);
}

#[test]
fn without_a_tokio_runtime_the_error_says_so_instead_of_panicking() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s = runtime.block_on(setup());
    let provider = s.provider.clone();
    drop(runtime);
    let e = futures::FutureExt::now_or_never(provider.token())
        .expect("the error is immediate")
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration);
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn hostile_numbers_from_the_endpoint_are_errors_not_panics() {
    let s = setup().await;
    s.emulator.push_fault(
        Fault::status(200).body(
            r#"{"token_type":"Bearer","expires_in":18446744073709551615,"access_token":"abc"}"#,
        ),
    );
    let e = credential(&s.emulator, &s.app, SECRET)
        .request_token(TokenRequest::new(Emulator::DEMO_API_SCOPE))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{e}");

    // A Retry-After beyond any clock is capped, and the provider keeps working.
    s.emulator
        .push_fault(Fault::status(503).retry_after(u64::MAX));
    let e = s.provider.token().await.unwrap_err();
    assert!(e.is_transient());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    tokio::time::advance(Duration::from_secs(31)).await;
    s.provider.token().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_cold_fetch_is_not_repeated_for_every_request() {
    const INITIAL: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(8);
    const STEP: Duration = Duration::from_millis(10);
    let s = setup().await;
    let provider = TokenProvider::builder(
        credential(&s.emulator, &s.app, "revoked-secret"),
        Emulator::DEMO_API_SCOPE,
    )
    .initial_backoff(INITIAL)
    .max_backoff(MAX)
    .build()
    .unwrap();
    let first = provider.token().await.unwrap_err();
    for _ in 0..50 {
        let again = provider.token().await.unwrap_err();
        assert_eq!(again.to_string(), first.to_string());
    }
    assert_eq!(s.emulator.token_requests(), 1, "each request went to Entra");

    // A caller every 10 ms: the token requests they cause come further and further apart,
    // each gap drawn from the upper half of a backoff that doubles (0.5 s, 1 s, 2 s, ...),
    // up to max_backoff.
    let start = Instant::now();
    let mut requests = vec![start];
    while requests.len() < 9 {
        tokio::time::advance(STEP).await;
        provider.token().await.unwrap_err();
        if s.emulator.token_requests() > requests.len() {
            requests.push(Instant::now());
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{requests:?}");
    }
    assert_eq!(s.emulator.token_requests(), 9, "one request per backoff");
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1] - w[0]).collect();
    let mut backoff = INITIAL;
    for (i, gap) in gaps.iter().enumerate() {
        // The backoff after failure i + 1, jittered into its upper half; the callers notice
        // its end within a step.
        assert!(
            *gap >= backoff / 2 && *gap <= backoff + STEP,
            "gap {i} is {gap:?}, not within [{:?}, {backoff:?}]: {gaps:?}",
            backoff / 2
        );
        backoff = (backoff * 2).min(MAX);
    }
    assert!(gaps[4] >= gaps[0] * 7, "the backoff grows: {gaps:?}");
    assert!(gaps[7] <= MAX + STEP, "capped at max_backoff: {gaps:?}");
    assert_eq!(provider.stats().failures, 9);
}
