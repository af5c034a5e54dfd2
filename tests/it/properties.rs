//! Property tests over the public parsers: allow-list host patterns through
//! [`EntraAuthLayer::allow_hosts`] (the PEM and PKCS#12 loaders' are in `certificate_properties`,
//! with feature `certificate`). No input panics.
//!
//! The crate-private parsers (token and error responses, host patterns, Bearer challenges)
//! have theirs beside them, in `src/endpoint.rs`, `src/destination.rs` and `src/challenge.rs`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use proptest::collection::vec;
use proptest::prelude::*;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_entra::{EntraAuthLayer, TokenErrorKind, TokenProvider};

use crate::support::ScriptedCredential;

/// Bounded, so that CI stays fast; no regression files in the tree.
pub(crate) fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A DNS label (LDH), in any mix of cases.
fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?"
}

fn host(min: usize) -> impl Strategy<Value = String> {
    vec(label(), min..min + 3).prop_map(|labels| labels.join("."))
}

/// Text shaped like an allow-list entry, valid or not.
fn entry_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => label(),
        1 => Just(String::new()),
        1 => Just("*".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just("user@h".to_owned()),
    ];
    let maybe = |s: &'static str| prop_oneof![Just(""), Just(s)];
    (
        maybe("https://"),
        maybe("*."),
        vec(piece, 1..4),
        prop_oneof![
            Just(""),
            Just("."),
            Just(":443"),
            Just("/v1.0"),
            Just("?x"),
            Just(" ")
        ],
    )
        .prop_map(|(scheme, wildcard, labels, tail)| {
            format!("{scheme}{wildcard}{}{tail}", labels.join("."))
        })
}

/// A provider whose scope names no host, so that only the allow-list lets tokens out.
fn provider() -> TokenProvider {
    TokenProvider::new(
        ScriptedCredential::new(Duration::from_secs(3600)),
        "api://my-api/.default",
    )
    .expect("a valid scope")
}

/// Sends `GET uri` through a layer allowing `allowed`: the Authorization the inner service
/// saw, or the error kind of a refusal (nothing sent).
fn send(allowed: &str, uri: &str) -> Result<Option<String>, TokenErrorKind> {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let inner = {
        let seen = seen.clone();
        service_fn(move |req: Request<String>| {
            let auth = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
            seen.lock().unwrap().push(auth);
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        })
    };
    let layer = EntraAuthLayer::builder(provider())
        .allow_hosts([allowed])
        .build()
        .unwrap_or_else(|e| panic!("{allowed:?}: {e}"));
    let svc = ServiceBuilder::new().layer(layer).service(inner);
    let request = Request::get(uri).body(String::new()).expect("a valid URI");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = runtime.block_on(svc.oneshot(request));
    let seen = seen.lock().unwrap().clone();
    match outcome {
        Ok(_) => {
            assert_eq!(seen.len(), 1, "one request sent");
            Ok(seen.into_iter().next().flatten())
        }
        Err(tower_entra::Error::Token(e)) => {
            assert!(seen.is_empty(), "a refused request is not sent");
            Err(e.kind())
        }
        Err(other) => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_allow_list_entry_is_a_host_pattern_or_a_configuration_error(
        entry in prop_oneof!["(?s).{0,48}", entry_like()],
    ) {
        if let Err(e) = EntraAuthLayer::builder(provider()).allow_hosts([&entry]).build() {
            prop_assert_eq!(e.kind(), TokenErrorKind::Configuration);
            let shown = e.to_string();
            prop_assert!(shown.contains(&format!("{:?}", entry.trim())), "{}", shown);
        }
    }
}

proptest! {
    // Each case builds a runtime and sends four requests.
    #![proptest_config(config(64))]

    #[test]
    fn a_token_goes_to_the_allowed_hosts_and_no_look_alike(
        name in host(2),
        wildcard in any::<bool>(),
        as_url in any::<bool>(),
        other in label(),
    ) {
        let pattern = match (wildcard, as_url) {
            (true, true) => format!("https://*.{name}/"),
            (true, false) => format!("*.{name}"),
            (false, true) => format!("https://{name}/"),
            (false, false) => name.clone(),
        };
        let token = Ok(Some("Bearer token-0".to_owned()));
        let refused = Err(TokenErrorKind::UnsafeDestination);
        let (allowed, look_alikes) = if wildcard {
            (
                format!("{other}.{name}"),
                // `_` is in no generated label: a top-level domain `name` cannot end in.
                vec![name.clone(), format!("{other}{name}"), format!("{other}.{name}.{other}_")],
            )
        } else {
            (
                name.clone(),
                vec![format!("{other}.{name}"), format!("{other}{name}"), format!("{name}.{other}_")],
            )
        };
        prop_assert_eq!(send(&pattern, &format!("https://{allowed}/x")), token, "{}", pattern);
        for host in look_alikes {
            prop_assert_eq!(send(&pattern, &format!("https://{host}/x")), refused.clone(), "{} to {}", pattern, host);
        }
    }
}
