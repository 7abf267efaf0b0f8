//! The log an operator reads, through the built binary: `creapic serve --log-format json`
//! writes one JSON object per event, and every request — answered or refused — leaves one
//! access line (target `creapic::access`) with its status, latency, route template, request id,
//! and, once the key checked out, the key's prefix and the organization; never a key's secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{BIN, cli_json, spawn_serve};

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_leaves_one_json_access_line_without_secrets() {
    let dir = std::env::temp_dir().join(format!("creapic-logs-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let org = cli_json(&dir, &["org", "create", "--name", "Logs", "--json"])["organization"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = cli_json(
        &dir,
        &[
            "key",
            "create",
            "--org",
            &org,
            "--name",
            "logs",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-runner"])
        .env("CREAPIC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    let server = spawn_serve(command);
    let http = reqwest::Client::new();
    let credits = format!("{}/api/public/credits", server.base);
    let ok = http.get(&credits).bearer_auth(&key).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let id_ok = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    let refused = http.get(&credits).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let id_refused = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    // The lines are written as the responses leave; wait for both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let access = loop {
        let lines: Vec<Value> = server
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "creapic::access")
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let line = |id: &str| {
        let found: Vec<&Value> = access
            .iter()
            .filter(|v| v["span"]["request_id"] == id)
            .collect();
        assert_eq!(found.len(), 1, "one access line for {id}: {access:?}");
        found[0].clone()
    };
    let ok = line(&id_ok);
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["status"], 200);
    assert!(ok["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(ok["span"]["method"], "GET");
    assert_eq!(ok["span"]["route"], "/api/public/credits");
    assert_eq!(ok["span"]["org"], org.as_str());
    assert_eq!(ok["span"]["key"], &key[..12]);
    assert!(ok["timestamp"].as_str().unwrap().starts_with("20"));
    let refused = line(&id_refused);
    assert_eq!(refused["status"], 401);
    assert!(refused["span"].get("org").is_none(), "{refused}");

    // Every event after the start-up banner is JSON, and none holds the key's secret part.
    let log = server.log_text();
    assert!(!log.contains(&key[12..]), "a key's secret reached the log");
    let banner_end = log
        .lines()
        .position(|l| l.starts_with('{'))
        .expect("JSON lines");
    for l in log.lines().skip(banner_end) {
        assert!(
            serde_json::from_str::<Value>(l).is_ok(),
            "not a JSON line: {l}"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
