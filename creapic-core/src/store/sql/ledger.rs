//! The ledger on both SQL backends: `LedgerStore` for every [`SqlBackend`], and the statements
//! every credit change is made of, each written once.
//!
//! Every function taking a connection runs inside the caller's write transaction. A credit
//! change is a conditional write (`UPDATE balances … WHERE balance >= $n RETURNING`), never a
//! read followed by a write; idempotency is the unique `(org, idempotency_key)` of
//! `ledger_entries`. Holds are read with the backend's row lock, so a capture and a release of
//! one hold serialize on it (PostgreSQL) or on the one writer (SQLite).

use async_trait::async_trait;

use crate::audit::AuditEvent;
use crate::clock::Timestamp;
use crate::error::{Error, Result, StoreErrorKind};
use crate::id::{HoldId, JobId, OrgId};
use crate::ledger::{
    BALANCE_MAX, Credits, DAY_MS, DailyUsage, DayRange, Hold, IdempotencyKey, LedgerEntry,
    LedgerOp, LedgerReceipt, LedgerRequest, LedgerTotals,
};
use crate::page::{Page, PageLimit};
use crate::store::LedgerStore;
use crate::store::sql::audit::insert_audit;
use crate::store::sql::backend::{Conn, SqlBackend};
use crate::store::sql::exec::{Columns, Dialect, const_sql, stmt};
use crate::store::sql::rows::{self, entry_columns, hold_columns, signed};

/// `LedgerStore::stale_holds` on both SQL backends: `$1` the cutoff (Unix ms), `$2` the limit.
/// The partial index `holds_open_unpaid` keeps it a range scan of open holds.
pub(crate) const STALE_HOLDS_SQL: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM holds WHERE closed_at IS NULL AND job_id IS NULL \
     AND captured + released < amount AND created_at < $1 ORDER BY created_at, id LIMIT $2"
);

/// The entry under an idempotency key, with the fingerprint of the request that wrote it: `$1`
/// the organization, `$2` the key. Every write that may be a repeat looks it up.
const ENTRY_UNDER_KEY: &str = concat!(
    "SELECT ",
    entry_columns!(),
    ", fingerprint FROM ledger_entries WHERE org = $1 AND idempotency_key = $2"
);

/// A hold: `$1` the hold, `$2` its organization ([`find_hold`] appends the row lock).
const HOLD_OF_ORG: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM holds WHERE id = $1 AND org = $2"
);

/// `LedgerStore::entries`: `$1` the organization, `$2` the cursor (a `seq`, 0 for the start),
/// `$3` the page size plus one.
const ENTRIES_OF_ORG: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE org = $1 AND seq > $2 ORDER BY seq LIMIT $3"
);

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

/// `LedgerStore::ledger_totals` on both SQL backends: `$1` the cursor (an organization) or
/// NULL, `$2` the page size plus one. Every organization with a balance or an entry; the sums
/// are per organization over the index `ledger_entries_org_seq`.
const LEDGER_TOTALS_SQL: &str = "SELECT k.org AS org, \
     CAST(COALESCE((SELECT b.balance FROM balances b WHERE b.org = k.org), 0) AS BIGINT) AS balance, \
     CAST((SELECT COALESCE(SUM(e.delta), 0) FROM ledger_entries e WHERE e.org = k.org) AS BIGINT) AS entries_sum, \
     (SELECT COUNT(*) FROM ledger_entries e WHERE e.org = k.org) AS entries \
     FROM (SELECT org FROM balances WHERE $1 IS NULL OR org > $1 \
     UNION SELECT org FROM ledger_entries WHERE $1 IS NULL OR org > $1) AS k \
     ORDER BY k.org LIMIT $2";

/// A row of [`USAGE_SQL`].
pub(crate) fn daily_usage(row: &impl Columns) -> Result<DailyUsage> {
    Ok(DailyUsage {
        day: Timestamp::from_unix_ms(row.int("day")?.saturating_mul(DAY_MS)),
        spent: row.credits("spent")?,
        granted: row.credits("granted")?,
        released: row.credits("released")?,
    })
}

/// The entry under `(org, key)`, with the fingerprint of the request that wrote it.
pub(crate) async fn find_entry<B: SqlBackend>(
    conn: &mut Conn<B>,
    org: OrgId,
    key: &IdempotencyKey,
) -> Result<Option<(LedgerEntry, String)>> {
    let row = stmt(ENTRY_UNDER_KEY)
        .bind(org.as_uuid())
        .bind(key.as_str())
        .fetch_optional(conn)
        .await?;
    match row {
        Some(r) => Ok(Some((rows::entry(&r)?, r.text("fingerprint")?))),
        None => Ok(None),
    }
}

/// A hold of `org`; with `lock`, row-locked until the transaction ends (`Dialect::ROW_LOCK`).
pub(crate) async fn find_hold<B: SqlBackend>(
    conn: &mut Conn<B>,
    org: OrgId,
    id: HoldId,
    lock: bool,
) -> Result<Option<Hold>> {
    let text = if lock {
        const_sql!(HOLD_OF_ORG, " ", <B::Db as Dialect>::ROW_LOCK)
    } else {
        HOLD_OF_ORG
    };
    let row = stmt(text)
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(rows::hold).transpose()
}

/// The organization's balance (0 before its first grant).
pub(crate) async fn current_balance<B: SqlBackend>(conn: &mut Conn<B>, org: OrgId) -> Result<u64> {
    let row = stmt("SELECT balance FROM balances WHERE org = $1")
        .bind(org.as_uuid())
        .fetch_optional(conn)
        .await?;
    match row {
        Some(row) => row.count("balance"),
        None => Ok(0),
    }
}

/// Adds `n` (possibly 0) to the balance and returns the new balance.
async fn add_balance<B: SqlBackend>(conn: &mut Conn<B>, org: OrgId, n: u64) -> Result<u64> {
    stmt(
        "INSERT INTO balances (org, balance) VALUES ($1, $2) \
         ON CONFLICT (org) DO UPDATE SET balance = balances.balance + excluded.balance \
         RETURNING balance",
    )
    .bind(org.as_uuid())
    .bind(signed(n))
    .fetch_one(conn)
    .await?
    .count("balance")
}

/// Takes `n` from the balance if it holds at least `n`: the one conditional write every debit
/// and reserve is. `None` when the balance is short (nothing written).
async fn take_balance<B: SqlBackend>(
    conn: &mut Conn<B>,
    org: OrgId,
    n: u64,
) -> Result<Option<u64>> {
    stmt(
        "UPDATE balances SET balance = balance - $2 WHERE org = $1 AND balance >= $2 \
         RETURNING balance",
    )
    .bind(org.as_uuid())
    .bind(signed(n))
    .fetch_optional(conn)
    .await?
    .map(|row| row.count("balance"))
    .transpose()
}

/// Adds `n` to the balance unless that would pass [`BALANCE_MAX`]: `None` (nothing written).
async fn grant_balance<B: SqlBackend>(
    conn: &mut Conn<B>,
    org: OrgId,
    n: Credits,
) -> Result<Option<u64>> {
    stmt(
        "INSERT INTO balances (org, balance) VALUES ($1, $2) \
         ON CONFLICT (org) DO UPDATE SET balance = balances.balance + excluded.balance \
         WHERE balances.balance + excluded.balance <= $3 RETURNING balance",
    )
    .bind(org.as_uuid())
    .bind(n)
    .bind(signed(BALANCE_MAX))
    .fetch_optional(conn)
    .await?
    .map(|row| row.count("balance"))
    .transpose()
}

/// The hold a reserve opens, as it is right after the reserve.
pub(crate) fn new_hold(req: &LedgerRequest, amount: Credits, job: Option<JobId>) -> Hold {
    Hold {
        id: HoldId::from_uuid(req.entry_id.as_uuid()),
        org: req.org,
        job,
        amount,
        captured: Credits::ZERO,
        released: Credits::ZERO,
        created_at: req.at,
        closed_at: None,
    }
}

/// Writes `entry` (its `seq` is assigned by the database) and returns it with its `seq`.
async fn insert_entry<B: SqlBackend>(
    conn: &mut Conn<B>,
    entry: LedgerEntry,
    fingerprint: &str,
) -> Result<LedgerEntry> {
    let seq = stmt(
        "INSERT INTO ledger_entries (id, org, kind, delta, amount, balance_after, hold_id, \
         job_id, idempotency_key, fingerprint, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq",
    )
    .bind(entry.id.as_uuid())
    .bind(entry.org.as_uuid())
    .bind(entry.kind.as_str())
    .bind(entry.delta)
    .bind(entry.amount)
    .bind(entry.balance_after)
    .bind(entry.hold.map(|h| h.as_uuid()))
    .bind(entry.job.map(|j| j.as_uuid()))
    .bind(entry.idempotency_key.as_str())
    .bind(fingerprint)
    .bind(entry.created_at)
    .fetch_one(conn)
    .await?
    .count("seq")?;
    Ok(LedgerEntry { seq, ..entry })
}

/// The entry `req` writes: `delta`, `amount`, the balance after, the hold and job it names.
fn entry_of(
    req: &LedgerRequest,
    delta: i64,
    amount: u64,
    balance: u64,
    hold: Option<&Hold>,
    job: Option<JobId>,
) -> Result<LedgerEntry> {
    Ok(LedgerEntry {
        seq: 0,
        id: req.entry_id,
        org: req.org,
        kind: req.op.kind(),
        delta,
        amount: Credits::new(amount)?,
        balance_after: Credits::new(balance)?,
        hold: hold.map(|h| h.id),
        job,
        idempotency_key: req.idempotency_key.clone(),
        created_at: req.at,
    })
}

/// [`SqlBackend::write_simple`]'s portable form: a grant, debit or reserve as the conditional
/// balance write, the hold (a reserve) and the entry, in the caller's transaction.
pub(crate) async fn write_simple_steps<B: SqlBackend>(
    conn: &mut Conn<B>,
    req: &LedgerRequest,
    fingerprint: &str,
) -> Result<LedgerReceipt> {
    let (delta, amount, hold, balance) = match req.op {
        LedgerOp::Grant { amount } => {
            let Some(b) = grant_balance::<B>(conn, req.org, amount).await? else {
                return Err(Error::LimitExceeded {
                    what: "balance",
                    max: BALANCE_MAX,
                });
            };
            (amount.signed(), amount, None, b)
        }
        LedgerOp::Debit { amount } | LedgerOp::Reserve { amount, .. } => {
            let Some(b) = take_balance::<B>(conn, req.org, amount.get()).await? else {
                return Err(Error::InsufficientCredits {
                    needed: amount.get(),
                    available: current_balance::<B>(conn, req.org).await?,
                });
            };
            let mut hold = None;
            if let LedgerOp::Reserve { job, .. } = req.op {
                let h = new_hold(req, amount, job);
                stmt(
                    "INSERT INTO holds (id, org, job_id, amount, captured, released, created_at) \
                     VALUES ($1, $2, $3, $4, 0, 0, $5)",
                )
                .bind(h.id.as_uuid())
                .bind(h.org.as_uuid())
                .bind(h.job.map(|j| j.as_uuid()))
                .bind(h.amount)
                .bind(h.created_at)
                .execute(conn)
                .await?;
                hold = Some(h);
            }
            (-amount.signed(), amount, hold, b)
        }
        LedgerOp::Capture { .. } | LedgerOp::Release { .. } => {
            return Err(Error::InvalidState("not a grant, debit or reserve"));
        }
    };
    let job = hold.as_ref().and_then(|h| h.job);
    let entry = entry_of(req, delta, amount.get(), balance, hold.as_ref(), job)?;
    Ok(LedgerReceipt {
        entry: insert_entry::<B>(conn, entry, fingerprint).await?,
        hold,
        replayed: false,
    })
}

/// Applies a request that is known not to be a repeat: checks and conditional writes.
pub(crate) async fn write_op<B: SqlBackend>(
    conn: &mut Conn<B>,
    req: &LedgerRequest,
    fingerprint: &str,
) -> Result<LedgerReceipt> {
    let (hold, amount) = match req.op {
        LedgerOp::Grant { .. } | LedgerOp::Debit { .. } | LedgerOp::Reserve { .. } => {
            return B::write_simple(conn, req, fingerprint).await;
        }
        LedgerOp::Capture { hold, amount } => (hold, Some(amount)),
        LedgerOp::Release { hold, amount } => (hold, amount),
    };
    let mut h = find_hold::<B>(conn, req.org, hold, true)
        .await?
        .ok_or(Error::NotFound { resource: "hold" })?;
    let capturing = matches!(req.op, LedgerOp::Capture { .. });
    // A release without an amount takes what is left, and closes the hold.
    let take = amount.map_or(h.remaining(), Credits::get);
    h.check_take(take)?;
    let closed = (!capturing && amount.is_none()).then_some(req.at);
    let (capture, release) = if capturing { (take, 0) } else { (0, take) };
    take_from_hold::<B>(conn, hold, capture, release, closed).await?;
    h.captured = Credits::new(h.captured.get() + capture)?;
    h.released = Credits::new(h.released.get() + release)?;
    h.closed_at = h.closed_at.or(closed);
    // Captured credits left the balance when they were held; released ones come back.
    let balance = add_balance::<B>(conn, req.org, release).await?;
    let entry = entry_of(req, signed(release), take, balance, Some(&h), h.job)?;
    Ok(LedgerReceipt {
        entry: insert_entry::<B>(conn, entry, fingerprint).await?,
        hold: Some(h),
        replayed: false,
    })
}

/// Moves credits out of an open hold; the condition repeats the check so the write alone is
/// safe.
async fn take_from_hold<B: SqlBackend>(
    conn: &mut Conn<B>,
    hold: HoldId,
    capture: u64,
    release: u64,
    closed_at: Option<Timestamp>,
) -> Result<()> {
    let done = stmt(
        "UPDATE holds SET captured = captured + $2, released = released + $3, \
         closed_at = COALESCE($4, closed_at) \
         WHERE id = $1 AND closed_at IS NULL AND captured + released + $2 + $3 <= amount",
    )
    .bind(hold.as_uuid())
    .bind(signed(capture))
    .bind(signed(release))
    .bind(closed_at)
    .execute(conn)
    .await?;
    if done != 1 {
        return Err(Error::InvalidState(
            "the amount exceeds the credits remaining in the hold",
        ));
    }
    Ok(())
}

/// A repeat's answer: the first entry, and the hold as it is now.
pub(crate) async fn replay<B: SqlBackend>(
    conn: &mut Conn<B>,
    entry: LedgerEntry,
) -> Result<LedgerReceipt> {
    let hold = match entry.hold {
        Some(h) => find_hold::<B>(conn, entry.org, h, false).await?,
        None => None,
    };
    Ok(LedgerReceipt {
        entry,
        hold,
        replayed: true,
    })
}

/// Whether `e` means "this write did not happen, and a repeat may explain why": a refusal or a
/// unique violation. A backend that writes first answers such a request with
/// [`explain_refusal`].
pub(crate) fn may_be_repeat(e: &Error) -> bool {
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

/// The answer to a request whose write was `refused` and wrote nothing: when its key was used
/// before, the first answer (a replay), or a conflict when the parameters differ; otherwise
/// `refused` itself.
pub(crate) async fn explain_refusal<B: SqlBackend>(
    conn: &mut Conn<B>,
    req: &LedgerRequest,
    fingerprint: &str,
    refused: Error,
) -> Result<LedgerReceipt> {
    match find_entry::<B>(conn, req.org, &req.idempotency_key).await? {
        Some((entry, seen)) if seen == fingerprint => replay::<B>(conn, entry).await,
        Some(_) => Err(Error::IdempotencyConflict),
        None => Err(refused),
    }
}

/// Applies one request inside the caller's write transaction: a repeat of its key is answered
/// from the first entry (or refused when its parameters differ), anything else is written.
pub(crate) async fn apply_in<B: SqlBackend>(
    conn: &mut Conn<B>,
    req: &LedgerRequest,
) -> Result<LedgerReceipt> {
    let fingerprint = req.op.fingerprint();
    if let Some((entry, seen)) = find_entry::<B>(conn, req.org, &req.idempotency_key).await? {
        if seen != fingerprint {
            return Err(Error::IdempotencyConflict);
        }
        return replay::<B>(conn, entry).await;
    }
    write_op::<B>(conn, req, &fingerprint).await
}

/// [`SqlBackend::apply`]'s portable form: the request and its audit event in one write
/// transaction.
pub(crate) async fn apply_in_transaction<B: SqlBackend>(
    store: &B,
    request: &LedgerRequest,
    audit: Option<&AuditEvent>,
) -> Result<LedgerReceipt> {
    let mut tx = store.write().await?;
    let receipt = apply_in::<B>(&mut tx, request).await?;
    if receipt.replayed {
        return Ok(receipt);
    }
    if let Some(event) = audit {
        insert_audit::<B>(&mut tx, event).await?;
    }
    B::commit(tx).await?;
    Ok(receipt)
}

#[async_trait]
impl<B: SqlBackend> LedgerStore for B {
    async fn apply(
        &self,
        request: &LedgerRequest,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt> {
        SqlBackend::apply(self, request, audit).await
    }

    async fn balance(&self, org: OrgId) -> Result<Credits> {
        let mut conn = self.read().await?;
        Credits::new(current_balance::<B>(&mut conn, org).await?)
    }

    async fn hold(&self, org: OrgId, id: HoldId) -> Result<Option<Hold>> {
        let mut conn = self.read().await?;
        find_hold::<B>(&mut conn, org, id, false).await
    }

    async fn stale_holds(&self, before: Timestamp, limit: PageLimit) -> Result<Vec<Hold>> {
        let mut conn = self.read().await?;
        let rows = stmt(STALE_HOLDS_SQL)
            .bind(before)
            .bind(i64::from(limit.get()))
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(rows::hold).collect()
    }

    async fn entries(
        &self,
        org: OrgId,
        after: Option<u64>,
        limit: PageLimit,
    ) -> Result<Page<LedgerEntry, u64>> {
        let after = i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX);
        let mut conn = self.read().await?;
        let rows = stmt(ENTRIES_OF_ORG)
            .bind(org.as_uuid())
            .bind(after)
            .bind(i64::from(limit.get()) + 1)
            .fetch_all(&mut *conn)
            .await?;
        let items = rows.iter().map(rows::entry).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |e| e.seq))
    }

    async fn held(&self, org: OrgId) -> Result<Credits> {
        let mut conn = self.read().await?;
        stmt(HELD_SQL)
            .bind(org.as_uuid())
            .fetch_one(&mut *conn)
            .await?
            .credits("held")
    }

    async fn usage(&self, org: OrgId, range: &DayRange) -> Result<Vec<DailyUsage>> {
        let mut conn = self.read().await?;
        let rows = stmt(USAGE_SQL)
            .bind(org.as_uuid())
            .bind(range.start())
            .bind(range.end())
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(daily_usage).collect()
    }

    async fn ledger_totals(
        &self,
        after: Option<OrgId>,
        limit: PageLimit,
    ) -> Result<Page<LedgerTotals, OrgId>> {
        let mut conn = self.read().await?;
        let rows = stmt(LEDGER_TOTALS_SQL)
            .bind(after.map(|o| o.as_uuid()))
            .bind(i64::from(limit.get()) + 1)
            .fetch_all(&mut *conn)
            .await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(LedgerTotals {
                    org: OrgId::from_uuid(row.uuid("org")?),
                    balance: row.credits("balance")?,
                    entries_sum: row.int("entries_sum")?,
                    entries: row.count("entries")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |t| t.org))
    }
}
