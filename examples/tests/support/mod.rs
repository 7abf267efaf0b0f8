//! What the binary's end-to-end tests share: a running `creapic serve` on a free loopback port,
//! found by the address it prints, and killed when the test lets go of it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `creapic` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_creapic");

/// A running `creapic serve`; dropping it kills the process.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` — a `creapic … serve --listen 127.0.0.1:0` with its flags and environment —
/// with stdout discarded and stderr read until the server says where it listens (60 s at most).
pub fn spawn_serve(mut command: Command) -> Serve {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("creapic listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("serve printed its address");
    Serve { child, base }
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
