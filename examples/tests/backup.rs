//! `creapic backup` and `creapic restore` against the built binary, as an operator relies on
//! them: backups taken while `creapic serve` is under write load (paid generations and bulk
//! jobs through the API, grants from the CLI) restore into fresh data directories whose audit
//! chain verifies and whose every ledger adds up to its balance (read with sqlx, not through
//! creapic); a later backup holds at least what an earlier one held; a restore is refused
//! while the server uses the database, over an existing database without `--force`, for a
//! copy whose audit log was edited by one byte, for one whose balance no longer matches its
//! entries and for one a newer build migrated; PostgreSQL is sent to `pg_dump`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection as _;
use support::BIN;
use support::store::{Store, temp_dir};

/// How long the write load runs.
const LOAD: Duration = Duration::from_secs(3);
/// Tasks generating through the API at once.
const API_WRITERS: usize = 3;
/// Credits granted up front, so the load never runs out.
const FUNDS: &str = "1000000";

/// `creapic --data-dir DIR ARGS…`.
fn creapic(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CREAPIC_DATABASE_URL")
        .output()
        .unwrap()
}

fn ok_json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every organization's balance against the sum of its entries, and the number of entries,
/// read from the file with sqlx.
async fn ledgers(db: &Path) -> (Vec<(Vec<u8>, i64, i64)>, i64) {
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(
        "SELECT b.org, b.balance, \
         (SELECT COALESCE(SUM(e.delta), 0) FROM ledger_entries e WHERE e.org = b.org) \
         FROM balances b ORDER BY b.org",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let (entries,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ledger_entries")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (rows, entries)
}

/// Restores `backup` into a fresh data directory, checks it as an operator would and returns
/// the directory and the number of ledger entries it holds.
async fn restore_and_check(backup: &Path, orgs: &[String]) -> (PathBuf, i64) {
    let dir = temp_dir("restored");
    let report = ok_json(
        &creapic(
            &dir,
            &["restore", "--from", backup.to_str().unwrap(), "--json"],
        ),
        "restore",
    );
    assert!(
        report["auditEventsChecked"].as_u64().unwrap() > 0,
        "{report}"
    );
    let verified = ok_json(&creapic(&dir, &["audit", "verify", "--json"]), "verify");
    assert_eq!(verified["intact"], true, "{verified}");
    let db = dir.join("creapic.db");
    let (rows, entries) = ledgers(&db).await;
    assert!(
        !rows.is_empty(),
        "the backup holds the funded organizations"
    );
    for (org, balance, sum) in &rows {
        assert_eq!(
            balance, sum,
            "balance != sum(ledger) for {org:?} in {backup:?}"
        );
    }
    assert_eq!(
        report["ledgerEntries"].as_i64(),
        Some(entries),
        "restore reports what it checked"
    );
    assert_eq!(report["organizations"].as_u64(), Some(rows.len() as u64));
    let total: i64 = rows.iter().map(|r| r.1).sum();
    assert_eq!(report["totalBalance"].as_i64(), Some(total));
    for org in orgs {
        let balance = ok_json(
            &creapic(&dir, &["credits", "balance", "--org", org, "--json"]),
            "balance",
        );
        assert!(balance["balance"].as_u64().is_some(), "{balance}");
    }
    (dir, entries)
}

/// One paid synchronous generation through the API; whether it was charged.
async fn generate(http: &reqwest::Client, base: &str, key: &str, n: u64) -> bool {
    let answer = http
        .post(format!("{base}/api/public/images/generate"))
        .bearer_auth(key)
        .json(&json!({"source": {"type": "text", "text": format!("load {n}")}, "aspectRatio": "1:1", "quality": "standard"}))
        .send()
        .await
        .unwrap();
    answer.status() == 200
}

/// One bulk job of two prompts through the API; whether it was accepted.
async fn bulk(http: &reqwest::Client, base: &str, key: &str, n: u64) -> bool {
    let answer = http
        .post(format!("{base}/api/playground/images"))
        .bearer_auth(key)
        .json(&json!({"prompts": [format!("bulk {n} a"), format!("bulk {n} b")]}))
        .send()
        .await
        .unwrap();
    answer.status() == 202
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_under_write_load_restore_with_intact_audit_and_ledgers() {
    let store = Store::sqlite();
    let orgs = [store.org("Backed Up"), store.org("Also Backed Up")];
    for org in &orgs {
        ok_json(
            &creapic(
                &store.dir,
                &[
                    "credits", "grant", "--org", org, "--amount", FUNDS, "--json",
                ],
            ),
            "grant",
        );
    }
    let key = store.json(
        &[
            "key",
            "create",
            "--org",
            &orgs[0],
            "--name",
            "load",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
        None,
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // The job runner on, so bulk jobs charge as they run.
    let server = store.serve_with(&[], &[]);
    let base = server.base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    for writer in 0..API_WRITERS {
        let (stop, done, base, key) = (
            Arc::clone(&stop),
            Arc::clone(&done),
            base.clone(),
            key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let charged = if writer == 0 {
                    bulk(&http, &base, &key, n).await
                } else {
                    generate(&http, &base, &key, n).await
                };
                if charged {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let grants = {
        let (stop, done, dir, org) = (
            Arc::clone(&stop),
            Arc::clone(&done),
            store.dir.clone(),
            orgs[1].clone(),
        );
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = creapic(&dir, &["credits", "grant", "--org", &org, "--amount", "1"]);
                assert!(
                    out.status.success(),
                    "a grant during the load: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Two backups while the load runs, a second apart.
    let backups = temp_dir("backups");
    let started = Instant::now();
    let mut taken = Vec::new();
    for (i, at) in [Duration::from_millis(1000), Duration::from_millis(2000)]
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let file = backups.join(format!("backup-{i}.db"));
        let dir = store.dir.clone();
        let arg = file.to_str().unwrap().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            creapic(&dir, &["backup", "--out", &arg, "--json"])
        })
        .await
        .unwrap();
        let written = ok_json(&out, "backup under load");
        assert_eq!(
            written["bytes"].as_u64(),
            Some(std::fs::metadata(&file).unwrap().len())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "a backup is private to its owner");
        }
        taken.push(file);
    }
    // A backup never overwrites a file.
    let again = creapic(&store.dir, &["backup", "--out", taken[0].to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    // A restore never pulls the database from under a running server.
    let under = creapic(
        &store.dir,
        &["restore", "--from", taken[0].to_str().unwrap(), "--force"],
    );
    assert_eq!(under.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&under.stderr).contains("a server is using"),
        "{}",
        String::from_utf8_lossy(&under.stderr)
    );
    tokio::time::sleep(LOAD.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a writer finishes its last request")
            .unwrap();
    }
    grants.await.unwrap();
    assert!(
        done.load(Ordering::Relaxed) >= 10,
        "the load wrote: {} charged requests and grants",
        done.load(Ordering::Relaxed)
    );
    drop(server);

    let (early_dir, early) = restore_and_check(&taken[0], &orgs).await;
    let (late_dir, late) = restore_and_check(&taken[1], &orgs).await;
    assert!(
        late >= early,
        "a later backup holds at least the earlier one's ledger ({late} < {early})"
    );
    let (_, live) = ledgers(&store.dir.join("creapic.db")).await;
    assert!(
        live >= late,
        "the live database holds at least the last backup"
    );
    // An existing database is replaced only with --force.
    let over = creapic(
        &early_dir,
        &["restore", "--from", taken[1].to_str().unwrap()],
    );
    assert_eq!(over.status.code(), Some(1));
    assert_eq!(ledgers(&early_dir.join("creapic.db")).await.1, early);
    ok_json(
        &creapic(
            &early_dir,
            &[
                "restore",
                "--from",
                taken[1].to_str().unwrap(),
                "--force",
                "--json",
            ],
        ),
        "restore --force",
    );
    assert_eq!(ledgers(&early_dir.join("creapic.db")).await.1, late);

    // One byte of one audit row's detail changed in a copy: refused, nothing installed.
    let corrupt = backups.join("corrupt.db");
    std::fs::copy(&taken[1], &corrupt).unwrap();
    {
        let url = format!("sqlite://{}", corrupt.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let (seq, detail): (i64, String) = sqlx::query_as(
            "SELECT seq, detail FROM audit_events WHERE detail IS NOT NULL AND detail <> '' \
             ORDER BY seq LIMIT 1",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let mut bytes = detail.into_bytes();
        let at = bytes.iter().position(u8::is_ascii_alphanumeric).unwrap();
        bytes[at] ^= 0x01;
        let flipped = String::from_utf8(bytes).unwrap();
        let changed = sqlx::query("UPDATE audit_events SET detail = $1 WHERE seq = $2")
            .bind(&flipped)
            .bind(seq)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(changed.rows_affected(), 1);
        conn.close().await.unwrap();
    }
    let fresh = temp_dir("restored");
    let refused = creapic(&fresh, &["restore", "--from", corrupt.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to restore") && stderr.contains("audit chain is broken at seq"),
        "{stderr}"
    );
    assert!(
        !fresh.join("creapic.db").exists(),
        "a refused restore installs nothing"
    );
    // A balance that no longer matches its entries (the audit chain intact): refused too.
    let unbalanced = backups.join("unbalanced.db");
    std::fs::copy(&taken[1], &unbalanced).unwrap();
    {
        let url = format!("sqlite://{}", unbalanced.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let changed = sqlx::query(
            "UPDATE balances SET balance = balance + 1 WHERE org = (SELECT MIN(org) FROM balances)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        assert_eq!(changed.rows_affected(), 1);
        conn.close().await.unwrap();
    }
    let refused = creapic(&fresh, &["restore", "--from", unbalanced.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not add up to the balance"),
        "{stderr}"
    );
    assert!(!fresh.join("creapic.db").exists());
    // A copy a newer build migrated: refused, this build cannot know its schema.
    let newer = backups.join("newer.db");
    std::fs::copy(&taken[1], &newer).unwrap();
    {
        let url = format!("sqlite://{}", newer.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99991231000000, 'from a newer build', 1, X'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let refused = creapic(&fresh, &["restore", "--from", newer.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a newer creapic wrote it"), "{stderr}");
    assert!(!fresh.join("creapic.db").exists());
    for dir in [&early_dir, &late_dir, &fresh, &backups] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn postgres_is_sent_to_pg_dump_and_a_missing_backup_is_an_error() {
    let dir = temp_dir("backup-args");
    let pg = Command::new(BIN)
        .args([
            "--database",
            "postgres://postgres@127.0.0.1:5432/test",
            "backup",
            "--out",
        ])
        .arg(dir.join("pg.db"))
        .output()
        .unwrap();
    assert_eq!(pg.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&pg.stderr).contains("pg_dump"));
    assert!(!dir.join("pg.db").exists());
    let missing = creapic(
        &dir,
        &[
            "restore",
            "--from",
            dir.join("nothing.db").to_str().unwrap(),
        ],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(!dir.join("creapic.db").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
