//! What the binary's end-to-end tests share: a running `creapic serve` on a free loopback port,
//! found by the address it prints, its log kept for assertions, stopped by a signal or killed
//! when the test lets go of it; and, in its submodules, the store a test runs on ([`store`]),
//! a real browser ([`browser`]) and the console over plain HTTP ([`console_http`]).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod console_http;
pub mod store;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `creapic` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_creapic");

/// A running `creapic serve`; dropping it kills the process.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Every line the server wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM");
    }

    /// Waits for the process to exit, at most `max`; `None` if it is still running then.
    pub fn wait_exit(&mut self, max: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + max;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a log line contains `needle`, waiting at most `max` for it.
    pub fn wait_for_log(&self, needle: &str, max: Duration) -> Option<String> {
        let deadline = Instant::now() + max;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The whole log so far, one line each.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Starts `command` — a `creapic … serve --listen 127.0.0.1:0` with its flags and environment —
/// with stdout discarded and stderr read until the server says where it listens (60 s at most),
/// and kept (see [`Serve::log`]).
pub fn spawn_serve(mut command: Command) -> Serve {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = listening_address(&line) {
                let _ = tx.send(addr);
            }
            lines.lock().unwrap().push(line);
        }
    });
    let base = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(base) => base,
        Err(_) => panic!(
            "serve printed no address; its log:\n{}",
            log.lock().unwrap().join("\n")
        ),
    };
    Serve { child, base, log }
}

/// The API's address in `creapic serve`'s start line: the text banner's first line, or the
/// `listening` event of `--log-format json`.
pub fn listening_address(line: &str) -> Option<String> {
    if let Some(addr) = line.strip_prefix("creapic listening on ") {
        return Some(addr.trim().to_owned());
    }
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    (event["message"] == "listening")
        .then(|| event["address"].as_str().map(str::to_owned))
        .flatten()
}

/// `creapic --data-dir DIR ARGS…` (never a database from the environment).
pub fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CREAPIC_DATABASE_URL")
        .output()
        .unwrap()
}

/// [`cli`], which must succeed and print exactly one JSON document.
pub fn cli_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = cli(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed more than one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
