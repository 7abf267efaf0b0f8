//! Bad conditions: a database that cannot be reached or that times out is a
//! `Store { kind: Unavailable }` error, never a panic and never a half-written change.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use creapic_core::ledger::{Credits, LedgerOp};
use creapic_core::store::postgres::PgStore;
use creapic_core::store::sqlite::SqliteStore;
use creapic_core::store::{ConnectOptions, Store, connect};
use creapic_core::testing::Fixture;
use creapic_core::{Error, StoreErrorKind};

fn assert_unavailable<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::Store {
            kind: StoreErrorKind::Unavailable,
            ..
        }) => {}
        other => panic!("{what}: expected Store {{ kind: Unavailable }}, got {other:?}"),
    }
}

/// A pool pointed at a port where nothing listens fails fast and typed.
#[tokio::test]
async fn postgres_unreachable_is_unavailable() {
    let options = ConnectOptions::default().acquire_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let r = PgStore::connect("postgres://postgres@127.0.0.1:1/test", &options).await;
    assert_unavailable(r, "typed connect");
    let r = connect("postgres://postgres@127.0.0.1:1/test", options).await;
    assert_unavailable(r.map(|_| ()), "connect by URL");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A debit blocked behind a row lock past the statement timeout is canceled by the server:
/// the call reports Unavailable and writes nothing; the same request succeeds afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statement_timeout_is_unavailable_and_writes_nothing() {
    let schema = support::fresh_schema();
    let seed = support::pg_store(&schema, 4).await;
    let options = ConnectOptions::default()
        .schema(schema.as_str())
        .statement_timeout(Some(Duration::from_millis(300)));
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&support::pg_url(), &options)
            .await
            .expect("store with a short statement timeout"),
    );
    let f = Fixture::new(Arc::clone(&store));
    let org = f.funded_org(10).await.expect("org");
    let hold = f
        .apply(
            org,
            LedgerOp::Reserve {
                amount: Credits::amount(4).expect("amount"),
                job: None,
            },
            "hold",
        )
        .await
        .expect("hold")
        .hold
        .expect("hold")
        .id;

    // Another session holds the organization's balance row and the hold row.
    let mut blocker = seed.pool().begin().await.expect("blocker");
    sqlx::query("SELECT 1 FROM balances WHERE org = $1 FOR UPDATE")
        .bind(org.as_uuid())
        .execute(&mut *blocker)
        .await
        .expect("lock balance");
    sqlx::query("SELECT 1 FROM holds WHERE id = $1 FOR UPDATE")
        .bind(hold.as_uuid())
        .execute(&mut *blocker)
        .await
        .expect("lock hold");
    let debit = LedgerOp::Debit {
        amount: Credits::amount(3).expect("amount"),
    };
    let r = f.apply(org, debit, "blocked-debit").await;
    assert_unavailable(r, "debit past the statement timeout");
    let capture = LedgerOp::Capture {
        hold,
        amount: Credits::amount(1).expect("amount"),
    };
    let r = f.apply(org, capture, "blocked-capture").await;
    assert_unavailable(r, "capture past the statement timeout");
    blocker.rollback().await.expect("release the locks");

    assert_eq!(
        f.assert_ledger_consistent(org).await.expect("ledger"),
        6,
        "nothing of the timed-out calls was written"
    );
    let r = f.apply(org, debit, "blocked-debit").await.expect("retry");
    assert!(!r.replayed, "the timed-out attempt left no entry behind");
    assert_eq!(r.balance().get(), 3);
    let r = f
        .apply(org, capture, "blocked-capture")
        .await
        .expect("retry");
    assert!(!r.replayed);
    assert_eq!(f.assert_ledger_consistent(org).await.expect("ledger"), 3);
}

/// A SQLite write that waits for another process's write lock past the busy timeout is
/// Unavailable and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_busy_past_the_timeout_is_unavailable_and_writes_nothing() {
    let path = support::sqlite_path("faults-sqlite");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect(
            &format!("sqlite://{}", path.display()),
            &ConnectOptions::default().busy_timeout(Duration::from_millis(200)),
        )
        .await
        .expect("store"),
    );
    let f = Fixture::new(Arc::clone(&store));
    let org = f.funded_org(10).await.expect("org");

    // Another "process" (an independent connection) holds the write lock.
    use sqlx::Connection;
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("take the write lock");
    let started = Instant::now();
    let r = f
        .apply(
            org,
            LedgerOp::Debit {
                amount: Credits::amount(3).expect("amount"),
            },
            "busy",
        )
        .await;
    assert_unavailable(r, "debit while another process writes");
    assert!(started.elapsed() < Duration::from_secs(5));
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("release");
    assert_eq!(f.assert_ledger_consistent(org).await.expect("ledger"), 10);
    let r = f
        .apply(
            org,
            LedgerOp::Debit {
                amount: Credits::amount(3).expect("amount"),
            },
            "busy",
        )
        .await
        .expect("retry");
    assert!(!r.replayed);
}

/// A SQLite file that cannot be created is Unavailable, not a panic.
#[tokio::test]
async fn sqlite_unopenable_file_is_unavailable() {
    let r = connect(
        "sqlite:///nonexistent-creapic-dir/sub/db.sqlite",
        ConnectOptions::default().acquire_timeout(Duration::from_millis(500)),
    )
    .await;
    assert_unavailable(r.map(|_| ()), "unopenable file");
}
