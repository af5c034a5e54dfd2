//! A tracing subscriber captured in a test sees the token-fetch span with its fields, and no
//! token or secret anywhere — not in events, spans, errors, or Debug output.
//!
//! One test per binary (process): tracing's callsite interest is global, and a parallel test
//! running code with no subscriber can hide spans from this capture.

mod support;

use support::{SECRET, setup_with};
use tower_entra::TokenProvider;

#[tokio::test]
async fn the_fetch_span_is_seen_and_no_token_or_secret_anywhere() {
    // current_thread runtime: the spawned fetches run on this thread, under this subscriber.
    let (capture, _guard) = support::LogCapture::start();

    let s = setup_with(true).await;
    let mut service = support::authorized_client(&s.provider);
    let url = s.emulator.demo_api_url();
    let get = || support::get(&url);

    // A fetch, a cached request, a revoked token (invalidation), a CAE claims challenge.
    assert_eq!(support::status(&mut service, get()).await, 200);
    let first = s.provider.token().await.unwrap();
    assert_eq!(support::status(&mut service, get()).await, 200);
    s.emulator.cae_revoke();
    assert_eq!(support::status(&mut service, get()).await, 401);
    let second = s.provider.token().await.unwrap();
    assert_eq!(support::status(&mut service, get()).await, 200);
    s.emulator.revoke_issued_tokens();
    assert_eq!(support::status(&mut service, get()).await, 401);
    let third = s.provider.token().await.unwrap();

    // A failed fetch (wrong secret).
    let wrong = TokenProvider::new(
        support::credential(&s.emulator, &s.app, "wrong-Secret-9~also-never-logged"),
        entra_emulator::Emulator::DEMO_API_SCOPE,
    )
    .unwrap();
    let err = wrong.token().await.unwrap_err();
    // Debug output of everything a user might log.
    tracing::info!(?err, provider = ?s.provider, token = ?third, stats = ?s.provider.stats(), "user logs");

    // Another tenant's provider: its fetch span names the tenant it asked for, and so do its
    // logs (the tenant is not secret; spans and logs are per event, not a metric series).
    let any = TokenProvider::new(
        support::any_tenant::AnyTenant,
        entra_emulator::Emulator::DEMO_API_SCOPE,
    )
    .unwrap();
    any.for_tenant("fabrikam.onmicrosoft.com")
        .unwrap()
        .token()
        .await
        .unwrap();

    let out = capture.text();
    assert!(
        out.lines()
            .any(|l| l.contains("entra_token_fetch")
                && l.contains("tenant_id=fabrikam.onmicrosoft.com")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("no usable token") && l.contains("fabrikam.onmicrosoft.com")),
        "{out}"
    );
    assert!(out.contains("entra_token_fetch"), "{out}");
    assert!(out.contains(&s.app.client_id), "client id recorded");
    assert!(out.contains(&s.app.tenant_id), "tenant id recorded");
    assert!(
        out.contains(entra_emulator::Emulator::DEMO_API_SCOPE),
        "scope recorded"
    );
    assert!(
        out.contains("outcome=\"ok\"") || out.contains("outcome=ok"),
        "{out}"
    );
    assert!(
        out.contains("mode=\"claims\"") || out.contains("mode=claims"),
        "{out}"
    );
    assert!(out.contains("7000215"), "AADSTS code recorded: {out}");
    assert!(out.contains("duration_ms"), "{out}");
    assert!(out.contains("attempts"), "{out}");

    for token in [&first, &second, &third] {
        assert!(!out.contains(token.secret()), "a token reached the log");
        // Not even a fragment of it (the JWT's signature part).
        let sig = token.secret().rsplit('.').next().unwrap();
        assert!(!out.contains(sig), "a token fragment reached the log");
    }
    assert!(!out.contains("eyJ"), "something JWT-shaped reached the log");
    assert!(!out.contains(SECRET), "the client secret reached the log");
    assert!(
        !out.contains("wrong-Secret-9"),
        "a client secret reached the log"
    );
}
