//! How every domain value maps to columns and back, on both SQL backends: the column lists and
//! one decoding function per row type.
//!
//! Design decision: both schemas use the same table and column names and the same encodings (ids
//! as uuids, times as i64 Unix milliseconds, credits as i64, digests as 32 bytes), so a row is
//! decoded by one function whatever the backend. Decoding never trusts the database: a value that
//! does not make a valid domain value is a `Store { kind: Corrupt }` error, never a panic.

use std::net::IpAddr;

use uuid::Uuid;

use crate::audit::{Actor, AuditAction, AuditEvent, AuditRecord};
use crate::audit_chain::{AuditHash, ChainHead, ChainRow};
use crate::error::Result;
use crate::generation::{AspectRatio, GenerationOutcome, GenerationRecord, Quality};
use crate::id::{AuditId, EntryId, GenerationId, HoldId, JobId, KeyId, OrgId, UserId};
use crate::job::{ItemError, ItemStatus, Job, JobItem, JobKind, JobStatus, Lease, WorkerId};
use crate::key::{ApiKey, KeyMode, KeyName, KeyPrefix};
use crate::ledger::{EntryKind, Hold, IdempotencyKey, LedgerEntry};
use crate::org::{Email, OrgName, Organization, Role, User};
use crate::scope::ScopeSet;
use crate::store::sql::exec::{Columns, corrupt};

/// Most rows one purge statement deletes: purges run in bounded batches so that a large backlog
/// never becomes one long transaction holding locks.
pub(crate) const PURGE_BATCH: i64 = 5_000;
/// Most purge batches in one call; a larger backlog is finished by the next call.
pub(crate) const PURGE_BATCHES_MAX: usize = 1_000;

// Column lists are macros, not `const`s, so that `concat!` can splice them into statement
// texts that are themselves constants: no statement is formatted at run time (see `exec.rs`).

/// Columns of `api_keys`, in the order [`key`] reads them.
macro_rules! key_columns {
    () => {
        "id, org, name, prefix, scopes, mode, created_at, created_by, last_used_at, deleted_at, \
         expires_at"
    };
}
/// Columns of `ledger_entries`.
macro_rules! entry_columns {
    () => {
        "seq, id, org, kind, delta, amount, balance_after, hold_id, job_id, idempotency_key, \
         created_at"
    };
}
/// Columns of `holds`.
macro_rules! hold_columns {
    () => {
        "id, org, job_id, amount, captured, released, created_at, closed_at"
    };
}
/// Columns of `jobs`.
macro_rules! job_columns {
    () => {
        "id, org, key_id, kind, mode, status, unit_cost, hold_id, idempotency_key, created_at, \
         updated_at, finished_at, lease_worker, lease_expires_at, attempts"
    };
}
/// Columns of `job_items`.
macro_rules! item_columns {
    () => {
        "job_id, idx, input, status, output, error_code, error_message, finished_at"
    };
}
/// Columns of `audit_events`.
macro_rules! audit_columns {
    () => {
        "seq, id, org, at, action, actor, ip, user_agent, key_id, key_prefix, detail"
    };
}
/// Columns of `audit_events` as the chain verifier reads them.
macro_rules! chain_columns {
    () => {
        "seq, id, org, at, action, actor, ip, user_agent, key_id, key_prefix, detail, prev_hash, \
         hash"
    };
}
/// Columns of `audit_chain`, the chain's one-row head.
macro_rules! head_columns {
    () => {
        "anchor_seq, anchor_hash, last_seq, last_hash"
    };
}
pub(crate) use {
    audit_columns, chain_columns, entry_columns, head_columns, hold_columns, item_columns,
    job_columns, key_columns,
};

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

/// An `api_keys` row (`key_columns!`).
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

/// A `ledger_entries` row (`entry_columns!`).
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

/// A `holds` row (`hold_columns!`).
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

/// A `jobs` row (`job_columns!`) with its items.
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

/// A `job_items` row (`item_columns!`).
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

/// An `audit_events` row (`audit_columns!`).
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

/// An `audit_events` row as verification reads it (`chain_columns!`): a column that does not
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

/// The `audit_chain` row (`head_columns!`).
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
