//! [`SqlBackend`]: what a SQL store must provide for the shared store code to run on it — its
//! database (whose `Dialect` gives the lock clauses), connections, transactions, and the few
//! operations it does its own way.
//!
//! Every store trait is implemented once, for every `SqlBackend` (`orgs.rs`, `keys.rs`,
//! `ledger.rs`, `jobs.rs`, `audit.rs`, `idempotency.rs`, `generations.rs`, `accounts.rs`). A
//! backend's own file then holds only what is truly its own: connecting and migrating, classifying its errors, and
//! the overrides below (PostgreSQL's one-statement ledger writes and group commit, its revocation
//! `NOTIFY`). The methods with a default are portable SQL that both databases run; a backend
//! overrides one only to do the same thing faster or to announce it.

use std::future::Future;
use std::ops::DerefMut;

use sqlx::Database;

use crate::audit::AuditEvent;
use crate::error::Result;
use crate::key::ApiKey;
use crate::ledger::{LedgerReceipt, LedgerRequest};
use crate::store::sql::exec::{Dialect, Exec, Stmt};
use crate::store::sql::ledger;
use crate::store::sql::rows::{PURGE_BATCH, PURGE_BATCHES_MAX};

/// A connection of backend `B`.
pub(crate) type Conn<B> = <<B as SqlBackend>::Db as Database>::Connection;
/// A write transaction of backend `B`; statements run on the connection it derefs to.
pub(crate) type Tx<B> = <B as SqlBackend>::Tx;
/// A connection of backend `B`, outside any transaction.
pub(crate) type Pooled<B> = <B as SqlBackend>::Pooled;

/// Deletes in bounded batches until a batch comes back short: `batch` is one `DELETE` whose
/// last placeholder is the batch size ([`PURGE_BATCH`]), run on its own (autocommit), so a large
/// backlog never becomes one long transaction holding locks; at most [`PURGE_BATCHES_MAX`]
/// batches per call (the next call finishes the rest). How many rows went.
pub(crate) async fn purge_in_batches<B: SqlBackend>(
    store: &B,
    batch: impl Fn() -> Stmt<'static> + Send + Sync,
) -> Result<u64> {
    let mut total = 0;
    for _ in 0..PURGE_BATCHES_MAX {
        let mut conn = store.autocommit().await?;
        let done = batch().bind(PURGE_BATCH).execute(&mut *conn).await?;
        total += done;
        if done < PURGE_BATCH.unsigned_abs() {
            break;
        }
    }
    Ok(total)
}

/// A SQL database the shared store code runs on.
pub(crate) trait SqlBackend: Sized + Send + Sync + 'static {
    /// The sqlx database; its connections run the shared statements.
    type Db: Dialect<Connection: Exec>;
    /// A write transaction: statements run on the connection it derefs to; dropped without
    /// [`SqlBackend::commit`], it is rolled back.
    type Tx: DerefMut<Target = Conn<Self>> + Send;
    /// A connection outside any transaction, for reads or single-statement writes.
    type Pooled: DerefMut<Target = Conn<Self>> + Send;

    /// The embedded migrations of this database (what `SchemaStore` compares the applied ones
    /// with).
    fn migrator() -> &'static sqlx::migrate::Migrator;

    /// Starts a write transaction.
    fn write(&self) -> impl Future<Output = Result<Tx<Self>>> + Send;
    /// A connection for reads.
    fn read(&self) -> impl Future<Output = Result<Pooled<Self>>> + Send;
    /// A connection whose statements are writes that each commit on their own.
    fn autocommit(&self) -> impl Future<Output = Result<Pooled<Self>>> + Send;

    /// Commits `tx`.
    fn commit(tx: Tx<Self>) -> impl Future<Output = Result<()>> + Send;

    /// `LedgerStore::apply`. Default: one write transaction holding the request (looked up
    /// first, so a repeat is answered from its first entry) and its audit event.
    fn apply(
        &self,
        request: &LedgerRequest,
        audit: Option<&AuditEvent>,
    ) -> impl Future<Output = Result<LedgerReceipt>> + Send {
        ledger::apply_in_transaction(self, request, audit)
    }

    /// A grant, debit or reserve known not to be a repeat, inside the caller's transaction.
    /// Default: the conditional balance write, the hold and the entry as separate statements.
    fn write_simple<'a>(
        conn: &'a mut Conn<Self>,
        request: &'a LedgerRequest,
        fingerprint: &'a str,
    ) -> impl Future<Output = Result<LedgerReceipt>> + Send + 'a {
        ledger::write_simple_steps::<Self>(conn, request, fingerprint)
    }

    /// Called in the deleting transaction after `key` was soft-deleted. Default: nothing.
    fn key_deleted<'a>(
        conn: &'a mut Conn<Self>,
        key: &'a ApiKey,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        let _ = (conn, key);
        async { Ok(()) }
    }
}
