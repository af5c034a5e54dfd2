//! [`AzureCliCredential`]: the token of the developer signed in to the Azure CLI.

use std::ffi::OsString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::authority::check_tenant_id;
use crate::credential::developer_tool::{Run, Tool, checked_scope};
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
/// A missing `az` or a signed-out user is an [`Unavailable`](TokenErrorKind::Unavailable)
/// error that says what to run. `az` runs in its own process group from a directory that holds
/// no program; a run longer than the timeout (10 s by default) is killed with every process it
/// started. Nothing `az` prints reaches logs or errors (an AADSTS code excepted). A scope with
/// characters a resource URI does not have (`%`, spaces, a leading `-`) is refused before `az`
/// runs.
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

    /// Looks `az` up in `path` instead of this process's `PATH` (tests of the chains that
    /// build their own).
    pub(crate) fn with_search_path(mut self, path: OsString) -> Self {
        self.search_path = Some(path);
        self
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
        let scope = checked_scope(request.scope)?;
        if request.claims.is_some() {
            return Err(TokenError::new(
                TokenErrorKind::Authentication,
                "the API asked for a token with claims (Continuous Access Evaluation), which the Azure CLI cannot request; sign in again with `az logout` then `az login`",
            ));
        }
        let mut args = vec![
            "account",
            "get-access-token",
            "--output",
            "json",
            "--scope",
            scope,
        ];
        if let Some(tenant) = tenant {
            args.extend(["--tenant", tenant]);
        }
        Run {
            tool: &AZ,
            args,
            command: "`az account get-access-token`",
            timeout: self.timeout,
            search_path: self.search_path.as_ref(),
        }
        .token(parse)
        .await
    }
}

/// The Azure CLI, as [`Run`] starts it.
const AZ: Tool = Tool {
    program: "az",
    display: "the Azure CLI (`az`)",
    install: "install it (https://aka.ms/installazurecli) and sign in with `az login`",
    signed_out: "the Azure CLI is not signed in, or its sign-in expired: run `az login` (`az login --tenant <tenant>` for another tenant)",
    signed_out_markers: &["az login", "not logged in"],
};

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

    /// A developer's own sign-in: never in a cache other processes share.
    #[cfg(feature = "shared-cache")]
    fn cache_binding(&self) -> crate::shared_cache::CacheBinding {
        crate::shared_cache::CacheBinding::refused(
            "the Azure CLI credential (a developer's own sign-in)",
        )
    }
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use super::*;
    use crate::credential::developer_tool::tests::FakeTool;

    /// A fake `az` that runs `body`.
    pub(super) struct FakeAz(pub(super) FakeTool);

    impl FakeAz {
        pub(super) fn new(body: &str) -> FakeAz {
            FakeAz(FakeTool::new("az", body))
        }

        pub(super) fn builder(&self) -> AzureCliCredentialBuilder {
            AzureCliCredential::builder().search_path(self.0.search_path())
        }

        pub(crate) fn credential(&self) -> AzureCliCredential {
            self.builder().build().unwrap()
        }

        fn args(&self) -> Vec<String> {
            self.0.args()
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
        assert!(!az.0.ran(), "az ran for a tenant not allowed");
        c.request_token(TokenRequest::new(ARM).for_tenant("fabrikam.onmicrosoft.com"))
            .await
            .unwrap();
        assert_eq!(az.0.args()[6..], ["--tenant", "fabrikam.onmicrosoft.com"]);
    }

    #[tokio::test]
    async fn a_signed_out_user_gets_the_fix_and_none_of_azs_output() {
        let az = FakeAz::new(
            "echo \"ERROR: Please run 'az login' to setup account. user=someone@contoso.com\" >&2; exit 1",
        );
        let e = token(&az.credential()).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
        assert!(e.to_string().contains("run `az login`"), "{e}");
        assert!(
            !format!("{e} {e:?}").contains("someone@contoso.com"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_az_says_how_to_install_it() {
        let empty = FakeAz::new("");
        std::fs::remove_file(empty.0.0.join("az")).unwrap();
        let e = token(&empty.credential()).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
        assert!(e.to_string().contains("aka.ms/installazurecli"), "{e}");
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
        for scope in ["--help", "a b", "api://%APPDATA%/.default"] {
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
        assert!(!az.0.ran(), "az ran");
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
