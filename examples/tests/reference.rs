//! The published API reference through the built binary: `creapic openapi` prints exactly the
//! committed `docs/openapi.json` without touching a data directory, and the page `creapic
//! serve` answers at `/api/docs` renders in a real browser (headless Chromium, its DOM read
//! back) with the document's operations listed.
//!
//! The browser check needs Chromium (`apt-get install chromium`, or `CREAPIC_CHROMIUM=/path`);
//! like the PostgreSQL tests, it fails rather than skips when it is missing. It takes about
//! three seconds: Chromium's virtual time lets it return as soon as the page is idle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use support::{BIN, spawn_serve};

mod support;

fn temp_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("creapic-{what}-{}", uuid::Uuid::now_v7().simple()))
}

#[test]
fn creapic_openapi_prints_the_committed_document_without_a_store() {
    let dir = temp_dir("openapi");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .arg("openapi")
        .env("CREAPIC_DATABASE_URL", "postgres://127.0.0.1:1/unreachable")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists(), "no data directory is created");
    let printed = String::from_utf8(out.stdout).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
    )
    .unwrap();
    assert!(
        printed == committed,
        "docs/openapi.json is not what `creapic openapi` prints: regenerate it with \
         `cargo run --bin creapic -- openapi > docs/openapi.json`"
    );
}

#[test]
fn the_reference_page_renders_the_operations_in_a_browser() {
    let chromium = std::env::var("CREAPIC_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let dir = temp_dir("reference");
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-runner"])
        .env_remove("CREAPIC_DATABASE_URL")
        .env("RUST_LOG", "warn");
    let server = spawn_serve(command);

    let profile = temp_dir("chromium-profile");
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            // Virtual time: returns once the page is idle, and at most 10 s of page time.
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("{}/api/docs", server.base))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run `{chromium}` ({e}): install Chromium (`apt-get install chromium`) \
                 or point CREAPIC_CHROMIUM at it"
            )
        });
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);

    // Redoc rendered the document: the title, and a section per operation of the document.
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        dom.contains("creapic API"),
        "no title in the rendered page:\n{dom}"
    );
    let operations: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    assert!(!operations.is_empty());
    for id in operations {
        assert!(
            dom.contains(&format!("operation/{id}\"")),
            "operation {id} is not on the rendered page"
        );
    }
}
