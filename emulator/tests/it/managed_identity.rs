//! Managed identity endpoints: IMDS, App Service, Azure Arc, Cloud Shell,
//! Service Fabric, Azure Machine Learning; their faults and records; managed
//! identity as a federated credential.

use crate::common::*;
use entra_emulator::{App, Emulator, Endpoint, Fault, ManagedIdentity};
use serde_json::Value;

const ARM: &str = "https://management.azure.com/";

/// A GET to a managed identity endpoint with `query` and `headers`: how IMDS, App Service, Arc
/// and Service Fabric are asked (Cloud Shell takes a POST). The send's error is the caller's to
/// judge (a dropped connection is one).
async fn identity_get(
    url: String,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    let mut req = client().get(url).query(query);
    for &(name, value) in headers {
        req = req.header(name, value);
    }
    req.send().await
}

/// The header IMDS-style endpoints require.
const METADATA: (&str, &str) = ("Metadata", "true");

async fn imds_get(em: &Emulator, query: &[(&str, &str)], metadata: bool) -> reqwest::Response {
    let headers: &[_] = if metadata { &[METADATA] } else { &[] };
    identity_get(em.imds_token_url(), query, headers)
        .await
        .expect("send")
}

async fn imds_token(em: &Emulator, query: &[(&str, &str)]) -> Value {
    let resp = imds_get(em, query, true).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// Asserts IMDS's `{"error","error_description"}` and returns the description.
async fn assert_imds_error(resp: reqwest::Response, status: u16, error: &str) -> String {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], error, "{body}");
    body["error_description"]
        .as_str()
        .expect("description")
        .to_owned()
}

#[tokio::test]
async fn imds_issues_a_system_assigned_token_with_string_numbers() {
    let em = Emulator::start().await;
    let mi = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let body = imds_token(&em, &[("api-version", "2018-02-01"), ("resource", ARM)]).await;
    for field in [
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
        "client_id",
    ] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["resource"], ARM);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["client_id"], mi.client_id);
    let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    let not_before: u64 = body["not_before"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_on - not_before, 3599);

    let claims = jwt_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["aud"], "https://management.azure.com");
    assert_eq!(claims["appid"], mi.client_id);
    assert_eq!(claims["oid"], mi.object_id);
    assert_eq!(claims["sub"], mi.object_id);
    assert_eq!(claims["xms_mirid"], mi.resource_id);
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{}/", mi.tenant_id)
    );
    assert_eq!(claims["exp"].as_u64(), Some(expires_on));
}

#[tokio::test]
async fn imds_refresh_in_follows_the_control() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    em.set_refresh_in(Some(std::time::Duration::from_secs(1800)));
    let body = imds_token(&em, &[("api-version", "2018-02-01"), ("resource", ARM)]).await;
    assert_eq!(body["refresh_in"], "1800");
}

#[tokio::test]
async fn imds_requires_the_metadata_header_api_version_and_resource() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let q = [("api-version", "2018-02-01"), ("resource", ARM)];
    let d = assert_imds_error(imds_get(&em, &q, false).await, 400, "invalid_request").await;
    assert_eq!(d, "Required metadata header not specified");
    let resp = identity_get(em.imds_token_url(), &q, &[("Metadata", "True")])
        .await
        .unwrap();
    assert_imds_error(resp, 400, "invalid_request").await;

    let d = assert_imds_error(
        imds_get(&em, &[("resource", ARM)], true).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(d.contains("api-version"), "{d}");
    let d = assert_imds_error(
        imds_get(&em, &[("api-version", "2018-02-01")], true).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(d.contains("resource"), "{d}");
}

#[tokio::test]
async fn imds_refuses_a_scope_as_resource() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let d = assert_imds_error(
        imds_get(
            &em,
            &[
                ("api-version", "2018-02-01"),
                ("resource", "https://management.azure.com/.default"),
            ],
            true,
        )
        .await,
        400,
        "invalid_resource",
    )
    .await;
    assert!(d.starts_with("AADSTS500011: "), "{d}");
    assert!(d.contains("https://management.azure.com/.default"), "{d}");
}

#[tokio::test]
async fn imds_selects_user_assigned_identities_by_each_id() {
    let em = Emulator::start().await;
    let system = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let a = em.assign_managed_identity(ManagedIdentity::user_assigned("a"));
    let b = em.assign_managed_identity(ManagedIdentity::user_assigned("b"));
    assert!(
        b.resource_id
            .ends_with("/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b"),
        "{}",
        b.resource_id
    );
    let base = [("api-version", "2018-02-01"), ("resource", ARM)];
    let appid = |body: Value| jwt_part(body["access_token"].as_str().unwrap(), 1)["appid"].clone();

    assert_eq!(appid(imds_token(&em, &base).await), system.client_id);
    for (param, value) in [
        ("client_id", a.client_id.as_str()),
        ("object_id", a.object_id.as_str()),
        ("msi_res_id", a.resource_id.as_str()),
    ] {
        let mut q = base.to_vec();
        q.push((param, value));
        assert_eq!(appid(imds_token(&em, &q).await), a.client_id, "{param}");
    }
    let upper = b.client_id.to_uppercase();
    let q = [base[0], base[1], ("client_id", upper.as_str())];
    assert_eq!(appid(imds_token(&em, &q).await), b.client_id);

    // App Service's parameter name is not IMDS's: ignored, so the default identity.
    let q = [base[0], base[1], ("mi_res_id", a.resource_id.as_str())];
    assert_eq!(appid(imds_token(&em, &q).await), system.client_id);

    let q = [
        base[0],
        base[1],
        ("client_id", a.client_id.as_str()),
        ("object_id", a.object_id.as_str()),
    ];
    assert_imds_error(imds_get(&em, &q, true).await, 400, "invalid_request").await;
}

#[tokio::test]
async fn imds_identity_not_found_and_ambiguous() {
    let em = Emulator::start().await;
    let base = [("api-version", "2018-02-01"), ("resource", ARM)];
    let d = assert_imds_error(imds_get(&em, &base, true).await, 400, "invalid_request").await;
    assert_eq!(d, "Identity not found");

    let only = em.assign_managed_identity(ManagedIdentity::user_assigned("only"));
    // A sole user-assigned identity is the default.
    let body = imds_token(&em, &base).await;
    assert_eq!(body["client_id"], only.client_id);

    em.assign_managed_identity(ManagedIdentity::user_assigned("second"));
    let d = assert_imds_error(imds_get(&em, &base, true).await, 400, "invalid_request").await;
    assert!(
        d.starts_with("Multiple user assigned identities exist"),
        "{d}"
    );

    let q = [
        base[0],
        base[1],
        ("client_id", "00000000-0000-0000-0000-000000000000"),
    ];
    let d = assert_imds_error(imds_get(&em, &q, true).await, 400, "invalid_request").await;
    assert_eq!(d, "Identity not found");
    // The system-assigned identity cannot be selected by the host's resource ID.
    let system = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let q = [
        base[0],
        base[1],
        ("msi_res_id", system.resource_id.as_str()),
    ];
    assert_imds_error(imds_get(&em, &q, true).await, 400, "invalid_request").await;
}

#[tokio::test]
async fn managed_identity_tokens_call_the_demo_api_with_their_roles() {
    let em = Emulator::start().await;
    em.assign_managed_identity(
        ManagedIdentity::system_assigned().with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let reader = em.assign_managed_identity(ManagedIdentity::user_assigned("no-roles"));
    let demo = "api://entra-emulator-demo";
    let token = imds_token(&em, &[("api-version", "2018-02-01"), ("resource", demo)]).await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    let resp = call_demo_api(&em, &token).await;
    assert_eq!(resp.status(), 200);

    let q = [
        ("api-version", "2018-02-01"),
        ("resource", demo),
        ("client_id", reader.client_id.as_str()),
    ];
    let token = imds_token(&em, &q).await;
    let resp = call_demo_api(&em, token["access_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 403);
}

async fn app_service_get(
    em: &Emulator,
    query: &[(&str, &str)],
    header: Option<(&str, &str)>,
) -> reqwest::Response {
    identity_get(em.app_service_identity_endpoint(), query, header.as_slice())
        .await
        .expect("send")
}

#[tokio::test]
async fn app_service_issues_tokens_with_epoch_expires_on() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let user = em.assign_managed_identity(ManagedIdentity::user_assigned("app"));
    let secret = em.app_service_identity_header();
    let h = Some(("X-IDENTITY-HEADER", secret.as_str()));
    for (param, value) in [
        ("client_id", user.client_id.as_str()),
        ("principal_id", user.object_id.as_str()),
        ("mi_res_id", user.resource_id.as_str()),
    ] {
        let q = [
            ("api-version", "2019-08-01"),
            ("resource", "https://vault.azure.net"),
            (param, value),
        ];
        em.register_api("https://vault.azure.net", &[]);
        let resp = app_service_get(&em, &q, h).await;
        assert_eq!(resp.status(), 200, "{param}");
        let body: Value = resp.json().await.unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "access_token",
                "client_id",
                "expires_on",
                "resource",
                "token_type"
            ]
        );
        assert_eq!(body["client_id"], user.client_id);
        assert_eq!(body["resource"], "https://vault.azure.net");
        let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
        let claims = jwt_part(body["access_token"].as_str().unwrap(), 1);
        assert_eq!(claims["exp"].as_u64(), Some(expires_on));
        assert_eq!(claims["appid"], user.client_id);
    }
}

#[tokio::test]
async fn app_service_legacy_api_answers_a_date() {
    let em = Emulator::start().await;
    let mi = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let secret = em.app_service_identity_header();
    let q = [("api-version", "2017-09-01"), ("resource", ARM)];
    let resp = app_service_get(&em, &q, Some(("secret", &secret))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["client_id"], mi.client_id);
    let date = body["expires_on"].as_str().unwrap();
    // 06/20/2019 02:57:58 +00:00
    assert_eq!(date.len(), 26, "{date}");
    assert!(date.ends_with(" +00:00") && date[2..3] == *"/", "{date}");
    // The 2019 header does not authenticate the 2017 API.
    let resp = app_service_get(&em, &q, Some(("X-IDENTITY-HEADER", &secret))).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn app_service_failures_have_its_error_shape() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::user_assigned("a"));
    em.assign_managed_identity(ManagedIdentity::user_assigned("b"));
    let secret = em.app_service_identity_header();
    let q = [("api-version", "2019-08-01"), ("resource", ARM)];
    let message = |resp: reqwest::Response, status: u16| async move {
        assert_eq!(resp.status().as_u16(), status);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["statusCode"], status, "{body}");
        assert!(body["correlationId"].is_string(), "{body}");
        body["message"].as_str().unwrap().to_owned()
    };

    let m = message(app_service_get(&em, &q, None).await, 401).await;
    assert!(m.contains("x-identity-header"), "{m}");
    let m = message(
        app_service_get(&em, &q, Some(("X-IDENTITY-HEADER", "wrong"))).await,
        401,
    )
    .await;
    assert!(m.contains("x-identity-header"), "{m}");
    let h = Some(("X-IDENTITY-HEADER", secret.as_str()));
    // Two user-assigned identities and none named.
    let m = message(app_service_get(&em, &q, h).await, 400).await;
    assert_eq!(m, "Unable to load the proper Managed Identity.");
    let q2 = [q[0], q[1], ("client_id", "nope")];
    let m = message(app_service_get(&em, &q2, h).await, 400).await;
    assert_eq!(m, "Unable to load the proper Managed Identity.");
    let m = message(
        app_service_get(&em, &[("api-version", "2019-08-01")], h).await,
        400,
    )
    .await;
    assert!(m.contains("resource"), "{m}");
    let m = message(
        app_service_get(&em, &[("api-version", "2018-02-01"), q[1]], h).await,
        400,
    )
    .await;
    assert!(m.contains("2019-08-01"), "{m}");
    let a = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let q3 = [q[0], ("resource", "https://graph.microsoft.com/.default")];
    let m = message(app_service_get(&em, &q3, h).await, 400).await;
    assert!(m.starts_with("AADSTS500011"), "{m}");
    assert_eq!(app_service_get(&em, &q, h).await.status(), 200, "{a:?}");
}

#[tokio::test]
async fn azure_ml_serves_the_2017_api_with_clientid_and_its_own_secret() {
    let em = Emulator::start().await;
    assert_eq!(em.azure_ml_default_identity_client_id(), None);
    let system = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let user = em.assign_managed_identity(ManagedIdentity::user_assigned("trainer"));
    // What a client puts in `clientid` for the compute's default identity.
    let default_id = em.azure_ml_default_identity_client_id();
    assert_eq!(default_id.as_deref(), Some(system.client_id.as_str()));
    let secret = em.azure_ml_msi_secret();
    assert_ne!(secret, em.app_service_identity_header());
    let get = |query: Vec<(&'static str, String)>, secret: String| {
        let url = em.azure_ml_msi_endpoint();
        async move {
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            identity_get(url, &query, &[METADATA, ("secret", secret.as_str())])
                .await
                .expect("send")
        }
    };
    let base = |client_id: Option<&str>| {
        let mut q = vec![
            ("api-version", "2017-09-01".to_owned()),
            ("resource", ARM.to_owned()),
        ];
        q.extend(client_id.map(|id| ("clientid", id.to_owned())));
        q
    };
    for (clientid, expected) in [
        (default_id.as_deref(), &system),
        (Some(user.client_id.as_str()), &user),
        (None, &system),
    ] {
        let resp = get(base(clientid), secret.clone()).await;
        assert_eq!(resp.status(), 200, "{clientid:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["client_id"], expected.client_id);
        let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
        let claims = jwt_part(body["access_token"].as_str().unwrap(), 1);
        assert_eq!(claims["appid"], expected.client_id);
        assert_eq!(claims["exp"].as_u64(), Some(expires_on));
    }
    let log = em.managed_identity_request_log();
    assert!(log.iter().all(|r| r.endpoint == Endpoint::AzureMl));
    assert_eq!(log[0].query_param("clientid"), default_id.as_deref());

    let status_and_message = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["statusCode"], status, "{body}");
        (status, body["message"].as_str().unwrap().to_owned())
    };
    // App Service's secret, another api-version, an unknown client id.
    let (status, _) =
        status_and_message(get(base(None), em.app_service_identity_header()).await).await;
    assert_eq!(status, 401);
    let mut newer = base(None);
    newer[0].1 = "2019-08-01".to_owned();
    let (status, m) = status_and_message(get(newer, secret.clone()).await).await;
    assert_eq!(status, 400);
    assert!(m.contains("Use api-version 2017-09-01"), "{m}");
    let (status, m) = status_and_message(get(base(Some("nope")), secret.clone()).await).await;
    assert_eq!(
        (status, m.as_str()),
        (400, "Unable to load the proper Managed Identity.")
    );
    // App Service's own endpoint does not take Azure ML's secret.
    let q = [("api-version", "2017-09-01"), ("resource", ARM)];
    assert_eq!(
        app_service_get(&em, &q, Some(("secret", &secret)))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn arc_challenges_then_serves_the_key_holder_once() {
    let em = Emulator::start().await;
    let mi = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let dir = std::env::temp_dir().join(unique_name("emu-arc-test"));
    em.set_arc_key_directory(&dir);
    assert_eq!(em.arc_key_directory(), dir);
    assert!(
        em.arc_identity_endpoint()
            .starts_with(&em.arc_imds_endpoint())
    );
    let q = [("api-version", "2019-11-01"), ("resource", ARM)];
    let get = |auth: Option<String>| {
        let url = em.arc_identity_endpoint();
        async move {
            let mut headers = vec![METADATA];
            if let Some(a) = &auth {
                headers.push(("Authorization", a));
            }
            identity_get(url, &q, &headers).await
        }
    };

    let challenge = get(None).await.unwrap();
    assert_eq!(challenge.status(), 401);
    let www = challenge.headers()["www-authenticate"].to_str().unwrap();
    let path = www.strip_prefix("Basic realm=").expect(www);
    let path = std::path::Path::new(path);
    assert_eq!(path.parent(), Some(dir.as_path()));
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("key"));
    let key = std::fs::read_to_string(path).unwrap();
    assert!(key.len() >= 32);

    let resp = get(Some(format!("Basic {key}"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["client_id"], mi.client_id);
    assert!(body["expires_on"].is_string());

    // A key is good once; a wrong one gets a new challenge.
    let again = get(Some(format!("Basic {key}"))).await.unwrap();
    assert_eq!(again.status(), 401);
    assert!(again.headers().contains_key("www-authenticate"));
    let wrong = get(Some("Basic not-a-key".into())).await.unwrap();
    assert_eq!(wrong.status(), 401);

    // Without Metadata: IMDS's error, no challenge.
    let resp = identity_get(em.arc_identity_endpoint(), &q, &[])
        .await
        .unwrap();
    assert!(!resp.headers().contains_key("www-authenticate"));
    assert_imds_error(resp, 400, "invalid_request").await;

    let log = em.managed_identity_request_log();
    let statuses: Vec<Option<u16>> = log.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Some(401), Some(200), Some(401), Some(401), Some(400)]
    );
    assert!(log.iter().all(|r| r.endpoint == Endpoint::AzureArc));
    assert_eq!(
        log[1].header("authorization"),
        Some(&*format!("Basic {key}"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn unique_name(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{n}", std::process::id())
}

#[tokio::test]
async fn arc_key_directory_defaults_to_a_private_temp_dir_removed_on_drop() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let q = [("api-version", "2019-11-01"), ("resource", ARM)];
    let resp = identity_get(em.arc_identity_endpoint(), &q, &[METADATA])
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let dir = em.arc_key_directory();
    assert!(dir.starts_with(std::env::temp_dir()), "{dir:?}");
    assert!(dir.is_dir());
    drop(em);
    assert!(!dir.exists(), "{dir:?} left behind");
}

#[tokio::test]
async fn cloud_shell_takes_a_posted_form() {
    let em = Emulator::start().await;
    let mi = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let post = |form: Vec<(&'static str, String)>, metadata: bool| {
        let mut req = client().post(em.cloud_shell_msi_endpoint()).form(&form);
        if metadata {
            req = req.header("Metadata", "true");
        }
        req.send()
    };
    let resp = post(vec![("resource", ARM.into())], true).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["client_id"], mi.client_id);
    assert_eq!(body["resource"], ARM);

    let resp = post(vec![("resource", ARM.into())], false).await.unwrap();
    assert_imds_error(resp, 400, "invalid_request").await;
    let resp = post(
        vec![
            ("resource", ARM.into()),
            ("client_id", mi.client_id.clone()),
        ],
        true,
    )
    .await
    .unwrap();
    let d = assert_imds_error(resp, 400, "invalid_request").await;
    assert!(d.contains("user-assigned"), "{d}");
    let get = identity_get(em.cloud_shell_msi_endpoint(), &[], &[METADATA])
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let log = em.managed_identity_request_log();
    assert_eq!(log[0].form_field("resource"), Some(ARM));
    assert_eq!(log[0].method, "POST");
}

async fn service_fabric_get(
    em: &Emulator,
    query: &[(&str, &str)],
    secret: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let headers = secret.map(|s| ("secret", s));
    identity_get(
        em.service_fabric_identity_endpoint(),
        query,
        headers.as_slice(),
    )
    .await
}

#[tokio::test]
async fn service_fabric_checks_its_secret_and_answers_a_numeric_expiry() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let user = em.assign_managed_identity(ManagedIdentity::user_assigned("sf"));
    let secret = em.service_fabric_identity_header();
    let q = [
        ("api-version", "2019-07-01-preview"),
        ("resource", ARM),
        ("principal_id", user.object_id.as_str()),
    ];
    let resp = service_fabric_get(&em, &q, Some(&secret)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["expires_on"].is_u64(), "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let claims = jwt_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["oid"], user.object_id);

    let code = |resp: reqwest::Response, status: u16| async move {
        assert_eq!(resp.status().as_u16(), status);
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"]["correlationId"].is_string(), "{body}");
        body["error"]["code"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        code(service_fabric_get(&em, &q, None).await.unwrap(), 401).await,
        "SecretHeaderNotFound"
    );
    assert_eq!(
        code(
            service_fabric_get(&em, &q, Some("wrong")).await.unwrap(),
            401
        )
        .await,
        "SecretHeaderNotFound"
    );
    let mut old = q;
    old[0].1 = "2018-02-01";
    assert_eq!(
        code(
            service_fabric_get(&em, &old, Some(&secret)).await.unwrap(),
            400
        )
        .await,
        "InvalidApiVersion"
    );
}

#[tokio::test]
async fn faults_on_managed_identity_endpoints_come_in_order() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let q = [("api-version", "2018-02-01"), ("resource", ARM)];
    em.push_managed_identity_fault(Fault::status(410));
    em.push_managed_identity_fault(Fault::status(404));
    em.push_managed_identity_fault(Fault::status(429).retry_after(3));
    em.push_managed_identity_fault(Fault::status(500));
    em.push_managed_identity_fault(Fault::status(503).body("upstream down"));

    assert_imds_error(imds_get(&em, &q, true).await, 410, "gone").await;
    assert_imds_error(imds_get(&em, &q, true).await, 404, "not_found").await;
    let resp = imds_get(&em, &q, true).await;
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_imds_error(resp, 429, "too_many_requests").await;
    assert_imds_error(imds_get(&em, &q, true).await, 500, "server_error").await;
    let resp = imds_get(&em, &q, true).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), "upstream down");
    assert_eq!(imds_get(&em, &q, true).await.status(), 200);
    assert_eq!(em.managed_identity_requests(), 6);
    // The token endpoint's queue is separate.
    assert_eq!(em.token_requests(), 0);

    // App Service gets its own error shape for a fault.
    em.push_managed_identity_fault(Fault::status(500));
    let resp = app_service_get(&em, &q, None).await;
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["statusCode"], 500);
}

#[tokio::test]
async fn a_dropped_connection_is_recorded_without_a_status() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    em.push_managed_identity_fault(Fault::drop_connection());
    let q = [("api-version", "2018-02-01"), ("resource", ARM)];
    let err = identity_get(em.imds_token_url(), &q, &[METADATA])
        .await
        .expect_err("dropped");
    assert!(!err.is_status());
    assert_eq!(imds_get(&em, &q, true).await.status(), 200);
    let log = em.managed_identity_request_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].status, None);
    assert_eq!(log[1].status, Some(200));
}

#[tokio::test]
async fn the_log_keeps_headers_and_query_of_each_request() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let secret = em.app_service_identity_header();
    imds_token(&em, &[("api-version", "2018-02-01"), ("resource", ARM)]).await;
    let h = Some(("X-IDENTITY-HEADER", secret.as_str()));
    let q = [
        ("api-version", "2019-08-01"),
        ("resource", "https://graph.microsoft.com"),
    ];
    assert_eq!(app_service_get(&em, &q, h).await.status(), 200);

    let log = em.managed_identity_request_log();
    assert_eq!(log.len(), 2);
    let (imds, app) = (&log[0], &log[1]);
    assert_eq!(imds.endpoint, Endpoint::Imds);
    assert_eq!(imds.method, "GET");
    assert_eq!(imds.path, "/metadata/identity/oauth2/token");
    assert_eq!(imds.header("METADATA"), Some("true"));
    assert_eq!(imds.query_param("api-version"), Some("2018-02-01"));
    assert_eq!(imds.query_param("resource"), Some(ARM));
    assert_eq!(app.endpoint, Endpoint::AppService);
    assert_eq!(app.header("x-identity-header"), Some(secret.as_str()));
    assert_eq!(app.query_param("api-version"), Some("2019-08-01"));
    assert_eq!(app.status, Some(200));
}

#[tokio::test]
async fn a_managed_identity_token_is_an_apps_federated_credential() {
    let em = Emulator::start().await;
    let mi = em.assign_managed_identity(ManagedIdentity::user_assigned("fic"));
    assert_eq!(
        mi.issuer,
        format!("{}/{}/v2.0", em.authority_host(), em.tenant_id())
    );
    let app = em.register_app(
        &em.tenant_id(),
        App::new("secretless")
            .with_federated_credential(&mi.issuer, &mi.object_id, "")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let q = [
        ("api-version", "2018-02-01"),
        ("resource", "api://AzureADTokenExchange"),
        ("client_id", mi.client_id.as_str()),
    ];
    let body = imds_token(&em, &q).await;
    let assertion = body["access_token"].as_str().unwrap();
    let claims = jwt_part(assertion, 1);
    assert_eq!(claims["iss"], mi.issuer);
    assert_eq!(claims["sub"], mi.object_id);
    assert_eq!(claims["aud"], "api://AzureADTokenExchange");
    assert_eq!(claims["ver"], "2.0");

    let token = access_token(request_with_assertion(&em, &app, assertion).await).await;
    assert_eq!(jwt_part(&token, 1)["appid"], app.client_id);
    assert_eq!(call_demo_api(&em, &token).await.status(), 200);

    // Another identity's token is not this app's credential.
    let other = em.assign_managed_identity(ManagedIdentity::user_assigned("other"));
    let q = [q[0], q[1], ("client_id", other.client_id.as_str())];
    let body = imds_token(&em, &q).await;
    let resp = request_with_assertion(&em, &app, body["access_token"].as_str().unwrap()).await;
    assert_entra_error(resp, 400, "invalid_client", 70021).await;
}

#[tokio::test]
async fn tokens_for_other_resources_are_not_federated_credentials() {
    let em = Emulator::start().await;
    let mi = em.assign_managed_identity(ManagedIdentity::system_assigned());
    let app = em.register_app(
        &em.tenant_id(),
        App::new("secretless").with_federated_credential(&mi.issuer, &mi.object_id, ""),
    );
    // An ARM token: v1 issuer and the wrong audience.
    let body = imds_token(&em, &[("api-version", "2018-02-01"), ("resource", ARM)]).await;
    let resp = request_with_assertion(&em, &app, body["access_token"].as_str().unwrap()).await;
    assert_entra_error(resp, 400, "invalid_client", 70021).await;
}

#[tokio::test(start_paused = true)]
async fn latency_and_delay_faults_slow_managed_identity_answers() {
    let em = Emulator::start().await;
    em.assign_managed_identity(ManagedIdentity::system_assigned());
    let q = [("api-version", "2018-02-01"), ("resource", ARM)];
    em.push_managed_identity_fault(Fault::delay(std::time::Duration::from_secs(30)));
    let slow =
        tokio::time::timeout(std::time::Duration::from_secs(10), imds_get(&em, &q, true)).await;
    assert!(slow.is_err(), "the delayed request should time out");
    em.set_latency(std::time::Duration::from_secs(20));
    let slow =
        tokio::time::timeout(std::time::Duration::from_secs(10), imds_get(&em, &q, true)).await;
    assert!(slow.is_err(), "latency should apply");
    em.set_latency(std::time::Duration::ZERO);
    assert_eq!(imds_get(&em, &q, true).await.status(), 200);
}
