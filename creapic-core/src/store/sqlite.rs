//! The SQLite store: the embedded default, one database file that the CLI and the server share.
//!
//! Design decision: **one writer**. Every change runs in a `BEGIN IMMEDIATE` transaction, which
//! takes SQLite's write lock before the first statement, so a transaction never has to upgrade a
//! read lock (the upgrade is what deadlocks deferred transactions across processes). Within a
//! process, writes queue on a pool of exactly one writer connection (fair and cheap); across
//! processes they queue on the file lock with a bounded busy timeout, past which the call fails
//! with `Store { kind: Unavailable }`. Reads use a separate pool and, in WAL mode, never wait for
//! the writer. Credit changes are still conditional writes (`UPDATE … WHERE balance >= $n
//! RETURNING`) and idempotency is still a unique constraint, exactly as on PostgreSQL: the two
//! backends run the same statements (`store/sql/`), so they share one reasoning about money even
//! though SQLite's lock would forgive a lazier one. This file holds only what is SQLite's own:
//! opening the file, the two pools, and how its errors are classified.

use std::str::FromStr;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use crate::error::{Error, Result, StoreErrorKind};
use crate::store::connect::ConnectOptions;
use crate::store::sql::backend::{Pooled, SqlBackend, Tx};
use crate::store::sql::exec::Dialect;

/// The embedded migrations (`creapic-core/migrations/sqlite`). Released files never change.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A store in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: every write transaction queues here, in process, in order.
    writer: SqlitePool,
    /// Connections for reads; in WAL mode they see the last committed state without waiting.
    reader: SqlitePool,
}

/// Maps a sqlx error to the core's store error: the one place SQLite failures are classified.
/// Messages name the failure, never bound values (and stores only see digests anyway).
pub fn map_error(e: sqlx::Error) -> Error {
    <Sqlite as Dialect>::map_error(e)
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`, `sqlite:path` or
    /// `sqlite::memory:`) in WAL mode with `options.busy_timeout`, and applies the migrations
    /// unless `options.migrate` is off.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(map_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        // No ping before each use (sqlx's default): a file has no network to lose.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base.clone())
            .await
            .map_err(map_error)?;
        if options.migrate {
            MIGRATOR
                .run(&writer)
                .await
                .map_err(|e| Error::store(StoreErrorKind::Other, format!("sqlite migrate: {e}")))?;
        }
        // An in-memory database exists once per connection: it must be read where it is written.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(base)
                .await
                .map_err(map_error)?
        };
        Ok(SqliteStore { writer, reader })
    }

    /// Closes both pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

impl Dialect for Sqlite {
    const ROW_LOCK: &'static str = "";
    const CLAIM_LOCK: &'static str = "";

    fn database_error_kind(db: &dyn sqlx::error::DatabaseError) -> StoreErrorKind {
        let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
        match code & 0xff {
            // BUSY, LOCKED: another writer held the lock past the busy timeout.
            // IOERR, CANTOPEN, FULL, PROTOCOL: the file cannot be used right now.
            5 | 6 | 10 | 13 | 14 | 15 => StoreErrorKind::Unavailable,
            // CORRUPT, NOTADB.
            11 | 26 => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Other,
        }
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlBackend for SqliteStore {
    type Db = Sqlite;

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    /// A write transaction holding the database's write lock from its first statement.
    async fn write(&self) -> Result<Tx<Self>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)
    }

    async fn read(&self) -> Result<Pooled<Self>> {
        self.reader.acquire().await.map_err(map_error)
    }

    /// The writer connection: single-statement writes queue with the transactions.
    async fn autocommit(&self) -> Result<Pooled<Self>> {
        self.writer.acquire().await.map_err(map_error)
    }
}
