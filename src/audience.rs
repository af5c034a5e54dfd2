//! The hosts a token's audience serves: where a layer sends a provider's tokens when it is
//! given no allow-list.
//!
//! A `https://<host>/.default` scope's own host, plus, for well-known Microsoft resources
//! whose tokens are used on other hosts (an account, vault or namespace under a shared
//! suffix), the hosts each [cloud](crate::cloud::CLOUDS) lists for it. A scope whose hosts
//! cannot be known (`api://...`, a bare application id) serves none.

use std::fmt;

use crate::cloud::CLOUDS;
use crate::host::HostPattern;

/// A provider's audience (its scope without `/.default`) and the hosts that serve it.
#[derive(Clone)]
pub(crate) struct Audience {
    resource: String,
    hosts: Vec<HostPattern>,
}

impl Audience {
    /// The audience of a `<application ID URI>/.default` scope.
    pub(crate) fn of_scope(scope: &str) -> Audience {
        let resource = scope.trim();
        let resource = resource.strip_suffix("/.default").unwrap_or(resource);
        let key = resource.trim_end_matches('/').to_ascii_lowercase();
        let mut hosts: Vec<HostPattern> = own_host(&key).into_iter().collect();
        // The table is checked by a test; a pattern that failed to parse would only narrow.
        let extra = CLOUDS.iter().flat_map(|cloud| cloud.hosts_serving(&key));
        hosts.extend(extra.filter_map(|h| HostPattern::parse(h).ok()));
        Audience {
            resource: resource.to_owned(),
            hosts,
        }
    }

    pub(crate) fn serves(&self, host: &str) -> bool {
        self.hosts.iter().any(|p| p.matches(host))
    }

    /// Whether any host is known (an `api://` or GUID audience has none).
    pub(crate) fn names_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }
}

impl fmt::Debug for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audience")
            .field("resource", &self.resource)
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl fmt::Display for Audience {
    /// `api://x` (no known hosts), or `https://storage.azure.com (*.blob.core.windows.net, ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource)?;
        let mut hosts = self.hosts.iter();
        if let Some(first) = hosts.next() {
            write!(f, " (served by {first:?}")?;
            for h in hosts {
                write!(f, ", {h:?}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The host of an `https://` or `http://` application ID URI, without port.
fn own_host(resource: &str) -> Option<HostPattern> {
    let rest = resource
        .strip_prefix("https://")
        .or_else(|| resource.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    HostPattern::parse(host).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_serves_its_own_host_and_its_well_known_hosts() {
        for (scope, served, not_served) in [
            (
                "https://graph.microsoft.com/.default",
                &["graph.microsoft.com", "GRAPH.microsoft.com."][..],
                &[
                    "graph.microsoft.com.attacker.example",
                    "attacker.example",
                    "x.graph.microsoft.com",
                ][..],
            ),
            (
                "https://graph.microsoft.us/.default",
                &["graph.microsoft.us"],
                &["graph.microsoft.com"],
            ),
            (
                "https://management.azure.com//.default",
                &["management.azure.com"],
                &["graph.microsoft.com"],
            ),
            (
                "https://management.core.windows.net/.default",
                &["management.azure.com", "management.core.windows.net"],
                &["evil.example"],
            ),
            (
                "https://Storage.Azure.com/.default",
                &[
                    "acct.blob.core.windows.net",
                    "acct.dfs.core.windows.net",
                    "acct.blob.core.usgovcloudapi.net",
                    "acct.queue.core.chinacloudapi.cn",
                ],
                &[
                    "acct.blob.core.windows.net.attacker.example",
                    "blob.core.windows.net",
                    "acct.vault.azure.net",
                ],
            ),
            (
                "https://vault.azure.net/.default",
                &["kv.vault.azure.net", "vault.azure.net"],
                &["kv.vault.azure.net.evil", "kv.vault.azure.cn"],
            ),
            (
                "https://servicebus.azure.net/.default",
                &["ns.servicebus.windows.net"],
                &["ns.servicebus.windows.net.evil"],
            ),
            (
                "https://eventhubs.azure.net/.default",
                &["ns.servicebus.chinacloudapi.cn"],
                &["ns.eventhubs.example"],
            ),
            (
                "https://cognitiveservices.azure.com/.default",
                &["my.openai.azure.com", "my.cognitiveservices.azure.com"],
                &["openai.azure.com.evil"],
            ),
            (
                "https://ossrdbms-aad.database.windows.net/.default",
                &[
                    "pg.postgres.database.azure.com",
                    "my.mysql.database.azure.com",
                ],
                &["pg.postgres.database.azure.com.evil"],
            ),
            (
                "https://cosmos.azure.com/.default",
                &["acct.documents.azure.com"],
                &["acct.documents.azure.com.evil"],
            ),
            (
                "https://database.windows.net//.default",
                &["srv.database.windows.net"],
                &["srv.database.windows.net.evil"],
            ),
            (
                "https://contoso.example:8443/api/.default",
                &["contoso.example"],
                &["api.contoso.example"],
            ),
            (
                "http://127.0.0.1:7071/.default",
                &["127.0.0.1"],
                &["localhost"],
            ),
            ("http://[::1]:7071/.default", &["[::1]"], &["127.0.0.1"]),
        ] {
            let audience = Audience::of_scope(scope);
            assert!(audience.names_hosts(), "{scope}");
            for host in served {
                assert!(audience.serves(host), "{scope} should serve {host}");
            }
            for host in not_served {
                assert!(!audience.serves(host), "{scope} must not serve {host}");
            }
        }
    }

    #[test]
    fn an_audience_without_a_host_serves_none() {
        for scope in [
            "api://entra-emulator-demo/.default",
            "00000003-0000-0000-c000-000000000000/.default",
            "https://user@graph.microsoft.com/.default",
            "urn:contoso/.default",
        ] {
            let audience = Audience::of_scope(scope);
            assert!(!audience.names_hosts(), "{scope}: {audience:?}");
            for host in ["127.0.0.1", "localhost", "graph.microsoft.com"] {
                assert!(!audience.serves(host), "{scope} must not serve {host}");
            }
        }
        assert_eq!(
            Audience::of_scope("api://entra-emulator-demo/.default").to_string(),
            "api://entra-emulator-demo"
        );
        assert_eq!(
            Audience::of_scope("https://vault.azure.net/.default").to_string(),
            "https://vault.azure.net (served by vault.azure.net, *.vault.azure.net)"
        );
    }
}
