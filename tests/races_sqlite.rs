//! Races across processes on SQLite: the CLI and the server share one database file, so two
//! processes must never overdraw, double-charge or share a job. The second process is this test
//! binary run again (`std::env::current_exe`) with `CREAPIC_SQLITE_CHILD` selecting the child
//! mode; the two start racing together on a go signal over the child's stdin.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::id::{JobId, OrgId};
use creapic_core::job::{JobKind, NewJob, WorkerId};
use creapic_core::key::KeyMode;
use creapic_core::ledger::{Credits, IdempotencyKey, LedgerOp, LedgerRequest};
use creapic_core::scope::ScopeSet;
use creapic_core::store::Store;
use creapic_core::testing::Fixture;
use creapic_core::{Creapic, Error, KeySpec};

const CHILD_ENV: &str = "CREAPIC_SQLITE_CHILD";
/// Ledger operations each process attempts (200 in all, against 50 credits).
const OPS_PER_PROCESS: u32 = 100;
/// Same-key requests each process sends.
const REPLAYS_PER_PROCESS: u32 = 10;

/// One process's share of the race: debits and holds of 1 credit with keys unique to `side`,
/// the same request under one shared key, and claims until the queue is empty. Returns
/// (granted, fresh replays, claimed job ids).
async fn race(
    store: Arc<dyn Store>,
    org: OrgId,
    other: OrgId,
    side: &str,
) -> (u32, u32, Vec<JobId>) {
    let f = Arc::new(Fixture::new(Arc::clone(&store)));
    let mut tasks = Vec::new();
    for i in 0..OPS_PER_PROCESS {
        let f = Arc::clone(&f);
        let key = format!("{side}-{i}");
        tasks.push(tokio::spawn(async move {
            let amount = Credits::amount(1).expect("amount");
            let op = if i % 2 == 0 {
                LedgerOp::Debit { amount }
            } else {
                LedgerOp::Reserve { amount, job: None }
            };
            match f.apply(org, op, &key).await {
                Ok(_) => 1u32,
                Err(Error::InsufficientCredits { .. }) => 0,
                Err(e) => panic!("unexpected error under contention: {e} ({})", e.code()),
            }
        }));
    }
    let mut replays = Vec::new();
    for _ in 0..REPLAYS_PER_PROCESS {
        let store = Arc::clone(&store);
        let f = Arc::clone(&f);
        replays.push(tokio::spawn(async move {
            // Grants (to another organization, so the race for `org` stays exactly 50) always
            // fit: every one of these is either the first or a replay.
            let request = LedgerRequest {
                entry_id: f.entry_id(),
                org: other,
                op: LedgerOp::Grant {
                    amount: Credits::amount(1000).expect("amount"),
                },
                idempotency_key: IdempotencyKey::new("shared-grant").expect("key"),
                at: f.now,
            };
            store.apply(&request, None).await.expect("grant or replay")
        }));
    }
    let worker = WorkerId::new(&format!("worker-{side}")).expect("worker");
    let mut claimed = Vec::new();
    for _ in 0..100 {
        let lease = f.now.plus(Duration::from_secs(600));
        match store.claim_job(&worker, f.now, lease).await.expect("claim") {
            Some(job) => claimed.push(job.id),
            None => break,
        }
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await.expect("task");
    }
    let mut fresh = 0;
    for t in replays {
        fresh += u32::from(!t.await.expect("task").replayed);
    }
    (granted, fresh, claimed)
}

/// The child mode: runs only when the parent test started this binary with `CHILD_ENV` set,
/// and passes trivially otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let path = parts.next().expect("path");
    let org = OrgId::parse(parts.next().expect("org")).expect("org id");
    let other = OrgId::parse(parts.next().expect("other org")).expect("org id");
    let store: Arc<dyn Store> =
        Arc::new(support::sqlite_store(std::path::Path::new(path), Duration::from_secs(10)).await);
    println!("READY");
    std::io::stdout().flush().expect("flush");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("go signal");
    let (granted, fresh, claimed) = race(store, org, other, "child").await;
    let ids: Vec<String> = claimed.iter().map(ToString::to_string).collect();
    println!("RESULT {granted} {fresh} {}", ids.join(","));
    std::io::stdout().flush().expect("flush");
}

/// Two processes race 200 debits and holds against 50 credits in one SQLite file: exactly 50
/// are granted, one charge for a request both send, every job claimed once, and
/// balance = sum(ledger) afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_one_file_never_overdraw_or_share_a_job() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let path = support::sqlite_path("races-sqlite");
    let store: Arc<dyn Store> =
        Arc::new(support::sqlite_store(&path, Duration::from_secs(10)).await);
    let f = Fixture::new(Arc::clone(&store));
    let org = f.funded_org(50).await.expect("funded org");
    let other = f.funded_org(0).await.expect("second org");
    // 20 free jobs to claim (unit cost 0: the race for credits stays exactly 50).
    let mut jobs = Vec::new();
    for i in 0..20 {
        let job = NewJob {
            id: JobId::generate(f.now, f.rng.as_ref()),
            org,
            key: None,
            kind: JobKind::Bulk,
            mode: KeyMode::Live,
            inputs: vec![format!("prompt {i}")],
            unit_cost: Credits::ZERO,
            idempotency_key: IdempotencyKey::new(&format!("job-{i}")).expect("key"),
            hold_entry: f.entry_id(),
            at: f.now,
        };
        jobs.push(job.id);
        store.enqueue(&job).await.expect("enqueue");
    }

    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{org}|{other}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child process");
    // Lines of the child's stdout, read on a thread so that every wait below is bounded.
    let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |marker: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                // libtest may print "test child_process ... " in front on the same line.
                Ok(line) => {
                    if let Some((_, rest)) = line.split_once(marker) {
                        return rest.to_owned();
                    }
                }
                Err(e) => panic!("the child never printed {marker}: {e}"),
            }
        }
    };
    wait_for("READY");
    let mut stdin = child.stdin.take().expect("child stdin");
    stdin.write_all(b"GO\n").expect("go");
    drop(stdin);
    let (granted, fresh, claimed) = race(Arc::clone(&store), org, other, "parent").await;
    let result = wait_for("RESULT ");
    let status = child.wait().expect("child exit");
    assert!(status.success(), "the child process failed: {status}");
    reader.join().expect("reader");
    let mut parts = result.splitn(3, ' ');
    let child_granted: u32 = parts.next().and_then(|s| s.parse().ok()).expect("granted");
    let child_fresh: u32 = parts.next().and_then(|s| s.parse().ok()).expect("fresh");
    let child_claimed: Vec<JobId> = parts
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| JobId::parse(s).expect("job id"))
        .collect();

    assert_eq!(
        granted + child_granted,
        50,
        "exactly the balance is granted"
    );
    assert_eq!(
        fresh + child_fresh,
        1,
        "a request both processes send is charged once"
    );
    let mut all: Vec<JobId> = claimed.into_iter().chain(child_claimed).collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (total, all.len()),
        (20, 20),
        "every job claimed exactly once"
    );
    assert_eq!(
        f.assert_ledger_consistent(org).await.expect("ledger"),
        0,
        "balance = sum(ledger), and the 50 credits are gone"
    );
    assert_eq!(
        f.assert_ledger_consistent(other).await.expect("ledger"),
        1000,
        "the grant both processes sent arrived once"
    );
}

/// Two stores on one file (as two processes): a key deleted through one is refused by the other
/// within the verification cache's TTL (1 s by default), since SQLite has no notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_through_one_store_is_refused_by_another_within_the_cache_ttl() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let path = support::sqlite_path("revocation-sqlite");
    let core_a = Creapic::new(Arc::new(
        support::sqlite_store(&path, Duration::from_secs(5)).await,
    ));
    let core_b = Creapic::new(Arc::new(
        support::sqlite_store(&path, Duration::from_secs(5)).await,
    ));
    let ctx = RequestContext::default();
    let owner = core_a.ensure_user("owner@example.com").await.expect("user");
    let org = core_a
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .expect("org");
    let spec = KeySpec {
        name: "shared file".into(),
        scopes: ScopeSet::all(),
        mode: KeyMode::Test,
        expires_at: None,
    };
    let created = core_a
        .create_key(Actor::User(owner.id), org.id, spec, &ctx)
        .await
        .expect("key");
    let header = format!("Bearer {}", created.secret.expose());
    core_b
        .authenticate(Some(header.as_bytes()), None)
        .await
        .expect("B verifies and caches");
    core_a
        .delete_key(Actor::User(owner.id), org.id, created.key.id, &ctx)
        .await
        .expect("delete through A");
    let deleted = Instant::now();
    let ttl = core_b.config().auth.cache_ttl;
    loop {
        match core_b.authenticate(Some(header.as_bytes()), None).await {
            Err(Error::InvalidKey) => break,
            Ok(_) => {
                assert!(
                    deleted.elapsed() <= ttl + Duration::from_millis(200),
                    "B still accepts the key after its cache TTL"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

/// Debits sent at once by 64 tasks wait for the one writer together and share its commits
/// (group commit): fewer transactions than debits, every debit charged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_debits_share_the_writers_commits() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let path = support::sqlite_path("group-commit-sqlite");
    let store = support::sqlite_store(&path, Duration::from_secs(5)).await;
    let f = Arc::new(Fixture::new(Arc::new(store.clone())));
    let org = f.funded_org(10_000).await.expect("org");
    let before = store.ledger_commits();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let amount = Credits::amount(1).expect("amount");
                f.apply(org, LedgerOp::Debit { amount }, &format!("gc-{t}-{i}"))
                    .await
                    .expect("debit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let commits = store.ledger_commits() - before;
    assert!(
        commits < 640 / 2,
        "640 concurrent debits took {commits} commits: they did not share the writer's transactions"
    );
    assert_eq!(
        f.assert_ledger_consistent(org).await.expect("ledger"),
        10_000 - 640
    );
}
