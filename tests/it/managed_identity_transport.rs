//! A managed identity credential with the caller's transport: every request goes through it, no
//! socket is opened, and the transport's failures keep their meaning (a refused connection
//! before any answer is "no managed identity endpoint answered").

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower_entra::{
    Credential, ManagedIdentityCredential, ManagedIdentityCredentialBuilder, TokenError,
    TokenErrorKind, TokenRequest,
};

use crate::support::recording_transport::recording_transport;

const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// IMDS (no variable set), retrying after milliseconds (on a paused clock where it retries).
fn imds() -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredential::builder()
        .environment(|_| None)
        .retry_backoff(Duration::from_millis(1))
}

/// What a token request to IMDS gets when every call of its transport fails with `kind`
/// before any answer, and how many calls the credential made.
async fn imds_over_a_transport_failing_with(kind: std::io::ErrorKind) -> (TokenError, usize) {
    let (transport, recorded) = recording_transport(move || Err(std::io::Error::from(kind)));
    let e = imds()
        .transport(transport)
        .build()
        .unwrap()
        .request_token(TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap_err();
    let calls = recorded.lock().unwrap().len();
    (e, calls)
}

#[tokio::test]
async fn the_imds_request_goes_through_the_given_transport() {
    let (transport, recorded) = recording_transport(|| {
        Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(
            br#"{"access_token":"mi.token.value","expires_in":"3599","expires_on":"1999999999","resource":"https://management.azure.com","token_type":"Bearer"}"#,
        ))))
    });
    let credential = imds().transport(transport).build().unwrap();
    assert!(
        format!("{credential:?}").contains("transport"),
        "{credential:?}"
    );
    let token = credential
        .request_token(TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap();
    assert_eq!(token.secret(), "mi.token.value");

    let recorded = recorded.lock().unwrap();
    assert_eq!(recorded.len(), 1);
    let (request, _) = &recorded[0];
    assert_eq!(request.method, http::Method::GET);
    assert_eq!(request.uri.host(), Some("169.254.169.254"));
    assert_eq!(request.uri.path(), "/metadata/identity/oauth2/token");
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(request.uri.query().unwrap().as_bytes())
            .into_owned()
            .collect();
    assert!(
        query.contains(&("api-version".into(), "2018-02-01".into())),
        "{query:?}"
    );
    assert!(
        query.contains(&("resource".into(), "https://management.azure.com".into())),
        "the resource, without /.default: {query:?}"
    );
    assert_eq!(request.headers.get("metadata").unwrap(), "true");
    assert_eq!(request.headers.get("x-client-sku").unwrap(), "tower-entra");
}

#[tokio::test]
async fn a_refused_connection_before_any_answer_means_no_managed_identity_here() {
    let (e, calls) =
        imds_over_a_transport_failing_with(std::io::ErrorKind::ConnectionRefused).await;
    assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
    for named in [
        "no managed identity endpoint answered",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ] {
        assert!(e.message().contains(named), "{named}: {e}");
    }
    // Failed fast: not retried.
    assert_eq!(calls, 1);
}

#[tokio::test(start_paused = true)]
async fn a_connection_broken_after_connecting_is_retried_and_stays_transient() {
    let (e, calls) = imds_over_a_transport_failing_with(std::io::ErrorKind::ConnectionReset).await;
    assert_eq!(e.kind(), TokenErrorKind::Connection, "{e}");
    assert!(
        !e.message()
            .contains("no managed identity endpoint answered"),
        "{e}"
    );
    // The first try and the policy's three retries.
    assert_eq!(calls, 4);
}

#[test]
fn the_timeout_hint_covers_every_retry_of_one_call() {
    let (transport, _) = recording_transport(|| {
        Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::new())))
    });
    let hint = |timeout: Duration| {
        imds()
            .transport(transport.clone())
            .timeout(timeout)
            .build()
            .unwrap()
            .timeout()
            .expect("a managed identity credential bounds its calls")
    };
    let (short, long) = (hint(Duration::from_secs(2)), hint(Duration::from_secs(20)));
    // Four attempts (the first and three retries) of the request timeout, at least.
    assert!(short >= Duration::from_secs(8), "{short:?}");
    assert!(long >= Duration::from_secs(80), "{long:?}");
    // IMDS's upgrade window (70 s) is retried through.
    assert!(short > Duration::from_secs(70), "{short:?}");
    assert_eq!(long - short, Duration::from_secs(18 * 4));
}

/// The managed identity endpoints' `Retry-After` is read as Entra's is: an HTTP date counts
/// too, not only delta-seconds.
#[tokio::test]
async fn a_retry_after_date_from_the_identity_endpoint_is_honoured() {
    let until = std::time::SystemTime::now() + Duration::from_secs(120);
    let (transport, recorded) = recording_transport(move || {
        let mut answer = http::Response::new(Full::new(Bytes::from_static(
            br#"{"error":"forbidden","error_description":"not now"}"#,
        )));
        *answer.status_mut() = http::StatusCode::FORBIDDEN;
        answer.headers_mut().insert(
            http::header::RETRY_AFTER,
            httpdate::fmt_http_date(until).parse().unwrap(),
        );
        Ok::<_, std::io::Error>(answer)
    });
    let e = imds()
        .transport(transport)
        .build()
        .unwrap()
        .request_token(TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
    assert_eq!(recorded.lock().unwrap().len(), 1, "a 403 is not retried");
    let waited = e.retry_after().expect("the date is read");
    assert!(
        waited > Duration::from_secs(100) && waited <= Duration::from_secs(120),
        "{waited:?}"
    );
}
