//! What a token request carries, seen by a capturing transport (a tower service that records the
//! request and answers a token): the telemetry headers Microsoft's libraries send, beside the
//! correlation id, on every request, whatever the transport.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use tower_entra::{ClientSecretCredential, Credential, TokenRequest};

use crate::support::recording_transport::recording_transport;
use crate::support::secret_app::{demo_api_token, secret_app};

const TOKEN: &str = r#"{"token_type":"Bearer","expires_in":3599,"access_token":"a.b.c"}"#;

#[tokio::test]
async fn every_token_request_names_the_library_its_version_and_os() {
    let (transport, recorded) = recording_transport(|| {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
            TOKEN.as_bytes(),
        ))))
    });
    let credential = ClientSecretCredential::builder(
        "contoso.onmicrosoft.com",
        "00000000-0000-0000-0000-000000000001",
        "telemetry-secret",
    )
    .transport(transport)
    .build()
    .unwrap();
    for _ in 0..2 {
        let token = credential
            .request_token(TokenRequest::new("https://graph.microsoft.com/.default"))
            .await
            .unwrap();
        assert_eq!(token.secret(), "a.b.c");
    }

    let recorded = recorded.lock().unwrap();
    assert_eq!(recorded.len(), 2);
    let version = env!("CARGO_PKG_VERSION");
    let mut request_ids = Vec::new();
    for (parts, body) in recorded.iter() {
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(
            parts.uri,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("no {name} header: {:?}", parts.headers))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("x-client-SKU"), "tower-entra");
        assert_eq!(header("x-client-Ver"), version);
        assert_eq!(header("x-client-OS"), std::env::consts::OS);
        assert_eq!(header("user-agent"), format!("tower-entra/{version}"));
        assert_eq!(header("return-client-request-id"), "true");
        assert_eq!(header("content-type"), "application/x-www-form-urlencoded");
        let id = header("client-request-id");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        request_ids.push(id);
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        assert!(
            form.contains(&("client_secret".into(), "telemetry-secret".into())),
            "{form:?}"
        );
    }
    // A new correlation id per request, so Entra's logs tell them apart.
    assert_ne!(request_ids[0], request_ids[1]);
}

/// The telemetry headers as they arrive at an endpoint: `(name, value)` pairs, names lowercase.
fn assert_names_the_library(headers: &[(String, String)], what: &str) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{what}: no {name} header: {headers:?}"))
    };
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(header("x-client-SKU"), "tower-entra", "{what}");
    assert_eq!(header("x-client-Ver"), version, "{what}");
    assert_eq!(header("x-client-OS"), std::env::consts::OS, "{what}");
    assert_eq!(
        header("user-agent"),
        format!("tower-entra/{version}"),
        "{what}"
    );
}

#[tokio::test]
async fn the_emulator_sees_the_telemetry_headers_and_the_correlation_id() {
    let (emulator, credential) = secret_app("telemetry", "telemetry-secret").await;
    let credential = credential.build().unwrap();
    demo_api_token(&credential).await.unwrap();
    let request = emulator.last_token_http_request().unwrap();
    assert_eq!(request.method, "POST");
    assert_names_the_library(&request.headers, "token POST");
    let id = request.header("client-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(request.header("return-client-request-id"), Some("true"));
}

#[tokio::test]
async fn managed_identity_requests_carry_the_telemetry_headers_too() {
    use entra_emulator::{Emulator, ManagedIdentity};
    use tower_entra::ManagedIdentityCredential;

    let emulator = Emulator::start().await;
    emulator.assign_managed_identity(ManagedIdentity::system_assigned());
    let imds = emulator.imds_host();
    let credential = ManagedIdentityCredential::builder()
        .environment(move |name| {
            (name == "AZURE_POD_IDENTITY_AUTHORITY_HOST").then(|| imds.clone())
        })
        .build()
        .unwrap();
    credential
        .request_token(TokenRequest::new("https://management.azure.com/.default"))
        .await
        .unwrap();
    let log = emulator.managed_identity_request_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].header("metadata"), Some("true"));
    assert_names_the_library(&log[0].headers, "IMDS request");
}
