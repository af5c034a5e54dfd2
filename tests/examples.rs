//! Runs the examples as a user would, with no Azure account: each must exit 0 and say what
//! happened; bad input must fail clearly. An example runs when this binary has the features it
//! requires (Cargo.toml), so `--no-default-features` runs the hyper transport example alone. The examples are built (or found up to date) by the
//! first test that needs one, so `cargo test --test examples` works alone.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

#[cfg(feature = "reqwest")]
use entra_emulator::{App, Emulator};

/// The features this test binary was built with, so that the examples are built to match.
fn features() -> Vec<&'static str> {
    let mut on = Vec::new();
    if cfg!(feature = "reqwest") {
        on.push("reqwest");
    }
    if cfg!(feature = "retry") {
        on.push("retry");
    }
    if cfg!(feature = "tonic") {
        on.push("tonic");
    }
    if cfg!(feature = "reqwest-middleware") {
        on.push("reqwest-middleware");
    }
    if cfg!(feature = "certificate") {
        on.push("certificate");
    }
    if cfg!(feature = "opentelemetry") {
        on.push("opentelemetry");
    }
    on
}

/// Builds the examples once per test run, with this binary's features, so that a test never
/// runs a missing or stale example (`cargo test --test examples` alone builds none). A no-op
/// when `cargo test` has just built them.
fn build_examples() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--examples",
                "-p",
                "tower-entra",
                "--no-default-features",
            ])
            .arg("--target-dir")
            .arg(target_dir);
        let features = features();
        if !features.is_empty() {
            cargo.arg("--features").arg(features.join(","));
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().unwrap();
        assert!(status.success(), "building the examples failed: {status}");
        profile_dir.join("examples")
    })
}

fn example(name: &str) -> Command {
    let path = build_examples().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing after building the examples",
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

fn run(mut cmd: Command) -> (Output, String, String) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[cfg(feature = "reqwest")]
#[test]
fn quickstart_prints_one_summary_line_and_the_consent_hint() {
    let (out, stdout, stderr) = run(example("quickstart"));
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}"
    );
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("requests: "))
        .collect();
    assert_eq!(
        summaries,
        ["requests: 100 ok, token fetches: 1"],
        "{stdout}"
    );
    assert!(stdout.contains("403 Forbidden"), "{stdout}");
    assert!(stdout.contains("admin-consent"), "{stdout}");
}

#[cfg(feature = "reqwest")]
#[test]
fn get_token_without_configuration_names_the_missing_variable_and_exits_1() {
    let mut cmd = example("get_token");
    cmd.arg("https://graph.microsoft.com/.default");
    let (out, stdout, stderr) = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("AZURE_TENANT_ID"), "{stderr}");
}

#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_prints_claims_and_expiry_but_never_the_token() {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(
        &emulator.tenant_id(),
        App::new("cli")
            .with_secret("cli-secret")
            .with_roles(&[Emulator::DEMO_API_ROLE]),
    );
    let mut cmd = example("get_token");
    cmd.arg(Emulator::DEMO_API_SCOPE)
        .env("AZURE_TENANT_ID", &app.tenant_id)
        .env("AZURE_CLIENT_ID", &app.client_id)
        .env("AZURE_CLIENT_SECRET", "cli-secret")
        .env("AZURE_AUTHORITY_HOST", emulator.authority_host());
    let (out, stdout, stderr) = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(r#""aud": "api://entra-emulator-demo""#),
        "{stdout}"
    );
    assert!(stdout.contains(&app.client_id), "{stdout}");
    assert!(stdout.contains("expires in "), "{stdout}");
    // A JWT starts with base64url of `{"`: `eyJ`. Only decoded claims may be printed.
    assert!(
        !stdout.contains("eyJ") && !stderr.contains("eyJ"),
        "{stdout}"
    );
    assert!(!stdout.contains("cli-secret"));
    assert_eq!(emulator.token_requests(), 1);
}

#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_prints_the_typed_error_and_exits_1() {
    let emulator = Emulator::start().await;
    let app = emulator.register_app(&emulator.tenant_id(), App::new("cli").with_secret("right"));
    let mut cmd = example("get_token");
    cmd.arg(Emulator::DEMO_API_SCOPE)
        .env("AZURE_TENANT_ID", &app.tenant_id)
        .env("AZURE_CLIENT_ID", &app.client_id)
        .env("AZURE_CLIENT_SECRET", "wrong-secret-value")
        .env("AZURE_AUTHORITY_HOST", emulator.authority_host());
    let (out, stdout, stderr) = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("AADSTS7000215") && stderr.contains("Hint:"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-secret-value"), "{stderr}");
}

/// Runs an example with no arguments; it must exit 0. Returns its standard output.
fn run_ok(name: &str) -> String {
    let (out, stdout, stderr) = run(example(name));
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    stdout
}

#[cfg(feature = "reqwest")]
#[test]
fn multi_tenant_example_serves_two_customers_and_links_the_third_to_consent() {
    let stdout = run_ok("multi_tenant");
    for consented in ["contoso", "fabrikam"] {
        let line = format!("{consented}.onmicrosoft.com: 50/50 requests ok, 1 token request\n");
        assert!(stdout.contains(&line), "{stdout}");
    }
    let northwind = stdout
        .lines()
        .find(|l| l.starts_with("northwind.onmicrosoft.com: 0/50 requests ok, 1 token request: no consent; its administrator consents at http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        northwind.contains("/northwind.onmicrosoft.com/adminconsent?client_id="),
        "{northwind}"
    );
    assert!(stdout.contains("home tenant token requests: 0"), "{stdout}");
}

#[cfg(feature = "reqwest")]
#[test]
fn managed_identity_example_retries_imds_and_federates_an_app() {
    let stdout = run_ok("managed_identity");
    assert!(
        stdout.contains(
            "managed identity via IMDS: IMDS answered 410, 410, 200; demo API answered 200 OK"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("via its managed identity federated credential: demo API answered 200 OK"),
        "{stdout}"
    );
}

#[test]
fn hyper_client_example_shares_one_token_request() {
    let stdout = run_ok("hyper_client");
    assert!(stdout.contains("20 requests answered 200"), "{stdout}");
    assert!(
        stdout.contains("token requests sent to Entra: 1"),
        "{stdout}"
    );
}

/// Also run by `cargo test --no-default-features --test examples`: the example then fetches its
/// token with no reqwest in the build.
#[test]
fn hyper_transport_example_sends_the_token_request_through_hyper() {
    let stdout = run_ok("hyper_transport");
    assert!(stdout.contains("demo API: 200 OK"), "{stdout}");
    assert!(
        stdout.contains(
            "token requests through the hyper-util transport: 1 (received by the emulator: 1)"
        ),
        "{stdout}"
    );
}

#[cfg(feature = "reqwest")]
#[test]
fn reqwest_client_example_serves_both_ways() {
    let stdout = run_ok("reqwest_client");
    assert!(stdout.contains("tower service: 200 OK"), "{stdout}");
    // The examples are built with this test's features.
    if cfg!(feature = "reqwest-middleware") {
        assert!(stdout.contains("reqwest-middleware: 200 OK"), "{stdout}");
    }
    assert!(
        stdout.contains("token requests sent to Entra: 1"),
        "{stdout}"
    );
}

#[cfg(feature = "reqwest")]
#[test]
fn tonic_client_example_checks_health_and_maps_token_errors() {
    let stdout = run_ok("tonic_client");
    assert!(stdout.contains("health check: Serving"), "{stdout}");
    let code = if cfg!(feature = "tonic") {
        "Unauthenticated"
    } else {
        "Unknown"
    };
    assert!(
        stdout.contains(&format!("with a wrong secret: {code}")),
        "{stdout}"
    );
    assert!(stdout.contains("AADSTS7000215"), "{stdout}");
}

#[cfg(all(feature = "retry", feature = "reqwest"))]
#[test]
fn retry_timeout_example_replays_after_revocation_and_cae() {
    let stdout = run_ok("retry_timeout");
    assert!(
        stdout.contains("after revocation: 200 OK, replayed once (token requests: 2)"),
        "{stdout}"
    );
    assert!(stdout.contains("after a CAE event: 200 OK"), "{stdout}");
}

#[cfg(all(feature = "opentelemetry", feature = "reqwest"))]
#[test]
fn metrics_example_exports_the_instruments_to_stdout() {
    let stdout = run_ok("metrics");
    for instrument in [
        "tower_entra.token.requests",
        "tower_entra.token.fetch.duration",
        "tower_entra.token.expires_in",
        "tower_entra.token.invalidations",
    ] {
        assert!(
            stdout.contains(instrument),
            "{instrument} missing:\n{stdout}"
        );
    }
    // The wrong secret's request, by its AADSTS code.
    assert!(stdout.contains("7000215"), "{stdout}");
    assert!(stdout.contains("authentication"), "{stdout}");
}

#[cfg(all(feature = "certificate", feature = "reqwest"))]
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[cfg(all(feature = "certificate", feature = "reqwest"))]
#[test]
fn makes_a_certificate_and_gets_a_token_with_it() {
    let out = example("certificate").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("token obtained with a PS256 certificate assertion"),
        "{stdout}"
    );
    assert!(stdout.contains("200 OK"), "{stdout}");
}

#[cfg(all(feature = "certificate", feature = "reqwest"))]
#[test]
fn loads_a_pfx_given_on_the_command_line() {
    let out = example("certificate")
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

#[cfg(all(feature = "certificate", feature = "reqwest"))]
#[test]
fn an_ec_key_exits_1_saying_rsa_is_required() {
    let out = example("certificate")
        .arg(fixture("ec.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("RSA") && stderr.contains("ec.pem"),
        "{stderr}"
    );
}
