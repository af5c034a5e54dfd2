//! The token response and Entra's error body, parsed without ever echoing a token.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::time::Instant;

use crate::aadsts;
use crate::error::{EntraError, MAX_SERVER_FIELD_BYTES, TokenError, server_text};
use crate::token::AccessToken;

/// The grant type of the client credentials flow.
pub(crate) const GRANT_TYPE: &str = "client_credentials";
/// `client_assertion_type` for a JWT client assertion.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A number of seconds that Entra sends as a JSON number and v1 endpoints, ADFS and managed
/// identity send as a string.
#[derive(Debug, Clone, Copy)]
struct Seconds(u64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            Int(u64),
            Float(f64),
            Str(&'a str),
            String(String),
        }
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map(Seconds)
                .map_err(|_| serde::de::Error::custom("a number of seconds is not a number"))
        };
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Seconds(n)),
            Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Seconds(f as u64)),
            Raw::Float(_) => Err(serde::de::Error::custom("a number of seconds is negative")),
            Raw::Str(s) => parse(s),
            Raw::String(s) => parse(&s),
        }
    }
}

#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<Seconds>,
    // `ext_expires_in` (the lifetime during an Entra outage) is not read: unused, and a malformed
    // value must not fail an otherwise valid token.
    refresh_in: Option<Seconds>,
}

/// Turns a 2xx token response body into a token.
pub(crate) fn parse_token_response(
    body: &[u8],
    now: Instant,
    wall_now: SystemTime,
) -> Result<AccessToken, TokenError> {
    let raw: RawTokenResponse = serde_json::from_slice(body).map_err(|e| {
        // serde's message could quote the body (the token); say only where it broke.
        TokenError::invalid_response(format!(
            "the token response is not the JSON Entra sends ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    match raw.token_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            return Err(TokenError::invalid_response(format!(
                "the token response has token_type \"{}\"; only Bearer tokens are supported",
                server_text(other, MAX_SERVER_FIELD_BYTES)
            )));
        }
        None => {
            return Err(TokenError::invalid_response(
                "the token response has no token_type",
            ));
        }
    }
    let Some(secret) = raw.access_token else {
        return Err(TokenError::invalid_response(
            "the token response has no access_token",
        ));
    };
    let Some(Seconds(expires_in)) = raw.expires_in else {
        return Err(TokenError::invalid_response(
            "the token response has no expires_in",
        ));
    };
    if expires_in == 0 {
        return Err(TokenError::invalid_response(
            "the token response says the token expires immediately (expires_in = 0)",
        ));
    }
    AccessToken::issued(
        secret,
        Duration::from_secs(expires_in),
        raw.refresh_in.map(|Seconds(s)| Duration::from_secs(s)),
        now,
        wall_now,
    )
}

#[derive(Deserialize, Default)]
struct RawEntraError {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(default, deserialize_with = "lenient_codes")]
    error_codes: Vec<u32>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
    timestamp: Option<String>,
    error_uri: Option<String>,
}

/// `error_codes` as numbers or numeric strings; anything else (null, a string, other types) is
/// skipped, so that a quirk there does not lose the rest of the error body (trace and
/// correlation ids).
fn lenient_codes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    let code = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(values) => values.iter().filter_map(code).collect(),
        single => code(&single).into_iter().collect(),
    })
}

/// Turns a non-2xx answer into a typed error: Entra's JSON when it is one, else the status.
pub(crate) fn parse_error_response(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> TokenError {
    if let Ok(raw) = serde_json::from_slice::<RawEntraError>(body)
        && let Some(error) = raw.error
    {
        let description = raw.error_description.unwrap_or_default();
        let mut codes = raw.error_codes;
        if codes.is_empty() {
            codes.extend(aadsts::code_in_description(&description));
        }
        return TokenError::from_entra(
            EntraError {
                status,
                error,
                description,
                codes,
                trace_id: raw.trace_id,
                correlation_id: raw.correlation_id,
                timestamp: raw.timestamp,
                error_uri: raw.error_uri,
            },
            retry_after,
        );
    }
    let kind = if status >= 500 || status == 429 || status == 408 {
        crate::TokenErrorKind::Transient
    } else {
        crate::TokenErrorKind::InvalidResponse
    };
    TokenError::new(
        kind,
        format!(
            "the token endpoint answered HTTP {status} without an Entra error body ({} bytes)",
            body.len()
        ),
    )
    .with_retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenErrorKind;

    fn parse(body: &str) -> Result<AccessToken, TokenError> {
        parse_token_response(body.as_bytes(), Instant::now(), SystemTime::now())
    }

    #[test]
    fn numbers_may_be_strings() {
        let now = Instant::now();
        for body in [
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"abc"}"#,
            r#"{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599","access_token":"abc"}"#,
        ] {
            let t = parse_token_response(body.as_bytes(), now, SystemTime::now()).unwrap();
            assert_eq!(t.expires_at() - now, Duration::from_secs(3599));
            assert_eq!(t.secret(), "abc");
        }
        let t = parse_token_response(
            br#"{"token_type":"Bearer","expires_in":"86399","refresh_in":"43199","access_token":"abc"}"#,
            now,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(t.refresh_in(), Some(Duration::from_secs(43199)));
    }

    #[test]
    fn malformed_responses_are_typed_errors_without_the_token() {
        for body in [
            "<html>proxy</html>",
            r#"{"token_type":"pop","expires_in":1,"access_token":"SECRETTOKEN"}"#,
            r#"{"expires_in":1,"access_token":"SECRETTOKEN"}"#,
            r#"{"token_type":"Bearer","access_token":"SECRETTOKEN"}"#,
            r#"{"token_type":"Bearer","expires_in":"soon","access_token":"SECRETTOKEN"}"#,
            r#"{"token_type":"Bearer","expires_in":60,"access_token":"SECRET TOKEN"}"#,
            r#"{"token_type":"Bearer","expires_in":60,"access_token":5}"#,
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{body}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }

    #[test]
    fn parses_entra_errors_in_full() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 0f\r\nCorrelation ID: c0\r\nTimestamp: 2026-11-27 10:00:00Z","error_codes":[7000215],"timestamp":"2026-11-27 10:00:00Z","trace_id":"0f","correlation_id":"c0","error_uri":"https://login.microsoftonline.com/error?code=7000215"}"#;
        let e = parse_error_response(401, body.as_bytes(), None);
        assert_eq!(e.kind(), TokenErrorKind::Authentication);
        assert_eq!(e.entra().unwrap().codes(), &[7000215]);
        assert_eq!(e.entra().unwrap().trace_id(), Some("0f"));
        assert_eq!(e.entra().unwrap().correlation_id(), Some("c0"));
        let entra = e.entra().unwrap();
        assert_eq!(
            entra.error_uri(),
            Some("https://login.microsoftonline.com/error?code=7000215")
        );
        assert_eq!(entra.timestamp(), Some("2026-11-27 10:00:00Z"));
        assert!(e.hint().is_some());

        let e = parse_error_response(
            400,
            br#"{"error":"invalid_scope","error_description":"AADSTS1002012: bad"}"#,
            None,
        );
        assert_eq!(e.entra().unwrap().codes(), &[1002012]);

        let e = parse_error_response(503, b"<html>", Some(Duration::from_secs(7)));
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn a_malformed_ext_expires_in_is_ignored() {
        let now = Instant::now();
        for ext in [r#""soon""#, "-1", "null", "{}", "1e999999"] {
            let body = format!(
                r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":{ext},"access_token":"abc"}}"#
            );
            let t = parse_token_response(body.as_bytes(), now, SystemTime::now())
                .unwrap_or_else(|e| panic!("ext_expires_in {ext}: {e}"));
            assert_eq!(t.expires_at() - now, Duration::from_secs(3599));
        }
    }

    #[test]
    fn error_codes_are_parsed_leniently() {
        let body = |codes: &str| {
            format!(
                r#"{{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":{codes},"trace_id":"t-1","correlation_id":"c-1"}}"#
            )
        };
        for (codes, expected) in [
            ("[7000215]", &[7000215][..]),
            (r#"["7000215"]"#, &[7000215]),
            (r#"[" 7000215 ", 50011]"#, &[7000215, 50011]),
            (r#"[null, "x", -1, 1.5, 99999999999, 50011]"#, &[50011]),
            ("7000215", &[7000215]),
            // Nothing usable: fall back to the code in the description.
            ("null", &[7000215]),
            (r#""AADSTS""#, &[7000215]),
            ("{}", &[7000215]),
            ("[]", &[7000215]),
        ] {
            let e = parse_error_response(401, body(codes).as_bytes(), None);
            assert_eq!(e.kind(), TokenErrorKind::Authentication, "{codes}");
            assert_eq!(e.entra().unwrap().codes(), expected, "{codes}");
            assert_eq!(e.entra().unwrap().trace_id(), Some("t-1"), "{codes}");
            assert_eq!(e.entra().unwrap().correlation_id(), Some("c-1"), "{codes}");
        }
    }

    #[test]
    fn a_hostile_error_body_is_printed_escaped_and_bounded() {
        let mib = "A".repeat(1 << 20);
        let body = serde_json::json!({
            "error": "invalid_client\r\nERROR forged",
            "error_description": format!("AADSTS7000215: x\u{1b}[2J\u{202e}{mib}\r\nTrace ID: t"),
            "error_codes": [7000215],
            "trace_id": format!("t\n{mib}"),
            "correlation_id": "c\u{1b}]0;pwned\u{7}",
            "timestamp": mib,
            "error_uri": "https://x/\r\nSet-Cookie: a",
        })
        .to_string();
        let e = parse_error_response(401, body.as_bytes(), None);
        assert_eq!(e.kind(), TokenErrorKind::Authentication);
        assert!(e.hint().is_some());
        for shown in [e.to_string(), format!("{e:?}")] {
            for bad in ['\n', '\r', '\u{1b}', '\u{7}', '\u{202e}'] {
                assert!(!shown.contains(bad), "{bad:?} in {shown:?}");
            }
            assert!(shown.len() < 8 * 1024, "{} bytes", shown.len());
        }
        assert!(
            e.to_string()
                .contains(r"correlation id c\u{1b}]0;pwned\u{7}"),
            "{e}"
        );

        let token_type = format!("pop\u{1b}[31m{mib}");
        let body =
            serde_json::json!({"token_type": token_type, "expires_in": 60, "access_token": "x"});
        let e = parse(&body.to_string()).unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains('\u{1b}') && shown.len() < 1024, "{shown:?}");
    }
}
