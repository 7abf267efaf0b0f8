//! Two replicas of the built `creapic` binary on one PostgreSQL database, under concurrent load
//! from both sides.
//!
//! The database is a fresh one (`CREATE DATABASE`, dropped at the end): the binary takes a URL,
//! and a URL names a database, not a schema. The organization holds 20 credits; 60 one-image
//! bulk jobs race across both replicas. Exactly as many are accepted as the balance pays for,
//! never more (no over-draw), the rest get 402, nothing gets a 5xx, and the ledger adds up.
//! Then a key that both replicas have verified (and cached) is deleted through one replica's
//! dashboard route; the other refuses it within 1 s although its cache would trust the key for
//! a minute (`CREAPIC_KEY_CACHE_TTL_MS`): only LISTEN/NOTIFY explains the refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::store::{Database, temp_dir};
use support::{BIN, Serve, spawn_serve};

mod support;

const DASHBOARD_TOKEN: &str = "replicas-dashboard-token";
const CREDITS: u64 = 20;

fn data_dir() -> PathBuf {
    temp_dir("replicas")
}

fn cli_json(db: &Database, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("--database")
        .arg(&db.url)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn replica(db: &Database, dir: &Path) -> Serve {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir)
        .arg("--database")
        .arg(&db.url)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--dev-dashboard-token")
        .env("CREAPIC_DASHBOARD_TOKEN", DASHBOARD_TOKEN)
        // A verified key is trusted for a minute: only LISTEN/NOTIFY can make the other
        // replica refuse a deleted key within a second.
        .env("CREAPIC_KEY_CACHE_TTL_MS", "60000")
        // One signing key for both, as the binary's docs ask of replicas.
        .env("CREAPIC_MEDIA_SIGNING_KEY", "42".repeat(32))
        .env("RUST_LOG", "warn");
    spawn_serve(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_overdraw_and_share_revocations_within_a_second() {
    let db = Database::create("replicas").await;
    let org = cli_json(
        &db,
        &[
            "org",
            "create",
            "--name",
            "Replicas",
            "--owner",
            "owner@example.com",
            "--json",
        ],
    );
    let org_id = org["organization"]["id"].as_str().unwrap().to_owned();
    cli_json(
        &db,
        &[
            "credits",
            "grant",
            "--org",
            &org_id,
            "--amount",
            &CREDITS.to_string(),
            "--json",
        ],
    );
    let key = cli_json(
        &db,
        &[
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "load",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
    );
    let key_text = key["key"].as_str().unwrap().to_owned();
    let key_id = key["id"]
        .as_str()
        .or_else(|| key["apiKey"]["id"].as_str())
        .unwrap()
        .to_owned();
    let (dir_a, dir_b) = (data_dir(), data_dir());
    let a = replica(&db, &dir_a);
    let b = replica(&db, &dir_b);
    let bases = [a.base.clone(), b.base.clone()];
    let http = reqwest::Client::new();

    // 60 one-credit jobs against 20 credits, half through each replica, all at once.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (http, base, key) = (http.clone(), bases[i % 2].clone(), key_text.clone());
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{base}/api/playground/images"))
                .bearer_auth(&key)
                .header("idempotency-key", format!("race-{i}"))
                .json(&json!({"prompts": [format!("race {i}")]}))
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count() as u64;
    let refused = statuses.iter().filter(|s| **s == 402).count() as u64;
    assert_eq!(
        accepted + refused,
        60,
        "only 202 or 402, never a 5xx: {statuses:?}"
    );
    assert_eq!(accepted, CREDITS, "exactly what the balance pays for");
    let balance = cli_json(&db, &["credits", "balance", "--org", &org_id, "--json"]);
    assert_eq!(balance["balance"], 0, "{balance}");
    let ledger = cli_json(&db, &["credits", "ledger", "--org", &org_id, "--json"]);
    let entries = ledger["entries"]
        .as_array()
        .or_else(|| ledger.as_array())
        .unwrap();
    let sum: i64 = entries.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
    assert_eq!(sum, 0, "balance = sum of entries");

    // Both replicas have verified (and cached) the key.
    for base in &bases {
        let resp = http
            .get(format!(
                "{base}/api/playground/images/00000000-0000-0000-0000-000000000000"
            ))
            .bearer_auth(&key_text)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "the key works on {base}");
    }
    // Deleted through A; B refuses it within a second.
    let deleted = http
        .delete(format!(
            "{}/api/keys/{key_id}?organizationId={org_id}",
            bases[0]
        ))
        .header("x-dashboard-token", DASHBOARD_TOKEN)
        .header("x-dashboard-user", "owner@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let since = Instant::now();
    loop {
        let resp = http
            .get(format!(
                "{}/api/playground/images/00000000-0000-0000-0000-000000000000",
                bases[1]
            ))
            .bearer_auth(&key_text)
            .send()
            .await
            .unwrap();
        if resp.status() == 401 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "replica B still accepts a key deleted through A after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen_after = since.elapsed();
    assert!(seen_after < Duration::from_secs(1), "{seen_after:?}");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
}
