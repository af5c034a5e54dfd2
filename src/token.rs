//! [`AccessToken`]: a bearer token, its header value and its lifetime.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use tokio::time::Instant;
use zeroize::Zeroize;

use crate::error::TokenError;

const BEARER: &[u8] = b"Bearer ";

/// An access token for one resource, with when it expires and when it should be refreshed.
///
/// Cloning is cheap (a reference count). The token is stored once, as the ready-made
/// `Authorization: Bearer …` header value (marked sensitive), and its memory is zeroed when the
/// last clone, including any request that carried it, is dropped. `Debug` never shows it.
#[derive(Clone)]
pub struct AccessToken {
    header: HeaderValue,
    expires_at: Instant,
    refresh_at: Instant,
    expires_on: SystemTime,
}

/// Owns secret bytes (a header value, a token request body) and zeroes them when the last
/// `Bytes` handle goes away: `Bytes::from_owner(ZeroizeOnDrop(bytes))`.
pub(crate) struct ZeroizeOnDrop(pub(crate) Vec<u8>);

impl AsRef<[u8]> for ZeroizeOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for ZeroizeOnDrop {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl AccessToken {
    /// A token that expires `expires_in` from now and is refreshed ahead of that (at half its
    /// lifetime, at most 5 minutes before expiry).
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
        let bytes = Bytes::from_owner(ZeroizeOnDrop(bytes));
        let mut header = HeaderValue::from_maybe_shared(bytes).map_err(|_| {
            TokenError::invalid_response("the access token cannot be sent in an HTTP header")
        })?;
        header.set_sensitive(true);

        if expires_in.is_zero() {
            return Err(TokenError::invalid_response(
                "the token expires immediately (a lifetime of zero)",
            ));
        }
        // Entra's hint is taken when it leaves the token in use for a sensible share of its
        // life; 0 or a few seconds would refresh on nearly every request.
        let refresh_after = match refresh_in {
            Some(r) if r < expires_in && r >= expires_in / 10 => r,
            _ => expires_in - expires_in.min(Duration::from_secs(300)).min(expires_in / 2),
        };
        let out_of_range = || {
            TokenError::invalid_response(format!(
                "the token's lifetime ({} s) is out of range; Entra issues tokens for minutes to hours",
                expires_in.as_secs()
            ))
        };
        Ok(AccessToken {
            header,
            expires_at: now.checked_add(expires_in).ok_or_else(out_of_range)?,
            refresh_at: now.checked_add(refresh_after).ok_or_else(out_of_range)?,
            expires_on: wall_now.checked_add(expires_in).ok_or_else(out_of_range)?,
        })
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

    /// When a refresh ahead of expiry starts, on tokio's clock.
    pub fn refresh_at(&self) -> Instant {
        self.refresh_at
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
    fn refresh_defaults_to_five_minutes_or_half_the_lifetime() {
        let now = Instant::now();
        let t = AccessToken::issued(
            "a.b.c".into(),
            Duration::from_secs(3600),
            None,
            now,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(t.refresh_at() - now, Duration::from_secs(3300));
        let t = AccessToken::issued(
            "a.b.c".into(),
            Duration::from_secs(60),
            None,
            now,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(t.refresh_at() - now, Duration::from_secs(30));
        let t = AccessToken::issued(
            "a.b.c".into(),
            Duration::from_secs(86400),
            Some(Duration::from_secs(43200)),
            now,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(t.refresh_at() - now, Duration::from_secs(43200));
    }

    #[test]
    fn a_tiny_refresh_in_is_ignored_and_zero_lifetimes_refused() {
        let now = Instant::now();
        let t = AccessToken::issued(
            "a.b.c".into(),
            Duration::from_secs(3600),
            Some(Duration::ZERO),
            now,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(t.refresh_at() - now, Duration::from_secs(3300));
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
