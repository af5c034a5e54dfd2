//! Property tests over the public parsers: allow-list host patterns through
//! [`EntraAuthLayer::allow_hosts`], and the PEM and PKCS#12 loaders. No input panics; what is
//! well-formed loads, in any layout; no error shows a key or a password.
//!
//! The crate-private parsers (token and error responses, host patterns, Bearer challenges)
//! have theirs beside them, in `src/endpoint.rs`, `src/destination.rs` and `src/challenge.rs`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Request, Response};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_entra::{ClientCertificate, EntraAuthLayer, TokenErrorKind, TokenProvider};

use crate::support::ScriptedCredential;

const PASSWORD: &str = "fixture-password";

/// Bounded, so that CI stays fast; no regression files in the tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Allow-lists through the public layer

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
    let layer = EntraAuthLayer::new(provider())
        .allow_hosts([allowed])
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
        if let Err(e) = EntraAuthLayer::new(provider()).allow_hosts([&entry]) {
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

// ---------------------------------------------------------------------------------------------
// PEM and PKCS#12 loaders

/// The PEM blocks of a fixture, as (label, base64 body without line breaks).
fn blocks(pem: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in pem.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_owned(), String::new()));
        } else if line.starts_with("-----END ") {
            out.extend(current.take());
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line.trim());
        }
    }
    out
}

/// The base64 lines of a fixture's private key: what no error may show.
fn key_lines(pem: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_key = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            in_key = line.contains("PRIVATE KEY");
        } else if line.starts_with("-----END") {
            in_key = false;
        } else if in_key && line.len() >= 16 {
            lines.push(line.to_owned());
        }
    }
    assert!(!lines.is_empty(), "the fixture has a key");
    lines
}

/// One change that damages a file: cut it short, flip a byte, put bytes in, or take some out.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

impl Damage {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Damage::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Damage::Flip(i, mask) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= mask;
            }
            Damage::Flip(..) => {}
            Damage::Insert(i, inserted) => {
                let i = i.index(bytes.len() + 1);
                bytes.splice(i..i, inserted.iter().copied());
            }
            Damage::Remove(i, n) => {
                let i = i.index(bytes.len() + 1);
                bytes.drain(i..(i + n).min(bytes.len()));
            }
        }
    }
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Damage::Flip(i, m)),
        (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Damage::Insert(i, b)),
        (any::<Index>(), 1..64usize).prop_map(|(i, n)| Damage::Remove(i, n)),
    ]
}

/// Text that is no part of a PEM block: comments, OpenSSL's `Bag Attributes`, blank lines.
fn junk_lines() -> impl Strategy<Value = Vec<String>> {
    vec("[ \t]{0,2}[A-Za-z0-9 :=.]{0,40}", 0..3)
}

/// The fixture's certificate and key written out again: blocks in either order, LF or CRLF,
/// base64 wrapped at any width, white space around lines, text before, between and after.
fn relaid_pem() -> impl Strategy<Value = String> {
    let pem = String::from_utf8(fixture("client-pkcs8.pem")).expect("PEM is text");
    let blocks = blocks(&pem);
    (
        Just(blocks).prop_shuffle(),
        prop_oneof![Just("\n"), Just("\r\n")],
        1..=100usize,
        prop_oneof![Just(""), Just(" "), Just("\t")],
        vec(junk_lines(), 3),
    )
        .prop_map(|(blocks, eol, width, pad, junk)| {
            let mut out = String::new();
            let mut junk = junk.into_iter();
            let mut put_junk = |out: &mut String| {
                for line in junk.next().unwrap_or_default() {
                    out.push_str(&line);
                    out.push_str(eol);
                }
            };
            for (label, body) in &blocks {
                put_junk(&mut out);
                out.push_str(&format!("{pad}-----BEGIN {label}-----{pad}{eol}"));
                for line in body.as_bytes().chunks(width) {
                    out.push_str(pad);
                    out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                    out.push_str(pad);
                    out.push_str(eol);
                }
                out.push_str(&format!("-----END {label}-----{eol}"));
            }
            put_junk(&mut out);
            out
        })
}

/// A PEM block of any label around any bytes, or around one of the fixtures' DER damaged, next
/// to the fixture's other block: what reaches the X.509, PKCS#1 and PKCS#8 decoders.
fn block_around_der() -> impl Strategy<Value = Vec<u8>> {
    let pem = String::from_utf8(fixture("client-pkcs8.pem")).expect("PEM is text");
    let [(cert_label, cert), (key_label, key)] =
        <[_; 2]>::try_from(blocks(&pem)).expect("two blocks");
    let cert_der = STANDARD.decode(&cert).expect("base64");
    let key_der = STANDARD.decode(&key).expect("base64");
    let labels = proptest::sample::select(vec![
        "CERTIFICATE",
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "EC PRIVATE KEY",
        "X509 CRL",
    ]);
    let der = prop_oneof![
        vec(any::<u8>(), 0..600),
        (Just(cert_der), vec(damage(), 1..3)).prop_map(|(mut d, damage)| {
            damage.iter().for_each(|x| x.apply(&mut d));
            d
        }),
        (Just(key_der), vec(damage(), 1..3)).prop_map(|(mut d, damage)| {
            damage.iter().for_each(|x| x.apply(&mut d));
            d
        }),
    ];
    let kept = prop_oneof![
        Just(format!(
            "-----BEGIN {cert_label}-----\n{cert}\n-----END {cert_label}-----\n"
        )),
        Just(format!(
            "-----BEGIN {key_label}-----\n{key}\n-----END {key_label}-----\n"
        )),
    ];
    (labels, der, kept).prop_map(|(label, der, kept)| {
        format!(
            "{kept}-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
        .into_bytes()
    })
}

/// `shown` holds no line of the key in `pem`.
fn shows_no_key(shown: &str, key_lines: &[String]) -> Result<(), TestCaseError> {
    for line in key_lines {
        prop_assert!(!shown.contains(line.as_str()), "a key line in {}", shown);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_bytes_are_a_certificate_or_a_configuration_error(
        bytes in prop_oneof![vec(any::<u8>(), 0..1024), block_around_der()],
        password in proptest::option::of("[ -~]{0,16}"),
    ) {
        for result in [
            ClientCertificate::from_pem(&bytes),
            ClientCertificate::from_pem_with_password(&bytes, password.as_deref().unwrap_or(PASSWORD)),
        ] {
            if let Err(e) = result {
                prop_assert_eq!(e.kind(), TokenErrorKind::Configuration, "{}", e);
            }
        }
    }

    #[test]
    fn a_damaged_pem_file_fails_typed_and_shows_no_key(
        name in proptest::sample::select(vec!["client-pkcs8.pem", "client-pkcs1.pem"]),
        damage in vec(damage(), 1..4),
    ) {
        let pem = fixture(name);
        let key_lines = key_lines(std::str::from_utf8(&pem).expect("PEM is text"));
        let mut damaged = pem.clone();
        for d in &damage {
            d.apply(&mut damaged);
        }
        match ClientCertificate::from_pem(&damaged) {
            Ok(certificate) => shows_no_key(&format!("{certificate:?}"), &key_lines)?,
            Err(e) => {
                prop_assert_eq!(e.kind(), TokenErrorKind::Configuration, "{}", e);
                shows_no_key(&format!("{e} {e:?}"), &key_lines)?;
            }
        }
    }

    #[test]
    fn a_pem_file_loads_the_same_in_any_layout(pem in relaid_pem()) {
        let original = ClientCertificate::from_pem(fixture("client-pkcs8.pem")).expect("the fixture loads");
        let relaid = ClientCertificate::from_pem(&pem)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(relaid.thumbprint(), original.thumbprint());
        prop_assert_eq!(relaid.certificate_der(), original.certificate_der());
        prop_assert_eq!(relaid.chain_len(), 1);
        // What it writes out reads back as the same certificate.
        let key = blocks(&pem).into_iter().find(|(label, _)| label == "PRIVATE KEY").expect("a key");
        let again = format!(
            "{}-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            relaid.certificate_pem(),
            key.1
        );
        let again = ClientCertificate::from_pem(&again).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.certificate_der(), original.certificate_der());
    }
}

proptest! {
    // Every case that gets as far as the MAC runs the archive's key derivation.
    #![proptest_config(config(64))]

    #[test]
    fn a_damaged_or_locked_pfx_fails_typed_and_shows_no_password(
        name in proptest::sample::select(vec!["client-aes.pfx", "client-legacy.pfx", "chain.pfx"]),
        damage in vec(damage(), 0..3),
        password in prop_oneof![Just(PASSWORD.to_owned()), "[ -~]{0,24}", "(?s).{0,8}"],
    ) {
        let mut der = fixture(name);
        for d in &damage {
            d.apply(&mut der);
        }
        match ClientCertificate::from_pkcs12(&der, Some(&password)) {
            Ok(_) => prop_assert!(damage.is_empty() || password == PASSWORD),
            Err(e) => {
                prop_assert_eq!(e.kind(), TokenErrorKind::Configuration, "{}", e);
                prop_assert!(!(damage.is_empty() && password == PASSWORD), "{}", e);
                let shown = format!("{e} {e:?}");
                if password.len() >= 4 {
                    prop_assert!(!shown.contains(&password), "the password in {}", shown);
                }
            }
        }
    }

    #[test]
    fn any_bytes_are_a_pfx_or_a_configuration_error(
        bytes in vec(any::<u8>(), 0..1024),
        password in proptest::option::of("(?s).{0,16}"),
    ) {
        if let Err(e) = ClientCertificate::from_pkcs12(&bytes, password.as_deref()) {
            prop_assert_eq!(e.kind(), TokenErrorKind::Configuration, "{}", e);
        }
    }
}
