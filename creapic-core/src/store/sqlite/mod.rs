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
//! opening the file, the two pools, and how its errors are classified; `ledger.rs` holds its
//! ledger writes (entry-first debits, and group commit: the ledger requests that queue behind
//! the one writer share one transaction).

mod ledger;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Sqlite};

use crate::audit::AuditEvent;
use crate::error::{Error, Result, StoreErrorKind};
use crate::ledger::{LedgerReceipt, LedgerRequest};
use crate::store::connect::ConnectOptions;
use crate::store::group_commit::GroupCommit;
use crate::store::sql::backend::{Pooled, SqlBackend, Tx};
use crate::store::sql::exec::Dialect;

/// The embedded migrations (`creapic-core/migrations/sqlite`). Released files never change.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A store in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: every write transaction queues here, in process, in order.
    writer: writer::Shared,
    /// How long a write waits in line for the writer.
    acquire_timeout: Duration,
    /// Connections for reads; in WAL mode they see the last committed state without waiting.
    /// `None` for an in-memory database, which is read on the writer.
    reader: Option<SqlitePool>,
    /// Ledger requests waiting for the writer, applied in batches (group commit).
    ledger: Arc<GroupCommit<()>>,
    /// Ledger transactions committed through this store and its clones.
    ledger_commits: Arc<AtomicU64>,
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
        let mut conn = base.connect().await.map_err(map_error)?;
        if options.migrate {
            MIGRATOR
                .run(&mut conn)
                .await
                .map_err(|e| Error::store(StoreErrorKind::Other, format!("sqlite migrate: {e}")))?;
        }
        let writer = writer::shared(conn);
        // An in-memory database exists once per connection: it must be read where it is written.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let reader = if in_memory {
            None
        } else {
            // No ping before each use (sqlx's default): a file has no network to lose.
            Some(
                SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(options.max_connections.max(1))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(base)
                    .await
                    .map_err(map_error)?,
            )
        };
        Ok(SqliteStore {
            writer,
            acquire_timeout: options.acquire_timeout,
            reader,
            ledger: Arc::new(GroupCommit::default()),
            ledger_commits: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Writes a transactionally consistent copy of the whole database to `path`, while other
    /// connections and processes keep reading and writing, and returns its size in bytes.
    ///
    /// One `VACUUM INTO` statement on a reader connection: it reads one snapshot (a read
    /// transaction, which in WAL mode never blocks the writer) and writes it compacted, with no
    /// WAL of its own. The file is first created empty with mode 0600 under a temporary name
    /// in the same directory (`VACUUM INTO` accepts an empty file), so the copy is never
    /// readable by others and a crash leaves no half-written file under `path`; it is then
    /// linked to `path`, which fails if `path` exists: an existing file is never overwritten.
    /// The path is bound as a parameter, never spliced into the SQL.
    pub async fn backup_to(&self, path: &Path) -> Result<u64> {
        let text = path
            .to_str()
            .ok_or_else(|| Error::invalid("backup path", "must be valid UTF-8"))?;
        if path.exists() {
            return Err(Error::invalid(
                "backup path",
                "the file already exists; a backup never overwrites one",
            ));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid("backup path", "must name a file"))?;
        let partial = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let io = |what: &str, e: std::io::Error| {
            Error::store(StoreErrorKind::Unavailable, format!("backup: {what}: {e}"))
        };
        create_private(&partial).map_err(|e| io("cannot create the file", e))?;
        let written = self.vacuum_into(text, &partial).await;
        let linked = written.and_then(|()| {
            std::fs::hard_link(&partial, path).map_err(|e| io("cannot move it into place", e))
        });
        let _ = std::fs::remove_file(&partial);
        linked?;
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| io("cannot read its size", e))
    }

    /// `VACUUM INTO` the (empty) file `partial`; `target` only names the backup in errors.
    async fn vacuum_into(&self, target: &str, partial: &Path) -> Result<()> {
        let partial = partial
            .to_str()
            .ok_or_else(|| Error::invalid("backup path", "must be valid UTF-8"))?;
        let mut conn = self.read().await?;
        sqlx::query("VACUUM INTO $1")
            .bind(partial)
            .execute(&mut *conn)
            .await
            .map_err(|e| match map_error(e) {
                Error::Store { kind, message } => {
                    Error::store(kind, format!("backup to {target}: {message}"))
                }
                other => other,
            })?;
        Ok(())
    }

    /// The migrations recorded as applied in this database that this build does not carry
    /// (a newer build wrote it), by version, oldest first. Empty for a database this build can
    /// use; a database without `_sqlx_migrations` has none.
    pub async fn unknown_migrations(&self) -> Result<Vec<i64>> {
        let mut conn = self.read().await?;
        let exists: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_error)?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let applied: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&mut *conn)
                .await
                .map_err(map_error)?;
        Ok(applied
            .into_iter()
            .map(|(v,)| v)
            .filter(|v| !MIGRATOR.iter().any(|m| m.version == *v))
            .collect())
    }

    /// How many ledger transactions `LedgerStore::apply` committed through this store and its
    /// clones since it was opened. Requests that queued for the writer together share one
    /// (group commit), so under concurrency this stays below the number of requests applied.
    pub fn ledger_commits(&self) -> u64 {
        self.ledger_commits.load(Ordering::Relaxed)
    }

    /// Closes the writer (after the write holding it, if any) and the reader pool (waiting for
    /// connections in use to come back); later calls answer `Unavailable`.
    pub async fn close(&self) {
        writer::close(&self.writer).await;
        if let Some(reader) = &self.reader {
            reader.close().await;
        }
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
    type Tx = writer::WriterTx;
    type Pooled = writer::ReadConn;

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    /// A write transaction holding the database's write lock from its first statement.
    async fn write(&self) -> Result<Tx<Self>> {
        writer::WriterTx::begin(
            &self.writer,
            writer::hold(&self.writer, self.acquire_timeout).await?,
        )
        .await
    }

    async fn read(&self) -> Result<Pooled<Self>> {
        match &self.reader {
            Some(reader) => Ok(writer::ReadConn::Pool(
                reader.acquire().await.map_err(map_error)?,
            )),
            None => Ok(writer::ReadConn::Writer(
                writer::hold(&self.writer, self.acquire_timeout).await?,
            )),
        }
    }

    /// The writer connection: single-statement writes queue with the transactions.
    async fn autocommit(&self) -> Result<Pooled<Self>> {
        Ok(writer::ReadConn::Writer(
            writer::hold(&self.writer, self.acquire_timeout).await?,
        ))
    }

    async fn commit(tx: Tx<Self>) -> Result<()> {
        tx.commit().await
    }

    /// A request without an audit event queues for the writer and is applied with whatever
    /// queued with it, in one transaction; one with an event is applied alone (its event in the
    /// same transaction). Debits are written entry-first either way.
    async fn apply(
        &self,
        request: &LedgerRequest,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt> {
        if audit.is_none() {
            return self
                .ledger
                .submit(&ledger::SqliteLedger(self.clone()), request.clone())
                .await;
        }
        ledger::apply_alone(self, request, audit).await
    }
}

/// Creates `path`, which must not exist, empty and readable by its owner only (0600 on Unix).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}
