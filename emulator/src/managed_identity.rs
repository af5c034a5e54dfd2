//! Managed identities assigned to the emulated Azure host, and the controls
//! of the endpoints that issue their tokens (see [`crate::mi_endpoint`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Emulator;
use crate::fault::Fault;
use crate::record::RecordedRequest;
use crate::token_signer::v2_issuer;
use crate::util::guid;

/// The subscription the emulated resources live in.
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-00000000e4a1";
/// The emulated host (the resource a system-assigned identity belongs to).
const HOST_RESOURCE_ID: &str = "/subscriptions/00000000-0000-0000-0000-00000000e4a1/resourceGroups/entra-emulator/providers/Microsoft.Compute/virtualMachines/emulated-host";

/// A managed identity to assign to the emulated host with
/// [`Emulator::assign_managed_identity`].
///
/// ```
/// use entra_emulator::{Emulator, ManagedIdentity};
///
/// let system = ManagedIdentity::system_assigned().with_roles(&[Emulator::DEMO_API_ROLE]);
/// let worker = ManagedIdentity::user_assigned("worker");
/// # let _ = (system, worker);
/// ```
#[derive(Clone, Debug)]
pub struct ManagedIdentity {
    name: Option<String>,
    roles: Vec<String>,
}

impl ManagedIdentity {
    /// The host's system-assigned identity (a host has at most one).
    pub fn system_assigned() -> ManagedIdentity {
        ManagedIdentity {
            name: None,
            roles: Vec::new(),
        }
    }

    /// A user-assigned identity named `name` (the last segment of its
    /// Azure resource ID).
    pub fn user_assigned(name: &str) -> ManagedIdentity {
        ManagedIdentity {
            name: Some(name.to_owned()),
            roles: Vec::new(),
        }
    }

    /// Grants app roles (application permissions) through app role
    /// assignments; a token carries those the requested resource defines,
    /// as for [`App::with_roles`](crate::App::with_roles).
    pub fn with_roles(mut self, roles: &[&str]) -> ManagedIdentity {
        self.roles.extend(roles.iter().map(|r| (*r).to_owned()));
        self
    }
}

/// A managed identity assigned to the emulated host: the IDs a client
/// selects it by, and the issuer to trust it with as a federated credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignedIdentity {
    /// The client (application) ID: the `client_id` parameter, and the
    /// `appid` of its tokens.
    pub client_id: String,
    /// The object (principal) ID of its service principal: the `object_id`
    /// / `principal_id` parameter, and the `oid` and `sub` of its tokens.
    pub object_id: String,
    /// Its Azure resource ID: the `msi_res_id` / `mi_res_id` parameter of a
    /// user-assigned identity, and the `xms_mirid` of its tokens. For the
    /// system-assigned identity, the host's resource ID (it cannot be
    /// selected by it).
    pub resource_id: String,
    /// The tenant it lives in (the emulator's first tenant).
    pub tenant_id: String,
    /// The `iss` of its tokens for `api://AzureADTokenExchange` (and the
    /// sovereign clouds' variants): `{authority_host}/{tenant_id}/v2.0`.
    /// An app registration accepts such a token as its client assertion
    /// with [`App::with_federated_credential`](crate::App::with_federated_credential)`(issuer, object_id, "")`.
    pub issuer: String,
    /// Whether this is the host's system-assigned identity.
    pub system_assigned: bool,
}

/// A managed identity as the endpoints see it.
#[derive(Clone, Debug)]
pub(crate) struct IdentityRecord {
    pub(crate) assigned: AssignedIdentity,
    pub(crate) display_name: String,
    pub(crate) roles: Vec<String>,
}

/// How a request names the identity it wants.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Selector<'a> {
    /// No ID: the system-assigned identity, else the only user-assigned one.
    Default,
    ClientId(&'a str),
    ObjectId(&'a str),
    /// A user-assigned identity's resource ID (case-insensitive).
    ResourceId(&'a str),
}

/// Why no identity was selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotSelected {
    NotFound,
    /// No ID given, no system-assigned identity, several user-assigned ones.
    Ambiguous,
}

/// Picks the identity `selector` names, as IMDS does.
pub(crate) fn select<'a>(
    identities: &'a [IdentityRecord],
    selector: Selector<'_>,
) -> Result<&'a IdentityRecord, NotSelected> {
    let matches = |f: &dyn Fn(&AssignedIdentity) -> bool| {
        identities
            .iter()
            .find(|i| f(&i.assigned))
            .ok_or(NotSelected::NotFound)
    };
    match selector {
        Selector::Default => {
            if let Ok(system) = matches(&|a| a.system_assigned) {
                return Ok(system);
            }
            match identities {
                [] => Err(NotSelected::NotFound),
                [only] => Ok(only),
                _ => Err(NotSelected::Ambiguous),
            }
        }
        Selector::ClientId(id) => matches(&|a| a.client_id.eq_ignore_ascii_case(id)),
        Selector::ObjectId(id) => matches(&|a| a.object_id.eq_ignore_ascii_case(id)),
        Selector::ResourceId(id) => {
            matches(&|a| !a.system_assigned && a.resource_id.eq_ignore_ascii_case(id))
        }
    }
}

/// The secrets the managed identity endpoints expect, and the Azure Arc
/// challenge keys.
#[derive(Debug)]
pub(crate) struct MiSecrets {
    /// `IDENTITY_HEADER` of App Service / Functions / Container Apps.
    pub(crate) app_service: String,
    /// `MSI_SECRET` of Azure Machine Learning.
    pub(crate) azure_ml: String,
    /// `IDENTITY_HEADER` of Service Fabric.
    pub(crate) service_fabric: String,
    /// Where Arc key files are written; `None` until set or first needed.
    pub(crate) arc_dir: Option<PathBuf>,
    /// Whether `arc_dir` is the emulator's own temporary directory (removed on drop).
    pub(crate) arc_dir_is_own: bool,
    /// Arc keys issued and not yet presented.
    pub(crate) arc_keys: HashSet<String>,
}

impl MiSecrets {
    pub(crate) fn new() -> MiSecrets {
        MiSecrets {
            app_service: guid(),
            azure_ml: guid(),
            service_fabric: guid(),
            arc_dir: None,
            arc_dir_is_own: false,
            arc_keys: HashSet::new(),
        }
    }

    /// The Arc key directory, choosing the emulator's own temporary one if
    /// none was set.
    pub(crate) fn arc_dir(&mut self) -> PathBuf {
        self.arc_dir
            .get_or_insert_with(|| {
                self.arc_dir_is_own = true;
                std::env::temp_dir().join(format!("entra-emulator-arc-{}", guid()))
            })
            .clone()
    }
}

impl Emulator {
    /// Assigns a managed identity to the emulated host, served by every
    /// managed identity endpoint ([`Emulator::imds_token_url`],
    /// [`Emulator::app_service_identity_endpoint`],
    /// [`Emulator::arc_identity_endpoint`],
    /// [`Emulator::cloud_shell_msi_endpoint`],
    /// [`Emulator::service_fabric_identity_endpoint`],
    /// [`Emulator::azure_ml_msi_endpoint`]). It lives in the
    /// emulator's first tenant, with fresh IDs.
    ///
    /// Assigning a second system-assigned identity replaces the first.
    pub fn assign_managed_identity(&self, identity: ManagedIdentity) -> AssignedIdentity {
        let tenant_id = self.tenant_id();
        let system_assigned = identity.name.is_none();
        let (display_name, resource_id) = match &identity.name {
            None => ("emulated-host".to_owned(), HOST_RESOURCE_ID.to_owned()),
            Some(name) => (
                name.clone(),
                format!(
                    "/subscriptions/{SUBSCRIPTION}/resourceGroups/entra-emulator/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
                ),
            ),
        };
        let assigned = AssignedIdentity {
            client_id: guid(),
            object_id: guid(),
            resource_id,
            issuer: v2_issuer(&self.authority_host(), &tenant_id),
            tenant_id,
            system_assigned,
        };
        let mut st = self.inner.shared.lock();
        if system_assigned {
            st.identities.retain(|i| !i.assigned.system_assigned);
        }
        st.identities.push(IdentityRecord {
            assigned: assigned.clone(),
            display_name,
            roles: identity.roles,
        });
        assigned
    }

    /// The IMDS host to use instead of `http://169.254.169.254`, as
    /// `AZURE_POD_IDENTITY_AUTHORITY_HOST` gives it (the authority host).
    pub fn imds_host(&self) -> String {
        self.authority_host()
    }

    /// IMDS's token URL, `{imds_host}/metadata/identity/oauth2/token`.
    ///
    /// `GET ?api-version=2018-02-01&resource=<resource>[&client_id=|object_id=|msi_res_id=]`
    /// with `Metadata: true`. It answers `200` with `access_token`,
    /// `client_id`, `expires_in`, `expires_on` (Unix seconds), `ext_expires_in`,
    /// `not_before`, `resource` and `token_type`, numbers as JSON strings
    /// (and `refresh_in` when [`Emulator::set_refresh_in`] is set). Errors
    /// are `{"error":…,"error_description":…}`: `400 invalid_request` when
    /// the `Metadata` header, `api-version` or `resource` is missing, for
    /// `Identity not found`, and when several user-assigned identities and
    /// no system-assigned one exist and none is named; `400 invalid_resource`
    /// (`AADSTS500011`) for an unknown resource, such as one ending in
    /// `/.default`.
    pub fn imds_token_url(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.authority_host())
    }

    /// `IDENTITY_ENDPOINT` of App Service, Azure Functions and Container Apps.
    ///
    /// `GET ?api-version=2019-08-01&resource=<resource>[&client_id=|principal_id=|mi_res_id=]`
    /// with `X-IDENTITY-HEADER: <`[`Emulator::app_service_identity_header`]`>`
    /// answers `200` with `access_token`, `expires_on` (Unix seconds as a
    /// string), `resource`, `token_type` and `client_id`. The older
    /// `api-version=2017-09-01` takes the header `secret` and `clientid`,
    /// and answers `expires_on` as a date (`06/20/2019 02:57:58 +00:00`).
    /// Errors are `{"statusCode":…,"message":…,"correlationId":…}`: `401`
    /// for a missing or wrong header (an emulator choice), `400` for a
    /// missing `resource` or unsupported `api-version`, `Unable to load the
    /// proper Managed Identity.` for an unknown identity, and `AADSTS500011`
    /// for an unknown resource.
    pub fn app_service_identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.authority_host())
    }

    /// `IDENTITY_HEADER` of App Service, Azure Functions and Container Apps
    /// (a fresh secret per emulator).
    pub fn app_service_identity_header(&self) -> String {
        self.inner.shared.lock().mi_secrets.app_service.clone()
    }

    /// `MSI_ENDPOINT` of Azure Machine Learning compute,
    /// `{authority_host}/azureml/msi/token`.
    ///
    /// `GET ?api-version=2017-09-01&resource=<resource>[&clientid=<client id>]`
    /// with `secret: <`[`Emulator::azure_ml_msi_secret`]`>` (`Metadata: true`
    /// is accepted, not required) answers `200` with `access_token`,
    /// `expires_on` (Unix seconds as a string), `resource`, `token_type` and
    /// `client_id`. `clientid` selects the identity; a client sends the
    /// compute's `DEFAULT_IDENTITY_CLIENT_ID`
    /// ([`Emulator::azure_ml_default_identity_client_id`]) for its default
    /// identity, and without it the default identity answers too. Errors
    /// are App Service's shape: `401` for a missing or wrong `secret`, `400`
    /// for another `api-version` (only 2017-09-01 is served), a missing
    /// `resource`, an unknown identity, or `AADSTS500011`.
    pub fn azure_ml_msi_endpoint(&self) -> String {
        format!("{}/azureml/msi/token", self.authority_host())
    }

    /// `MSI_SECRET` of Azure Machine Learning compute (a fresh secret per emulator).
    pub fn azure_ml_msi_secret(&self) -> String {
        self.inner.shared.lock().mi_secrets.azure_ml.clone()
    }

    /// `DEFAULT_IDENTITY_CLIENT_ID` of Azure Machine Learning compute: the
    /// client ID of the identity a request naming none gets (the
    /// system-assigned identity, else the only user-assigned one); `None`
    /// when there is no such identity.
    pub fn azure_ml_default_identity_client_id(&self) -> Option<String> {
        let st = self.inner.shared.lock();
        select(&st.identities, Selector::Default)
            .ok()
            .map(|i| i.assigned.client_id.clone())
    }

    /// `IDENTITY_ENDPOINT` of an Azure Arc-enabled server,
    /// `{authority_host}/arc/metadata/identity/oauth2/token`.
    ///
    /// `GET ?api-version=2019-11-01&resource=<resource>[&client_id=|object_id=|msi_res_id=]`
    /// with `Metadata: true`, answered as IMDS does, once the Arc challenge
    /// is passed: a request without `Authorization` (or with a key that was
    /// not issued, or was already used) is answered `401` with
    /// `WWW-Authenticate: Basic realm=<path>`, naming a fresh `<guid>.key`
    /// file the emulator wrote in [`Emulator::arc_key_directory`]; the retry
    /// with `Authorization: Basic <file contents>` is served. Each key is
    /// good for one request.
    pub fn arc_identity_endpoint(&self) -> String {
        format!(
            "{}/arc/metadata/identity/oauth2/token",
            self.authority_host()
        )
    }

    /// `IMDS_ENDPOINT` of an Azure Arc-enabled server (its presence beside
    /// `IDENTITY_ENDPOINT` selects Arc), `{authority_host}/arc`.
    pub fn arc_imds_endpoint(&self) -> String {
        format!("{}/arc", self.authority_host())
    }

    /// Sets the directory Arc challenge key files are written to (created
    /// when needed). A client reads keys only from the documented Arc
    /// directory (`/var/opt/azcmagent/tokens` on Linux), so a test points
    /// both at the same place. Default: a fresh directory under the system
    /// temporary directory, removed when the emulator stops.
    pub fn set_arc_key_directory(&self, dir: impl AsRef<Path>) {
        let mut st = self.inner.shared.lock();
        st.mi_secrets.arc_dir = Some(dir.as_ref().to_path_buf());
        st.mi_secrets.arc_dir_is_own = false;
    }

    /// The directory Arc challenge key files are written to.
    pub fn arc_key_directory(&self) -> PathBuf {
        self.inner.shared.lock().mi_secrets.arc_dir()
    }

    /// `MSI_ENDPOINT` of Azure Cloud Shell, `{authority_host}/cloudshell/oauth2/token`.
    ///
    /// `POST` with the form `resource=<resource>` and `Metadata: true`,
    /// answered as IMDS does. It serves only the default identity: a form
    /// naming one (`client_id`, `object_id`, `msi_res_id`) is answered `400`.
    pub fn cloud_shell_msi_endpoint(&self) -> String {
        format!("{}/cloudshell/oauth2/token", self.authority_host())
    }

    /// `IDENTITY_ENDPOINT` of Service Fabric,
    /// `{authority_host}/servicefabric/metadata/identity/oauth2/token`.
    ///
    /// Served over plain HTTP: the emulator does not emulate Service
    /// Fabric's TLS, whose server certificate a client pins by
    /// `IDENTITY_SERVER_THUMBPRINT`. `GET
    /// ?api-version=2019-07-01-preview&resource=<resource>[&principal_id=|mi_res_id=]`
    /// with `secret: <`[`Emulator::service_fabric_identity_header`]`>`
    /// answers `200` with `token_type`, `access_token`, `expires_on` (Unix
    /// seconds as a JSON number) and `resource`. Errors are
    /// `{"error":{"correlationId":…,"code":…,"message":…}}`: `401
    /// SecretHeaderNotFound` for a missing or wrong secret, `400` otherwise.
    pub fn service_fabric_identity_endpoint(&self) -> String {
        format!(
            "{}/servicefabric/metadata/identity/oauth2/token",
            self.authority_host()
        )
    }

    /// `IDENTITY_HEADER` of Service Fabric (a fresh secret per emulator).
    pub fn service_fabric_identity_header(&self) -> String {
        self.inner.shared.lock().mi_secrets.service_fabric.clone()
    }

    /// Queues a fault for the managed identity endpoints: each request to
    /// any of them takes the oldest queued fault, if any, and answers with
    /// it (after [`Emulator::set_latency`]) instead of processing the
    /// request. This queue is separate from [`Emulator::push_fault`]'s.
    ///
    /// Unless [`Fault::body`] is given, the body is the endpoint's error
    /// JSON: for IMDS, Arc and Cloud Shell `{"error":…,"error_description":…}`
    /// with `invalid_request` (4xx), `not_found` (404, "IMDS endpoint is
    /// updating"), `gone` (410, "IMDS is going through updates"),
    /// `too_many_requests` (429) or `server_error` (5xx); App Service's and
    /// Service Fabric's shapes otherwise.
    pub fn push_managed_identity_fault(&self, fault: Fault) {
        self.inner.shared.lock().mi_faults.push_back(fault);
    }

    /// Takes the managed identity endpoints down (`Some`): every request to
    /// any of them is answered with `fault` (after the queued faults of
    /// [`Emulator::push_managed_identity_fault`]) until this is called with
    /// `None`.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use entra_emulator::{Emulator, Fault};
    ///
    /// let emulator = Emulator::start().await;
    /// emulator.set_managed_identity_outage(Some(Fault::status(503)));
    /// // ...every managed identity request now fails with 503...
    /// emulator.set_managed_identity_outage(None);
    /// # }
    /// ```
    pub fn set_managed_identity_outage(&self, fault: Option<Fault>) {
        self.inner.shared.lock().mi_outage = fault;
    }

    /// Caches managed identity tokens as the platforms do (`Some`): the
    /// last token for an identity and resource is answered again, with the
    /// same expiry and `expires_in` counting down, while more than
    /// `renew_before` remains of its life; then a new one is signed. `None`
    /// (the default) signs a new token for every request.
    ///
    /// The cache ages on tokio's clock, so a test on a paused clock ages it
    /// by advancing that clock.
    pub fn set_managed_identity_token_cache(&self, renew_before: Option<Duration>) {
        let mut st = self.inner.shared.lock();
        st.mi_cache_renew_before = renew_before;
        st.mi_cache.clear();
    }

    /// Number of requests received by the managed identity endpoints
    /// (faults and Arc challenges included).
    pub fn managed_identity_requests(&self) -> usize {
        self.inner.shared.lock().mi_requests.len()
    }

    /// Every request the managed identity endpoints received, in order, with
    /// its headers, query, form and the status it was answered with.
    pub fn managed_identity_request_log(&self) -> Vec<RecordedRequest> {
        self.inner.shared.lock().mi_requests.clone()
    }
}
