//! [`Tenant`]: the request extension that names the customer tenant a request's token is for.

use std::fmt;
use std::sync::Arc;

/// The tenant a request's token is asked in: put it in the request's extensions, and
/// [`EntraAuth`](crate::EntraAuth), [`EntraAuthMiddleware`](crate::EntraAuthMiddleware) (as a
/// reqwest-middleware extension) and the tonic path take the token from the provider for that
/// tenant ([`TokenProvider::for_tenant`](crate::TokenProvider::for_tenant)) of the provider the
/// request's host picks. Requests without it get the credential's own tenant.
///
/// The tenant is a GUID or a domain, compared without regard to ASCII case; a domain and its
/// GUID are two tenants here (two providers, two token requests), as only Entra knows which
/// domain names which GUID. A malformed name, or a tenant the credential does not allow, fails
/// the request with a [`TenantNotAllowed`](crate::TokenErrorKind::TenantNotAllowed) error and
/// sends nothing.
///
/// Take the tenant only from authenticated input (the `tid` of a token you verified, the
/// signed-in customer's record), never from a raw header or query parameter: a caller who can
/// choose it can have your service act in another customer's directory.
///
/// ```
/// use tower_entra::Tenant;
///
/// let mut request = http::Request::new(());
/// request
///     .extensions_mut()
///     .insert(Tenant::new("contoso.onmicrosoft.com"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// The tenant `tenant` (a GUID or a domain such as `contoso.onmicrosoft.com`), kept in
    /// ASCII lower case. Checked when a request uses it.
    pub fn new(tenant: impl AsRef<str>) -> Self {
        Tenant(Arc::from(tenant.as_ref().trim().to_ascii_lowercase()))
    }

    /// The tenant's name, in ASCII lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` names the same tenant: the same handle (a clone) at once, else by name.
    pub(crate) fn same(&self, other: &Tenant) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }

    /// The handle's address: the same for its clones.
    pub(crate) fn address(&self) -> usize {
        Arc::as_ptr(&self.0).cast::<u8>() as usize
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tenant").field(&&*self.0).finish()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
