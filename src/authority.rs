//! Authority hosts, tenant and client ids, and the token endpoint URL.

use url::Url;

use crate::cloud::Cloud;
use crate::error::TokenError;
use crate::host::is_loopback;

/// Checks an authority host: an absolute `https` URL, or `http` to a loopback address (the
/// emulator), with no query or fragment.
pub(crate) fn parse_authority_host(host: &str) -> Result<Url, TokenError> {
    let url = Url::parse(host.trim_end_matches('/')).map_err(|e| {
        TokenError::configuration(format!(
            "the authority host {host:?} is not a URL ({e}); use e.g. {}",
            Cloud::AZURE_PUBLIC.authority_host()
        ))
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(TokenError::configuration(format!(
                "the authority host {host:?} uses plain http; secrets are only sent over https (plain http is allowed for loopback addresses, e.g. a local emulator)"
            )));
        }
        other => {
            return Err(TokenError::configuration(format!(
                "the authority host {host:?} has scheme {other:?}; use https"
            )));
        }
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(TokenError::configuration(format!(
            "the authority host {host:?} must be a scheme and host with no query, e.g. {}",
            Cloud::AZURE_PUBLIC.authority_host()
        )));
    }
    Ok(url)
}

/// Checks a tenant id: a GUID or a verified domain (`contoso.onmicrosoft.com`). The
/// multi-tenant aliases are refused: client credentials need the one tenant the app acts in.
pub(crate) fn check_tenant_id(tenant_id: &str) -> Result<(), TokenError> {
    if tenant_id.is_empty() {
        return Err(TokenError::configuration(
            "the tenant id is empty; set it to the Directory (tenant) ID shown on the app registration's Overview page",
        ));
    }
    if ["common", "organizations", "consumers"]
        .iter()
        .any(|a| tenant_id.eq_ignore_ascii_case(a))
    {
        return Err(TokenError::configuration(format!(
            "the tenant id {tenant_id:?} is a multi-tenant alias; client credentials need a specific tenant: use its Directory (tenant) ID or domain"
        )));
    }
    if tenant_id.starts_with('.')
        || !tenant_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(TokenError::configuration(format!(
            "the tenant id {tenant_id:?} has characters other than letters, digits, '-' and '.'; use the Directory (tenant) ID (a GUID) or a domain such as contoso.onmicrosoft.com"
        )));
    }
    Ok(())
}

/// Checks a client id: not empty, no whitespace or control characters.
pub(crate) fn check_client_id(client_id: &str) -> Result<(), TokenError> {
    if client_id.is_empty() || !client_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::configuration(format!(
            "the client id {client_id:?} is empty or has spaces or control characters; use the Application (client) ID shown on the app registration's Overview page"
        )));
    }
    Ok(())
}

/// `{host}/{tenant}/oauth2/v2.0/token`.
pub(crate) fn token_url(host: &Url, tenant_id: &str) -> Result<Url, TokenError> {
    check_tenant_id(tenant_id)?;
    let mut url = host.clone();
    url.path_segments_mut()
        .map_err(|_| TokenError::configuration("the authority host cannot have a path"))?
        .pop_if_empty()
        .extend([tenant_id, "oauth2", "v2.0", "token"]);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenErrorKind;

    #[test]
    fn builds_token_urls_for_clouds_and_emulators() {
        let host = parse_authority_host(Cloud::AZURE_PUBLIC.authority_host()).unwrap();
        assert_eq!(
            token_url(&host, "contoso.onmicrosoft.com")
                .unwrap()
                .as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let host = parse_authority_host("https://login.chinacloudapi.cn/").unwrap();
        assert_eq!(
            token_url(&host, "72f988bf-86f1-41af-91ab-2d7cd011db47")
                .unwrap()
                .as_str(),
            "https://login.chinacloudapi.cn/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        for loopback in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(parse_authority_host(loopback).is_ok(), "{loopback}");
        }
    }

    #[test]
    fn refuses_insecure_or_malformed_hosts_and_tenants() {
        for bad in [
            "http://login.example.com",
            "ftp://x",
            "not a url",
            "https://h/?q=1",
        ] {
            let e = parse_authority_host(bad).unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::Configuration, "{bad}");
        }
        assert!(
            parse_authority_host("http://login.example.com")
                .unwrap_err()
                .to_string()
                .contains("plain http")
        );
        for bad in ["", "common", "a/b", "a b", "../x", ".."] {
            assert!(check_tenant_id(bad).is_err(), "{bad}");
        }
        assert!(check_client_id("").is_err());
        assert!(check_client_id("a b").is_err());
    }
}
