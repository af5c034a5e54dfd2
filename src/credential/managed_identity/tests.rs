//! Azure Arc against the emulator's agent (its key directory is injectable only here), over
//! loopback sockets with the default transport.

use super::*;
use entra_emulator::{Emulator, Endpoint, ManagedIdentity};
use std::path::Path;

const ARM: &str = "https://management.azure.com/.default";

/// A fresh directory under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("tower-entra-arc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn arc(em: &Emulator, key_dir: &Path) -> ManagedIdentityCredential {
    let vars = [
        (
            crate::credential::env::IDENTITY_ENDPOINT,
            em.arc_identity_endpoint(),
        ),
        (
            crate::credential::env::IMDS_ENDPOINT,
            em.arc_imds_endpoint(),
        ),
    ];
    ManagedIdentityCredential::builder()
        .environment(move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .arc_key_directory(key_dir)
        .build()
        .unwrap()
}

#[tokio::test]
async fn arc_answers_the_agents_challenge_with_the_key_file() {
    let em = Emulator::start().await;
    let mi = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let dir = TempDir::new();
    em.set_arc_key_directory(&dir.0);
    let c = arc(&em, &dir.0);
    assert_eq!(c.source_name(), "Azure Arc");
    let token = c.request_token(TokenRequest::new(ARM)).await.unwrap();
    assert!(!token.secret().is_empty());
    let log = em.managed_identity_request_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|r| r.endpoint == Endpoint::AzureArc));
    assert_eq!(log[0].status, Some(401));
    assert_eq!(log[0].header("authorization"), None);
    assert_eq!(log[1].status, Some(200));
    assert!(
        log[1]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    for r in &log {
        assert_eq!(r.query_param("api-version"), Some("2019-11-01"));
        assert_eq!(
            r.query_param("resource"),
            Some("https://management.azure.com")
        );
        assert_eq!(r.header("metadata"), Some("true"));
    }
    let _ = mi;
}

#[tokio::test]
async fn arc_reads_no_key_outside_the_agents_directory() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let (written, trusted) = (TempDir::new(), TempDir::new());
    em.set_arc_key_directory(&written.0);
    let e = arc(&em, &trusted.0)
        .request_token(TokenRequest::new(ARM))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{e}");
    assert!(
        e.message().contains("not in the agent's key directory"),
        "{e}"
    );
    // The key was never sent.
    let log = em.managed_identity_request_log();
    assert_eq!(log.len(), 1, "{log:?}");
}

#[tokio::test]
async fn arc_key_files_are_checked_before_they_are_read() {
    let dir = TempDir::new();
    let outside = TempDir::new();
    let key = |name: &str, contents: &[u8]| {
        let path = dir.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    assert_eq!(
        arc::read_key(&key("ok.key", b"  abc123\n"), &dir.0)
            .await
            .unwrap()
            .as_str(),
        "abc123"
    );
    let big = key("big.key", &vec![b'a'; 4097]);
    let e = arc::read_key(&big, &dir.0).await.unwrap_err();
    assert!(e.message().contains("larger than 4096 bytes"), "{e}");
    let e = arc::read_key(&key("passwd", b"root"), &dir.0)
        .await
        .unwrap_err();
    assert!(e.message().contains("not a .key file"), "{e}");
    let elsewhere = outside.0.join("stolen.key");
    std::fs::write(&elsewhere, b"secret").unwrap();
    let escaping = dir
        .0
        .join("..")
        .join(outside.0.file_name().unwrap())
        .join("stolen.key");
    let e = arc::read_key(&escaping, &dir.0).await.unwrap_err();
    assert!(
        e.message().contains("not in the agent's key directory"),
        "{e}"
    );
    #[cfg(unix)]
    {
        let link = dir.0.join("link.key");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let e = arc::read_key(&link, &dir.0).await.unwrap_err();
        assert!(
            e.message().contains("not in the agent's key directory"),
            "{e}"
        );
    }
    let e = arc::read_key(&key("empty.key", b" \n"), &dir.0)
        .await
        .unwrap_err();
    assert!(e.message().contains("is empty"), "{e}");
}

#[tokio::test]
async fn arc_refuses_user_assigned_identities_when_built() {
    let em = Emulator::start().await;
    let vars = [
        (
            crate::credential::env::IDENTITY_ENDPOINT,
            em.arc_identity_endpoint(),
        ),
        (
            crate::credential::env::IMDS_ENDPOINT,
            em.arc_imds_endpoint(),
        ),
    ];
    let e = ManagedIdentityCredential::builder()
        .environment(move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .user_assigned(ManagedIdentityId::ClientId("c".into()))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert!(e.message().contains("Azure Arc"), "{e}");
}

/// No copy of a token or of the Arc key is freed unzeroed on the credential's paths (the lib's
/// tests run on the scanning allocator): the answer read and parsed, accepted or refused, and
/// the `Authorization: Basic` header built from the key. The test transport answers from memory
/// that it zeroes too, so every copy left is the credential's.
mod freed_memory {
    use std::convert::Infallible;
    use std::future::ready;

    use bytes::Bytes;
    use http_body_util::Full;
    use zeroize::Zeroizing;

    use super::*;
    use crate::scanning_allocator::scan;
    use crate::transport::TransportRequest;

    const TOKEN: &[u8] = b"eyJ0eXAi.Mi7-needle_token-that-must-be-zeroed.before-free";
    const KEY: &[u8] = b"Arc4-needle_key-that-must-be-zeroed-before-free";

    /// An answer whose body lives in memory zeroed when dropped.
    fn answer(status: u16, body: &[u8]) -> http::Response<Full<Bytes>> {
        let body = Bytes::from_owner(Zeroizing::new(body.to_vec()));
        let mut response = http::Response::new(Full::new(body));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response
    }

    #[tokio::test]
    async fn managed_identity_answers_leave_no_copy_of_the_token() {
        let token = std::str::from_utf8(TOKEN).unwrap();
        let bodies = [
            // Accepted, then dropped.
            format!(r#"{{"access_token":"{token}","expires_in":"3600","token_type":"Bearer"}}"#),
            // Read, then refused.
            format!(r#"{{"access_token":"{token}","expires_in":"3600","token_type":"pop"}}"#),
            format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#),
            format!(r#"{{"access_token":"{token}","expires_on":"soon"}}"#),
            // Read, then the JSON breaks.
            format!(r#"{{"access_token":"{token}","expires_in": }}"#),
            format!(r#"{{"access_token":"{token}","expires_in":"3600""#),
        ];
        for body in &bodies {
            let body = Zeroizing::new(body.as_bytes().to_vec());
            let transport = tower::service_fn(move |_: TransportRequest| {
                ready(Ok::<_, Infallible>(answer(200, &body)))
            });
            let credential = ManagedIdentityCredential::builder()
                .environment(|_| None)
                .transport(transport)
                .build()
                .unwrap();
            let scan = scan(TOKEN.split_at(24).0);
            let outcome = credential.request_token(TokenRequest::new(ARM)).await;
            let ok = outcome.is_ok();
            drop(outcome);
            drop(credential);
            assert_eq!(
                scan.unzeroed_frees(),
                0,
                "a freed copy of the token (accepted: {ok}) after {}",
                String::from_utf8_lossy(TOKEN)
            );
        }
    }

    #[tokio::test]
    async fn the_arc_key_and_its_basic_header_leave_no_copy() {
        let dir = TempDir::new();
        let key_file = dir.0.join("agent.key");
        std::fs::write(&key_file, KEY).unwrap();
        let challenge = format!("Basic realm={}", key_file.display());
        let transport = tower::service_fn(move |request: TransportRequest| {
            let answer = match request.headers().get(http::header::AUTHORIZATION) {
                None => {
                    let mut challenged = answer(401, b"");
                    challenged
                        .headers_mut()
                        .insert(http::header::WWW_AUTHENTICATE, challenge.parse().unwrap());
                    challenged
                }
                Some(value) => {
                    let sent = value.as_bytes().strip_prefix(b"Basic ") == Some(KEY);
                    let body: &[u8] = if sent {
                        br#"{"access_token":"arc-token","expires_in":"3600","token_type":"Bearer"}"#
                    } else {
                        br#"{"error":"wrong key"}"#
                    };
                    answer(if sent { 200 } else { 400 }, body)
                }
            };
            drop(request);
            ready(Ok::<_, Infallible>(answer))
        });
        let credential = ManagedIdentityCredential::builder()
            .environment(|name| match name {
                "IDENTITY_ENDPOINT" => {
                    Some("http://localhost:40342/metadata/identity/oauth2/token".to_owned())
                }
                "IMDS_ENDPOINT" => Some("http://localhost:40342".to_owned()),
                _ => None,
            })
            .transport(transport)
            .arc_key_directory(&dir.0)
            .build()
            .unwrap();
        let scan = scan(KEY);
        let token = credential.request_token(TokenRequest::new(ARM)).await;
        assert_eq!(token.unwrap().secret(), "arc-token");
        drop(credential);
        assert_eq!(
            scan.unzeroed_frees(),
            0,
            "memory holding the Arc key was freed without being zeroed"
        );
    }
}

/// Claims challenges: App Service is asked, as MSAL asks it, for a token in place of the refused
/// one; a platform that serves the refused token again, or a source that takes no such request,
/// is an error, never a token passed off as carrying the claims.
mod claims_challenge {
    use std::convert::Infallible;
    use std::future::ready;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;

    use super::*;
    use crate::transport::TransportRequest;

    const CHALLENGE: &str = r#"{"access_token":{"nbf":{"essential":true,"value":"1726077595"},"xms_cc":{"values":["cp1"]}}}"#;
    const CP1: &str = r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#;

    fn token_body(token: &str) -> http::Response<Full<Bytes>> {
        http::Response::new(Full::new(Bytes::from(format!(
            r#"{{"access_token":"{token}","expires_in":"86400","token_type":"Bearer"}}"#
        ))))
    }

    /// A platform whose cache serves `cached` until asked to refresh exactly it (when
    /// `honours`); the queries it was sent.
    fn platform(
        vars: &'static [(&'static str, &'static str)],
        honours: bool,
    ) -> (ManagedIdentityCredential, Arc<Mutex<Vec<String>>>) {
        let queries = Arc::new(Mutex::new(Vec::new()));
        let seen = queries.clone();
        let transport = tower::service_fn(move |request: TransportRequest| {
            let query = request.uri().query().unwrap_or_default().to_owned();
            let refresh = format!("token_sha256_to_refresh={}", claims::sha256_hex("cached"));
            let token = if honours && query.contains(&refresh) {
                "renewed"
            } else {
                "cached"
            };
            seen.lock().unwrap().push(query);
            ready(Ok::<_, Infallible>(token_body(token)))
        });
        let credential = ManagedIdentityCredential::builder()
            .environment(move |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            })
            .transport(transport)
            .build()
            .unwrap();
        (credential, queries)
    }

    const APP_SERVICE: &[(&str, &str)] = &[
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:41566/MSI/token/"),
        ("IDENTITY_HEADER", "h"),
    ];

    #[tokio::test]
    async fn app_service_replaces_the_refused_token() {
        let (credential, queries) = platform(APP_SERVICE, true);
        let first = credential
            .request_token(TokenRequest::new(ARM))
            .await
            .unwrap();
        assert_eq!(first.secret(), "cached");
        let renewed = credential
            .request_token(TokenRequest::new(ARM).with_claims(CHALLENGE))
            .await
            .unwrap();
        assert_eq!(renewed.secret(), "renewed");
        let queries = queries.lock().unwrap();
        assert!(
            !queries[0].contains("token_sha256_to_refresh"),
            "{queries:?}"
        );
        assert!(queries[1].contains("xms_cc=cp1"), "{queries:?}");
        assert!(
            queries[1].contains(&claims::sha256_hex("cached")),
            "{queries:?}"
        );
    }

    #[tokio::test]
    async fn a_platform_serving_the_refused_token_again_is_an_error() {
        let (credential, _) = platform(APP_SERVICE, false);
        credential
            .request_token(TokenRequest::new(ARM))
            .await
            .unwrap();
        let e = credential
            .request_token(TokenRequest::new(ARM).with_claims(CHALLENGE))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
        assert!(e.message().contains("refused token again"), "{e}");
    }

    #[tokio::test]
    async fn imds_cannot_honour_a_challenge_and_sends_nothing_for_it() {
        let (credential, queries) = platform(&[], true);
        let e = credential
            .request_token(TokenRequest::new(ARM).with_claims(CHALLENGE))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
        assert!(e.message().contains("IMDS cannot honour"), "{e}");
        assert!(queries.lock().unwrap().is_empty());
        // Capabilities alone (what a provider with `client_capabilities` sends on every fetch)
        // are no challenge: IMDS is asked as always.
        let token = credential
            .request_token(TokenRequest::new(ARM).with_claims(CP1))
            .await
            .unwrap();
        assert_eq!(token.secret(), "cached");
        assert!(!queries.lock().unwrap()[0].contains("xms_cc"));
    }
}
