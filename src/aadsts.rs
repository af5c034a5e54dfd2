//! What Entra's AADSTS codes mean to a caller: which kind of failure each is, and a one-line
//! fix for the ones a daemon meets most. The one place to add a code.

use std::time::Duration;

use crate::error::{EntraError, TokenError, TokenErrorKind};

/// The error for Entra's refusal `entra`: the kind its codes, error and status say, with the
/// hint for its first known code.
pub(crate) fn refusal(entra: EntraError, retry_after: Option<Duration>) -> TokenError {
    let kind = classify(&entra);
    let hint = entra.codes.iter().find_map(|&c| hint(c));
    TokenError::from_entra(entra, kind, hint, retry_after)
}

/// Codes whose cause is the client's identity or credentials.
const AUTHENTICATION: &[u32] = &[
    700016, 7000215, 7000222, 7000216, 7000218, 90002, 50049, 700024, 700027, 700021, 700023,
    7000274, 53003, 50034, 50126, 700025, 70021, 700212, 700213,
];

/// Codes that say the scope (the resource asked for) is wrong.
const SCOPE: &[u32] = &[70011, 1002012, 700022, 500011, 28000, 28002, 28003];

/// Entra's loop detection: the client asks too often, and backing off is the cure.
const TOO_MANY_IDENTICAL_REQUESTS: u32 = 50196;

/// Codes that say the client secret or certificate sent is invalid, expired or unknown to the app
/// registration: what Entra answers when a credential was rotated and the old one removed.
const CREDENTIAL_ROTATION: &[u32] = &[7000215, 7000222, 700027, 7000274, 1000502];

/// Whether `e` is a credential-rotation answer: Entra refused the secret or certificate sent as
/// invalid, expired or unknown, so a credential read from a file reads it again (it may hold the
/// rotated credential already) before the error reaches callers.
pub(crate) fn is_credential_rotation_answer(e: &EntraError) -> bool {
    e.codes.iter().any(|c| CREDENTIAL_ROTATION.contains(c))
}

/// The kind of failure an answer from Entra is: its codes first, then its OAuth error, then
/// its HTTP status.
pub(crate) fn classify(e: &EntraError) -> TokenErrorKind {
    if e.codes.iter().any(|c| SCOPE.contains(c)) || e.error == "invalid_scope" {
        return TokenErrorKind::InvalidScope;
    }
    if e.codes.iter().any(|c| AUTHENTICATION.contains(c))
        || matches!(
            e.error.as_str(),
            "invalid_client" | "unauthorized_client" | "access_denied"
        )
    {
        return TokenErrorKind::Authentication;
    }
    if e.status >= 500
        || e.status == 429
        || e.status == 408
        || e.error == "temporarily_unavailable"
        || e.codes.contains(&TOO_MANY_IDENTICAL_REQUESTS)
    {
        return TokenErrorKind::Transient;
    }
    TokenErrorKind::Rejected
}

/// `AADSTS7000215: ...` -> 7000215, for bodies without `error_codes`.
pub(crate) fn code_in_description(description: &str) -> Option<u32> {
    let rest = description.strip_prefix("AADSTS")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One line per code this crate knows: what it means, then the fix. The one place to add a
/// code's hint; TROUBLESHOOTING.md is generated from it (a test fails when they drift).
pub(crate) const HINTS: &[(u32, &str)] = &[
    (
        700016,
        "the client id is not an app in this tenant: check AZURE_CLIENT_ID and AZURE_TENANT_ID, and for a multi-tenant app have an admin of this tenant consent to it",
    ),
    (
        7000215,
        "the client secret is wrong: use the secret's Value (shown once at creation), not its Secret ID; make a new one with `az ad app credential reset --id <client-id> --append`",
    ),
    (
        7000222,
        "the client secret has expired: make a new one with `az ad app credential reset --id <client-id> --append` and update the configuration",
    ),
    (
        70011,
        "the scope is invalid: ask for exactly one `<application ID URI>/.default` scope, e.g. `https://graph.microsoft.com/.default`",
    ),
    (
        1002012,
        "client credentials need a scope of the form `<application ID URI>/.default`; permissions are granted in the app registration, not in the scope",
    ),
    (
        700022,
        "a token is for one resource: use one `<application ID URI>/.default` scope per TokenProvider",
    ),
    (
        90002,
        "the tenant does not exist in this cloud: check AZURE_TENANT_ID and that the authority host matches the tenant's cloud (public, US Government, China)",
    ),
    (
        50049,
        "the authority is unknown: use https://login.microsoftonline.com or the host of your sovereign cloud",
    ),
    (
        700024,
        "the client assertion is outside its valid time window: check this machine's clock (NTP)",
    ),
    (
        700027,
        "the assertion's signature did not verify: upload this certificate's public part to the app registration (`az ad app credential reset --id <client-id> --cert @cert.pem --append`) or use the matching private key",
    ),
    (
        7000218,
        "no client credential was sent: configure a client secret, a certificate or a federated token",
    ),
    (
        7000216,
        "no client credential was sent: configure a client secret, a certificate or a federated token",
    ),
    (
        500011,
        "the resource is not in this tenant: check the application ID URI in the scope, and that the API's service principal exists in the tenant (admin consent provisions it)",
    ),
    (
        53003,
        "a Conditional Access policy blocked this app: ask a tenant admin to review the policies that apply to workload identities",
    ),
    (
        TOO_MANY_IDENTICAL_REQUESTS,
        "Entra saw too many identical requests: cache tokens (share one TokenProvider instead of making one per request)",
    ),
    (
        70021,
        "no federated credential matches the token's issuer, subject and audience: check the federated credential on the app registration",
    ),
    (
        700023,
        "the client assertion's `aud` is not this token endpoint: sign it for the token URL (`<authority host>/<tenant>/oauth2/v2.0/token`) of the tenant and cloud you call",
    ),
    (
        700021,
        "the client assertion's `iss` and `sub` must both be the client id (AZURE_CLIENT_ID)",
    ),
    (
        50013,
        "the client assertion is invalid or was already used (same `jti`): sign a new assertion for every token request",
    ),
    (
        1000502,
        "the certificate is outside its validity period: create a new one and upload it (`az ad app credential reset --id <client-id> --cert @cert.pem --append`)",
    ),
    (
        7000274,
        "the certificate is outside its validity period: create a new one and upload it (`az ad app credential reset --id <client-id> --cert @cert.pem --append`)",
    ),
    (
        5002738,
        "the assertion's signature algorithm is not accepted: Entra verifies RS256 and PS256 (RSA keys) only",
    ),
    (
        50034,
        "the user account does not exist in this tenant: a client credentials request names no user, so something sends a user flow's parameters; check the grant type and the tenant",
    ),
    (
        50126,
        "a user name or password was rejected: client credentials use no user password; check that the request is a client credentials request (grant_type=client_credentials)",
    ),
    (
        700025,
        "the app registration is a public client, which cannot use a secret or certificate: set \"Allow public client flows\" to No under Authentication in the app registration",
    ),
    (
        700212,
        "no federated credential matches the assertion's audience: the federated credential's audience (default `api://AzureADTokenExchange`) must be the token's `aud`",
    ),
    (
        700213,
        "no federated credential matches the assertion's subject: the federated credential's subject must be the token's `sub` exactly (for AKS `system:serviceaccount:<namespace>:<service account>`)",
    ),
    (
        28000,
        "the scope names more than one resource: a token is for one resource; use one `<application ID URI>/.default` scope per TokenProvider",
    ),
    (
        28002,
        "the scope is not valid for an access token: ask for `<application ID URI>/.default`, e.g. `https://graph.microsoft.com/.default`",
    ),
    (
        28003,
        "the scope is empty: ask for `<application ID URI>/.default`, e.g. `https://graph.microsoft.com/.default`",
    ),
];

/// A one-line fix for `code`, when one is known.
pub(crate) fn hint(code: u32) -> Option<&'static str> {
    HINTS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code this crate treats specially, in order.
    fn known_codes() -> Vec<u32> {
        let mut codes: Vec<u32> = AUTHENTICATION
            .iter()
            .chain(SCOPE)
            .chain([&TOO_MANY_IDENTICAL_REQUESTS])
            .copied()
            .chain(HINTS.iter().map(|(c, _)| *c))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        codes
    }

    const BEGIN: &str = "<!-- BEGIN GENERATED from src/aadsts.rs: `UPDATE_TROUBLESHOOTING=1 cargo test --lib aadsts` rewrites it -->";
    const END: &str = "<!-- END GENERATED -->";

    /// The AADSTS table of TROUBLESHOOTING.md, from the table the code uses.
    fn troubleshooting_table() -> String {
        let mut out =
            format!("{BEGIN}\n| code | kind | what it means, and the fix |\n|---|---|---|\n");
        for code in known_codes() {
            let kind = classify(&entra(400, "invalid_request", code));
            let hint = hint(code).unwrap_or_default().replace('|', "\\|");
            out.push_str(&format!(
                "| [AADSTS{code}](https://login.microsoftonline.com/error?code={code}) | `{kind:?}` | {hint} |\n"
            ));
        }
        out.push_str(END);
        out
    }

    #[test]
    fn troubleshooting_md_has_every_known_code_with_its_hint() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/TROUBLESHOOTING.md");
        let doc = std::fs::read_to_string(path).expect("TROUBLESHOOTING.md");
        let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("TROUBLESHOOTING.md has no generated AADSTS table between {BEGIN} and {END}");
        };
        let expected = troubleshooting_table();
        let found = &doc[begin..end + END.len()];
        if found != expected {
            if std::env::var_os("UPDATE_TROUBLESHOOTING").is_some() {
                let updated = format!("{}{expected}{}", &doc[..begin], &doc[end + END.len()..]);
                std::fs::write(path, updated).expect("rewrite TROUBLESHOOTING.md");
            } else {
                panic!(
                    "TROUBLESHOOTING.md's AADSTS table differs from src/aadsts.rs; run `UPDATE_TROUBLESHOOTING=1 cargo test --lib aadsts` to regenerate it. Expected:\n{expected}"
                );
            }
        }
    }

    #[test]
    fn every_known_code_has_a_hint() {
        for code in known_codes() {
            assert!(hint(code).is_some(), "no hint for AADSTS{code}");
        }
        let mut listed: Vec<u32> = HINTS.iter().map(|(c, _)| *c).collect();
        listed.sort_unstable();
        let before = listed.len();
        listed.dedup();
        assert_eq!(before, listed.len(), "a code has two hints");
    }

    fn entra(status: u16, error: &str, code: u32) -> EntraError {
        EntraError {
            status,
            error: error.into(),
            codes: vec![code],
            ..Default::default()
        }
    }

    #[test]
    fn every_documented_code_has_a_hint() {
        for code in [
            700016, 7000215, 7000222, 70011, 1002012, 700022, 90002, 50049, 700024, 700027,
            7000218, 500011, 53003, 50196, 700023, 700021, 50013, 1000502, 7000274, 5002738,
        ] {
            assert!(hint(code).is_some(), "no hint for AADSTS{code}");
        }
    }

    #[test]
    fn classifies_entra_errors() {
        use TokenErrorKind::*;
        for (status, error, code, kind) in [
            (401, "invalid_client", 7000215, Authentication),
            (400, "invalid_request", 700016, Authentication),
            (400, "invalid_scope", 1002012, InvalidScope),
            (400, "invalid_request", 500011, InvalidScope),
            (503, "temporarily_unavailable", 0, Transient),
            (400, "invalid_request", 50196, Transient),
            (429, "invalid_request", 0, Transient),
            (400, "invalid_request", 12345, Rejected),
        ] {
            assert_eq!(
                classify(&entra(status, error, code)),
                kind,
                "{error} {code}"
            );
        }
    }

    #[test]
    fn a_refused_secret_or_certificate_is_a_credential_rotation_answer() {
        for code in [7000215, 7000222, 700027, 7000274, 1000502] {
            assert!(is_credential_rotation_answer(&entra(
                401,
                "invalid_client",
                code
            )));
        }
        for code in [700016, 7000218, 700024, 90002, 70011] {
            assert!(
                !is_credential_rotation_answer(&entra(400, "invalid_request", code)),
                "{code}"
            );
        }
    }

    #[test]
    fn reads_the_code_at_the_start_of_a_description() {
        assert_eq!(code_in_description("AADSTS7000215: Invalid"), Some(7000215));
        assert_eq!(code_in_description("AADSTS70011"), Some(70011));
        assert_eq!(code_in_description("AADSTS: none"), None);
        assert_eq!(code_in_description("Invalid AADSTS70011"), None);
        assert_eq!(code_in_description("AADSTS99999999999: too long"), None);
    }
}

/// A refusal as callers see it: its kind, and a `Display` that is one printable line with the
/// code, the ids and the hint, however hostile the answer.
#[cfg(test)]
mod refusals {
    use super::*;
    use crate::error::{CUT, MAX_SERVER_FIELD_BYTES};

    fn entra(status: u16, error: &str, code: u32) -> EntraError {
        EntraError {
            status,
            error: error.into(),
            description: format!("AADSTS{code}: something.\r\nTrace ID: t\r\nCorrelation ID: c"),
            codes: vec![code],
            trace_id: Some("t".into()),
            correlation_id: Some("c".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_refusal_is_a_token_error_of_its_kind() {
        let e = refusal(entra(401, "invalid_client", 7000215), None);
        assert_eq!(e.kind(), TokenErrorKind::Authentication);
        assert!(!e.is_transient());
        let e = refusal(entra(400, "invalid_scope", 1002012), None);
        assert_eq!(e.kind(), TokenErrorKind::InvalidScope);
        let e = refusal(entra(503, "temporarily_unavailable", 0), None);
        assert!(e.is_transient());
        let e = refusal(entra(400, "invalid_request", 12345), None);
        assert_eq!(e.kind(), TokenErrorKind::Rejected);
    }

    /// Texts that would forge log lines, drive a terminal or reorder text if printed raw.
    const HOSTILE: [&str; 5] = ["\n", "\r", "\u{1b}", "\u{7}", "\u{202e}"];

    fn assert_printable(what: &str, s: &str, max: usize) {
        for bad in HOSTILE {
            assert!(!s.contains(bad), "{what} has {bad:?}: {s:?}");
        }
        assert!(s.len() <= max, "{what} is {} bytes", s.len());
    }

    #[test]
    fn display_has_code_ids_and_hint_on_one_line() {
        let e = refusal(entra(401, "invalid_client", 7000215), None);
        let s = e.to_string();
        assert!(s.contains("AADSTS7000215"), "{s}");
        assert!(
            s.contains("trace id t") && s.contains("correlation id c"),
            "{s}"
        );
        assert!(s.contains("Hint: the client secret is wrong"), "{s}");
        assert!(!s.contains('\n'), "{s}");

        // The same from a hostile endpoint: line breaks, ANSI escapes, bidi overrides, a MiB.
        let mib = "x".repeat(1 << 20);
        let hostile = EntraError {
            status: 401,
            error: format!("invalid_client\n\u{1b}[31mERROR fake\u{7}{mib}"),
            description: format!(
                "AADSTS7000215: bad\rINFO forged\u{1b}[2J\u{202e}{mib}\r\nTrace ID: t"
            ),
            codes: vec![7000215],
            trace_id: Some("t\nINFO forged line".into()),
            correlation_id: Some(mib.clone()),
            timestamp: Some("\u{1b}]0;title\u{7}".into()),
            error_uri: Some(format!("https://x/\u{1b}[0m{mib}")),
        };
        let e = refusal(hostile, None);
        let s = e.to_string();
        assert_printable("Display", &s, 4 * 1024);
        assert!(
            s.contains("AADSTS7000215: bad\\rINFO forged\\u{1b}[2J"),
            "{s}"
        );
        assert!(s.contains("trace id t\\nINFO forged line"), "{s}");
        assert!(s.contains("Hint: the client secret is wrong"), "{s}");
        assert!(s.contains('…'), "a cut is marked: {s}");
        assert_printable("Debug", &format!("{e:?}"), 8 * 1024);
        // What the fetch span records as tracing fields.
        let entra = e.entra().unwrap();
        for (field, value) in [
            ("error", Some(entra.error())),
            ("trace_id", entra.trace_id()),
            ("correlation_id", entra.correlation_id()),
            ("timestamp", entra.timestamp()),
            ("error_uri", entra.error_uri()),
        ] {
            assert_printable(
                field,
                value.unwrap(),
                MAX_SERVER_FIELD_BYTES + CUT.len_utf8(),
            );
        }
        assert!(
            entra
                .error()
                .starts_with("invalid_client\\n\\u{1b}[31mERROR fake\\u{7}xxx"),
            "{}",
            entra.error()
        );
        assert_eq!(entra.error().len(), MAX_SERVER_FIELD_BYTES + CUT.len_utf8());
    }
}
