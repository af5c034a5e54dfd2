//! [`AzureDeveloperCliCredential`]: the token of the developer signed in to the Azure Developer
//! CLI (`azd`).

use std::ffi::OsString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::authority::check_tenant_id;
use crate::credential::developer_tool::{Run, Tool, checked_scope};
use crate::credential::{Credential, TokenRequest};
use crate::endpoint::from_json;
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// The default bound on one `azd` run: it may refresh its own token over the network.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Gets tokens from the Azure Developer CLI on a developer's machine: runs
/// `azd auth token --output json --no-prompt --scope <scope> [--tenant-id <tenant>]` and reads
/// `token` and `expiresOn`, so the app acts as the developer signed in with `azd auth login`.
///
/// For local development only, like [`AzureCliCredential`](crate::AzureCliCredential): it is
/// never part of [`DefaultCredential`](crate::DefaultCredential) unless asked for
/// ([`azure_developer_cli`](crate::DefaultCredentialBuilder::azure_developer_cli), or
/// `AZURE_TOKEN_CREDENTIALS=dev`). A missing `azd` or a signed-out user is an
/// [`Unavailable`](TokenErrorKind::Unavailable) error that says what to run; `azd` runs as the
/// Azure CLI does (its own process group killed whole at the timeout, 10 s by default; a safe
/// working directory; nothing it prints in errors but an AADSTS code).
///
/// ```no_run
/// use tower_entra::{AzureDeveloperCliCredential, TokenProvider};
///
/// let provider = TokenProvider::new(
///     AzureDeveloperCliCredential::new(),
///     "https://management.azure.com/.default",
/// )?;
///
/// // Another of the signed-in user's tenants.
/// let credential = AzureDeveloperCliCredential::builder()
///     .tenant_id("contoso.onmicrosoft.com")
///     .build()?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
#[derive(Debug, Clone)]
pub struct AzureDeveloperCliCredential {
    tenant_id: Option<String>,
    timeout: Duration,
    /// The child's `PATH` instead of this process's (tests: a fake `azd`).
    search_path: Option<OsString>,
}

impl Default for AzureDeveloperCliCredential {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds an [`AzureDeveloperCliCredential`]; see its example.
#[derive(Debug, Clone)]
pub struct AzureDeveloperCliCredentialBuilder {
    tenant_id: Option<String>,
    timeout: Duration,
}

impl AzureDeveloperCliCredentialBuilder {
    /// Tokens for `tenant_id` (`--tenant-id`) instead of `azd`'s current tenant.
    pub fn tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// The bound on one `azd` run (default 10 s); a longer run is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The credential; a [`Configuration`](TokenErrorKind::Configuration) error names a
    /// malformed tenant id.
    pub fn build(self) -> Result<AzureDeveloperCliCredential, TokenError> {
        if let Some(tenant_id) = &self.tenant_id {
            check_tenant_id(tenant_id)?;
        }
        Ok(AzureDeveloperCliCredential {
            tenant_id: self.tenant_id,
            timeout: self.timeout,
            search_path: None,
        })
    }
}

impl AzureDeveloperCliCredential {
    /// Tokens for `azd`'s current tenant, with a 10 s timeout.
    pub fn new() -> Self {
        AzureDeveloperCliCredential {
            tenant_id: None,
            timeout: DEFAULT_TIMEOUT,
            search_path: None,
        }
    }

    /// A builder, for another tenant or timeout.
    pub fn builder() -> AzureDeveloperCliCredentialBuilder {
        AzureDeveloperCliCredentialBuilder {
            tenant_id: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Looks `azd` up in `path` instead of this process's `PATH` (tests).
    pub(crate) fn with_search_path(mut self, path: OsString) -> Self {
        self.search_path = Some(path);
        self
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let scope = checked_scope(request.scope)?;
        if request.claims.is_some() {
            return Err(TokenError::new(
                TokenErrorKind::Authentication,
                "the API asked for a token with claims (Continuous Access Evaluation), which this credential does not pass to `azd`; sign in again with `azd auth login`",
            ));
        }
        let mut args = vec![
            "auth",
            "token",
            "--output",
            "json",
            "--no-prompt",
            "--scope",
            scope,
        ];
        if let Some(tenant) = &self.tenant_id {
            args.extend(["--tenant-id", tenant]);
        }
        Run {
            tool: &AZD,
            args,
            command: "`azd auth token`",
            timeout: self.timeout,
            search_path: self.search_path.as_ref(),
        }
        .token(parse)
        .await
    }
}

/// The Azure Developer CLI, as [`Run`] starts it.
const AZD: Tool = Tool {
    program: "azd",
    display: "the Azure Developer CLI (`azd`)",
    install: "install it (https://aka.ms/azd-install) and sign in with `azd auth login`",
    signed_out: "the Azure Developer CLI is not signed in, or its sign-in expired: run `azd auth login` (`azd auth login --tenant-id <tenant>` for another tenant)",
    signed_out_markers: &["azd auth login", "not logged in"],
};

#[derive(Deserialize)]
struct AzdToken {
    token: Option<String>,
    #[serde(rename = "expiresOn")]
    expires_on: Option<String>,
}

fn parse(stdout: &[u8], now: Instant, wall_now: SystemTime) -> Result<AccessToken, TokenError> {
    let raw: AzdToken = from_json(
        stdout,
        "the output of `azd auth token` is not the JSON it prints",
    )?;
    let mut secret = Zeroizing::new(raw.token.unwrap_or_default());
    if secret.is_empty() {
        return Err(TokenError::invalid_response(
            "the output of `azd auth token` has no token",
        ));
    }
    let expires_on = raw
        .expires_on
        .as_deref()
        .and_then(rfc3339_seconds)
        .ok_or_else(|| {
            TokenError::invalid_response(
                "the output of `azd auth token` has no expiresOn in RFC 3339 form; upgrade the Azure Developer CLI",
            )
        })?;
    let expires_in = (UNIX_EPOCH + Duration::from_secs(expires_on))
        .duration_since(wall_now)
        .map_err(|_| {
            TokenError::invalid_response(
                "the Azure Developer CLI's token has expired; sign in again with `azd auth login`",
            )
        })?;
    AccessToken::issued(
        std::mem::take(&mut *secret),
        expires_in,
        None,
        now,
        wall_now,
    )
}

/// Seconds since the Unix epoch of an RFC 3339 date-time (`2025-01-02T03:04:05Z`, with optional
/// fractional seconds and a `+hh:mm` / `-hh:mm` offset), as `azd` prints `expiresOn`.
fn rfc3339_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't')
    {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Fractional seconds are dropped; then the zone.
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let d = |b: u8| i64::from(b - b'0');
            let minutes =
                (d(digits[0]) * 10 + d(digits[1])) * 60 + d(digits[2]) * 10 + d(digits[3]);
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second.min(60) - offset;
    u64::try_from(seconds).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Credential for AzureDeveloperCliCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(self.fetch(request))
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        crate::shared_cache::CacheBinding::refused(
            "the Azure Developer CLI credential (a developer's own sign-in)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rfc3339_as_azd_prints_it() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_seconds("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(
            rfc3339_seconds("2024-02-29T14:34:56.1234567+02:00"),
            Some(1_709_210_096)
        );
        assert_eq!(
            rfc3339_seconds("2024-02-29T07:04:56-05:30"),
            Some(1_709_210_096)
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-02-29 12:34:56Z",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56",
            "2024-02-29T12:34:56.Z",
            "2024-02-29T12:34:56+0200",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(rfc3339_seconds(bad), None, "{bad}");
        }
    }

    #[cfg(unix)]
    mod with_a_fake_azd {
        use super::super::*;
        use crate::credential::developer_tool::tests::FakeTool;

        const ARM: &str = "https://management.azure.com/.default";

        fn credential(fake: &FakeTool) -> AzureDeveloperCliCredential {
            AzureDeveloperCliCredential::new().with_search_path(fake.search_path())
        }

        async fn token(c: &AzureDeveloperCliCredential) -> Result<AccessToken, TokenError> {
            c.request_token(TokenRequest::new(ARM)).await
        }

        #[tokio::test]
        async fn reads_the_token_and_its_expiry_from_azd() {
            let fake = FakeTool::new(
                "azd",
                r#"echo '{"token":"azd-token","expiresOn":"2099-01-01T00:00:00Z"}'"#,
            );
            let c = AzureDeveloperCliCredential::builder()
                .tenant_id("contoso.onmicrosoft.com")
                .build()
                .unwrap()
                .with_search_path(fake.search_path());
            let t = token(&c).await.unwrap();
            assert_eq!(t.secret(), "azd-token");
            assert_eq!(
                t.expires_on().duration_since(UNIX_EPOCH).unwrap().as_secs(),
                4_070_908_800
            );
            assert_eq!(
                fake.args(),
                [
                    "auth",
                    "token",
                    "--output",
                    "json",
                    "--no-prompt",
                    "--scope",
                    ARM,
                    "--tenant-id",
                    "contoso.onmicrosoft.com"
                ]
            );
            assert!(!format!("{c:?}").contains("azd-token"));
        }

        #[tokio::test]
        async fn signed_out_or_missing_is_unavailable_with_the_fix() {
            let fake = FakeTool::new(
                "azd",
                "echo 'ERROR: fetching token: not logged in, run `azd auth login` to login. user=someone@contoso.com' >&2; exit 1",
            );
            let e = token(&credential(&fake)).await.unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains("run `azd auth login`"), "{e}");
            assert!(!format!("{e:?}").contains("someone@"), "{e:?}");
            let missing = FakeTool::new("not-azd", "");
            let e = token(&credential(&missing)).await.unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains("aka.ms/azd-install"), "{e}");
        }

        #[tokio::test]
        async fn malformed_or_expired_output_never_reaches_the_error() {
            for out in [
                r#"{"token":"leaky-token"}"#,
                r#"{"token":"leaky-token","expiresOn":"soon"}"#,
                r#"{"token":"leaky-token","expiresOn":"2001-01-01T00:00:00Z"}"#,
                "leaky-token",
            ] {
                let fake = FakeTool::new("azd", &format!("echo '{out}'"));
                let e = token(&credential(&fake)).await.unwrap_err();
                assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{out}: {e}");
                assert!(!format!("{e} {e:?}").contains("leaky-token"), "{e:?}");
            }
        }

        #[tokio::test]
        async fn unsafe_scopes_and_claims_are_refused_before_running_azd() {
            let fake = FakeTool::new("azd", "exit 0");
            let e = credential(&fake)
                .request_token(TokenRequest::new("api://%USERPROFILE%/.default"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidScope, "{e}");
            let e = credential(&fake)
                .request_token(TokenRequest::new(ARM).with_claims("{}"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
            assert!(!fake.ran(), "azd ran");
        }
    }
}
