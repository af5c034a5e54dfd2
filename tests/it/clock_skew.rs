//! A token endpoint whose `Date` is minutes away from the local clock gets one warning per
//! credential: certificate assertions fail on `nbf`/`exp` with a skewed clock, and the warning
//! says so before anyone has to suspect it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use tower_entra::{ClientSecretCredential, Credential, TokenRequest, TransportRequest};

use crate::support::LogCapture;

const TOKEN: &str = r#"{"token_type":"Bearer","expires_in":3599,"access_token":"a.b.c"}"#;

/// A credential whose transport answers a token dated `offset` from now (negative: in the past).
fn dated(offset_secs: i64) -> ClientSecretCredential {
    let transport = tower::service_fn(move |_: TransportRequest| {
        let now = SystemTime::now();
        let offset = Duration::from_secs(offset_secs.unsigned_abs());
        let date = if offset_secs < 0 {
            now - offset
        } else {
            now + offset
        };
        std::future::ready(
            http::Response::builder()
                .header(http::header::DATE, httpdate::fmt_http_date(date))
                .body(Full::new(Bytes::from_static(TOKEN.as_bytes()))),
        )
    });
    ClientSecretCredential::builder(
        "contoso.onmicrosoft.com",
        "00000000-0000-0000-0000-000000000001",
        "skew-secret",
    )
    .transport(transport)
    .build()
    .unwrap()
}

async fn fetch(credential: &ClientSecretCredential, times: usize) {
    for _ in 0..times {
        credential
            .request_token(TokenRequest::new("https://graph.microsoft.com/.default"))
            .await
            .unwrap();
    }
}

/// The skews warned about, in seconds, in the order logged.
fn warned(log: &LogCapture) -> Vec<i64> {
    log.text()
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("nbf/exp"))
        .map(|line| {
            let field = line.split("clock_skew_secs=").nth(1).unwrap_or_default();
            let value = field.split_whitespace().next().unwrap_or_default();
            value
                .parse()
                .unwrap_or_else(|_| panic!("no skew in {line}"))
        })
        .collect()
}

#[tokio::test]
async fn a_skewed_clock_is_warned_about_once_per_credential() {
    let (log, _guard) = LogCapture::start();

    // Within a minute: latency and whole-second dates, not skew.
    fetch(&dated(-30), 2).await;
    fetch(&dated(45), 2).await;
    assert_eq!(warned(&log), Vec::<i64>::new(), "{}", log.text());

    // Ten minutes behind the endpoint's: warned once, however many requests.
    fetch(&dated(-600), 3).await;
    let skews = warned(&log);
    assert_eq!(skews.len(), 1, "{}", log.text());
    assert!((-601..=-599).contains(&skews[0]), "{skews:?}");
    assert!(
        log.text().contains("ahead of the token endpoint's"),
        "{}",
        log.text()
    );

    // Another credential warns for itself; this clock is now behind by an hour.
    fetch(&dated(3600), 1).await;
    let skews = warned(&log);
    assert_eq!(skews.len(), 2, "{}", log.text());
    assert!((3599..=3601).contains(&skews[1]), "{skews:?}");
    assert!(
        log.text().contains("behind the token endpoint's"),
        "{}",
        log.text()
    );
    // The secret never reaches the log.
    assert!(!log.text().contains("skew-secret"));
}
