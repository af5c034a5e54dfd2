//! Managed identity answers as Microsoft sends them: the token response (numbers as JSON
//! numbers or strings; `expires_in`, or `expires_on` as Unix seconds or, on App Service's 2017
//! API, a date) and each source's error body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::endpoint::{TokenText, from_json};
use crate::error::{MAX_SERVER_FIELD_BYTES, TokenError, server_text};
use crate::token::AccessToken;

#[derive(Deserialize)]
struct RawToken {
    /// Read into zeroed-on-drop memory of its own size: an answer refused after it (malformed
    /// JSON further on, a wrong `token_type`) leaves no copy behind.
    access_token: Option<TokenText>,
    token_type: Option<String>,
    expires_in: Option<Value>,
    expires_on: Option<Value>,
    refresh_in: Option<Value>,
}

/// Turns a 2xx answer into a token. `now` and `wall_now` are when the request was sent.
pub(super) fn parse_token(
    body: &[u8],
    now: Instant,
    wall_now: SystemTime,
) -> Result<AccessToken, TokenError> {
    let raw: RawToken = from_json(body, "the managed identity token response is not JSON")?;
    let Some(TokenText(mut secret)) = raw.access_token.filter(|t| !t.0.is_empty()) else {
        return Err(TokenError::invalid_response(
            "the managed identity token response has no access_token",
        ));
    };
    match raw.token_type.as_deref() {
        // Service Fabric and older endpoints may leave it out; a bearer token is all they issue.
        None => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            return Err(TokenError::invalid_response(format!(
                "the managed identity token response has token_type \"{}\"; only Bearer tokens are supported",
                server_text(other, MAX_SERVER_FIELD_BYTES)
            )));
        }
    }
    let expires_in = match (
        raw.expires_in.as_ref().and_then(seconds),
        raw.expires_on.as_ref(),
    ) {
        // Relative, so immune to a skewed host clock: preferred when sent.
        (Some(secs), _) => Duration::from_secs(secs),
        (None, Some(on)) => {
            let at = expires_on(on).ok_or_else(|| {
                TokenError::invalid_response(
                    "the managed identity token response's expires_on is neither Unix seconds nor a date",
                )
            })?;
            at.duration_since(wall_now).map_err(|_| {
                TokenError::invalid_response(
                    "the managed identity token response's expires_on is in the past; check the host's clock",
                )
            })?
        }
        (None, None) => {
            return Err(TokenError::invalid_response(
                "the managed identity token response has neither expires_in nor expires_on",
            ));
        }
    };
    let token = AccessToken::issued(
        std::mem::take(&mut *secret),
        expires_in,
        None,
        now,
        wall_now,
    )?;
    Ok(match raw.refresh_in.as_ref().and_then(seconds) {
        Some(secs) if secs > 0 => token.with_refresh_in(Duration::from_secs(secs)),
        _ => token,
    })
}

/// A number of seconds sent as a JSON number or a numeric string.
fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `expires_on` as Unix seconds (number or string) or as App Service's 2017 date,
/// `06/20/2019 02:57:58 +00:00` (or with `AM`/`PM`).
fn expires_on(v: &Value) -> Option<SystemTime> {
    if let Some(secs) = seconds(v) {
        return UNIX_EPOCH.checked_add(Duration::from_secs(secs));
    }
    let unix = parse_date(v.as_str()?)?;
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(unix).ok()?))
}

/// `MM/DD/YYYY hh:mm:ss [AM|PM] ±hh:mm` as Unix seconds.
fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split_whitespace();
    let date = parts.next()?;
    let time = parts.next()?;
    let mut next = parts.next();
    let meridiem = match next {
        Some(m) if m.eq_ignore_ascii_case("am") || m.eq_ignore_ascii_case("pm") => {
            next = parts.next();
            Some(m.eq_ignore_ascii_case("pm"))
        }
        _ => None,
    };
    let offset = next.unwrap_or("+00:00");
    if parts.next().is_some() {
        return None;
    }
    let numbers = |s: &str, sep: char| -> Option<Vec<i64>> {
        s.split(sep).map(|n| n.parse::<i64>().ok()).collect()
    };
    let [month, day, year] = numbers(date, '/')?[..] else {
        return None;
    };
    let [mut hour, minute, second] = numbers(time, ':')?[..] else {
        return None;
    };
    if let Some(pm) = meridiem {
        if !(1..=12).contains(&hour) {
            return None;
        }
        hour = hour % 12 + if pm { 12 } else { 0 };
    }
    let (sign, offset) = match offset.as_bytes().first()? {
        b'+' => (1, &offset[1..]),
        b'-' => (-1, &offset[1..]),
        _ => return None,
    };
    let [off_h, off_m] = numbers(offset, ':')?[..] else {
        return None;
    };
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (1970..=9999).contains(&year)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..=60).contains(&second)
        && (0..24).contains(&off_h)
        && (0..60).contains(&off_m);
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - sign * (off_h * 3600 + off_m * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What an error body says, whichever source's shape it has: IMDS's (and Arc's, Cloud
/// Shell's) `{"error","error_description"}`, App Service's `{"statusCode","message"}`,
/// Service Fabric's `{"error":{"code","message"}}`. Texts are escaped and bounded.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ErrorBody {
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
}

impl ErrorBody {
    pub(super) fn parse(body: &[u8]) -> ErrorBody {
        let Ok(Value::Object(json)) = serde_json::from_slice::<Value>(body) else {
            return ErrorBody::default();
        };
        let text = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .map(|s| server_text(s, 1024))
                .filter(|s| !s.is_empty())
        };
        match json.get("error") {
            Some(Value::Object(inner)) => ErrorBody {
                code: text(inner.get("code")),
                message: text(inner.get("message")),
            },
            error => ErrorBody {
                code: text(error),
                message: text(
                    json.get("error_description")
                        .or_else(|| json.get("message"))
                        .or_else(|| json.get("Message")),
                ),
            },
        }
    }

    /// Whether the code or message contains `needle` (case-insensitive).
    pub(super) fn says(&self, needle: &str) -> bool {
        let needle = needle.to_ascii_lowercase();
        [&self.code, &self.message]
            .into_iter()
            .flatten()
            .any(|s| s.to_ascii_lowercase().contains(&needle))
    }

    /// `code: message`, or whichever is present, for an error message.
    pub(super) fn summary(&self) -> String {
        match (&self.code, &self.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(s), None) | (None, Some(s)) => s.clone(),
            (None, None) => "no error body".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<AccessToken, TokenError> {
        parse_token(body.as_bytes(), Instant::now(), SystemTime::now())
    }

    fn lifetime(t: &AccessToken) -> u64 {
        t.expires_on()
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs()
    }

    #[test]
    fn reads_expiry_as_each_source_sends_it() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let in_an_hour = now + 3600;
        for body in [
            // IMDS, Arc, Cloud Shell: strings.
            r#"{"access_token":"a","expires_in":"3600","expires_on":"1","token_type":"Bearer"}"#
                .to_owned(),
            // Numbers.
            r#"{"access_token":"a","expires_in":3600,"token_type":"Bearer"}"#.to_owned(),
            // App Service 2019-08-01: expires_on only, as a string.
            format!(r#"{{"access_token":"a","expires_on":"{in_an_hour}","token_type":"Bearer"}}"#),
            // Service Fabric: a number, no token_type needed.
            format!(r#"{{"access_token":"a","expires_on":{in_an_hour}}}"#),
        ] {
            let t = parse(&body).unwrap();
            let secs = lifetime(&t);
            assert!((3590..=3600).contains(&secs), "{body}: {secs}");
            assert_eq!(t.secret(), "a");
        }
    }

    #[test]
    fn reads_app_services_2017_date() {
        assert_eq!(
            parse_date("06/20/2019 02:57:58 +00:00"),
            Some(1_560_999_478)
        );
        assert_eq!(
            parse_date("6/20/2019 2:57:58 AM +00:00"),
            Some(1_560_999_478)
        );
        assert_eq!(
            parse_date("06/20/2019 02:57:58 PM +00:00"),
            Some(1_561_042_678)
        );
        assert_eq!(
            parse_date("06/20/2019 04:57:58 +02:00"),
            Some(1_560_999_478)
        );
        assert_eq!(parse_date("01/01/1970 00:00:00 +00:00"), Some(0));
        for bad in [
            "",
            "13/20/2019 02:57:58 +00:00",
            "06/20/2019 25:00:00 +00:00",
            "06/20/2019 02:57 +00:00",
            "2019-06-20T02:57:58Z",
            "06/20/2019 02:57:58 +00:00 extra",
            "06/20/2019 13:00:00 PM +00:00",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        let future = SystemTime::now() + Duration::from_secs(7200);
        let unix = future.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        // Render `unix` as the 2017 API does, then read it back.
        let days = unix.div_euclid(86_400);
        let (mut y, mut m, mut d) = (1970, 1, 1);
        while days_from_civil(y + 1, 1, 1) <= days {
            y += 1;
        }
        while m < 12 && days_from_civil(y, m + 1, 1) <= days {
            m += 1;
        }
        while days_from_civil(y, m, d) < days {
            d += 1;
        }
        let s = unix.rem_euclid(86_400);
        let date = format!(
            "{m:02}/{d:02}/{y:04} {:02}:{:02}:{:02} +00:00",
            s / 3600,
            s / 60 % 60,
            s % 60
        );
        let body = format!(r#"{{"access_token":"a","expires_on":"{date}","token_type":"Bearer"}}"#);
        let secs = lifetime(&parse(&body).unwrap());
        assert!((7190..=7200).contains(&secs), "{date}: {secs}");
    }

    #[test]
    fn refresh_in_is_kept_when_sent() {
        let t = parse(r#"{"access_token":"a","expires_in":"86400","refresh_in":"43200","token_type":"Bearer"}"#).unwrap();
        assert_eq!(t.refresh_in(), Some(Duration::from_secs(43_200)));
    }

    #[test]
    fn malformed_answers_are_invalid_responses_that_never_quote_the_token() {
        for body in [
            r#"{"access_token":"secret-token-value","token_type":"Bearer"}"#,
            r#"{"access_token":"secret-token-value","expires_on":"soon"}"#,
            r#"{"access_token":"secret-token-value","expires_on":"12"}"#,
            r#"{"access_token":"secret-token-value","expires_in":"3600","token_type":"pop"}"#,
            r#"{"expires_in":"3600","token_type":"Bearer"}"#,
            r#"{"access_token":"secret-token-value", "expires_in": }"#,
            "<html>",
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(
                e.kind(),
                crate::error::TokenErrorKind::InvalidResponse,
                "{body}"
            );
            assert!(!format!("{e} {e:?}").contains("secret-token-value"), "{e}");
        }
    }

    #[test]
    fn reads_each_sources_error_shape() {
        let imds = ErrorBody::parse(
            br#"{"error":"invalid_request","error_description":"Identity not found"}"#,
        );
        assert_eq!(imds.summary(), "invalid_request: Identity not found");
        assert!(imds.says("identity not found"));
        let app = ErrorBody::parse(br#"{"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"c"}"#);
        assert_eq!(
            app.message.as_deref(),
            Some("Unable to load the proper Managed Identity.")
        );
        let sf = ErrorBody::parse(br#"{"error":{"correlationId":"c","code":"SecretHeaderNotFound","message":"Secret is not found"}}"#);
        assert_eq!(sf.summary(), "SecretHeaderNotFound: Secret is not found");
        let hostile = ErrorBody::parse(b"{\"error\":\"x\\n\\u001b[31mforged\"}");
        assert!(!hostile.summary().contains('\n') && !hostile.summary().contains('\u{1b}'));
        assert_eq!(ErrorBody::parse(b"<html>").summary(), "no error body");
    }
}
