//! [`AzureCliCredential`]: the token of the developer signed in to the Azure CLI.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::authority::check_tenant_id;
use crate::credential::tenants::AllowedTenants;
use crate::credential::{Credential, TokenRequest};
use crate::endpoint::{TokenText, from_json};
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// The default bound on one `az` run: it may refresh its own token over the network.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Gets tokens from the Azure CLI on a developer's machine: runs
/// `az account get-access-token --scope <scope> [--tenant <tenant>] --output json` and reads
/// `accessToken` and `expires_on`, so the app acts as the developer signed in with `az login`.
///
/// For local development only: the app gets the developer's permissions, and `az` must be
/// installed and signed in. It is never part of [`DefaultCredential`](crate::DefaultCredential)
/// unless asked for ([`azure_cli`](crate::DefaultCredentialBuilder::azure_cli)).
///
/// A missing `az` or a signed-out user is a [`Configuration`](TokenErrorKind::Configuration)
/// error that says what to run; a run longer than the timeout (10 s by default) is killed.
/// Nothing `az` prints reaches logs or errors (an AADSTS code excepted).
///
/// ```no_run
/// use tower_entra::{AzureCliCredential, TokenProvider};
///
/// let provider = TokenProvider::new(AzureCliCredential::new(), "https://management.azure.com/.default")?;
///
/// // Another of the signed-in user's tenants, and a longer bound on each `az` run.
/// let credential = AzureCliCredential::builder()
///     .tenant_id("contoso.onmicrosoft.com")
///     .timeout(std::time::Duration::from_secs(30))
///     .build()?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
#[derive(Debug, Clone)]
pub struct AzureCliCredential {
    tenant_id: Option<String>,
    allowed_tenants: AllowedTenants,
    timeout: Duration,
    /// The child's `PATH` instead of this process's (tests: a fake `az`).
    search_path: Option<OsString>,
}

impl Default for AzureCliCredential {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds an [`AzureCliCredential`]; see its example.
#[derive(Debug, Clone)]
pub struct AzureCliCredentialBuilder {
    tenant_id: Option<String>,
    allowed_tenants: AllowedTenants,
    timeout: Duration,
    search_path: Option<OsString>,
}

impl AzureCliCredentialBuilder {
    /// Tokens for `tenant_id` (`--tenant`), one of the tenants the signed-in user belongs to,
    /// instead of the CLI's current tenant.
    pub fn tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// The tenants besides [`tenant_id`](Self::tenant_id) (or the CLI's current tenant) that a
    /// request may name ([`Tenant`](crate::Tenant), [`TokenRequest::tenant`]), passed to `az`
    /// as `--tenant`: each a GUID or a domain, or `"*"` for any. A request for a tenant not
    /// listed is a [`TenantNotAllowed`](TokenErrorKind::TenantNotAllowed) error and `az` is not
    /// run. Default: none. The signed-in user must belong to the tenant.
    pub fn additionally_allowed_tenants<I>(mut self, tenants: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.allowed_tenants = AllowedTenants::new(tenants);
        self
    }

    /// The bound on one `az` run (default 10 s); a longer run is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Looks `az` up in `path` instead of this process's `PATH`.
    #[cfg(test)]
    pub(crate) fn search_path(mut self, path: impl Into<OsString>) -> Self {
        self.search_path = Some(path.into());
        self
    }

    /// The credential; a [`Configuration`](TokenErrorKind::Configuration) error names a
    /// malformed tenant id.
    pub fn build(self) -> Result<AzureCliCredential, TokenError> {
        if let Some(tenant_id) = &self.tenant_id {
            check_tenant_id(tenant_id)?;
        }
        self.allowed_tenants.check()?;
        Ok(AzureCliCredential {
            tenant_id: self.tenant_id,
            allowed_tenants: self.allowed_tenants,
            timeout: self.timeout,
            search_path: self.search_path,
        })
    }
}

impl AzureCliCredential {
    /// Tokens for the CLI's current tenant, with a 10 s timeout.
    pub fn new() -> Self {
        AzureCliCredential {
            tenant_id: None,
            allowed_tenants: AllowedTenants::default(),
            timeout: DEFAULT_TIMEOUT,
            search_path: None,
        }
    }

    /// A builder, for another tenant or timeout.
    pub fn builder() -> AzureCliCredentialBuilder {
        AzureCliCredentialBuilder {
            tenant_id: None,
            allowed_tenants: AllowedTenants::default(),
            timeout: DEFAULT_TIMEOUT,
            search_path: None,
        }
    }

    /// The tenant `--tenant` names for `request`: the one it asks for when allowed, else the
    /// configured one (none: the CLI's current tenant).
    fn tenant_for<'a>(&'a self, request: &TokenRequest<'a>) -> Result<Option<&'a str>, TokenError> {
        // With no tenant configured the CLI's current one is unknown: only listed tenants pass.
        let home = self.tenant_id.as_deref().unwrap_or_default();
        Ok(self
            .allowed_tenants
            .resolve(home, request.tenant)?
            .or(self.tenant_id.as_deref()))
    }

    async fn fetch(&self, request: TokenRequest<'_>) -> Result<AccessToken, TokenError> {
        let tenant = self.tenant_for(&request)?;
        let scope = request.scope.trim();
        // Passed as one argument, never through a shell; refusing a leading '-' keeps it from
        // being read as an option.
        let safe = !scope.is_empty()
            && !scope.starts_with('-')
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:/%".contains(&b));
        if !safe {
            return Err(TokenError::new(
                TokenErrorKind::InvalidScope,
                format!(
                    "the scope {scope:?} has characters a resource's scope does not; use e.g. https://management.azure.com/.default"
                ),
            ));
        }
        if request.claims.is_some() {
            return Err(TokenError::new(
                TokenErrorKind::Authentication,
                "the API asked for a token with claims (Continuous Access Evaluation), which the Azure CLI cannot request; sign in again with `az logout` then `az login`",
            ));
        }
        let mut command = az_command();
        command
            .args([
                "account",
                "get-access-token",
                "--output",
                "json",
                "--scope",
                scope,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(tenant) = tenant {
            command.args(["--tenant", tenant]);
        }
        if let Some(path) = &self.search_path {
            command.env("PATH", path);
        }
        let mut child = command.spawn().map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                "is not installed or not on PATH"
            } else {
                "could not be started"
            };
            TokenError::configuration(format!(
                "the Azure CLI (`az`) {kind}; install it (https://aka.ms/installazurecli) and sign in with `az login`"
            ))
            .with_source(e)
        })?;
        let started = Instant::now();
        let wall = SystemTime::now();
        let output = match tokio::time::timeout(self.timeout, run(&mut child)).await {
            Ok(output) => output.map_err(|e| {
                TokenError::new(
                    TokenErrorKind::Connection,
                    "could not read the Azure CLI's output",
                )
                .with_source(e)
            })?,
            // Dropping the child kills it (`kill_on_drop`).
            Err(_) => {
                return Err(TokenError::new(
                    TokenErrorKind::Timeout,
                    format!(
                        "`az account get-access-token` did not finish within {:?}; run it yourself to see why",
                        self.timeout
                    ),
                ));
            }
        };
        let CliOutput {
            status,
            stdout,
            stderr,
        } = output;
        if !status.success() {
            return Err(failure(&stderr, status.code()));
        }
        if stdout.len() > MAX_OUTPUT {
            return Err(TokenError::invalid_response(format!(
                "`az account get-access-token` printed more than {MAX_OUTPUT} bytes; its answer is a few KiB, so this is not the Azure CLI's"
            )));
        }
        parse(&stdout, started, wall)
    }
}

/// The most of `az`'s output read; its token answer is a few KiB.
const MAX_OUTPUT: usize = 64 * 1024;

/// What a finished `az` run printed.
struct CliOutput {
    status: std::process::ExitStatus,
    /// The token's JSON, in memory sized once (a buffer that grew would free copies of the
    /// token unzeroed) and zeroed when dropped.
    stdout: Zeroizing<Vec<u8>>,
    stderr: Vec<u8>,
}

/// Waits for `child` while reading what it prints, each stream at most [`MAX_OUTPUT`] bytes
/// (and one more, to tell a longer output).
async fn run(child: &mut tokio::process::Child) -> std::io::Result<CliOutput> {
    let limit = MAX_OUTPUT as u64 + 1;
    // Room for the limit and tokio's minimum spare capacity: `read_to_end` never reallocates.
    let mut stdout = Zeroizing::new(Vec::with_capacity(MAX_OUTPUT + 64));
    let mut stderr = Vec::new();
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read_out = async {
        match out {
            Some(out) => out.take(limit).read_to_end(&mut stdout).await.map(drop),
            None => Ok(()),
        }
    };
    let read_err = async {
        match err {
            Some(err) => err.take(limit).read_to_end(&mut stderr).await.map(drop),
            None => Ok(()),
        }
    };
    let (read_out, read_err, status) = tokio::join!(read_out, read_err, child.wait());
    read_out?;
    read_err?;
    Ok(CliOutput {
        status: status?,
        stdout,
        stderr,
    })
}

#[cfg(windows)]
fn az_command() -> tokio::process::Command {
    // `az` is a batch file on Windows, which only cmd runs.
    let mut command = tokio::process::Command::new("cmd");
    command.args(["/d", "/c", "az"]);
    command
}

#[cfg(not(windows))]
fn az_command() -> tokio::process::Command {
    tokio::process::Command::new("az")
}

/// The error of a failed run, from what `az` wrote to stderr: only the cause is kept, never the
/// text (it may echo account details).
fn failure(stderr: &[u8], code: Option<i32>) -> TokenError {
    let text = String::from_utf8_lossy(stderr);
    let lower = text.to_ascii_lowercase();
    if lower.contains("az login") || lower.contains("not logged in") {
        return TokenError::configuration(
            "the Azure CLI is not signed in, or its sign-in expired: run `az login` (`az login --tenant <tenant>` for another tenant)",
        );
    }
    if lower.contains("is not recognized as an internal or external command") || code == Some(127) {
        return TokenError::configuration(
            "the Azure CLI (`az`) is not installed or not on PATH; install it (https://aka.ms/installazurecli) and sign in with `az login`",
        );
    }
    let aadsts = text.find("AADSTS").map(|at| {
        let digits: String = text[at + 6..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        format!(" (AADSTS{digits})")
    });
    TokenError::new(
        TokenErrorKind::Authentication,
        format!(
            "`az account get-access-token` failed{}{}; run it yourself to see why",
            code.map(|c| format!(" with exit code {c}"))
                .unwrap_or_default(),
            aadsts.unwrap_or_default()
        ),
    )
}

#[derive(Deserialize)]
struct CliToken {
    /// Zeroed on every path out, as the token endpoint's is.
    #[serde(rename = "accessToken")]
    access_token: Option<TokenText>,
    expires_on: Option<Value>,
}

fn parse(stdout: &[u8], now: Instant, wall_now: SystemTime) -> Result<AccessToken, TokenError> {
    let raw: CliToken = from_json(
        stdout,
        "the output of `az account get-access-token` is not the JSON it prints",
    )?;
    let Some(TokenText(mut secret)) = raw.access_token.filter(|t| !t.0.is_empty()) else {
        return Err(TokenError::invalid_response(
            "the output of `az account get-access-token` has no accessToken",
        ));
    };
    let expires_on = raw
        .expires_on
        .as_ref()
        .and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .ok_or_else(|| {
            TokenError::invalid_response(
                "the output of `az account get-access-token` has no expires_on; upgrade the Azure CLI to 2.54 or later (`az upgrade`)",
            )
        })?;
    let expires_in = (UNIX_EPOCH + Duration::from_secs(expires_on))
        .duration_since(wall_now)
        .map_err(|_| {
            TokenError::invalid_response(
                "the Azure CLI's token has expired; sign in again with `az login`",
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

impl Credential for AzureCliCredential {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        Box::pin(self.fetch(request))
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), TokenError> {
        self.tenant_for(&TokenRequest::new("").for_tenant(tenant))
            .map(drop)
    }

    /// The bound on one `az` run ([`AzureCliCredentialBuilder::timeout`]): a longer run is killed.
    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A directory holding a fake `az` that runs `body` (after recording its arguments in
    /// `args`), removed on drop.
    pub(crate) struct FakeAz(PathBuf);

    impl FakeAz {
        pub(crate) fn new(body: &str) -> FakeAz {
            let dir = std::env::temp_dir().join(format!("tower-entra-az-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let script = dir.join("az");
            std::fs::write(
                &script,
                format!("#!/bin/sh\nPATH=/usr/bin:/bin\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\n{body}\n"),
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            FakeAz(dir)
        }

        fn builder(&self) -> AzureCliCredentialBuilder {
            AzureCliCredential::builder().search_path(self.0.as_os_str())
        }

        pub(crate) fn credential(&self) -> AzureCliCredential {
            self.builder().build().unwrap()
        }

        fn args(&self) -> Vec<String> {
            std::fs::read_to_string(self.0.join("args"))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Drop for FakeAz {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const ARM: &str = "https://management.azure.com/.default";

    async fn token(c: &AzureCliCredential) -> Result<AccessToken, TokenError> {
        c.request_token(TokenRequest::new(ARM)).await
    }

    fn in_an_hour() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600
    }

    #[tokio::test]
    async fn reads_the_token_and_its_expiry_from_az() {
        let az = FakeAz::new(&format!(
            r#"echo '{{"accessToken":"cli-token","expiresOn":"2099-01-01 00:00:00.000000","expires_on":{},"subscription":"s","tenant":"t","tokenType":"Bearer"}}'"#,
            in_an_hour()
        ));
        let c = az
            .builder()
            .tenant_id("contoso.onmicrosoft.com")
            .build()
            .unwrap();
        let t = token(&c).await.unwrap();
        assert_eq!(t.secret(), "cli-token");
        let left = t.expires_on().duration_since(SystemTime::now()).unwrap();
        assert!(
            left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
            "{left:?}"
        );
        assert_eq!(
            az.args(),
            [
                "account",
                "get-access-token",
                "--output",
                "json",
                "--scope",
                ARM,
                "--tenant",
                "contoso.onmicrosoft.com"
            ]
        );
        assert!(!format!("{c:?}").contains("cli-token"));
    }

    #[tokio::test]
    async fn another_tenant_only_when_allowed_and_then_as_its_tenant_argument() {
        let az = FakeAz::new(&format!(
            r#"echo '{{"accessToken":"cli-token","expires_on":{},"tokenType":"Bearer"}}'"#,
            in_an_hour()
        ));
        let c = az
            .builder()
            .tenant_id("contoso.onmicrosoft.com")
            .additionally_allowed_tenants(["fabrikam.onmicrosoft.com"])
            .build()
            .unwrap();
        let refused = c
            .request_token(TokenRequest::new(ARM).for_tenant("northwind.onmicrosoft.com"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.kind(),
            TokenErrorKind::TenantNotAllowed,
            "{refused}"
        );
        assert!(refused.message().contains("additionally_allowed_tenants"));
        assert!(c.check_tenant("northwind.onmicrosoft.com").is_err());
        assert!(
            !az.0.join("args").exists(),
            "az ran for a tenant not allowed"
        );
        c.request_token(TokenRequest::new(ARM).for_tenant("fabrikam.onmicrosoft.com"))
            .await
            .unwrap();
        assert_eq!(az.args()[6..], ["--tenant", "fabrikam.onmicrosoft.com"]);
    }

    #[tokio::test]
    async fn a_signed_out_user_gets_the_fix_and_none_of_azs_output() {
        let az = FakeAz::new(
            "echo \"ERROR: Please run 'az login' to setup account. user=someone@contoso.com\" >&2; exit 1",
        );
        let e = token(&az.credential()).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
        assert!(e.to_string().contains("run `az login`"), "{e}");
        assert!(
            !format!("{e} {e:?}").contains("someone@contoso.com"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn other_failures_keep_only_the_aadsts_code() {
        let az = FakeAz::new(
            "echo 'ERROR: AADSTS70043: The refresh token has expired. secret-detail' >&2; exit 2",
        );
        let e = token(&az.credential()).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
        assert!(e.to_string().contains("exit code 2 (AADSTS70043)"), "{e}");
        assert!(!format!("{e} {e:?}").contains("secret-detail"), "{e:?}");
    }

    #[tokio::test]
    async fn a_missing_az_says_how_to_install_it() {
        let empty = FakeAz::new("");
        std::fs::remove_file(empty.0.join("az")).unwrap();
        let e = token(&empty.credential()).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
        assert!(e.to_string().contains("aka.ms/installazurecli"), "{e}");
    }

    #[tokio::test]
    async fn a_hung_az_is_killed_at_the_timeout() {
        let az = FakeAz::new("exec sleep 30");
        let c = az
            .builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let e = token(&c).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Timeout, "{e}");
    }

    #[tokio::test]
    async fn malformed_output_never_reaches_the_error() {
        for out in [
            r#"{"accessToken":"leaky-token"}"#,
            r#"{"accessToken":"leaky-token","expires_on":"soon"}"#,
            r#"{"accessToken":"leaky-token","expires_on":1}"#,
            "leaky-token",
        ] {
            let az = FakeAz::new(&format!("echo '{out}'"));
            let e = token(&az.credential()).await.unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{out}: {e}");
            assert!(!format!("{e} {e:?}").contains("leaky-token"), "{e:?}");
        }
    }

    #[tokio::test]
    async fn option_like_scopes_and_claims_are_refused_before_running_az() {
        let az = FakeAz::new("exit 0");
        for scope in ["--help", "a b", "x;rm -rf /"] {
            let e = az
                .credential()
                .request_token(TokenRequest::new(scope))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidScope, "{scope}: {e}");
        }
        let e = az
            .credential()
            .request_token(TokenRequest::new(ARM).with_claims("{}"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
        assert!(!az.0.join("args").exists(), "az ran");
    }
}

/// No copy of the token `az` prints is freed unzeroed, accepted or refused (the lib's tests run
/// on the scanning allocator; the fake `az` is another process, so every copy here is ours).
#[cfg(all(test, unix))]
mod freed_memory {
    use super::tests::FakeAz;
    use super::*;
    use crate::scanning_allocator::scan;

    const TOKEN: &str = "eyJ0eXAi.Cli5-needle_token-that-must-be-zeroed.before-free";

    #[tokio::test]
    async fn azs_output_leaves_no_copy_of_the_token() {
        let in_an_hour = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        for out in [
            format!(
                r#"{{"accessToken":"{TOKEN}","expires_on":{in_an_hour},"tokenType":"Bearer"}}"#
            ),
            format!(r#"{{"accessToken":"{TOKEN}","expires_on":"soon"}}"#),
            format!(r#"{{"accessToken":"{TOKEN}","expires_on": }}"#),
            // A long output, read in many chunks.
            format!(
                r#"{{"accessToken":"{TOKEN}","expires_on":{in_an_hour},"pad":"{}"}}"#,
                "x".repeat(20_000)
            ),
        ] {
            let az = FakeAz::new(&format!("echo '{out}'"));
            let credential = az.credential();
            let scan = scan(TOKEN.as_bytes().split_at(24).0);
            let outcome = credential
                .request_token(TokenRequest::new("https://management.azure.com/.default"))
                .await;
            let ok = outcome.is_ok();
            drop(outcome);
            assert_eq!(
                scan.unzeroed_frees(),
                0,
                "a freed copy of the token (accepted: {ok}) from {}",
                &out[..60]
            );
        }
    }
}
