//! Microsoft's clouds: where each one's tokens are asked for (its authority host), and which
//! hosts besides a resource's own take the tokens of its well-known resources. A sovereign
//! cloud is one more row in [`CLOUDS`].

use std::fmt;

/// A Microsoft cloud: its authority host, where tokens are asked for, and the hosts that serve
/// the audiences of its well-known resources (an account, vault or namespace under a shared
/// suffix, such as `*.blob.core.windows.net` for `https://storage.azure.com`).
///
/// A credential's builder takes the authority host as any URL, so a cloud not listed here (or
/// a local emulator) works too:
///
/// ```
/// use tower_entra::{ClientSecretCredential, Cloud};
///
/// let credential = ClientSecretCredential::builder(
///     "contoso.onmicrosoft.us",
///     "00000000-0000-0000-0000-000000000001",
///     "secret",
/// )
/// .authority_host(Cloud::AZURE_US_GOVERNMENT.authority_host())
/// .build()?;
/// # Ok::<(), tower_entra::TokenError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cloud {
    name: &'static str,
    authority_host: &'static str,
    /// Well-known resources (application ID URIs, lower case, no trailing slash) and the hosts
    /// besides their own that take their tokens in this cloud. Graph and Azure Resource
    /// Manager are served on their own host and need no row.
    resources: &'static [(&'static str, &'static [&'static str])],
}

impl Cloud {
    /// Azure public cloud (the default): `https://login.microsoftonline.com`.
    pub const AZURE_PUBLIC: Cloud = Cloud {
        name: "Azure public cloud",
        authority_host: "https://login.microsoftonline.com",
        resources: &[
            (
                "https://storage.azure.com",
                &[
                    "*.blob.core.windows.net",
                    "*.queue.core.windows.net",
                    "*.table.core.windows.net",
                    "*.file.core.windows.net",
                    "*.dfs.core.windows.net",
                ],
            ),
            ("https://vault.azure.net", &["*.vault.azure.net"]),
            ("https://managedhsm.azure.net", &["*.managedhsm.azure.net"]),
            ("https://database.windows.net", &["*.database.windows.net"]),
            (
                "https://servicebus.azure.net",
                &["*.servicebus.windows.net"],
            ),
            ("https://eventhubs.azure.net", &["*.servicebus.windows.net"]),
            ("https://cosmos.azure.com", &["*.documents.azure.com"]),
            (
                "https://cognitiveservices.azure.com",
                &[
                    "*.cognitiveservices.azure.com",
                    "*.openai.azure.com",
                    "*.services.ai.azure.com",
                ],
            ),
            (
                "https://ossrdbms-aad.database.windows.net",
                &[
                    "*.postgres.database.azure.com",
                    "*.mysql.database.azure.com",
                ],
            ),
            // Azure Resource Manager's older audience.
            (
                "https://management.core.windows.net",
                &["management.azure.com"],
            ),
            ("https://azconfig.io", &["*.azconfig.io"]),
        ],
    };

    /// Azure US Government: `https://login.microsoftonline.us`.
    pub const AZURE_US_GOVERNMENT: Cloud = Cloud {
        name: "Azure US Government",
        authority_host: "https://login.microsoftonline.us",
        resources: &[
            (
                "https://storage.azure.com",
                &[
                    "*.blob.core.usgovcloudapi.net",
                    "*.queue.core.usgovcloudapi.net",
                    "*.table.core.usgovcloudapi.net",
                    "*.file.core.usgovcloudapi.net",
                    "*.dfs.core.usgovcloudapi.net",
                ],
            ),
            (
                "https://vault.usgovcloudapi.net",
                &["*.vault.usgovcloudapi.net"],
            ),
            (
                "https://managedhsm.usgovcloudapi.net",
                &["*.managedhsm.usgovcloudapi.net"],
            ),
            (
                "https://database.usgovcloudapi.net",
                &["*.database.usgovcloudapi.net"],
            ),
            (
                "https://servicebus.azure.net",
                &["*.servicebus.usgovcloudapi.net"],
            ),
            (
                "https://eventhubs.azure.net",
                &["*.servicebus.usgovcloudapi.net"],
            ),
            ("https://cosmos.azure.com", &["*.documents.azure.us"]),
            (
                "https://cognitiveservices.azure.us",
                &["*.cognitiveservices.azure.us", "*.openai.azure.us"],
            ),
            (
                "https://ossrdbms-aad.database.usgovcloudapi.net",
                &[
                    "*.postgres.database.usgovcloudapi.net",
                    "*.mysql.database.usgovcloudapi.net",
                ],
            ),
            (
                "https://management.core.usgovcloudapi.net",
                &["management.usgovcloudapi.net"],
            ),
        ],
    };

    /// Azure operated by 21Vianet (China): `https://login.chinacloudapi.cn`.
    pub const AZURE_CHINA: Cloud = Cloud {
        name: "Azure operated by 21Vianet",
        authority_host: "https://login.chinacloudapi.cn",
        resources: &[
            (
                "https://storage.azure.com",
                &[
                    "*.blob.core.chinacloudapi.cn",
                    "*.queue.core.chinacloudapi.cn",
                    "*.table.core.chinacloudapi.cn",
                    "*.file.core.chinacloudapi.cn",
                    "*.dfs.core.chinacloudapi.cn",
                ],
            ),
            ("https://vault.azure.cn", &["*.vault.azure.cn"]),
            ("https://managedhsm.azure.cn", &["*.managedhsm.azure.cn"]),
            (
                "https://database.chinacloudapi.cn",
                &["*.database.chinacloudapi.cn"],
            ),
            (
                "https://servicebus.azure.net",
                &["*.servicebus.chinacloudapi.cn"],
            ),
            (
                "https://eventhubs.azure.net",
                &["*.servicebus.chinacloudapi.cn"],
            ),
            ("https://cosmos.azure.com", &["*.documents.azure.cn"]),
            (
                "https://cognitiveservices.azure.cn",
                &["*.cognitiveservices.azure.cn", "*.openai.azure.cn"],
            ),
            (
                "https://ossrdbms-aad.database.chinacloudapi.cn",
                &[
                    "*.postgres.database.chinacloudapi.cn",
                    "*.mysql.database.chinacloudapi.cn",
                ],
            ),
            (
                "https://management.core.chinacloudapi.cn",
                &["management.chinacloudapi.cn"],
            ),
        ],
    };

    /// The cloud's name, e.g. `Azure US Government`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The authority host, for a credential builder's `authority_host`, e.g.
    /// `https://login.microsoftonline.us`.
    pub fn authority_host(&self) -> &'static str {
        self.authority_host
    }

    /// The host patterns besides its own that take tokens for `resource` (lower case, no
    /// trailing slash) in this cloud.
    pub(crate) fn hosts_serving(&self, resource: &str) -> impl Iterator<Item = &'static str> {
        self.resources
            .iter()
            .filter(move |(uri, _)| *uri == resource)
            .flat_map(|(_, hosts)| hosts.iter().copied())
    }
}

impl fmt::Debug for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cloud")
            .field("name", &self.name)
            .field("authority_host", &self.authority_host)
            .finish()
    }
}

/// Every cloud whose resources the layer knows, in the order their hosts are listed.
pub(crate) const CLOUDS: &[Cloud] = &[
    Cloud::AZURE_PUBLIC,
    Cloud::AZURE_US_GOVERNMENT,
    Cloud::AZURE_CHINA,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPattern;

    #[test]
    fn the_table_is_all_valid_host_patterns() {
        for cloud in CLOUDS {
            url::Url::parse(cloud.authority_host()).unwrap();
            for (uri, hosts) in cloud.resources {
                assert_eq!(*uri, uri.to_ascii_lowercase(), "{uri}");
                assert!(!uri.ends_with('/'), "{uri}");
                for h in *hosts {
                    HostPattern::parse(h).unwrap_or_else(|e| panic!("{uri}: {e}"));
                }
            }
        }
    }
}
