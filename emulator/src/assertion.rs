//! Client assertion validation: certificate credentials (`private_key_jwt`)
//! and federated identity credentials (workload identity federation).

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;

use crate::cert::parse_certificate;
use crate::directory::AppRecord;
use crate::entra_error::EntraError;
use crate::form::Form;
use crate::jwt::{self, Parsed};
use crate::util::{entra_timestamp, unix_now};

/// The only accepted `client_assertion_type`.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Allowed clock skew for assertion times, in seconds.
const SKEW: i64 = 300;
/// Longest accepted certificate assertion lifetime (`exp` - `nbf`), in seconds.
const MAX_LIFETIME: i64 = 86_400;

const CERT_DOCS: &str = "Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .";

fn invalid_client(code: u32, message: impl Into<String>) -> EntraError {
    EntraError::new(401, "invalid_client", code, message)
}

fn malformed(why: &str) -> EntraError {
    invalid_client(50027, format!("JWT token is invalid or malformed. {why}"))
}

fn key_not_found(thumbprint: &str, client_id: &str) -> EntraError {
    invalid_client(
        700027,
        format!(
            "Client assertion failed signature validation. (Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.)"
        ),
    )
}

fn bad_signature() -> EntraError {
    invalid_client(
        700027,
        "Client assertion failed signature validation. (Reason - The signature is invalid.)",
    )
}

/// What a successful assertion check leaves to record: a `jti` to remember
/// (with the assertion's expiry), for replay detection.
pub(crate) type JtiRecord = Option<((String, String), i64)>;

/// Validates the `client_assertion` of `form` for `app`. `audiences` are the
/// accepted `aud` values (the token endpoint URLs of the tenant).
pub(crate) fn validate(
    app: &AppRecord,
    client_id: &str,
    form: &Form,
    audiences: &[String],
    trusted_issuers: &HashMap<String, Value>,
    used_jtis: &HashMap<(String, String), i64>,
) -> Result<JtiRecord, EntraError> {
    match form.get("client_assertion_type") {
        None => {
            return Err(EntraError::new(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            ));
        }
        Some(JWT_BEARER) => {}
        Some(other) => {
            return Err(EntraError::new(
                400,
                "invalid_request",
                90013,
                format!(
                    "Invalid input received from the user. The client_assertion_type '{other}' is not supported; use '{JWT_BEARER}'."
                ),
            ));
        }
    }
    let assertion = form.get("client_assertion").unwrap_or_default();
    let parsed = jwt::parse(assertion).map_err(malformed)?;
    let Some(alg) = parsed.alg() else {
        let alg = parsed.header_str("alg").unwrap_or("none");
        return Err(EntraError::new(
            400,
            "invalid_request",
            5002738,
            format!(
                "Invalid JWT token. '{alg}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256, PS256'"
            ),
        ));
    };
    let iss = parsed.claim_str("iss").unwrap_or_default();
    if !iss.is_empty() && !iss.eq_ignore_ascii_case(client_id) {
        return validate_federated(app, &parsed, alg, trusted_issuers).map(|()| None);
    }

    // Certificate credential: find the key.
    let public_key = if let Some(x5c) = parsed.header.get("x5c") {
        let leaf_der = x5c
            .as_array()
            .and_then(|chain| chain.first())
            .and_then(Value::as_str)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .ok_or_else(|| malformed("The 'x5c' header is not an array of base64 certificates."))?;
        let leaf = parse_certificate(&leaf_der)
            .map_err(|e| malformed(&format!("The 'x5c' leaf certificate is invalid: {e}.")))?;
        // Thumbprint headers, when present, must name the leaf.
        let s256 = parsed.header_str("x5t#S256");
        let sha1 = parsed.header_str("x5t");
        if s256.is_some_and(|t| t != leaf.x5t_s256) || sha1.is_some_and(|t| t != leaf.x5t) {
            return Err(bad_signature());
        }
        let registered = app.certificates.iter().any(|c| c.x5t_s256 == leaf.x5t_s256);
        let trusted = leaf.subject_cn.as_deref().is_some_and(|cn| {
            app.trusted_subjects
                .iter()
                .any(|t| t.eq_ignore_ascii_case(cn))
        });
        if !registered && !trusted {
            return Err(key_not_found(&leaf.x5t, client_id));
        }
        leaf.public_key
    } else if let Some(t) = parsed.header_str("x5t#S256") {
        app.certificates
            .iter()
            .find(|c| c.x5t_s256 == t)
            .map(|c| c.public_key.clone())
            .ok_or_else(|| key_not_found(t, client_id))?
    } else if let Some(t) = parsed.header_str("x5t") {
        app.certificates
            .iter()
            .find(|c| c.x5t == t)
            .map(|c| c.public_key.clone())
            .ok_or_else(|| key_not_found(t, client_id))?
    } else {
        return Err(key_not_found("", client_id));
    };
    if !parsed.verify(alg, &public_key) {
        return Err(bad_signature());
    }

    let sub = parsed.claim_str("sub").unwrap_or_default();
    if !iss.eq_ignore_ascii_case(client_id) || !sub.eq_ignore_ascii_case(client_id) {
        return Err(invalid_client(
            700021,
            format!(
                "Client assertion application identifier doesn't match 'client_id' parameter. {CERT_DOCS}"
            ),
        ));
    }
    if !audience_matches(&parsed, |aud| {
        audiences.iter().any(|a| a.eq_ignore_ascii_case(aud))
    }) {
        return Err(invalid_client(
            700023,
            format!("Client assertion audience claim does not match Realm issuer. {CERT_DOCS}"),
        ));
    }
    let exp = check_times(&parsed, true)?;
    let jti = parsed
        .claim_str("jti")
        .filter(|j| !j.is_empty())
        .ok_or_else(|| malformed("The client assertion has no 'jti' claim."))?;
    let key = (client_id.to_ascii_lowercase(), jti.to_owned());
    if used_jtis
        .get(&key)
        .is_some_and(|&e| e + SKEW >= unix_now() as i64)
    {
        return Err(invalid_client(
            50013,
            format!(
                "Assertion is invalid: the client assertion with jti '{jti}' has already been used. Create a new assertion (with a unique 'jti') for each request."
            ),
        ));
    }
    Ok(Some((key, exp)))
}

/// `aud` may be a string or an array of strings.
fn audience_matches(parsed: &Parsed, pred: impl Fn(&str) -> bool) -> bool {
    match parsed.claims.get("aud") {
        Some(Value::String(a)) => pred(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(pred),
        _ => false,
    }
}

/// Checks `exp` / `nbf` with [`SKEW`]; returns `exp`. `cap_lifetime` also
/// refuses assertions valid for more than [`MAX_LIFETIME`].
fn check_times(parsed: &Parsed, cap_lifetime: bool) -> Result<i64, EntraError> {
    let now = unix_now() as i64;
    let exp = parsed
        .claim_secs("exp")
        .ok_or_else(|| malformed("The assertion has no 'exp' claim."))?;
    let nbf = parsed
        .claim_secs("nbf")
        .or_else(|| parsed.claim_secs("iat"))
        .unwrap_or(now);
    let ts = |s: i64| entra_timestamp(s.max(0) as u64);
    let out_of_range = |extra: &str| {
        invalid_client(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.{extra} {CERT_DOCS}",
                ts(now),
                ts(nbf),
                ts(exp)
            ),
        )
    };
    if now > exp + SKEW || nbf > now + SKEW {
        return Err(out_of_range(""));
    }
    if cap_lifetime && exp - nbf > MAX_LIFETIME {
        return Err(out_of_range(
            " The assertion lifetime (exp - nbf) exceeds the allowed maximum of 1 day.",
        ));
    }
    Ok(exp)
}

/// An assertion whose `iss` is not the client: an external token, accepted
/// through a federated identity credential.
fn validate_federated(
    app: &AppRecord,
    parsed: &Parsed,
    alg: jwt::Alg,
    trusted_issuers: &HashMap<String, Value>,
) -> Result<(), EntraError> {
    let iss = parsed.claim_str("iss").unwrap_or_default();
    let sub = parsed.claim_str("sub").unwrap_or_default();
    let matching = app.federated.iter().any(|f| {
        f.issuer == iss && f.subject == sub && audience_matches(parsed, |a| a == f.audience)
    });
    if !matching {
        let aud = match parsed.claims.get("aud") {
            Some(Value::String(a)) => a.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        return Err(EntraError::new(
            400,
            "invalid_client",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{aud}'. https://docs.microsoft.com/azure/active-directory/develop/workload-identity-federation"
            ),
        ));
    }
    let keys: Vec<&Value> = trusted_issuers
        .get(iss)
        .and_then(|jwks| jwks.get("keys"))
        .and_then(Value::as_array)
        .map(|k| k.iter().collect())
        .unwrap_or_default();
    let kid = parsed.header_str("kid");
    let candidates: Vec<&Value> = match kid {
        Some(kid) => keys
            .into_iter()
            .filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            .collect(),
        None => keys,
    };
    if candidates.is_empty() {
        return Err(invalid_client(
            700027,
            format!(
                "Client assertion failed signature validation. (Reason - The key was not found. Issuer: '{iss}', key id: '{}'.)",
                kid.unwrap_or("")
            ),
        ));
    }
    let verified = candidates
        .iter()
        .filter_map(|k| jwt::public_key_from_jwk(k))
        .any(|key| parsed.verify(alg, &key));
    if !verified {
        return Err(bad_signature());
    }
    check_times(parsed, false)?;
    Ok(())
}
