//! Running a developer's sign-in tool (`az`, `azd`) for a token: the one place that starts one.
//!
//! The tool runs in its own process group from a directory that holds no program (so that
//! nothing planted in the app's working directory runs as `az`), with no stdin, and is killed
//! whole at the timeout: `az` is a launcher that starts Python as its child, and killing only
//! the launcher would leave the child running. Its stderr never reaches an error (it may echo
//! account details), an AADSTS code excepted.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::error::{TokenError, TokenErrorKind};
use crate::token::AccessToken;

/// A developer tool that prints a token.
pub(crate) struct Tool {
    /// The program, looked up on `PATH`.
    pub(crate) program: &'static str,
    /// Its name in errors, e.g. "the Azure CLI (`az`)".
    pub(crate) display: &'static str,
    /// How to install and sign in, for an error when it is missing.
    pub(crate) install: &'static str,
    /// The unavailable error's text when it is not signed in.
    pub(crate) signed_out: &'static str,
    /// What its stderr says (lowercased) when it is not signed in.
    pub(crate) signed_out_markers: &'static [&'static str],
}

/// One run of `tool` with `args`.
pub(crate) struct Run<'a> {
    pub(crate) tool: &'static Tool,
    pub(crate) args: Vec<&'a str>,
    /// What the run is called in errors, e.g. "`az account get-access-token`".
    pub(crate) command: &'static str,
    pub(crate) timeout: Duration,
    /// The child's `PATH` instead of this process's (tests: a fake tool).
    pub(crate) search_path: Option<&'a OsString>,
}

/// The scope as an argument, or an `InvalidScope` error. It is passed as one argument and never
/// through a shell on Unix, but on Windows through `cmd`, which expands `%VAR%` and treats
/// `&|<>^` as its own: only the characters of a resource URI are let through, and a leading `-`
/// (an option) is refused.
pub(crate) fn checked_scope(scope: &str) -> Result<&str, TokenError> {
    let scope = scope.trim();
    let safe = !scope.is_empty()
        && !scope.starts_with('-')
        && scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/".contains(&b));
    if safe {
        return Ok(scope);
    }
    Err(TokenError::new(
        TokenErrorKind::InvalidScope,
        format!(
            "the scope {scope:?} has characters a resource's scope does not (only letters, digits and -._~:/ are passed to a developer tool); use e.g. https://management.azure.com/.default"
        ),
    ))
}

impl Run<'_> {
    /// Runs the tool and reads the token it printed with `parse`, given when the run started (on
    /// tokio's clock and the wall clock), so that an expiry the tool states as a date is read
    /// against the moment it was asked.
    pub(crate) async fn token(
        self,
        parse: fn(&[u8], Instant, SystemTime) -> Result<AccessToken, TokenError>,
    ) -> Result<AccessToken, TokenError> {
        let (started, wall) = (Instant::now(), SystemTime::now());
        let stdout = self.output().await?;
        parse(&stdout, started, wall)
    }

    /// Runs the tool to the end and returns its stdout (zeroed when dropped), or the error that
    /// says why it could not give one.
    pub(crate) async fn output(self) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let tool = self.tool;
        let mut command = command(tool.program);
        command
            .args(&self.args)
            .current_dir(safe_directory())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = self.search_path {
            command.env("PATH", path);
        }
        let mut child = command.spawn().map_err(|e| {
            let error = if e.kind() == std::io::ErrorKind::NotFound {
                TokenError::unavailable(format!(
                    "{} is not installed or not on PATH; {}",
                    tool.display, tool.install
                ))
            } else {
                TokenError::configuration(format!(
                    "{} could not be started; {}",
                    tool.display, tool.install
                ))
            };
            error.with_source(e)
        })?;
        // Whatever ends this future early (the timeout, a caller that gave up) kills the whole
        // group.
        let mut group = ProcessGroup(child.id());
        let output = tokio::time::timeout(self.timeout, bounded_output(&mut child)).await;
        if output.is_ok() {
            // It exited and closed its output: nothing of it is left to kill.
            group.0 = None;
        }
        let output = match output {
            Ok(output) => output.map_err(|e| {
                TokenError::new(
                    TokenErrorKind::Connection,
                    format!("could not read the output of {}", self.command),
                )
                .with_source(e)
            })?,
            Err(_) => {
                return Err(TokenError::new(
                    TokenErrorKind::Timeout,
                    format!(
                        "{} did not finish within {:?}; run it yourself to see why",
                        self.command, self.timeout
                    ),
                ));
            }
        };
        let Output {
            status,
            stdout,
            stderr,
        } = output;
        if !status.success() {
            return Err(failure(tool, self.command, &stderr, status.code()));
        }
        if stdout.len() > MAX_OUTPUT {
            return Err(TokenError::invalid_response(format!(
                "{} printed more than {MAX_OUTPUT} bytes; its answer is a few KiB, so this is not {}",
                self.command, tool.display
            )));
        }
        Ok(stdout)
    }
}

/// The most of a tool's output read; its token answer is a few KiB.
const MAX_OUTPUT: usize = 64 * 1024;

/// What a finished run printed.
struct Output {
    status: std::process::ExitStatus,
    /// The token's JSON, in memory sized once (a buffer that grew would free copies of the
    /// token unzeroed) and zeroed when dropped.
    stdout: Zeroizing<Vec<u8>>,
    stderr: Vec<u8>,
}

/// Waits for `child` while reading what it prints, each stream at most [`MAX_OUTPUT`] bytes
/// (one more, to tell an oversized answer).
async fn bounded_output(child: &mut tokio::process::Child) -> std::io::Result<Output> {
    use tokio::io::AsyncReadExt;
    let limit = MAX_OUTPUT as u64 + 1;
    // Room for the limit and tokio's minimum spare capacity: `read_to_end` never reallocates.
    let mut stdout = Zeroizing::new(Vec::with_capacity(MAX_OUTPUT + 64));
    let mut stderr = Vec::new();
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read_out = async {
        match out {
            Some(out) => out.take(limit).read_to_end(&mut stdout).await.map(drop),
            None => Ok(()),
        }
    };
    let read_err = async {
        match err {
            Some(err) => err.take(limit).read_to_end(&mut stderr).await.map(drop),
            None => Ok(()),
        }
    };
    let (read_out, read_err, status) = tokio::join!(read_out, read_err, child.wait());
    read_out?;
    read_err?;
    Ok(Output {
        status: status?,
        stdout,
        stderr,
    })
}

/// The error of a failed run, from what the tool wrote to stderr: only the cause is kept, never
/// the text.
fn failure(tool: &Tool, command: &str, stderr: &[u8], code: Option<i32>) -> TokenError {
    let text = String::from_utf8_lossy(stderr);
    let lower = text.to_ascii_lowercase();
    if tool.signed_out_markers.iter().any(|m| lower.contains(m)) {
        return TokenError::unavailable(tool.signed_out);
    }
    if lower.contains("is not recognized as an internal or external command") || code == Some(127) {
        return TokenError::unavailable(format!(
            "{} is not installed or not on PATH; {}",
            tool.display, tool.install
        ));
    }
    let aadsts = text.find("AADSTS").map(|at| {
        let digits: String = text[at + 6..]
            .chars()
            .take_while(char::is_ascii_digit)
            .take(10)
            .collect();
        format!(" (AADSTS{digits})")
    });
    TokenError::new(
        TokenErrorKind::Authentication,
        format!(
            "{command} failed{}{}; run it yourself to see why",
            code.map(|c| format!(" with exit code {c}"))
                .unwrap_or_default(),
            aadsts.unwrap_or_default()
        ),
    )
}

#[cfg(windows)]
fn command(program: &str) -> tokio::process::Command {
    // `az` and `azd` may be batch files on Windows, which only cmd runs. A new process group
    // (CREATE_NEW_PROCESS_GROUP), no console window (CREATE_NO_WINDOW).
    let mut command = tokio::process::Command::new("cmd");
    command
        .args(["/d", "/c", program])
        .creation_flags(0x0000_0200 | 0x0800_0000);
    command
}

#[cfg(not(windows))]
fn command(program: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    // Its own group, so that the timeout kills its children too.
    command.process_group(0);
    command
}

/// A directory that holds no program: `cmd` looks in the working directory before `PATH`.
#[cfg(windows)]
fn safe_directory() -> std::path::PathBuf {
    std::env::var_os("SystemRoot")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(r"C:\Windows"))
}

#[cfg(not(windows))]
fn safe_directory() -> std::path::PathBuf {
    std::path::PathBuf::from("/")
}

/// A started tool's process group (or process tree on Windows), killed when dropped while the
/// tool still runs.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Some(id) = self.0 else { return };
        kill_group(id);
    }
}

#[cfg(unix)]
fn kill_group(id: u32) {
    // The group's id is the leader's pid (`process_group(0)`). It may be gone already.
    if let Some(pid) = i32::try_from(id)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(windows)]
fn kill_group(id: u32) {
    // The tree under cmd: az's Python. Fails harmlessly when it has already exited.
    let _ = std::process::Command::new("taskkill")
        .args(["/F", "/T", "/PID", &id.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(not(any(unix, windows)))]
fn kill_group(_id: u32) {}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A directory holding a fake `program` that runs `body` (after recording its arguments in
    /// `args`), removed on drop.
    pub(crate) struct FakeTool(pub(crate) PathBuf);

    impl FakeTool {
        pub(crate) fn new(program: &str, body: &str) -> FakeTool {
            let dir = std::env::temp_dir()
                .join(format!("tower-entra-{program}-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let script = dir.join(program);
            std::fs::write(
                &script,
                format!("#!/bin/sh\nPATH=/usr/bin:/bin\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\n{body}\n"),
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            FakeTool(dir)
        }

        pub(crate) fn search_path(&self) -> OsString {
            self.0.clone().into_os_string()
        }

        pub(crate) fn args(&self) -> Vec<String> {
            std::fs::read_to_string(self.0.join("args"))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }

        pub(crate) fn ran(&self) -> bool {
            self.0.join("args").exists()
        }
    }

    impl Drop for FakeTool {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const TOOL: Tool = Tool {
        program: "tool",
        display: "the tool",
        install: "install it",
        signed_out: "the tool is not signed in",
        signed_out_markers: &["please sign in"],
    };

    fn run(
        fake: &FakeTool,
        timeout: Duration,
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, TokenError>> {
        let path = fake.search_path();
        async move {
            Run {
                tool: &TOOL,
                args: vec!["token"],
                command: "`tool token`",
                timeout,
                search_path: Some(&path),
            }
            .output()
            .await
        }
    }

    #[tokio::test]
    async fn runs_from_a_directory_that_holds_no_program() {
        let fake = FakeTool::new("tool", "pwd");
        let out = run(&fake, Duration::from_secs(10)).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out).trim(), "/");
    }

    /// Whether `pid` is a live (not zombie) process.
    #[cfg(target_os = "linux")]
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(") ")
                .next()
                .is_some_and(|s| !s.starts_with('Z'))
        })
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_hung_tool_is_killed_with_the_children_it_started() {
        // The launcher starts a child (as `az` starts Python) and both hang.
        let fake = FakeTool::new(
            "tool",
            "sleep 300 &\necho $! > \"$(dirname \"$0\")/child\"\nwait",
        );
        let e = run(&fake, Duration::from_millis(500)).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Timeout, "{e}");
        let child = std::fs::read_to_string(fake.0.join("child")).unwrap();
        let child = child.trim();
        // SIGKILL is delivered at once, but the orphan is reaped by init a moment later.
        let mut waited = 0;
        while alive(child) && waited < 100 {
            std::thread::sleep(Duration::from_millis(50));
            waited += 1;
        }
        assert!(!alive(child), "the tool's child {child} is still running");
    }

    #[tokio::test]
    async fn stderr_never_reaches_the_error_but_for_the_aadsts_code() {
        let fake = FakeTool::new(
            "tool",
            "echo 'ERROR: AADSTS70043: The refresh token has expired. secret-detail' >&2; exit 2",
        );
        let e = run(&fake, Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Authentication, "{e}");
        assert!(e.to_string().contains("exit code 2 (AADSTS70043)"), "{e}");
        assert!(!format!("{e} {e:?}").contains("secret-detail"), "{e:?}");
        let fake = FakeTool::new(
            "tool",
            "echo 'Please sign in, someone@contoso.com' >&2; exit 1",
        );
        let e = run(&fake, Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
        assert!(!format!("{e} {e:?}").contains("someone@"), "{e:?}");
    }

    #[tokio::test]
    async fn a_missing_tool_is_unavailable() {
        let fake = FakeTool::new("other", "");
        let e = run(&fake, Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
        assert!(e.to_string().contains("install it"), "{e}");
    }

    #[test]
    fn scopes_cmd_or_a_parser_would_read_are_refused() {
        for scope in [
            "--help",
            "a b",
            "x;rm -rf /",
            "api://%PATH%/.default",
            "a&b",
            "a^b",
            "",
        ] {
            let e = checked_scope(scope).unwrap_err();
            assert_eq!(e.kind(), TokenErrorKind::InvalidScope, "{scope}: {e}");
        }
        assert_eq!(
            checked_scope(" https://management.azure.com/.default ").unwrap(),
            "https://management.azure.com/.default"
        );
    }
}
