//! Names and sealed values of shared-cache entries: what makes a store untrusted.
//!
//! Keys come from the credential's own secret (HKDF-SHA256), so only holders of the credential
//! can name or open its entries. An entry's name is an HMAC of everything the token is for, so a
//! name gives nothing away and cannot be guessed from public ids; its value is sealed with
//! AES-256-GCM whose associated data is that name under its store's key prefix, so a value copied
//! under another name, or from one prefix (environment) to another, does not open.
//!
//! A rotated secret derives other keys (another key id): its entries are new ones, and the
//! generation before stays readable until the new one serves the provider (see
//! [`Keyring::retire_previous`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::token::AccessToken;

/// HKDF's salt: the purpose, so that these keys are worth nothing anywhere else.
const SALT: &[u8] = b"tower-entra shared token cache v1";
/// What a sealed value starts with: the format's version.
const FORMAT: &[u8; 2] = b"s1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;

/// What an entry holds a token for, and where. Every field takes part in the entry's name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryBinding<'a> {
    /// The store's key prefix (one per environment sharing a store): a value copied from one
    /// environment to another must not open there.
    pub(crate) prefix: &'a str,
    /// The authority the token comes from (its token endpoint).
    pub(crate) authority: &'a str,
    pub(crate) tenant: &'a str,
    /// The app (client id) the token is issued to.
    pub(crate) client: &'a str,
    pub(crate) scope: &'a str,
    /// Extra claims requested (none for the tokens a shared cache holds; kept in the name so
    /// that a claims token could never be served for a plain request).
    pub(crate) claims: Option<&'a str>,
    /// Client capabilities declared (`cp1`), which change what Entra issues.
    pub(crate) capabilities: &'a str,
}

/// The keys of one generation of a credential's secret.
struct Keys {
    /// A public fingerprint of the generation (HKDF output, not the secret): in the name and
    /// the sealed value, so that each generation has its own entries.
    id: [u8; KEY_ID_LEN],
    naming: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
}

impl Keys {
    fn derive(secret: &[u8]) -> Keys {
        let hkdf = Hkdf::<Sha256>::new(Some(SALT), secret);
        let mut id = [0u8; KEY_ID_LEN];
        let mut naming = Zeroizing::new([0u8; 32]);
        let mut sealing = Zeroizing::new([0u8; 32]);
        // Lengths far below HKDF's limit (255 * 32 bytes): expanding cannot fail.
        let _ = hkdf.expand(b"key id", &mut id);
        let _ = hkdf.expand(b"entry names", naming.as_mut());
        let _ = hkdf.expand(b"entry values", sealing.as_mut());
        Keys {
            id,
            naming,
            cipher: Aes256Gcm::new(&(*sealing).into()),
        }
    }

    /// The entry's name within its store (the store puts its prefix before it; the prefix is
    /// part of the HMAC).
    fn name(&self, binding: &EntryBinding<'_>) -> String {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(self.naming.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        let claims = binding.claims.unwrap_or("");
        for field in [
            binding.prefix,
            binding.authority,
            binding.tenant,
            binding.client,
            binding.scope,
            claims,
            binding.capabilities,
        ] {
            // Length-prefixed, so that no two bindings give the same input.
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac.update(&[u8::from(binding.claims.is_some())]);
        mac.update(&self.id);
        let digest = mac.finalize().into_bytes();
        let mut name = String::with_capacity(64);
        for byte in digest.iter() {
            name.push_str(&format!("{byte:02x}"));
        }
        name
    }

    fn seal(&self, prefix: &str, name: &str, entry: &SealedToken) -> Option<Vec<u8>> {
        let plain = Zeroizing::new(serde_json::to_vec(&Plain::from(entry)).ok()?);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &associated(prefix, name),
                },
            )
            .ok()?;
        let mut value = Vec::with_capacity(FORMAT.len() + KEY_ID_LEN + NONCE_LEN + sealed.len());
        value.extend_from_slice(FORMAT);
        value.extend_from_slice(&self.id);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        Some(value)
    }

    fn open(&self, prefix: &str, name: &str, value: &[u8]) -> Result<SealedToken, Unopened> {
        let rest = value.strip_prefix(FORMAT).ok_or(Unopened::Format)?;
        let (id, rest) = rest.split_at_checked(KEY_ID_LEN).ok_or(Unopened::Format)?;
        if id != self.id {
            return Err(Unopened::OtherKey);
        }
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN).ok_or(Unopened::Format)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unopened::Format)?;
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: sealed,
                        aad: &associated(prefix, name),
                    },
                )
                .map_err(|_| Unopened::Forged)?,
        );
        let plain: Plain = serde_json::from_slice(&plain).map_err(|_| Unopened::Format)?;
        plain.into_entry().ok_or(Unopened::Format)
    }
}

/// A sealed value's associated data: the key it is stored under, the store's prefix (length
/// first, so that no prefix and name pair reads as another) and the name.
fn associated(prefix: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(8 + prefix.len() + name.len());
    aad.extend_from_slice(&(prefix.len() as u64).to_be_bytes());
    aad.extend_from_slice(prefix.as_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Why a value did not open; the value is then ignored (and overwritten by the next write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unopened {
    /// Not a sealed value of this format (garbage, or another program's).
    Format,
    /// Sealed under another generation's keys.
    OtherKey,
    /// The seal does not hold: another key sealed it, or it was written under another name.
    Forged,
}

impl fmt::Display for Unopened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unopened::Format => "the value is not a sealed token of this format",
            Unopened::OtherKey => "the value was sealed under another key",
            Unopened::Forged => {
                "the value's seal does not hold (another credential's, or moved from another entry)"
            }
        })
    }
}

/// The keys a provider names and seals its entries with: those of the credential's secret now
/// and, after a rotation, those of the one before (replicas not yet rotated still write there).
pub(crate) struct Keyring {
    current: Keys,
    previous: Option<Keys>,
}

impl Keyring {
    /// The keys derived from `secret` (the client secret, the certificate's private key, an
    /// [`EncryptionKey`](crate::EncryptionKey)).
    pub(crate) fn derive(secret: &[u8]) -> Keyring {
        Keyring {
            current: Keys::derive(secret),
            previous: None,
        }
    }

    /// After the credential's secret may have changed: a new secret becomes the current
    /// generation and the current one the previous. Says whether it changed.
    pub(crate) fn rotate_to(&mut self, secret: &[u8]) -> bool {
        let keys = Keys::derive(secret);
        if keys.id == self.current.id {
            return false;
        }
        self.previous = Some(std::mem::replace(&mut self.current, keys));
        true
    }

    /// Stops reading the generation before: the current one has served this provider (it read
    /// or wrote a token under it), so the rotation is complete here. The old secret may be why it
    /// was rotated: whoever holds it could seal entries of that generation. Says whether there
    /// was one.
    pub(crate) fn retire_previous(&mut self) -> bool {
        self.previous.take().is_some()
    }

    /// The current generation's key id, in hex (public: for logs).
    pub(crate) fn key_id(&self) -> String {
        self.current.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The name of the current generation's entry for `binding`: what is written.
    pub(crate) fn name(&self, binding: &EntryBinding<'_>) -> String {
        self.current.name(binding)
    }

    /// The names to read, current generation first.
    pub(crate) fn names(&self, binding: &EntryBinding<'_>) -> Vec<String> {
        let mut names = vec![self.current.name(binding)];
        if let Some(previous) = &self.previous {
            names.push(previous.name(binding));
        }
        names
    }

    /// `entry` sealed for the entry `name` (a current-generation name) in a store with key
    /// `prefix`; `None` only if the system's random source failed.
    pub(crate) fn seal(&self, prefix: &str, name: &str, entry: &SealedToken) -> Option<Vec<u8>> {
        self.current.seal(prefix, name, entry)
    }

    /// What `value`, read under `name` in a store with key `prefix`, holds, if it opens under
    /// either generation.
    pub(crate) fn open(
        &self,
        prefix: &str,
        name: &str,
        value: &[u8],
    ) -> Result<SealedToken, Unopened> {
        match self.current.open(prefix, name, value) {
            Err(Unopened::OtherKey) => match &self.previous {
                Some(previous) => previous.open(prefix, name, value),
                None => Err(Unopened::OtherKey),
            },
            opened => opened,
        }
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_id", &self.key_id())
            .field("previous", &self.previous.is_some())
            .finish()
    }
}

/// A token as an entry holds it: the token and its times on the wall clock (replicas share no
/// monotonic clock).
#[derive(Clone)]
pub(crate) struct SealedToken {
    pub(crate) token: Zeroizing<String>,
    pub(crate) expires_on: SystemTime,
    /// When its writer would refresh it (before jitter): a replica reading it past then
    /// refreshes instead, and one reading it before refreshes around then too (each with its
    /// own jitter, so that the fleet spreads and the first to refresh does it for all).
    pub(crate) refresh_on: SystemTime,
}

impl SealedToken {
    /// The entry for `token`, which its provider would refresh at `refresh_on`.
    pub(crate) fn new(token: &AccessToken, refresh_on: SystemTime) -> SealedToken {
        SealedToken {
            token: Zeroizing::new(token.secret().to_owned()),
            expires_on: token.expires_on(),
            refresh_on,
        }
    }

    /// The token again, as a reader at wall time `now` holds it (its refresh point the
    /// writer's, as a `refresh_in` from now); `None` if it has expired.
    pub(crate) fn into_token(self, now: SystemTime) -> Option<AccessToken> {
        let expires_in = self.expires_on.duration_since(now).ok()?;
        let refresh_in = self.refresh_on.duration_since(now).ok();
        AccessToken::issued(
            self.token.as_str().to_owned(),
            expires_in,
            refresh_in,
            tokio::time::Instant::now(),
            now,
        )
        .ok()
    }
}

impl fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedToken")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .field("refresh_on", &self.refresh_on)
            .finish()
    }
}

/// The plaintext inside a seal (milliseconds since the Unix epoch).
#[derive(Serialize, Deserialize)]
struct Plain<'a> {
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
    expires_on_ms: u64,
    refresh_on_ms: u64,
}

impl<'a> From<&'a SealedToken> for Plain<'a> {
    fn from(entry: &'a SealedToken) -> Self {
        Plain {
            token: std::borrow::Cow::Borrowed(entry.token.as_str()),
            expires_on_ms: unix_ms(entry.expires_on),
            refresh_on_ms: unix_ms(entry.refresh_on),
        }
    }
}

impl Plain<'_> {
    fn into_entry(self) -> Option<SealedToken> {
        let at = |ms: u64| UNIX_EPOCH.checked_add(Duration::from_millis(ms));
        Some(SealedToken {
            token: Zeroizing::new(self.token.into_owned()),
            expires_on: at(self.expires_on_ms)?,
            refresh_on: at(self.refresh_on_ms)?,
        })
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(scope: &str) -> EntryBinding<'_> {
        EntryBinding {
            prefix: "p:",
            authority: "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
            tenant: "contoso",
            client: "00000000-0000-0000-0000-000000000001",
            scope,
            claims: None,
            capabilities: "",
        }
    }

    fn entry(token: &str) -> SealedToken {
        let now = SystemTime::now();
        SealedToken {
            token: Zeroizing::new(token.to_owned()),
            expires_on: now + Duration::from_secs(3600),
            refresh_on: now + Duration::from_secs(3300),
        }
    }

    #[test]
    fn a_name_says_nothing_of_what_it_names_and_each_field_changes_it() {
        let keys = Keyring::derive(b"the client secret");
        let name = keys.name(&binding("api://x/.default"));
        assert_eq!(name.len(), 64);
        for clear in ["contoso", "00000000", "api://x", "login"] {
            assert!(!name.contains(clear), "{name} holds {clear}");
        }
        let base = binding("api://x/.default");
        let others = [
            binding("api://y/.default"),
            EntryBinding {
                tenant: "fabrikam",
                ..base
            },
            EntryBinding {
                client: "00000000-0000-0000-0000-000000000002",
                ..base
            },
            EntryBinding {
                authority: "https://login.microsoftonline.us/contoso/oauth2/v2.0/token",
                ..base
            },
            EntryBinding {
                claims: Some("{}"),
                ..base
            },
            EntryBinding {
                capabilities: "cp1",
                ..base
            },
            EntryBinding {
                prefix: "prod:",
                ..base
            },
        ];
        for other in others {
            assert_ne!(keys.name(&other), name, "{other:?}");
        }
        // Another secret, another name for the same binding: not guessable from public ids.
        assert_ne!(Keyring::derive(b"another secret").name(&base), name);
    }

    #[test]
    fn a_value_opens_only_under_its_own_name_and_key() {
        let keys = Keyring::derive(b"the client secret");
        let name = keys.name(&binding("api://x/.default"));
        let value = keys.seal("p:", &name, &entry("eyJ.token.sig")).unwrap();
        assert!(!String::from_utf8_lossy(&value).contains("eyJ"));
        let opened = keys.open("p:", &name, &value).unwrap();
        assert_eq!(opened.token.as_str(), "eyJ.token.sig");

        // Moved under another entry's name: the associated data differs.
        let other = keys.name(&binding("api://y/.default"));
        assert_eq!(
            keys.open("p:", &other, &value).unwrap_err(),
            Unopened::Forged
        );
        // The same name under another store prefix (copied to another environment).
        assert_eq!(
            keys.open("q:", &name, &value).unwrap_err(),
            Unopened::Forged
        );
        // Sealed by another credential.
        let stranger = Keyring::derive(b"another secret");
        assert_eq!(
            stranger.open("p:", &name, &value).unwrap_err(),
            Unopened::OtherKey
        );
        // A flipped bit, a truncation, garbage.
        let mut flipped = value.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            keys.open("p:", &name, &flipped).unwrap_err(),
            Unopened::Forged
        );
        assert_eq!(
            keys.open("p:", &name, &value[..5]).unwrap_err(),
            Unopened::Format
        );
        assert_eq!(
            keys.open("p:", &name, b"garbage").unwrap_err(),
            Unopened::Format
        );
    }

    #[test]
    fn after_a_rotation_both_generations_open_and_writes_go_to_the_new_one() {
        let old = Keyring::derive(b"secret one");
        let b = binding("api://x/.default");
        let old_name = old.name(&b);
        let old_value = old.seal("p:", &old_name, &entry("old.token.x")).unwrap();

        let mut rotated = Keyring::derive(b"secret one");
        assert!(!rotated.rotate_to(b"secret one"));
        assert!(rotated.rotate_to(b"secret two"));
        let names = rotated.names(&b);
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], old_name);
        assert_eq!(names[1], old_name);
        assert_eq!(rotated.name(&b), names[0]);
        assert_eq!(
            rotated
                .open("p:", &old_name, &old_value)
                .unwrap()
                .token
                .as_str(),
            "old.token.x"
        );
        let new_value = rotated
            .seal("p:", &names[0], &entry("new.token.x"))
            .unwrap();
        assert_eq!(
            rotated
                .open("p:", &names[0], &new_value)
                .unwrap()
                .token
                .as_str(),
            "new.token.x"
        );
        // A replica still on the old secret cannot read the new generation.
        assert!(old.open("p:", &names[0], &new_value).is_err());

        // Once retired, the old generation is neither named nor opened.
        assert!(rotated.retire_previous());
        assert_eq!(rotated.names(&b), [names[0].clone()]);
        assert_eq!(
            rotated.open("p:", &old_name, &old_value).unwrap_err(),
            Unopened::OtherKey
        );
        assert!(!rotated.retire_previous());
    }

    #[test]
    fn debug_shows_no_secret() {
        let keys = Keyring::derive(b"the client secret");
        let e = entry("eyJ.secret.token");
        for shown in [format!("{keys:?}"), format!("{e:?}")] {
            assert!(!shown.contains("secret"), "{shown}");
            assert!(!shown.contains("eyJ"), "{shown}");
        }
    }

    #[test]
    fn an_expired_entry_gives_no_token() {
        let mut e = entry("a.b.c");
        assert!(e.clone().into_token(SystemTime::now()).is_some());
        e.expires_on = SystemTime::now() - Duration::from_secs(1);
        assert!(e.into_token(SystemTime::now()).is_none());
    }
}
