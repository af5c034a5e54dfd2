//! A tracing subscriber captured in a test sees the token-fetch span with its fields, and no
//! token or secret anywhere — not in events, spans, errors, or Debug output.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{SECRET, setup_with};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_entra::{EntraAuthLayer, TokenProvider};
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn the_fetch_span_is_seen_and_no_token_or_secret_anywhere() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // current_thread runtime: the spawned fetches run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = setup_with(true).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut service = ServiceBuilder::new()
        .layer(EntraAuthLayer::new(s.provider.clone()))
        .service(client);
    let get = || {
        http::Request::get(s.emulator.demo_api_url())
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // A fetch, a cached request, a revoked token (invalidation), a CAE claims challenge.
    assert_eq!(
        service
            .ready()
            .await
            .unwrap()
            .call(get())
            .await
            .unwrap()
            .status(),
        200
    );
    let first = s.provider.token().await.unwrap();
    assert_eq!(
        service
            .ready()
            .await
            .unwrap()
            .call(get())
            .await
            .unwrap()
            .status(),
        200
    );
    s.emulator.cae_revoke();
    assert_eq!(
        service
            .ready()
            .await
            .unwrap()
            .call(get())
            .await
            .unwrap()
            .status(),
        401
    );
    let second = s.provider.token().await.unwrap();
    assert_eq!(
        service
            .ready()
            .await
            .unwrap()
            .call(get())
            .await
            .unwrap()
            .status(),
        200
    );
    s.emulator.revoke_issued_tokens();
    assert_eq!(
        service
            .ready()
            .await
            .unwrap()
            .call(get())
            .await
            .unwrap()
            .status(),
        401
    );
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

    let out = capture.text();
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

#[tokio::test]
async fn no_events_on_the_cached_hot_path() {
    let capture = Capture::default();
    let s = setup_with(false).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let service = ServiceBuilder::new()
        .layer(EntraAuthLayer::new(s.provider.clone()))
        .service(client);
    let get = || {
        http::Request::get(s.emulator.demo_api_url())
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    service.clone().oneshot(get()).await.unwrap();

    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    for _ in 0..10 {
        service.clone().oneshot(get()).await.unwrap();
    }
    let out = capture.text();
    assert!(!out.contains("tower_entra"), "{out}");
}
