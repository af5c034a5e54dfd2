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
