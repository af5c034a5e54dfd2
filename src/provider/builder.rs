//! [`TokenProviderBuilder`]: margins, retries, jitter and client capabilities, checked once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::claims::capabilities_claims;
use super::engine::Engine;
use super::metrics::{MeterChoice, Metrics};
use super::state::{ProviderOptions, State, fetch_budget};
use super::telemetry::Telemetry;
use super::tenants::{TenantLimits, TenantProviders};
use super::{Inner, TenantsLink, TokenProvider};
use crate::credential::Credential;
use crate::error::{TokenError, TokenErrorKind};

/// How long a replica waits for another's token request when its credential does not say how
/// long one takes.
#[cfg(feature = "shared-cache")]
const DEFAULT_WAIT_FOR_HOLDER: Duration = Duration::from_secs(30);

/// No duration setting goes beyond this: larger values only overflow timer arithmetic.
const MAX_SETTING: Duration = Duration::from_secs(3600);

/// Builds a [`TokenProvider`].
pub struct TokenProviderBuilder {
    credential: Arc<dyn Credential>,
    scope: String,
    options: ProviderOptions,
    client_capabilities: Vec<String>,
    meter: MeterChoice,
    #[cfg(feature = "shared-cache")]
    shared_cache: Option<Arc<dyn crate::shared_cache::SharedTokenCache>>,
    #[cfg(feature = "shared-cache")]
    encryption_key: Option<crate::shared_cache::EncryptionKey>,
    tenant_limits: TenantLimits,
}

impl TokenProviderBuilder {
    pub(super) fn new(credential: Arc<dyn Credential>, scope: String) -> Self {
        TokenProviderBuilder {
            credential,
            scope,
            options: ProviderOptions::default(),
            client_capabilities: Vec::new(),
            meter: MeterChoice::default(),
            #[cfg(feature = "shared-cache")]
            shared_cache: None,
            #[cfg(feature = "shared-cache")]
            encryption_key: None,
            tenant_limits: TenantLimits::default(),
        }
    }

    /// A token is used until this long before it expires (capped at a quarter of its lifetime),
    /// so that it does not expire in flight. Default 30 s; at most 1 h.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.options.expiry_margin = margin.min(MAX_SETTING);
        self
    }

    /// How many times a token request is tried when no usable token is held and it fails
    /// transiently (5xx, 429, timeouts, connection errors). Default 4; at least 1. A managed
    /// identity request is retried by the credential alone, as Microsoft's IMDS guidance asks
    /// (at most 4 requests), never again by the provider on top.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.options.max_attempts = attempts.max(1);
        self
    }

    /// The first retry's backoff (doubled each time, up to [`max_backoff`](Self::max_backoff)).
    /// Default 500 ms; at most 1 h.
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.options.initial_backoff = backoff.min(MAX_SETTING);
        self
    }

    /// The longest backoff between attempts, and the longest time a failed fetch's error is
    /// handed out at once to callers with no usable token. Default 30 s; at most 1 h.
    ///
    /// How this caps `Retry-After` (itself read as at most 1 h) for callers with **no usable
    /// token**, who are waiting:
    ///
    /// - within one fetch, a transient failure is retried only when the wait (at least its
    ///   `Retry-After`) is at most `max_backoff`, or 60 s if that is more; a longer
    ///   `Retry-After` fails the fetch at once, and [`TokenError::retry_after`] tells how long
    ///   the endpoint asked for;
    /// - after a failed fetch, callers get its error at once for at most `max_backoff`; then the
    ///   next caller starts a new fetch, even if `Retry-After` asked for longer.
    ///
    /// While a usable token is held, a failed refresh ahead waits out the whole `Retry-After`
    /// (up to 1 h, and no later than the token's expiry) and callers are served the held token.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.options.max_backoff = backoff.min(MAX_SETTING);
        self
    }

    /// The most a refresh ahead is moved earlier at random (capped at a fifth of the refresh
    /// window), so that a fleet started together does not refresh together. Default 60 s; at
    /// most 1 h. With a [shared cache](Self::shared_cache) it is moved later instead (the first
    /// replica to reach its refresh point refreshes for the fleet: jitter before the point would
    /// have the fleet refresh early every time).
    pub fn refresh_jitter(mut self, jitter: Duration) -> Self {
        self.options.refresh_jitter = jitter.min(MAX_SETTING);
        self
    }

    /// Declares client capabilities, sent with every token request as the `claims` parameter.
    /// `["cp1"]` says this client handles Continuous Access Evaluation claims challenges, so
    /// that Entra may issue long-lived (up to about 24 h) CAE tokens, which a resource revokes
    /// at once when it must (`{"access_token":{"xms_cc":{"values":["cp1"]}}}`). Refresh still
    /// follows Entra's `refresh_in`.
    ///
    /// Only declare `cp1` when 401 responses reach an [`EntraAuth`](crate::EntraAuth) layer
    /// (or [`TokenProvider::token_with_claims`]) and requests can be replayed, e.g. with
    /// `RetryOnChallenge` (feature `retry`).
    ///
    /// ```
    /// # fn demo(credential: tower_entra::ClientSecretCredential) -> Result<(), tower_entra::TokenError> {
    /// use tower_entra::TokenProvider;
    ///
    /// let provider = TokenProvider::builder(credential, "https://graph.microsoft.com/.default")
    ///     .client_capabilities(["cp1"])
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn client_capabilities<I>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.client_capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Requires application permissions (app roles, e.g. Graph's `Organization.Read.All`): after
    /// each token request the token's `roles` claim is read (no signature check: it is our own
    /// token, fresh from Entra), and a token without one of them fails with
    /// [`TokenErrorKind::MissingPermission`], naming the missing roles and the admin-consent fix.
    /// With [`TokenProvider::warm_up`] the service then fails at start-up instead of meeting a 403
    /// at its first request. A token whose roles cannot be read (not a JWT) passes, with a
    /// warning.
    ///
    /// ```no_run
    /// # async fn demo(credential: tower_entra::ClientSecretCredential) -> Result<(), tower_entra::TokenError> {
    /// use tower_entra::TokenProvider;
    ///
    /// let graph = TokenProvider::builder(credential, "https://graph.microsoft.com/.default")
    ///     .require_roles(["Organization.Read.All", "User.Read.All"])
    ///     .build()?;
    /// graph.warm_up().await?; // Err(MissingPermission) until an admin consents
    /// # Ok(()) }
    /// ```
    pub fn require_roles<I>(mut self, roles: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options.required_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The OpenTelemetry meter the provider's instruments come from, instead of the global
    /// `opentelemetry::global::meter("tower-entra")`. Feature `opentelemetry`.
    ///
    /// The instruments (each with a `scope` attribute) are recorded only when a token request
    /// ends, a token is refused or a claims challenge starts, never when a cached token is
    /// served:
    ///
    /// | instrument | kind | attributes |
    /// |---|---|---|
    /// | `tower_entra.token.requests` | counter, every attempt | `outcome` (`ok`, or the [`TokenErrorKind`] in snake case: `authentication`, `transient`, ...), `aadsts` (Entra's AADSTS code, when it gave one) |
    /// | `tower_entra.token.fetch.duration` | histogram, seconds, retries included | `outcome`, `mode` (`cold`, `ahead`, `claims`) |
    /// | `tower_entra.token.expires_in` | observable gauge, seconds until the cached token expires | |
    /// | `tower_entra.token.invalidations` | counter: tokens dropped because an API refused them | |
    /// | `tower_entra.token.claims_challenges` | counter: fetches started for a claims challenge | |
    /// | `tower_entra.shared_cache.hits`, `.misses`, `.lease_waits`, `.errors` | observable counters, with a [shared cache](Self::shared_cache) | |
    /// | `tower_entra.shared_cache.skipping` | observable gauge: 1 while the shared cache's breaker is open | |
    ///
    /// ```
    /// # fn demo(credential: tower_entra::ClientSecretCredential) -> Result<(), tower_entra::TokenError> {
    /// use opentelemetry::metrics::MeterProvider;
    /// use tower_entra::TokenProvider;
    ///
    /// let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
    /// let provider = TokenProvider::builder(credential, "https://graph.microsoft.com/.default")
    ///     .meter(meter_provider.meter("tower-entra"))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "opentelemetry")]
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Shares tokens with the other replicas of the service through `cache` (feature
    /// `shared-cache`; [`RedisTokenCache`](crate::RedisTokenCache) with feature `redis`), so that
    /// a fleet sends one token request where each replica would send its own.
    ///
    /// Only the slow path touches it: a cold start and a refresh read it before asking Entra and
    /// write what Entra gave; a cached token is served from memory as without it. A token read
    /// is taken only if it is newer than the one held and than any the API just refused, is
    /// not yet at its refresh point, and (for a JWT) names this scope's resource and this
    /// tenant. One replica at a time asks Entra (a lease per entry); the others wait for its
    /// token for at most one token request's timeout, then ask themselves. Claims challenges
    /// never read it. Any failure of the store is a miss: tokens then come straight from Entra.
    ///
    /// Entries are named by an HMAC and sealed (AES-256-GCM) under keys derived from the
    /// credential's secret (the client secret, the certificate's private key); a credential
    /// without one (a federated token file, an assertion callback, one of yours) needs
    /// [`encryption_key`](Self::encryption_key), and managed identity and the Azure CLI are
    /// refused: `build()` says so.
    ///
    /// ```no_run
    /// # fn demo(credential: tower_entra::ClientSecretCredential) -> Result<(), tower_entra::TokenError> {
    /// use tower_entra::{RedisTokenCache, TokenProvider};
    ///
    /// let cache = RedisTokenCache::new("rediss://:password@cache.example.net:6380")?;
    /// let provider = TokenProvider::builder(credential, "https://graph.microsoft.com/.default")
    ///     .shared_cache(cache)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "shared-cache")]
    pub fn shared_cache(mut self, cache: impl crate::shared_cache::SharedTokenCache) -> Self {
        self.shared_cache = Some(Arc::new(cache));
        self
    }

    /// The key the [shared cache](Self::shared_cache)'s keys derive from, for a credential with
    /// no secret of its own (feature `shared-cache`); with one, it replaces the credential's
    /// secret. The same on every replica.
    #[cfg(feature = "shared-cache")]
    pub fn encryption_key(mut self, key: crate::shared_cache::EncryptionKey) -> Self {
        self.encryption_key = Some(key);
        self
    }

    /// The most tenants [`TokenProvider::for_tenant`] keeps a provider for (default 10,000;
    /// `0` keeps none, so each use makes one). Beyond it, adding a tenant drops the least
    /// recently used (approximately: use is marked to the second).
    pub fn max_tenants(mut self, max: usize) -> Self {
        self.tenant_limits.max_tenants = max;
        self
    }

    /// How long a tenant's provider is kept unused before it is dropped, when another tenant is
    /// added (default 1 h). A dropped tenant's next request fetches again, unless its last fetch
    /// failed within [`max_backoff`](Self::max_backoff): then it gets that error at once.
    pub fn max_tenant_idle(mut self, idle: Duration) -> Self {
        self.tenant_limits.max_idle = idle;
        self
    }

    /// Checks the scope and the required roles, and builds the provider.
    pub fn build(self) -> Result<TokenProvider, TokenError> {
        check_scope(&self.scope)?;
        check_roles(&self.options.required_roles)?;
        #[cfg(feature = "shared-cache")]
        let shared_cache = self.shared_cache.is_some();
        #[cfg(not(feature = "shared-cache"))]
        let shared_cache = false;
        let mut options = self.options;
        options.jitter_after_point = shared_cache;
        #[cfg(feature = "shared-cache")]
        let shared = match self.shared_cache {
            Some(store) => Some(crate::shared_cache::SharedEntry::new(
                store,
                &self.credential.cache_binding(),
                self.credential.identity(),
                self.encryption_key,
                &self.scope,
                &self.client_capabilities,
                self.credential.timeout().unwrap_or(DEFAULT_WAIT_FOR_HOLDER),
            )?),
            None => None,
        };
        let settings = Arc::new(Settings {
            fetch_budget: fetch_budget(&options, self.credential.timeout()),
            credential: self.credential,
            scope: self.scope,
            capabilities: capabilities_claims(&self.client_capabilities),
            options,
            meter: self.meter,
        });
        let for_tenant = settings.clone();
        // Each tenant's provider shares its tokens through the same store, in an entry bound to
        // its tenant.
        #[cfg(feature = "shared-cache")]
        let tenant_entries = shared.as_ref().map(|home| home.for_tenant(""));
        let tenants = Arc::new(TenantProviders::new(
            self.tenant_limits,
            settings.options.max_backoff,
            Box::new(move |tenant, registry| {
                for_tenant.provider(
                    Some(tenant.to_owned()),
                    TenantsLink::Member(registry),
                    #[cfg(feature = "shared-cache")]
                    tenant_entries
                        .as_ref()
                        .map(|entry| entry.for_tenant(tenant)),
                )
            }),
        ));
        Ok(settings.provider(
            None,
            TenantsLink::Home(tenants),
            #[cfg(feature = "shared-cache")]
            shared,
        ))
    }
}

/// What the providers of one builder share: the home tenant's and those of its other tenants.
struct Settings {
    credential: Arc<dyn Credential>,
    scope: String,
    capabilities: Option<String>,
    options: ProviderOptions,
    meter: MeterChoice,
    fetch_budget: Duration,
}

impl Settings {
    fn provider(
        &self,
        tenant: Option<String>,
        tenants: TenantsLink,
        #[cfg(feature = "shared-cache")] shared: Option<crate::shared_cache::SharedEntry>,
    ) -> TokenProvider {
        TokenProvider {
            // Cyclic: the expiry gauge's callback reads the provider through a weak reference.
            inner: Arc::new_cyclic(|provider| Inner {
                telemetry: Telemetry::new(
                    &self.scope,
                    tenant.as_deref(),
                    // Without the `opentelemetry` feature the meter is a `Copy` placeholder.
                    // Only the home provider registers the gauges (metrics.rs says why).
                    #[allow(clippy::clone_on_copy)]
                    Metrics::new(
                        self.meter.clone(),
                        &self.scope,
                        tenant.is_none().then(|| provider.clone()),
                    ),
                ),
                credential: self.credential.clone(),
                scope: self.scope.clone(),
                tenant,
                tenants,
                capabilities: self.capabilities.clone(),
                current: ArcSwapOption::empty(),
                generation: Default::default(),
                published: Default::default(),
                refresh_timer: Default::default(),
                slot: super::local::Slot::new(provider),
                engine: Engine::new(State::new(self.fetch_budget)),
                options: self.options.clone(),
                throttle: Default::default(),
                #[cfg(feature = "shared-cache")]
                shared,
                #[cfg(feature = "shared-cache")]
                refused: ArcSwapOption::empty(),
            }),
        }
    }
}

impl fmt::Debug for TokenProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProviderBuilder")
            .field("credential", &self.credential)
            .field("scope", &self.scope)
            .field("options", &self.options)
            .field("client_capabilities", &self.client_capabilities)
            .finish()
    }
}

/// Client credentials take exactly one scope: `<application ID URI>/.default`.
pub(crate) fn check_scope(scope: &str) -> Result<(), TokenError> {
    const RULE: &str = "the client credentials flow takes exactly one scope, `<application ID URI>/.default` (e.g. `https://graph.microsoft.com/.default`); the permissions themselves are granted to the app registration, with admin consent";
    let parts: Vec<&str> = scope.split_whitespace().collect();
    let err =
        |what: String| TokenError::new(TokenErrorKind::InvalidScope, format!("{what}: {RULE}"));
    match parts.as_slice() {
        [] => Err(err("the scope is empty".into())),
        [one] => match one.strip_suffix("/.default") {
            Some(resource) if !resource.is_empty() => Ok(()),
            Some(_) => Err(err(format!("the scope {one:?} names no resource"))),
            None => Err(err(format!("the scope {one:?} does not end in /.default"))),
        },
        many => Err(err(format!(
            "the scope {scope:?} has {} scopes",
            many.len()
        ))),
    }
}

/// A role value is one word (`Organization.Read.All`), as Entra's app role values are.
fn check_roles(roles: &[String]) -> Result<(), TokenError> {
    match roles
        .iter()
        .find(|r| r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        Some(bad) => Err(TokenError::configuration(format!(
            "the required role {bad:?} is not an app role value: name each role as the API defines it, e.g. `Organization.Read.All`"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a shared cache, jitter moves a refresh later: the flag the refresh policy reads is
    /// set by `build()`, for the home provider and its tenants' (they share the options).
    #[cfg(feature = "redis")]
    #[test]
    fn a_shared_cache_moves_jitter_after_the_refresh_point() {
        let credential = || {
            crate::credential::ClientSecretCredential::new(
                "contoso",
                "00000000-0000-0000-0000-000000000001",
                "s",
            )
            .unwrap()
        };
        let scope = "api://x/.default";
        let plain = TokenProvider::builder(credential(), scope).build().unwrap();
        assert!(!plain.inner.options.jitter_after_point);
        let cache = crate::shared_cache::RedisTokenCache::new("redis://127.0.0.1:1").unwrap();
        let shared = TokenProvider::builder(credential(), scope)
            .shared_cache(cache)
            .build()
            .unwrap();
        assert!(shared.inner.options.jitter_after_point);
    }

    #[test]
    fn role_rules() {
        assert!(check_roles(&["Organization.Read.All".into(), "Demo.Read".into()]).is_ok());
        for bad in ["", "Org.Read All", "A\n"] {
            let e = check_roles(&[bad.into()]).unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Configuration);
            assert!(e.to_string().contains("app role value"), "{e}");
        }
    }

    #[test]
    fn scope_rules() {
        assert!(check_scope("https://graph.microsoft.com/.default").is_ok());
        assert!(check_scope("api://0000-1111/.default").is_ok());
        for bad in [
            "",
            "https://graph.microsoft.com/User.Read",
            "https://graph.microsoft.com/.default https://management.azure.com/.default",
            "/.default",
        ] {
            let e = check_scope(bad).unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidScope);
            assert!(
                e.to_string().contains("<application ID URI>/.default"),
                "{e}"
            );
        }
    }
}
