//! Required app roles: after each fetch the token's `roles` claim is read (the payload of our own
//! token, so no signature check) and a missing role is a `MissingPermission` error with the
//! admin-consent fix, at start-up rather than as a 403 from the API later.

use serde::Deserialize;

use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// The claims read from a token: its app roles, and nothing else.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    roles: Vec<String>,
}

/// The app roles in `jwt`'s payload (none when it has no `roles` claim), or `None` when it is
/// not a JWT with a JSON payload whose `roles` is a list of strings.
fn roles(jwt: &str) -> Option<Vec<String>> {
    crate::jwt::claims::<Claims>(jwt).map(|c| c.roles)
}

/// Checks that `token` carries every role in `required`. A token that cannot be read (not a
/// JWT, as some resources and custom credentials issue) passes with a warning: the API will
/// judge it.
pub(super) fn check(
    required: &[String],
    token: &AccessToken,
    scope: &str,
    client_id: Option<&str>,
) -> Result<(), TokenError> {
    if required.is_empty() {
        return Ok(());
    }
    let Some(held) = roles(token.secret()) else {
        tracing::warn!(
            scope,
            required = ?required,
            "the token is not a JWT whose roles can be read; not checking the required roles"
        );
        return Ok(());
    };
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| !held.contains(r))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(missing_permission(&missing, &held, scope, client_id))
}

fn missing_permission(
    missing: &[&str],
    held: &[String],
    scope: &str,
    client_id: Option<&str>,
) -> TokenError {
    let app = client_id.unwrap_or("<client-id>");
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    TokenError::new(
        TokenErrorKind::MissingPermission,
        format!(
            "the token for {scope} lacks the application permission(s) {missing} (its roles claim has {held}): \
             grant them to the app registration {app} and have an admin consent: Entra ID > App registrations > {app} > \
             API permissions > Add a permission > {resource} > Application permissions > {missing} > Grant admin consent, \
             or `az ad app permission add --id {app} --api <the API's app id> --api-permissions <role id>=Role` then \
             `az ad app permission admin-consent --id {app}`; the next token request after the consent carries them",
            missing = missing.join(", "),
            held = if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiJub25lIn0.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    fn token(secret: &str) -> AccessToken {
        AccessToken::new(secret, Duration::from_secs(3600)).unwrap()
    }

    fn required(roles: &[&str]) -> Vec<String> {
        roles.iter().map(|r| (*r).to_owned()).collect()
    }

    #[test]
    fn reads_the_roles_claim() {
        assert_eq!(
            roles(&jwt(r#"{"aud":"x","roles":["A.Read","B.Write"]}"#)),
            Some(required(&["A.Read", "B.Write"]))
        );
        // Padding is tolerated; an app without permissions has no claim at all.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"roles":["AB"]}"#)
        );
        assert!(padded.contains('='));
        assert_eq!(roles(&padded), Some(required(&["AB"])));
        assert_eq!(roles(&jwt(r#"{"aud":"x"}"#)), Some(vec![]));
    }

    #[test]
    fn a_token_that_is_not_a_readable_jwt_has_no_roles_to_read() {
        for opaque in [
            "opaque-token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "h.!!!.s".to_owned(),
            jwt("not json"),
            jwt(r#"{"roles":"A"}"#),
            jwt("[]"),
        ] {
            assert_eq!(roles(&opaque), None, "{opaque}");
            assert!(check(&required(&["A"]), &token(&opaque), "api://x/.default", None).is_ok());
        }
    }

    #[test]
    fn a_missing_role_is_a_missing_permission_naming_it_and_the_fix() {
        let t = token(&jwt(r#"{"roles":["A"]}"#));
        assert!(check(&required(&["A"]), &t, "api://x/.default", None).is_ok());
        assert!(check(&[], &t, "api://x/.default", None).is_ok());
        let e = check(
            &required(&["A", "B.Read.All"]),
            &t,
            "https://graph.microsoft.com/.default",
            Some("cid"),
        )
        .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::MissingPermission);
        assert!(!e.is_transient());
        let s = e.to_string();
        assert!(
            s.contains("lacks the application permission(s) B.Read.All "),
            "{s}"
        );
        assert!(s.contains("roles claim has A)"), "{s}");
        assert!(
            s.contains("az ad app permission admin-consent --id cid"),
            "{s}"
        );
        assert!(
            s.contains("> https://graph.microsoft.com > Application"),
            "{s}"
        );
        assert!(!s.contains(t.secret()), "{s}");
    }
}
