//! The SQLite store: the embedded default, one database file that the CLI and the server share.
//!
//! Design decision: **one writer**. Every change runs in a `BEGIN IMMEDIATE` transaction, which
//! takes SQLite's write lock before the first statement, so a transaction never has to upgrade a
//! read lock (the upgrade is what deadlocks deferred transactions across processes). Within a
//! process, writes queue on a pool of exactly one writer connection (fair and cheap); across
//! processes they queue on the file lock with a bounded busy timeout, past which the call fails
//! with `Store { kind: Unavailable }`. Reads use a separate pool and, in WAL mode, never wait for
//! the writer. Credit changes are still conditional writes (`UPDATE … WHERE balance >= $n
//! RETURNING`) and idempotency is still a unique constraint, exactly as on PostgreSQL, so the two
//! backends share one reasoning about money even though SQLite's lock would forgive a lazier one.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite, Transaction};
use uuid::Uuid;

use crate::audit::{AuditEvent, AuditQuery, AuditRecord};
use crate::audit_chain::{self, ChainHead, ChainRow};
use crate::clock::Timestamp;
use crate::error::{Error, Result, StoreErrorKind};
use crate::generation::GenerationRecord;
use crate::id::{AttemptId, EntryId, GenerationId, HoldId, JobId, KeyId, OrgId, UserId};
use crate::idempotency::{Abandon, IdempotencyBegin, RequestFingerprint, StoredResponse};
use crate::job::{Enqueued, FinishItem, ItemStatus, Job, JobStatus, NewJob, WorkerId};
use crate::key::{ApiKey, KeyDigest, NewKey};
use crate::ledger::{
    BALANCE_MAX, Credits, DailyUsage, DayRange, Hold, IdempotencyKey, LedgerEntry, LedgerOp,
    LedgerReceipt, LedgerRequest,
};
use crate::org::{Email, Member, Organization, Removal, Role, RoleChange, User};
use crate::page::{Page, PageLimit};
use crate::store::connect::ConnectOptions;
use crate::store::sql::{
    self, AUDIT_COLUMNS, AuditParams, CHAIN_COLUMNS, Columns, ENTRY_COLUMNS, HEAD_COLUMNS,
    HOLD_COLUMNS, ITEM_COLUMNS, JOB_COLUMNS, KEY_COLUMNS, PURGE_BATCH, PURGE_BATCHES_MAX, signed,
};
use crate::store::{IdempotencyStore, KeyQuery, KeyStore, KeyUsage, LedgerStore, OrgStore};

sql::impl_columns!(SqliteRow);

/// The embedded migrations (`creapic-core/migrations/sqlite`). Released files never change.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Most audit rows in one multi-row insert (10 parameters each, far below SQLite's limit).
const AUDIT_ROWS_PER_INSERT: usize = 200;
/// Most key usages in one `UPDATE … FROM (VALUES …)` (3 parameters each).
const USAGE_ROWS_PER_UPDATE: usize = 500;

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
    use sqlx::Error as E;
    let kind = match &e {
        E::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => StoreErrorKind::Conflict,
            _ => {
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
        },
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            StoreErrorKind::Unavailable
        }
        E::ColumnDecode { .. }
        | E::Decode(_)
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. } => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Other,
    };
    Error::store(kind, format!("sqlite: {e}"))
}

fn conflict(what: &str) -> Error {
    Error::store(StoreErrorKind::Conflict, format!("{what} already exists"))
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

    /// The connections reads use (the writer is kept for writes).
    fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Enqueues `new`: a repeat of its idempotency key answers with the first job.
    async fn enqueue_job(&self, new: &NewJob) -> Result<Enqueued> {
        let mut tx = self.write().await?;
        let existing: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE org = $1 AND idempotency_key = $2")
                .bind(new.org.as_uuid())
                .bind(new.idempotency_key.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_error)?;
        if let Some(id) = existing {
            return enqueue_replay(&mut tx, new, JobId::from_uuid(id)).await;
        }
        new.validate()?;
        let (job_exists, org_exists): (i64, i64) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1), \
             EXISTS (SELECT 1 FROM orgs WHERE id = $2)",
        )
        .bind(new.id.as_uuid())
        .bind(new.org.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(map_error)?;
        if job_exists != 0 {
            return Err(conflict("job"));
        }
        if org_exists == 0 {
            return Err(Error::NotFound {
                resource: "organization",
            });
        }
        let total = new.total_cost()?;
        let (hold, balance) = if total.get() > 0 {
            let receipt = apply_in(
                &mut tx,
                &LedgerRequest {
                    entry_id: new.hold_entry,
                    org: new.org,
                    op: LedgerOp::Reserve {
                        amount: total,
                        job: Some(new.id),
                    },
                    idempotency_key: IdempotencyKey::trusted(format!("job:{}:reserve", new.id)),
                    at: new.at,
                },
            )
            .await?;
            (receipt.hold, receipt.entry.balance_after)
        } else {
            (
                None,
                Credits::new(current_balance(&mut tx, new.org).await?)?,
            )
        };
        let job = new.to_job(hold.as_ref().map(|h| h.id));
        sqlx::query(
            "INSERT INTO jobs (id, org, key_id, kind, mode, status, unit_cost, hold_id, \
             idempotency_key, created_at, updated_at, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, 0)",
        )
        .bind(job.id.as_uuid())
        .bind(job.org.as_uuid())
        .bind(job.key.map(|k| k.as_uuid()))
        .bind(job.kind.as_str())
        .bind(job.mode.as_str())
        .bind(job.status.as_str())
        .bind(job.unit_cost.signed())
        .bind(job.hold.map(|h| h.as_uuid()))
        .bind(job.idempotency_key.as_str())
        .bind(job.created_at.unix_ms())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        for item in &job.items {
            sqlx::query(
                "INSERT INTO job_items (job_id, idx, input, status) VALUES ($1, $2, $3, $4)",
            )
            .bind(job.id.as_uuid())
            .bind(i64::from(item.index))
            .bind(item.input.as_str())
            .bind(item.status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        }
        commit(tx).await?;
        Ok(Enqueued {
            job,
            hold,
            balance,
            replayed: false,
        })
    }

    /// A write transaction holding the database's write lock from its first statement.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)
    }
}

async fn commit(tx: Transaction<'static, Sqlite>) -> Result<()> {
    tx.commit().await.map_err(map_error)
}

async fn insert_audit(conn: &mut SqliteConnection, event: &AuditEvent) -> Result<()> {
    insert_audits(conn, std::slice::from_ref(event)).await
}

/// Appends events with one multi-row insert per [`AUDIT_ROWS_PER_INSERT`] events, linked into
/// the hash chain: the head is read and advanced inside the caller's write transaction (SQLite
/// has one writer, so appends are already serialized and `seq` order is commit order).
async fn insert_audits(conn: &mut SqliteConnection, events: &[AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut head = chain_head(&mut *conn, true).await?;
    let links = audit_chain::link(&mut head, events);
    for (chunk, links) in events
        .chunks(AUDIT_ROWS_PER_INSERT)
        .zip(links.chunks(AUDIT_ROWS_PER_INSERT))
    {
        let mut text = String::from(
            "INSERT INTO audit_events (seq, id, org, at, action, actor, ip, user_agent, key_id, \
             key_prefix, detail, prev_hash, hash) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                text.push(',');
            }
            text.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?)");
        }
        // Only placeholders are formatted into the text; every value is bound.
        let mut q = sqlx::query(AssertSqlSafe(text));
        for (e, l) in chunk.iter().zip(links) {
            let p = AuditParams::of(e);
            q = q
                .bind(sql::seq_param(l.seq)?)
                .bind(p.id)
                .bind(p.org)
                .bind(p.at)
                .bind(p.action)
                .bind(p.actor)
                .bind(p.ip)
                .bind(p.user_agent)
                .bind(p.key_id)
                .bind(p.key_prefix)
                .bind(p.detail)
                .bind(l.prev_hash.as_bytes().to_vec())
                .bind(l.hash.as_bytes().to_vec());
        }
        q.execute(&mut *conn).await.map_err(map_error)?;
    }
    sqlx::query("UPDATE audit_chain SET last_seq = ?, last_hash = ? WHERE id = 1")
        .bind(sql::seq_param(head.last_seq)?)
        .bind(head.last_hash.as_bytes().to_vec())
        .execute(&mut *conn)
        .await
        .map_err(map_error)?;
    Ok(())
}

/// Nothing extra keeps two runners off one job: the claim runs in a write transaction, and SQLite
/// has one writer.
/// Locks a user's row for the rest of the transaction (`create_org`).
const USER_LOCK: &str = "SELECT 1 FROM users WHERE id = $1";
/// Locks an organization's row for the rest of the transaction (`insert_key`).
const ORG_LOCK: &str = "SELECT 1 FROM orgs WHERE id = $1";
const CLAIM_LOCK: &str = "";

/// The audit chain's head. `_lock` is implied inside a write transaction (SQLite has one writer).
async fn chain_head(conn: &mut SqliteConnection, _lock: bool) -> Result<ChainHead> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HEAD_COLUMNS} FROM audit_chain WHERE id = 1"
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(map_error)?;
    sql::chain_head(&row)
}

// ---------------------------------------------------------------------------------------------
// Ledger: every function here runs inside the caller's write transaction.

async fn find_entry(
    conn: &mut SqliteConnection,
    org: OrgId,
    key: &IdempotencyKey,
) -> Result<Option<(LedgerEntry, String)>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS}, fingerprint FROM ledger_entries \
         WHERE org = $1 AND idempotency_key = $2"
    )))
    .bind(org.as_uuid())
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_error)?;
    match row {
        Some(r) => Ok(Some((sql::entry(&r)?, r.text("fingerprint")?))),
        None => Ok(None),
    }
}

async fn find_hold(conn: &mut SqliteConnection, org: OrgId, id: HoldId) -> Result<Option<Hold>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1 AND org = $2"
    )))
    .bind(id.as_uuid())
    .bind(org.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_error)?;
    row.as_ref().map(sql::hold).transpose()
}

async fn current_balance(conn: &mut SqliteConnection, org: OrgId) -> Result<u64> {
    let b: Option<i64> = sqlx::query_scalar("SELECT balance FROM balances WHERE org = $1")
        .bind(org.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_error)?;
    u64::try_from(b.unwrap_or(0)).map_err(|e| sql::corrupt("balance", e))
}

/// Adds `n` (possibly 0) to the balance and returns the new balance.
async fn add_balance(conn: &mut SqliteConnection, org: OrgId, n: u64) -> Result<u64> {
    let b: i64 = sqlx::query_scalar(
        "INSERT INTO balances (org, balance) VALUES ($1, $2) \
         ON CONFLICT (org) DO UPDATE SET balance = balances.balance + excluded.balance \
         RETURNING balance",
    )
    .bind(org.as_uuid())
    .bind(signed(n))
    .fetch_one(&mut *conn)
    .await
    .map_err(map_error)?;
    u64::try_from(b).map_err(|e| sql::corrupt("balance", e))
}

/// Takes `n` from the balance if it holds at least `n`: the one conditional write every debit
/// and reserve is. `None` when the balance is short (nothing written).
async fn take_balance(conn: &mut SqliteConnection, org: OrgId, n: u64) -> Result<Option<u64>> {
    let b: Option<i64> = sqlx::query_scalar(
        "UPDATE balances SET balance = balance - $2 WHERE org = $1 AND balance >= $2 \
         RETURNING balance",
    )
    .bind(org.as_uuid())
    .bind(signed(n))
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_error)?;
    b.map(|b| u64::try_from(b).map_err(|e| sql::corrupt("balance", e)))
        .transpose()
}

/// Applies a request that is known not to be a repeat: checks and conditional writes.
async fn write_op(
    conn: &mut SqliteConnection,
    req: &LedgerRequest,
    fingerprint: &str,
) -> Result<LedgerReceipt> {
    let mut hold_after: Option<Hold> = None;
    let (delta, amount, job, balance): (i64, u64, Option<JobId>, u64) = match req.op {
        LedgerOp::Grant { amount } => {
            let b: Option<i64> = sqlx::query_scalar(
                "INSERT INTO balances (org, balance) VALUES ($1, $2) \
                 ON CONFLICT (org) DO UPDATE SET balance = balances.balance + excluded.balance \
                 WHERE balances.balance + excluded.balance <= $3 RETURNING balance",
            )
            .bind(req.org.as_uuid())
            .bind(amount.signed())
            .bind(signed(BALANCE_MAX))
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_error)?;
            let Some(b) = b else {
                return Err(Error::LimitExceeded {
                    what: "balance",
                    max: BALANCE_MAX,
                });
            };
            let b = u64::try_from(b).map_err(|e| sql::corrupt("balance", e))?;
            (amount.signed(), amount.get(), None, b)
        }
        LedgerOp::Debit { amount } | LedgerOp::Reserve { amount, .. } => {
            let Some(b) = take_balance(conn, req.org, amount.get()).await? else {
                return Err(Error::InsufficientCredits {
                    needed: amount.get(),
                    available: current_balance(conn, req.org).await?,
                });
            };
            let mut job = None;
            if let LedgerOp::Reserve { job: j, .. } = req.op {
                let hold = Hold {
                    id: HoldId::from_uuid(req.entry_id.as_uuid()),
                    org: req.org,
                    job: j,
                    amount,
                    captured: Credits::ZERO,
                    released: Credits::ZERO,
                    created_at: req.at,
                    closed_at: None,
                };
                sqlx::query(
                    "INSERT INTO holds (id, org, job_id, amount, captured, released, created_at) \
                     VALUES ($1, $2, $3, $4, 0, 0, $5)",
                )
                .bind(hold.id.as_uuid())
                .bind(req.org.as_uuid())
                .bind(j.map(|j| j.as_uuid()))
                .bind(amount.signed())
                .bind(req.at.unix_ms())
                .execute(&mut *conn)
                .await
                .map_err(map_error)?;
                hold_after = Some(hold);
                job = j;
            }
            (-amount.signed(), amount.get(), job, b)
        }
        LedgerOp::Capture { hold, amount } => {
            let mut h = find_hold(conn, req.org, hold)
                .await?
                .ok_or(Error::NotFound { resource: "hold" })?;
            h.check_take(amount.get())?;
            take_from_hold(conn, hold, amount.get(), 0, None).await?;
            h.captured = Credits::new(h.captured.get() + amount.get())?;
            let job = h.job;
            hold_after = Some(h);
            let b = add_balance(conn, req.org, 0).await?;
            (0, amount.get(), job, b)
        }
        LedgerOp::Release { hold, amount } => {
            let mut h = find_hold(conn, req.org, hold)
                .await?
                .ok_or(Error::NotFound { resource: "hold" })?;
            let take = amount.map_or(h.remaining(), Credits::get);
            h.check_take(take)?;
            let closed = amount.is_none().then_some(req.at);
            take_from_hold(conn, hold, 0, take, closed).await?;
            h.released = Credits::new(h.released.get() + take)?;
            h.closed_at = h.closed_at.or(closed);
            let job = h.job;
            hold_after = Some(h);
            let b = add_balance(conn, req.org, take).await?;
            (signed(take), take, job, b)
        }
    };
    let entry = LedgerEntry {
        seq: 0,
        id: req.entry_id,
        org: req.org,
        kind: req.op.kind(),
        delta,
        amount: Credits::new(amount)?,
        balance_after: Credits::new(balance)?,
        hold: hold_after.as_ref().map(|h| h.id),
        job,
        idempotency_key: req.idempotency_key.clone(),
        created_at: req.at,
    };
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_entries (id, org, kind, delta, amount, balance_after, hold_id, \
         job_id, idempotency_key, fingerprint, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq",
    )
    .bind(entry.id.as_uuid())
    .bind(entry.org.as_uuid())
    .bind(entry.kind.as_str())
    .bind(entry.delta)
    .bind(entry.amount.signed())
    .bind(entry.balance_after.signed())
    .bind(entry.hold.map(|h| h.as_uuid()))
    .bind(entry.job.map(|j| j.as_uuid()))
    .bind(entry.idempotency_key.as_str())
    .bind(fingerprint)
    .bind(entry.created_at.unix_ms())
    .fetch_one(&mut *conn)
    .await
    .map_err(map_error)?;
    let seq = u64::try_from(seq).map_err(|e| sql::corrupt("seq", e))?;
    Ok(LedgerReceipt {
        entry: LedgerEntry { seq, ..entry },
        hold: hold_after,
        replayed: false,
    })
}

/// Moves credits out of an open hold; the condition repeats the check so the write alone is
/// safe.
async fn take_from_hold(
    conn: &mut SqliteConnection,
    hold: HoldId,
    capture: u64,
    release: u64,
    closed_at: Option<Timestamp>,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE holds SET captured = captured + $2, released = released + $3, \
         closed_at = COALESCE($4, closed_at) \
         WHERE id = $1 AND closed_at IS NULL AND captured + released + $2 + $3 <= amount",
    )
    .bind(hold.as_uuid())
    .bind(signed(capture))
    .bind(signed(release))
    .bind(closed_at.map(Timestamp::unix_ms))
    .execute(&mut *conn)
    .await
    .map_err(map_error)?;
    if done.rows_affected() != 1 {
        return Err(Error::InvalidState(
            "the amount exceeds the credits remaining in the hold",
        ));
    }
    Ok(())
}

/// A repeat's answer: the first entry, and the hold as it is now.
async fn replay(conn: &mut SqliteConnection, entry: LedgerEntry) -> Result<LedgerReceipt> {
    let hold = match entry.hold {
        Some(h) => find_hold(conn, entry.org, h).await?,
        None => None,
    };
    Ok(LedgerReceipt {
        entry,
        hold,
        replayed: true,
    })
}

/// Applies one request inside the caller's write transaction.
async fn apply_in(conn: &mut SqliteConnection, req: &LedgerRequest) -> Result<LedgerReceipt> {
    let fingerprint = req.op.fingerprint();
    if let Some((entry, seen)) = find_entry(conn, req.org, &req.idempotency_key).await? {
        if seen != fingerprint {
            return Err(Error::IdempotencyConflict);
        }
        return replay(conn, entry).await;
    }
    write_op(conn, req, &fingerprint).await
}

// ---------------------------------------------------------------------------------------------
// Jobs.

async fn load_items(conn: &mut SqliteConnection, id: JobId) -> Result<Vec<crate::job::JobItem>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM job_items WHERE job_id = $1 ORDER BY idx"
    )))
    .bind(id.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(map_error)?;
    rows.iter().map(sql::item).collect()
}

/// A job for change: inside a write transaction SQLite already holds the database's write lock.
async fn lock_job(conn: &mut SqliteConnection, id: JobId) -> Result<Option<Job>> {
    load_job(conn, id).await
}

async fn load_job(conn: &mut SqliteConnection, id: JobId) -> Result<Option<Job>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_error)?;
    let Some(row) = row else { return Ok(None) };
    let items = load_items(conn, id).await?;
    sql::job(&row, items).map(Some)
}

/// The job `worker` holds the lease of.
async fn leased_job(conn: &mut SqliteConnection, id: JobId, worker: &WorkerId) -> Result<Job> {
    let job = load_job(conn, id)
        .await?
        .ok_or(Error::NotFound { resource: "job" })?;
    if !job.is_leased_by(worker) {
        return Err(Error::LeaseLost);
    }
    Ok(job)
}

/// Releases what is left of a job's hold and closes it (nothing for free jobs).
async fn close_hold(
    conn: &mut SqliteConnection,
    job: &Job,
    entry_id: EntryId,
    at: Timestamp,
) -> Result<()> {
    let Some(hold) = job.hold else { return Ok(()) };
    let open = find_hold(conn, job.org, hold)
        .await?
        .is_some_and(|h| h.closed_at.is_none());
    if open {
        apply_in(
            conn,
            &LedgerRequest {
                entry_id,
                org: job.org,
                op: LedgerOp::Release { hold, amount: None },
                idempotency_key: FinishItem::close_key(job.id),
                at,
            },
        )
        .await?;
    }
    Ok(())
}

async fn set_job_state(conn: &mut SqliteConnection, job: &Job) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET status = $2, lease_worker = $3, lease_expires_at = $4, finished_at = $5, \
         updated_at = $6, attempts = $7 WHERE id = $1",
    )
    .bind(job.id.as_uuid())
    .bind(job.status.as_str())
    .bind(job.lease.as_ref().map(|l| l.worker.as_str().to_owned()))
    .bind(job.lease.as_ref().map(|l| l.expires_at.unix_ms()))
    .bind(job.finished_at.map(Timestamp::unix_ms))
    .bind(job.updated_at.unix_ms())
    .bind(i64::from(job.attempts))
    .execute(&mut *conn)
    .await
    .map_err(map_error)?;
    Ok(())
}

async fn enqueue_replay(conn: &mut SqliteConnection, new: &NewJob, id: JobId) -> Result<Enqueued> {
    let job = load_job(conn, id)
        .await?
        .ok_or(Error::NotFound { resource: "job" })?;
    if !new.matches(&job) {
        return Err(Error::IdempotencyConflict);
    }
    let hold = match job.hold {
        Some(h) => find_hold(conn, job.org, h).await?,
        None => None,
    };
    let at_reserve: Option<i64> = match job.hold {
        Some(h) => sqlx::query_scalar(
            "SELECT balance_after FROM ledger_entries WHERE id = $1 AND kind = 'hold'",
        )
        .bind(h.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_error)?,
        None => None,
    };
    let balance = match at_reserve {
        Some(b) => u64::try_from(b).map_err(|e| sql::corrupt("balance_after", e))?,
        None => current_balance(conn, new.org).await?,
    };
    Ok(Enqueued {
        job,
        hold,
        balance: Credits::new(balance)?,
        replayed: true,
    })
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl OrgStore for SqliteStore {
    async fn upsert_user(&self, user: &User) -> Result<User> {
        let mut tx = self.write().await?;
        let existing = sqlx::query("SELECT id, email, created_at FROM users WHERE email = $1")
            .bind(user.email.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        if let Some(row) = existing {
            return sql::user(&row);
        }
        sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
            .bind(user.id.as_uuid())
            .bind(user.email.as_str())
            .bind(user.created_at.unix_ms())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        commit(tx).await?;
        Ok(user.clone())
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_error)?;
        row.as_ref().map(sql::user).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_error)?;
        row.as_ref().map(sql::user).transpose()
    }

    async fn create_org(
        &self,
        org: &Organization,
        owner: UserId,
        owned_max: u64,
        audit: &AuditEvent,
    ) -> Result<()> {
        sql::create_org_body!(self, org, owner, owned_max, audit)
    }

    async fn org(&self, id: OrgId) -> Result<Option<Organization>> {
        let row = sqlx::query("SELECT id, name, created_at FROM orgs WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_error)?;
        row.as_ref().map(sql::org).transpose()
    }

    async fn set_role(&self, change: &RoleChange, audit: &AuditEvent) -> Result<Member> {
        sql::set_role_body!(self, change, audit)
    }

    async fn remove_member(&self, removal: &Removal, audit: &AuditEvent) -> Result<Option<Member>> {
        sql::remove_member_body!(self, removal, audit)
    }

    async fn orgs_of_user(
        &self,
        user: UserId,
        after: Option<OrgId>,
        limit: PageLimit,
    ) -> Result<Page<(Organization, Role), OrgId>> {
        sql::orgs_of_user_body!(self, user, after, limit)
    }

    async fn members(
        &self,
        org: OrgId,
        after: Option<UserId>,
        limit: PageLimit,
    ) -> Result<Page<Member, UserId>> {
        sql::members_body!(self, org, after, limit)
    }

    async fn role(&self, org: OrgId, user: UserId) -> Result<Option<Role>> {
        let row = sqlx::query("SELECT role FROM memberships WHERE org = $1 AND user_id = $2")
            .bind(org.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_error)?;
        row.as_ref().map(sql::role).transpose()
    }

    async fn first_owner(&self, org: OrgId) -> Result<Option<UserId>> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM memberships WHERE org = $1 AND role = 'owner' \
             ORDER BY seq LIMIT 1",
        )
        .bind(org.as_uuid())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_error)?;
        Ok(id.map(UserId::from_uuid))
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, new: &NewKey, audit: &AuditEvent) -> Result<()> {
        sql::insert_key_body!(self, new, audit)
    }

    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<ApiKey>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = $1"
        )))
        .bind(digest.as_bytes().as_slice())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_error)?;
        row.as_ref().map(sql::key).transpose()
    }

    async fn key(&self, org: OrgId, id: KeyId) -> Result<Option<ApiKey>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND org = $2"
        )))
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_error)?;
        row.as_ref().map(sql::key).transpose()
    }

    async fn key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_error)?;
        row.as_ref().map(sql::key).transpose()
    }

    async fn list_keys(&self, org: OrgId, q: &KeyQuery) -> Result<Page<ApiKey, KeyId>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE org = $1 AND ($2 OR deleted_at IS NULL) \
             AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        )))
        .bind(org.as_uuid())
        .bind(q.include_deleted)
        .bind(q.after.map(|k| k.as_uuid()))
        .bind(i64::from(q.limit.get()) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(map_error)?;
        let items = rows.iter().map(sql::key).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, q.limit, |k| k.id))
    }

    async fn count_active_keys(&self, org: OrgId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sql::ACTIVE_KEYS_COUNT)
            .bind(org.as_uuid())
            .fetch_one(&self.reader)
            .await
            .map_err(map_error)?;
        u64::try_from(n).map_err(|e| sql::corrupt("count", e))
    }

    async fn delete_key(
        &self,
        org: OrgId,
        id: KeyId,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<ApiKey>> {
        let mut tx = self.write().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE api_keys SET deleted_at = $3 WHERE id = $1 AND org = $2 \
             AND deleted_at IS NULL RETURNING {KEY_COLUMNS}"
        )))
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .bind(at.unix_ms())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_error)?;
        if let Some(row) = row {
            let key = sql::key(&row)?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            return Ok(Some(key));
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND org = $2"
        )))
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_error)?;
        row.as_ref().map(sql::key).transpose()
    }

    async fn record_key_usage(&self, usage: &[KeyUsage]) -> Result<()> {
        if usage.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for chunk in usage.chunks(USAGE_ROWS_PER_UPDATE) {
            // One statement for the whole chunk: the latest use per key, never moving back.
            let mut text = String::from(
                "UPDATE api_keys SET last_used_at = MAX(COALESCE(api_keys.last_used_at, u.t), u.t) \
                 FROM (SELECT column1 AS id, column2 AS org, MAX(column3) AS t FROM (VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str("(?,?,?)");
            }
            text.push_str(
                ") GROUP BY column1, column2) AS u \
                 WHERE api_keys.id = u.id AND api_keys.org = u.org RETURNING api_keys.id",
            );
            let mut q = sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(text));
            for u in chunk {
                q = q
                    .bind(u.key.as_uuid())
                    .bind(u.org.as_uuid())
                    .bind(u.last_used_at.unix_ms());
            }
            let found: std::collections::HashSet<Uuid> = q
                .fetch_all(&mut *tx)
                .await
                .map_err(map_error)?
                .into_iter()
                .collect();
            let events: Vec<AuditEvent> = chunk
                .iter()
                .filter(|u| found.contains(&u.key.as_uuid()))
                .map(sql::usage_event)
                .collect();
            insert_audits(&mut tx, &events).await?;
        }
        commit(tx).await
    }
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn apply(
        &self,
        request: &LedgerRequest,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt> {
        let mut tx = self.write().await?;
        let receipt = apply_in(&mut tx, request).await?;
        if receipt.replayed {
            return Ok(receipt);
        }
        if let Some(event) = audit {
            insert_audit(&mut tx, event).await?;
        }
        commit(tx).await?;
        Ok(receipt)
    }

    async fn balance(&self, org: OrgId) -> Result<Credits> {
        let mut conn = self.reader.acquire().await.map_err(map_error)?;
        Credits::new(current_balance(&mut conn, org).await?)
    }

    async fn hold(&self, org: OrgId, id: HoldId) -> Result<Option<Hold>> {
        let mut conn = self.reader.acquire().await.map_err(map_error)?;
        find_hold(&mut conn, org, id).await
    }

    async fn stale_holds(&self, before: Timestamp, limit: PageLimit) -> Result<Vec<Hold>> {
        let rows = sqlx::query(AssertSqlSafe(sql::stale_holds_sql()))
            .bind(before.unix_ms())
            .bind(i64::from(limit.get()))
            .fetch_all(&self.reader)
            .await
            .map_err(map_error)?;
        rows.iter().map(sql::hold).collect()
    }

    async fn entries(
        &self,
        org: OrgId,
        after: Option<u64>,
        limit: PageLimit,
    ) -> Result<Page<LedgerEntry, u64>> {
        let after = i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX);
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE org = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        )))
        .bind(org.as_uuid())
        .bind(after)
        .bind(i64::from(limit.get()) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(map_error)?;
        let items = rows.iter().map(sql::entry).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |e| e.seq))
    }

    async fn held(&self, org: OrgId) -> Result<Credits> {
        let row = sqlx::query(sql::HELD_SQL)
            .bind(org.as_uuid())
            .fetch_one(&self.reader)
            .await
            .map_err(map_error)?;
        sql::Columns::credits(&row, "held")
    }

    async fn usage(&self, org: OrgId, range: &DayRange) -> Result<Vec<DailyUsage>> {
        let rows = sqlx::query(sql::USAGE_SQL)
            .bind(org.as_uuid())
            .bind(range.start().unix_ms())
            .bind(range.end().unix_ms())
            .fetch_all(&self.reader)
            .await
            .map_err(map_error)?;
        rows.iter().map(sql::daily_usage).collect()
    }
}

sql::sql_job_store!(SqliteStore);
sql::sql_audit_store!(SqliteStore);
sql::sql_generation_store!(SqliteStore);

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn begin_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        fingerprint: RequestFingerprint,
        attempt: AttemptId,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> Result<IdempotencyBegin> {
        let mut tx = self.write().await?;
        let started = sqlx::query(sql::REQUEST_INSERT)
            .bind(org.as_uuid())
            .bind(key.as_str())
            .bind(fingerprint.as_bytes().as_slice())
            .bind(attempt.as_uuid())
            .bind(now.unix_ms())
            .bind(lock_until.unix_ms())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        if started.rows_affected() == 1 {
            commit(tx).await?;
            return Ok(IdempotencyBegin::Started {
                attempt: Some(attempt),
            });
        }
        let taken = sqlx::query(sql::REQUEST_TAKE_OVER)
            .bind(org.as_uuid())
            .bind(key.as_str())
            .bind(fingerprint.as_bytes().as_slice())
            .bind(now.unix_ms())
            .bind(lock_until.unix_ms())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        if let Some(row) = taken {
            let started = sql::taken_over(&row)?;
            commit(tx).await?;
            return Ok(started);
        }
        let row = sqlx::query(sql::REQUEST_READ)
            .bind(org.as_uuid())
            .bind(key.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        sql::begin_outcome(&row, fingerprint)
    }

    async fn complete_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        response: &StoredResponse,
        _at: Timestamp,
    ) -> Result<()> {
        sql::complete_request_body!(self, org, key, response)
    }

    async fn renew_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        attempt: AttemptId,
        lock_until: Timestamp,
    ) -> Result<bool> {
        sql::renew_request_body!(self, org, key, attempt, lock_until)
    }

    async fn abandon_request(&self, org: OrgId, key: &IdempotencyKey, how: Abandon) -> Result<()> {
        sql::abandon_request_body!(self, org, key, how)
    }

    async fn purge_requests_before(&self, cutoff: Timestamp) -> Result<u64> {
        let mut total = 0;
        for _ in 0..PURGE_BATCHES_MAX {
            let mut tx = self.write().await?;
            let done = sqlx::query(
                "DELETE FROM idempotency_requests WHERE rowid IN \
                 (SELECT rowid FROM idempotency_requests WHERE created_at < $1 LIMIT $2)",
            )
            .bind(cutoff.unix_ms())
            .bind(PURGE_BATCH)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
            commit(tx).await?;
            total += done.rows_affected();
            if done.rows_affected() < PURGE_BATCH.unsigned_abs() {
                break;
            }
        }
        Ok(total)
    }
}
