//! Credential material kept in a file that is rotated in place (a certificate or a client secret
//! that the Secrets Store CSI driver mounts from Key Vault): re-read when the file changes, so
//! that a rotation needs no restart.
//!
//! The file is checked at most every [`CHECK_INTERVAL`] (its modification time and length; a
//! read only when they moved), never on every token request, and read at once when Entra
//! refused what was sent as invalid, expired or unknown
//! ([`is_credential_rotation_answer`](crate::aadsts::is_credential_rotation_answer)). A file
//! that cannot be used (half-written: a PEM without its key, a truncated PFX, an empty secret)
//! keeps the material loaded before, with a warning.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::error::TokenError;

/// How often a credential file is checked for a change: short enough that a rotated credential
/// is in use within minutes (Key Vault and the CSI driver rotate well before the old one is
/// removed), long enough that checking costs nothing.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(120);

/// Turns a file's bytes into the material a credential uses.
type Parse<T> = Box<dyn Fn(&[u8]) -> Result<T, TokenError> + Send + Sync>;

/// Material of a credential source: given once, or read from a file that is watched.
pub(crate) enum Material<T> {
    Fixed(T),
    File(Arc<WatchedFile<T>>),
}

impl<T: Clone> Clone for Material<T> {
    fn clone(&self) -> Self {
        match self {
            Material::Fixed(value) => Material::Fixed(value.clone()),
            Material::File(file) => Material::File(file.clone()),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Material<T> {
    /// What to use for a token request now; a file is re-checked first when its last check is
    /// [`CHECK_INTERVAL`] old.
    pub(crate) async fn for_request(&self) -> T {
        match self {
            Material::Fixed(value) => value.clone(),
            Material::File(file) => {
                let now = Instant::now();
                if file.check_due(now) {
                    file.clone().reread(now, Reread::IfChanged).await;
                }
                file.current()
            }
        }
    }

    /// After Entra refused what was sent: reads the file now, whatever its stamps say, and
    /// says whether it now holds other material (worth one more token request).
    pub(crate) async fn reload_after_refusal(&self) -> bool {
        match self {
            Material::Fixed(_) => false,
            Material::File(file) => file.clone().reread(Instant::now(), Reread::Now).await,
        }
    }

    /// The material in use, without checking the file.
    pub(crate) fn current(&self) -> T {
        match self {
            Material::Fixed(value) => value.clone(),
            Material::File(file) => file.current(),
        }
    }

    /// The watched file's path, if the material comes from one.
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            Material::Fixed(_) => None,
            Material::File(file) => Some(&file.path),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Material<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Material::Fixed(value) => value.fmt(f),
            Material::File(file) => f
                .debug_struct("WatchedFile")
                .field("path", &file.path)
                .field("loaded", &*file.lock())
                .finish(),
        }
    }
}

/// How hard a re-read looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reread {
    /// Only when the modification time or length moved.
    IfChanged,
    /// Whatever they say (Entra refused the material in use).
    Now,
}

/// A file of credential material and what was last loaded from it.
pub(crate) struct WatchedFile<T> {
    path: PathBuf,
    /// What the file is, for messages: "client secret file", "certificate file".
    what: &'static str,
    max_len: usize,
    parse: Parse<T>,
    /// Keys for content fingerprints, random per process: a fingerprint of a secret is worth
    /// nothing outside it.
    hasher: RandomState,
    loaded: Mutex<Loaded<T>>,
}

struct Loaded<T> {
    value: T,
    /// The stamps of the file the value was read from.
    stamp: Option<Stamp>,
    fingerprint: u64,
    checked_at: Instant,
}

impl<T: fmt::Debug> fmt::Debug for Loaded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// What a file's metadata says about a change without reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
        })
    }
}

impl<T> WatchedFile<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded<T>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Clone + Send + Sync + 'static> WatchedFile<T> {
    /// Reads and parses the file now, on this thread (a constructor's: a file that cannot be
    /// used is a configuration error at start-up, not at the first token request).
    pub(crate) fn load(
        path: impl Into<PathBuf>,
        what: &'static str,
        max_len: usize,
        parse: Parse<T>,
    ) -> Result<Arc<Self>, TokenError> {
        let path = path.into();
        let stamp = Stamp::of(&path);
        let bytes = read_bounded(&path, what, max_len)?;
        let value = parse(&bytes).map_err(|e| {
            TokenError::configuration(format!("{} ({})", e.message(), path.display()))
        })?;
        let hasher = RandomState::new();
        let fingerprint = hasher.hash_one(&*bytes);
        Ok(Arc::new(WatchedFile {
            loaded: Mutex::new(Loaded {
                value,
                stamp,
                fingerprint,
                checked_at: Instant::now(),
            }),
            path,
            what,
            max_len,
            parse,
            hasher,
        }))
    }

    fn current(&self) -> T {
        self.lock().value.clone()
    }

    fn check_due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.lock().checked_at) >= CHECK_INTERVAL
    }

    /// Re-reads on the blocking pool; whether the material changed.
    async fn reread(self: Arc<Self>, now: Instant, how: Reread) -> bool {
        let file = self.clone();
        match on_blocking_pool(move || file.reread_blocking(now, how)).await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "re-reading the {} did not finish; keeping the credential loaded before", self.what);
                false
            }
        }
    }

    /// Blocking: called on the blocking pool. `now` comes from the caller, whose clock a test
    /// may have paused.
    fn reread_blocking(&self, now: Instant, how: Reread) -> bool {
        let stamp = Stamp::of(&self.path);
        {
            let mut loaded = self.lock();
            loaded.checked_at = now;
            if how == Reread::IfChanged && stamp.is_some() && stamp == loaded.stamp {
                return false;
            }
        }
        let bytes = match read_bounded(&self.path, self.what, self.max_len) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e.message(), "cannot re-read the {}; keeping the credential loaded before", self.what);
                return false;
            }
        };
        tracing::debug!(file = %self.path.display(), what = self.what, "credential file read");
        let fingerprint = self.hasher.hash_one(&*bytes);
        if fingerprint == self.lock().fingerprint {
            self.lock().stamp = stamp;
            return false;
        }
        match (self.parse)(&bytes) {
            Ok(value) => {
                let mut loaded = self.lock();
                loaded.value = value;
                loaded.stamp = stamp;
                loaded.fingerprint = fingerprint;
                tracing::info!(file = %self.path.display(), "the {} changed; token requests from now on use what it holds", self.what);
                true
            }
            Err(e) => {
                // Half-written, or replaced by something unusable: the stamps stay those of the
                // file loaded before, so that the next check reads it again.
                tracing::warn!(file = %self.path.display(), error = %e.message(), "the {} changed but cannot be used (half-written?); keeping the credential loaded before", self.what);
                false
            }
        }
    }
}

/// Runs `work` on tokio's blocking pool: a file read can block (a slow or hung mount, a FIFO),
/// and a worker stuck in it would stall every task scheduled on it. The work logs as the caller
/// would: to the same subscriber, inside its span.
pub(crate) async fn on_blocking_pool<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, tokio::task::JoinError> {
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || span.in_scope(work))
    })
    .await
}

/// The file's bytes, at most `max_len`, read into memory sized once (so that no growing buffer
/// leaves a copy behind) and zeroed when dropped. Blocking.
pub(crate) fn read_bounded(
    path: &Path,
    what: &str,
    max_len: usize,
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let unreadable = |e: std::io::Error| {
        TokenError::configuration(format!(
            "cannot read the {what} {}: {e}; check the path and that this process may read it",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(max_len + 1));
    file.take(max_len as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > max_len {
        return Err(TokenError::configuration(format!(
            "the {what} {} is larger than {max_len} bytes; check that the path names the right file",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tower-entra-{}-{name}", std::process::id()))
    }

    /// A watched file of text, whose parse refuses empty text.
    fn watched(path: &Path) -> Material<String> {
        let parse: Parse<String> = Box::new(|bytes| match std::str::from_utf8(bytes) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            _ => Err(TokenError::configuration("empty")),
        });
        Material::File(WatchedFile::load(path, "test file", 64, parse).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_is_used_only_once_the_check_interval_passed() {
        let path = temp_path("rotation-interval");
        std::fs::write(&path, "one").unwrap();
        let material = watched(&path);
        std::fs::write(&path, "two").unwrap();
        assert_eq!(material.for_request().await, "one");
        tokio::time::advance(CHECK_INTERVAL - Duration::from_secs(1)).await;
        assert_eq!(material.for_request().await, "one");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(material.for_request().await, "two");
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unusable_or_oversized_file_keeps_what_was_loaded_and_is_read_again_later() {
        let path = temp_path("rotation-unusable");
        std::fs::write(&path, "one").unwrap();
        let material = watched(&path);
        std::fs::write(&path, "").unwrap();
        assert!(!material.reload_after_refusal().await);
        std::fs::write(&path, vec![b'x'; 65]).unwrap();
        assert!(!material.reload_after_refusal().await);
        assert_eq!(material.current(), "one");
        std::fs::write(&path, "three").unwrap();
        tokio::time::advance(CHECK_INTERVAL).await;
        assert_eq!(material.for_request().await, "three");
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn a_refusal_reload_says_whether_the_content_changed() {
        let path = temp_path("rotation-refusal");
        std::fs::write(&path, "one").unwrap();
        let material = watched(&path);
        // Rewritten with the same content: new stamps, nothing new to send.
        std::fs::write(&path, "one").unwrap();
        assert!(!material.reload_after_refusal().await);
        std::fs::write(&path, "two").unwrap();
        assert!(material.reload_after_refusal().await);
        assert_eq!(material.current(), "two");
        std::fs::remove_file(&path).unwrap();
    }
}
