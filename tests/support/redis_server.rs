//! A real `redis-server` per test, on a free port of 127.0.0.1, with no persistence: started
//! by the test, stopped (killed) when dropped. Without `redis-server` installed the test fails
//! with the install line: the shared-cache tests never skip silently.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to run when `redis-server` is missing.
pub const INSTALL: &str = "the shared-cache tests need redis-server: `sudo apt-get install -y redis-server` \
     (Debian/Ubuntu) or `brew install redis` (macOS)";

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    /// `--user`, `--pass` for `redis-cli`, when the default user is off.
    cli_auth: Vec<String>,
}

impl RedisServer {
    /// A server with no password.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A server started with extra arguments (`--requirepass x`, `--user ...`).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            child: None,
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            cli_auth: Vec::new(),
        };
        server.restart();
        server
    }

    /// `redis-cli` signs in as `user` with `password` (for a server whose default user is off).
    pub fn cli_as(mut self, user: &str, password: &str) -> RedisServer {
        self.cli_auth = ["--user", user, "--pass", password, "--no-auth-warning"]
            .map(str::to_owned)
            .to_vec();
        self
    }

    /// `redis://` with `auth` (`":password@"`, `"user:password@"` or `""`).
    pub fn url_with(&self, auth: &str) -> String {
        format!("redis://{auth}127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        self.url_with("")
    }

    /// Kills the server (as a crash would: no shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (no persistence), and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}): {INSTALL}"));
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers (any answer to PING: a password-protected server says
    /// NOAUTH).
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut answer = [0u8; 64];
        matches!(stream.read(&mut answer), Ok(n) if n > 0)
    }

    /// `redis-cli` against this server with `args`, its output as text (what an operator with
    /// access to Redis sees).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.cli_auth)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): {INSTALL}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key and value in the server, as `redis-cli` shows them.
    pub fn dump(&self) -> String {
        let keys = self.cli(&["--scan"]);
        let mut dump = String::new();
        for key in keys.lines() {
            dump.push_str(key);
            dump.push_str(" = ");
            dump.push_str(&self.cli(&["--no-raw", "GET", key]));
        }
        dump
    }

    /// The keys in the server.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.cli(&["--scan"]).lines().map(str::to_owned).collect();
        keys.sort();
        keys
    }
}

impl RedisServer {
    /// Commands the server ran since it started (every `cmdstat_*` count of `INFO
    /// commandstats`), less the `INFO` calls that read them.
    pub fn commands(&self) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        stats
            .lines()
            .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
