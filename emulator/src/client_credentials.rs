//! The client credentials grant: Entra's checks of a token request, in
//! Entra's order, and the token it issues.

use serde_json::Value;

use crate::assertion;
use crate::directory::{Absent, AppRecord, Directory, Resource};
use crate::entra_error::EntraError;
use crate::form::Form;
use crate::state::State;
use crate::token_signer::{Issued, Principal};
use crate::util::{ordered_json, unix_now};

fn missing(param: &str) -> EntraError {
    EntraError::new(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

/// Validates a token request to the tenant named `tenant_in_path` (its GUID
/// or a domain of it) in Entra's order and, on success, returns the JSON body.
pub(crate) fn issue(
    st: &mut State,
    authority: &str,
    tenant_in_path: &str,
    form: &Form,
    basic: Option<(String, String)>,
) -> Result<String, EntraError> {
    let Some(tenant_id) = st.directory.resolve(tenant_in_path).map(str::to_owned) else {
        return Err(EntraError::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant_in_path}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    };
    match form.get("grant_type") {
        None => return Err(missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(EntraError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    let (basic_id, basic_secret) = match &basic {
        Some((id, secret)) => (Some(id.as_str()), Some(secret.as_str())),
        None => (None, None),
    };
    let Some(client_id) = form.get("client_id").or(basic_id.filter(|s| !s.is_empty())) else {
        return Err(missing("client_id"));
    };
    let (app, sp) = st
        .directory
        .client(&tenant_id, client_id)
        .map_err(|absent| absent_error(absent, client_id, tenant_in_path, &tenant_id))?;
    let secret = form
        .get("client_secret")
        .or(basic_secret.filter(|s| !s.is_empty()));
    let (appidacr, jti) = if form.get("client_assertion").is_some() {
        if secret.is_some() {
            return Err(EntraError::new(
                400,
                "invalid_request",
                90013,
                "Invalid input received from the user. Only one client authentication method may be used: send either 'client_secret' or 'client_assertion', not both.",
            ));
        }
        let audiences = [
            format!("{authority}/{tenant_in_path}/oauth2/v2.0/token"),
            format!("{authority}/{tenant_id}/oauth2/v2.0/token"),
            format!("{authority}/{tenant_in_path}/oauth2/token"),
            format!("{authority}/{tenant_id}/oauth2/token"),
        ];
        let jti = assertion::validate(
            app,
            client_id,
            form,
            &audiences,
            &st.trusted_issuers,
            &st.used_jtis,
        )?;
        ("2", jti)
    } else {
        let Some(secret) = secret else {
            return Err(EntraError::new(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            ));
        };
        check_secret(app, client_id, secret)?;
        ("1", None)
    };
    let resource = resolve_scope(&st.directory, form, tenant_in_path)?;
    let cp1 = cae_capable(form)?;
    let client_key = client_id.to_ascii_lowercase();
    let principal = Principal {
        tenant: &tenant_id,
        client_id: &client_key,
        object_id: &sp.object_id,
        display_name: &app.display_name,
        roles: &sp.roles,
        appidacr,
        mirid: None,
    };
    let issued = st.issuance.sign(authority, &principal, resource, cp1);
    if let Some((key, exp)) = jti {
        let now = unix_now() as i64;
        st.used_jtis.retain(|_, e| *e + 300 >= now);
        st.used_jtis.insert(key, exp);
    }
    Ok(success_body(st, issued))
}

/// Entra's answer to a client that is not present in the tenant. Entra's
/// client credentials grant tells two cases apart: no trace of the app in
/// the tenant (`400 unauthorized_client` `AADSTS700016`, the answer a
/// multi-tenant app gets from a customer tenant that never consented), and
/// a registration whose service principal is missing (`401 invalid_client`
/// `AADSTS7000229`).
fn absent_error(
    absent: Absent,
    client_id: &str,
    tenant_in_path: &str,
    tenant_id: &str,
) -> EntraError {
    match absent {
        Absent::NotInDirectory => EntraError::new(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_in_path}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ),
        Absent::NoServicePrincipal => EntraError::new(
            401,
            "invalid_client",
            7000229,
            format!(
                "The client application {client_id} is missing service principal in the tenant {tenant_id}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119"
            ),
        ),
    }
}

/// Whether the `claims` parameter declares the client CAE-capable (`xms_cc` `cp1`).
fn cae_capable(form: &Form) -> Result<bool, EntraError> {
    let Some(raw) = form.get("claims") else {
        return Ok(false);
    };
    let claims: Value = serde_json::from_str(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            EntraError::new(
                400,
                "invalid_request",
                90100,
                "claims parameter is empty or not valid. It must be a JSON object.",
            )
        })?;
    Ok(claims
        .pointer("/access_token/xms_cc/values")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|c| c.as_str() == Some("cp1"))))
}

fn check_secret(app: &AppRecord, client_id: &str, secret: &str) -> Result<(), EntraError> {
    match app.secrets.iter().find(|s| s.value == secret) {
        Some(s) if !s.expired => Ok(()),
        Some(_) => Err(EntraError::new(
            401,
            "invalid_client",
            7000222,
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
            ),
        )),
        None => Err(EntraError::new(
            401,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )),
    }
}

/// Checks `scope` and returns its resource.
fn resolve_scope<'d>(
    directory: &'d Directory,
    form: &Form,
    tenant: &str,
) -> Result<&'d Resource, EntraError> {
    let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) else {
        return Err(missing("scope"));
    };
    let mut resource: Option<&str> = None;
    for s in scope.split_whitespace() {
        let Some(r) = s.strip_suffix("/.default") else {
            return Err(EntraError::new(
                400,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        };
        // `https://graph.microsoft.com//.default` names the same resource.
        let r = r.trim_end_matches('/');
        match resource {
            Some(prev) if !prev.eq_ignore_ascii_case(r) => {
                return Err(EntraError::new(
                    400,
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                    ),
                ));
            }
            _ => resource = Some(r),
        }
    }
    let resource = resource.unwrap_or_default();
    match directory.resource(resource) {
        Some(res) => Ok(res),
        None => Err(EntraError::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )),
    }
}

/// The success body for `issued`, numbers shaped as the controls say.
fn success_body(st: &State, issued: Issued) -> String {
    let num = |n: u64| -> Value {
        if st.numbers_as_strings {
            Value::String(n.to_string())
        } else {
            Value::from(n)
        }
    };
    let mut fields = vec![
        ("token_type", Value::from("Bearer")),
        ("expires_in", num(issued.lifetime)),
        ("ext_expires_in", num(issued.lifetime)),
    ];
    if let Some(r) = st.refresh_in {
        fields.push(("refresh_in", num(r.as_secs())));
    }
    fields.push(("access_token", Value::from(issued.token)));
    ordered_json(&fields)
}
