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
//!
//! The statements both databases run are in `store/sql/`; this directory holds only what is
//! PostgreSQL's own: connecting (schemas, the pool's ping policy), error classification, the lock
//! clauses, `ledger.rs` (one-statement writes, write-first replays, group commit) and
//! `revocation.rs` (`NOTIFY`/`LISTEN`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{AssertSqlSafe, Connection, Postgres};

use crate::audit::AuditEvent;
use crate::error::{Error, Result, StoreErrorKind};
use crate::id::OrgId;
use crate::key::ApiKey;
use crate::ledger::{LedgerOp, LedgerReceipt, LedgerRequest};
use crate::store::connect::ConnectOptions;
use crate::store::group_commit::GroupCommit;
use crate::store::sql::backend::{Pooled, SqlBackend, Tx};
use crate::store::sql::exec::Dialect;

mod ledger;
mod revocation;

pub use revocation::{REVOCATION_CHANNEL, Revocation, RevocationListener};

/// The embedded migrations (`creapic-core/migrations/postgres`). Released files never change.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A pooled connection idle at least this long is pinged before use; others are used as they are.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

/// A store in a PostgreSQL database (or one schema of it).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// What the pool connects with: the revocation listener opens its own connection with it.
    connect_options: PgConnectOptions,
    acquire_timeout: Duration,
    /// Debits waiting for their organization's balance row, applied in batches (group commit).
    debits: Arc<GroupCommit<OrgId>>,
}

/// Maps a sqlx error to the core's store error: the one place PostgreSQL failures are
/// classified. Messages name the failure, never bound values (and stores only see digests).
pub fn map_error(e: sqlx::Error) -> Error {
    <Postgres as Dialect>::map_error(e)
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
}

impl Dialect for Postgres {
    const ROW_LOCK: &'static str = "FOR UPDATE";
    const CLAIM_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";

    fn database_error_kind(db: &dyn sqlx::error::DatabaseError) -> StoreErrorKind {
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

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlBackend for PgStore {
    type Db = Postgres;
    type Tx = sqlx::Transaction<'static, Postgres>;
    type Pooled = sqlx::pool::PoolConnection<Postgres>;

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    async fn write(&self) -> Result<Tx<Self>> {
        self.pool.begin().await.map_err(map_error)
    }

    async fn read(&self) -> Result<Pooled<Self>> {
        self.pool.acquire().await.map_err(map_error)
    }

    async fn autocommit(&self) -> Result<Pooled<Self>> {
        self.pool.acquire().await.map_err(map_error)
    }

    async fn commit(tx: Tx<Self>) -> Result<()> {
        tx.commit().await.map_err(map_error)
    }

    /// A debit without an audit event is the hot path (every metered call): concurrent debits
    /// of one organization are group-committed. Everything else is applied on its own,
    /// write-first.
    async fn apply(
        &self,
        request: &LedgerRequest,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt> {
        if audit.is_none() && matches!(request.op, LedgerOp::Debit { .. }) {
            return self.debits.submit(&self.ledger(), request.clone()).await;
        }
        ledger::apply_alone(&self.pool, request, audit).await
    }

    /// One statement (data-modifying CTEs) instead of three.
    async fn write_simple(
        conn: &mut PgConnection,
        request: &LedgerRequest,
        fingerprint: &str,
    ) -> Result<LedgerReceipt> {
        ledger::one_statement(conn, request, fingerprint).await
    }

    /// Every replica's listener drops the key when this transaction commits.
    async fn key_deleted(conn: &mut PgConnection, key: &ApiKey) -> Result<()> {
        revocation::announce(conn, key).await
    }
}
