//! The PostgreSQL store: for more than one machine, many replicas sharing one database.
//!
//! Design decision: **the database arbitrates, never the process.** Every credit change is one
//! conditional write on the organization's balance row (`UPDATE balances SET balance = balance -
//! $n WHERE org = $o AND balance >= $n RETURNING …`) committed together with its ledger entry;
//! debits, grants and reserves are a single statement (data-modifying CTEs), so a refused change
//! writes nothing and the hot path costs one round trip. Idempotency is the unique constraint
//! `(org, idempotency_key)`: a request is written first and, only when the write fails or is
//! refused, the earlier entry under the same key is looked up and replayed. Row locks order all
//! work on one organization's money: the balance row (debit, grant, reserve), or the hold row
//! then the balance row (capture, release), or the job row then the hold then the balance (job
//! reports), never the other way round, so transactions cannot deadlock each other. Workers
//! claim jobs with `FOR UPDATE SKIP LOCKED` and a lease. Key deletions are announced with
//! `NOTIFY` in the deleting transaction, so every replica's [`RevocationListener`] drops the key
//! from its verification cache as soon as the delete commits.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Postgres, Transaction};
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
use crate::service::Creapic;
use crate::store::connect::ConnectOptions;
use crate::store::group_commit::{self, BatchApply, GroupCommit};
use crate::store::sql::{
    self, AUDIT_COLUMNS, AuditParams, CHAIN_COLUMNS, Columns, ENTRY_COLUMNS, HEAD_COLUMNS,
    HOLD_COLUMNS, ITEM_COLUMNS, JOB_COLUMNS, KEY_COLUMNS, PURGE_BATCH, PURGE_BATCHES_MAX, signed,
};
use crate::store::{IdempotencyStore, KeyQuery, KeyStore, KeyUsage, LedgerStore, OrgStore, Store};

sql::impl_columns!(PgRow);

/// The embedded migrations (`creapic-core/migrations/postgres`). Released files never change.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel key deletions are announced on; the payload is the key id.
pub const REVOCATION_CHANNEL: &str = "creapic_key_revoked";
/// A pooled connection idle at least this long is pinged before use; others are used as they are.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

/// Most audit rows in one multi-row insert.
const AUDIT_ROWS_PER_INSERT: usize = 1000;
/// Most key usages in one `UPDATE … FROM unnest(…)`.
const USAGE_ROWS_PER_UPDATE: usize = 1000;
/// How long the revocation listener waits before reconnecting after an error.
const LISTENER_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A store in a PostgreSQL database (or one schema of it).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// What the pool connects with: the revocation listener opens its own connection with it.
    connect_options: PgConnectOptions,
    acquire_timeout: Duration,
    /// Debits waiting for their organization's balance row, applied in batches (group commit).
    debits: Arc<GroupCommit>,
}

/// Maps a sqlx error to the core's store error: the one place PostgreSQL failures are
/// classified. Messages name the failure, never bound values (and stores only see digests).
pub fn map_error(e: sqlx::Error) -> Error {
    use sqlx::Error as E;
    let kind = match &e {
        E::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => StoreErrorKind::Conflict,
            _ => {
                let code = db.code().unwrap_or_default();
                // 08: connection exception; 53: insufficient resources; 57: operator
                // intervention (57014 statement timeout, 57P01 shutdown); 55P03: lock not
                // available; 40001/40P01: serialization failure and deadlock (retryable).
                if code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code == "55P03"
                    || code == "40001"
                    || code == "40P01"
                {
                    StoreErrorKind::Unavailable
                } else if code == "XX001" || code == "XX002" {
                    StoreErrorKind::Corrupt
                } else {
                    StoreErrorKind::Other
                }
            }
        },
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            StoreErrorKind::Unavailable
        }
        E::ColumnDecode { .. }
        | E::Decode(_)
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. } => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Other,
    };
    Error::store(kind, format!("postgres: {e}"))
}

fn conflict(what: &str) -> Error {
    Error::store(StoreErrorKind::Conflict, format!("{what} already exists"))
}

/// Whether `e` means "this write did not happen, and a repeat may explain why": a refusal or a
/// unique violation. Such a request is answered from the earlier entry under its key, if any.
fn may_be_repeat(e: &Error) -> bool {
    matches!(
        e,
        Error::InsufficientCredits { .. }
            | Error::LimitExceeded { .. }
            | Error::NotFound { .. }
            | Error::InvalidState(_)
            | Error::Store {
                kind: StoreErrorKind::Conflict,
                ..
            }
    )
}

/// A schema name safe to put in SQL text: a plain lowercase identifier.
fn check_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "schema",
            "must be 1-63 lowercase letters, digits or underscores",
        ))
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), creating `options.schema` if given,
    /// and applies the migrations unless `options.migrate` is off. An unreachable server is a
    /// `Store { kind: Unavailable }` error after at most `options.acquire_timeout`.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut connect_options = PgConnectOptions::from_str(url).map_err(map_error)?;
        if let Some(timeout) = options.statement_timeout {
            connect_options = connect_options
                .options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
        }
        if let Some(schema) = &options.schema {
            check_schema(schema)?;
            let create = async {
                let mut conn = PgConnection::connect_with(&connect_options).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            };
            match tokio::time::timeout(options.acquire_timeout, create).await {
                Ok(r) => r.map_err(map_error)?,
                Err(_) => return Err(map_error(sqlx::Error::PoolTimedOut)),
            }
            connect_options = connect_options.options([("search_path", schema.as_str())]);
        }
        // sqlx pings every connection it hands out by default: one extra round trip per
        // statement, a third of a lone debit's time. A connection that died is found by the
        // statement itself (an `Unavailable` error; sqlx drops it), so only one idle long
        // enough for a firewall or the server to have dropped it is pinged first.
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect_options.clone())
            .await
            .map_err(map_error)?;
        if options.migrate {
            MIGRATOR.run(&pool).await.map_err(|e| {
                Error::store(StoreErrorKind::Other, format!("postgres migrate: {e}"))
            })?;
        }
        Ok(PgStore {
            pool,
            connect_options,
            acquire_timeout: options.acquire_timeout,
            debits: Arc::new(GroupCommit::default()),
        })
    }

    /// The connection pool, for hosts that share it (health checks, their own tables).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// One attempt at [`JobStore::enqueue`], in one transaction.
    /// The connections reads use.
    fn read_pool(&self) -> &PgPool {
        &self.pool
    }

    /// Enqueues `new`; a concurrent enqueue under the same key answers as a repeat.
    async fn enqueue_job(&self, new: &NewJob) -> Result<Enqueued> {
        match self.enqueue_once(new).await {
            // A concurrent enqueue under the same key won the unique constraint: this one
            // wrote nothing and answers as a repeat.
            Err(Error::Store {
                kind: StoreErrorKind::Conflict,
                message,
            }) => {
                let mut conn = self.pool.acquire().await.map_err(map_error)?;
                let existing: Option<Uuid> = sqlx::query_scalar(
                    "SELECT id FROM jobs WHERE org = $1 AND idempotency_key = $2",
                )
                .bind(new.org.as_uuid())
                .bind(new.idempotency_key.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_error)?;
                match existing {
                    Some(id) => enqueue_replay(&mut conn, new, JobId::from_uuid(id)).await,
                    None => Err(Error::Store {
                        kind: StoreErrorKind::Conflict,
                        message,
                    }),
                }
            }
            other => other,
        }
    }

    async fn enqueue_once(&self, new: &NewJob) -> Result<Enqueued> {
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
        let (job_exists, org_exists): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1), \
             EXISTS (SELECT 1 FROM orgs WHERE id = $2)",
        )
        .bind(new.id.as_uuid())
        .bind(new.org.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(map_error)?;
        if job_exists {
            return Err(conflict("job"));
        }
        if !org_exists {
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
        sqlx::query(
            "INSERT INTO job_items (job_id, idx, input, status) \
             SELECT $1, idx, input, 'pending' FROM unnest($2::bigint[], $3::text[]) AS i(idx, input)",
        )
        .bind(job.id.as_uuid())
        .bind(job.items.iter().map(|i| i64::from(i.index)).collect::<Vec<_>>())
        .bind(job.items.iter().map(|i| i.input.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        commit(tx).await?;
        Ok(Enqueued {
            job,
            hold,
            balance,
            replayed: false,
        })
    }

    async fn write(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_error)
    }

    /// Starts listening for key deletions made by any process on this database and calls
    /// `on_revoke` for each: [`Revocation::Key`] for a deleted key, [`Revocation::All`] when the
    /// listening connection was lost and notifications may have been missed. Returns once the
    /// listener is subscribed; it runs until the returned guard is shut down or dropped.
    pub async fn spawn_revocation_listener<F>(&self, on_revoke: F) -> Result<RevocationListener>
    where
        F: Fn(Revocation) + Send + Sync + 'static,
    {
        // A pool of one, used by the listener only to reconnect: it never takes a connection
        // from the store's pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(self.connect_options.clone());
        let mut listener = PgListener::connect_with(&pool).await.map_err(map_error)?;
        listener.ignore_pool_close_event(true);
        listener
            .listen(REVOCATION_CHANNEL)
            .await
            .map_err(map_error)?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    next = listener.try_recv() => match next {
                        Ok(Some(n)) => match KeyId::parse(n.payload()) {
                            Ok(key) => on_revoke(Revocation::Key(key)),
                            Err(_) => on_revoke(Revocation::All),
                        },
                        // The connection dropped; the next call reconnects and listens again.
                        // Whatever was announced meanwhile is lost: forget everything.
                        Ok(None) => on_revoke(Revocation::All),
                        Err(_) => {
                            on_revoke(Revocation::All);
                            tokio::time::sleep(LISTENER_RETRY_DELAY).await;
                        }
                    },
                }
            }
        });
        Ok(RevocationListener {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// [`PgStore::spawn_revocation_listener`] wired to a service's verification cache:
    /// deletions anywhere call `forget_key`, a lost connection calls `forget_all`.
    pub async fn spawn_revocation_listener_for<S: Store + ?Sized>(
        &self,
        core: Arc<Creapic<S>>,
    ) -> Result<RevocationListener> {
        self.spawn_revocation_listener(move |r| match r {
            Revocation::Key(key) => core.authenticator().forget_key(key),
            Revocation::All => core.authenticator().forget_all(),
        })
        .await
    }
}

/// What a revocation listener reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// This key was deleted: refuse it from now on.
    Key(KeyId),
    /// Deletions may have been missed: drop every cached verification.
    All,
}

/// The running revocation listener. Dropping it (or calling [`RevocationListener::shutdown`])
/// stops the background task and closes its connection.
#[derive(Debug)]
pub struct RevocationListener {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RevocationListener {
    /// Stops the listener and waits for its task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RevocationListener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn commit(tx: Transaction<'static, Postgres>) -> Result<()> {
    tx.commit().await.map_err(map_error)
}

async fn insert_audit(conn: &mut PgConnection, event: &AuditEvent) -> Result<()> {
    insert_audits(conn, std::slice::from_ref(event)).await
}

/// What keeps two runners from claiming one job: the row lock, skipping rows another holds.
/// Locks a user's row for the rest of the transaction (`create_org`).
const USER_LOCK: &str = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE";
/// Locks an organization's row for the rest of the transaction (`insert_key`).
const ORG_LOCK: &str = "SELECT 1 FROM orgs WHERE id = $1 FOR UPDATE";
const CLAIM_LOCK: &str = "FOR UPDATE SKIP LOCKED";

/// The audit chain's head; with `lock`, locked (`FOR UPDATE`) until the transaction ends.
async fn chain_head(conn: &mut PgConnection, lock: bool) -> Result<ChainHead> {
    let lock = if lock { "FOR UPDATE" } else { "" };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HEAD_COLUMNS} FROM audit_chain WHERE id = 1 {lock}"
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(map_error)?;
    sql::chain_head(&row)
}

/// Appends events with one multi-row insert (`unnest` of one array per column) per
/// [`AUDIT_ROWS_PER_INSERT`] events, in order, linked into the hash chain. The chain head is
/// locked (`FOR UPDATE`) and advanced in the caller's transaction, which serializes every append:
/// `seq` is assigned from the head, so `seq` order is commit order, without gaps. Every caller
/// appends as the last write of its transaction, so the head lock is always taken last and held
/// only until commit (no lock is ever awaited while holding it: no deadlock).
async fn insert_audits(conn: &mut PgConnection, events: &[AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut head = chain_head(&mut *conn, true).await?;
    let links = audit_chain::link(&mut head, events);
    for (chunk, links) in events
        .chunks(AUDIT_ROWS_PER_INSERT)
        .zip(links.chunks(AUDIT_ROWS_PER_INSERT))
    {
        let rows: Vec<AuditParams> = chunk.iter().map(AuditParams::of).collect();
        let seqs = links
            .iter()
            .map(|l| sql::seq_param(l.seq))
            .collect::<Result<Vec<_>>>()?;
        sqlx::query(
            "INSERT INTO audit_events (seq, id, org, at, action, actor, ip, user_agent, key_id, \
             key_prefix, detail, prev_hash, hash) \
             SELECT seq, id, org, at, action, actor, ip, user_agent, key_id, key_prefix, detail, \
                 prev_hash, hash \
             FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[], \
                 $12::bytea[], $13::bytea[]) \
             AS e(seq, id, org, at, action, actor, ip, user_agent, key_id, key_prefix, detail, \
                 prev_hash, hash) \
             ORDER BY seq",
        )
        .bind(seqs)
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.org).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.action).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.actor.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ip.clone()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.user_agent.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.key_id).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.key_prefix.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.detail.clone()).collect::<Vec<_>>())
        .bind(
            links
                .iter()
                .map(|l| l.prev_hash.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(
            links
                .iter()
                .map(|l| l.hash.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await
        .map_err(map_error)?;
    }
    sqlx::query("UPDATE audit_chain SET last_seq = $1, last_hash = $2 WHERE id = 1")
        .bind(sql::seq_param(head.last_seq)?)
        .bind(head.last_hash.as_bytes().as_slice())
        .execute(&mut *conn)
        .await
        .map_err(map_error)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Ledger: every function here runs inside the caller's write transaction.

async fn find_entry(
    conn: &mut PgConnection,
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

async fn find_hold(conn: &mut PgConnection, org: OrgId, id: HoldId) -> Result<Option<Hold>> {
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

/// A hold, row-locked until the transaction ends: capture and release serialize on it.
async fn lock_hold(conn: &mut PgConnection, org: OrgId, id: HoldId) -> Result<Option<Hold>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1 AND org = $2 FOR UPDATE"
    )))
    .bind(id.as_uuid())
    .bind(org.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_error)?;
    row.as_ref().map(sql::hold).transpose()
}

async fn current_balance(conn: &mut PgConnection, org: OrgId) -> Result<u64> {
    let b: Option<i64> = sqlx::query_scalar("SELECT balance FROM balances WHERE org = $1")
        .bind(org.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_error)?;
    u64::try_from(b.unwrap_or(0)).map_err(|e| sql::corrupt("balance", e))
}

/// Adds `n` (possibly 0) to the balance and returns the new balance.
async fn add_balance(conn: &mut PgConnection, org: OrgId, n: u64) -> Result<u64> {
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

/// Applies a request that is known not to be a repeat: checks and conditional writes.
async fn write_op(
    conn: &mut PgConnection,
    req: &LedgerRequest,
    fingerprint: &str,
) -> Result<LedgerReceipt> {
    let hold_after: Option<Hold>;
    let (delta, amount, job, balance): (i64, u64, Option<JobId>, u64) = match req.op {
        LedgerOp::Grant { .. } | LedgerOp::Debit { .. } | LedgerOp::Reserve { .. } => {
            return one_statement(conn, req, fingerprint).await;
        }
        LedgerOp::Capture { hold, amount } => {
            let mut h = lock_hold(conn, req.org, hold)
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
            let mut h = lock_hold(conn, req.org, hold)
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

/// Grant, debit and reserve as one statement: the conditional balance write, the hold (for a
/// reserve) and the ledger entry are data-modifying CTEs of one `INSERT`, atomic on their own,
/// in or out of a transaction. Refused (balance short, or over the limit) means no row: nothing
/// was written.
async fn one_statement(
    conn: &mut PgConnection,
    req: &LedgerRequest,
    fingerprint: &str,
) -> Result<LedgerReceipt> {
    const INSERT_ENTRY: &str = "INSERT INTO ledger_entries (id, org, kind, delta, amount, \
         balance_after, hold_id, job_id, idempotency_key, fingerprint, created_at)";
    let (text, amount, job) = match req.op {
        LedgerOp::Grant { amount } => (
            format!(
                "WITH b AS (INSERT INTO balances (org, balance) VALUES ($2, $3) \
                 ON CONFLICT (org) DO UPDATE SET balance = balances.balance + EXCLUDED.balance \
                 WHERE balances.balance + EXCLUDED.balance <= $8 RETURNING balance) \
                 {INSERT_ENTRY} SELECT $1, $2, 'grant', $3, $3, b.balance, NULL::uuid, $7, $4, \
                 $5, $6 FROM b RETURNING seq, balance_after"
            ),
            amount,
            None,
        ),
        LedgerOp::Debit { amount } => (
            format!(
                "WITH b AS (UPDATE balances SET balance = balance - $3 \
                 WHERE org = $2 AND balance >= $3 RETURNING balance) \
                 {INSERT_ENTRY} SELECT $1, $2, 'debit', -$3, $3, b.balance, NULL::uuid, $7, $4, \
                 $5, $6 FROM b RETURNING seq, balance_after"
            ),
            amount,
            None,
        ),
        LedgerOp::Reserve { amount, job } => (
            format!(
                "WITH b AS (UPDATE balances SET balance = balance - $3 \
                 WHERE org = $2 AND balance >= $3 RETURNING balance), \
                 h AS (INSERT INTO holds (id, org, job_id, amount, captured, released, \
                 created_at) SELECT $1, $2, $7, $3, 0, 0, $6 FROM b RETURNING id) \
                 {INSERT_ENTRY} SELECT $1, $2, 'hold', -$3, $3, b.balance, h.id, $7, $4, $5, $6 \
                 FROM b, h RETURNING seq, balance_after"
            ),
            amount,
            job,
        ),
        LedgerOp::Capture { .. } | LedgerOp::Release { .. } => {
            return Err(Error::InvalidState("not a single-statement operation"));
        }
    };
    let mut query = sqlx::query_as::<_, (i64, i64)>(AssertSqlSafe(text))
        .bind(req.entry_id.as_uuid())
        .bind(req.org.as_uuid())
        .bind(amount.signed())
        .bind(req.idempotency_key.as_str())
        .bind(fingerprint)
        .bind(req.at.unix_ms())
        .bind(job.map(|j| j.as_uuid()));
    if let LedgerOp::Grant { .. } = req.op {
        query = query.bind(signed(BALANCE_MAX));
    }
    let row = query.fetch_optional(&mut *conn).await.map_err(map_error)?;
    let Some((seq, balance)) = row else {
        return Err(match req.op {
            LedgerOp::Grant { .. } => Error::LimitExceeded {
                what: "balance",
                max: BALANCE_MAX,
            },
            _ => Error::InsufficientCredits {
                needed: amount.get(),
                available: current_balance(conn, req.org).await?,
            },
        });
    };
    let hold = match req.op {
        LedgerOp::Reserve { amount, job } => Some(Hold {
            id: HoldId::from_uuid(req.entry_id.as_uuid()),
            org: req.org,
            job,
            amount,
            captured: Credits::ZERO,
            released: Credits::ZERO,
            created_at: req.at,
            closed_at: None,
        }),
        _ => None,
    };
    let delta = match req.op {
        LedgerOp::Grant { .. } => amount.signed(),
        _ => -amount.signed(),
    };
    let entry = LedgerEntry {
        seq: u64::try_from(seq).map_err(|e| sql::corrupt("seq", e))?,
        id: req.entry_id,
        org: req.org,
        kind: req.op.kind(),
        delta,
        amount,
        balance_after: Credits::new(
            u64::try_from(balance).map_err(|e| sql::corrupt("balance_after", e))?,
        )?,
        hold: hold.as_ref().map(|h| h.id),
        job,
        idempotency_key: req.idempotency_key.clone(),
        created_at: req.at,
    };
    Ok(LedgerReceipt {
        entry,
        hold,
        replayed: false,
    })
}

/// Moves credits out of an open hold; the condition repeats the check so the write alone is
/// safe.
async fn take_from_hold(
    conn: &mut PgConnection,
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
async fn replay(conn: &mut PgConnection, entry: LedgerEntry) -> Result<LedgerReceipt> {
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
async fn apply_in(conn: &mut PgConnection, req: &LedgerRequest) -> Result<LedgerReceipt> {
    let fingerprint = req.op.fingerprint();
    if let Some((entry, seen)) = find_entry(conn, req.org, &req.idempotency_key).await? {
        if seen != fingerprint {
            return Err(Error::IdempotencyConflict);
        }
        return replay(conn, entry).await;
    }
    write_op(conn, req, &fingerprint).await
}

/// One request applied on its own: write first; when the write is refused or conflicts, the
/// earlier entry under the same key (if any) explains it and is replayed.
async fn apply_alone(
    pool: &PgPool,
    request: &LedgerRequest,
    audit: Option<&AuditEvent>,
) -> Result<LedgerReceipt> {
    let fingerprint = request.op.fingerprint();
    // Write first. Grant, debit and reserve without an audit event are one statement;
    // everything else is a short transaction.
    let single = audit.is_none()
        && matches!(
            request.op,
            LedgerOp::Grant { .. } | LedgerOp::Debit { .. } | LedgerOp::Reserve { .. }
        );
    let written = if single {
        let mut conn = pool.acquire().await.map_err(map_error)?;
        one_statement(&mut conn, request, &fingerprint).await
    } else {
        async {
            let mut tx = pool.begin().await.map_err(map_error)?;
            let receipt = write_op(&mut tx, request, &fingerprint).await?;
            if let Some(event) = audit {
                insert_audit(&mut tx, event).await?;
            }
            commit(tx).await?;
            Ok(receipt)
        }
        .await
    };
    match written {
        Err(e) if may_be_repeat(&e) => {
            // Nothing was written. If the key was used before, that explains it: answer
            // with the first result (or a conflict when the parameters differ).
            let mut conn = pool.acquire().await.map_err(map_error)?;
            match find_entry(&mut conn, request.org, &request.idempotency_key).await? {
                Some((entry, seen)) if seen == fingerprint => replay(&mut conn, entry).await,
                Some(_) => Err(Error::IdempotencyConflict),
                None => Err(e),
            }
        }
        other => other,
    }
}

/// The debit side of the store as [`GroupCommit`] sees it.
#[derive(Clone)]
struct PgLedger {
    pool: PgPool,
}

/// How often a batch re-reads the balance after another writer changed it under the batch's
/// feet, before falling back to applying its requests one by one.
const BATCH_ATTEMPTS: usize = 3;

/// What a batch decided for one request, before writing.
enum Plan {
    /// Debit it; the balance after it.
    Write { after: u64 },
    /// Refused: the balance it found.
    Refuse { available: u64 },
    /// The same idempotency key as the accepted request at this index of the batch.
    Repeat(usize),
}

impl BatchApply for PgLedger {
    async fn apply_one(&self, request: LedgerRequest) -> Result<LedgerReceipt> {
        apply_alone(&self.pool, &request, None).await
    }

    async fn apply_batch(
        &self,
        org: OrgId,
        requests: Vec<LedgerRequest>,
        balance: &mut Option<i64>,
    ) -> Vec<Result<LedgerReceipt>> {
        match debit_batch(&self.pool, org, &requests, balance).await {
            Ok(Some(answers)) => answers,
            // Another writer kept moving the balance, or a key was already used: apply each
            // request on its own, which handles every case.
            Ok(None) => {
                *balance = None;
                let mut answers = Vec::with_capacity(requests.len());
                for request in &requests {
                    answers.push(apply_alone(&self.pool, request, None).await);
                }
                answers
            }
            Err(e) => {
                *balance = None;
                requests
                    .iter()
                    .map(|_| Err(group_commit::replicate(&e)))
                    .collect()
            }
        }
    }
}

/// Debits of one organization as one statement: the balance moves once, from the value the
/// batch planned with (compare-and-set) to that minus everything accepted, and every accepted
/// request gets its own entry with its own running `balance_after`. Each request is still all or
/// nothing, in arrival order: a request that does not fit the running balance is refused and the
/// ones after it are tried against the same running balance. `Ok(None)`: the batch could not be
/// written as a whole (the balance kept changing, or an idempotency key was already used) and
/// nothing was written.
async fn debit_batch(
    pool: &PgPool,
    org: OrgId,
    requests: &[LedgerRequest],
    balance: &mut Option<i64>,
) -> Result<Option<Vec<Result<LedgerReceipt>>>> {
    let fingerprints: Vec<String> = requests.iter().map(|r| r.op.fingerprint()).collect();
    let mut conn = pool.acquire().await.map_err(map_error)?;
    for _ in 0..BATCH_ATTEMPTS {
        let before = match *balance {
            Some(b) => u64::try_from(b).map_err(|e| sql::corrupt("balance", e))?,
            None => current_balance(&mut conn, org).await?,
        };
        let mut running = before;
        let mut plan = Vec::with_capacity(requests.len());
        let mut accepted: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            let LedgerOp::Debit { amount } = r.op else {
                return Err(Error::InvalidState("a debit batch holds only debits"));
            };
            if let Some(&first) = accepted.get(r.idempotency_key.as_str()) {
                plan.push(Plan::Repeat(first));
            } else if amount.get() <= running {
                running -= amount.get();
                plan.push(Plan::Write { after: running });
                accepted.insert(r.idempotency_key.as_str(), i);
            } else {
                plan.push(Plan::Refuse { available: running });
            }
        }
        let writes: Vec<usize> = (0..requests.len())
            .filter(|&i| matches!(plan[i], Plan::Write { .. }))
            .collect();
        let mut seqs = std::collections::HashMap::new();
        if !writes.is_empty() {
            let after_of = |i: &usize| match plan[*i] {
                Plan::Write { after } => signed(after),
                _ => 0,
            };
            let written = sqlx::query_as::<_, (Uuid, i64)>(
                "WITH b AS (UPDATE balances SET balance = $3 WHERE org = $1 AND balance = $2 \
                 RETURNING balance) \
                 INSERT INTO ledger_entries (id, org, kind, delta, amount, balance_after, \
                 hold_id, job_id, idempotency_key, fingerprint, created_at) \
                 SELECT r.id, $1, 'debit', -r.amount, r.amount, r.after, NULL::uuid, NULL::uuid, \
                 r.key, r.fp, r.at FROM b, unnest($4::uuid[], $5::bigint[], $6::bigint[], \
                 $7::text[], $8::text[], $9::bigint[]) WITH ORDINALITY \
                 AS r(id, amount, after, key, fp, at, ord) ORDER BY r.ord RETURNING id, seq",
            )
            .bind(org.as_uuid())
            .bind(signed(before))
            .bind(signed(running))
            .bind(
                writes
                    .iter()
                    .map(|&i| requests[i].entry_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(
                writes
                    .iter()
                    .map(|&i| match requests[i].op {
                        LedgerOp::Debit { amount } => amount.signed(),
                        _ => 0,
                    })
                    .collect::<Vec<_>>(),
            )
            .bind(writes.iter().map(after_of).collect::<Vec<_>>())
            .bind(
                writes
                    .iter()
                    .map(|&i| requests[i].idempotency_key.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                writes
                    .iter()
                    .map(|&i| fingerprints[i].as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                writes
                    .iter()
                    .map(|&i| requests[i].at.unix_ms())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *conn)
            .await;
            match written {
                Ok(rows) if rows.len() == writes.len() => seqs.extend(rows),
                Ok(_) => {
                    // The balance was not what the plan assumed: read it and plan again.
                    *balance = None;
                    continue;
                }
                Err(e) => {
                    let e = map_error(e);
                    return match e {
                        Error::Store {
                            kind: StoreErrorKind::Conflict,
                            ..
                        } => Ok(None),
                        e => Err(e),
                    };
                }
            }
        }
        *balance = Some(signed(running));
        // Refused requests may be repeats of earlier successes: one lookup for all of them.
        let refused: Vec<&str> = (0..requests.len())
            .filter(|&i| matches!(plan[i], Plan::Refuse { .. }))
            .map(|i| requests[i].idempotency_key.as_str())
            .collect();
        let mut earlier = std::collections::HashMap::new();
        if !refused.is_empty() {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {ENTRY_COLUMNS}, fingerprint FROM ledger_entries \
                 WHERE org = $1 AND idempotency_key = ANY($2)"
            )))
            .bind(org.as_uuid())
            .bind(&refused)
            .fetch_all(&mut *conn)
            .await
            .map_err(map_error)?;
            for row in &rows {
                let entry = sql::entry(row)?;
                earlier.insert(
                    entry.idempotency_key.clone(),
                    (entry, row.text("fingerprint")?),
                );
            }
        }
        let mut answers: Vec<Result<LedgerReceipt>> = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            let answer = match plan[i] {
                Plan::Write { after } => {
                    let seq = seqs
                        .get(&r.entry_id.as_uuid())
                        .copied()
                        .ok_or_else(|| sql::corrupt("seq", "missing from the batch insert"))?;
                    Ok(LedgerReceipt {
                        entry: batch_entry(r, seq, after)?,
                        hold: None,
                        replayed: false,
                    })
                }
                Plan::Repeat(first) => match &answers[first] {
                    Ok(receipt) if fingerprints[first] == fingerprints[i] => Ok(LedgerReceipt {
                        replayed: true,
                        ..receipt.clone()
                    }),
                    _ => Err(Error::IdempotencyConflict),
                },
                Plan::Refuse { available } => match earlier.remove(&r.idempotency_key) {
                    Some((entry, seen)) if seen == fingerprints[i] => {
                        replay(&mut conn, entry).await
                    }
                    Some(_) => Err(Error::IdempotencyConflict),
                    None => Err(Error::InsufficientCredits {
                        needed: match r.op {
                            LedgerOp::Debit { amount } => amount.get(),
                            _ => 0,
                        },
                        available,
                    }),
                },
            };
            answers.push(answer);
        }
        return Ok(Some(answers));
    }
    Ok(None)
}

/// The entry a batch wrote for `r`.
fn batch_entry(r: &LedgerRequest, seq: i64, after: u64) -> Result<LedgerEntry> {
    let amount = match r.op {
        LedgerOp::Debit { amount } => amount,
        _ => return Err(Error::InvalidState("a debit batch holds only debits")),
    };
    Ok(LedgerEntry {
        seq: u64::try_from(seq).map_err(|e| sql::corrupt("seq", e))?,
        id: r.entry_id,
        org: r.org,
        kind: r.op.kind(),
        delta: -amount.signed(),
        amount,
        balance_after: Credits::new(after)?,
        hold: None,
        job: None,
        idempotency_key: r.idempotency_key.clone(),
        created_at: r.at,
    })
}

// ---------------------------------------------------------------------------------------------
// Jobs.

async fn load_items(conn: &mut PgConnection, id: JobId) -> Result<Vec<crate::job::JobItem>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM job_items WHERE job_id = $1 ORDER BY idx"
    )))
    .bind(id.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(map_error)?;
    rows.iter().map(sql::item).collect()
}

async fn load_job(conn: &mut PgConnection, id: JobId) -> Result<Option<Job>> {
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

/// Row-locks a job until the transaction ends: every change to a job and its items, and the
/// ledger entries they write, serialize on this lock.
async fn lock_job(conn: &mut PgConnection, id: JobId) -> Result<Option<Job>> {
    let locked: Option<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_error)?;
    match locked {
        Some(_) => load_job(conn, id).await,
        None => Ok(None),
    }
}

/// The job `worker` holds the lease of, row-locked.
async fn leased_job(conn: &mut PgConnection, id: JobId, worker: &WorkerId) -> Result<Job> {
    let job = lock_job(conn, id)
        .await?
        .ok_or(Error::NotFound { resource: "job" })?;
    if !job.is_leased_by(worker) {
        return Err(Error::LeaseLost);
    }
    Ok(job)
}

/// Releases what is left of a job's hold and closes it (nothing for free jobs).
async fn close_hold(
    conn: &mut PgConnection,
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

async fn set_job_state(conn: &mut PgConnection, job: &Job) -> Result<()> {
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

async fn enqueue_replay(conn: &mut PgConnection, new: &NewJob, id: JobId) -> Result<Enqueued> {
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
impl OrgStore for PgStore {
    async fn upsert_user(&self, user: &User) -> Result<User> {
        // Insert-or-nothing, then read: two concurrent upserts of one e-mail both get the row
        // that won. A duplicate id (another e-mail) is a unique violation: Conflict.
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(user.id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.created_at.unix_ms())
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        if inserted.rows_affected() == 1 {
            return Ok(user.clone());
        }
        self.user_by_email(&user.email)
            .await?
            .ok_or_else(|| Error::store(StoreErrorKind::Other, "user vanished during upsert"))
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(sql::user).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
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
            .fetch_optional(&self.pool)
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
            .fetch_optional(&self.pool)
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
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(id.map(UserId::from_uuid))
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn insert_key(&self, new: &NewKey, audit: &AuditEvent) -> Result<()> {
        sql::insert_key_body!(self, new, audit)
    }

    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<ApiKey>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = $1"
        )))
        .bind(digest.as_bytes().as_slice())
        .fetch_optional(&self.pool)
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
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(sql::key).transpose()
    }

    async fn key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
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
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        let items = rows.iter().map(sql::key).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, q.limit, |k| k.id))
    }

    async fn count_active_keys(&self, org: OrgId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sql::ACTIVE_KEYS_COUNT)
            .bind(org.as_uuid())
            .fetch_one(&self.pool)
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
            // Delivered to every listener when (and only if) the delete commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(REVOCATION_CHANNEL)
                .bind(key.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
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
        // Every key first, then every event: the chain head is locked last (see insert_audits).
        let mut found: HashSet<(Uuid, Uuid)> = HashSet::with_capacity(usage.len());
        for chunk in usage.chunks(USAGE_ROWS_PER_UPDATE) {
            // One statement per chunk: the latest use per key moves last_used_at forward (never
            // back); the keys that exist come back for their key.used events.
            let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
                "UPDATE api_keys k \
                 SET last_used_at = GREATEST(COALESCE(k.last_used_at, m.t), m.t) \
                 FROM (SELECT key_id, org, MAX(t) AS t \
                     FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS u(key_id, org, t) \
                     GROUP BY key_id, org) m \
                 WHERE k.id = m.key_id AND k.org = m.org RETURNING k.id, k.org",
            )
            .bind(chunk.iter().map(|u| u.key.as_uuid()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|u| u.org.as_uuid()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|u| u.last_used_at.unix_ms())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(map_error)?;
            found.extend(rows);
        }
        let events: Vec<AuditEvent> = usage
            .iter()
            .filter(|u| found.contains(&(u.key.as_uuid(), u.org.as_uuid())))
            .map(sql::usage_event)
            .collect();
        insert_audits(&mut tx, &events).await?;
        commit(tx).await
    }
}

#[async_trait]
impl LedgerStore for PgStore {
    async fn apply(
        &self,
        request: &LedgerRequest,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt> {
        // A debit without an audit event is the hot path (every metered call): concurrent debits
        // of one organization are group-committed. Everything else is applied on its own.
        if audit.is_none() && matches!(request.op, LedgerOp::Debit { .. }) {
            let ledger = PgLedger {
                pool: self.pool.clone(),
            };
            return self.debits.submit(&ledger, request.clone()).await;
        }
        apply_alone(&self.pool, request, audit).await
    }

    async fn balance(&self, org: OrgId) -> Result<Credits> {
        let mut conn = self.pool.acquire().await.map_err(map_error)?;
        Credits::new(current_balance(&mut conn, org).await?)
    }

    async fn hold(&self, org: OrgId, id: HoldId) -> Result<Option<Hold>> {
        let mut conn = self.pool.acquire().await.map_err(map_error)?;
        find_hold(&mut conn, org, id).await
    }

    async fn stale_holds(&self, before: Timestamp, limit: PageLimit) -> Result<Vec<Hold>> {
        let rows = sqlx::query(AssertSqlSafe(sql::stale_holds_sql()))
            .bind(before.unix_ms())
            .bind(i64::from(limit.get()))
            .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        let items = rows.iter().map(sql::entry).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |e| e.seq))
    }

    async fn held(&self, org: OrgId) -> Result<Credits> {
        let row = sqlx::query(sql::HELD_SQL)
            .bind(org.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        sql::Columns::credits(&row, "held")
    }

    async fn usage(&self, org: OrgId, range: &DayRange) -> Result<Vec<DailyUsage>> {
        let rows = sqlx::query(sql::USAGE_SQL)
            .bind(org.as_uuid())
            .bind(range.start().unix_ms())
            .bind(range.end().unix_ms())
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter().map(sql::daily_usage).collect()
    }
}

sql::sql_job_store!(PgStore);
sql::sql_audit_store!(PgStore);
sql::sql_generation_store!(PgStore);

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn begin_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        fingerprint: RequestFingerprint,
        attempt: AttemptId,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> Result<IdempotencyBegin> {
        // Each step is one conditional write, so no step races another request. A record
        // abandoned between the steps sends the loop round again (bounded).
        for _ in 0..3 {
            let started = sqlx::query(sql::REQUEST_INSERT)
                .bind(org.as_uuid())
                .bind(key.as_str())
                .bind(fingerprint.as_bytes().as_slice())
                .bind(attempt.as_uuid())
                .bind(now.unix_ms())
                .bind(lock_until.unix_ms())
                .execute(&self.pool)
                .await
                .map_err(map_error)?;
            if started.rows_affected() == 1 {
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
                .fetch_optional(&self.pool)
                .await
                .map_err(map_error)?;
            if let Some(row) = taken {
                return sql::taken_over(&row);
            }
            let row = sqlx::query(sql::REQUEST_READ)
                .bind(org.as_uuid())
                .bind(key.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_error)?;
            if let Some(row) = row {
                return sql::begin_outcome(&row, fingerprint);
            }
        }
        Ok(IdempotencyBegin::InProgress)
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
                "DELETE FROM idempotency_requests WHERE (org, key) IN \
                 (SELECT org, key FROM idempotency_requests WHERE created_at < $1 LIMIT $2)",
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
