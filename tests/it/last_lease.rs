//! A service clone's remembered lease (`LastLease`): after the same provider and tenant were
//! asked a few times in a row, the service serves the token it remembers, and the response
//! future keeps a ticket instead of a lease. These tests drive one `EntraAuth` value request
//! after request, so that its memory is filled, and then change what it remembered: the token,
//! the tenant, the tenant's registry entry, the route, or the provider itself.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use tokio::sync::oneshot;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_entra::{
    AccessToken, Credential, EntraAuthLayer, InspectResponse, ProviderRoutes, Tenant, TokenError,
    TokenProvider, TokenRequest,
};

use crate::support::loopback_auth;

const SCOPE: &str = "api://lastlease/.default";
const CONTOSO: &str = "contoso.onmicrosoft.com";
const FABRIKAM: &str = "fabrikam.onmicrosoft.com";

/// Requests through one service before the step under test: the first is cold, the next two
/// are served by the provider's path (the second ask of the same provider and tenant is
/// remembered), the last one from the service's memory.
const FILL: usize = 4;

/// A credential that serves any tenant, with tokens that name it (`{prefix}-{tenant}-{n}`,
/// `home` for its own tenant, `n` counting every token it issued), and that records each ask.
#[derive(Debug)]
struct Issuer {
    prefix: &'static str,
    /// The tenant of each ask (`None`: its own), with the token issued.
    issued: Mutex<Vec<(Option<String>, String)>>,
}

impl Issuer {
    fn new(prefix: &'static str) -> Arc<Issuer> {
        Arc::new(Issuer {
            prefix,
            issued: Mutex::default(),
        })
    }

    /// How many tokens it issued, for any tenant.
    fn asked(&self) -> usize {
        self.issued.lock().unwrap().len()
    }

    /// The tokens it issued for `tenant` (`None`: its own), oldest first.
    fn tokens_for(&self, tenant: Option<&str>) -> Vec<String> {
        self.issued
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.as_deref() == tenant)
            .map(|(_, token)| token.clone())
            .collect()
    }
}

impl Credential for Issuer {
    fn request_token<'a>(
        &'a self,
        request: TokenRequest<'a>,
    ) -> BoxFuture<'a, Result<AccessToken, TokenError>> {
        let token = {
            let mut issued = self.issued.lock().unwrap();
            let token = format!(
                "{}-{}-{}",
                self.prefix,
                request.tenant.unwrap_or("home"),
                issued.len()
            );
            issued.push((request.tenant.map(str::to_owned), token.clone()));
            token
        };
        Box::pin(async move { AccessToken::new(token, Duration::from_secs(3600)) })
    }

    fn check_tenant(&self, _: &str) -> Result<(), TokenError> {
        Ok(())
    }
}

/// How the API answers one request: at once, or when the test says.
enum Answer {
    Now(StatusCode),
    Later(oneshot::Receiver<StatusCode>),
}

/// The protected API: records each request's Authorization header when it is called (not when
/// its future is polled), and answers 200 unless told otherwise; a 401 carries
/// `WWW-Authenticate: Bearer error="invalid_token"`.
#[derive(Clone, Default)]
struct Api {
    seen: Arc<Mutex<Vec<Option<String>>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

impl Api {
    /// The API behind `EntraAuth` with `provider`'s tokens.
    fn behind(
        &self,
        provider: &TokenProvider,
    ) -> impl Service<
        Request<String>,
        Response = Response<String>,
        Error = tower_entra::Error<Infallible>,
    > + use<> {
        ServiceBuilder::new()
            .layer(loopback_auth(provider))
            .service(self.service())
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<String>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Send + use<>,
    > + Clone
    + use<> {
        let api = self.clone();
        tower::service_fn(move |request: Request<String>| {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            api.seen.lock().unwrap().push(header);
            let answer = api.answers.lock().unwrap().pop_front();
            async move {
                let status = match answer {
                    None => StatusCode::OK,
                    Some(Answer::Now(status)) => status,
                    Some(Answer::Later(status)) => status.await.unwrap(),
                };
                let mut response = Response::builder().status(status);
                if status == StatusCode::UNAUTHORIZED {
                    response = response.header(
                        http::header::WWW_AUTHENTICATE,
                        r#"Bearer error="invalid_token", error_description="revoked""#,
                    );
                }
                Ok::<_, Infallible>(response.body(String::new()).unwrap())
            }
        })
    }

    /// The next request is refused with a 401 `invalid_token`.
    fn refuse_next(&self) {
        self.answers
            .lock()
            .unwrap()
            .push_back(Answer::Now(StatusCode::UNAUTHORIZED));
    }

    /// The next request is answered with the status sent on the returned sender.
    fn hold_next(&self) -> oneshot::Sender<StatusCode> {
        let (tx, rx) = oneshot::channel();
        self.answers.lock().unwrap().push_back(Answer::Later(rx));
        tx
    }

    /// The Authorization header of the last request.
    fn last(&self) -> String {
        let seen = self.seen.lock().unwrap();
        seen.last()
            .cloned()
            .flatten()
            .expect("a request with a token")
    }
}

/// A request to `uri`, naming `tenant` when given.
fn request(uri: &str, tenant: Option<&Tenant>) -> Request<String> {
    let mut request = Request::get(uri).body(String::new()).unwrap();
    if let Some(tenant) = tenant {
        request.extensions_mut().insert(tenant.clone());
    }
    request
}

/// A request to the loopback API, naming `tenant` when given.
fn to_api(tenant: Option<&Tenant>) -> Request<String> {
    request("http://127.0.0.1/data", tenant)
}

/// Readies `service`, sends `request` through it and returns the response.
async fn send<S>(service: &mut S, request: Request<String>) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>>,
    S::Error: std::fmt::Debug,
{
    service.ready().await.unwrap().call(request).await.unwrap()
}

/// One more request (naming no tenant) sent through `service` and held at the API, which has
/// seen it carry `expected`: the sender of the API's answer, and the request's future.
async fn hold_one<S>(
    service: &mut S,
    api: &Api,
    expected: &str,
) -> (oneshot::Sender<StatusCode>, S::Future)
where
    S: Service<Request<String>>,
    S::Error: std::fmt::Debug,
{
    let answer = api.hold_next();
    let held = service.ready().await.unwrap().call(to_api(None));
    assert_eq!(api.last(), expected, "sent from memory");
    (answer, held)
}

/// Sends `n` requests naming `tenant` through `service`, each carrying `expected`.
async fn send_n<S>(service: &mut S, api: &Api, tenant: Option<&Tenant>, n: usize, expected: &str)
where
    S: Service<Request<String>, Response = Response<String>>,
    S::Error: std::fmt::Debug,
{
    for i in 0..n {
        assert_eq!(send(service, to_api(tenant)).await.status(), StatusCode::OK);
        assert_eq!(api.last(), expected, "request {i} for {tenant:?}");
    }
}

/// A token dropped from its provider (`invalidate`) is not served from a service's memory: the
/// requests after the drop carry a new token, fetched once. Seen failing (the second request
/// after the drop carried the dropped token again) with the generation check removed from
/// `LastLease::serve`.
#[tokio::test]
async fn a_remembered_lease_is_dropped_with_its_token() {
    let issuer = Issuer::new("p");
    let provider = TokenProvider::new(issuer.clone(), SCOPE).unwrap();
    let api = Api::default();
    let mut service = api.behind(&provider);
    send_n(&mut service, &api, None, FILL, "Bearer p-home-0").await;
    assert_eq!(issuer.asked(), 1);

    let token = provider.token().await.unwrap();
    assert_eq!(token.secret(), "p-home-0");
    provider.invalidate(&token);
    // The first request after the drop fetches (the cold path, which remembers nothing); the
    // next ones find the provider's new token, not the remembered one.
    send_n(&mut service, &api, None, 3, "Bearer p-home-1").await;
    assert_eq!(issuer.asked(), 2, "one fetch for the dropped token");
}

/// A remembered tenant's lease serves that tenant only: after A was served from memory, B gets
/// B's token, A (by the same handle, or by a new handle of the same name) A's, and a request
/// without a tenant the home token. Seen failing (B's request carried A's token) with the
/// `remembered.same(asked)` check removed from `LastLease::serve`.
#[tokio::test]
async fn a_remembered_tenant_lease_serves_only_that_tenant() {
    let issuer = Issuer::new("p");
    let provider = TokenProvider::new(issuer.clone(), SCOPE).unwrap();
    let api = Api::default();
    let mut service = api.behind(&provider);
    let (a, b) = (Tenant::new(CONTOSO), Tenant::new(FABRIKAM));

    // Tokens count across tenants: A's is the first, B's the second, the home token the third.
    let a_token = "Bearer p-contoso.onmicrosoft.com-0";
    send_n(&mut service, &api, Some(&a), FILL, a_token).await;

    send(&mut service, to_api(Some(&b))).await;
    assert_eq!(api.last(), "Bearer p-fabrikam.onmicrosoft.com-1", "B");
    send(&mut service, to_api(Some(&a))).await;
    assert_eq!(api.last(), a_token, "A after B");
    send(&mut service, to_api(None)).await;
    assert_eq!(api.last(), "Bearer p-home-2", "no tenant");
    // Fill again, then ask by a new handle of A's name.
    send_n(&mut service, &api, Some(&a), FILL, a_token).await;
    send(&mut service, to_api(Some(&Tenant::new(CONTOSO)))).await;
    assert_eq!(api.last(), a_token, "A by a new handle");
    send(&mut service, to_api(Some(&Tenant::new(FABRIKAM)))).await;
    assert_eq!(
        api.last(),
        "Bearer p-fabrikam.onmicrosoft.com-1",
        "B by a new handle"
    );

    // One token for each tenant: nothing was fetched twice.
    assert_eq!(issuer.asked(), 3);
    assert_eq!(issuer.tokens_for(Some(CONTOSO)).len(), 1);
}

/// A tenant dropped from its provider's registry (here by `max_tenants(1)`, when another tenant
/// is added) is not served from a service's memory: its next request goes to a provider made
/// anew, which asks the credential again. Seen failing (the credential was asked for the
/// dropped tenant once, its old token served from memory) with the `entry.serves(registry)`
/// check removed from `LastLease::serve`.
#[tokio::test]
async fn a_dropped_tenant_is_not_served_from_a_services_memory() {
    let issuer = Issuer::new("p");
    let provider = TokenProvider::builder(issuer.clone(), SCOPE)
        .max_tenants(1)
        .build()
        .unwrap();
    let api = Api::default();
    let mut service = api.behind(&provider);
    let (a, b) = (Tenant::new(CONTOSO), Tenant::new(FABRIKAM));

    send_n(
        &mut service,
        &api,
        Some(&a),
        FILL,
        "Bearer p-contoso.onmicrosoft.com-0",
    )
    .await;
    assert_eq!(issuer.tokens_for(Some(CONTOSO)).len(), 1);

    // B takes the one place: A is dropped.
    send(&mut service, to_api(Some(&b))).await;
    assert_eq!(api.last(), "Bearer p-fabrikam.onmicrosoft.com-1");
    assert_eq!(provider.tenants_held(), 1);

    send(&mut service, to_api(Some(&a))).await;
    assert_eq!(
        issuer.tokens_for(Some(CONTOSO)).len(),
        2,
        "A's provider was made anew and asked again"
    );
    assert_eq!(api.last(), "Bearer p-contoso.onmicrosoft.com-2");
}

/// A remembered lease is one route's: after host A's token was served from memory, a request to
/// host B (whose provider holds a token under the same generation number) carries B's token,
/// and A's next request A's. Seen failing (B's request carried A's token) with the
/// `lease.of(inner)` check removed from `LastLease::serve`.
#[tokio::test]
async fn a_remembered_lease_is_one_routes() {
    let (a, b) = (Issuer::new("a"), Issuer::new("b"));
    let provider_a = TokenProvider::new(a.clone(), "api://a/.default").unwrap();
    let provider_b = TokenProvider::new(b.clone(), "api://b/.default").unwrap();
    let api = Api::default();
    let mut service = ServiceBuilder::new()
        .layer(
            EntraAuthLayer::routed(
                ProviderRoutes::new()
                    .route("a.example.com", provider_a.clone())
                    .route("b.example.com", provider_b.clone()),
            )
            .build()
            .unwrap(),
        )
        .service(api.service());
    // B's token first, so that both providers have published one token.
    provider_b.warm_up().await.unwrap();

    for _ in 0..FILL {
        send(&mut service, request("https://a.example.com/x", None)).await;
        assert_eq!(api.last(), "Bearer a-home-0");
    }
    send(&mut service, request("https://b.example.com/x", None)).await;
    assert_eq!(api.last(), "Bearer b-home-0", "B after A");
    send(&mut service, request("https://a.example.com/x", None)).await;
    assert_eq!(api.last(), "Bearer a-home-0", "A after B");
    for _ in 0..FILL {
        send(&mut service, request("https://b.example.com/x", None)).await;
        assert_eq!(api.last(), "Bearer b-home-0");
    }
    send(&mut service, request("https://a.example.com/x", None)).await;
    assert_eq!(api.last(), "Bearer a-home-0", "A after B remembered");
    assert_eq!((a.asked(), b.asked()), (1, 1));
}

/// An API's refusal (401 `invalid_token`) of a token served from a service's memory drops that
/// token: the response says it was renewed, and the next requests carry a new token, fetched
/// once. Seen failing (the next request carried the refused token) with `Ticket::redeem`
/// treating every token as already replaced (its `cached.id == self.cached_id` filter made
/// `!=`).
#[tokio::test]
async fn a_refusal_of_a_remembered_lease_drops_its_token() {
    let issuer = Issuer::new("p");
    let provider = TokenProvider::new(issuer.clone(), SCOPE).unwrap();
    let api = Api::default();
    let mut service = api.behind(&provider);
    send_n(&mut service, &api, None, FILL, "Bearer p-home-0").await;

    api.refuse_next();
    let refused = send(&mut service, to_api(None)).await;
    assert_eq!(api.last(), "Bearer p-home-0");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.token_renewed(), "the refused token was dropped");

    send_n(&mut service, &api, None, 3, "Bearer p-home-1").await;
    assert_eq!(issuer.asked(), 2);
    assert_eq!(provider.stats().fetches, 2);
}

/// A refusal that arrives for a token already replaced leaves the new token alone: a request
/// served from memory is held at the API while its token is dropped and replaced, then
/// refused; the response says the token was renewed, and the new token is still served, with
/// no fetch. The clock is moved past the 30 s between forced renewals, so that a wrong refusal
/// of the new token would drop it rather than be rate limited. Seen failing (the new token was
/// dropped and a third fetched) with `Ticket::redeem` ignoring the cache-entry id (returning the
/// cached token whatever its id); without the clock moved, that mutation fails the renewed mark
/// instead (rate limited, the response was left unmarked).
#[tokio::test(start_paused = true)]
async fn a_late_refusal_of_a_replaced_remembered_lease_keeps_the_new_token() {
    let issuer = Issuer::new("p");
    let provider = TokenProvider::new(issuer.clone(), SCOPE).unwrap();
    let api = Api::default();
    let mut service = api.behind(&provider);
    send_n(&mut service, &api, None, FILL, "Bearer p-home-0").await;

    let (answer, held) = hold_one(&mut service, &api, "Bearer p-home-0").await;

    provider.invalidate(&provider.token().await.unwrap());
    send_n(&mut service, &api, None, FILL, "Bearer p-home-1").await;
    assert_eq!(issuer.asked(), 2);

    tokio::time::advance(Duration::from_secs(31)).await;
    answer.send(StatusCode::UNAUTHORIZED).unwrap();
    let refused = held.await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.token_renewed(),
        "the refused token was already replaced"
    );

    send_n(&mut service, &api, None, 3, "Bearer p-home-1").await;
    assert_eq!(issuer.asked(), 2, "the new token was kept");
    assert_eq!(provider.token().await.unwrap().secret(), "p-home-1");
}

/// A refusal whose provider is gone does nothing: a request served from memory is held at the
/// API while its service and provider are dropped, and a new provider is made (which takes the
/// old one's slot when nothing else makes providers meanwhile, and caches its first token
/// under the same cache-entry id); the 401 is returned unmarked, and the new provider keeps its
/// token. Seen failing (the response marked renewed: the new provider's token was dropped),
/// run alone and with this module's other tests, with `local::provider_at` ignoring the slot
/// id; with the whole suite making providers alongside, another test may take the slot first.
#[tokio::test]
async fn a_refusal_whose_provider_is_gone_does_nothing() {
    let issuer = Issuer::new("old");
    let provider = TokenProvider::new(issuer.clone(), SCOPE).unwrap();
    let api = Api::default();
    let mut service = api.behind(&provider);
    send_n(&mut service, &api, None, FILL, "Bearer old-home-0").await;

    let (answer, held) = hold_one(&mut service, &api, "Bearer old-home-0").await;
    drop(service);
    drop(provider);
    assert_eq!(Arc::strong_count(&issuer), 1, "the provider is gone");

    let new_issuer = Issuer::new("new");
    let new_provider = TokenProvider::new(new_issuer.clone(), SCOPE).unwrap();
    let mut new_service = api.behind(&new_provider);
    send_n(&mut new_service, &api, None, FILL, "Bearer new-home-0").await;

    answer.send(StatusCode::UNAUTHORIZED).unwrap();
    let refused = held.await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(!refused.token_renewed(), "nothing was renewed");

    send_n(&mut new_service, &api, None, 2, "Bearer new-home-0").await;
    assert_eq!(new_issuer.asked(), 1, "the new provider kept its token");
    assert_eq!(issuer.asked(), 1);
}
