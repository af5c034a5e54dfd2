//! Property tests over the public certificate loaders, PEM and PKCS#12: no input panics; what is
//! well-formed loads, in any layout; no error shows a key or a password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tower_entra::{ClientCertificate, TokenErrorKind};

use crate::properties::config;
use crate::support::fixtures::read as fixture;

const PASSWORD: &str = "fixture-password";

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
