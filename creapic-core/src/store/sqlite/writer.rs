//! The one writer connection of a [`super::SqliteStore`], behind a fair async mutex, and the
//! write transactions and connections handed out on it.
//!
//! Design decision: **a mutex, not a pool of one.** SQLite has one writer per file, so the store
//! keeps exactly one writing connection and every write queues for it in arrival order (tokio's
//! mutex is FIFO). sqlx's pool would do the same queueing, but returning a connection to it
//! spawns a task that pings the connection — a round trip to the driver's worker thread after
//! every transaction, a fifth of a lone debit's cost (`BEGIN`, entry, balance, `COMMIT`), and the
//! next writer waits for that task. A guard handed back is free.
//!
//! A transaction dropped before [`WriterTx::commit`] (an error, a refused debit, a cancelled
//! request) cannot roll back in `Drop` (no `await` there): it marks the connection, and the next
//! holder sends `ROLLBACK` before anything else — a task spawned by the drop, when nothing else
//! is waiting, so the file's write lock is never left held while this process is idle. The
//! driver runs a connection's statements in order, so the rollback follows whatever the dropped
//! transaction had in flight.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::error::{Error, Result, StoreErrorKind};
use crate::store::sql::exec::stmt;

/// The writer connection and whether a dropped transaction left it to roll back.
#[derive(Debug)]
pub(super) struct Writer {
    conn: SqliteConnection,
    rollback_pending: bool,
}

/// How long the task that rolls back a dropped transaction waits in line for the writer (a
/// write queued meanwhile rolls back first anyway).
const ROLLBACK_WAIT_MAX: Duration = Duration::from_secs(60);

/// The writer of one store and its clones: `None` once closed.
pub(super) type Shared = Arc<Mutex<Option<Writer>>>;

/// Wraps a freshly opened connection.
pub(super) fn shared(conn: SqliteConnection) -> Shared {
    Arc::new(Mutex::new(Some(Writer {
        conn,
        rollback_pending: false,
    })))
}

/// The writer, held: waits in line at most `timeout`, then `Unavailable`.
pub(super) async fn hold(shared: &Shared, timeout: Duration) -> Result<WriterGuard> {
    let guard = tokio::time::timeout(timeout, Arc::clone(shared).lock_owned())
        .await
        .map_err(|_| {
            Error::store(
                StoreErrorKind::Unavailable,
                "sqlite: the writer stayed busy past the acquire timeout",
            )
        })?;
    let mut writer = OwnedMutexGuard::try_map(guard, Option::as_mut)
        .map_err(|_| Error::store(StoreErrorKind::Unavailable, "sqlite: the store is closed"))?;
    if writer.rollback_pending {
        // "No transaction is active" is fine: the dropped one may never have begun.
        let _ = stmt("ROLLBACK").execute(&mut writer.conn).await;
        writer.rollback_pending = false;
    }
    Ok(WriterGuard(writer))
}

/// Closes the writer: later writes answer `Unavailable`.
pub(super) async fn close(shared: &Shared) {
    let taken = shared.lock().await.take();
    if let Some(writer) = taken {
        let _ = sqlx::Connection::close(writer.conn).await;
    }
}

/// The writer connection, held (autocommit statements, or reads of an in-memory database).
#[derive(Debug)]
pub(crate) struct WriterGuard(OwnedMappedMutexGuard<Option<Writer>, Writer>);

impl Deref for WriterGuard {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.0.conn
    }
}

impl DerefMut for WriterGuard {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0.conn
    }
}

/// A write transaction on the writer (`BEGIN IMMEDIATE`): rolled back unless committed.
#[derive(Debug)]
pub(crate) struct WriterTx {
    guard: WriterGuard,
    open: bool,
    /// The writer, to roll a dropped transaction back from a task of its own.
    shared: Shared,
}

impl WriterTx {
    /// Starts a transaction that holds SQLite's write lock from its first statement.
    pub(super) async fn begin(shared: &Shared, mut guard: WriterGuard) -> Result<WriterTx> {
        stmt("BEGIN IMMEDIATE").execute(&mut *guard).await?;
        Ok(WriterTx {
            guard,
            open: true,
            shared: Arc::clone(shared),
        })
    }

    /// Commits; on failure the transaction is rolled back (by the next holder).
    pub(super) async fn commit(mut self) -> Result<()> {
        stmt("COMMIT").execute(&mut *self.guard).await?;
        self.open = false;
        Ok(())
    }
}

impl Deref for WriterTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.guard
    }
}

impl DerefMut for WriterTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.guard
    }
}

impl Drop for WriterTx {
    /// Marks the connection for rollback and, on a runtime, takes the writer back at once to
    /// send it: an open transaction holds the file's write lock, which another process may be
    /// waiting for while this one has nothing more to write. (A write queued meanwhile gets the
    /// writer first and rolls back itself; the task then finds nothing to do.)
    fn drop(&mut self) {
        if self.open {
            self.guard.0.rollback_pending = true;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let shared = Arc::clone(&self.shared);
                runtime.spawn(async move {
                    let _ = hold(&shared, ROLLBACK_WAIT_MAX).await;
                });
            }
        }
    }
}

/// A connection for reads: from the reader pool, or the writer itself (in-memory databases).
#[derive(Debug)]
pub(crate) enum ReadConn {
    /// A reader connection (WAL: never waits for the writer).
    Pool(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    /// The writer (an in-memory database exists once, on its one connection).
    Writer(WriterGuard),
}

impl Deref for ReadConn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match self {
            ReadConn::Pool(c) => c,
            ReadConn::Writer(w) => w,
        }
    }
}

impl DerefMut for ReadConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            ReadConn::Pool(c) => c,
            ReadConn::Writer(w) => w,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::SqliteStore;
    use crate::store::ConnectOptions;
    use crate::store::sql::backend::SqlBackend;
    use crate::store::sql::exec::{Columns as _, stmt};

    async fn balances(store: &SqliteStore) -> u64 {
        let mut conn = store.read().await.expect("read");
        stmt("SELECT COUNT(*) AS n FROM balances")
            .fetch_one(&mut *conn)
            .await
            .expect("count")
            .count("n")
            .expect("n")
    }

    /// A dropped transaction gives the file's write lock back without waiting for this
    /// process's next write: another process (here a second connection that will not wait)
    /// can write at once.
    #[tokio::test]
    async fn a_dropped_transaction_frees_the_file_for_other_processes() {
        use sqlx::Connection as _;
        let path = std::env::temp_dir().join(format!(
            "creapic-writer-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::connect(&url, &ConnectOptions::default())
            .await
            .expect("store");
        let tx = store.write().await.expect("begin");
        drop(tx);
        let mut other = sqlx::SqliteConnection::connect(&url).await.expect("other");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match stmt("BEGIN IMMEDIATE").execute(&mut other).await {
                Ok(_) => break,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the write lock stayed held: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stmt("ROLLBACK")
            .execute(&mut other)
            .await
            .expect("rollback");
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// A transaction dropped half-way (an error, a cancelled request) leaves nothing written,
    /// and the next write begins cleanly on the same connection.
    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back_before_the_next_write() {
        let store = SqliteStore::connect("sqlite::memory:", &ConnectOptions::default())
            .await
            .expect("store");
        let insert = |n: u8| {
            stmt("INSERT INTO balances (org, balance) VALUES ($1, 5)")
                .bind(uuid::Uuid::from_u128(u128::from(n)))
        };
        let mut tx = store.write().await.expect("begin");
        insert(1).execute(&mut *tx).await.expect("insert");
        drop(tx);
        assert_eq!(balances(&store).await, 0, "the dropped insert is gone");
        let mut tx = store.write().await.expect("a new transaction begins");
        insert(2).execute(&mut *tx).await.expect("insert");
        SqliteStore::commit(tx).await.expect("commit");
        assert_eq!(balances(&store).await, 1, "the committed insert stays");
    }
}
