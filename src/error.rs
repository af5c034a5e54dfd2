//! Errors: [`Error`] for the middleware, [`TokenError`] for everything about getting a token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The error of an [`EntraAuth`](crate::EntraAuth) service: either no token could be had, or the
/// wrapped service failed.
///
/// Each message of its [`source`](std::error::Error::source) chain is printed once:
/// [`Inner`](Self::Inner) is transparent (the inner error's `Display`, then the inner error's
/// own source), and [`Token`](Self::Token) shows the token error, then the causes its
/// `Display` does not show (see [`TokenError`]'s `source`).
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
            Error::Token(e) => std::error::Error::source(e),
            Error::Inner(e) => e.source(),
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
    /// This credential cannot work on this host: it has no endpoint (no managed identity
    /// answers), no variables (no secret, no federated token file), no identity assigned, or the
    /// tool is not installed or not signed in. A
    /// [`ChainedCredential`](crate::ChainedCredential) moves on to its next credential only on
    /// this kind; anything else (a refusal, a misconfiguration, several identities and none
    /// chosen) is its answer. Return it from a custom [`Credential`](crate::Credential) that
    /// finds nothing to work with. Permanent on this host.
    Unavailable,
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
    /// The token lacks an app role the provider was told to require
    /// ([`TokenProviderBuilder::require_roles`](crate::TokenProviderBuilder::require_roles)): the
    /// permission was not granted to the app, or not with admin consent. The message names the
    /// missing roles and the fix. Permanent until an admin consents.
    MissingPermission,
    /// A token was asked for another tenant than the credential's own, and nothing was sent:
    /// the credential cannot serve other tenants (managed identity, a custom credential), the
    /// tenant is not in its allow-list (`additionally_allowed_tenants` on the credential's
    /// builder, or `AZURE_ADDITIONALLY_ALLOWED_TENANTS`), or it is not shaped like a tenant id
    /// or domain. The message names which, and the setting. Permanent.
    TenantNotAllowed,
    /// A tenant named by the request has not admitted the app: no admin consent there
    /// (AADSTS65001), the app is not in its directory (AADSTS700016) or its service principal
    /// is missing (AADSTS7000229). [`TokenError::admin_consent_url`] is where that tenant's
    /// administrator grants consent. Permanent until they do.
    ConsentRequired,
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
///
/// Each text is kept as the server sent it, made safe to print: control characters (and
/// Unicode bidi controls) are escaped (`\n`, `\u{1b}`), and each field is cut to 256 bytes (the
/// description to 1024, its line breaks kept as `\n`), marked with `…`. So a hostile or broken
/// endpoint cannot forge log lines, colour a terminal or flood logs through `Display`, `Debug`
/// or tracing fields.
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

impl EntraError {
    /// This error with each server-supplied text escaped and bounded.
    fn printable(self) -> EntraError {
        let field = |s: Option<String>| s.map(|s| server_text(&s, MAX_SERVER_FIELD_BYTES));
        EntraError {
            status: self.status,
            error: server_text(&self.error, MAX_SERVER_FIELD_BYTES),
            description: server_lines(&self.description, MAX_DESCRIPTION_BYTES),
            codes: self.codes,
            trace_id: field(self.trace_id),
            correlation_id: field(self.correlation_id),
            timestamp: field(self.timestamp),
            error_uri: field(self.error_uri),
        }
    }
}

/// The most bytes kept of one short text from a server (an id, a code, a timestamp).
pub(crate) const MAX_SERVER_FIELD_BYTES: usize = 256;
/// The most bytes kept of Entra's `error_description` (whose first line `Display` shows).
const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Marks a text that was cut.
pub(crate) const CUT: char = '…';

/// `text` from a server, safe to print on one line: control characters and bidi controls
/// escaped, cut at a character boundary to at most `max` bytes (plus the `…` that marks a cut).
pub(crate) fn server_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    push_server_text(&mut out, text, max);
    out
}

/// Like [`server_text`], keeping line breaks (as `\n`) between the lines.
fn server_lines(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if !push_server_text(&mut out, line, max) {
            break;
        }
    }
    out
}

/// Appends `text` escaped while `out` stays within `max` bytes; false when it was cut.
fn push_server_text(out: &mut String, text: &str, max: usize) -> bool {
    for c in text.chars() {
        let before = out.len();
        match c {
            '\n' | '\r' | '\t' => out.extend(c.escape_debug()),
            c if is_unprintable(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(before);
            out.push(CUT);
            return false;
        }
    }
    true
}

/// Characters that would let a text rewrite what is around it when printed: C0/C1 controls
/// (line breaks, ANSI escapes) and Unicode bidi overrides.
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
    hint: Option<&'static str>,
    retry_after: Option<Duration>,
    /// The credential already retried this request as its endpoint's guidance asks: the
    /// provider does not retry it on top (one retry policy per request path).
    retries_spent: bool,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    admin_consent_url: Option<Arc<str>>,
}

impl TokenError {
    /// An error of `kind`, with `message` saying what went wrong and, where it helps, how to
    /// fix it. This is how a [`Credential`](crate::Credential) defined outside this crate
    /// fails; callers of [`TokenProvider::token`](crate::TokenProvider::token) get the same
    /// kind, message and [source](Self::with_source). The kind decides whether the provider
    /// retries ([`TokenErrorKind::is_transient`]). Keep secrets and tokens out of the message:
    /// it reaches logs.
    ///
    /// ```
    /// use std::error::Error as _;
    /// use futures::future::BoxFuture;
    /// use tower_entra::{AccessToken, Credential, TokenError, TokenErrorKind, TokenProvider, TokenRequest};
    ///
    /// /// Reads a token that a sidecar writes to a file.
    /// #[derive(Debug)]
    /// struct SidecarToken;
    ///
    /// impl Credential for SidecarToken {
    ///     fn request_token<'a>(&'a self, _: TokenRequest<'a>) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
    ///         Box::pin(async {
    ///             let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
    ///             Err(TokenError::new(TokenErrorKind::Authentication, "the sidecar wrote no token")
    ///                 .with_source(io))
    ///         })
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), TokenError> {
    /// let provider = TokenProvider::new(SidecarToken, "https://graph.microsoft.com/.default")?;
    /// let e = provider.token().await.unwrap_err();
    /// assert_eq!(e.kind(), TokenErrorKind::Authentication);
    /// assert_eq!(e.message(), "the sidecar wrote no token");
    /// // The cause is part of the message, and kept whole for a downcast.
    /// assert!(e.to_string().ends_with("the sidecar wrote no token: no such file"), "{e}");
    /// let io = e.cause().and_then(|c| c.downcast_ref::<std::io::Error>());
    /// assert_eq!(io.map(std::io::Error::kind), Some(std::io::ErrorKind::NotFound));
    /// // An error reporter walking `source()` prints each message once: the cause is shown
    /// // already, and an `io::Error` made from a string has no cause of its own.
    /// assert!(e.source().is_none());
    /// # Ok(()) }
    /// ```
    pub fn new(kind: TokenErrorKind, message: impl Into<String>) -> Self {
        TokenError {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                entra: None,
                hint: None,
                retry_after: None,
                retries_spent: false,
                source: None,
                admin_consent_url: None,
            }),
        }
    }

    pub(crate) fn configuration(message: impl Into<String>) -> Self {
        Self::new(TokenErrorKind::Configuration, message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(TokenErrorKind::Unavailable, message)
    }

    pub(crate) fn invalid_response(message: impl Into<String>) -> Self {
        Self::new(TokenErrorKind::InvalidResponse, message)
    }

    fn with(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// The error that caused this one (a `&str` or `String` works too): shown after the
    /// message in `Display`, and kept whole for [`cause`](Self::cause). See [`new`](Self::new).
    pub fn with_source(self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let source: Arc<dyn std::error::Error + Send + Sync> = Arc::from(source.into());
        self.with(|i| i.source = Some(source))
    }

    /// This error with its message prefixed by `context` (which credential said it), its kind,
    /// Entra details, retry hint and source kept.
    pub(crate) fn in_context(self, context: &str) -> Self {
        self.with(|i| i.message = format!("{context}: {}", i.message))
    }

    /// The same error (kind, source, Entra's answer) saying `message` instead: for a layer
    /// that knows more of the context than the one that made it.
    pub(crate) fn reworded(self, message: impl Into<String>) -> Self {
        let message = message.into();
        self.with(|i| i.message = message)
    }

    pub(crate) fn with_retry_after(self, retry_after: Option<Duration>) -> Self {
        self.with(|i| i.retry_after = retry_after)
    }

    /// Marks an error after which the credential's own retry policy gave up (or never
    /// retries): the provider's fetch then makes no further attempt of its own.
    pub(crate) fn with_retries_spent(self) -> Self {
        self.with(|i| i.retries_spent = true)
    }

    /// Whether the credential already retried as its endpoint's guidance asks.
    pub(crate) fn retries_spent(&self) -> bool {
        self.inner.retries_spent
    }

    /// Entra's refusal, of the `kind` and with the `hint` its codes say
    /// ([`aadsts::refusal`](crate::aadsts::refusal) reads them).
    pub(crate) fn from_entra(
        entra: EntraError,
        kind: TokenErrorKind,
        hint: Option<&'static str>,
        retry_after: Option<Duration>,
    ) -> Self {
        // Every way an Entra answer reaches an error passes here.
        let entra = entra.printable();
        let message = format!("Entra refused the token request ({})", entra.error);
        Self::new(kind, message).with(|i| {
            i.entra = Some(entra);
            i.hint = hint;
            i.retry_after = retry_after;
        })
    }

    /// The error this one was made from ([`with_source`](Self::with_source)), whole, for a
    /// downcast to a credential's own error type.
    ///
    /// `std::error::Error::source` is not always it: where `Display` already shows this cause
    /// (every error without Entra's answer), `source()` returns the cause's own source instead,
    /// as `std::io::Error` does for the error it wraps, so that an error reporter walking the
    /// chain prints each message once.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.inner.source.as_deref()
    }

    /// The kind of failure.
    pub fn kind(&self) -> TokenErrorKind {
        self.inner.kind
    }

    /// Whether a later retry may succeed (Entra or the network failed, not the configuration).
    pub fn is_transient(&self) -> bool {
        self.inner.kind.is_transient()
    }

    /// The error as Entra answered it, when the token endpoint answered with an error body: its
    /// AADSTS codes, trace and correlation ids and timestamp for a support ticket.
    pub fn entra(&self) -> Option<&EntraError> {
        self.inner.entra.as_ref()
    }

    /// How long the token endpoint asked us to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// A one-line hint on how to fix the cause, when it is known.
    pub fn hint(&self) -> Option<&'static str> {
        self.inner.hint
    }

    /// Where the administrator of the tenant a request named grants this app admin consent
    /// (`{authority host}/{tenant}/adminconsent?client_id=...`), for a
    /// [`ConsentRequired`](TokenErrorKind::ConsentRequired) error.
    pub fn admin_consent_url(&self) -> Option<&str> {
        self.inner.admin_consent_url.as_deref()
    }

    /// This error, retold for the tenant a request named: of `kind`, with `message` before
    /// Entra's own, and the admin-consent link when there is one.
    pub(crate) fn for_tenant(
        self,
        kind: TokenErrorKind,
        message: String,
        admin_consent_url: Option<String>,
    ) -> Self {
        self.with(|i| {
            i.kind = kind;
            i.message = message;
            i.admin_consent_url = admin_consent_url.map(Arc::from);
        })
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
        if let Some(url) = &self.inner.admin_consent_url {
            d.field("admin_consent_url", url);
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
    /// The first cause that `Display` does not show: the cause's own source where `Display`
    /// shows the cause (no Entra answer), else the cause. [`TokenError::cause`] is the cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause: &(dyn std::error::Error + 'static) = self.inner.source.as_deref()?;
        if self.inner.entra.is_none() {
            cause.source()
        } else {
            Some(cause)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cuts_at_a_character_boundary() {
        let text = "é".repeat(200);
        let cut = server_text(&text, 255);
        assert_eq!(cut, "é".repeat(127) + "…");
        assert_eq!(server_text("short", 256), "short");
        assert_eq!(server_lines("a\r\nb\rc\n", 256), "a\nb\\rc");
    }

    /// An error that shows `message` and has `source` as its cause.
    #[derive(Debug)]
    struct Caused(&'static str, Option<Box<Caused>>);

    impl fmt::Display for Caused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Caused {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    fn chain(outer: &'static str, below: &'static str) -> Caused {
        Caused(outer, Some(Box::new(Caused(below, None))))
    }

    /// Each message of the chain as an error reporter prints it, outermost first.
    fn printed(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(error), |e| e.source())
            .map(ToString::to_string)
            .collect()
    }

    /// Every cause's message is printed, and none twice.
    fn assert_each_message_once(error: &(dyn std::error::Error + 'static), messages: &[&str]) {
        let lines = printed(error);
        for message in messages {
            let count = lines.iter().filter(|l| l.contains(message)).count();
            assert_eq!(count, 1, "{message:?} printed {count} times in {lines:#?}");
        }
    }

    #[test]
    fn an_inner_error_is_transparent() {
        let e: Error<Caused> = Error::Inner(chain("connection reset", "broken pipe"));
        assert_eq!(e.to_string(), "connection reset");
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string),
            Some("broken pipe".to_owned())
        );
        assert_each_message_once(&e, &["connection reset", "broken pipe"]);
    }

    #[test]
    fn a_token_error_shows_itself_and_its_cause_once() {
        let token = TokenError::new(TokenErrorKind::Connection, "could not connect")
            .with_source(chain("error sending request", "connection refused"));
        // Alone too: the direct cause is in the token error's line, and kept for a downcast.
        assert_each_message_once(
            &token,
            &[
                "could not connect",
                "error sending request",
                "connection refused",
            ],
        );
        assert_eq!(
            token.cause().map(ToString::to_string).as_deref(),
            Some("error sending request")
        );
        let e: Error<Caused> = Error::Token(token.clone());
        assert_eq!(
            e.to_string(),
            format!("could not authorize the request: {token}")
        );
        assert!(e.to_string().contains("error sending request"), "{e}");
        assert_each_message_once(
            &e,
            &[
                "could not connect",
                "error sending request",
                "connection refused",
            ],
        );

        // Entra's refusal shows its ids, not its source: the source is the next message.
        let entra = EntraError {
            status: 400,
            error: "invalid_request".into(),
            ..Default::default()
        };
        let refused = TokenError::from_entra(entra, TokenErrorKind::Rejected, None, None)
            .with_source(Caused("the body", None));
        assert_each_message_once(&refused, &["invalid_request", "the body"]);
        let e: Error<Caused> = Error::Token(refused);
        assert_each_message_once(&e, &["invalid_request", "the body"]);
        // Without a source: the token error alone.
        let e: Error<Caused> = Error::Token(TokenError::configuration("no tenant"));
        assert_eq!(printed(&e), ["could not authorize the request: no tenant"]);
    }
}
