//! Which other tenants a credential may get tokens for: the allow-list of
//! `additionally_allowed_tenants` and `AZURE_ADDITIONALLY_ALLOWED_TENANTS`, the one check of a
//! tenant asked for, and the check of a token's `tid` against it.
//!
//! A tenant is named by its GUID or by a domain (`contoso.onmicrosoft.com`), compared without
//! regard to ASCII case. Only Entra knows which domain names which GUID, so a domain and its GUID
//! are two names here: the allow-list must hold the name requests use, and a token's `tid`
//! (always the GUID) is checked only against a tenant asked for by GUID.

use serde::Deserialize;
use url::Url;

use crate::authority::check_tenant_id;
use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// The setting a refusal names, for a credential that has an allow-list.
pub(crate) const ALLOW_LIST_SETTING: &str = "`additionally_allowed_tenants` on the credential's builder, or the environment variable AZURE_ADDITIONALLY_ALLOWED_TENANTS";

/// The tenants a credential may serve beside its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowedTenants {
    /// `"*"` was listed: any tenant.
    any: bool,
    /// The tenants listed, as given.
    listed: Vec<String>,
}

impl AllowedTenants {
    /// The tenants in `tenants`; `"*"` allows any. Blank entries are skipped.
    pub(crate) fn new<I>(tenants: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut allowed = AllowedTenants::default();
        for tenant in tenants {
            let tenant: String = tenant.into();
            let tenant = tenant.trim();
            match tenant {
                "" => {}
                "*" => allowed.any = true,
                _ => allowed.listed.push(tenant.to_owned()),
            }
        }
        allowed
    }

    /// The list in `AZURE_ADDITIONALLY_ALLOWED_TENANTS`: names separated by `;` (as the Azure
    /// SDKs read it) or `,`.
    pub(crate) fn from_variable(value: &str) -> Self {
        Self::new(value.split([';', ',']))
    }

    /// Checks the listed names: each must be a tenant id or domain.
    pub(crate) fn check(&self) -> Result<(), TokenError> {
        for tenant in &self.listed {
            check_tenant_id(tenant).map_err(|e| {
                TokenError::configuration(format!(
                    "additionally allowed tenants: {} (in {ALLOW_LIST_SETTING})",
                    e.message()
                ))
            })?;
        }
        Ok(())
    }

    /// The tenant a request for `requested` goes to: `None` for the home tenant (`requested`
    /// absent, or the home tenant's own name), else `requested` when the list allows it.
    pub(crate) fn resolve<'a>(
        &self,
        home: &str,
        requested: Option<&'a str>,
    ) -> Result<Option<&'a str>, TokenError> {
        let Some(tenant) = requested else {
            return Ok(None);
        };
        check_requested(tenant)?;
        if tenant.eq_ignore_ascii_case(home) {
            return Ok(None);
        }
        if self.any || self.listed.iter().any(|t| t.eq_ignore_ascii_case(tenant)) {
            return Ok(Some(tenant));
        }
        Err(TokenError::new(
            TokenErrorKind::TenantNotAllowed,
            format!(
                "a token was asked for the tenant {tenant:?}, which is not the credential's tenant {home:?} nor among its additionally allowed tenants; add it (or \"*\" for any) to {ALLOW_LIST_SETTING}"
            ),
        ))
    }
}

/// Checks the shape of a tenant a request names: a GUID or a domain, not a multi-tenant alias.
pub(crate) fn check_requested(tenant: &str) -> Result<(), TokenError> {
    check_tenant_id(tenant).map_err(|e| {
        TokenError::new(
            TokenErrorKind::TenantNotAllowed,
            format!("the tenant asked for is refused: {}", e.message()),
        )
    })
}

/// The refusal of a credential that serves only its own tenant.
pub(crate) fn only_own_tenant(credential: &str, tenant: &str) -> TokenError {
    TokenError::new(
        TokenErrorKind::TenantNotAllowed,
        format!(
            "a token was asked for the tenant {tenant:?}, and {credential} serves only its own tenant; use a credential that supports other tenants (a client secret, certificate, assertion or workload identity credential with `additionally_allowed_tenants`) or a provider built for that tenant's own credential"
        ),
    )
}

/// Entra's answer for a request that named `tenant`, retold: a tenant that has not admitted
/// the app is a [`ConsentRequired`](TokenErrorKind::ConsentRequired) error with its
/// admin-consent link on the authority host `host`; an unknown tenant says so, without a link.
pub(crate) fn explain_refusal(
    error: TokenError,
    tenant: &str,
    host: &Url,
    client_id: &str,
) -> TokenError {
    let Some(codes) = error.entra().map(|e| e.codes().to_vec()) else {
        return error;
    };
    if codes.iter().any(|c| matches!(c, 65001 | 700016 | 7000229)) {
        let mut url = host.clone();
        match url.path_segments_mut() {
            Ok(mut path) => {
                path.pop_if_empty().extend([tenant, "adminconsent"]);
            }
            Err(()) => return error,
        }
        url.query_pairs_mut().append_pair("client_id", client_id);
        let message = format!(
            "the tenant {tenant} has not consented to the app {client_id}: an administrator of that tenant grants it at {url}"
        );
        return error.for_tenant(TokenErrorKind::ConsentRequired, message, Some(url.into()));
    }
    if codes.contains(&90002) {
        let kind = error.kind();
        let message = format!(
            "the tenant {tenant} was not found on this authority host: check the tenant id or domain the request named"
        );
        return error.for_tenant(kind, message, None);
    }
    error
}

/// Whether `tenant` is a GUID (`8-4-4-4-12` hex digits).
pub(crate) fn is_guid(tenant: &str) -> bool {
    let groups: Vec<&str> = tenant.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The claim that names the tenant a token was issued in.
#[derive(Deserialize)]
struct TenantClaim {
    tid: Option<String>,
}

/// Checks that `token`, asked for `tenant`, was issued there: when `tenant` is a GUID and the
/// token a JWT with a `tid`, they must match. A domain cannot be compared with `tid` (the
/// GUID) without asking Entra; a token that is not a JWT is the API's to judge.
pub(crate) fn check_issued_in(tenant: &str, token: &AccessToken) -> Result<(), TokenError> {
    if !is_guid(tenant) {
        return Ok(());
    }
    let Some(TenantClaim { tid: Some(tid) }) = crate::jwt::claims(token.secret()) else {
        return Ok(());
    };
    if tid.eq_ignore_ascii_case(tenant) {
        return Ok(());
    }
    Err(TokenError::invalid_response(format!(
        "a token was asked for the tenant {tenant} and its `tid` claim names the tenant {tid}; it was not used"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "11111111-1111-1111-1111-111111111111";
    const OTHER: &str = "22222222-2222-2222-2222-222222222222";

    #[test]
    fn home_and_listed_tenants_pass_others_are_refused_naming_the_setting() {
        let allowed = AllowedTenants::new([OTHER, "fabrikam.onmicrosoft.com"]);
        assert_eq!(allowed.resolve(HOME, None).unwrap(), None);
        assert_eq!(
            allowed.resolve(HOME, Some(&HOME.to_uppercase())).unwrap(),
            None
        );
        assert_eq!(allowed.resolve(HOME, Some(OTHER)).unwrap(), Some(OTHER));
        assert_eq!(
            allowed
                .resolve(HOME, Some("FABRIKAM.onmicrosoft.com"))
                .unwrap(),
            Some("FABRIKAM.onmicrosoft.com")
        );
        let e = allowed
            .resolve(HOME, Some("contoso.onmicrosoft.com"))
            .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::TenantNotAllowed);
        assert!(
            e.message().contains("AZURE_ADDITIONALLY_ALLOWED_TENANTS"),
            "{e}"
        );
        assert!(e.message().contains("additionally_allowed_tenants"), "{e}");
        // Nothing allowed by default.
        assert!(
            AllowedTenants::default()
                .resolve(HOME, Some(OTHER))
                .is_err()
        );
    }

    #[test]
    fn a_star_allows_any_well_formed_tenant_and_nothing_malformed() {
        let any = AllowedTenants::from_variable(" ; * ;");
        assert_eq!(any.resolve(HOME, Some(OTHER)).unwrap(), Some(OTHER));
        for bad in ["common", "organizations", "a/b", "", "x y", "../x"] {
            let e = any.resolve(HOME, Some(bad)).unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::TenantNotAllowed, "{bad}");
        }
        assert!(AllowedTenants::new(["a/b"]).check().is_err());
        assert_eq!(
            AllowedTenants::from_variable(&format!("{OTHER},x.onmicrosoft.com")),
            AllowedTenants::new([OTHER, "x.onmicrosoft.com"])
        );
    }

    #[test]
    fn a_token_from_another_tenant_is_refused_when_asked_by_guid() {
        use base64::Engine;
        let jwt = |tid: &str| {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"tid":"{tid}"}}"#));
            AccessToken::new(
                format!("eyJhbGciOiJub25lIn0.{payload}.c2ln"),
                std::time::Duration::from_secs(3600),
            )
            .unwrap()
        };
        assert!(check_issued_in(OTHER, &jwt(OTHER)).is_ok());
        assert!(check_issued_in(&OTHER.to_uppercase(), &jwt(OTHER)).is_ok());
        let e = check_issued_in(OTHER, &jwt(HOME)).unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::InvalidResponse);
        // A domain is not compared with the GUID in `tid`.
        assert!(check_issued_in("contoso.onmicrosoft.com", &jwt(HOME)).is_ok());
        assert!(is_guid(HOME) && !is_guid("contoso.onmicrosoft.com") && !is_guid("1-2-3-4-5"));
    }
}
