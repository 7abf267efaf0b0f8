//! What the two SQL backends share: how every domain value maps to columns, and back.
//!
//! Design decision: both schemas use the same table and column names and the same encodings (ids
//! as uuids, times as i64 unix milliseconds, credits as i64, digests as 32 bytes), so a row is
//! decoded by one function whatever the backend. The backends differ only in the SQL that writes
//! (PostgreSQL row locks and CTEs, SQLite's single-writer transaction), which stays in
//! `sqlite.rs` and `postgres.rs`. Decoding never trusts the database: a value that does not make
//! a valid domain value is a `Store { kind: Corrupt }` error, never a panic.

use std::net::IpAddr;

use uuid::Uuid;

use crate::audit::{Actor, AuditAction, AuditEvent, AuditRecord};
use crate::audit_chain::{AuditHash, ChainHead, ChainRow};
use crate::clock::Timestamp;
use crate::error::{Error, Result, StoreErrorKind};
use crate::generation::{AspectRatio, GenerationOutcome, GenerationRecord, Quality};
use crate::id::{AttemptId, AuditId, EntryId, GenerationId, HoldId, JobId, KeyId, OrgId, UserId};
use crate::idempotency::{IdempotencyBegin, RequestFingerprint, StoredResponse};
use crate::job::{
    ItemError, ItemStatus, Job, JobItem, JobKind, JobStatus, JobSummary, Lease, WorkerId,
};
use crate::key::{ApiKey, KeyMode, KeyName, KeyPrefix};
use crate::ledger::{Credits, DAY_MS, DailyUsage, EntryKind, Hold, IdempotencyKey, LedgerEntry};
use crate::org::{Email, Member, OrgName, Organization, Role, User};
use crate::scope::ScopeSet;

/// Most rows one purge statement deletes: purges run in bounded batches so that a large backlog
/// never becomes one long transaction holding locks.
pub(crate) const PURGE_BATCH: i64 = 5_000;
/// Most purge batches in one call; a larger backlog is finished by the next call.
pub(crate) const PURGE_BATCHES_MAX: usize = 1_000;

/// Columns of `api_keys`, in the order [`key`] reads them.
pub(crate) const KEY_COLUMNS: &str = "id, org, name, prefix, scopes, mode, created_at, created_by, \
     last_used_at, deleted_at, expires_at";
/// Columns of `ledger_entries`.
pub(crate) const ENTRY_COLUMNS: &str = "seq, id, org, kind, delta, amount, balance_after, hold_id, \
     job_id, idempotency_key, created_at";
/// Columns of `holds`.
pub(crate) const HOLD_COLUMNS: &str =
    "id, org, job_id, amount, captured, released, created_at, closed_at";

/// `LedgerStore::stale_holds` on both SQL backends: `$1` the cutoff (Unix ms), `$2` the limit.
/// The partial index `holds_open_unpaid` keeps it a range scan of open holds.
pub(crate) fn stale_holds_sql() -> String {
    format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE closed_at IS NULL AND job_id IS NULL \
         AND captured + released < amount AND created_at < $1 ORDER BY created_at, id LIMIT $2"
    )
}
/// `LedgerStore::held` on both SQL backends: `$1` the organization. The partial index
/// `holds_open_by_org` keeps it a scan of that organization's open holds.
pub(crate) const HELD_SQL: &str = "SELECT CAST(COALESCE(SUM(amount - captured - released), 0) \
     AS BIGINT) AS held FROM holds WHERE org = $1 AND closed_at IS NULL";

/// `LedgerStore::usage` on both SQL backends: `$1` the organization, `$2`..`$3` the range's
/// first and past-the-end millisecond. Sums per UTC day (`created_at` is Unix ms, never
/// negative, so integer division is the day number); the index `ledger_entries_org_time` keeps
/// it a range scan of the organization's entries in the range.
pub(crate) const USAGE_SQL: &str = "SELECT created_at / 86400000 AS day, \
     CAST(COALESCE(SUM(CASE WHEN kind IN ('capture', 'debit') THEN amount ELSE 0 END), 0) AS BIGINT) AS spent, \
     CAST(COALESCE(SUM(CASE WHEN kind = 'grant' THEN amount ELSE 0 END), 0) AS BIGINT) AS granted, \
     CAST(COALESCE(SUM(CASE WHEN kind = 'release' THEN amount ELSE 0 END), 0) AS BIGINT) AS released \
     FROM ledger_entries WHERE org = $1 AND created_at >= $2 AND created_at < $3 \
     GROUP BY created_at / 86400000 ORDER BY day";

/// A row of [`USAGE_SQL`].
pub(crate) fn daily_usage(row: &impl Columns) -> Result<DailyUsage> {
    Ok(DailyUsage {
        day: Timestamp::from_unix_ms(row.int("day")?.saturating_mul(DAY_MS)),
        spent: row.credits("spent")?,
        granted: row.credits("granted")?,
        released: row.credits("released")?,
    })
}

/// `JobStore::list_jobs` on both SQL backends: `$1` the organization, `$2` the cursor (a job id
/// or NULL), `$3` the page size plus one. The page of jobs is chosen first, then only its items
/// are counted, by state, in one grouped scan.
pub(crate) fn list_jobs_sql() -> String {
    format!(
        "WITH page AS (SELECT {JOB_COLUMNS} FROM jobs WHERE org = $1 AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3), \
         counts AS (SELECT job_id, CAST(COUNT(*) AS BIGINT) AS n_items, \
             CAST(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT) AS n_succeeded, \
             CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS n_failed, \
             CAST(SUM(CASE WHEN status = 'canceled' THEN 1 ELSE 0 END) AS BIGINT) AS n_canceled \
             FROM job_items WHERE job_id IN (SELECT id FROM page) GROUP BY job_id) \
         SELECT page.*, COALESCE(counts.n_items, 0) AS n_items, \
             COALESCE(counts.n_succeeded, 0) AS n_succeeded, \
             COALESCE(counts.n_failed, 0) AS n_failed, \
             COALESCE(counts.n_canceled, 0) AS n_canceled \
         FROM page LEFT JOIN counts ON counts.job_id = page.id ORDER BY page.id"
    )
}

/// A row of [`list_jobs_sql`].
pub(crate) fn job_summary(row: &impl Columns) -> Result<JobSummary> {
    let job = job(row, Vec::new())?;
    let count =
        |col: &str| -> Result<u32> { u32::try_from(row.int(col)?).map_err(|e| corrupt(col, e)) };
    Ok(JobSummary {
        items: count("n_items")?,
        succeeded: count("n_succeeded")?,
        failed: count("n_failed")?,
        canceled: count("n_canceled")?,
        ..JobSummary::of(&job)
    })
}

/// Columns of `jobs`.
pub(crate) const JOB_COLUMNS: &str = "id, org, key_id, kind, mode, status, unit_cost, hold_id, \
     idempotency_key, created_at, updated_at, finished_at, lease_worker, lease_expires_at, attempts";
/// Columns of `job_items`.
pub(crate) const ITEM_COLUMNS: &str =
    "job_id, idx, input, status, output, error_code, error_message, finished_at";
/// Columns of `audit_events`.
pub(crate) const AUDIT_COLUMNS: &str =
    "seq, id, org, at, action, actor, ip, user_agent, key_id, key_prefix, detail";

/// Columns of `audit_events` as the chain verifier reads them.
pub(crate) const CHAIN_COLUMNS: &str =
    "seq, id, org, at, action, actor, ip, user_agent, key_id, key_prefix, detail, prev_hash, hash";
/// Columns of `audit_chain`, the chain's one-row head.
pub(crate) const HEAD_COLUMNS: &str = "anchor_seq, anchor_hash, last_seq, last_hash";

/// A stored value that does not decode.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::store(StoreErrorKind::Corrupt, format!("{what}: {detail}"))
}

/// Typed access to one row, implemented for each backend's row type.
pub(crate) trait Columns {
    /// A non-null uuid.
    fn uuid(&self, col: &str) -> Result<Uuid>;
    /// A nullable uuid.
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>>;
    /// A non-null integer.
    fn int(&self, col: &str) -> Result<i64>;
    /// A nullable integer.
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    /// A non-null text.
    fn text(&self, col: &str) -> Result<String>;
    /// A nullable text.
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    /// A non-null byte string.
    fn bytes(&self, col: &str) -> Result<Vec<u8>>;
    /// A nullable byte string.
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>>;

    /// A timestamp.
    fn time(&self, col: &str) -> Result<Timestamp> {
        self.int(col).map(Timestamp::from_unix_ms)
    }
    /// A nullable timestamp.
    fn opt_time(&self, col: &str) -> Result<Option<Timestamp>> {
        Ok(self.opt_int(col)?.map(Timestamp::from_unix_ms))
    }
    /// A non-negative count of credits.
    fn credits(&self, col: &str) -> Result<Credits> {
        let n = self.int(col)?;
        let n = u64::try_from(n).map_err(|_| corrupt(col, "negative credits"))?;
        Credits::new(n).map_err(|e| corrupt(col, e))
    }
}

/// Implements [`Columns`] for a sqlx row type by delegating to `try_get`.
macro_rules! impl_columns {
    ($row:ty) => {
        impl $crate::store::sql::Columns for $row {
            fn uuid(&self, col: &str) -> $crate::Result<uuid::Uuid> {
                sqlx::Row::try_get(self, col).map_err(|e| $crate::store::sql::corrupt(col, e))
            }
            fn opt_uuid(&self, col: &str) -> $crate::Result<Option<uuid::Uuid>> {
                sqlx::Row::try_get(self, col).map_err(|e| $crate::store::sql::corrupt(col, e))
            }
            fn int(&self, col: &str) -> $crate::Result<i64> {
                sqlx::Row::try_get(self, col).map_err(|e| $crate::store::sql::corrupt(col, e))
            }
            fn opt_int(&self, col: &str) -> $crate::Result<Option<i64>> {
                sqlx::Row::try_get(self, col).map_err(|e| $crate::store::sql::corrupt(col, e))
            }
            fn text(&self, col: &str) -> $crate::Result<String> {
                sqlx::Row::try_get(self, col).map_err(|e| $crate::store::sql::corrupt(col, e))
            }
            fn opt_text(&self, col: &str) -> $crate::Result<Option<String>> {
                sqlx::Row::try_get(self, col).map_err(|e| $crate::store::sql::corrupt(col, e))
            }
            fn bytes(&self, col: &str) -> $crate::Result<Vec<u8>> {
                sqlx::Row::try_get(self, col).map_err(|e| $crate::store::sql::corrupt(col, e))
            }
            fn opt_bytes(&self, col: &str) -> $crate::Result<Option<Vec<u8>>> {
                sqlx::Row::try_get(self, col).map_err(|e| $crate::store::sql::corrupt(col, e))
            }
        }
    };
}
pub(crate) use impl_columns;

/// Re-labels a domain validation error raised while decoding as corruption.
fn valid<T>(col: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| corrupt(col, e))
}

/// A credit amount as the signed column value (always fits: bounded by `BALANCE_MAX`).
pub(crate) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A user row.
pub(crate) fn user(row: &impl Columns) -> Result<User> {
    Ok(User {
        id: UserId::from_uuid(row.uuid("id")?),
        email: valid("email", Email::new(&row.text("email")?))?,
        created_at: row.time("created_at")?,
    })
}

/// An organization row.
pub(crate) fn org(row: &impl Columns) -> Result<Organization> {
    Ok(Organization {
        id: OrgId::from_uuid(row.uuid("id")?),
        name: valid("name", OrgName::new(&row.text("name")?))?,
        created_at: row.time("created_at")?,
    })
}

/// A role column.
pub(crate) fn role(row: &impl Columns) -> Result<Role> {
    valid("role", Role::parse(&row.text("role")?))
}

/// An `api_keys` row ([`KEY_COLUMNS`]).
pub(crate) fn key(row: &impl Columns) -> Result<ApiKey> {
    let scopes = u8::try_from(row.int("scopes")?).map_err(|e| corrupt("scopes", e))?;
    Ok(ApiKey {
        id: KeyId::from_uuid(row.uuid("id")?),
        org: OrgId::from_uuid(row.uuid("org")?),
        name: valid("name", KeyName::new(&row.text("name")?))?,
        prefix: valid("prefix", KeyPrefix::parse(&row.text("prefix")?))?,
        scopes: valid("scopes", ScopeSet::from_bits(scopes))?,
        mode: valid("mode", KeyMode::parse(&row.text("mode")?))?,
        created_at: row.time("created_at")?,
        created_by: UserId::from_uuid(row.uuid("created_by")?),
        last_used_at: row.opt_time("last_used_at")?,
        deleted_at: row.opt_time("deleted_at")?,
        expires_at: row.opt_time("expires_at")?,
    })
}

/// A `ledger_entries` row ([`ENTRY_COLUMNS`]).
pub(crate) fn entry(row: &impl Columns) -> Result<LedgerEntry> {
    let seq = u64::try_from(row.int("seq")?).map_err(|e| corrupt("seq", e))?;
    Ok(LedgerEntry {
        seq,
        id: EntryId::from_uuid(row.uuid("id")?),
        org: OrgId::from_uuid(row.uuid("org")?),
        kind: valid("kind", EntryKind::parse(&row.text("kind")?))?,
        delta: row.int("delta")?,
        amount: row.credits("amount")?,
        balance_after: row.credits("balance_after")?,
        hold: row.opt_uuid("hold_id")?.map(HoldId::from_uuid),
        job: row.opt_uuid("job_id")?.map(JobId::from_uuid),
        idempotency_key: valid(
            "idempotency_key",
            IdempotencyKey::new(&row.text("idempotency_key")?),
        )?,
        created_at: row.time("created_at")?,
    })
}

/// A `holds` row ([`HOLD_COLUMNS`]).
pub(crate) fn hold(row: &impl Columns) -> Result<Hold> {
    Ok(Hold {
        id: HoldId::from_uuid(row.uuid("id")?),
        org: OrgId::from_uuid(row.uuid("org")?),
        job: row.opt_uuid("job_id")?.map(JobId::from_uuid),
        amount: row.credits("amount")?,
        captured: row.credits("captured")?,
        released: row.credits("released")?,
        created_at: row.time("created_at")?,
        closed_at: row.opt_time("closed_at")?,
    })
}

/// `GenerationStore::insert_generation`: a repeated id writes nothing (the caller then reads
/// the stored row back in the same transaction).
pub(crate) const GENERATION_INSERT: &str = "INSERT INTO generations (id, org, status, prompt, \
     aspect_ratio, quality, tokens, media, error_code, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING";
/// One generation by id, of any organization (the caller checks the organization).
pub(crate) const GENERATION_READ: &str = "SELECT id, org, status, prompt, aspect_ratio, \
     quality, tokens, media, error_code, created_at FROM generations WHERE id = $1";

/// A `generations` row (the columns of [`GENERATION_READ`]).
pub(crate) fn generation(row: &impl Columns) -> Result<GenerationRecord> {
    let outcome = match row.text("status")?.as_str() {
        "completed" => GenerationOutcome::Completed {
            media: row
                .opt_text("media")?
                .ok_or_else(|| corrupt("media", "a completed generation without media"))?,
            tokens: row.credits("tokens")?,
        },
        "failed" => GenerationOutcome::Failed {
            code: row
                .opt_text("error_code")?
                .ok_or_else(|| corrupt("error_code", "a failed generation without a code"))?,
        },
        other => return Err(corrupt("status", format!("unknown status {other:?}"))),
    };
    Ok(GenerationRecord {
        id: GenerationId::from_uuid(row.uuid("id")?),
        org: OrgId::from_uuid(row.uuid("org")?),
        prompt: row.text("prompt")?,
        aspect_ratio: valid(
            "aspect_ratio",
            AspectRatio::parse(&row.text("aspect_ratio")?),
        )?,
        quality: valid("quality", Quality::parse(&row.text("quality")?))?,
        outcome,
        created_at: row.time("created_at")?,
    })
}

/// A `jobs` row ([`JOB_COLUMNS`]) with its items.
pub(crate) fn job(row: &impl Columns, items: Vec<JobItem>) -> Result<Job> {
    let lease = match (
        row.opt_text("lease_worker")?,
        row.opt_time("lease_expires_at")?,
    ) {
        (Some(worker), Some(expires_at)) => Some(Lease {
            worker: valid("lease_worker", WorkerId::new(&worker))?,
            expires_at,
        }),
        _ => None,
    };
    let attempts = u32::try_from(row.int("attempts")?).map_err(|e| corrupt("attempts", e))?;
    Ok(Job {
        id: JobId::from_uuid(row.uuid("id")?),
        org: OrgId::from_uuid(row.uuid("org")?),
        key: row.opt_uuid("key_id")?.map(KeyId::from_uuid),
        kind: valid("kind", JobKind::parse(&row.text("kind")?))?,
        mode: valid("mode", KeyMode::parse(&row.text("mode")?))?,
        status: valid("status", JobStatus::parse(&row.text("status")?))?,
        unit_cost: row.credits("unit_cost")?,
        hold: row.opt_uuid("hold_id")?.map(HoldId::from_uuid),
        idempotency_key: valid(
            "idempotency_key",
            IdempotencyKey::new(&row.text("idempotency_key")?),
        )?,
        items,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        finished_at: row.opt_time("finished_at")?,
        lease,
        attempts,
    })
}

/// A `job_items` row ([`ITEM_COLUMNS`]).
pub(crate) fn item(row: &impl Columns) -> Result<JobItem> {
    let error = match (row.opt_text("error_code")?, row.opt_text("error_message")?) {
        (Some(code), Some(message)) => Some(ItemError { code, message }),
        _ => None,
    };
    Ok(JobItem {
        index: u32::try_from(row.int("idx")?).map_err(|e| corrupt("idx", e))?,
        input: row.text("input")?,
        status: valid("status", ItemStatus::parse(&row.text("status")?))?,
        output: row.opt_text("output")?,
        error,
        finished_at: row.opt_time("finished_at")?,
    })
}

/// An `audit_events` row ([`AUDIT_COLUMNS`]).
pub(crate) fn audit(row: &impl Columns) -> Result<AuditRecord> {
    let seq = u64::try_from(row.int("seq")?).map_err(|e| corrupt("seq", e))?;
    let ip = match row.opt_text("ip")? {
        Some(text) => Some(text.parse::<IpAddr>().map_err(|e| corrupt("ip", e))?),
        None => None,
    };
    let key_prefix = match row.opt_text("key_prefix")? {
        Some(text) => Some(valid("key_prefix", KeyPrefix::parse(&text))?),
        None => None,
    };
    Ok(AuditRecord {
        seq,
        event: AuditEvent {
            id: AuditId::from_uuid(row.uuid("id")?),
            org: OrgId::from_uuid(row.uuid("org")?),
            at: row.time("at")?,
            action: valid("action", AuditAction::parse(&row.text("action")?))?,
            actor: valid("actor", Actor::parse(&row.text("actor")?))?,
            ip,
            user_agent: row.opt_text("user_agent")?,
            key_id: row.opt_uuid("key_id")?.map(KeyId::from_uuid),
            key_prefix,
            detail: row.opt_text("detail")?,
        },
    })
}

/// An `audit_events` row as verification reads it ([`CHAIN_COLUMNS`]): a column that does not
/// decode becomes `None` (an edited row, for the verifier), only a bad `seq` is an error.
pub(crate) fn chain_row(row: &impl Columns) -> Result<ChainRow> {
    let hash = |col: &str| -> Result<Option<AuditHash>> {
        Ok(row
            .opt_bytes(col)?
            .and_then(|b| AuditHash::from_slice(&b).ok()))
    };
    Ok(ChainRow {
        seq: u64::try_from(row.int("seq")?).map_err(|e| corrupt("seq", e))?,
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
        event: audit(row).ok().map(|r| r.event),
    })
}

/// The `audit_chain` row ([`HEAD_COLUMNS`]).
pub(crate) fn chain_head(row: &impl Columns) -> Result<ChainHead> {
    let seq =
        |col: &str| -> Result<u64> { u64::try_from(row.int(col)?).map_err(|e| corrupt(col, e)) };
    let hash = |col: &str| -> Result<AuditHash> {
        AuditHash::from_slice(&row.bytes(col)?).map_err(|e| corrupt(col, e))
    };
    Ok(ChainHead {
        anchor_seq: seq("anchor_seq")?,
        anchor_hash: hash("anchor_hash")?,
        last_seq: seq("last_seq")?,
        last_hash: hash("last_hash")?,
    })
}

/// A stored `seq` or count as the i64 both databases bind.
pub(crate) fn seq_param(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|e| corrupt("seq", e))
}

/// The columns of one audit event, ready to bind (everything but `seq`).
pub(crate) struct AuditParams {
    pub(crate) id: Uuid,
    pub(crate) org: Uuid,
    pub(crate) at: i64,
    pub(crate) action: &'static str,
    pub(crate) actor: String,
    pub(crate) ip: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) key_id: Option<Uuid>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) detail: Option<String>,
}

impl AuditParams {
    /// The columns of `e`.
    pub(crate) fn of(e: &AuditEvent) -> Self {
        AuditParams {
            id: e.id.as_uuid(),
            org: e.org.as_uuid(),
            at: e.at.unix_ms(),
            action: e.action.as_str(),
            actor: e.actor.to_text(),
            ip: e.ip.map(|ip| ip.to_string()),
            user_agent: e.user_agent.clone(),
            key_id: e.key_id.map(|k| k.as_uuid()),
            key_prefix: e.key_prefix.map(|p| p.as_str().to_owned()),
            detail: e.detail.clone(),
        }
    }
}

/// The `key.used` audit event of one usage, exactly as the in-memory store builds it.
pub(crate) fn usage_event(u: &crate::store::KeyUsage) -> AuditEvent {
    AuditEvent::new(
        u.audit_id,
        u.org,
        u.last_used_at,
        AuditAction::KeyUsed,
        Actor::Key(u.key),
        &crate::audit::RequestContext::default(),
    )
    .with_key(u.key, u.prefix)
}

/// What an existing record answers to a new start (after the insert and the takeover failed).
/// `KeyStore::insert_key`, the same text on both backends: the organization's active keys,
/// counted inside the inserting transaction after the organization row is locked
/// (`ORG_LOCK` of each backend).
pub(crate) const ACTIVE_KEYS_COUNT: &str =
    "SELECT COUNT(*) FROM api_keys WHERE org = $1 AND deleted_at IS NULL";
/// The key row itself.
pub(crate) const KEY_INSERT: &str = "INSERT INTO api_keys (id, org, digest, name, prefix, \
     scopes, mode, created_at, created_by, last_used_at, deleted_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// `OrgStore::create_org`: the organizations a user owns, counted after the user's row is
/// locked (`USER_LOCK` of each backend).
pub(crate) const OWNED_ORGS_COUNT: &str =
    "SELECT COUNT(*) FROM memberships WHERE user_id = $1 AND role = 'owner'";

/// `OrgStore::set_role` and `remove_member`: a user's role, read inside the writing
/// transaction after the organization's row is locked. `$1` org, `$2` user.
pub(crate) const MEMBER_ROLE: &str = "SELECT role FROM memberships WHERE org = $1 AND user_id = $2";
/// The organization's owners, counted under the same lock (the `memberships_owners` index).
pub(crate) const OWNERS_COUNT: &str =
    "SELECT COUNT(*) FROM memberships WHERE org = $1 AND role = 'owner'";
/// A user row by id.
pub(crate) const USER_BY_ID: &str = "SELECT id, email, created_at FROM users WHERE id = $1";
/// Sets a role, adding the membership (joined at `$4`) when there is none.
pub(crate) const MEMBER_UPSERT: &str = "INSERT INTO memberships (org, user_id, role, joined_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (org, user_id) DO UPDATE SET role = excluded.role \
     RETURNING joined_at";
/// Removes a membership.
pub(crate) const MEMBER_DELETE: &str =
    "DELETE FROM memberships WHERE org = $1 AND user_id = $2 RETURNING joined_at";
/// `OrgStore::orgs_of_user`: `$1` user, `$2` the cursor (an organization id) or NULL, `$3` the
/// limit; served by `memberships_by_user`.
pub(crate) const ORGS_OF_USER: &str = "SELECT o.id, o.name, o.created_at, m.role \
     FROM memberships m JOIN orgs o ON o.id = m.org \
     WHERE m.user_id = $1 AND ($2 IS NULL OR m.org > $2) ORDER BY m.org LIMIT $3";
/// `OrgStore::members`: `$1` org, `$2` the cursor (a user id) or NULL, `$3` the limit; served by
/// the unique (org, user_id) index.
pub(crate) const MEMBERS_OF_ORG: &str = "SELECT u.id, u.email, u.created_at, m.role, m.joined_at \
     FROM memberships m JOIN users u ON u.id = m.user_id \
     WHERE m.org = $1 AND ($2 IS NULL OR m.user_id > $2) ORDER BY m.user_id LIMIT $3";

/// A row of [`MEMBERS_OF_ORG`].
pub(crate) fn member(row: &impl Columns) -> Result<Member> {
    Ok(Member {
        user: user(row)?,
        role: role(row)?,
        joined_at: row.opt_time("joined_at")?,
    })
}

/// A count as the domain's `u64`.
pub(crate) fn count(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|e| corrupt("count", e))
}

/// What `create_org` answers when the owner already owns `owned` organizations.
pub(crate) fn check_owned_orgs(owned: i64, max: u64) -> Result<()> {
    let owned = u64::try_from(owned).map_err(|e| corrupt("count", e))?;
    if owned >= max {
        return Err(Error::LimitExceeded {
            what: "organizations owned per user",
            max,
        });
    }
    Ok(())
}

/// What `insert_key` answers when the organization already holds `active` keys.
pub(crate) fn check_active_keys(active: i64, max: u64) -> Result<()> {
    let active = u64::try_from(active).map_err(|e| corrupt("count", e))?;
    if active >= max {
        return Err(Error::LimitExceeded {
            what: "active keys per organization",
            max,
        });
    }
    Ok(())
}

/// `IdempotencyStore` statements, the same text on both backends. Parameters of
/// [`REQUEST_INSERT`]: org, key, fingerprint, attempt, now, lock until.
pub(crate) const REQUEST_INSERT: &str = "INSERT INTO idempotency_requests \
     (org, key, fingerprint, attempt, created_at, locked_until) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (org, key) DO NOTHING";
/// A takeover of an unfinished record whose lock expired (or was given back): org, key,
/// fingerprint, now, lock until. Returns the record's attempt, which the takeover resumes.
pub(crate) const REQUEST_TAKE_OVER: &str = "UPDATE idempotency_requests SET locked_until = $5 \
     WHERE org = $1 AND key = $2 AND fingerprint = $3 AND response_status IS NULL \
     AND (locked_until IS NULL OR locked_until <= $4) RETURNING attempt";
/// The record under (org, key), for [`begin_outcome`].
pub(crate) const REQUEST_READ: &str = "SELECT fingerprint, response_status, response_body \
     FROM idempotency_requests WHERE org = $1 AND key = $2";
/// Extends a running request's lock: org, key, attempt, lock until.
pub(crate) const REQUEST_RENEW: &str = "UPDATE idempotency_requests SET locked_until = $4 \
     WHERE org = $1 AND key = $2 AND attempt = $3 AND response_status IS NULL";
/// Stores the response: org, key, status, body.
pub(crate) const REQUEST_COMPLETE: &str = "UPDATE idempotency_requests SET locked_until = NULL, \
     response_status = $3, response_body = $4 WHERE org = $1 AND key = $2";
/// [`Abandon::Settled`](crate::idempotency::Abandon): the unfinished record goes.
pub(crate) const REQUEST_ABANDON_SETTLED: &str = "DELETE FROM idempotency_requests \
     WHERE org = $1 AND key = $2 AND response_status IS NULL";
/// [`Abandon::Unsettled`](crate::idempotency::Abandon): unlocked, attempt kept.
pub(crate) const REQUEST_ABANDON_UNSETTLED: &str = "UPDATE idempotency_requests \
     SET locked_until = NULL WHERE org = $1 AND key = $2 AND response_status IS NULL";

/// The statement giving back a started request.
pub(crate) const fn abandon_statement(how: crate::idempotency::Abandon) -> &'static str {
    match how {
        crate::idempotency::Abandon::Settled => REQUEST_ABANDON_SETTLED,
        crate::idempotency::Abandon::Unsettled => REQUEST_ABANDON_UNSETTLED,
    }
}

/// What a takeover's `RETURNING attempt` row says: the attempt it resumes (`None` for a record
/// written before attempts existed).
pub(crate) fn taken_over(row: &impl Columns) -> Result<IdempotencyBegin> {
    Ok(IdempotencyBegin::Started {
        attempt: row.opt_uuid("attempt")?.map(AttemptId::from_uuid),
    })
}

pub(crate) fn begin_outcome(
    row: &impl Columns,
    fingerprint: RequestFingerprint,
) -> Result<IdempotencyBegin> {
    let stored = row.bytes("fingerprint")?;
    if stored.as_slice() != fingerprint.as_bytes().as_slice() {
        return Ok(IdempotencyBegin::Mismatch);
    }
    match row.opt_int("response_status")? {
        Some(status) => Ok(IdempotencyBegin::Replay(StoredResponse {
            status: u16::try_from(status).map_err(|e| corrupt("response_status", e))?,
            body: row.opt_bytes("response_body")?.unwrap_or_default(),
        })),
        None => Ok(IdempotencyBegin::InProgress),
    }
}

/// Bodies of store methods that are the same statements on both SQL backends, written once.
/// Each expands inside the backend's own method (so `async_trait` sees an ordinary body) and
/// uses what that module provides: `write`, `map_error`, `commit`, `insert_audit` and, where
/// named, its lock statements.
///
/// The body of `KeyStore::insert_key`: the organization row locked (`ORG_LOCK` of the invoking module), its active keys counted against `new.active_max`, the key inserted and `audit` appended, in one write transaction.
macro_rules! insert_key_body {
    ($store:expr, $new:expr, $audit:expr) => {{
        let new = $new;
        let audit = $audit;
        let k = &new.key;
        let mut tx = $store.write().await?;
        // Count-then-insert is atomic: the organization row is locked (SQLite: the one writer)
        // until the transaction ends, so concurrent creations queue behind this one.
        let org = sqlx::query(ORG_LOCK)
            .bind(k.org.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        if org.is_none() {
            return Err(Error::NotFound {
                resource: "organization",
            });
        }
        let active: i64 = sqlx::query_scalar(sql::ACTIVE_KEYS_COUNT)
            .bind(k.org.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        sql::check_active_keys(active, new.active_max)?;
        sqlx::query(sql::KEY_INSERT)
            .bind(k.id.as_uuid())
            .bind(k.org.as_uuid())
            .bind(new.digest.as_bytes().as_slice())
            .bind(k.name.as_str())
            .bind(k.prefix.as_str())
            .bind(i64::from(k.scopes.bits()))
            .bind(k.mode.as_str())
            .bind(k.created_at.unix_ms())
            .bind(k.created_by.as_uuid())
            .bind(k.last_used_at.map(Timestamp::unix_ms))
            .bind(k.deleted_at.map(Timestamp::unix_ms))
            .bind(k.expires_at.map(Timestamp::unix_ms))
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        insert_audit(&mut tx, audit).await?;
        commit(tx).await
    }};
}
pub(crate) use insert_key_body;

///
/// The body of `OrgStore::create_org`: the owner's row locked (`USER_LOCK` of the invoking module), the organizations they own counted against `owned_max`, the organization and its owner's membership inserted and `audit` appended, in one write transaction.
macro_rules! create_org_body {
    ($store:expr, $org:expr, $owner:expr, $owned_max:expr, $audit:expr) => {{
        let org = $org;
        let owner = $owner;
        let owned_max = $owned_max;
        let audit = $audit;
        let mut tx = $store.write().await?;
        let user = sqlx::query(USER_LOCK)
            .bind(owner.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        if user.is_none() {
            return Err(Error::NotFound { resource: "user" });
        }
        let owned: i64 = sqlx::query_scalar(sql::OWNED_ORGS_COUNT)
            .bind(owner.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        sql::check_owned_orgs(owned, owned_max)?;
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(org.id.as_uuid())
            .bind(org.name.as_str())
            .bind(org.created_at.unix_ms())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        // The owner's row is locked above: it exists until this commits.
        sqlx::query(
            "INSERT INTO memberships (org, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(org.id.as_uuid())
        .bind(owner.as_uuid())
        .bind(org.created_at.unix_ms())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        insert_audit(&mut tx, audit).await?;
        commit(tx).await
    }};
}
pub(crate) use create_org_body;

/// A user's role in an organization, read in the transaction `$tx`.
macro_rules! member_role {
    ($tx:expr, $org:expr, $user:expr) => {{
        let row = sqlx::query(sql::MEMBER_ROLE)
            .bind($org.as_uuid())
            .bind($user.as_uuid())
            .fetch_optional(&mut *$tx)
            .await
            .map_err(map_error)?;
        row.as_ref().map(sql::role).transpose()?
    }};
}
pub(crate) use member_role;

/// The roles a membership write checks, read after the organization's row is locked
/// (`ORG_LOCK` of the invoking module; `NotFound` for an unknown organization): the target's, the
/// acting person's (when `by` names one) and the owner count.
macro_rules! member_state {
    ($tx:expr, $org:expr, $user:expr, $by:expr) => {{
        let org: OrgId = $org;
        let locked = sqlx::query(ORG_LOCK)
            .bind(org.as_uuid())
            .fetch_optional(&mut *$tx)
            .await
            .map_err(map_error)?;
        if locked.is_none() {
            return Err(Error::NotFound {
                resource: "organization",
            });
        }
        let current = sql::member_role!($tx, org, $user);
        let actor = match $by {
            Some((by, _)) => sql::member_role!($tx, org, by),
            None => None,
        };
        let owners: i64 = sqlx::query_scalar(sql::OWNERS_COUNT)
            .bind(org.as_uuid())
            .fetch_one(&mut *$tx)
            .await
            .map_err(map_error)?;
        (current, actor, sql::count(owners)?)
    }};
}
pub(crate) use member_state;

///
/// The body of `OrgStore::set_role`: the organization's row locked, the change checked against
/// the roles and owner count read under that lock ([`RoleChange::check`](crate::org::RoleChange)),
/// the membership written and `audit` appended, in one write transaction.
macro_rules! set_role_body {
    ($store:expr, $change:expr, $audit:expr) => {{
        let change = $change;
        let audit = $audit;
        let mut tx = $store.write().await?;
        let (current, actor, owners) = sql::member_state!(tx, change.org, change.user, change.by);
        let user = sqlx::query(sql::USER_BY_ID)
            .bind(change.user.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        let Some(user) = user.as_ref().map(sql::user).transpose()? else {
            return Err(Error::NotFound { resource: "user" });
        };
        change.check(current, actor, owners)?;
        let joined: Option<i64> = sqlx::query_scalar(sql::MEMBER_UPSERT)
            .bind(change.org.as_uuid())
            .bind(change.user.as_uuid())
            .bind(change.role.as_str())
            .bind(change.at.unix_ms())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        insert_audit(&mut tx, audit).await?;
        commit(tx).await?;
        Ok(Member {
            user,
            role: change.role,
            joined_at: joined.map(Timestamp::from_unix_ms),
        })
    }};
}
pub(crate) use set_role_body;

///
/// The body of `OrgStore::remove_member`: as [`set_role_body`], the membership deleted.
macro_rules! remove_member_body {
    ($store:expr, $removal:expr, $audit:expr) => {{
        let removal = $removal;
        let audit = $audit;
        let mut tx = $store.write().await?;
        let (current, actor, owners) =
            sql::member_state!(tx, removal.org, removal.user, removal.by);
        let Some(role) = current else {
            return Ok(None);
        };
        removal.check(current, actor, owners)?;
        let user = sqlx::query(sql::USER_BY_ID)
            .bind(removal.user.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        let user = sql::user(&user)?;
        let joined: Option<i64> = sqlx::query_scalar(sql::MEMBER_DELETE)
            .bind(removal.org.as_uuid())
            .bind(removal.user.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        insert_audit(&mut tx, audit).await?;
        commit(tx).await?;
        Ok(Some(Member {
            user,
            role,
            joined_at: joined.map(Timestamp::from_unix_ms),
        }))
    }};
}
pub(crate) use remove_member_body;

///
/// The body of `OrgStore::orgs_of_user` (read pool of the invoking module).
macro_rules! orgs_of_user_body {
    ($store:expr, $user:expr, $after:expr, $limit:expr) => {{
        let user: UserId = $user;
        let after: Option<OrgId> = $after;
        let limit: PageLimit = $limit;
        let rows = sqlx::query(sql::ORGS_OF_USER)
            .bind(user.as_uuid())
            .bind(after.map(|o| o.as_uuid()))
            .bind(i64::from(limit.get()) + 1)
            .fetch_all($store.read_pool())
            .await
            .map_err(map_error)?;
        let items = rows
            .iter()
            .map(|row| Ok((sql::org(row)?, sql::role(row)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |(o, _)| o.id))
    }};
}
pub(crate) use orgs_of_user_body;

///
/// The body of `OrgStore::members` (read pool of the invoking module).
macro_rules! members_body {
    ($store:expr, $org:expr, $after:expr, $limit:expr) => {{
        let org: OrgId = $org;
        let after: Option<UserId> = $after;
        let limit: PageLimit = $limit;
        let rows = sqlx::query(sql::MEMBERS_OF_ORG)
            .bind(org.as_uuid())
            .bind(after.map(|u| u.as_uuid()))
            .bind(i64::from(limit.get()) + 1)
            .fetch_all($store.read_pool())
            .await
            .map_err(map_error)?;
        let items = rows.iter().map(sql::member).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |m| m.user.id))
    }};
}
pub(crate) use members_body;

///
/// The body of `IdempotencyStore::complete_request`.
macro_rules! complete_request_body {
    ($store:expr, $org:expr, $key:expr, $response:expr) => {{
        let org = $org;
        let key = $key;
        let response = $response;
        if response.body.len() > crate::idempotency::RESPONSE_MAX_BYTES {
            return Err(Error::LimitExceeded {
                what: "stored response size",
                max: crate::idempotency::RESPONSE_MAX_BYTES as u64,
            });
        }
        let mut tx = $store.write().await?;
        let done = sqlx::query(sql::REQUEST_COMPLETE)
            .bind(org.as_uuid())
            .bind(key.as_str())
            .bind(i64::from(response.status))
            .bind(response.body.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                resource: "idempotency record",
            });
        }
        commit(tx).await
    }};
}
pub(crate) use complete_request_body;

///
/// The body of `IdempotencyStore::renew_request`.
macro_rules! renew_request_body {
    ($store:expr, $org:expr, $key:expr, $attempt:expr, $lock_until:expr) => {{
        let org = $org;
        let key = $key;
        let attempt = $attempt;
        let lock_until = $lock_until;
        let mut tx = $store.write().await?;
        let renewed = sqlx::query(sql::REQUEST_RENEW)
            .bind(org.as_uuid())
            .bind(key.as_str())
            .bind(attempt.as_uuid())
            .bind(lock_until.unix_ms())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        commit(tx).await?;
        Ok(renewed.rows_affected() == 1)
    }};
}
pub(crate) use renew_request_body;

///
/// The body of `IdempotencyStore::abandon_request`.
macro_rules! abandon_request_body {
    ($store:expr, $org:expr, $key:expr, $how:expr) => {{
        let org = $org;
        let key = $key;
        let how = $how;
        let mut tx = $store.write().await?;
        sqlx::query(sql::abandon_statement(how))
            .bind(org.as_uuid())
            .bind(key.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        commit(tx).await
    }};
}
pub(crate) use abandon_request_body;

/// `impl JobStore` for a SQL backend. Every method but `enqueue` is the same SQL on SQLite and
/// PostgreSQL, so it is written once, here; a macro rather than generics over `sqlx::Database`
/// because the two backends' connection types share no trait the statements could be written
/// against without a wall of bounds. The invoking module provides: an inherent
/// `enqueue_job(&self, &NewJob)`, `read_pool(&self)`, `write(&self)` (a write transaction), the
/// functions `load_job`, `load_items`, `lock_job` (the row locked for the transaction),
/// `leased_job`, `set_job_state`, `close_hold`, `apply_in`, `commit`, `map_error`, the constant
/// `CLAIM_LOCK` (what keeps two claimers off one job) and the names the bodies use in scope.
macro_rules! sql_job_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::JobStore for $store {
            async fn enqueue(&self, new: &NewJob) -> Result<Enqueued> {
                self.enqueue_job(new).await
            }

            async fn job(&self, org: OrgId, id: JobId) -> Result<Option<Job>> {
                let mut conn = self.read_pool().acquire().await.map_err(map_error)?;
                Ok(load_job(&mut conn, id).await?.filter(|j| j.org == org))
            }

            async fn list_jobs(
                &self,
                org: OrgId,
                after: Option<JobId>,
                limit: PageLimit,
            ) -> Result<Page<$crate::job::JobSummary, JobId>> {
                let rows = sqlx::query(AssertSqlSafe($crate::store::sql::list_jobs_sql()))
                    .bind(org.as_uuid())
                    .bind(after.map(|j| j.as_uuid()))
                    .bind(i64::from(limit.get()) + 1)
                    .fetch_all(self.read_pool())
                    .await
                    .map_err(map_error)?;
                let jobs = rows
                    .iter()
                    .map($crate::store::sql::job_summary)
                    .collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(jobs, limit, |j| j.id))
            }

            async fn claim_job(
                &self,
                worker: &WorkerId,
                now: Timestamp,
                lease_until: Timestamp,
            ) -> Result<Option<Job>> {
                let mut tx = self.write().await?;
                let id: Option<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "UPDATE jobs SET status = 'running', lease_worker = $1, lease_expires_at = $3, \
                     attempts = attempts + 1, updated_at = $2 \
                     WHERE id = (SELECT id FROM jobs WHERE status IN ('queued', 'running') \
                         AND (status = 'queued' OR lease_expires_at IS NULL OR lease_expires_at <= $2) \
                         ORDER BY id LIMIT 1 {CLAIM_LOCK}) \
                     RETURNING id"
                )))
                .bind(worker.as_str())
                .bind(now.unix_ms())
                .bind(lease_until.unix_ms())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_error)?;
                let Some(id) = id else { return Ok(None) };
                let job = load_job(&mut tx, JobId::from_uuid(id)).await?;
                commit(tx).await?;
                Ok(job)
            }

            async fn renew_lease(
                &self,
                id: JobId,
                worker: &WorkerId,
                lease_until: Timestamp,
            ) -> Result<Job> {
                let mut tx = self.write().await?;
                let mut job = leased_job(&mut tx, id, worker).await?;
                if let Some(lease) = job.lease.as_mut() {
                    lease.expires_at = lease_until;
                }
                set_job_state(&mut tx, &job).await?;
                commit(tx).await?;
                Ok(job)
            }

            async fn release_lease(
                &self,
                id: JobId,
                worker: &WorkerId,
                at: Timestamp,
            ) -> Result<Job> {
                let mut tx = self.write().await?;
                let mut job = leased_job(&mut tx, id, worker).await?;
                job.hand_back(at);
                set_job_state(&mut tx, &job).await?;
                commit(tx).await?;
                Ok(job)
            }

            async fn finish_item(&self, report: &FinishItem) -> Result<Job> {
                let mut tx = self.write().await?;
                let mut job = leased_job(&mut tx, report.job, &report.worker).await?;
                let Some(index) = report.pending_index(&job)? else {
                    return Ok(job);
                };
                if let Some(request) = report.ledger_request(&job) {
                    apply_in(&mut tx, &request).await?;
                }
                report.apply_to(&mut job, index);
                let item = &job.items[index];
                sqlx::query(
                    "UPDATE job_items SET status = $3, output = $4, error_code = $5, error_message = $6, \
                     finished_at = $7 WHERE job_id = $1 AND idx = $2 AND status = 'pending'",
                )
                .bind(job.id.as_uuid())
                .bind(i64::from(report.index))
                .bind(item.status.as_str())
                .bind(item.output.as_deref())
                .bind(item.error.as_ref().map(|e| e.code.as_str()))
                .bind(item.error.as_ref().map(|e| e.message.as_str()))
                .bind(report.at.unix_ms())
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
                set_job_state(&mut tx, &job).await?;
                commit(tx).await?;
                Ok(job)
            }

            async fn complete_job(
                &self,
                id: JobId,
                worker: &WorkerId,
                entry_id: EntryId,
                at: Timestamp,
            ) -> Result<Job> {
                let mut tx = self.write().await?;
                let mut job = leased_job(&mut tx, id, worker).await?;
                if job.pending() > 0 {
                    return Err(Error::InvalidState("the job still has pending items"));
                }
                close_hold(&mut tx, &job, entry_id, at).await?;
                job.status = job.outcome();
                job.lease = None;
                job.finished_at = Some(at);
                job.updated_at = at;
                set_job_state(&mut tx, &job).await?;
                commit(tx).await?;
                Ok(job)
            }

            async fn cancel_job(
                &self,
                org: OrgId,
                id: JobId,
                entry_id: EntryId,
                at: Timestamp,
            ) -> Result<Job> {
                let mut tx = self.write().await?;
                let mut job = lock_job(&mut tx, id)
                    .await?
                    .filter(|j| j.org == org)
                    .ok_or(Error::NotFound { resource: "job" })?;
                if job.status == JobStatus::Canceled {
                    return Ok(job);
                }
                if job.status.is_terminal() {
                    return Err(Error::InvalidState("the job has already finished"));
                }
                close_hold(&mut tx, &job, entry_id, at).await?;
                sqlx::query(
                    "UPDATE job_items SET status = 'canceled', finished_at = $2 \
                     WHERE job_id = $1 AND status = 'pending'",
                )
                .bind(job.id.as_uuid())
                .bind(at.unix_ms())
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
                for item in job
                    .items
                    .iter_mut()
                    .filter(|i| i.status == ItemStatus::Pending)
                {
                    item.status = ItemStatus::Canceled;
                    item.finished_at = Some(at);
                }
                job.status = JobStatus::Canceled;
                job.lease = None;
                job.finished_at = Some(at);
                job.updated_at = at;
                set_job_state(&mut tx, &job).await?;
                commit(tx).await?;
                Ok(job)
            }
        }
    };
}
pub(crate) use sql_job_store;

/// `impl AuditStore` for a SQL backend: the same SQL on SQLite and PostgreSQL, written once (see
/// [`sql_job_store`] for why a macro). The invoking module provides `read_pool(&self)`,
/// `write(&self)`, `insert_audits` (which links events into the chain), `chain_head(conn, lock)`
/// (the head, locked for the transaction when `lock`), `commit`, `map_error` and the names the
/// bodies use in scope.
macro_rules! sql_audit_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::AuditStore for $store {
            async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut tx = self.write().await?;
                insert_audits(&mut tx, events).await?;
                commit(tx).await
            }

            async fn audit(&self, q: &AuditQuery) -> Result<Page<AuditRecord, u64>> {
                let after = i64::try_from(q.after.unwrap_or(0)).unwrap_or(i64::MAX);
                let rows = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE org = $1 AND seq > $2 \
                     AND ($3 IS NULL OR at >= $3) AND ($4 IS NULL OR at < $4) ORDER BY seq LIMIT $5"
                )))
                .bind(q.org.as_uuid())
                .bind(after)
                .bind(q.since.map(Timestamp::unix_ms))
                .bind(q.until.map(Timestamp::unix_ms))
                .bind(i64::from(q.limit.get()) + 1)
                .fetch_all(self.read_pool())
                .await
                .map_err(map_error)?;
                let items = rows.iter().map(sql::audit).collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, q.limit, |r| r.seq))
            }

            async fn purge_audit_before(&self, cutoff: Timestamp) -> Result<u64> {
                let mut total = 0;
                for _ in 0..PURGE_BATCHES_MAX {
                    let mut tx = self.write().await?;
                    // The head is locked first: a purge and an append never interleave.
                    let head = chain_head(&mut tx, true).await?;
                    let oldest: Vec<(i64, i64, Option<Vec<u8>>)> =
                        sqlx::query_as("SELECT seq, at, hash FROM audit_events ORDER BY seq LIMIT $1")
                            .bind(PURGE_BATCH)
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(map_error)?;
                    let upto = audit_chain::purge_prefix(oldest.iter().map(|(seq, at, hash)| {
                        (
                            u64::try_from(*seq).unwrap_or(0),
                            *at < cutoff.unix_ms(),
                            hash.as_deref(),
                        )
                    }));
                    let Some((seq, hash)) = upto else {
                        break;
                    };
                    // Rows written before the chain existed carry no hash and leave the anchor
                    // alone. Otherwise the last deleted row becomes the anchor event, copied
                    // before it goes, so verification can prove the anchor and read its time.
                    if let Some(hash) = hash.filter(|_| seq > head.anchor_seq) {
                        sqlx::query("DELETE FROM audit_anchor")
                            .execute(&mut *tx)
                            .await
                            .map_err(map_error)?;
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO audit_anchor (slot, {CHAIN_COLUMNS}) \
                             SELECT 1, {CHAIN_COLUMNS} FROM audit_events WHERE seq = $1"
                        )))
                        .bind(sql::seq_param(seq)?)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_error)?;
                        sqlx::query("UPDATE audit_chain SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1")
                            .bind(sql::seq_param(seq)?)
                            .bind(hash.as_bytes().to_vec())
                            .execute(&mut *tx)
                            .await
                            .map_err(map_error)?;
                    }
                    let done = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
                        .bind(sql::seq_param(seq)?)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_error)?;
                    commit(tx).await?;
                    total += done.rows_affected();
                    if oldest.len() < PURGE_BATCH.unsigned_abs() as usize
                        || done.rows_affected() < oldest.len() as u64
                    {
                        break;
                    }
                }
                Ok(total)
            }

            async fn audit_chain_head(&self) -> Result<ChainHead> {
                let mut conn = self.read_pool().acquire().await.map_err(map_error)?;
                chain_head(&mut conn, false).await
            }

            async fn audit_chain_anchor(&self) -> Result<Option<ChainRow>> {
                let row = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {CHAIN_COLUMNS} FROM audit_anchor WHERE slot = 1"
                )))
                .fetch_optional(self.read_pool())
                .await
                .map_err(map_error)?;
                row.as_ref().map(sql::chain_row).transpose()
            }

            async fn audit_chain(&self, after: u64, limit: PageLimit) -> Result<Vec<ChainRow>> {
                let rows = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {CHAIN_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
                )))
                .bind(sql::seq_param(after)?)
                .bind(i64::from(limit.get()))
                .fetch_all(self.read_pool())
                .await
                .map_err(map_error)?;
                rows.iter().map(sql::chain_row).collect()
            }
        }
    };
}
pub(crate) use sql_audit_store;

/// `impl GenerationStore` for a SQL backend: the same SQL on SQLite and PostgreSQL, written
/// once (see [`sql_job_store`] for why a macro). The invoking module provides `read_pool(&self)`,
/// `write(&self)` (a write transaction), `commit`, `map_error` and the names the bodies use in
/// scope. The insert and the read-back share one transaction, so a repeat — even one racing the
/// first insert on another connection, which `ON CONFLICT DO NOTHING` makes wait for it —
/// returns the row that won.
macro_rules! sql_generation_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::GenerationStore for $store {
            async fn insert_generation(
                &self,
                record: &GenerationRecord,
            ) -> Result<GenerationRecord> {
                let mut tx = self.write().await?;
                sqlx::query(sql::GENERATION_INSERT)
                    .bind(record.id.as_uuid())
                    .bind(record.org.as_uuid())
                    .bind(record.outcome.status())
                    .bind(record.prompt.as_str())
                    .bind(record.aspect_ratio.as_str())
                    .bind(record.quality.as_str())
                    .bind(record.outcome.tokens().signed())
                    .bind(record.outcome.media())
                    .bind(record.outcome.error_code())
                    .bind(record.created_at.unix_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_error)?;
                let row = sqlx::query(sql::GENERATION_READ)
                    .bind(record.id.as_uuid())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_error)?;
                let stored = sql::generation(&row)?;
                commit(tx).await?;
                if stored.org != record.org {
                    return Err(Error::store(
                        StoreErrorKind::Conflict,
                        "generation already exists",
                    ));
                }
                Ok(stored)
            }

            async fn generation(
                &self,
                org: OrgId,
                id: GenerationId,
            ) -> Result<Option<GenerationRecord>> {
                let row = sqlx::query(sql::GENERATION_READ)
                    .bind(id.as_uuid())
                    .fetch_optional(self.read_pool())
                    .await
                    .map_err(map_error)?;
                Ok(row
                    .as_ref()
                    .map(sql::generation)
                    .transpose()?
                    .filter(|g| g.org == org))
            }
        }
    };
}
pub(crate) use sql_generation_store;
