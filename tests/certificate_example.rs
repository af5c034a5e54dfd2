//! Runs `examples/certificate.rs` as a user would (`cargo run --example certificate`): it must
//! exit 0 having got a token with a PS256 certificate assertion, and fail clearly on an EC key.

use std::path::PathBuf;
use std::process::Command;

fn example() -> Command {
    // target/<profile>/deps/certificate_example-<hash> -> target/<profile>/examples/certificate
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples");
    let path = dir.join(format!("certificate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples",
        path.display()
    );
    let mut cmd = Command::new(path);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AZURE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn makes_a_certificate_and_gets_a_token_with_it() {
    let out = example().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("token obtained with a PS256 certificate assertion"),
        "{stdout}"
    );
    assert!(stdout.contains("200 OK"), "{stdout}");
}

#[test]
fn loads_a_pfx_given_on_the_command_line() {
    let out = example()
        .arg(fixture("client-aes.pfx"))
        .arg("fixture-password")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let thumbprint = std::fs::read_to_string(fixture("cert.sha1")).unwrap();
    assert!(stdout.contains(thumbprint.trim()), "{stdout}");
    assert!(stdout.contains("PS256"), "{stdout}");
}

#[test]
fn an_ec_key_exits_1_saying_rsa_is_required() {
    let out = example().arg(fixture("ec.pem")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("RSA") && stderr.contains("ec.pem"),
        "{stderr}"
    );
}
