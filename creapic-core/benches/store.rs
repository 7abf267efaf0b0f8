//! Store benchmark: PostgreSQL debit+ledger throughput against `pgbench` running the same SQL on
//! the same server in the same run, SQLite debit+ledger throughput beside a raw sqlx loop of the
//! same statements, and cold key verification latency (cache miss: parse, hash, one indexed
//! lookup by digest) on both.
//!
//! Design decision: a plain bench binary, not criterion, because the numbers that matter are
//! throughputs under concurrency and a ratio to an external baseline measured seconds apart;
//! `bench/stores.sh` runs it and writes its Markdown output into `docs/benchmarks.md`.
//! Environment: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), `PGBENCH`
//! (default `/usr/lib/postgresql/15/bin/pgbench`), `BENCH_SECS` per measurement (default 5),
//! `BENCH_ONLY=sqlite` (only the SQLite table, no PostgreSQL needed).

#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::clock::{Clock, SystemClock};
use creapic_core::id::{EntryId, OrgId};
use creapic_core::key::KeyMode;
use creapic_core::ledger::{AMOUNT_MAX, Credits, IdempotencyKey, LedgerOp, LedgerRequest};
use creapic_core::random::OsRandom;
use creapic_core::scope::ScopeSet;
use creapic_core::store::postgres::PgStore;
use creapic_core::store::sqlite::SqliteStore;
use creapic_core::store::{ConnectOptions, Store};
use creapic_core::{CoreConfig, Creapic, KeySpec};

const LEVELS: [u32; 3] = [1, 8, 32];
/// Organizations the spread measurement debits at random.
const SPREAD_ORGS: u32 = 10_000;

/// Organization number `n` (1-based); pgbench computes the same id:
/// `lpad(to_hex(n), 32, '0')::uuid`.
fn org_n(n: u32) -> OrgId {
    OrgId::from_uuid(uuid::Uuid::from_u128(u128::from(n)))
}

/// Where the debits go.
#[derive(Clone, Copy, PartialEq)]
enum Spread {
    /// Each debit on one of [`SPREAD_ORGS`] organizations, at random.
    Wide,
    /// Every debit on organization 1.
    Hot,
}

/// Funds organizations 1..=`orgs` with [`AMOUNT_MAX`] each: one grant entry and its balance,
/// written in two statements (10,000 applies would take longer than the measurement).
async fn fund_pg(url: &str, schema: &str, orgs: u32) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let amount = i64::try_from(AMOUNT_MAX).unwrap();
    sqlx::query(
        "INSERT INTO balances (org, balance) \
         SELECT lpad(to_hex(g), 32, '0')::uuid, $1 FROM generate_series(1, $2) g",
    )
    .bind(amount)
    .bind(i64::from(orgs))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ledger_entries (id, org, kind, delta, amount, balance_after, hold_id, \
         job_id, idempotency_key, fingerprint, created_at) \
         SELECT gen_random_uuid(), lpad(to_hex(g), 32, '0')::uuid, 'grant', $1, $1, $1, NULL, \
         NULL, 'fund-' || g, 'grant:' || $1, 0 FROM generate_series(1, $2) g",
    )
    .bind(amount)
    .bind(i64::from(orgs))
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn fund(store: &dyn Store, orgs: u32) {
    let now = SystemClock.now();
    for n in 1..=orgs {
        let request = LedgerRequest {
            entry_id: EntryId::generate(now, &OsRandom),
            org: org_n(n),
            op: LedgerOp::Grant {
                amount: Credits::amount(AMOUNT_MAX).unwrap(),
            },
            idempotency_key: IdempotencyKey::new(&format!("fund-{n}-{}", now.unix_ms())).unwrap(),
            at: now,
        };
        store.apply(&request, None).await.unwrap();
    }
}

/// Throughput and p99 latency of one measurement.
struct Tps {
    tps: f64,
    p99_ms: f64,
}

/// Debits of 1 credit from `tasks` concurrent tasks for `secs`, each task sending its next
/// debit when the previous one answered.
async fn debit_tps(store: Arc<dyn Store>, tasks: u32, secs: Duration, spread: Spread) -> Tps {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..tasks {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        handles.push(tokio::spawn(async move {
            let one = Credits::amount(1).unwrap();
            let mut lat = Vec::new();
            let mut n = c.wrapping_mul(2_654_435_761);
            while start.elapsed() < secs {
                let now = SystemClock.now();
                let id = EntryId::generate(now, &OsRandom);
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let org = match spread {
                    Spread::Wide => org_n(1 + (n >> 8) % SPREAD_ORGS),
                    Spread::Hot => org_n(1),
                };
                let request = LedgerRequest {
                    entry_id: id,
                    org,
                    op: LedgerOp::Debit { amount: one },
                    idempotency_key: IdempotencyKey::new(&id.to_string()).unwrap(),
                    at: now,
                };
                let t = Instant::now();
                store.apply(&request, None).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                done.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    Tps {
        tps: done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        p99_ms: lat.get(lat.len() * 99 / 100).copied().unwrap_or(0.0),
    }
}

/// The statement `PgStore::apply` sends for a lone debit, with the organization chosen by
/// `:org` (set by the script's first line).
const PGBENCH_SQL: &str = "WITH b AS (UPDATE balances SET balance = balance - 1 \
WHERE org = lpad(to_hex(CAST(:org AS bigint)), 32, '0')::uuid AND balance >= 1 RETURNING balance) \
INSERT INTO ledger_entries (id, org, kind, delta, amount, balance_after, hold_id, job_id, \
idempotency_key, fingerprint, created_at) \
SELECT gen_random_uuid(), lpad(to_hex(CAST(:org AS bigint)), 32, '0')::uuid, 'debit', -1, 1, \
b.balance, NULL::uuid, NULL::uuid, gen_random_uuid()::text, 'debit:1', \
(extract(epoch from clock_timestamp()) * 1000)::bigint FROM b RETURNING seq, balance_after;\n";

fn pgbench_tps(url: &str, schema: &str, clients: u32, secs: Duration, spread: Spread) -> Tps {
    let dir = std::env::temp_dir().join(format!("creapic-pgbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("debit.sql");
    let set = match spread {
        Spread::Wide => format!("\\set org random(1, {SPREAD_ORGS})\n"),
        Spread::Hot => "\\set org 1\n".to_owned(),
    };
    std::fs::write(&script, format!("{set}{PGBENCH_SQL}")).unwrap();
    let pgbench =
        std::env::var("PGBENCH").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pgbench".into());
    let out = std::process::Command::new(pgbench)
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .current_dir(&dir)
        .args([
            "-n",
            "-M",
            "prepared",
            "-l",
            "--log-prefix=tx",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &secs.as_secs().to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    // Per-transaction log lines: client, transaction, latency (µs), script, epoch, µs.
    let mut lat = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("tx."))
        {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    lat.push(us / 1e3);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_by(f64::total_cmp);
    Tps {
        tps,
        p99_ms: lat.get(lat.len() * 99 / 100).copied().unwrap_or(0.0),
    }
}

/// Checks organization 1 after the hot runs: balance = sum(entries) and no entry's
/// `balance_after` below zero.
async fn hot_ledger_holds(url: &str, schema: &str) -> bool {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (ok,): (bool,) = sqlx::query_as(
        "SELECT (SELECT balance FROM balances WHERE org = $1) = \
         (SELECT sum(delta) FROM ledger_entries WHERE org = $1) \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE org = $1 AND balance_after < 0)",
    )
    .bind(org_n(1).as_uuid())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    ok
}

/// Opens `path` as the store does (WAL, `synchronous=NORMAL`, foreign keys) on one plain
/// connection, outside any pool.
async fn sqlite_raw(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions as _;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .foreign_keys(true)
        .connect()
        .await
        .unwrap()
}

/// The baseline for `SqliteStore::apply`: one connection, one task, looping over the statements
/// the store sends for a fresh debit — `BEGIN IMMEDIATE`, the entry `INSERT … SELECT … RETURNING`
/// (written only if the balance covers it), the balance `UPDATE`, `COMMIT` — with sqlx's
/// statement cache, and nothing else: no pool, no queue, no idempotency explanation, no receipt.
/// The SQL is spelled out here rather than borrowed from the store, so a change there cannot
/// quietly move the baseline.
async fn sqlite_raw_tps(path: &std::path::Path, secs: Duration) -> f64 {
    let mut conn = sqlite_raw(path).await;
    let org = org_n(1).as_uuid();
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < secs {
        let now = SystemClock.now();
        let id = EntryId::generate(now, &OsRandom);
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        let entry: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO ledger_entries (id, org, kind, delta, amount, balance_after, hold_id, \
             job_id, idempotency_key, fingerprint, created_at) \
             SELECT $1, $2, 'debit', -$3, $3, balance - $3, NULL, NULL, $4, 'debit:1', $5 \
             FROM balances WHERE org = $2 AND balance >= $3 \
             ON CONFLICT (org, idempotency_key) DO NOTHING RETURNING seq, balance_after",
        )
        .bind(id.as_uuid())
        .bind(org)
        .bind(1i64)
        .bind(id.to_string())
        .bind(now.unix_ms())
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        assert!(
            entry.is_some(),
            "the raw loop's organization ran out of credits"
        );
        let moved = sqlx::query(
            "UPDATE balances SET balance = balance - $2 WHERE org = $1 AND balance >= $2",
        )
        .bind(org)
        .bind(1i64)
        .execute(&mut conn)
        .await
        .unwrap();
        assert_eq!(moved.rows_affected(), 1);
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
        done += 1;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Whether organization 1 of the SQLite file at `path` has balance = sum(entries) and no
/// `balance_after` below zero.
async fn sqlite_ledger_holds(path: &std::path::Path) -> bool {
    let mut conn = sqlite_raw(path).await;
    let (ok,): (bool,) = sqlx::query_as(
        "SELECT (SELECT balance FROM balances WHERE org = $1) = \
         (SELECT sum(delta) FROM ledger_entries WHERE org = $1) \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE org = $1 AND balance_after < 0)",
    )
    .bind(org_n(1).as_uuid())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    ok
}

/// SQLite, side by side in this run: `SqliteStore::apply` at 1 and 8 tasks on one organization,
/// and [`sqlite_raw_tps`] on a second file, alternating three rounds (store 1, store 8, raw):
/// the median of each. Returns (store at 1, store at 8, raw, the ledger held).
async fn sqlite_side_by_side(secs: Duration) -> (f64, f64, f64, bool) {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let store_path = dir.join(format!("creapic-bench-{pid}.db"));
    let raw_path = dir.join(format!("creapic-bench-raw-{pid}.db"));
    let open = |path: &std::path::Path| {
        let url = format!("sqlite://{}", path.display());
        async move {
            SqliteStore::connect(&url, &ConnectOptions::default())
                .await
                .unwrap()
        }
    };
    let sqlite: Arc<dyn Store> = Arc::new(open(&store_path).await);
    fund(sqlite.as_ref(), 1).await;
    let raw = open(&raw_path).await;
    fund(&raw, 1).await;
    raw.close().await;
    let (mut one, mut eight, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        one.push(
            debit_tps(Arc::clone(&sqlite), 1, secs, Spread::Hot)
                .await
                .tps,
        );
        eight.push(
            debit_tps(Arc::clone(&sqlite), 8, secs, Spread::Hot)
                .await
                .tps,
        );
        // On a runtime worker, as the store's tasks run (not on the thread blocked in
        // `block_on`, whose wake-ups cost more).
        let path = raw_path.clone();
        base.push(
            tokio::spawn(async move { sqlite_raw_tps(&path, secs).await })
                .await
                .unwrap(),
        );
    }
    let ok = sqlite_ledger_holds(&store_path).await && sqlite_ledger_holds(&raw_path).await;
    for path in [&store_path, &raw_path] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(one), median(eight), median(base), ok)
}

/// The SQLite table.
fn print_sqlite(secs: Duration, (one, eight, raw, ok): (f64, f64, f64, bool)) {
    println!(
        "\nSQLite debit + ledger entry, one organization (WAL, synchronous=NORMAL), {}s per \
         measurement, three alternating rounds, medians. The raw loop is one connection sending \
         the store's statements for a fresh debit — `BEGIN IMMEDIATE`, the entry `INSERT … \
         SELECT … RETURNING`, the balance `UPDATE`, `COMMIT` — through sqlx (the driver the \
         store uses), with nothing else: no pool, no queue, no receipt. After the runs, balance = sum(entries) and no \
         `balance_after` < 0 in both files: {}.\n",
        secs.as_secs(),
        if ok { "holds" } else { "VIOLATED" }
    );
    println!(
        "| concurrent tasks | SqliteStore::apply (tx/s) | raw sqlx loop, 1 connection (tx/s) | ratio | target |"
    );
    println!("|---:|---:|---:|---:|---|");
    for (tasks, ours, target) in [(1, one, 0.8), (8, eight, 1.0)] {
        let r = ours / raw;
        println!(
            "| {tasks} | {ours:.0} | {raw:.0} | {r:.2}× | ≥ {target}× {} |",
            if r >= target { "✅" } else { "❌" }
        );
    }
    eprintln!("BENCH sqlite one={one:.0} eight={eight:.0} raw={raw:.0} ok={ok}");
}

/// Cold verifications: a cache of capacity 0 sends every authentication to the store.
async fn cold_verify_us<S: Store + ?Sized>(store: Arc<S>) -> (f64, f64) {
    let mut config = CoreConfig::default();
    config.auth.cache_capacity = 0;
    let core = Creapic::builder(store).config(config).build();
    let ctx = RequestContext::default();
    let now = SystemClock.now().unix_ms();
    let owner = core
        .ensure_user(&format!("bench-{now}@example.com"))
        .await
        .unwrap();
    let org = core
        .create_org("Bench", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    let mut headers = Vec::new();
    for i in 0..200 {
        let spec = KeySpec {
            name: format!("bench {i}"),
            scopes: ScopeSet::all(),
            mode: KeyMode::Live,
            expires_at: None,
        };
        let key = core
            .create_key(Actor::Operator, org.id, spec, &ctx)
            .await
            .unwrap();
        headers.push(format!("Bearer {}", key.secret.expose()));
    }
    let mut lat = Vec::with_capacity(4000);
    for round in 0..4000usize {
        let h = &headers[round.wrapping_mul(7919) % headers.len()];
        let t = Instant::now();
        core.authenticate(Some(h.as_bytes()), None).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

fn main() {
    let secs = Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if std::env::var("BENCH_ONLY").as_deref() == Ok("sqlite") {
            print_sqlite(secs, sqlite_side_by_side(secs).await);
            return;
        }
        let schema = format!("bench_{}", std::process::id());
        let mut wide = Vec::new();
        let mut hot = Vec::new();
        for (i, level) in LEVELS.into_iter().enumerate() {
            let options = ConnectOptions::default()
                .schema(schema.as_str())
                .max_connections(level);
            let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url, &options).await.unwrap());
            if i == 0 {
                fund_pg(&url, &schema, SPREAD_ORGS).await;
            }
            let ours = debit_tps(Arc::clone(&store), level, secs, Spread::Wide).await;
            let theirs = pgbench_tps(&url, &schema, level, secs, Spread::Wide);
            wide.push((level, ours, theirs));
            let ours = debit_tps(Arc::clone(&store), level, secs, Spread::Hot).await;
            let theirs = pgbench_tps(&url, &schema, level, secs, Spread::Hot);
            hot.push((level, ours, theirs));
        }
        let hot_ok = hot_ledger_holds(&url, &schema).await;
        let sqlite_numbers = sqlite_side_by_side(secs).await;
        let pg_verify = {
            let options = ConnectOptions::default()
                .schema(schema.as_str())
                .max_connections(4);
            cold_verify_us(Arc::new(PgStore::connect(&url, &options).await.unwrap())).await
        };
        let sqlite_verify = {
            let path = std::env::temp_dir()
                .join(format!("creapic-bench-verify-{}.db", std::process::id()));
            let store = SqliteStore::connect(
                &format!("sqlite://{}", path.display()),
                &ConnectOptions::default(),
            )
            .await
            .unwrap();
            let us = cold_verify_us(Arc::new(store)).await;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            us
        };

        println!(
            "PostgreSQL debit + ledger entry, spread: each debit on one of {SPREAD_ORGS} \
             organizations at random (pgbench: `\\set org random(1, {SPREAD_ORGS})`), {}s per \
             measurement:\n",
            secs.as_secs()
        );
        println!("| concurrent clients | PgStore::apply (tx/s) | p99 | pgbench, same SQL (tx/s) | p99 | ratio | target |");
        println!("|---:|---:|---:|---:|---:|---:|---|");
        for (level, ours, theirs) in &wide {
            let r = ours.tps / theirs.tps;
            println!(
                "| {level} | {:.0} | {:.1} ms | {:.0} | {:.1} ms | {r:.2}× | ≥ 0.8× {} |",
                ours.tps, ours.p99_ms, theirs.tps, theirs.p99_ms, if r >= 0.8 { "✅" } else { "❌" }
            );
        }
        println!(
            "\nPostgreSQL debits, hot: every debit on ONE organization. pgbench sends the same \
             single-row statement per debit; PgStore group-commits the debits that queue while a \
             batch commits (one compare-and-set of the balance + one multi-row insert of entries, \
             ≤ 256 per batch). After the runs, organization 1 checks balance = sum(entries) and no \
             `balance_after` < 0: {}.\n",
            if hot_ok { "holds" } else { "VIOLATED" }
        );
        println!("| concurrent clients | PgStore::apply (tx/s) | p99 | pgbench, same SQL (tx/s) | p99 | ratio | target |");
        println!("|---:|---:|---:|---:|---:|---:|---|");
        for (level, ours, theirs) in &hot {
            let r = ours.tps / theirs.tps;
            let target = if *level == 1 { "(no contention: ≥ 0.8×)".to_owned() } else { format!("≥ 5× {}", if r >= 5.0 { "✅" } else { "❌" }) };
            println!(
                "| {level} | {:.0} | {:.1} ms | {:.0} | {:.1} ms | {r:.2}× | {target} |",
                ours.tps, ours.p99_ms, theirs.tps, theirs.p99_ms
            );
        }
        for (level, ours, theirs) in wide.iter().chain(&hot) {
            eprintln!("BENCH store level={level} ours={:.0} theirs={:.0}", ours.tps, theirs.tps);
        }
        print_sqlite(secs, sqlite_numbers);
        println!(
            "\nCold key verification (cache miss: parse, SHA-256, one indexed lookup by \
                  digest; 4000 authentications over 200 keys, sequential):\n"
        );
        println!("| store | p50 (µs) | p99 (µs) |");
        println!("|---|---:|---:|");
        println!("| PostgreSQL | {:.0} | {:.0} |", pg_verify.0, pg_verify.1);
        println!(
            "| SQLite | {:.0} | {:.0} |",
            sqlite_verify.0, sqlite_verify.1
        );
    });
}
