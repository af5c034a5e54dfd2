//! Hosts: the patterns that say where tokens may go (`graph.microsoft.com`,
//! `*.vault.azure.net`), how a request's host is compared with them, and which hosts are this
//! machine (plain http is allowed to loopback only).

use std::fmt;
use std::net::IpAddr;

use url::Url;

use crate::error::TokenError;

/// A host name, or `*.suffix` for every subdomain of `suffix`. Compared case-insensitively,
/// without port or trailing dot. Only made by [`HostPattern::parse`], so it is always valid.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    /// Reads `graph.microsoft.com`, `*.blob.core.windows.net`, `127.0.0.1`, `[::1]`, or a URL
    /// (`https://graph.microsoft.com/`), whose host is taken. Anything else (a port, a path
    /// without a scheme, a wildcard that is not a leading `*.` or covers a top-level domain,
    /// characters no host has) is a `Configuration` error that names the pattern.
    pub(crate) fn parse(pattern: &str) -> Result<HostPattern, TokenError> {
        let input = pattern.trim();
        let invalid = |why: &str| {
            TokenError::configuration(format!(
                "the host pattern {input:?} is not valid ({why}); use a host such as `graph.microsoft.com`, or `*.vault.azure.net` for its subdomains"
            ))
        };
        // A URL: keep its authority (`https://*.vault.azure.net/` is not a parsable URL).
        let host = match input.split_once("://") {
            Some((_, rest)) => rest.split(['/', '?', '#']).next().unwrap_or_default(),
            None if input.contains(['/', '?', '#']) => {
                return Err(invalid(
                    "a host has no path or query; write the host alone, or a whole URL with its scheme",
                ));
            }
            None => input,
        };
        let host = normalize(host);
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, host.as_str()),
        };
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(invalid("it names no host"));
        }
        if name.contains('*') {
            return Err(invalid("a wildcard may only be a leading `*.`"));
        }
        // IPv6 addresses have colons; anything else with one has a port.
        let ipv6 = name.parse::<std::net::Ipv6Addr>().is_ok();
        if name.contains(':') && !ipv6 {
            return Err(invalid("hosts are compared without port: drop the `:port`"));
        }
        if !ipv6
            && !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(invalid(
                "a host is letters, digits, `-` and `.`, with no user or spaces; write an international name in its `xn--` form",
            ));
        }
        if wildcard && !name.contains('.') {
            return Err(invalid(
                "a wildcard must stand below a domain, not a top-level domain: `*.vault.azure.net`",
            ));
        }
        Ok(if wildcard {
            HostPattern::Subdomains(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    pub(crate) fn matches(&self, host: &str) -> bool {
        let host = bare(host);
        match self {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Subdomains(suffix) => {
                // Bytes, not str slices: a host is any &str here, and may not be ASCII.
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && host[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }
}

/// A host as it is compared: one trailing dot (the DNS root) and IPv6 brackets removed. Only
/// one dot: `graph.microsoft.com..` is no name a resolver takes as `graph.microsoft.com`, so it
/// must not match it.
fn bare(host: &str) -> &str {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// [`bare`], in lower case.
fn normalize(host: &str) -> String {
    bare(host).to_ascii_lowercase()
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*.{s}"),
        }
    }
}

/// Whether the URL's host is `localhost` or a loopback IP address.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Whether a request's host (as a URI gives it, IPv6 in brackets) is a loopback address.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TokenErrorKind;

    fn parse(pattern: &str) -> HostPattern {
        HostPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
    }

    #[test]
    fn host_patterns() {
        let exact = parse("Graph.Microsoft.com");
        assert!(exact.matches("graph.microsoft.com"));
        assert!(exact.matches("GRAPH.microsoft.com."));
        assert!(!exact.matches("evil-graph.microsoft.com"));
        assert!(!exact.matches("graph.microsoft.com.evil.example"));
        let sub = parse("*.vault.azure.net");
        assert!(sub.matches("myvault.vault.azure.net"));
        assert!(sub.matches("a.b.vault.azure.net"));
        assert!(!sub.matches("vault.azure.net"));
        assert!(!sub.matches("evilvault.azure.net"));
        assert!(!sub.matches("x.vault.azure.net.evil"));
        let url = parse("https://management.azure.com/");
        assert!(url.matches("management.azure.com"));
        let v6 = parse("[::1]");
        assert!(v6.matches("[::1]"));
        assert!(parse("127.0.0.1").matches("127.0.0.1"));
        // Not ASCII: no panic, no match.
        assert!(!parse("*.b.c").matches("xé"));
        assert!(parse("*.b.c").matches("é.b.c"));
        assert!(parse("https://*.vault.azure.net/").matches("kv.vault.azure.net"));
        assert!(parse("https://graph.microsoft.com/v1.0?x#y").matches("graph.microsoft.com"));
    }

    #[test]
    fn one_trailing_dot_is_the_root_and_two_are_no_host() {
        let exact = parse("graph.microsoft.com");
        let sub = parse("*.vault.azure.net");
        assert!(exact.matches("graph.microsoft.com."));
        assert!(sub.matches("kv.vault.azure.net."));
        for (pattern, host) in [
            (&exact, "graph.microsoft.com.."),
            (&exact, "graph.microsoft.com..."),
            (&sub, "kv.vault.azure.net.."),
            (&exact, "[graph.microsoft.com].."),
        ] {
            assert!(!pattern.matches(host), "{pattern:?} matched {host:?}");
        }
        for bad in ["graph.microsoft.com..", "*.vault.azure.net.."] {
            let e = HostPattern::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("names no host"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_pattern_that_is_not_a_host_is_refused_when_given() {
        for (bad, why) in [
            ("", "names no host"),
            ("*.", "wildcard"),
            ("https://", "names no host"),
            ("a..b", "names no host"),
            ("localhost:8080", "port"),
            ("a.*.b", "wildcard"),
            ("user@host", "no user"),
            ("gra ph.microsoft.com", "no user or spaces"),
            ("graph.microsoft.com/v1.0", "no path"),
            ("host?x", "no path or query"),
            ("*.com", "top-level domain"),
            ("bücher.example", "xn--"),
        ] {
            let e = HostPattern::parse(bad).expect_err(bad);
            assert_eq!(e.kind(), TokenErrorKind::Configuration, "{bad:?}");
            let s = e.to_string();
            assert!(
                s.contains(&format!("{bad:?}")) && s.contains(why),
                "{bad:?}: {s}"
            );
        }
    }
}

/// Property tests: any text is a pattern or a `Configuration` error, never a panic; a pattern
/// matches its host (or, for `*.`, its subdomains) and nothing that only looks like it.
#[cfg(test)]
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::error::TokenErrorKind;

    /// A DNS label (LDH), in any mix of cases.
    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?"
    }

    /// A host name of `min` or more labels.
    fn host(min: usize) -> impl Strategy<Value = String> {
        vec(label(), min..min + 4).prop_map(|labels| labels.join("."))
    }

    /// Text near a host: the pieces a look-alike or a broken pattern is made of.
    fn near_host() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            label(),
            Just(".".to_owned()),
            Just("*.".to_owned()),
            Just("*".to_owned()),
            Just("https://".to_owned()),
            Just(":443".to_owned()),
            Just("/v1.0".to_owned()),
            Just("?x#y".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("::1".to_owned()),
            Just("é".to_owned()),
            Just("@".to_owned()),
            Just(" ".to_owned()),
        ];
        vec(piece, 0..8).prop_map(|p| p.concat())
    }

    /// Text shaped like a pattern, often a valid one: a scheme, a wildcard, labels, a port, a
    /// path, each there or not.
    fn pattern_like() -> impl Strategy<Value = String> {
        let maybe = |s: &'static str| prop_oneof![Just(""), Just(s)];
        (
            maybe("https://"),
            maybe("*."),
            vec(prop_oneof![4 => label(), 1 => Just("é".to_owned()), 1 => Just("*".to_owned()), 1 => Just(String::new())], 1..4),
            maybe("."),
            prop_oneof![Just(""), Just(":8080"), Just("/v1.0"), Just("?x")],
        )
            .prop_map(|(scheme, wildcard, labels, dot, tail)| {
                format!("{scheme}{wildcard}{}{dot}{tail}", labels.join("."))
            })
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn any_text_is_a_pattern_or_a_configuration_error(
            text in prop_oneof!["(?s).{0,64}", near_host(), pattern_like()],
            probe in prop_oneof!["(?s).{0,64}", near_host(), pattern_like()],
        ) {
            match HostPattern::parse(&text) {
                Err(e) => {
                    prop_assert_eq!(e.kind(), TokenErrorKind::Configuration);
                    let shown = e.to_string();
                    prop_assert!(shown.contains(&format!("{:?}", text.trim())), "{}", shown);
                }
                Ok(pattern) => {
                    // What is accepted is a host: DNS characters in dot-separated labels, below
                    // a domain for a wildcard; or an IPv6 address.
                    let (HostPattern::Exact(name) | HostPattern::Subdomains(name)) = &pattern;
                    let ipv6 = name.parse::<std::net::Ipv6Addr>().is_ok();
                    let dns = name.split('.').all(|label| {
                        !label.is_empty()
                            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    });
                    prop_assert!(ipv6 || dns, "{:?} accepted as {:?}", text, pattern);
                    if let HostPattern::Subdomains(suffix) = &pattern {
                        prop_assert!(suffix.contains('.'), "{:?} accepted as {:?}", text, pattern);
                    }
                    // Its written form reads back as the same pattern.
                    let written = format!("{pattern:?}");
                    let reread = HostPattern::parse(&written)
                        .map_err(|e| TestCaseError::fail(format!("{written:?}: {e}")))?;
                    prop_assert!(reread == pattern, "{:?} -> {:?}", written, reread);
                    // What it matches is its host or below it, whatever the probe.
                    if pattern.matches(&probe) {
                        let probe = normalize(&probe);
                        match &pattern {
                            HostPattern::Exact(h) => prop_assert_eq!(&probe, h),
                            HostPattern::Subdomains(s) => prop_assert!(
                                probe.ends_with(&format!(".{s}")) && probe.len() > s.len() + 1,
                                "{:?} matched {:?}", pattern, probe
                            ),
                        }
                    }
                }
            }
        }

        #[test]
        fn a_host_matches_itself_and_no_look_alike(
            host in host(1),
            other in label(),
            case in vec(any::<bool>(), 0..64),
            scheme_and_path in proptest::option::of(("https?://", "(/[a-z0-9.]{0,8}){0,2}(\\?[a-z=]{0,6})?")),
        ) {
            let written = match &scheme_and_path {
                Some((scheme, path)) => format!("{scheme}{host}{path}"),
                None => host.clone(),
            };
            let pattern = HostPattern::parse(&written)
                .map_err(|e| TestCaseError::fail(format!("{written:?}: {e}")))?;
            let recased: String = host
                .chars()
                .zip(case.iter().chain(std::iter::repeat(&false)))
                .map(|(c, &upper)| if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            prop_assert!(pattern.matches(&host));
            prop_assert!(pattern.matches(&recased), "{:?} vs {:?}", pattern, recased);
            let trailing_dot = format!("{host}.");
            prop_assert!(pattern.matches(&trailing_dot));
            let subdomain = format!("{other}.{host}");
            let suffixed = format!("{host}.{other}");
            let glued = format!("{other}{host}");
            for look_alike in [subdomain, suffixed, glued] {
                prop_assert!(!pattern.matches(&look_alike), "{:?} matched {:?}", pattern, look_alike);
            }
        }

        #[test]
        fn a_wildcard_matches_every_subdomain_and_nothing_else(
            domain in host(2),
            below in vec(label(), 1..4),
            other in label(),
        ) {
            let pattern = HostPattern::parse(&format!("*.{domain}"))
                .map_err(|e| TestCaseError::fail(format!("*.{domain}: {e}")))?;
            let sub = format!("{}.{domain}", below.join("."));
            prop_assert!(pattern.matches(&sub), "{:?} vs {:?}", pattern, sub);
            prop_assert!(pattern.matches(&sub.to_ascii_uppercase()));
            let trailing_dot = format!("{sub}.");
            prop_assert!(pattern.matches(&trailing_dot));
            for look_alike in [
                domain.clone(),
                format!("{other}{domain}"),
                // `_` is in no generated label: a top-level domain the domain cannot end in.
                format!("{sub}.{other}_"),
                format!("{other}.{}", &domain[domain.find('.').map_or(0, |i| i + 1)..]),
                // Not ASCII where the suffix would start.
                format!("{other}é{}", &domain[1..]),
            ] {
                prop_assert!(!pattern.matches(&look_alike), "{:?} matched {:?}", pattern, look_alike);
            }
        }
    }
}
