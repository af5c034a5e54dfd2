//! The token response and Entra's error body, parsed without ever echoing a token.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::time::Instant;
use zeroize::{Zeroize, Zeroizing};

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

/// The `access_token` as read from the body, in memory of its exact size that is zeroed when
/// dropped: a response refused after its token was read (a wrong `token_type`, no
/// `expires_in`, malformed JSON further on) leaves no copy of the token behind.
pub(crate) struct TokenText(pub(crate) Zeroizing<String>);

impl<'de> Deserialize<'de> for TokenText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TokenText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TokenText, E> {
                // Sized once: a buffer that grew would leave copies in the blocks it left.
                let mut text = Zeroizing::new(String::with_capacity(s.len()));
                text.push_str(s);
                Ok(TokenText(text))
            }
            fn visit_string<E: serde::de::Error>(self, mut s: String) -> Result<TokenText, E> {
                let text = self.visit_str(&s);
                s.zeroize();
                text
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: Option<TokenText>,
    token_type: Option<String>,
    expires_in: Option<Seconds>,
    // `ext_expires_in` (the lifetime during an Entra outage) is not read: unused, and a malformed
    // value must not fail an otherwise valid token.
    refresh_in: Option<Seconds>,
}

/// Reads a JSON answer that holds a token. serde's own message could quote the body (the
/// token), so the error says only where it broke, after `what` ("the ... is not JSON").
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, TokenError> {
    serde_json::from_slice(body).map_err(|e| {
        TokenError::invalid_response(format!(
            "{what} ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Turns a 2xx token response body into a token.
pub(crate) fn parse_token_response(
    body: &[u8],
    now: Instant,
    wall_now: SystemTime,
) -> Result<AccessToken, TokenError> {
    let raw: RawTokenResponse = from_json(body, "the token response is not the JSON Entra sends")?;
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
    let Some(TokenText(mut secret)) = raw.access_token else {
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
    // Moved, not copied: `issued` zeroes it once it is in the header value, or refused.
    AccessToken::issued(
        std::mem::take(&mut *secret),
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
        return aadsts::refusal(
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
        crate::error::TokenErrorKind::Transient
    } else {
        crate::error::TokenErrorKind::InvalidResponse
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
    use crate::error::TokenErrorKind;

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

/// The token in a response is zeroed before its memory is freed, on every path out of the
/// parser (the lib's tests run on the scanning allocator).
#[cfg(test)]
mod freed_memory {
    use super::*;
    use crate::scanning_allocator::scan;

    /// A token as Entra writes it (no JSON escapes: an escaped string is unescaped in
    /// serde_json's own scratch buffer, which is not this crate's to zero).
    const NEEDLE: &[u8] = b"eyJ0eXAi.Zq8-needle_token-that-must-be-zeroed.before-free";
    /// What a freed block must not hold: enough of the token to find the partial copies a
    /// growing buffer leaves behind.
    const PREFIX: &[u8] = NEEDLE.split_at(24).0;

    #[test]
    fn the_token_is_zeroed_on_every_path_out_of_the_parser() {
        let token = std::str::from_utf8(NEEDLE).unwrap();
        let bodies = [
            // Read, then refused.
            format!(r#"{{"access_token":"{token}","token_type":"pop","expires_in":3599}}"#),
            format!(r#"{{"access_token":"{token}","expires_in":3599}}"#),
            format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#),
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":0}}"#),
            format!(
                r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":18446744073709551615}}"#
            ),
            // Read, then the JSON fails.
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":"soon"}}"#),
            format!(r#"{{"access_token":"{token}","access_token":"{token}"}}"#),
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3599"#),
            // Accepted, then dropped.
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3599}}"#),
        ];
        for body in &bodies {
            let scan = scan(PREFIX);
            let outcome = parse_token_response(body.as_bytes(), Instant::now(), SystemTime::now());
            let ok = outcome.is_ok();
            drop(outcome);
            assert_eq!(
                scan.unzeroed_frees(),
                0,
                "a freed copy of the token (parsed: {ok}) after {body}"
            );
        }
    }
}

/// Property tests: no input panics or echoes a token; what Entra sends reads back as sent.
#[cfg(test)]
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::error::TokenErrorKind;

    /// A JSON value of any shape, a few levels deep (no floats: they need not print back
    /// exactly).
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                vec(("[a-z_]{1,8}", inner), 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// A number of seconds as Entra (a number), v1 endpoints and managed identity (a string,
    /// maybe padded) or a lenient issuer (a float with a fraction) write it.
    fn seconds_as_sent(n: u64) -> impl Strategy<Value = String> {
        prop_oneof![
            Just(n.to_string()),
            ("[ ]{0,2}", "[ ]{0,2}").prop_map(move |(l, r)| format!("\"{l}{n}{r}\"")),
            // Exact in an f64 for the lifetimes generated here.
            Just(format!("{n}.5")),
        ]
    }

    /// `Bearer` in any mix of cases.
    fn bearer() -> impl Strategy<Value = String> {
        vec(any::<bool>(), 6).prop_map(|upper| {
            "bearer"
                .chars()
                .zip(upper)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect()
        })
    }

    /// A JSON object written from `fields` (name, JSON text) in their order, with whitespace.
    fn object(fields: &[(String, String)], space: &str) -> String {
        let fields: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{space}{}{space}:{space}{value}", Value::from(&**name)))
            .collect();
        format!("{{{}{space}}}", fields.join(","))
    }

    /// A valid token response, in any field order, with unknown fields: (body, token,
    /// expires_in, refresh_in).
    fn token_response() -> impl Strategy<Value = (String, String, u64, Option<u64>)> {
        // Any header-safe token, `"` and `\` included (escaped in the JSON).
        let token = "[!-~]{1,300}";
        // Up to ten years: anything Entra could mean.
        let lifetime = 1..=10 * 365 * 86_400u64;
        (token, lifetime)
            .prop_flat_map(|(token, expires_in)| {
                let refresh_in = proptest::option::of(1..=expires_in);
                (Just(token), Just(expires_in), refresh_in)
            })
            .prop_flat_map(|(token, expires_in, refresh_in)| {
                let refresh_text = match refresh_in {
                    Some(r) => seconds_as_sent(r).prop_map(Some).boxed(),
                    None => Just(None).boxed(),
                };
                let unknown = vec(
                    (
                        "[a-z_]{1,12}".prop_filter("a known field", |n| {
                            !matches!(
                                n.as_str(),
                                "access_token" | "token_type" | "expires_in" | "refresh_in"
                            )
                        }),
                        json(),
                    ),
                    0..3,
                );
                (
                    Just(token),
                    Just(expires_in),
                    Just(refresh_in),
                    bearer(),
                    seconds_as_sent(expires_in),
                    refresh_text,
                    proptest::option::of(json()),
                    unknown,
                    prop_oneof![Just(""), Just(" "), Just("\n\t")],
                )
            })
            .prop_flat_map(
                |(
                    token,
                    expires_in,
                    refresh_in,
                    bearer,
                    expires_text,
                    refresh_text,
                    ext,
                    unknown,
                    space,
                )| {
                    let mut fields = vec![
                        ("access_token".to_owned(), Value::from(&*token).to_string()),
                        ("token_type".to_owned(), Value::from(bearer).to_string()),
                        ("expires_in".to_owned(), expires_text),
                    ];
                    if let Some(r) = refresh_text {
                        fields.push(("refresh_in".to_owned(), r));
                    }
                    // ext_expires_in is not read: any value must do.
                    if let Some(ext) = ext {
                        fields.push(("ext_expires_in".to_owned(), ext.to_string()));
                    }
                    fields.extend(unknown.into_iter().map(|(n, v)| (n, v.to_string())));
                    (
                        Just(fields).prop_shuffle(),
                        Just((token, expires_in, refresh_in, space)),
                    )
                },
            )
            .prop_map(|(fields, (token, expires_in, refresh_in, space))| {
                (object(&fields, space), token, expires_in, refresh_in)
            })
    }

    /// A token-response-shaped object whose every field may be missing, of the wrong type or
    /// out of range: (body, the token text in it, if any).
    fn token_response_like() -> impl Strategy<Value = (String, Option<String>)> {
        // "SECRET" marks the token; a space or control character makes it invalid.
        let secret = r"SECRET[ -~\x00-\x1fé]{8,40}";
        let seconds = prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter_map("not JSON", serde_json::Number::from_f64)
                .prop_map(|n| n.to_string()),
            ".{0,24}".prop_map(|s| Value::from(s).to_string()),
            any::<u64>().prop_map(|n| format!("\"{n}\"")),
            json().prop_map(|v| v.to_string()),
        ];
        let token_type = prop_oneof![
            bearer().prop_map(|b| Value::from(b).to_string()),
            ".{0,300}".prop_map(|s| Value::from(s).to_string()),
            json().prop_map(|v| v.to_string()),
        ];
        (
            proptest::option::of(secret),
            // Not a string: a token other than the marked one would be a token.
            proptest::option::of(json().prop_filter("a string", |v| !v.is_string())),
            proptest::option::of(token_type),
            proptest::option::of(seconds.clone()),
            proptest::option::of(seconds),
        )
            .prop_map(
                |(secret, other_token, token_type, expires_in, refresh_in)| {
                    let mut fields = Vec::new();
                    match (&secret, other_token) {
                        (Some(s), _) => {
                            fields.push(("access_token".to_owned(), Value::from(&**s).to_string()))
                        }
                        (None, Some(v)) => fields.push(("access_token".to_owned(), v.to_string())),
                        (None, None) => {}
                    }
                    let named = [
                        ("token_type", token_type),
                        ("expires_in", expires_in),
                        ("refresh_in", refresh_in),
                    ];
                    for (name, value) in named {
                        if let Some(value) = value {
                            fields.push((name.to_owned(), value));
                        }
                    }
                    (object(&fields, ""), secret)
                },
            )
    }

    /// No line break, terminal escape or bidi override: nothing that rewrites what is around it.
    fn no_control_characters(shown: &str) -> bool {
        !shown.chars().any(|c| {
            c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn any_bytes_as_a_token_response_are_a_typed_error_or_a_token(body in vec(any::<u8>(), 0..512)) {
            if let Err(e) = parse_token_response(&body, Instant::now(), SystemTime::now()) {
                prop_assert_eq!(e.kind(), TokenErrorKind::InvalidResponse);
            }
        }

        #[test]
        fn a_valid_token_response_reads_back_as_sent(
            (body, token, expires_in, refresh_in) in token_response()
        ) {
            let (now, wall) = (Instant::now(), SystemTime::now());
            let t = parse_token_response(body.as_bytes(), now, wall)
                .map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
            prop_assert_eq!(t.secret(), token.as_str());
            prop_assert_eq!(t.expires_at() - now, Duration::from_secs(expires_in));
            prop_assert_eq!(
                t.expires_on().duration_since(wall).ok(),
                Some(Duration::from_secs(expires_in))
            );
            prop_assert_eq!(t.refresh_in(), refresh_in.map(Duration::from_secs));
        }

        #[test]
        fn a_malformed_token_response_fails_typed_and_never_shows_the_token(
            (body, secret) in token_response_like()
        ) {
            match parse_token_response(body.as_bytes(), Instant::now(), SystemTime::now()) {
                Ok(t) => {
                    // Only a well-formed token comes back, and it is the one sent.
                    prop_assert_eq!(Some(t.secret()), secret.as_deref());
                }
                Err(e) => {
                    prop_assert_eq!(e.kind(), TokenErrorKind::InvalidResponse);
                    let shown = format!("{e} {e:?}");
                    prop_assert!(no_control_characters(&shown), "{:?}", shown);
                    if let Some(secret) = &secret {
                        prop_assert!(!shown.contains(secret.as_str()), "{}", shown);
                    }
                }
            }
        }

        #[test]
        fn any_bytes_as_an_error_response_are_a_printable_typed_error(
            status in prop_oneof![any::<u16>(), 400..600u16, Just(408), Just(429)],
            body in vec(any::<u8>(), 0..512),
            retry_after in proptest::option::of(any::<u32>().prop_map(|s| Duration::from_secs(s.into()))),
        ) {
            let e = parse_error_response(status, &body, retry_after);
            prop_assert_eq!(e.retry_after(), retry_after);
            for shown in [e.to_string(), format!("{e:?}")] {
                prop_assert!(no_control_characters(&shown), "{:?}", shown);
            }
            if e.entra().is_none() {
                let transient = status >= 500 || status == 429 || status == 408;
                prop_assert_eq!(e.is_transient(), transient, "HTTP {}", status);
            }
        }

        #[test]
        fn an_entra_error_body_reads_back_as_sent(
            status in 400..=599u16,
            error in "[a-z_]{1,40}",
            code_in_description in proptest::option::of(1..=9_999_999u32),
            // Lower case: no `AADSTS` by chance.
            description in "[a-z ,.:]{0,200}",
            codes in vec(any::<u32>(), 0..4),
            codes_as_strings in any::<bool>(),
            ids in proptest::array::uniform4(proptest::option::of("[ -~]{0,256}")),
            retry_after in proptest::option::of(any::<u32>().prop_map(|s| Duration::from_secs(s.into()))),
        ) {
            let description = match code_in_description {
                Some(code) => format!("AADSTS{code}: {description}"),
                None => description,
            };
            let [trace_id, correlation_id, timestamp, error_uri] = ids;
            let mut body = serde_json::json!({
                "error": error,
                "error_description": description,
                "error_codes": if codes_as_strings {
                    Value::from(codes.iter().map(|c| Value::from(c.to_string())).collect::<Vec<_>>())
                } else {
                    Value::from(codes.clone())
                },
            });
            for (name, value) in [
                ("trace_id", &trace_id),
                ("correlation_id", &correlation_id),
                ("timestamp", &timestamp),
                ("error_uri", &error_uri),
            ] {
                if let Some(value) = value {
                    body[name] = Value::from(value.as_str());
                }
            }
            let e = parse_error_response(status, body.to_string().as_bytes(), retry_after);
            let entra = e.entra().ok_or_else(|| TestCaseError::fail(format!("no Entra error: {e}")))?;
            prop_assert_eq!(entra.status(), status);
            prop_assert_eq!(entra.error(), error.as_str());
            prop_assert_eq!(entra.description(), description.as_str());
            let expected_codes = if codes.is_empty() {
                code_in_description.into_iter().collect()
            } else {
                codes
            };
            prop_assert_eq!(entra.codes(), expected_codes.as_slice());
            prop_assert_eq!(entra.trace_id(), trace_id.as_deref());
            prop_assert_eq!(entra.correlation_id(), correlation_id.as_deref());
            prop_assert_eq!(entra.timestamp(), timestamp.as_deref());
            prop_assert_eq!(entra.error_uri(), error_uri.as_deref());
            prop_assert_eq!(e.retry_after(), retry_after);
        }

        #[test]
        fn a_hostile_entra_error_body_prints_on_one_line_and_bounded(
            status in any::<u16>(),
            fields in proptest::array::uniform6("(?s).{0,600}"),
            codes in json(),
        ) {
            let [error, description, trace_id, correlation_id, timestamp, error_uri] = fields;
            let body = serde_json::json!({
                "error": error,
                "error_description": description,
                "error_codes": codes,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "timestamp": timestamp,
                "error_uri": error_uri,
            });
            let e = parse_error_response(status, body.to_string().as_bytes(), None);
            let entra = e.entra().ok_or_else(|| TestCaseError::fail(format!("no Entra error: {e}")))?;
            for shown in [e.to_string(), format!("{e:?}")] {
                prop_assert!(no_control_characters(&shown), "{:?}", shown);
                prop_assert!(shown.len() < 8 * 1024, "{} bytes", shown.len());
            }
            for field in [Some(entra.error()), entra.trace_id(), entra.correlation_id(), entra.timestamp(), entra.error_uri()] {
                let field = field.unwrap_or_default();
                prop_assert!(no_control_characters(field), "{:?}", field);
                prop_assert!(field.len() <= MAX_SERVER_FIELD_BYTES + '…'.len_utf8(), "{} bytes", field.len());
            }
        }
    }
}
