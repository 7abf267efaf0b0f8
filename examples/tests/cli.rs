//! End to end through the built `creapic` binary: `serve` on a free port over a fresh data
//! directory, bootstrap through the admin CLI, the 000 document's curl call, a bulk job to
//! completion through the client CLI, a key deleted then refused, the audit export showing
//! creation and deletion with the client's IP, and bad arguments answered with exit code 2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{BIN, Serve, cli, cli_json, spawn_serve};

mod support;

const DASHBOARD_TOKEN: &str = "e2e-dashboard-token";

fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("creapic-e2e-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn serve(dir: &Path) -> Serve {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--dev-dashboard-token")
        .env("CREAPIC_DASHBOARD_TOKEN", DASHBOARD_TOKEN)
        .env("RUST_LOG", "warn");
    spawn_serve(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_seed_flow_end_to_end() {
    let dir = data_dir();
    let org = cli_json(
        &dir,
        &[
            "org",
            "create",
            "--name",
            "E2E Org",
            "--owner",
            "owner@example.com",
            "--json",
        ],
    );
    let org_id = org["organization"]["id"].as_str().unwrap().to_owned();
    let granted = cli_json(
        &dir,
        &[
            "credits", "grant", "--org", &org_id, "--amount", "20", "--json",
        ],
    );
    assert_eq!(granted["balance"], 20);
    let server = serve(&dir);
    let http = reqwest::Client::new();

    // A key made through the dashboard route, as the signed-in owner (IP recorded).
    let created: Value = http
        .post(format!("{}/api/keys", server.base))
        .header("x-dashboard-token", DASHBOARD_TOKEN)
        .header("x-dashboard-user", "owner@example.com")
        .json(&json!({"organizationId": org_id, "name": "Production", "scopes": ["IMAGE_GENERATION", "SCENE_RENDER"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"]
        .as_str()
        .expect("the plaintext key, once")
        .to_owned();
    let key_id = created["apiKey"]["id"].as_str().unwrap().to_owned();

    // The 000 document's curl call, host changed to the local server.
    let resp = http
        .post(format!("{}/api/public/images/generate", server.base))
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .body(
            r#"{
    "source": {
      "type": "text",
      "text": "Article about citrus mocktails with summer ingredients"
    },
    "aspectRatio": "4:5",
    "quality": "hd"
  }"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let generated: Value = resp.json().await.unwrap();
    assert_eq!(generated["tokens"], 18);
    assert!(
        generated["imageUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/api/media/", server.base)),
        "image links are absolute by default: {generated}"
    );
    let image = http
        .get(generated["imageUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(image.headers()["content-type"], "image/png");
    assert!(image.bytes().await.unwrap().starts_with(b"\x89PNG"));

    // A bulk job to completion through the client CLI.
    let bulk = Command::new(BIN)
        .args([
            "bulk",
            "A beautiful sunset over the ocean",
            "A futuristic cityscape",
            "--wait",
            "--json",
            "--out",
        ])
        .arg(dir.join("bulk"))
        .env("AI_MEDIA_MAKER_API_KEY", &key)
        .env("CREAPIC_BASE_URL", &server.base)
        .output()
        .unwrap();
    assert!(
        bulk.status.success(),
        "{}",
        String::from_utf8_lossy(&bulk.stderr)
    );
    let done: Value = serde_json::from_slice(&bulk.stdout).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["completedImages"], 2);
    assert_eq!(done["creditsUsed"], 2);
    // Saved under their index, with the extension of what the server sent (PNG here).
    for i in ["000", "001"] {
        let saved = std::fs::read(dir.join("bulk").join(format!("{i}.png"))).unwrap();
        assert!(saved.starts_with(b"\x89PNG"));
    }
    let balance = cli_json(&dir, &["credits", "balance", "--org", &org_id, "--json"]);
    assert_eq!(
        balance["balance"], 16,
        "2 for the hd image, 1 per bulk image"
    );
    // The finished job through `creapic job`: its status; canceling it now is refused (409).
    let job_id = done["jobId"].as_str().unwrap_or_default().to_owned();
    let job = |verb: &str| {
        Command::new(BIN)
            .args(["job", verb, &job_id, "--json"])
            .env("AI_MEDIA_MAKER_API_KEY", &key)
            .env("CREAPIC_BASE_URL", &server.base)
            .output()
            .unwrap()
    };
    let status = job("status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let shown: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(shown["status"], "completed", "{shown}");
    let cancel = job("cancel");
    assert!(
        !cancel.status.success(),
        "a finished job cannot be canceled"
    );
    assert!(
        String::from_utf8_lossy(&cancel.stderr).contains("invalid_state"),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );

    // Delete through the dashboard route: refused at once.
    let deleted = http
        .delete(format!(
            "{}/api/keys/{key_id}?organizationId={org_id}",
            server.base
        ))
        .header("x-dashboard-token", DASHBOARD_TOKEN)
        .header("x-dashboard-user", "owner@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let refused: Value = http
        .post(format!("{}/api/playground/images", server.base))
        .bearer_auth(&key)
        .json(&json!({"prompts": ["x"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refused["error"], "Invalid API key");

    // The audit export shows creation and deletion, with the client's IP.
    let csv = cli(&dir, &["audit", "--org", &org_id, "--format", "csv"]);
    assert!(csv.status.success());
    let csv = String::from_utf8(csv.stdout).unwrap();
    let created_row = csv
        .lines()
        .find(|l| l.contains(",key.created,"))
        .expect(&csv);
    let deleted_row = csv
        .lines()
        .find(|l| l.contains(",key.deleted,"))
        .expect(&csv);
    assert!(created_row.contains(",127.0.0.1,"), "{created_row}");
    assert!(deleted_row.contains(",127.0.0.1,"), "{deleted_row}");
    assert!(
        !csv.contains(&key[8..]),
        "the key never appears in the audit log"
    );
    // The text view names the deleting person whole (`user:` and their full id).
    let deleter = deleted_row.split(',').nth(3).unwrap().to_owned();
    assert!(
        deleter.starts_with("user:") && deleter.len() > 20,
        "{deleted_row}"
    );
    let text = cli(&dir, &["audit", "--org", &org_id]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!(" {deleter} ")), "{text}");

    // Admin commands work while the server runs on the same SQLite file.
    let cli_key = cli_json(
        &dir,
        &[
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "cli",
            "--scopes",
            "IMAGE_GENERATION",
            "--test",
            "--json",
        ],
    );
    assert!(cli_key["key"].as_str().unwrap().starts_with("wi_test_"));
    let start = Instant::now();
    let listed = cli_json(&dir, &["key", "list", "--org", &org_id, "--all", "--json"]);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    assert!(start.elapsed() < Duration::from_secs(10));
    let cli_delete = cli_json(
        &dir,
        &["key", "delete", cli_key["id"].as_str().unwrap(), "--json"],
    );
    assert!(cli_delete["apiKey"]["deletedAt"].is_string());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_get_a_message_and_exit_code_2() {
    let dir = data_dir();
    let cases: &[&[&str]] = &[
        &[
            "key",
            "create",
            "--org",
            "not-a-uuid",
            "--name",
            "x",
            "--scopes",
            "IMAGE_GENERATION",
        ],
        &[
            "key",
            "create",
            "--org",
            "01a213d8-9a7c-7c64-af96-b19a50d7eaa6",
            "--name",
            "x",
            "--scopes",
            "EVERYTHING",
        ],
        &[
            "credits",
            "grant",
            "--org",
            "01a213d8-9a7c-7c64-af96-b19a50d7eaa6",
            "--amount",
            "-5",
        ],
        &["audit", "--since", "2026-01-01"],
        &[
            "audit",
            "--org",
            "01a213d8-9a7c-7c64-af96-b19a50d7eaa6",
            "--since",
            "last tuesday",
        ],
        &["serve", "--listen", "nowhere"],
        &["generate", "x", "--aspect-ratio", "1:2"],
        &["frobnicate"],
    ];
    for args in cases {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .args(*args)
            .env(
                "AI_MEDIA_MAKER_API_KEY",
                format!("wi_live_{}", "0".repeat(64)),
            )
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?} said nothing");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
    let out = Command::new(BIN)
        .args(["generate", "a cat"])
        .env_remove("AI_MEDIA_MAKER_API_KEY")
        .env_remove("CREAPIC_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AI_MEDIA_MAKER_API_KEY"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `sql` on the data directory's SQLite file, as someone with write access to it would.
async fn tamper(dir: &Path, sql: &str) {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.join("creapic.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

fn verify(dir: &Path) -> (i32, Value) {
    let out = cli(dir, &["audit", "verify", "--json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit verify --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_finds_an_edited_row_and_a_deleted_row() {
    let dir = data_dir();
    let org = cli_json(
        &dir,
        &[
            "org",
            "create",
            "--name",
            "Chain",
            "--owner",
            "o@example.com",
            "--json",
        ],
    );
    let org_id = org["organization"]["id"].as_str().unwrap().to_owned();
    for amount in ["5", "7", "9"] {
        cli_json(
            &dir,
            &[
                "credits", "grant", "--org", &org_id, "--amount", amount, "--json",
            ],
        );
    }
    let key = cli_json(
        &dir,
        &[
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "k",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
    );
    cli_json(
        &dir,
        &["key", "delete", key["id"].as_str().unwrap(), "--json"],
    );

    // org.created, member owner, three grants, key.created, key.deleted: all chained, intact.
    let (code, report) = verify(&dir);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["intact"], true);
    let checked = report["checked"].as_u64().unwrap();
    assert!(checked >= 6, "{report}");
    assert_eq!(report["lastSeq"].as_u64(), Some(checked));
    let human = cli(&dir, &["audit", "verify"]);
    assert!(human.status.success());
    assert!(
        String::from_utf8_lossy(&human.stdout).contains(report["headHash"].as_str().unwrap()),
        "the human output prints the head hash to record"
    );

    // Someone inflates a grant in the audit trail: found at exactly that row, exit 1.
    tamper(
        &dir,
        "UPDATE audit_events SET detail = 'amount=7000' \
         WHERE action = 'credits.granted' AND detail = 'amount=7'",
    )
    .await;
    let edited: u64 = {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.join("creapic.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let seq: i64 =
            sqlx::query_scalar("SELECT seq FROM audit_events WHERE detail = 'amount=7000'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        u64::try_from(seq).unwrap()
    };
    let (code, report) = verify(&dir);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["intact"], false);
    assert_eq!(report["broken"]["seq"].as_u64(), Some(edited), "{report}");
    assert_eq!(report["broken"]["kind"], "edited");
    let human = cli(&dir, &["audit", "verify"]);
    assert_eq!(human.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&human.stderr).contains(&format!("broken at seq {edited}")),
        "{}",
        String::from_utf8_lossy(&human.stderr)
    );

    // Undo the edit, then delete an earlier row instead: reported as missing at its seq.
    tamper(
        &dir,
        "UPDATE audit_events SET detail = 'amount=7' WHERE detail = 'amount=7000'",
    )
    .await;
    assert_eq!(verify(&dir).0, 0, "the restored row verifies again");
    tamper(&dir, "DELETE FROM audit_events WHERE seq = 2").await;
    let (code, report) = verify(&dir);
    assert_eq!(code, 1);
    assert_eq!(report["broken"]["seq"], 2);
    assert_eq!(report["broken"]["kind"], "missing");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `creapic org list` and `creapic member list|add|role|remove` through the binary, as the
/// operator: text and `--json`, the last owner kept (exit 1, `last_owner`), a bad role exit 2.
#[test]
fn org_and_member_commands_manage_membership_as_the_operator() {
    let dir = data_dir();
    let created = cli_json(&dir, &["org", "create", "--name", "Acme", "--json"]);
    let org = created["organization"]["id"].as_str().unwrap().to_owned();
    let second = cli_json(&dir, &["org", "create", "--name", "Beta", "--json"]);
    let beta = second["organization"]["id"].as_str().unwrap().to_owned();
    // The default user is the default owner.
    let listed = cli_json(&dir, &["org", "list", "--json"]);
    let orgs = listed["organizations"].as_array().unwrap();
    assert_eq!(orgs.len(), 2, "{listed}");
    assert!(orgs.iter().all(|o| o["role"] == "owner"));
    let text = cli(&dir, &["org", "list"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&org) && text.contains("Acme") && text.contains("owner"),
        "{text}"
    );

    let added = cli_json(
        &dir,
        &[
            "member",
            "add",
            "--org",
            &org,
            "--email",
            "ada@example.com",
            "--role",
            "admin",
            "--json",
        ],
    );
    assert_eq!(added["member"]["email"], "ada@example.com");
    assert_eq!(added["member"]["role"], "admin");
    let ada_orgs = cli_json(
        &dir,
        &["org", "list", "--user", "ada@example.com", "--json"],
    );
    assert_eq!(ada_orgs["organizations"].as_array().unwrap().len(), 1);
    assert_eq!(
        ada_orgs["organizations"][0]["organization"]["id"],
        org.as_str()
    );
    assert_eq!(ada_orgs["organizations"][0]["role"], "admin");

    let members = cli_json(&dir, &["member", "list", "--org", &org, "--json"]);
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");

    // The last owner stays, even for the operator.
    for args in [
        vec![
            "member",
            "role",
            "--org",
            &org,
            "--email",
            "owner@localhost",
            "--role",
            "member",
        ],
        vec![
            "member",
            "remove",
            "--org",
            &org,
            "--email",
            "owner@localhost",
        ],
    ] {
        let out = cli(&dir, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("last_owner"), "{args:?}: {err}");
    }
    // Promote Ada, then the first owner may go.
    let promoted = cli_json(
        &dir,
        &[
            "member",
            "role",
            "--org",
            &org,
            "--email",
            "ada@example.com",
            "--role",
            "owner",
            "--json",
        ],
    );
    assert_eq!(promoted["member"]["role"], "owner");
    let removed = cli_json(
        &dir,
        &[
            "member",
            "remove",
            "--org",
            &org,
            "--email",
            "owner@localhost",
            "--json",
        ],
    );
    assert_eq!(removed["member"]["role"], "owner");
    let out = cli(
        &dir,
        &[
            "member",
            "remove",
            "--org",
            &org,
            "--email",
            "owner@localhost",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    let listed = cli_json(&dir, &["org", "list", "--json"]);
    assert_eq!(listed["organizations"].as_array().unwrap().len(), 1);
    assert_eq!(
        listed["organizations"][0]["organization"]["id"],
        beta.as_str()
    );

    let out = cli(
        &dir,
        &[
            "member",
            "add",
            "--org",
            &org,
            "--email",
            "x@example.com",
            "--role",
            "king",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role"));
    let out = cli(&dir, &["member", "list", "--org", &org]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("ada@example.com") && text.contains("owner"),
        "{text}"
    );
    // Every change is audited as the operator.
    let audit = cli(&dir, &["audit", "--org", &org, "--format", "json"]);
    let audit_text = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert!(audit_text.contains("member.removed"), "{audit_text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `creapic ARGS…` as an integrator runs it: the key and server given by flags only (the
/// environment's cleared, so nothing leaks in from the machine running the test).
fn integrator(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("AI_MEDIA_MAKER_API_KEY")
        .env_remove("CREAPIC_API_KEY")
        .env_remove("CREAPIC_BASE_URL")
        .output()
        .unwrap()
}

fn integrator_json(args: &[&str]) -> Value {
    let out = integrator(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn integrator_commands_check_the_balance_render_list_and_read_back() {
    let dir = data_dir();
    let org = cli_json(&dir, &["org", "create", "--name", "Integrator", "--json"]);
    let org_id = org["organization"]["id"].as_str().unwrap().to_owned();
    cli_json(
        &dir,
        &[
            "credits", "grant", "--org", &org_id, "--amount", "30", "--json",
        ],
    );
    let key = cli_json(
        &dir,
        &[
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "integration",
            "--scopes",
            "IMAGE_GENERATION,SCENE_RENDER",
            "--json",
        ],
    );
    let key = key["key"].as_str().unwrap().to_owned();
    let server = serve(&dir);
    let api = |rest: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--api-key".into(),
            key.clone(),
            "--base-url".into(),
            server.base.clone(),
        ];
        args.extend(rest.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |rest: &[&str]| {
        let args = api(rest);
        integrator_json(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // "Make sure the account has tokens before invoking the API."
    let before = run(&["balance", "--json"]);
    assert_eq!(
        (
            &before["balance"],
            &before["held"],
            &before["organizationId"]
        ),
        (&json!(30), &json!(0), &json!(org_id)),
        "{before}"
    );

    let generated = run(&["generate", "a kite over the dunes", "--json"]);
    let generation_id = generated["generation"]["id"].as_str().unwrap().to_owned();
    let read = run(&["image", "get", &generation_id, "--json"]);
    assert_eq!(read["generation"]["id"], generation_id.as_str(), "{read}");
    assert!(read["imageUrl"].is_string(), "{read}");

    let bulk = run(&["bulk", "a", "b", "--wait", "--json"]);
    assert_eq!(bulk["status"], "completed", "{bulk}");
    let image = dir.join("scene.png");
    let render = run(&[
        "render",
        "a harbour at dawn",
        "--out",
        image.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(render["status"], "completed", "{render}");
    assert!(std::fs::metadata(&image).unwrap().len() > 0);

    let jobs = run(&["job", "list", "--json"]);
    let kinds: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["bulk", "scene"], "{jobs}");
    let one = run(&["job", "list", "--limit", "1", "--json"]);
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");

    let after = run(&["balance", "--ledger", "--json"]);
    let spent = 30 - after["balance"].as_u64().unwrap();
    let paid = generated["generation"]["tokensUsed"].as_u64().unwrap()
        + bulk["creditsUsed"].as_u64().unwrap()
        + render["tokensUsed"].as_u64().unwrap();
    assert_eq!(spent, paid, "{after}");
    assert_eq!(after["held"], 0, "{after}");
    let last = after["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["balanceAfter"], after["balance"], "{after}");
    let usage = run(&["usage", "--json"]);
    assert_eq!(usage["spent"], spent, "{usage}");
    assert_eq!(usage["days"].as_array().unwrap().len(), 30, "{usage}");

    // Human output names the balance; no key at all is a usage error (2) with a hint.
    let text = integrator(
        &api(&["balance"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!("balance      {} tokens", 30 - spent)),
        "{text}"
    );
    let keyless = integrator(&["--base-url", &server.base, "balance"]);
    assert_eq!(keyless.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&keyless.stderr).contains("--api-key"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_are_printed_for_each_shell_and_no_color_is_honoured() {
    for (shell, marker) in [
        ("bash", "_creapic()"),
        ("zsh", "#compdef creapic"),
        ("fish", "complete -c creapic"),
    ] {
        let out = integrator(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script:.200}");
        for command in ["balance", "render", "completions", "member"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let bad = integrator(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));

    // Colors where forced, none once NO_COLOR is set — help and errors alike.
    let colored = |no_color: bool, args: &[&str]| {
        let mut command = Command::new(BIN);
        command.args(args).env("CLICOLOR_FORCE", "1");
        if no_color {
            command.env("NO_COLOR", "1");
        } else {
            command.env_remove("NO_COLOR");
        }
        let out = command.output().unwrap();
        [out.stdout, out.stderr].concat().contains(&0x1b)
    };
    assert!(colored(false, &["--help"]), "forced colors are on");
    assert!(!colored(true, &["--help"]), "NO_COLOR turns them off");
    assert!(colored(false, &["bogus"]));
    assert!(!colored(true, &["bogus"]));
}

/// `creapic user …` with the password piped to stdin.
fn user_cmd(dir: &Path, args: &[&str], password: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CREAPIC_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_create_takes_the_password_from_stdin_only_and_it_signs_in() {
    let dir = data_dir();
    let org = cli_json(&dir, &["org", "create", "--name", "Acme", "--json"]);
    let org = org["organization"]["id"].as_str().unwrap().to_owned();
    let create = [
        "user",
        "create",
        "--email",
        "ada@example.com",
        "--password-stdin",
        "--org",
        &org,
        "--role",
        "admin",
        "--json",
    ];
    let out = user_cmd(&dir, &create, "correct horse battery\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["user"]["email"], "ada@example.com");
    assert_eq!(created["member"]["role"], "admin", "{created}");

    // Again: refused, with the command that changes a password.
    let again = user_cmd(&dir, &create, "another long password");
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already has a password") && err.contains("user password"),
        "{err}"
    );
    // A short password, or none on stdin, is a usage error; nothing is written.
    let short = user_cmd(
        &dir,
        &[
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        "short\n",
    );
    assert_eq!(
        short.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    let bare = cli(&dir, &["user", "create", "--email", "bob@example.com"]);
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("stdin"));

    // The stored hash is the piped password's (its trailing newline dropped), and a new one
    // replaces it.
    let url = format!("sqlite://{}", dir.join("creapic.db").display());
    let store = creapic_core::store::connect(&url, creapic_core::store::ConnectOptions::default())
        .await
        .unwrap();
    let core = creapic_core::Creapic::new(store);
    let typed = |t: &str| creapic_core::account::Password::presented(t).unwrap();
    core.sign_in("ada@example.com", &typed("correct horse battery"))
        .await
        .unwrap();
    let changed = user_cmd(
        &dir,
        &[
            "user",
            "password",
            "--email",
            "ada@example.com",
            "--password-stdin",
        ],
        "a brand new passphrase",
    );
    assert!(
        changed.status.success(),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    assert!(
        core.sign_in("ada@example.com", &typed("correct horse battery"))
            .await
            .is_err()
    );
    core.sign_in("ada@example.com", &typed("a brand new passphrase"))
        .await
        .unwrap();
}

/// Twelve-factor: every option of `serve` (and the store options it shares) can be set from the
/// environment, and `--help` says which variable; and one set only in the environment is used.
#[test]
fn every_serve_option_has_an_environment_variable_shown_in_help() {
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    // The options section, up to the client commands' heading (their key and URL come from
    // the integration's own variables, AI_MEDIA_MAKER_API_KEY and CREAPIC_BASE_URL).
    let options = help
        .split("Options:")
        .nth(1)
        .unwrap()
        .split("Client commands:")
        .next()
        .unwrap();
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in options.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('-') && indent <= 6 {
            let flag = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap();
            entries.push((flag.trim_end_matches(',').to_owned(), String::new()));
        } else if let Some((_, text)) = entries.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    let flags: Vec<&str> = entries.iter().map(|(f, _)| f.as_str()).collect();
    assert!(flags.len() >= 20, "{flags:?}");
    for (flag, text) in &entries {
        if matches!(flag.as_str(), "--help" | "--version") {
            continue;
        }
        let name = flag
            .trim_start_matches("--")
            .to_uppercase()
            .replace('-', "_");
        assert!(
            text.contains("[env: CREAPIC_"),
            "{flag} has no environment variable in --help:\n{text}"
        );
        assert!(
            text.contains(&format!("CREAPIC_{name}="))
                || (flag == "--database" && text.contains("CREAPIC_DATABASE_URL="))
                || (flag == "--redis" && text.contains("CREAPIC_REDIS_URL=")),
            "{flag}'s variable is not named after it:\n{text}"
        );
    }

    // A value from the environment alone is used: the server listens where CREAPIC_LISTEN says.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = data_dir();
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env("CREAPIC_DATA_DIR", &dir)
        .env("CREAPIC_LISTEN", format!("127.0.0.1:{port}"))
        .env("CREAPIC_NO_RUNNER", "true")
        .env("RUST_LOG", "warn");
    let server = spawn_serve(command);
    assert!(
        server.base.ends_with(&format!(":{port}")),
        "{}",
        server.base
    );
    assert!(
        dir.join("creapic.db").exists(),
        "the database is in CREAPIC_DATA_DIR"
    );
}
