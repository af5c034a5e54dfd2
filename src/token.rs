//! [`AccessToken`]: a bearer token, its header value and its lifetime.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use tokio::time::Instant;
use zeroize::{Zeroize, Zeroizing};

use crate::error::TokenError;

const BEARER: &[u8] = b"Bearer ";

/// An access token for one resource, with when it expires and, if its issuer said, when it
/// should be refreshed. It holds facts only: when to refresh is the provider's decision.
///
/// Cloning is cheap (a reference count). The token is stored once, as the ready-made
/// `Authorization: Bearer …` header value (marked sensitive), and its memory is zeroed when the
/// last clone, including any request that carried it, is dropped. `Debug` never shows it.
#[derive(Clone)]
pub struct AccessToken {
    header: HeaderValue,
    issued_at: Instant,
    expires_at: Instant,
    refresh_in: Option<Duration>,
    expires_on: SystemTime,
}

impl AccessToken {
    /// A token that expires `expires_in` from now. A [`TokenProvider`](crate::TokenProvider)
    /// refreshes it ahead of that: 5 minutes (at most half its lifetime) before expiry, or as
    /// [`with_refresh_in`](Self::with_refresh_in) says.
    ///
    /// For custom [`Credential`](crate::Credential)s. Fails if `secret` is empty or cannot be
    /// sent in an HTTP header.
    ///
    /// ```
    /// use std::time::Duration;
    /// let token = tower_entra::AccessToken::new("eyJ0eXAi...", Duration::from_secs(3600)).unwrap();
    /// assert_eq!(token.secret(), "eyJ0eXAi...");
    /// assert!(!format!("{token:?}").contains("eyJ0eXAi"));
    /// ```
    pub fn new(secret: impl Into<String>, expires_in: Duration) -> Result<Self, TokenError> {
        Self::issued(
            secret.into(),
            expires_in,
            None,
            Instant::now(),
            SystemTime::now(),
        )
    }

    /// Builds the token from a token response. `refresh_in` is Entra's hint, when it sent one.
    pub(crate) fn issued(
        secret: String,
        expires_in: Duration,
        refresh_in: Option<Duration>,
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Self, TokenError> {
        let mut secret = secret;
        let valid = !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            let len = secret.len();
            secret.zeroize();
            return Err(TokenError::invalid_response(format!(
                "the access token ({len} bytes) is empty or has characters that cannot be sent in an Authorization header"
            )));
        }
        let mut bytes = Vec::with_capacity(BEARER.len() + secret.len());
        bytes.extend_from_slice(BEARER);
        bytes.extend_from_slice(secret.as_bytes());
        secret.zeroize();
        let bytes = Bytes::from_owner(Zeroizing::new(bytes));
        let mut header = HeaderValue::from_maybe_shared(bytes).map_err(|_| {
            TokenError::invalid_response("the access token cannot be sent in an HTTP header")
        })?;
        header.set_sensitive(true);

        if expires_in.is_zero() {
            return Err(TokenError::invalid_response(
                "the token expires immediately (a lifetime of zero)",
            ));
        }
        let out_of_range = || {
            TokenError::invalid_response(format!(
                "the token's lifetime ({} s) is out of range; Entra issues tokens for minutes to hours",
                expires_in.as_secs()
            ))
        };
        Ok(AccessToken {
            header,
            issued_at: now,
            expires_at: now.checked_add(expires_in).ok_or_else(out_of_range)?,
            refresh_in,
            expires_on: wall_now.checked_add(expires_in).ok_or_else(out_of_range)?,
        })
    }

    /// The same token, with its issuer's advice to refresh it `refresh_in` after it was issued
    /// (Entra's `refresh_in`), for custom [`Credential`](crate::Credential)s whose source gives
    /// one. A provider follows it when it leaves the token in use for at least a tenth of its
    /// lifetime and comes before expiry.
    ///
    /// ```
    /// use std::time::Duration;
    /// let token = tower_entra::AccessToken::new("eyJ0eXAi...", Duration::from_secs(86_400))
    ///     .unwrap()
    ///     .with_refresh_in(Duration::from_secs(43_200));
    /// assert_eq!(token.refresh_in(), Some(Duration::from_secs(43_200)));
    /// ```
    pub fn with_refresh_in(mut self, refresh_in: Duration) -> Self {
        self.refresh_in = Some(refresh_in);
        self
    }

    /// The token itself. Send it only to the resource it was issued for.
    pub fn secret(&self) -> &str {
        // Checked to be ASCII when built.
        std::str::from_utf8(&self.header.as_bytes()[BEARER.len()..]).unwrap_or_default()
    }

    /// The `Bearer <token>` header value, marked sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// When the token expires, on tokio's clock.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// When the token expires, on the wall clock.
    pub fn expires_on(&self) -> SystemTime {
        self.expires_on
    }

    /// How long after it was issued its issuer advised refreshing it (Entra's `refresh_in`), as
    /// given; `None` if it did not say.
    pub fn refresh_in(&self) -> Option<Duration> {
        self.refresh_in
    }

    /// When the token was received, on tokio's clock: what `refresh_in` counts from.
    pub(crate) fn issued_at(&self) -> Instant {
        self.issued_at
    }

    /// The same token in memory of its own (zeroed when dropped), so that the thread that
    /// serves it bumps reference counts no other thread touches.
    pub(crate) fn thread_copy(&self) -> AccessToken {
        let bytes = Bytes::from_owner(Zeroizing::new(self.header.as_bytes().to_vec()));
        let mut header = match HeaderValue::from_maybe_shared(bytes) {
            Ok(header) => header,
            // Cannot happen (the bytes were a header value); the shared value serves as well.
            Err(_) => self.header.clone(),
        };
        header.set_sensitive(true);
        AccessToken {
            header,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            refresh_in: self.refresh_in,
            expires_on: self.expires_on,
        }
    }

    /// Whether `self` and `other` are the same token string.
    pub fn same_token(&self, other: &AccessToken) -> bool {
        self.header == other.header
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_in_is_kept_as_given_and_zero_lifetimes_refused() {
        let now = Instant::now();
        for hint in [
            None,
            Some(Duration::ZERO),
            Some(Duration::from_secs(43_200)),
        ] {
            let t = AccessToken::issued(
                "a.b.c".into(),
                Duration::from_secs(3600),
                hint,
                now,
                SystemTime::now(),
            )
            .unwrap();
            assert_eq!((t.refresh_in(), t.issued_at()), (hint, now));
            assert_eq!(t.expires_at() - now, Duration::from_secs(3600));
        }
        assert!(AccessToken::new("a.b.c", Duration::ZERO).is_err());
    }

    #[test]
    fn an_absurd_lifetime_is_an_error_not_a_panic() {
        let e = AccessToken::new("a.b.c", Duration::from_secs(u64::MAX)).unwrap_err();
        assert_eq!(e.kind(), crate::TokenErrorKind::InvalidResponse);
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn refuses_tokens_that_cannot_be_header_values() {
        for bad in ["", "a b", "a\nb", "tökén"] {
            let e = AccessToken::new(bad, Duration::from_secs(60)).unwrap_err();
            assert_eq!(e.kind(), crate::TokenErrorKind::InvalidResponse);
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad));
            }
        }
    }

    #[test]
    fn header_and_secret_agree_and_debug_redacts() {
        let t = AccessToken::new("eyJhbGciOi.x.y", Duration::from_secs(60)).unwrap();
        assert_eq!(t.secret(), "eyJhbGciOi.x.y");
        assert_eq!(t.header_value().as_bytes(), b"Bearer eyJhbGciOi.x.y");
        assert!(t.header_value().is_sensitive());
        assert!(!format!("{t:?}").contains("eyJhbGciOi"));
    }
}
