//! Errors: [`Error`] for the middleware, [`TokenError`] for everything about getting a token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The error of an [`EntraAuth`](crate::EntraAuth) service: either no token could be had, or the
/// wrapped service failed.
///
/// It implements [`std::error::Error`] + `Send` + `Sync` whenever the inner error does, so tonic,
/// tower's `Buffer` and anything that boxes errors accept it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// No token could be attached to the request; the request was not sent.
    Token(TokenError),
    /// The wrapped service returned an error.
    Inner(E),
}

impl<E> Error<E> {
    /// The token error, if this is one.
    pub fn as_token_error(&self) -> Option<&TokenError> {
        match self {
            Error::Token(e) => Some(e),
            Error::Inner(_) => None,
        }
    }

    /// The inner service's error, if this is one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            Error::Token(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Token(e) => write!(f, "could not authorize the request: {e}"),
            Error::Inner(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Token(e) => Some(e),
            Error::Inner(e) => Some(e),
        }
    }
}

/// What kind of failure a [`TokenError`] is; it decides whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// The configuration is wrong before anything was sent: a missing variable, a malformed
    /// tenant id, an insecure authority host, an unreadable certificate. Permanent.
    Configuration,
    /// The scope breaks the client-credentials rule (`<app ID URI>/.default`, one resource). Permanent.
    InvalidScope,
    /// Entra refused the client: unknown app or tenant, wrong or expired secret, bad assertion,
    /// Conditional Access. Permanent until the configuration changes.
    Authentication,
    /// Entra answered with another error it will repeat on retry. Permanent.
    Rejected,
    /// Entra or the network failed in a way that a retry may fix: HTTP 5xx, 429, 408,
    /// `temporarily_unavailable`. See [`TokenError::retry_after`].
    Transient,
    /// The token request took longer than the configured timeout. Transient.
    Timeout,
    /// No connection to the token endpoint could be made or it broke. Transient.
    Connection,
    /// The token endpoint answered with something that is not a valid token response: a redirect,
    /// a non-JSON or oversized body, a `token_type` other than Bearer, a token unusable in a header.
    InvalidResponse,
    /// The layer refused to attach a token to this request (for example a plain-http remote
    /// host), so that the token does not leak.
    UnsafeDestination,
}

impl TokenErrorKind {
    /// Whether a later retry of the same request may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            TokenErrorKind::Transient | TokenErrorKind::Timeout | TokenErrorKind::Connection
        )
    }
}

/// The details of an error answered by Entra's token endpoint, as its JSON body gives them.
///
/// Quote [`trace_id`](Self::trace_id), [`correlation_id`](Self::correlation_id) and
/// [`timestamp`](Self::timestamp) in a support ticket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntraError {
    pub(crate) status: u16,
    pub(crate) error: String,
    pub(crate) description: String,
    pub(crate) codes: Vec<u32>,
    pub(crate) trace_id: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) timestamp: Option<String>,
    pub(crate) error_uri: Option<String>,
}

impl EntraError {
    /// The HTTP status of the response.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The OAuth 2.0 error code, e.g. `invalid_client`.
    pub fn error(&self) -> &str {
        &self.error
    }
    /// Entra's `error_description`, starting with the AADSTS code.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The AADSTS codes (`error_codes`), e.g. `[7000215]`.
    pub fn codes(&self) -> &[u32] {
        &self.codes
    }
    /// Entra's `trace_id`.
    pub fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }
    /// Entra's `correlation_id` (the `client-request-id` sent with the request).
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
    /// Entra's `timestamp`.
    pub fn timestamp(&self) -> Option<&str> {
        self.timestamp.as_deref()
    }
    /// Entra's `error_uri`, a page about the code.
    pub fn error_uri(&self) -> Option<&str> {
        self.error_uri.as_deref()
    }
}

/// Why a token could not be had.
///
/// Cheap to clone (one fetch's error is handed to every request that waited on it). Its
/// `Debug` and `Display` never contain a secret or a token.
#[derive(Clone)]
pub struct TokenError {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: TokenErrorKind,
    message: String,
    entra: Option<EntraError>,
    retry_after: Option<Duration>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl TokenError {
    pub(crate) fn new(kind: TokenErrorKind, message: impl Into<String>) -> Self {
        TokenError {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                entra: None,
                retry_after: None,
                source: None,
            }),
        }
    }

    pub(crate) fn configuration(message: impl Into<String>) -> Self {
        Self::new(TokenErrorKind::Configuration, message)
    }

    pub(crate) fn invalid_response(message: impl Into<String>) -> Self {
        Self::new(TokenErrorKind::InvalidResponse, message)
    }

    fn with(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    pub(crate) fn with_source(
        self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let source: Arc<dyn std::error::Error + Send + Sync> = Arc::from(source.into());
        self.with(|i| i.source = Some(source))
    }

    pub(crate) fn with_retry_after(self, retry_after: Option<Duration>) -> Self {
        self.with(|i| i.retry_after = retry_after)
    }

    pub(crate) fn from_entra(entra: EntraError, retry_after: Option<Duration>) -> Self {
        let kind = classify(&entra);
        let message = format!("Entra refused the token request ({})", entra.error);
        Self::new(kind, message).with(|i| {
            i.entra = Some(entra);
            i.retry_after = retry_after;
        })
    }

    /// The kind of failure.
    pub fn kind(&self) -> TokenErrorKind {
        self.inner.kind
    }

    /// Whether a later retry may succeed (Entra or the network failed, not the configuration).
    pub fn is_transient(&self) -> bool {
        self.inner.kind.is_transient()
    }

    /// The error as Entra answered it, when the token endpoint answered with an error body.
    pub fn entra(&self) -> Option<&EntraError> {
        self.inner.entra.as_ref()
    }

    /// The AADSTS codes Entra gave, empty when it gave none.
    pub fn aadsts_codes(&self) -> &[u32] {
        self.inner.entra.as_ref().map_or(&[], |e| e.codes())
    }

    /// Entra's trace id, for a support ticket.
    pub fn trace_id(&self) -> Option<&str> {
        self.inner.entra.as_ref().and_then(|e| e.trace_id())
    }

    /// Entra's correlation id, for a support ticket.
    pub fn correlation_id(&self) -> Option<&str> {
        self.inner.entra.as_ref().and_then(|e| e.correlation_id())
    }

    /// How long the token endpoint asked us to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// A one-line hint on how to fix the cause, when it is known.
    pub fn hint(&self) -> Option<&'static str> {
        self.aadsts_codes().iter().find_map(|&c| hint_for(c))
    }

    /// A short description of what went wrong, without hint or ids.
    pub fn message(&self) -> &str {
        &self.inner.message
    }
}

impl fmt::Debug for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenError");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(e) = &self.inner.entra {
            d.field("entra", e);
        }
        if let Some(r) = self.inner.retry_after {
            d.field("retry_after", &r);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", &format_args!("{s}"));
        }
        d.finish()
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(e) = &self.inner.entra {
            // Entra's description repeats the ids on extra lines; keep the first line only.
            let first = e.description.lines().next().unwrap_or_default().trim();
            if !first.is_empty() {
                write!(f, ": {first}")?;
            }
            let mut ids = Vec::new();
            ids.push(format!("HTTP {}", e.status));
            if let Some(t) = &e.trace_id {
                ids.push(format!("trace id {t}"));
            }
            if let Some(c) = &e.correlation_id {
                ids.push(format!("correlation id {c}"));
            }
            if let Some(ts) = &e.timestamp {
                ids.push(format!("at {ts}"));
            }
            write!(f, " ({})", ids.join(", "))?;
        } else if let Some(s) = &self.inner.source {
            write!(f, ": {s}")?;
        }
        if let Some(h) = self.hint() {
            write!(f, ". Hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

/// Codes whose cause is the client's identity or credentials.
const AUTHENTICATION_CODES: &[u32] = &[
    700016, 7000215, 7000222, 7000216, 7000218, 90002, 50049, 700024, 700027, 700021, 700023,
    7000274, 53003, 50034, 50126, 700025, 70021, 700212, 700213,
];
const SCOPE_CODES: &[u32] = &[70011, 1002012, 700022, 500011, 28000, 28002, 28003];

fn classify(e: &EntraError) -> TokenErrorKind {
    if e.codes.iter().any(|c| SCOPE_CODES.contains(c)) || e.error == "invalid_scope" {
        return TokenErrorKind::InvalidScope;
    }
    if e.codes.iter().any(|c| AUTHENTICATION_CODES.contains(c))
        || matches!(
            e.error.as_str(),
            "invalid_client" | "unauthorized_client" | "access_denied"
        )
    {
        return TokenErrorKind::Authentication;
    }
    // 50196: Entra's loop detection; backing off is the cure.
    if e.status >= 500
        || e.status == 429
        || e.status == 408
        || e.error == "temporarily_unavailable"
        || e.codes.contains(&50196)
    {
        return TokenErrorKind::Transient;
    }
    TokenErrorKind::Rejected
}

/// One-line fixes for the AADSTS codes a daemon meets most.
fn hint_for(code: u32) -> Option<&'static str> {
    Some(match code {
        700016 => {
            "the client id is not an app in this tenant: check AZURE_CLIENT_ID and AZURE_TENANT_ID, and for a multi-tenant app have an admin of this tenant consent to it"
        }
        7000215 => {
            "the client secret is wrong: use the secret's Value (shown once at creation), not its Secret ID; make a new one with `az ad app credential reset --id <client-id> --append`"
        }
        7000222 => {
            "the client secret has expired: make a new one with `az ad app credential reset --id <client-id> --append` and update the configuration"
        }
        70011 => {
            "the scope is invalid: ask for exactly one `<application ID URI>/.default` scope, e.g. `https://graph.microsoft.com/.default`"
        }
        1002012 => {
            "client credentials need a scope of the form `<application ID URI>/.default`; permissions are granted in the app registration, not in the scope"
        }
        700022 => {
            "a token is for one resource: use one `<application ID URI>/.default` scope per TokenProvider"
        }
        90002 => {
            "the tenant does not exist in this cloud: check AZURE_TENANT_ID and that the authority host matches the tenant's cloud (public, US Government, China)"
        }
        50049 => {
            "the authority is unknown: use https://login.microsoftonline.com or the host of your sovereign cloud"
        }
        700024 => {
            "the client assertion is outside its valid time window: check this machine's clock (NTP)"
        }
        700027 => {
            "the assertion's signature did not verify: upload this certificate's public part to the app registration (`az ad app credential reset --id <client-id> --cert @cert.pem --append`) or use the matching private key"
        }
        7000218 | 7000216 => {
            "no client credential was sent: configure a client secret, a certificate or a federated token"
        }
        500011 => {
            "the resource is not in this tenant: check the application ID URI in the scope, and that the API's service principal exists in the tenant (admin consent provisions it)"
        }
        53003 => {
            "a Conditional Access policy blocked this app: ask a tenant admin to review the policies that apply to workload identities"
        }
        50196 => {
            "Entra saw too many identical requests: cache tokens (share one TokenProvider instead of making one per request)"
        }
        70021 => {
            "no federated credential matches the token's issuer, subject and audience: check the federated credential on the app registration"
        }
        700023 => {
            "the client assertion's `aud` is not this token endpoint: sign it for the token URL (`<authority host>/<tenant>/oauth2/v2.0/token`) of the tenant and cloud you call"
        }
        700021 => {
            "the client assertion's `iss` and `sub` must both be the client id (AZURE_CLIENT_ID)"
        }
        50013 => {
            "the client assertion is invalid or was already used (same `jti`): sign a new assertion for every token request"
        }
        1000502 | 7000274 => {
            "the certificate is outside its validity period: create a new one and upload it (`az ad app credential reset --id <client-id> --cert @cert.pem --append`)"
        }
        5002738 => {
            "the assertion's signature algorithm is not accepted: Entra verifies RS256 and PS256 (RSA keys) only"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra(status: u16, error: &str, code: u32) -> EntraError {
        EntraError {
            status,
            error: error.into(),
            description: format!("AADSTS{code}: something.\r\nTrace ID: t\r\nCorrelation ID: c"),
            codes: vec![code],
            trace_id: Some("t".into()),
            correlation_id: Some("c".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_documented_code_has_a_hint() {
        for code in [
            700016, 7000215, 7000222, 70011, 1002012, 700022, 90002, 50049, 700024, 700027,
            7000218, 500011, 53003, 50196, 700023, 700021, 50013, 1000502, 7000274, 5002738,
        ] {
            assert!(hint_for(code).is_some(), "no hint for AADSTS{code}");
        }
    }

    #[test]
    fn classifies_entra_errors() {
        let e = TokenError::from_entra(entra(401, "invalid_client", 7000215), None);
        assert_eq!(e.kind(), TokenErrorKind::Authentication);
        assert!(!e.is_transient());
        let e = TokenError::from_entra(entra(400, "invalid_scope", 1002012), None);
        assert_eq!(e.kind(), TokenErrorKind::InvalidScope);
        let e = TokenError::from_entra(entra(503, "temporarily_unavailable", 0), None);
        assert!(e.is_transient());
        let e = TokenError::from_entra(entra(400, "invalid_request", 12345), None);
        assert_eq!(e.kind(), TokenErrorKind::Rejected);
    }

    #[test]
    fn display_has_code_ids_and_hint_on_one_line() {
        let e = TokenError::from_entra(entra(401, "invalid_client", 7000215), None);
        let s = e.to_string();
        assert!(s.contains("AADSTS7000215"), "{s}");
        assert!(
            s.contains("trace id t") && s.contains("correlation id c"),
            "{s}"
        );
        assert!(s.contains("Hint: the client secret is wrong"), "{s}");
        assert!(!s.contains('\n'), "{s}");
    }
}
