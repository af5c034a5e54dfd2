//! Runs the examples as a user would, with no Azure account: each must exit 0 and say what
//! happened. `cargo test` builds the examples before it runs this.

use std::path::PathBuf;
use std::process::{Command, Output};

use entra_emulator::{App, Emulator};

fn example(name: &str) -> Command {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace --all-features`, which builds the examples",
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

#[test]
fn get_token_without_configuration_names_the_missing_variable_and_exits_1() {
    let mut cmd = example("get_token");
    cmd.arg("https://graph.microsoft.com/.default");
    let (out, stdout, stderr) = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("AZURE_TENANT_ID"), "{stderr}");
}

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
