//! The directory: tenants (named by GUID or by domain), app registrations,
//! the service principals that make an app present in a tenant, and the
//! resource APIs tokens are issued for.
//!
//! An app registration lives in its home tenant; a multi-tenant app is present
//! in a customer tenant once a service principal for it exists there (admin
//! consent creates one, with the app's application permissions granted).

use std::collections::HashMap;

use crate::app::{App, FederatedCredential, Secret};
use crate::cert::CertInfo;
use crate::rate_limit::Admission;
use crate::util::guid;

#[derive(Default)]
pub(crate) struct Directory {
    /// Tenants by ID (a lowercase GUID).
    tenants: HashMap<String, Tenant>,
    /// Tenant IDs by domain name (lowercase), e.g. `contoso.onmicrosoft.com`.
    domains: HashMap<String, String>,
    /// App registrations by client ID (lowercase), whatever their home tenant.
    apps: HashMap<String, AppRecord>,
    /// Resources (APIs) by application ID URI (lowercase), known in every tenant.
    resources: HashMap<String, Resource>,
}

pub(crate) struct Tenant {
    /// The apps present in this tenant: their service principals (enterprise
    /// applications) by client ID.
    service_principals: HashMap<String, ServicePrincipal>,
    /// Token requests addressed to this tenant's token endpoint.
    pub(crate) token_requests: usize,
    /// This tenant's token endpoint rate limit and per-second counts.
    pub(crate) admission: Admission,
}

/// An app's presence in one tenant.
pub(crate) struct ServicePrincipal {
    /// Its object ID: the `oid` and `sub` of the tokens it gets there.
    pub(crate) object_id: String,
    /// The application permissions (app roles) granted to it in this tenant.
    pub(crate) roles: Vec<String>,
}

/// An app registration.
pub(crate) struct AppRecord {
    pub(crate) home_tenant: String,
    /// Whether other tenants may consent to it (`AzureADMultipleOrgs`).
    pub(crate) multi_tenant: bool,
    pub(crate) display_name: String,
    pub(crate) secrets: Vec<Secret>,
    /// The application permissions it asks for (admin consent grants these).
    pub(crate) roles: Vec<String>,
    pub(crate) certificates: Vec<CertInfo>,
    pub(crate) trusted_subjects: Vec<String>,
    pub(crate) federated: Vec<FederatedCredential>,
}

pub(crate) struct Resource {
    /// The application ID URI as registered (the `aud` of its tokens).
    pub(crate) uri: String,
    /// App roles (application permissions) the resource defines.
    pub(crate) roles: Vec<String>,
}

/// Why an app gets no token in a tenant, as Entra tells the cases apart for
/// the client credentials grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Absent {
    /// The tenant has neither the registration nor a service principal for
    /// it: an unknown client ID, a single-tenant app of another tenant, or a
    /// multi-tenant app nobody consented to there (`AADSTS700016`).
    NotInDirectory,
    /// The home tenant has the registration but its service principal was
    /// deleted or never created (`AADSTS7000229`).
    NoServicePrincipal,
}

impl Directory {
    pub(crate) fn add_tenant(&mut self, tenant_id: &str) {
        self.tenants.insert(
            tenant_id.to_ascii_lowercase(),
            Tenant {
                service_principals: HashMap::new(),
                token_requests: 0,
                admission: Admission::new(),
            },
        );
    }

    /// Makes `domain` a name of `tenant_id`; `Err` says why not.
    pub(crate) fn add_domain(&mut self, tenant_id: &str, domain: &str) -> Result<(), String> {
        let domain = domain.to_ascii_lowercase();
        if !domain.contains('.') || uuid::Uuid::parse_str(&domain).is_ok() {
            return Err(format!(
                "'{domain}' is not a domain name (such as contoso.onmicrosoft.com)"
            ));
        }
        let id = self
            .resolve(tenant_id)
            .ok_or_else(|| format!("unknown tenant '{tenant_id}'"))?
            .to_owned();
        match self.domains.get(&domain) {
            Some(owner) if *owner != id => Err(format!(
                "the domain '{domain}' already names tenant '{owner}'"
            )),
            _ => {
                self.domains.insert(domain, id);
                Ok(())
            }
        }
    }

    /// The ID of the tenant `name` names: its GUID or one of its domains, in any case.
    pub(crate) fn resolve(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        match self.tenants.get_key_value(&name) {
            Some((id, _)) => Some(id),
            None => self.domains.get(&name).map(String::as_str),
        }
    }

    /// Whether `tenant_id` is the ID (exactly: a lowercase GUID) of a tenant.
    pub(crate) fn has_tenant(&self, tenant_id: &str) -> bool {
        self.tenants.contains_key(tenant_id)
    }

    pub(crate) fn tenant_mut(&mut self, tenant_id: &str) -> Option<&mut Tenant> {
        self.tenants.get_mut(tenant_id)
    }

    pub(crate) fn tenants_mut(&mut self) -> impl Iterator<Item = &mut Tenant> {
        self.tenants.values_mut()
    }

    /// Registers `app` in `tenant_id` under `client_id`, with a service
    /// principal there holding admin consent for the app's roles.
    pub(crate) fn register(&mut self, tenant_id: &str, client_id: &str, app: App) {
        let roles = app.roles.clone();
        self.apps.insert(
            client_id.to_owned(),
            AppRecord {
                home_tenant: tenant_id.to_owned(),
                multi_tenant: app.multi_tenant,
                display_name: app.display_name,
                secrets: app.secrets,
                roles: app.roles,
                certificates: app.certificates,
                trusted_subjects: app.trusted_subjects,
                federated: app.federated,
            },
        );
        self.set_service_principal(tenant_id, client_id, roles);
    }

    pub(crate) fn app(&self, client_id: &str) -> Option<&AppRecord> {
        self.apps.get(&client_id.to_ascii_lowercase())
    }

    pub(crate) fn app_mut(&mut self, client_id: &str) -> Option<&mut AppRecord> {
        self.apps.get_mut(&client_id.to_ascii_lowercase())
    }

    /// Creates (or replaces) the service principal of `client_id` in
    /// `tenant_id` with `roles` granted, keeping its object ID if it had one.
    pub(crate) fn set_service_principal(
        &mut self,
        tenant_id: &str,
        client_id: &str,
        roles: Vec<String>,
    ) {
        if let Some(tenant) = self.tenants.get_mut(tenant_id) {
            tenant
                .service_principals
                .entry(client_id.to_ascii_lowercase())
                .and_modify(|sp| sp.roles.clone_from(&roles))
                .or_insert_with(|| ServicePrincipal {
                    object_id: guid(),
                    roles,
                });
        }
    }

    /// Deletes the service principal of `client_id` in `tenant_id`; `false`
    /// if there was none.
    pub(crate) fn remove_service_principal(&mut self, tenant_id: &str, client_id: &str) -> bool {
        self.tenants.get_mut(tenant_id).is_some_and(|t| {
            t.service_principals
                .remove(&client_id.to_ascii_lowercase())
                .is_some()
        })
    }

    /// The registration of `client_id` and its service principal in
    /// `tenant_id`, or why the app is absent there.
    pub(crate) fn client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<(&AppRecord, &ServicePrincipal), Absent> {
        let app = self.app(client_id).ok_or(Absent::NotInDirectory)?;
        let sp = self
            .tenants
            .get(tenant_id)
            .and_then(|t| t.service_principals.get(&client_id.to_ascii_lowercase()));
        match sp {
            Some(sp) => Ok((app, sp)),
            None if app.home_tenant == tenant_id => Err(Absent::NoServicePrincipal),
            None => Err(Absent::NotInDirectory),
        }
    }

    /// Registers (or redefines) a resource API with the app roles it defines.
    pub(crate) fn register_resource(&mut self, uri: &str, roles: &[&str]) {
        let uri = uri.trim_end_matches('/');
        self.resources.insert(
            uri.to_ascii_lowercase(),
            Resource {
                uri: uri.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            },
        );
    }

    /// The resource whose application ID URI is `uri` (any case, trailing `/` ignored).
    pub(crate) fn resource(&self, uri: &str) -> Option<&Resource> {
        self.resources
            .get(&uri.trim_end_matches('/').to_ascii_lowercase())
    }
}
