//! Several tenants: domain names, multi-tenant apps present in customer
//! tenants through consent, and per-tenant request counts.

use crate::directory::{Directory, Tenant};
use crate::record::RecordedRequest;
use crate::{Emulator, RegisteredApp};

impl Emulator {
    /// Gives the tenant `tenant_id` (its GUID, or a domain it already has)
    /// the domain name `domain` (such as `contoso.onmicrosoft.com`, any
    /// case): its token endpoint, OpenID configuration and the controls
    /// taking a tenant then answer to either name, as one tenant. Tokens
    /// always carry the GUID (`tid`, `iss`), as Entra's do.
    ///
    /// # Panics
    ///
    /// If `tenant_id` is not a tenant of this emulator, `domain` is not a
    /// domain name (no dot, or a GUID), or it already names another tenant.
    pub fn add_domain(&self, tenant_id: &str, domain: &str) {
        if let Err(why) = self
            .inner
            .shared
            .lock()
            .directory
            .add_domain(tenant_id, domain)
        {
            panic!("entra-emulator: add_domain: {why}");
        }
    }

    /// Admin consent, in `tenant` (GUID or domain), to the multi-tenant
    /// `app` ([`App::multi_tenant`](crate::App::multi_tenant)), as a
    /// tenant's administrator grants it at
    /// `/{tenant}/adminconsent?client_id=…`: a service principal for the app
    /// is created there, granted the application permissions the app asks
    /// for ([`App::with_roles`](crate::App::with_roles)). The app then gets
    /// tokens from that tenant's token endpoint with its own credentials:
    /// `tid` and `iss` name that tenant, `oid` / `sub` the service principal
    /// there, and the demo API accepts them. Consenting again grants the
    /// roles again (after [`Emulator::add_service_principal`], say).
    ///
    /// Without consent, the tenant's token endpoint answers the app as
    /// Entra does: `400 unauthorized_client` `AADSTS700016` ("Application
    /// with identifier '…' was not found in the directory '…'").
    ///
    /// # Panics
    ///
    /// If `tenant` is not a tenant of this emulator, `app` is not registered
    /// here, or `app` is single-tenant and `tenant` is not its home.
    pub fn grant_admin_consent(&self, app: &RegisteredApp, tenant: &str) {
        self.place_service_principal(app, tenant, true, "grant_admin_consent");
    }

    /// Makes `app` present in `tenant` (GUID or domain) without granting it
    /// any application permission: a service principal with no app role
    /// assignments, as when users of the tenant signed in to the app, or an
    /// administrator created its enterprise application but did not grant
    /// admin consent. Its tokens from that tenant carry no `roles`, and the
    /// demo API answers them `403`; this is how Entra's client credentials
    /// grant treats missing consent: it issues the token, without the roles
    /// (`AADSTS65001`, "the user or administrator has not consented", is an
    /// answer of the user sign-in flows). A service principal already there
    /// loses its roles.
    ///
    /// # Panics
    ///
    /// As [`Emulator::grant_admin_consent`].
    pub fn add_service_principal(&self, app: &RegisteredApp, tenant: &str) {
        self.place_service_principal(app, tenant, false, "add_service_principal");
    }

    /// Deletes the service principal (enterprise application) of `app` in
    /// `tenant` (GUID or domain), as removing the app from a customer
    /// tenant, or deleting it under "Enterprise applications", does. From
    /// then on that tenant's token endpoint answers the app with
    /// `400 unauthorized_client` `AADSTS700016` in a customer tenant, and
    /// with `401 invalid_client` `AADSTS7000229` ("The client application …
    /// is missing service principal in the tenant …") in its home tenant,
    /// whose registration remains.
    ///
    /// # Panics
    ///
    /// If `tenant` is not a tenant of this emulator, or `app` has no service
    /// principal there.
    pub fn remove_service_principal(&self, app: &RegisteredApp, tenant: &str) {
        let mut st = self.inner.shared.lock();
        let tenant_id = resolved(&st.directory, tenant, "remove_service_principal");
        assert!(
            st.directory
                .remove_service_principal(&tenant_id, &app.client_id),
            "entra-emulator: remove_service_principal: app '{}' has no service principal in tenant '{tenant}'",
            app.client_id
        );
    }

    /// Number of `POST`s received by the token endpoint of `tenant` (GUID or
    /// domain; requests by either name count), faults and throttled ones
    /// included, as [`Emulator::token_requests`] counts them for all tenants.
    ///
    /// # Panics
    ///
    /// If `tenant` names no tenant of this emulator.
    pub fn token_requests_to(&self, tenant: &str) -> usize {
        self.with_tenant(tenant, "token_requests_to", |t| t.token_requests)
    }

    /// Every token request (`POST`) as received, in the order they were
    /// answered: headers, form, the tenant addressed
    /// ([`RecordedRequest::tenant_id`]) and the status answered.
    pub fn token_request_log(&self) -> Vec<RecordedRequest> {
        self.inner.shared.lock().token_log.clone()
    }

    /// Runs `f` on the tenant `tenant` names (GUID or domain).
    ///
    /// # Panics
    ///
    /// If `tenant` names no tenant; the message names `control`.
    pub(crate) fn with_tenant<R>(
        &self,
        tenant: &str,
        control: &str,
        f: impl FnOnce(&mut Tenant) -> R,
    ) -> R {
        let mut st = self.inner.shared.lock();
        let tenant_id = resolved(&st.directory, tenant, control);
        match st.directory.tenant_mut(&tenant_id) {
            Some(t) => f(t),
            None => panic!("entra-emulator: {control}: unknown tenant '{tenant}'"),
        }
    }

    /// Creates or updates the service principal of `app` in `tenant`, with
    /// the app's roles granted or none.
    fn place_service_principal(
        &self,
        app: &RegisteredApp,
        tenant: &str,
        consented: bool,
        control: &str,
    ) {
        let mut st = self.inner.shared.lock();
        let tenant_id = resolved(&st.directory, tenant, control);
        let Some(record) = st.directory.app(&app.client_id) else {
            panic!(
                "entra-emulator: {control}: app '{}' is not registered in this emulator",
                app.client_id
            );
        };
        assert!(
            record.multi_tenant || record.home_tenant == tenant_id,
            "entra-emulator: {control}: app '{}' is single-tenant (home tenant '{}'); register it with App::multi_tenant() to add it to tenant '{tenant}'",
            app.client_id,
            record.home_tenant
        );
        let roles = if consented {
            record.roles.clone()
        } else {
            Vec::new()
        };
        st.directory
            .set_service_principal(&tenant_id, &app.client_id, roles);
    }
}

/// The ID of the tenant `tenant` names.
///
/// # Panics
///
/// If it names none; the message names `control`.
fn resolved(directory: &Directory, tenant: &str, control: &str) -> String {
    match directory.resolve(tenant) {
        Some(id) => id.to_owned(),
        None => panic!("entra-emulator: {control}: unknown tenant '{tenant}'"),
    }
}
