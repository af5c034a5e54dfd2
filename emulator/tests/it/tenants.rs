//! Several tenants: a multi-tenant app served by the customer tenants that consented, Entra's
//! answers where it is absent, tenants named by GUID or domain, per-tenant counts and limits.

use crate::common::*;
use entra_emulator::{App, Emulator, RegisteredApp, TestCertificate};
use serde_json::{Value, json};

const CONTOSO: &str = "contoso.onmicrosoft.com";

/// An emulator whose first tenant is the ISV's home, with a multi-tenant app holding the demo
/// role registered there, and one customer tenant named `contoso.onmicrosoft.com`.
async fn isv_and_customer() -> (Emulator, RegisteredApp, String) {
    let em = Emulator::start().await;
    let app = em.register_app(
        &em.tenant_id(),
        App::new("saas daemon")
            .with_secret(SECRET)
            .with_roles(&[Emulator::DEMO_API_ROLE])
            .multi_tenant(),
    );
    let customer = em.add_tenant();
    em.add_domain(&customer, CONTOSO);
    (em, app, customer)
}

async fn token_claims(resp: reqwest::Response) -> (String, Value) {
    let token = access_token(resp).await;
    let claims = jwt_part(&token, 1);
    (token, claims)
}

#[tokio::test]
async fn a_consenting_tenant_issues_its_own_tokens_by_guid_and_by_domain() {
    let (em, app, customer) = isv_and_customer().await;
    em.grant_admin_consent(&app, CONTOSO);

    let (home_token, home) = token_claims(request_token_in(&em, &app.tenant_id, &app).await).await;
    let (by_guid, guid_claims) = token_claims(request_token_in(&em, &customer, &app).await).await;
    let (by_domain, domain_claims) = token_claims(request_token_in(&em, CONTOSO, &app).await).await;

    assert_eq!(home["tid"], em.tenant_id());
    for claims in [&guid_claims, &domain_claims] {
        assert_eq!(
            claims["tid"], customer,
            "the GUID, whichever name was asked"
        );
        assert_eq!(
            claims["iss"],
            format!("https://sts.windows.net/{customer}/")
        );
        assert_eq!(claims["appid"], app.client_id);
        assert_eq!(claims["roles"], json!([Emulator::DEMO_API_ROLE]));
    }
    // The app's service principal in the customer tenant is its own object.
    assert_ne!(guid_claims["oid"], home["oid"]);
    assert_eq!(guid_claims["oid"], domain_claims["oid"]);
    for token in [home_token, by_guid, by_domain] {
        assert_eq!(call_demo_api(&em, &token).await.status(), 200);
    }
}

#[tokio::test]
async fn a_tenant_that_never_consented_answers_700016() {
    let (em, app, customer) = isv_and_customer().await;
    for name in [customer.as_str(), CONTOSO] {
        let body = assert_entra_error(
            request_token_in(&em, name, &app).await,
            400,
            "unauthorized_client",
            700016,
        )
        .await;
        let text = description(&body);
        assert!(
            text.contains(&format!(
                "Application with identifier '{}' was not found in the directory '{name}'",
                app.client_id
            )),
            "{text}"
        );
    }
    // Consent, then its removal: absent again.
    em.grant_admin_consent(&app, &customer);
    access_token(request_token_in(&em, CONTOSO, &app).await).await;
    em.remove_service_principal(&app, CONTOSO);
    assert_entra_error(
        request_token_in(&em, CONTOSO, &app).await,
        400,
        "unauthorized_client",
        700016,
    )
    .await;
    // The home tenant is untouched.
    access_token(request_token_in(&em, &app.tenant_id, &app).await).await;
}

#[tokio::test]
async fn a_single_tenant_app_is_absent_from_other_tenants() {
    let (em, _, customer) = isv_and_customer().await;
    let single = demo_app(&em);
    assert_entra_error(
        request_token_in(&em, &customer, &single).await,
        400,
        "unauthorized_client",
        700016,
    )
    .await;
}

#[tokio::test]
#[should_panic(expected = "is single-tenant")]
async fn consent_to_a_single_tenant_app_is_refused() {
    let (em, _, customer) = isv_and_customer().await;
    let single = demo_app(&em);
    em.grant_admin_consent(&single, &customer);
}

#[tokio::test]
async fn the_home_tenant_without_the_service_principal_answers_7000229() {
    let (em, app, _) = isv_and_customer().await;
    em.remove_service_principal(&app, &app.tenant_id);
    let body = assert_entra_error(
        request_token_in(&em, &app.tenant_id, &app).await,
        401,
        "invalid_client",
        7000229,
    )
    .await;
    assert!(
        description(&body).contains(&format!(
            "The client application {} is missing service principal in the tenant {}.",
            app.client_id, app.tenant_id
        )),
        "{body}"
    );
    // Creating it again (without consent) makes the app present, without its roles.
    em.add_service_principal(&app, &app.tenant_id);
    let (_, claims) = token_claims(request_token_in(&em, &app.tenant_id, &app).await).await;
    assert!(claims.get("roles").is_none(), "{claims}");
}

#[tokio::test]
async fn present_without_consent_gets_a_token_without_roles_and_a_403() {
    let (em, app, customer) = isv_and_customer().await;
    em.add_service_principal(&app, &customer);
    let (token, claims) = token_claims(request_token_in(&em, CONTOSO, &app).await).await;
    assert_eq!(claims["tid"], customer);
    assert!(claims.get("roles").is_none(), "{claims}");
    assert_eq!(call_demo_api(&em, &token).await.status(), 403);

    // Admin consent grants the roles to the same service principal.
    em.grant_admin_consent(&app, CONTOSO);
    let (token, consented) = token_claims(request_token_in(&em, CONTOSO, &app).await).await;
    assert_eq!(consented["oid"], claims["oid"]);
    assert_eq!(consented["roles"], json!([Emulator::DEMO_API_ROLE]));
    assert_eq!(call_demo_api(&em, &token).await.status(), 200);
}

#[tokio::test]
async fn an_unknown_tenant_answers_90002_by_either_name() {
    let (em, app, _) = isv_and_customer().await;
    for name in [
        "fabrikam.onmicrosoft.com",
        &uuid::Uuid::new_v4().to_string(),
    ] {
        let body = assert_entra_error(
            request_token_in(&em, name, &app).await,
            400,
            "invalid_request",
            90002,
        )
        .await;
        assert!(
            description(&body).contains(&format!("Tenant '{name}' not found.")),
            "{body}"
        );
    }
    // The discovery document too, with its own `error`.
    let resp = client()
        .get(format!(
            "{}/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration",
            em.authority_host()
        ))
        .send()
        .await
        .unwrap();
    assert_entra_error(resp, 400, "invalid_tenant", 90002).await;
}

#[tokio::test]
async fn a_domain_names_its_tenant_everywhere() {
    let (em, _, customer) = isv_and_customer().await;
    // Any case; the discovery document gives the GUID's URLs.
    let doc: Value = client()
        .get(format!(
            "{}/Contoso.OnMicrosoft.com/v2.0/.well-known/openid-configuration",
            em.authority_host()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["token_endpoint"], em.token_url(&customer));
    assert_eq!(
        doc["issuer"],
        format!("{}/{customer}/v2.0", em.authority_host())
    );
    // Registering by domain registers in the tenant (its GUID).
    let local = em.register_app(CONTOSO, App::new("contoso's own").with_secret(SECRET));
    assert_eq!(local.tenant_id, customer);
    let (_, claims) = token_claims(request_token_in(&em, CONTOSO, &local).await).await;
    assert_eq!(claims["tid"], customer);
}

#[tokio::test]
#[should_panic(expected = "already names tenant")]
async fn a_domain_names_one_tenant_only() {
    let (em, _, _) = isv_and_customer().await;
    let other = em.add_tenant();
    em.add_domain(&other, "CONTOSO.onmicrosoft.com");
}

#[tokio::test]
async fn requests_are_counted_and_logged_per_tenant() {
    let (em, app, customer) = isv_and_customer().await;
    em.grant_admin_consent(&app, &customer);
    let quiet = em.add_tenant();
    request_token_in(&em, CONTOSO, &app).await;
    request_token_in(&em, &customer, &app).await;
    request_token_in(&em, &app.tenant_id, &app).await;
    request_token_in(&em, "nowhere.onmicrosoft.com", &app).await;

    assert_eq!(em.token_requests(), 4);
    assert_eq!(em.token_requests_to(&customer), 2, "by GUID and by domain");
    assert_eq!(em.token_requests_to(CONTOSO), 2);
    assert_eq!(em.token_requests_to(&app.tenant_id), 1);
    assert_eq!(em.token_requests_to(&quiet), 0);

    let log = em.token_request_log();
    let seen: Vec<(Option<&str>, Option<u16>)> = log
        .iter()
        .map(|r| (r.tenant_id.as_deref(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            (Some(customer.as_str()), Some(200)),
            (Some(customer.as_str()), Some(200)),
            (Some(app.tenant_id.as_str()), Some(200)),
            (None, Some(400)),
        ]
    );
    assert_eq!(log[0].path, format!("/{CONTOSO}/oauth2/v2.0/token"));
    assert_eq!(log[3].form_field("client_id"), Some(app.client_id.as_str()));
    assert_eq!(em.last_token_http_request().as_ref(), log.last());
}

#[tokio::test(start_paused = true)]
async fn a_tenant_rate_limit_throttles_that_tenant_only() {
    let (em, app, customer) = isv_and_customer().await;
    em.grant_admin_consent(&app, &customer);
    em.set_tenant_token_rate_limit(CONTOSO, Some(1));

    assert_eq!(request_token_in(&em, &customer, &app).await.status(), 200);
    let throttled = request_token_in(&em, CONTOSO, &app).await;
    assert_eq!(throttled.headers()["retry-after"], "1");
    assert_entra_error(throttled, 429, "temporarily_unavailable", 90055).await;
    // The home tenant is not held back.
    for _ in 0..3 {
        assert_eq!(
            request_token_in(&em, &app.tenant_id, &app).await.status(),
            200
        );
    }
    let contoso = em.tenant_token_request_stats(CONTOSO);
    assert_eq!(
        (contoso.total, contoso.admitted, contoso.throttled),
        (2, 1, 1)
    );
    let home = em.tenant_token_request_stats(&app.tenant_id);
    assert_eq!((home.total, home.admitted, home.throttled), (3, 3, 0));
    let all = em.token_request_stats();
    assert_eq!((all.total, all.admitted, all.throttled), (5, 4, 1));

    // The bucket refills on the (paused) Tokio clock; lifting the limit admits everything.
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    assert_eq!(request_token_in(&em, CONTOSO, &app).await.status(), 200);
    em.set_tenant_token_rate_limit(CONTOSO, None);
    for _ in 0..3 {
        assert_eq!(request_token_in(&em, CONTOSO, &app).await.status(), 200);
    }
    em.reset_token_request_stats();
    assert_eq!(em.tenant_token_request_stats(CONTOSO).total, 0);
}

#[tokio::test(start_paused = true)]
async fn the_endpoint_limit_covers_every_tenant_after_the_tenant_limit() {
    let (em, app, customer) = isv_and_customer().await;
    em.grant_admin_consent(&app, &customer);
    em.set_token_rate_limit(Some(2));
    em.set_tenant_token_rate_limit(CONTOSO, Some(1));
    assert_eq!(request_token_in(&em, CONTOSO, &app).await.status(), 200);
    // Refused by the tenant's limit: the endpoint's bucket keeps its token for the home tenant.
    assert_eq!(request_token_in(&em, CONTOSO, &app).await.status(), 429);
    let home = &app.tenant_id;
    assert_eq!(request_token_in(&em, home, &app).await.status(), 200);
    // Now the endpoint's bucket is empty, for every tenant.
    assert_eq!(request_token_in(&em, home, &app).await.status(), 429);
    let stats = em.tenant_token_request_stats(home);
    assert_eq!((stats.total, stats.admitted, stats.throttled), (2, 1, 1));
}

#[tokio::test]
async fn a_certificate_assertion_names_the_customer_tenant_endpoint() {
    let em = Emulator::start().await;
    let cert = TestCertificate::new("saas-cert");
    let app = em.register_app(
        &em.tenant_id(),
        App::new("saas cert daemon")
            .with_certificate(cert.der().to_vec())
            .with_roles(&[Emulator::DEMO_API_ROLE])
            .multi_tenant(),
    );
    let customer = em.add_tenant();
    em.add_domain(&customer, CONTOSO);
    em.grant_admin_consent(&app, &customer);
    let send = |tenant: String, aud: String| {
        let assertion = cert.client_assertion(&app.client_id, &aud);
        let form = [
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", app.client_id.clone()),
            ("client_assertion_type", JWT_BEARER.to_owned()),
            ("client_assertion", assertion),
            ("scope", Emulator::DEMO_API_SCOPE.to_owned()),
        ];
        let url = em.token_url(&tenant);
        async move { client().post(url).form(&form).send().await.unwrap() }
    };
    // The endpoint the request goes to, by the name it used or by GUID.
    let (_, claims) = token_claims(send(CONTOSO.into(), em.token_url(CONTOSO)).await).await;
    assert_eq!(claims["tid"], customer);
    assert_eq!(claims["appidacr"], "2");
    access_token(send(CONTOSO.into(), em.token_url(&customer)).await).await;
    // An assertion made for the home tenant's endpoint is refused by the customer's.
    assert_entra_error(
        send(CONTOSO.into(), em.token_url(&app.tenant_id)).await,
        401,
        "invalid_client",
        700023,
    )
    .await;
}
