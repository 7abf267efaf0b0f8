//! Stopping `creapic serve`, gracefully and not: the built binary on a SQLite data directory,
//! with a 40-image bulk job in flight.
//!
//! - SIGTERM: the runner starts no new item, hands the job back, logs that it stopped, and the
//!   process exits; a restart resumes the job at once — with a 15-minute lease, so a job that
//!   was not handed back could not be resumed within the test's (generous) bounds.
//! - SIGTERM with a connection that never finishes its request: the process still exits, at
//!   the shutdown deadline for connections, not when the client pleases.
//! - SIGKILL: nothing is handed back; after the (short) lease the restarted server finishes the
//!   job, and every item is charged exactly once.
//!
//! Flags go through their environment variables: a binary that does not know them ignores them
//! and fails on what it does, not at argument parsing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{BIN, Serve, cli_json, spawn_serve};

/// Items in the bulk job (the reproduction).
const ITEMS: usize = 40;
/// Credits granted; each item costs 1.
const GRANTED: i64 = 100;

fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "creapic-shutdown-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn serve(dir: &Path, env: &[(&str, &str)]) -> Serve {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("CREAPIC_DATABASE_URL")
        .env("RUST_LOG", "info");
    for (k, v) in env {
        command.env(k, v);
    }
    spawn_serve(command)
}

/// An organization with [`GRANTED`] credits and a live key; returns (org id, key).
fn org_with_key(dir: &Path) -> (String, String) {
    let org = cli_json(dir, &["org", "create", "--name", "Stop Org", "--json"]);
    let org_id = org["organization"]["id"].as_str().unwrap().to_owned();
    cli_json(
        dir,
        &[
            "credits",
            "grant",
            "--org",
            &org_id,
            "--amount",
            &GRANTED.to_string(),
            "--json",
        ],
    );
    let key = cli_json(
        dir,
        &[
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "stop",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
    );
    (org_id, key["key"].as_str().unwrap().to_owned())
}

async fn submit_bulk(http: &reqwest::Client, server: &Serve, key: &str) -> String {
    let prompts: Vec<String> = (0..ITEMS).map(|n| format!("harbour at dawn {n}")).collect();
    let resp = http
        .post(format!("{}/api/playground/images", server.base))
        .bearer_auth(key)
        .json(&json!({ "prompts": prompts }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    body["jobId"].as_str().unwrap().to_owned()
}

async fn job(http: &reqwest::Client, server: &Serve, key: &str, id: &str) -> Value {
    http.get(format!("{}/api/playground/images/{id}", server.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the job until `done` holds, at most `max`.
async fn wait_job(
    http: &reqwest::Client,
    server: &Serve,
    key: &str,
    id: &str,
    max: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + max;
    loop {
        let status = job(http, server, key, id).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "waited {max:?}; the job is {status}; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Balance = granted − succeeded items, every entry of the ledger summing to it, and each item
/// captured exactly once under its own key, nothing captured twice and no hold left open.
fn assert_charged_once(dir: &Path, org_id: &str, job_id: &str, succeeded: usize) {
    let balance = cli_json(dir, &["credits", "balance", "--org", org_id, "--json"]);
    assert_eq!(
        balance["balance"].as_i64().unwrap(),
        GRANTED - succeeded as i64,
        "balance = granted − succeeded items"
    );
    let ledger = cli_json(dir, &["credits", "ledger", "--org", org_id, "--json"]);
    let entries = ledger["entries"].as_array().unwrap();
    let sum: i64 = entries.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
    assert_eq!(
        sum,
        balance["balance"].as_i64().unwrap(),
        "ledger sums to the balance"
    );
    let mut per_item = std::collections::HashMap::<String, usize>::new();
    for e in entries {
        let key = e["idempotencyKey"].as_str().unwrap();
        if key.starts_with(&format!("job:{job_id}:item:")) && e["kind"] == "capture" {
            *per_item.entry(key.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(
        per_item.len(),
        succeeded,
        "one capture per succeeded item: {ledger}"
    );
    assert!(
        per_item.values().all(|n| *n == 1),
        "an item captured twice: {per_item:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_job_back_and_a_restart_resumes_it_at_once() {
    let dir = data_dir();
    let (org_id, key) = org_with_key(&dir);
    // A 15-minute lease: a job that is not handed back waits that long for another runner.
    let env = [
        ("CREAPIC_RUNNER_LEASE_SECS", "900"),
        ("CREAPIC_SHUTDOWN_GRACE_SECS", "20"),
    ];
    let mut server = serve(&dir, &env);
    let http = reqwest::Client::new();
    let id = submit_bulk(&http, &server, &key).await;
    wait_job(&http, &server, &key, &id, Duration::from_secs(120), |j| {
        j["completedImages"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(90))
        .unwrap_or_else(|| {
            panic!(
                "serve did not exit after SIGTERM; log:\n{}",
                server.log_text()
            )
        });
    assert!(status.success(), "exit status {status}");
    let stopped = server
        .wait_for_log("job runner stopped", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no 'job runner stopped'; log:\n{}", server.log_text()));
    assert!(stopped.contains("handed_back=1"), "{stopped}");
    drop(server);

    let restarted = serve(&dir, &env);
    let before = job(&http, &restarted, &key, &id).await;
    assert_ne!(
        before["status"], "completed",
        "the job was left unfinished: {before}"
    );
    // Bounded far below the lease: only a job handed back can be done by then.
    let done = wait_job(
        &http,
        &restarted,
        &key,
        &id,
        Duration::from_secs(300),
        |j| j["status"] == "completed",
    )
    .await;
    assert_eq!(done["completedImages"], ITEMS, "{done}");
    assert_charged_once(&dir, &org_id, &id, ITEMS);
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_request_does_not_hold_shutdown() {
    let dir = data_dir();
    // The header timeout is long, so that only the shutdown deadline can close the connection.
    let mut server = serve(
        &dir,
        &[
            ("CREAPIC_HEADER_READ_TIMEOUT_SECS", "300"),
            ("CREAPIC_SHUTDOWN_DRAIN_SECS", "2"),
        ],
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stuck = std::net::TcpStream::connect(&addr).unwrap();
    stuck
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // The server has accepted it (a full request on another connection is answered after).
    let health = reqwest::get(format!("{}/api/health", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| {
            panic!(
                "an unfinished request held the shutdown; log:\n{}",
                server.log_text()
            )
        });
    assert!(status.success(), "exit status {status}");
    drop(stuck);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_loses_nothing_and_charges_each_item_once() {
    let dir = data_dir();
    let (org_id, key) = org_with_key(&dir);
    // A short lease: after a crash nothing is handed back, so the restart waits for it.
    let env = [("CREAPIC_RUNNER_LEASE_SECS", "5")];
    let mut server = serve(&dir, &env);
    let http = reqwest::Client::new();
    let id = submit_bulk(&http, &server, &key).await;
    let seen = wait_job(&http, &server, &key, &id, Duration::from_secs(120), |j| {
        j["completedImages"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(
        server
            .log_text()
            .lines()
            .all(|l| !l.contains("job runner stopped")),
        "a crash is not a graceful stop"
    );
    drop(server);
    let restarted = serve(&dir, &env);
    let before = job(&http, &restarted, &key, &id).await;
    assert!(
        before["completedImages"].as_u64().unwrap() >= seen["completedImages"].as_u64().unwrap(),
        "what was reported before the kill is kept: {before}"
    );
    assert_ne!(before["status"], "completed", "killed mid-job: {before}");
    let done = wait_job(
        &http,
        &restarted,
        &key,
        &id,
        Duration::from_secs(300),
        |j| j["status"] == "completed",
    )
    .await;
    assert_eq!(done["completedImages"], ITEMS, "{done}");
    assert_charged_once(&dir, &org_id, &id, ITEMS);
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
