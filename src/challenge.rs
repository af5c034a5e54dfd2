//! [`BearerChallenge`]: what a 401 response's `WWW-Authenticate` headers say about the token.
//!
//! A protected API refuses a token with `401` and a Bearer challenge (RFC 6750 §3):
//!
//! - `error="invalid_token"`: the token expired or was revoked. Drop it; a new one will do.
//! - `error="insufficient_claims", claims="<base64 JSON>"`: a Continuous Access Evaluation
//!   (CAE) claims challenge. A new token must be requested with those claims (sent as the
//!   `claims` parameter of the token request); the cached token will not do.
//!
//! The middleware reads these itself (see `refusal.rs` for what it does about them); this type
//! is public for code that drives its own retries.
//!
//! ```
//! use tower_entra::BearerChallenge;
//!
//! // {"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}, base64url without padding
//! let header = r#"Bearer realm="", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxNzAwMDAwMDAwIn19fQ""#;
//! let challenge = BearerChallenge::find([header]).expect("a Bearer challenge");
//! assert!(challenge.is_insufficient_claims());
//! assert_eq!(
//!     challenge.claims(),
//!     Some(r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#)
//! );
//! ```

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde_json::Value;

/// A Bearer challenge read from `WWW-Authenticate` headers.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    error: Option<String>,
    claims: Option<String>,
}

impl std::fmt::Debug for BearerChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerChallenge")
            .field("error", &self.error)
            .field("claims", &self.claims)
            .finish()
    }
}

impl BearerChallenge {
    /// The first Bearer challenge in `values` (the `WWW-Authenticate` header values of a
    /// response, in order; one value may hold several comma-separated challenges). A challenge
    /// with an `error` is preferred over one without.
    pub fn find<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<BearerChallenge> {
        let mut first = None;
        for value in values {
            for (scheme, params) in parse_challenges(value) {
                if !scheme.eq_ignore_ascii_case("bearer") {
                    continue;
                }
                let mut challenge = BearerChallenge {
                    error: None,
                    claims: None,
                };
                for (name, value) in params {
                    if name.eq_ignore_ascii_case("error") {
                        challenge.error = Some(value);
                    } else if name.eq_ignore_ascii_case("claims") {
                        challenge.claims = decode_claims(&value);
                    }
                }
                if challenge.error.is_some() {
                    return Some(challenge);
                }
                first.get_or_insert(challenge);
            }
        }
        first
    }

    /// The `error` parameter, e.g. `invalid_token` or `insufficient_claims`.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The decoded `claims` parameter (a JSON object), when present and well-formed.
    pub fn claims(&self) -> Option<&str> {
        self.claims.as_deref()
    }

    /// `error="invalid_token"`: the token expired or was revoked.
    pub fn is_invalid_token(&self) -> bool {
        self.error() == Some("invalid_token")
    }

    /// `error="insufficient_claims"`: a claims challenge (Continuous Access Evaluation).
    pub fn is_insufficient_claims(&self) -> bool {
        self.error() == Some("insufficient_claims")
    }
}

/// Decodes a `claims` value: base64 (standard or url alphabet, padded or not) of a JSON object;
/// a bare JSON object is accepted too. Returns compact JSON.
pub(crate) fn decode_claims(value: &str) -> Option<String> {
    let value = value.trim();
    let json = if value.starts_with('{') {
        value.as_bytes().to_vec()
    } else {
        let unpadded = value.trim_end_matches('=');
        STANDARD_NO_PAD
            .decode(unpadded)
            .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
            .ok()?
    };
    match serde_json::from_slice::<Value>(&json).ok()? {
        v @ Value::Object(_) => serde_json::to_string(&v).ok(),
        _ => None,
    }
}

/// Splits a `WWW-Authenticate` value into challenges: `(scheme, [(name, value)])`, with quoted
/// values unquoted. Lenient: a malformed tail is dropped, never an error.
fn parse_challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut p = Parser {
        s: value.as_bytes(),
        i: 0,
    };
    loop {
        p.skip(|b| b == b' ' || b == b'\t' || b == b',');
        let scheme = p.token();
        if scheme.is_empty() {
            break;
        }
        let mut params = Vec::new();
        loop {
            p.skip(|b| b == b' ' || b == b'\t');
            let save = p.i;
            // A param is `name = value`; anything else ends this challenge.
            let name = p.token();
            p.skip(|b| b == b' ' || b == b'\t');
            if name.is_empty() || !p.eat(b'=') {
                // A token68 (e.g. `Negotiate abc+/`) or the end: skip it.
                p.i = save;
                let _ = p.token68();
                break;
            }
            p.skip(|b| b == b' ' || b == b'\t');
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token68()
            };
            params.push((name, value));
            p.skip(|b| b == b' ' || b == b'\t');
            if !p.eat(b',') {
                break;
            }
            // After a comma: another param of this challenge, or the next challenge's scheme.
            let save = p.i;
            p.skip(|b| b == b' ' || b == b'\t' || b == b',');
            let _ = p.token();
            p.skip(|b| b == b' ' || b == b'\t');
            let is_param = p.peek() == Some(b'=');
            p.i = save;
            if !is_param {
                break;
            }
        }
        // Every turn consumes a non-empty scheme or stops, so this ends.
        out.push((scheme, params));
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }
    fn take(&mut self, f: impl Fn(u8) -> bool) -> String {
        let start = self.i;
        self.skip(f);
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    /// RFC 7230 tchar.
    fn token(&mut self) -> String {
        self.take(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }
    /// token68 (letters, digits, `-._~+/` and trailing `=`).
    fn token68(&mut self) -> String {
        self.take(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
    }
    fn quoted(&mut self) -> String {
        let _ = self.eat(b'"');
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    // Contains bytes that encode to `+`/`/` in standard base64 and need padding.
    const CLAIMS: &str = r#"{"access_token":{"nbf":{"essential":true,"value":"1726077595"},"xms_caeerror":{"value":"10012"}},"k":">>>??"}"#;

    fn challenge(claims: &str) -> String {
        format!(
            r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="{claims}""#
        )
    }

    fn compact(json: &str) -> String {
        serde_json::to_string(&serde_json::from_str::<Value>(json).unwrap()).unwrap()
    }

    /// The decoded claims of the Bearer challenge in `values`.
    fn claims(values: &[&str]) -> Option<String> {
        BearerChallenge::find(values.iter().copied())?
            .claims()
            .map(str::to_owned)
    }

    #[test]
    fn claims_parse_in_every_base64_variant() {
        let bytes = CLAIMS.as_bytes();
        let variants = [
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
        ];
        // The test data must actually exercise padding and both alphabets.
        assert!(variants[0].ends_with('='), "{}", variants[0]);
        assert!(variants[0].contains('+') || variants[0].contains('/'));
        assert!(variants[2].contains('-') || variants[2].contains('_'));
        for v in &variants {
            let header = challenge(v);
            assert_eq!(claims(&[&header]), Some(compact(CLAIMS)), "{v}");
        }
        // A bare JSON object, quoted with escapes, is read too.
        let raw = format!(
            r#"Bearer error="insufficient_claims", claims="{}""#,
            CLAIMS.replace('"', "\\\"")
        );
        assert_eq!(claims(&[&raw]), Some(compact(CLAIMS)));
    }

    #[test]
    fn finds_the_bearer_challenge_among_several_headers_and_schemes() {
        let b64 = URL_SAFE_NO_PAD.encode(CLAIMS);
        let bearer = challenge(&b64);
        let headers = [
            r#"Basic realm="api""#.to_owned(),
            r#"Bearer realm="api""#.to_owned(),
            bearer.clone(),
        ];
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        assert_eq!(claims(&refs), Some(compact(CLAIMS)));

        // Several challenges in one value.
        let one = format!(r#"Basic realm="x", Negotiate, {bearer}, PoP nonce="n""#);
        assert_eq!(claims(&[&one]), Some(compact(CLAIMS)));
        // token68 scheme before the Bearer one.
        let one = format!(r#"Basic dXNlcjpwYXNz=, {bearer}"#);
        assert_eq!(claims(&[&one]), Some(compact(CLAIMS)));
    }

    #[test]
    fn errors_and_unreadable_claims() {
        let find = |values: &[&str]| BearerChallenge::find(values.iter().copied());
        let expired = find(&[
            r#"Bearer error="invalid_token", error_description="The token expired, at 12:00""#,
        ])
        .unwrap();
        assert!(expired.is_invalid_token() && !expired.is_insufficient_claims());
        assert!(
            find(&["bearer error=invalid_token"])
                .unwrap()
                .is_invalid_token()
        );
        assert_eq!(find(&[r#"Bearer realm="""#]).unwrap().error(), None);
        assert_eq!(find(&[r#"Basic error="invalid_token""#]), None);
        assert_eq!(find(&[]), None);
        // Claims that are not base64 of a JSON object are not read.
        for unreadable in [
            r#"Bearer error="insufficient_claims", claims="%%%""#,
            r#"Bearer error="insufficient_claims", claims="WzEsMl0""#, // [1,2]
        ] {
            let c = find(&[unreadable]).unwrap();
            assert!(c.is_insufficient_claims());
            assert_eq!(c.claims(), None);
        }
        // Garbage does not hang or panic.
        for junk in [
            "=",
            ",,,",
            "Bearer ,=,",
            "\"",
            "Bearer error=\"unterminated",
        ] {
            let _ = find(&[junk]);
        }
    }
}

/// Property tests: no header panics the parser; a challenge written as servers write it reads
/// back as written.
#[cfg(test)]
mod properties {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// A JSON object of any shape, a few levels deep (no floats: they need not print back
    /// exactly).
    fn json_object() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "(?s).{0,16}".prop_map(Value::from),
        ];
        let object = |inner| {
            vec(("(?s).{0,8}", inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect()))
        };
        let value = leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                object(inner)
            ]
        });
        object(value.boxed())
    }

    /// `claims` as a server may send it: base64 in either alphabet, padded or not, or the bare
    /// JSON; quoted, or bare when that is a token68.
    fn claims_param(claims: &Value) -> impl Strategy<Value = String> + use<> {
        let json = claims.to_string();
        let bytes = json.as_bytes();
        let encodings = vec![
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
        ];
        let bare_json = quote(&json);
        (
            proptest::sample::select(encodings),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(move |(encoded, quoted, as_json)| match (as_json, quoted) {
                (true, _) => bare_json.clone(),
                // An empty token68 is no value; base64 of `{}` is never empty.
                (false, true) => quote(&encoded),
                (false, false) => encoded,
            })
    }

    /// `value` as an RFC 7230 quoted-string.
    fn quote(value: &str) -> String {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }

    /// The pieces of a `WWW-Authenticate` value.
    const PIECES: &[&str] = &[
        "Bearer ", ",", "=", "\"", "\\", "error=", "claims=", "e30", "{", "é", "\u{0}", " ",
    ];

    /// One change that breaks a well-formed value: cut it short, or put a piece in.
    #[derive(Debug, Clone)]
    enum Edit {
        Truncate(proptest::sample::Index),
        Insert(proptest::sample::Index, &'static str),
    }

    impl Edit {
        fn apply(&self, value: &mut String) {
            let at = |index: &proptest::sample::Index| {
                let mut i = index.index(value.len() + 1);
                while !value.is_char_boundary(i) {
                    i -= 1;
                }
                i
            };
            match self {
                Edit::Truncate(i) => value.truncate(at(i)),
                Edit::Insert(i, piece) => value.insert_str(at(i), piece),
            }
        }
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            any::<proptest::sample::Index>().prop_map(Edit::Truncate),
            (
                any::<proptest::sample::Index>(),
                proptest::sample::select(PIECES)
            )
                .prop_map(|(i, p)| Edit::Insert(i, p)),
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

    /// A parameter other than `error` and `claims`, with a quoted or token68 value.
    fn other_param() -> impl Strategy<Value = String> {
        let name = "[a-z_]{1,16}".prop_filter("error or claims", |n| {
            !n.eq_ignore_ascii_case("error") && !n.eq_ignore_ascii_case("claims")
        });
        let value = prop_oneof![
            "(?s).{0,40}".prop_map(|v| quote(&v)),
            "[A-Za-z0-9._~+/-]{1,20}=*",
        ];
        (name, value).prop_map(|(n, v)| format!("{n}={v}"))
    }

    /// Challenges of other schemes, as may come before or after the Bearer one.
    fn other_challenge() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Negotiate".to_owned()),
            "[A-Za-z0-9+/]{1,20}={0,2}".prop_map(|t| format!("Negotiate {t}")),
            "(?s).{0,20}".prop_map(|realm| format!("Basic realm={}", quote(&realm))),
            vec(other_param(), 1..3).prop_map(|p| format!("PoP {}", p.join(", "))),
        ]
    }

    /// Optional white space around `=` and `,` (RFC 7230 BWS / OWS).
    fn space() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(""), Just(" "), Just("\t "), Just("  ")]
    }

    /// A Bearer challenge holding `error` (any text, quoted; or a bare token) and `claims`,
    /// among other parameters in any order, among other challenges, in one or several header
    /// values; an error-less Bearer challenge may come first.
    fn challenge_headers() -> impl Strategy<Value = (Vec<String>, String, Value)> {
        // Quotes and backslashes, escaped in a quoted-string, more often than by chance.
        let error = prop_oneof!["(?s).{0,40}", "[a-z_]{1,30}", r#"[a-z"\\ ]{0,20}"#];
        (error, json_object())
            .prop_flat_map(|(error, claims)| {
                let error_param = if !error.is_empty()
                    && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                {
                    prop_oneof![Just(error.clone()), Just(quote(&error))].boxed()
                } else {
                    Just(quote(&error)).boxed()
                };
                // The Bearer challenge's parameters in any order, and the white space used
                // around every `=` and `,` of the headers.
                let params = (
                    error_param,
                    claims_param(&claims),
                    vec(other_param(), 0..4),
                    space(),
                )
                    .prop_flat_map(
                        |(error_param, claims_param, mut params, sp)| {
                            params.push(format!("error{sp}={sp}{error_param}"));
                            params.push(format!("claims{sp}={sp}{claims_param}"));
                            (Just(params).prop_shuffle(), Just(sp))
                        },
                    );
                (
                    Just(error),
                    Just(claims),
                    params,
                    bearer(),
                    vec(other_challenge(), 0..3),
                    vec(other_challenge(), 0..3),
                    any::<bool>(),
                    any::<bool>(),
                )
            })
            .prop_map(
                |(error, claims, (params, sp), scheme, before, after, errorless_first, split)| {
                    let bearer = format!("{scheme} {}", params.join(&format!("{sp},{sp}")));
                    let mut challenges = before;
                    if errorless_first {
                        challenges.insert(0, "Bearer realm=\"api\"".to_owned());
                    }
                    challenges.push(bearer);
                    challenges.extend(after);
                    let headers = if split {
                        challenges
                    } else {
                        vec![challenges.join(&format!("{sp},{sp}"))]
                    };
                    (headers, error, claims)
                },
            )
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn any_header_values_are_read_without_panic(
            values in vec(vec(any::<u8>(), 0..128), 0..4),
            texts in vec("(?s).{0,128}", 0..4),
            // Random bytes seldom reach the corners of a grammar; broken challenges do.
            (broken, _, _) in challenge_headers(),
            edits in vec(edit(), 1..4),
        ) {
            let pieces = broken.into_iter().map(|mut value| {
                for edit in &edits {
                    edit.apply(&mut value);
                }
                value
            });
            let values: Vec<String> = values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .chain(texts)
                .chain(pieces)
                .collect();
            if let Some(c) = BearerChallenge::find(values.iter().map(String::as_str)) {
                // What is read as claims is always a JSON object.
                if let Some(claims) = c.claims() {
                    prop_assert!(serde_json::from_str::<Value>(claims).is_ok_and(|v| v.is_object()));
                }
            }
        }

        #[test]
        fn a_challenge_reads_back_as_written((headers, error, claims) in challenge_headers()) {
            let c = BearerChallenge::find(headers.iter().map(String::as_str))
                .ok_or_else(|| TestCaseError::fail(format!("no challenge in {headers:?}")))?;
            prop_assert_eq!(c.error(), Some(error.as_str()), "{:?}", headers);
            let read: Option<Value> = c.claims().and_then(|s| serde_json::from_str(s).ok());
            prop_assert_eq!(read, Some(claims), "{:?}", headers);
        }
    }
}
