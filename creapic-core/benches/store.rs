//! Store benchmark: PostgreSQL debit+ledger throughput against `pgbench` running the same SQL on
//! the same server in the same run, SQLite debit+ledger throughput, and cold key verification
//! latency (cache miss: parse, hash, one indexed lookup by digest) on both.
//!
//! Design decision: a plain bench binary, not criterion, because the numbers that matter are
//! throughputs under concurrency and a ratio to an external baseline measured seconds apart;
//! `bench/stores.sh` runs it and writes its Markdown output into `docs/benchmarks.md`.
//! Environment: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), `PGBENCH`
//! (default `/usr/lib/postgresql/15/bin/pgbench`), `BENCH_SECS` per measurement (default 5).

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

fn org_of(client: u32) -> OrgId {
    // pgbench computes the same id: lpad(to_hex(:client_id + 1), 32, '0')::uuid
    OrgId::from_uuid(uuid::Uuid::from_u128(u128::from(client) + 1))
}

async fn fund(store: &dyn Store, clients: u32) {
    let now = SystemClock.now();
    for c in 0..clients {
        let request = LedgerRequest {
            entry_id: EntryId::generate(now, &OsRandom),
            org: org_of(c),
            op: LedgerOp::Grant {
                amount: Credits::amount(AMOUNT_MAX).unwrap(),
            },
            idempotency_key: IdempotencyKey::new(&format!("fund-{c}-{}", now.unix_ms())).unwrap(),
            at: now,
        };
        store.apply(&request, None).await.unwrap();
    }
}

/// Debits of 1 credit from `tasks` concurrent tasks, each on its own organization, for `secs`.
async fn debit_tps(store: Arc<dyn Store>, tasks: u32, secs: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..tasks {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        handles.push(tokio::spawn(async move {
            let one = Credits::amount(1).unwrap();
            while start.elapsed() < secs {
                let now = SystemClock.now();
                let id = EntryId::generate(now, &OsRandom);
                let request = LedgerRequest {
                    entry_id: id,
                    org: org_of(c),
                    op: LedgerOp::Debit { amount: one },
                    idempotency_key: IdempotencyKey::new(&id.to_string()).unwrap(),
                    at: now,
                };
                store.apply(&request, None).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

const PGBENCH_SQL: &str = "WITH b AS (UPDATE balances SET balance = balance - 1 \
WHERE org = lpad(to_hex(:client_id + 1), 32, '0')::uuid AND balance >= 1 RETURNING balance) \
INSERT INTO ledger_entries (id, org, kind, delta, amount, balance_after, hold_id, job_id, \
idempotency_key, fingerprint, created_at) \
SELECT gen_random_uuid(), lpad(to_hex(:client_id + 1), 32, '0')::uuid, 'debit', -1, 1, \
b.balance, NULL::uuid, NULL::uuid, gen_random_uuid()::text, 'debit:1', \
(extract(epoch from clock_timestamp()) * 1000)::bigint FROM b RETURNING seq, balance_after;\n";

fn pgbench_tps(url: &str, schema: &str, clients: u32, secs: Duration) -> f64 {
    let script = std::env::temp_dir().join(format!("creapic-debit-{}.sql", std::process::id()));
    std::fs::write(&script, PGBENCH_SQL).unwrap();
    let pgbench =
        std::env::var("PGBENCH").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pgbench".into());
    let out = std::process::Command::new(pgbench)
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .args([
            "-n",
            "-M",
            "prepared",
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
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
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
        let schema = format!("bench_{}", std::process::id());
        let mut rows = Vec::new();
        for level in LEVELS {
            let options = ConnectOptions::default()
                .schema(schema.as_str())
                .max_connections(level);
            let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url, &options).await.unwrap());
            fund(store.as_ref(), level).await;
            let ours = debit_tps(Arc::clone(&store), level, secs).await;
            let theirs = pgbench_tps(&url, &schema, level, secs);
            rows.push((level, ours, theirs));
        }
        let sqlite_path =
            std::env::temp_dir().join(format!("creapic-bench-{}.db", std::process::id()));
        let sqlite: Arc<dyn Store> = Arc::new(
            SqliteStore::connect(
                &format!("sqlite://{}", sqlite_path.display()),
                &ConnectOptions::default(),
            )
            .await
            .unwrap(),
        );
        fund(sqlite.as_ref(), 8).await;
        let sqlite_1 = debit_tps(Arc::clone(&sqlite), 1, secs).await;
        let sqlite_8 = debit_tps(Arc::clone(&sqlite), 8, secs).await;
        let pg_verify = {
            let options = ConnectOptions::default()
                .schema(schema.as_str())
                .max_connections(4);
            cold_verify_us(Arc::new(PgStore::connect(&url, &options).await.unwrap())).await
        };
        let sqlite_verify = cold_verify_us(Arc::clone(&sqlite)).await;
        let _ = std::fs::remove_file(&sqlite_path);

        println!(
            "PostgreSQL debit + ledger entry (one conditional write and its entry, one \
                  transaction), each task on its own organization, {}s per measurement:\n",
            secs.as_secs()
        );
        println!("| concurrent tasks | PgStore::apply (tx/s) | pgbench, same SQL (tx/s) | ratio |");
        println!("|---:|---:|---:|---:|");
        for (level, ours, theirs) in rows {
            println!(
                "| {level} | {ours:.0} | {theirs:.0} | {:.2}× |",
                ours / theirs
            );
        }
        println!(
            "\nSQLite debit + ledger entry (one `BEGIN IMMEDIATE` transaction, WAL, \
                  synchronous=NORMAL), {}s per measurement:\n",
            secs.as_secs()
        );
        println!("| concurrent tasks | SqliteStore::apply (tx/s) |");
        println!("|---:|---:|");
        println!("| 1 | {sqlite_1:.0} |");
        println!("| 8 | {sqlite_8:.0} |");
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
