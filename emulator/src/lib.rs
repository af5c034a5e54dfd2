#![doc = include_str!("../README.md")]
//!
//! # The server
//!
//! [`Emulator::start`] listens on `127.0.0.1` on a random port; the server
//! lives on the Tokio runtime that called it and stops when the last clone of
//! the [`Emulator`] handle is dropped.
//!
//! # What it checks
//!
//! Token requests (`application/x-www-form-urlencoded`; `client_secret_post`,
//! `client_secret_basic`, or `private_key_jwt`) are checked in this order; each
//! failure is answered with Entra's error JSON (`error`, `error_description`
//! ending in `\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …`,
//! `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`):
//!
//! | condition | status | `error` | code |
//! | --- | --- | --- | --- |
//! | method is not `POST` | 400 | `invalid_request` | `AADSTS900561` |
//! | tenant unknown | 400 | `invalid_request` | `AADSTS90002` |
//! | `grant_type` missing / not `client_credentials` | 400 | `invalid_request` / `unsupported_grant_type` | `AADSTS900144` / `AADSTS70003` |
//! | `client_id` missing | 400 | `invalid_request` | `AADSTS900144` |
//! | client not in the tenant | 400 | `unauthorized_client` | `AADSTS700016` |
//! | client registered in the tenant without its service principal | 401 | `invalid_client` | `AADSTS7000229` |
//! | both a secret and an assertion | 400 | `invalid_request` | `AADSTS90013` |
//! | no credential | 401 | `invalid_client` | `AADSTS7000216` |
//! | wrong / expired secret | 401 | `invalid_client` | `AADSTS7000215` / `AADSTS7000222` |
//! | `client_assertion_type` missing / not jwt-bearer | 400 | `invalid_request` | `AADSTS900144` / `AADSTS90013` |
//! | assertion malformed, no `exp`, no `jti` | 401 | `invalid_client` | `AADSTS50027` |
//! | assertion `alg` not RS256/PS256 | 400 | `invalid_request` | `AADSTS5002738` |
//! | certificate not found (`x5t#S256`, `x5t`, `x5c`) or bad signature | 401 | `invalid_client` | `AADSTS700027` |
//! | `iss`/`sub` not the client ID | 401 | `invalid_client` | `AADSTS700021` |
//! | `aud` not this tenant's token endpoint | 401 | `invalid_client` | `AADSTS700023` |
//! | `exp`/`nbf` out of range (5 min skew), lifetime over 1 day | 401 | `invalid_client` | `AADSTS700024` |
//! | `jti` replayed | 401 | `invalid_client` | `AADSTS50013` |
//! | external assertion matches no federated credential | 400 | `invalid_client` | `AADSTS70021` |
//! | `scope` missing | 400 | `invalid_request` | `AADSTS900144` |
//! | a scope without `/.default` | 400 | `invalid_scope` | `AADSTS1002012` |
//! | scopes of several resources | 400 | `invalid_scope` | `AADSTS70011` |
//! | resource unknown | 400 | `invalid_resource` | `AADSTS500011` |
//! | `claims` not a JSON object | 400 | `invalid_request` | `AADSTS90100` |
//!
//! Access tokens are v1.0-shaped RS256 JWTs (`aud`, `iss`
//! `https://sts.windows.net/{tenant}/`, `iat`, `nbf`, `exp`, `tid`, `appid`,
//! `azp`, `appidacr`, `oid`, `sub`, `roles`, `uti`, `jti`, `ver`, `xms_cc` for
//! CAE-capable requests) plus `xms_emu_seq`, an emulator-specific issue
//! sequence number the demo API uses for revocation.
//!
//! # Managed identity endpoints
//!
//! Managed identities assigned to the emulated host
//! ([`Emulator::assign_managed_identity`]) get tokens from each source's
//! endpoint, in its own protocol and error shape:
//!
//! | source | route | URL / secret |
//! | --- | --- | --- |
//! | IMDS | `GET /metadata/identity/oauth2/token` | [`Emulator::imds_token_url`], [`Emulator::imds_host`] |
//! | App Service, Functions, Container Apps | `GET /msi/token` | [`Emulator::app_service_identity_endpoint`], [`Emulator::app_service_identity_header`] |
//! | Azure Arc | `GET /arc/metadata/identity/oauth2/token` | [`Emulator::arc_identity_endpoint`], [`Emulator::arc_imds_endpoint`], [`Emulator::set_arc_key_directory`] |
//! | Cloud Shell | `POST /cloudshell/oauth2/token` | [`Emulator::cloud_shell_msi_endpoint`] |
//! | Azure Machine Learning | `GET /azureml/msi/token` | [`Emulator::azure_ml_msi_endpoint`], [`Emulator::azure_ml_msi_secret`], [`Emulator::azure_ml_default_identity_client_id`] |
//! | Service Fabric (plain HTTP) | `GET /servicefabric/metadata/identity/oauth2/token` | [`Emulator::service_fabric_identity_endpoint`], [`Emulator::service_fabric_identity_header`] |
//!
//! Their tokens are signed like the token endpoint's (`aud` the resource,
//! `appid` / `oid` / `sub` the identity, `xms_mirid` its resource ID). A
//! token for `api://AzureADTokenExchange` is v2.0-shaped with issuer
//! [`AssignedIdentity::issuer`], which every tenant trusts as a federated
//! identity issuer: an app registration with
//! [`App::with_federated_credential`]`(&mi.issuer, &mi.object_id, "")`
//! accepts it as its client assertion. Faults for these endpoints are queued
//! with [`Emulator::push_managed_identity_fault`]; every request is kept in
//! [`Emulator::managed_identity_request_log`].
//!
//! # Load and telemetry
//!
//! [`Emulator::set_token_rate_limit`] admits token requests through a token
//! bucket and answers `429` with `Retry-After` beyond it;
//! [`Emulator::token_request_stats`] counts requests per second.
//! [`Emulator::last_token_http_request`] keeps the latest token request's
//! headers (such as `x-client-SKU` or `User-Agent`).
//!
//! # Several tenants
//!
//! [`Emulator::add_tenant`] creates tenants beside the first;
//! [`Emulator::add_domain`] names one by a domain too, and every endpoint
//! and control that takes a tenant takes either name. A token request names
//! its tenant in the path and is answered as Entra answers it:
//!
//! | the app in the tenant | status | `error` | code |
//! | --- | --- | --- | --- |
//! | tenant unknown | 400 | `invalid_request` | `AADSTS90002` |
//! | registered there (its home), or consented to ([`Emulator::grant_admin_consent`]) | 200 | | |
//! | present without consent ([`Emulator::add_service_principal`]) | 200, no `roles`: the demo API answers 403 | | |
//! | never consented to, or a single-tenant app of another tenant | 400 | `unauthorized_client` | `AADSTS700016` |
//! | home tenant without its service principal ([`Emulator::remove_service_principal`]) | 401 | `invalid_client` | `AADSTS7000229` |
//!
//! `AADSTS65001` ("the user or administrator has not consented") is an
//! answer of Entra's user sign-in flows; the client credentials grant does
//! not check consent beyond the app's presence, it leaves out the roles not
//! granted. A token's `tid` and `iss` name the tenant by GUID whichever name
//! the request used. [`Emulator::token_requests_to`],
//! [`Emulator::tenant_token_request_stats`] and
//! [`Emulator::set_tenant_token_rate_limit`] count and limit one tenant's
//! requests; [`RecordedRequest::tenant_id`] says which tenant a logged
//! request addressed.
#![warn(missing_docs)]

mod api;
mod app;
mod assertion;
mod cert;
mod client_credentials;
mod directory;
mod entra_error;
mod fault;
mod federated;
mod form;
mod jwt;
mod managed_identity;
mod mi_endpoint;
mod net;
mod rate_limit;
mod record;
mod state;
mod tenants;
mod token_endpoint;
mod token_signer;
mod util;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post};
use tokio::sync::oneshot;

pub use app::{App, RegisteredApp};
pub use cert::TestCertificate;
pub use fault::Fault;
pub use federated::FederatedIssuer;
pub use managed_identity::{AssignedIdentity, ManagedIdentity};
pub use rate_limit::TokenRequestStats;
pub use record::{Endpoint, RecordedRequest};

use directory::AppRecord;
use state::{Shared, State};
use token_signer::TOKEN_EXCHANGE_AUDIENCES;

/// A running emulator. Cheap to clone (all clones share one server); the
/// server shuts down when the last clone is dropped.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    default_tenant: String,
    port: u16,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let st = self.shared.lock();
        if let (true, Some(dir)) = (st.mi_secrets.arc_dir_is_own, &st.mi_secrets.arc_dir) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("authority_host", &self.authority_host())
            .field("tenant_id", &self.inner.default_tenant)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Scope of the demo API (for the `scope` form field).
    pub const DEMO_API_SCOPE: &'static str = "api://entra-emulator-demo/.default";
    /// The app role the demo API requires.
    pub const DEMO_API_ROLE: &'static str = "Demo.Read";

    /// Starts an emulator on `127.0.0.1` (random port) with one tenant.
    ///
    /// `https://graph.microsoft.com`, `https://management.azure.com` and the
    /// demo API are registered as resources.
    ///
    /// # Panics
    ///
    /// If no port can be bound, or when called outside a Tokio runtime.
    pub async fn start() -> Emulator {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("entra-emulator: cannot bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("entra-emulator: no local address: {e}"))
            .port();
        // Generate (or fetch) the signing key before serving, off the async threads.
        let _ = tokio::task::spawn_blocking(jwt::emulator_key).await;

        let authority = format!("http://127.0.0.1:{port}");
        let default_tenant = util::guid();
        let mut state = State::new();
        state.add_tenant(&default_tenant, &authority);
        for (uri, roles) in [
            (
                "https://graph.microsoft.com",
                &[
                    "User.Read.All",
                    "User.ReadWrite.All",
                    "Group.Read.All",
                    "Directory.Read.All",
                    "Application.Read.All",
                    "Mail.Send",
                    "Mail.Read",
                    "Sites.Read.All",
                    "Files.Read.All",
                ][..],
            ),
            ("https://management.azure.com", &[][..]),
            (api::DEMO_API_URI, &[Emulator::DEMO_API_ROLE][..]),
            (TOKEN_EXCHANGE_AUDIENCES[0], &[][..]),
            (TOKEN_EXCHANGE_AUDIENCES[1], &[][..]),
            (TOKEN_EXCHANGE_AUDIENCES[2], &[][..]),
        ] {
            state.directory.register_resource(uri, roles);
        }
        let shared = Arc::new(Shared::new(authority, state));

        let router = Router::new()
            .route(
                "/{tenant}/oauth2/v2.0/token",
                any(token_endpoint::token_endpoint),
            )
            .route("/{tenant}/discovery/v2.0/keys", get(api::jwks))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(api::openid_configuration),
            )
            .route("/api/hello", get(api::hello))
            .route(
                "/metadata/identity/oauth2/token",
                get(mi_endpoint::at(Endpoint::Imds)),
            )
            .route("/msi/token", get(mi_endpoint::at(Endpoint::AppService)))
            .route(
                "/azureml/msi/token",
                get(mi_endpoint::at(Endpoint::AzureMl)),
            )
            .route(
                "/arc/metadata/identity/oauth2/token",
                get(mi_endpoint::at(Endpoint::AzureArc)),
            )
            .route(
                "/cloudshell/oauth2/token",
                post(mi_endpoint::at(Endpoint::CloudShell)),
            )
            .route(
                "/servicefabric/metadata/identity/oauth2/token",
                get(mi_endpoint::at(Endpoint::ServiceFabric)),
            )
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let server = axum::serve(
            net::KillableListener(listener),
            router.into_make_service_with_connect_info::<net::Conn>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        tokio::spawn(async move {
            let _ = server.await;
        });
        Emulator {
            inner: Arc::new(Inner {
                shared,
                default_tenant,
                port,
                shutdown: Some(tx),
            }),
        }
    }

    /// The authority host, e.g. `http://127.0.0.1:12345` (no trailing slash).
    pub fn authority_host(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    /// The tenant (a GUID) created at start.
    pub fn tenant_id(&self) -> String {
        self.inner.default_tenant.clone()
    }

    /// Creates another tenant and returns its ID (a GUID).
    pub fn add_tenant(&self) -> String {
        let id = util::guid();
        let shared = &self.inner.shared;
        shared.lock().add_tenant(&id, &shared.authority);
        id
    }

    /// The v2.0 token endpoint of `tenant_id`:
    /// `{authority_host}/{tenant_id}/oauth2/v2.0/token`.
    pub fn token_url(&self, tenant_id: &str) -> String {
        format!("{}/{tenant_id}/oauth2/v2.0/token", self.authority_host())
    }

    /// Registers `app` in `tenant_id` (its GUID or a domain of it; with a
    /// service principal, and admin consent for its roles) and returns its
    /// fresh client ID.
    ///
    /// # Panics
    ///
    /// If `tenant_id` is not a tenant of this emulator.
    pub fn register_app(&self, tenant_id: &str, app: App) -> RegisteredApp {
        let client_id = util::guid();
        let mut st = self.inner.shared.lock();
        let Some(tenant_key) = st.directory.resolve(tenant_id).map(str::to_owned) else {
            panic!("entra-emulator: register_app: unknown tenant '{tenant_id}'");
        };
        st.directory.register(&tenant_key, &client_id, app);
        RegisteredApp {
            client_id,
            tenant_id: tenant_key,
        }
    }

    /// URL of the demo protected API (`GET`), e.g. `http://127.0.0.1:12345/api/hello`.
    ///
    /// It accepts access tokens for [`Emulator::DEMO_API_SCOPE`] and requires the
    /// [`Emulator::DEMO_API_ROLE`] role: `401` with a `WWW-Authenticate: Bearer …`
    /// challenge when the token is missing, invalid, expired or revoked; `403`
    /// with a Graph-shaped error body when the role is missing; else `200`
    /// `{"message":"hello from the demo API","appid":"…","tid":"…","roles":[…]}`
    /// (`tid`: the tenant the token was issued in).
    pub fn demo_api_url(&self) -> String {
        format!("{}/api/hello", self.authority_host())
    }

    /// Sets `expires_in` / `ext_expires_in` (whole seconds) and the `exp` of
    /// tokens issued from now on. Default: 3599 s.
    pub fn set_token_lifetime(&self, expires_in: Duration) {
        self.inner.shared.lock().issuance.lifetime = expires_in;
    }

    /// Sets the `refresh_in` field of token responses (whole seconds); `None`
    /// (the default) omits it.
    pub fn set_refresh_in(&self, refresh_in: Option<Duration>) {
        self.inner.shared.lock().refresh_in = refresh_in;
    }

    /// Sends `expires_in`, `ext_expires_in` and `refresh_in` as JSON strings
    /// (`"3599"`), as some Microsoft endpoints do.
    pub fn set_numbers_as_strings(&self, yes: bool) {
        self.inner.shared.lock().numbers_as_strings = yes;
    }

    /// Delays every answer of the token endpoint and of the managed identity
    /// endpoints by `latency` (with `tokio::time::sleep`, so a paused test
    /// clock applies). Answers of the rate limit
    /// ([`Emulator::set_token_rate_limit`]) are not delayed.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.shared.lock().latency = latency;
    }

    /// Queues a fault: each token request takes the oldest queued fault, if
    /// any, and answers with it instead of processing the request.
    pub fn push_fault(&self, fault: Fault) {
        self.inner.shared.lock().faults.push_back(fault);
    }

    /// Number of `POST`s received by token endpoints (of any tenant, faults included).
    pub fn token_requests(&self) -> usize {
        self.inner.shared.lock().token_requests
    }

    /// Number of requests received by the demo API.
    pub fn api_requests(&self) -> usize {
        self.inner.shared.lock().api_requests
    }

    /// The decoded form fields of the latest token request, in order.
    pub fn last_token_request(&self) -> Option<Vec<(String, String)>> {
        self.inner.shared.lock().last_token_request.clone()
    }

    /// The latest token request (`POST`) as received: headers (such as the
    /// telemetry headers `x-client-SKU`, `x-client-Ver`, `x-client-OS`,
    /// `User-Agent` and `client-request-id`), query, form, and the status it
    /// was answered with. Set once the answer is decided.
    pub fn last_token_http_request(&self) -> Option<RecordedRequest> {
        self.inner.shared.lock().token_log.last().cloned()
    }

    /// Revokes every token issued so far: the demo API answers them with
    /// `401` `invalid_token`. Tokens issued afterwards are valid.
    pub fn revoke_issued_tokens(&self) {
        let mut st = self.inner.shared.lock();
        st.revoked_below = st.issuance.next_seq;
    }

    /// Deletes a client secret of a registered app, as deleting it under the app's
    /// "Certificates & secrets" does: from now on presenting it is answered with
    /// `401 invalid_client` `AADSTS7000215`. The app's other credentials stay valid, so a
    /// test can rotate a secret (register the old and the new one, then delete the old).
    ///
    /// # Panics
    ///
    /// If `app` is not registered in this emulator, or has no such secret.
    pub fn remove_secret(&self, app: &RegisteredApp, secret: &str) {
        let mut st = self.inner.shared.lock();
        let record = registered(&mut st, app, "remove_secret");
        let before = record.secrets.len();
        record.secrets.retain(|s| s.value != secret);
        assert!(
            record.secrets.len() < before,
            "entra-emulator: remove_secret: app '{}' has no such secret",
            app.client_id
        );
    }

    /// Deletes a certificate credential (DER, as given to
    /// [`App::with_certificate`]) of a registered app: from now on assertions signed with its
    /// key are answered with `401 invalid_client` `AADSTS700027` (key not found).
    ///
    /// # Panics
    ///
    /// If `app` is not registered in this emulator, `der` is not a certificate, or the app does
    /// not have it.
    pub fn remove_certificate(&self, app: &RegisteredApp, der: &[u8]) {
        let info = cert::parse_certificate(der)
            .unwrap_or_else(|e| panic!("entra-emulator: remove_certificate: {e}"));
        let mut st = self.inner.shared.lock();
        let record = registered(&mut st, app, "remove_certificate");
        let before = record.certificates.len();
        record.certificates.retain(|c| c.x5t_s256 != info.x5t_s256);
        assert!(
            record.certificates.len() < before,
            "entra-emulator: remove_certificate: app '{}' has no such certificate",
            app.client_id
        );
    }

    /// Registers (or redefines) a resource API that tokens can be requested
    /// for, with scope `{app_id_uri}/.default`, defining the app roles `roles`.
    pub fn register_api(&self, app_id_uri: &str, roles: &[&str]) {
        self.inner
            .shared
            .lock()
            .directory
            .register_resource(app_id_uri, roles);
    }

    /// Trusts `issuer` for federated identity credentials, with its public
    /// keys `jwks` (`{"keys":[…]}`, RSA JWKs; `kid` selects the key). Calling
    /// it again for the same issuer replaces the keys.
    pub fn add_trusted_issuer_jwks(&self, issuer: &str, jwks: serde_json::Value) {
        self.inner
            .shared
            .lock()
            .trusted_issuers
            .insert(issuer.to_owned(), jwks);
    }

    /// Continuous access evaluation: a critical event (say, the app's
    /// credentials were reset) revokes every token issued so far.
    ///
    /// Afterwards the demo API answers CAE-capable tokens (issued for a
    /// request whose `claims` asked for `xms_cc` `cp1`) with `401` and a claims
    /// challenge: `WWW-Authenticate: Bearer realm="", authorization_uri="…",
    /// error="insufficient_claims", claims="<base64 of
    /// {"access_token":{"nbf":{"essential":true,"value":"<unix secs>"}}}>"`;
    /// other revoked tokens get a plain `invalid_token`. Tokens issued after
    /// the call are accepted.
    pub fn cae_revoke(&self) {
        let mut st = self.inner.shared.lock();
        st.cae_revoked_below = st.issuance.next_seq;
        st.cae_nbf = util::unix_now();
    }

    /// The `claims` parameter of the latest token request, parsed as JSON
    /// (`None` if it had none, or it was not a JSON object).
    pub fn last_token_request_claims(&self) -> Option<serde_json::Value> {
        self.inner.shared.lock().last_token_request_claims.clone()
    }

    /// The JWKS (`{"keys":[…]}`) with the key access tokens are signed with,
    /// as served at `{authority_host}/{tenant}/discovery/v2.0/keys`.
    pub fn signing_jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [jwt::emulator_key().jwk()] })
    }
}

/// The record of a registered app, for the controls that change its credentials.
fn registered<'a>(state: &'a mut State, app: &RegisteredApp, control: &str) -> &'a mut AppRecord {
    state
        .directory
        .app_mut(&app.client_id)
        .filter(|record| record.home_tenant == app.tenant_id)
        .unwrap_or_else(|| {
            panic!(
                "entra-emulator: {control}: app '{}' is not registered in tenant '{}'",
                app.client_id, app.tenant_id
            )
        })
}
