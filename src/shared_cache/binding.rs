//! [`CacheBinding`]: what a credential lets a shared token cache know of it, and whether a
//! provider may share its tokens at all.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::TokenError;
use crate::shared_cache::EncryptionKey;

/// What a [shared token cache](crate::SharedTokenCache) binds a credential's entries to and
/// derives their keys from: returned by [`Credential::cache_binding`](crate::Credential::cache_binding).
///
/// Opaque: only this crate's credentials fill it in; a credential of yours returns the default
/// (nothing known) or the binding of the credential it wraps. `Debug` never shows the secret.
pub struct CacheBinding {
    kind: Kind,
}

enum Kind {
    /// An app registration of ours: its token endpoint, tenant, client id and, when its proof
    /// is a secret of its own, that secret as loaded now.
    Confidential {
        authority: String,
        tenant: String,
        client: String,
        secret: Option<Zeroizing<Vec<u8>>>,
    },
    /// Never shared: why.
    Refused(&'static str),
    /// A credential this crate knows nothing of.
    Unknown,
}

impl CacheBinding {
    pub(crate) fn unknown() -> CacheBinding {
        CacheBinding {
            kind: Kind::Unknown,
        }
    }

    pub(crate) fn refused(what: &'static str) -> CacheBinding {
        CacheBinding {
            kind: Kind::Refused(what),
        }
    }

    pub(crate) fn confidential(
        authority: &str,
        tenant: &str,
        client: &str,
        secret: Option<Zeroizing<Vec<u8>>>,
    ) -> CacheBinding {
        CacheBinding {
            kind: Kind::Confidential {
                authority: authority.to_owned(),
                tenant: tenant.to_owned(),
                client: client.to_owned(),
                secret,
            },
        }
    }

    /// Who the entries belong to, given the credential's `identity` (tenant, client) for a
    /// credential this crate does not know; or a
    /// [`Configuration`](crate::TokenErrorKind::Configuration) error saying why its tokens cannot
    /// be shared.
    pub(crate) fn owner(
        &self,
        identity: Option<(&str, &str)>,
        key: Option<&EncryptionKey>,
    ) -> Result<Owner, TokenError> {
        let (authority, tenant, client, has_secret) = match &self.kind {
            Kind::Refused(what) => {
                return Err(TokenError::configuration(format!(
                    "a shared token cache cannot hold the tokens of {what}; remove \
                     `.shared_cache(..)` from this provider"
                )));
            }
            Kind::Confidential {
                authority,
                tenant,
                client,
                secret,
            } => (
                authority.as_str(),
                tenant.as_str(),
                client.as_str(),
                secret.is_some(),
            ),
            Kind::Unknown => match identity {
                Some((tenant, client)) => ("", tenant, client, false),
                None => {
                    return Err(TokenError::configuration(
                        "a shared token cache needs to know whose tokens it holds, and this \
                         credential has no identity (tenant and client id): implement \
                         `Credential::identity`, or remove `.shared_cache(..)`",
                    ));
                }
            },
        };
        if !has_secret && key.is_none() {
            return Err(TokenError::configuration(
                "this credential has no secret of its own to derive the shared cache's keys from \
                 (a federated token, an assertion callback, a credential of yours): give the \
                 provider `.encryption_key(EncryptionKey::from_bytes(..))`, 32 random bytes \
                 the same on every replica",
            ));
        }
        Ok(Owner {
            authority: authority.to_owned(),
            tenant: tenant.to_owned(),
            client: client.to_owned(),
        })
    }

    /// The secret the keys derive from now: the provider's encryption key when it has one (it
    /// wins: the operator chose it), else the credential's own.
    pub(crate) fn secret(self, key: Option<&EncryptionKey>) -> Option<Zeroizing<Vec<u8>>> {
        if let Some(key) = key {
            return Some(Zeroizing::new(key.as_bytes().to_vec()));
        }
        match self.kind {
            Kind::Confidential { secret, .. } => secret,
            Kind::Refused(_) | Kind::Unknown => None,
        }
    }
}

/// Whom a provider's entries belong to (public ids: they go into entry names through an HMAC
/// only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) authority: String,
    pub(crate) tenant: String,
    pub(crate) client: String,
}

impl fmt::Debug for CacheBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Confidential {
                tenant,
                client,
                secret,
                ..
            } => f
                .debug_struct("CacheBinding")
                .field("tenant", tenant)
                .field("client", client)
                .field("secret", &secret.as_ref().map(|_| "<redacted>"))
                .finish(),
            Kind::Refused(what) => write!(f, "CacheBinding(refused: {what})"),
            Kind::Unknown => f.write_str("CacheBinding(unknown)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TokenErrorKind;

    #[test]
    fn who_may_share_and_with_which_key() {
        let key = EncryptionKey::from_bytes(vec![9u8; 32]).unwrap();
        let with_secret = || {
            CacheBinding::confidential(
                "https://login/t/oauth2/v2.0/token",
                "t",
                "c",
                Some(Zeroizing::new(b"hunter2".to_vec())),
            )
        };
        assert_eq!(with_secret().owner(None, None).unwrap().client, "c");
        assert!(!format!("{:?}", with_secret()).contains("hunter2"));
        assert_eq!(with_secret().secret(None).unwrap().as_slice(), b"hunter2");
        // An encryption key wins over the credential's secret.
        assert_eq!(
            with_secret().secret(Some(&key)).unwrap().as_slice(),
            &[9u8; 32]
        );

        // No secret of its own: only with an encryption key.
        let federated = || CacheBinding::confidential("https://login/x", "t", "c", None);
        let e = federated().owner(None, None).unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration);
        assert!(e.to_string().contains("encryption_key"), "{e}");
        federated().owner(None, Some(&key)).unwrap();

        // Unknown credentials: their identity and a key.
        let e = CacheBinding::unknown().owner(None, Some(&key)).unwrap_err();
        assert!(e.to_string().contains("identity"), "{e}");
        let owner = CacheBinding::unknown()
            .owner(Some(("t", "c")), Some(&key))
            .unwrap();
        assert_eq!((owner.tenant.as_str(), owner.client.as_str()), ("t", "c"));
        assert!(
            CacheBinding::unknown()
                .owner(Some(("t", "c")), None)
                .is_err()
        );

        // Refused whatever the key.
        let e = CacheBinding::refused("managed identity")
            .owner(Some(("t", "c")), Some(&key))
            .unwrap_err();
        assert!(e.to_string().contains("managed identity"), "{e}");
    }
}
