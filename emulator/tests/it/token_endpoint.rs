//! The token endpoint's protocol: success shape, tokens, and every error code.

use crate::common::*;
use entra_emulator::{App, Emulator};
use serde_json::{Value, json};

#[tokio::test]
async fn issues_a_token() {
    let (em, app) = start_with_demo_app().await;
    let resp = request_token(&em, &app, Emulator::DEMO_API_SCOPE).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store, no-cache");
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":""#
        ),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body.get("refresh_in").is_none());
    let token = body["access_token"].as_str().unwrap();

    let header = jwt_part(token, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let jwks = em.signing_jwks();
    assert_eq!(header["kid"], jwks["keys"][0]["kid"]);

    let claims = jwt_part(token, 1);
    let tenant = em.tenant_id();
    assert_eq!(claims["aud"], "api://entra-emulator-demo");
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!(claims["tid"], tenant);
    assert_eq!(claims["appid"], app.client_id);
    assert_eq!(claims["azp"], app.client_id);
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["roles"], json!(["Demo.Read"]));
    assert_eq!(claims["oid"], claims["sub"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now) < 10);
    assert_eq!(claims["nbf"].as_u64().unwrap(), iat);
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3599);

    // A second token: same oid, fresh uti/jti.
    let token2 = demo_token(&em, &app).await;
    let claims2 = jwt_part(&token2, 1);
    assert_eq!(claims2["oid"], claims["oid"]);
    assert_ne!(claims2["uti"], claims["uti"]);
    assert_ne!(claims2["jti"], claims["jti"]);
    assert_eq!(em.token_requests(), 2);
}

#[tokio::test]
async fn roles_are_those_the_resource_defines() {
    let (em, app) = start_with_demo_app().await;
    // Graph does not define Demo.Read: no roles claim.
    let resp = request_token(&em, &app, "https://graph.microsoft.com/.default").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let claims = jwt_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert!(claims.get("roles").is_none());

    // An app without roles gets none for the demo API either.
    let plain = em.register_app(&em.tenant_id(), App::new("plain").with_secret(SECRET));
    let token = demo_token(&em, &plain).await;
    assert!(jwt_part(&token, 1).get("roles").is_none());

    // Registered APIs define their own roles.
    em.register_api("api://orders", &["Orders.Read", "Orders.Write"]);
    let app2 = em.register_app(
        &em.tenant_id(),
        App::new("orders client")
            .with_secret(SECRET)
            .with_roles(&["Orders.Read", "Demo.Read"]),
    );
    let resp = request_token(&em, &app2, "api://orders/.default").await;
    let body: Value = resp.json().await.unwrap();
    let claims = jwt_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["aud"], "api://orders");
    assert_eq!(claims["roles"], json!(["Orders.Read"]));
}

#[tokio::test]
async fn accepts_preregistered_resources_and_variants() {
    let (em, app) = start_with_demo_app().await;
    for scope in [
        "https://graph.microsoft.com/.default",
        "https://graph.microsoft.com//.default",
        "https://management.azure.com/.default",
        "https://graph.microsoft.com/.default https://graph.microsoft.com/.default",
        "HTTPS://GRAPH.MICROSOFT.COM/.default",
    ] {
        let resp = request_token(&em, &app, scope).await;
        assert_eq!(resp.status(), 200, "{scope}");
    }
}

#[tokio::test]
async fn client_secret_basic_is_accepted() {
    let (em, app) = start_with_demo_app().await;
    let resp = client()
        .post(em.token_url(&app.tenant_id))
        .basic_auth(&app.client_id, Some(SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", Emulator::DEMO_API_SCOPE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let em = Emulator::start().await;
    let other = em.add_tenant();
    assert_ne!(other, em.tenant_id());
    let app = em.register_app(
        &other,
        App::new("x")
            .with_secret(SECRET)
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    assert_eq!(app.tenant_id, other);
    let token = demo_token(&em, &app).await;
    assert_eq!(jwt_part(&token, 1)["tid"], other);

    // The same client in the default tenant is unknown.
    let resp = request_token_at(&em.token_url(&em.tenant_id()), &app.client_id, SECRET).await;
    let body = assert_entra_error(resp, 400, "unauthorized_client", 700016).await;
    assert!(description(&body).contains(&format!(
        "Application with identifier '{}' was not found in the directory '{}'.",
        app.client_id,
        em.tenant_id()
    )));
}

#[tokio::test]
async fn correlation_id_echoes_client_request_id() {
    let em = Emulator::start().await;
    let cid = "7f0c3c2a-1111-4222-8333-944445555666";
    let resp = client()
        .post(em.token_url("not-a-tenant"))
        .header("client-request-id", cid)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["client-request-id"], cid);
    let body = assert_entra_error(resp, 400, "invalid_request", 90002).await;
    assert_eq!(body["correlation_id"], cid);
}

#[tokio::test]
async fn unknown_tenant_is_90002() {
    let (em, app) = start_with_demo_app().await;
    let bogus = "00000000-0000-0000-0000-000000000001";
    let resp = request_token_at(&em.token_url(bogus), &app.client_id, SECRET).await;
    let body = assert_entra_error(resp, 400, "invalid_request", 90002).await;
    assert!(description(&body).contains(&format!(
        "Tenant '{bogus}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
    )));
}

async fn request_token_at(url: &str, client_id: &str, secret: &str) -> reqwest::Response {
    post_form(
        url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", Emulator::DEMO_API_SCOPE),
        ],
    )
    .await
}

#[tokio::test]
async fn unsupported_grant_type_is_70003() {
    let (em, app) = start_with_demo_app().await;
    let resp = request_token_with(&em, &app, &[("grant_type", "password")]).await;
    let body = assert_entra_error(resp, 400, "unsupported_grant_type", 70003).await;
    assert!(description(&body).contains("'password'"));

    // No grant_type at all: a missing parameter.
    let resp = post_form(
        &em.token_url(&app.tenant_id),
        &[("client_id", &app.client_id)],
    )
    .await;
    let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
    assert!(description(&body).contains("'grant_type'"));
}

#[tokio::test]
async fn non_form_body_is_missing_parameters() {
    let em = Emulator::start().await;
    let resp = client()
        .post(em.token_url(&em.tenant_id()))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
    assert!(description(&body).contains("'grant_type'"));
}

#[tokio::test]
async fn get_is_900561() {
    let em = Emulator::start().await;
    let resp = client()
        .get(em.token_url(&em.tenant_id()))
        .send()
        .await
        .unwrap();
    let body = assert_entra_error(resp, 400, "invalid_request", 900561).await;
    assert!(description(&body).contains("Received a GET request."));
    assert_eq!(em.token_requests(), 0);
}

#[tokio::test]
async fn missing_client_id_is_900144() {
    let em = Emulator::start().await;
    let resp = post_form(
        &em.token_url(&em.tenant_id()),
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
            ("scope", Emulator::DEMO_API_SCOPE),
        ],
    )
    .await;
    let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
    assert!(description(&body).starts_with(
        "AADSTS900144: The request body must contain the following parameter: 'client_id'."
    ));
}

#[tokio::test]
async fn unknown_client_is_700016() {
    let em = Emulator::start().await;
    let resp = request_token_at(
        &em.token_url(&em.tenant_id()),
        "11111111-2222-3333-4444-555555555555",
        SECRET,
    )
    .await;
    assert_entra_error(resp, 400, "unauthorized_client", 700016).await;
}

#[tokio::test]
async fn no_credential_is_7000216() {
    let (em, app) = start_with_demo_app().await;
    let resp = request_token_without(&em, &app, "client_secret").await;
    let body = assert_entra_error(resp, 401, "invalid_client", 7000216).await;
    assert!(description(&body).starts_with("AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type."));
}

#[tokio::test]
async fn wrong_secret_is_7000215() {
    let (em, app) = start_with_demo_app().await;
    let resp = request_token_at(&em.token_url(&app.tenant_id), &app.client_id, "nope").await;
    let body = assert_entra_error(resp, 401, "invalid_client", 7000215).await;
    assert!(description(&body).starts_with(&format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", app.client_id)));
}

#[tokio::test]
async fn expired_secret_is_7000222() {
    let em = Emulator::start().await;
    let app = em.register_app(
        &em.tenant_id(),
        App::new("rotating")
            .with_secret_expired("old")
            .with_secret("new"),
    );
    let url = em.token_url(&app.tenant_id);
    let resp = request_token_at(&url, &app.client_id, "old").await;
    let body = assert_entra_error(resp, 401, "invalid_client", 7000222).await;
    assert!(description(&body).contains(&format!(
        "The provided client secret keys for app '{}' are expired.",
        app.client_id
    )));
    let resp = request_token_at(&url, &app.client_id, "new").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn missing_scope_is_900144() {
    let (em, app) = start_with_demo_app().await;
    let resp = request_token_without(&em, &app, "scope").await;
    let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
    assert!(description(&body).contains("'scope'"));
}

#[tokio::test]
async fn scope_without_default_is_1002012() {
    let (em, app) = start_with_demo_app().await;
    let resp = request_token(&em, &app, "https://graph.microsoft.com/User.Read").await;
    let body = assert_entra_error(resp, 400, "invalid_scope", 1002012).await;
    assert!(description(&body).starts_with("AADSTS1002012: The provided value for scope https://graph.microsoft.com/User.Read is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."));
}

#[tokio::test]
async fn several_resources_is_70011() {
    let (em, app) = start_with_demo_app().await;
    let resp = request_token(
        &em,
        &app,
        "https://graph.microsoft.com/.default https://management.azure.com/.default",
    )
    .await;
    let body = assert_entra_error(resp, 400, "invalid_scope", 70011).await;
    assert!(description(&body).starts_with("AADSTS70011: The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid."));
}

#[tokio::test]
async fn unknown_resource_is_500011() {
    let (em, app) = start_with_demo_app().await;
    let resp = request_token(&em, &app, "api://nobody-home/.default").await;
    let body = assert_entra_error(resp, 400, "invalid_resource", 500011).await;
    assert!(description(&body).contains(&format!(
        "The resource principal named api://nobody-home was not found in the tenant named {}.",
        app.tenant_id
    )));
}

#[tokio::test]
async fn checks_run_in_entra_order() {
    let (em, app) = start_with_demo_app().await;
    // Bad secret and bad scope: the credential is checked first.
    let resp = request_token_with(
        &em,
        &app,
        &[("client_secret", "bad"), ("scope", "User.Read")],
    )
    .await;
    assert_entra_error(resp, 401, "invalid_client", 7000215).await;
    // Unknown tenant beats everything.
    let resp = post_form(
        &em.token_url("contoso.example"),
        &[("grant_type", "password")],
    )
    .await;
    assert_entra_error(resp, 400, "invalid_request", 90002).await;
}

#[tokio::test]
async fn metadata_endpoints() {
    let em = Emulator::start().await;
    let tenant = em.tenant_id();
    let base = em.authority_host();
    assert!(base.starts_with("http://127.0.0.1:") && !base.ends_with('/'));
    let conf: Value = client()
        .get(format!(
            "{base}/{tenant}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conf["token_endpoint"], em.token_url(&tenant));
    assert_eq!(conf["issuer"], format!("{base}/{tenant}/v2.0"));
    let jwks_uri = conf["jwks_uri"].as_str().unwrap();
    assert_eq!(jwks_uri, format!("{base}/{tenant}/discovery/v2.0/keys"));
    let jwks: Value = client()
        .get(jwks_uri)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks, em.signing_jwks());
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["e"], "AQAB");

    let resp = client()
        .get(format!(
            "{base}/not-a-tenant/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap();
    assert_entra_error(resp, 400, "invalid_tenant", 90002).await;
}
