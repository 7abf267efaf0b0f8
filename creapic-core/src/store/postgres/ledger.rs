//! PostgreSQL's own ledger writes: grant, debit and reserve as one statement, requests applied
//! write-first, and concurrent debits of one organization group-committed
//! ([`crate::store::group_commit`]).
//!
//! Design decision: **the database arbitrates, never the process.** A write is attempted first;
//! only when it is refused or conflicts is the earlier entry under the same idempotency key looked
//! up and replayed, so the hot path (a debit of a key that was never used) costs one round trip.

use std::collections::HashMap;

use sqlx::postgres::{PgConnection, PgPool};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::error::{Error, Result, StoreErrorKind};
use crate::id::OrgId;
use crate::ledger::{BALANCE_MAX, Credits, LedgerEntry, LedgerOp, LedgerReceipt, LedgerRequest};
use crate::store::group_commit::{self, BatchApply};
use crate::store::postgres::{PgStore, map_error};
use crate::store::sql::exec::{Columns, corrupt};
use crate::store::sql::insert_audit;
use crate::store::sql::ledger::{
    current_balance, explain_refusal, may_be_repeat, new_hold, replay, write_op,
};
use crate::store::sql::rows::{self, entry_columns, signed};

/// The ledger entry insert that ends [`GRANT_SQL`], [`DEBIT_SQL`] and [`RESERVE_SQL`].
macro_rules! insert_entry {
    () => {
        "INSERT INTO ledger_entries (id, org, kind, delta, amount, balance_after, hold_id, \
         job_id, idempotency_key, fingerprint, created_at)"
    };
}

/// A grant as one statement ([`one_statement`]'s parameters; `$8` is `BALANCE_MAX`).
const GRANT_SQL: &str = concat!(
    "WITH b AS (INSERT INTO balances (org, balance) VALUES ($2, $3) \
     ON CONFLICT (org) DO UPDATE SET balance = balances.balance + EXCLUDED.balance \
     WHERE balances.balance + EXCLUDED.balance <= $8 RETURNING balance) ",
    insert_entry!(),
    " SELECT $1, $2, 'grant', $3, $3, b.balance, NULL::uuid, $7, $4, \
     $5, $6 FROM b RETURNING seq, balance_after"
);
/// A debit as one statement ([`one_statement`]'s parameters).
const DEBIT_SQL: &str = concat!(
    "WITH b AS (UPDATE balances SET balance = balance - $3 \
     WHERE org = $2 AND balance >= $3 RETURNING balance) ",
    insert_entry!(),
    " SELECT $1, $2, 'debit', -$3, $3, b.balance, NULL::uuid, $7, $4, \
     $5, $6 FROM b RETURNING seq, balance_after"
);
/// A reserve as one statement ([`one_statement`]'s parameters): the hold too.
const RESERVE_SQL: &str = concat!(
    "WITH b AS (UPDATE balances SET balance = balance - $3 \
     WHERE org = $2 AND balance >= $3 RETURNING balance), \
     h AS (INSERT INTO holds (id, org, job_id, amount, captured, released, \
     created_at) SELECT $1, $2, $7, $3, 0, 0, $6 FROM b RETURNING id) ",
    insert_entry!(),
    " SELECT $1, $2, 'hold', -$3, $3, b.balance, h.id, $7, $4, $5, $6 \
     FROM b, h RETURNING seq, balance_after"
);
/// The entries under any of some idempotency keys: `$1` the organization, `$2` the keys.
const ENTRIES_UNDER_KEYS: &str = concat!(
    "SELECT ",
    entry_columns!(),
    ", fingerprint FROM ledger_entries WHERE org = $1 AND idempotency_key = ANY($2)"
);

/// Grant, debit and reserve as one statement: the conditional balance write, the hold (for a
/// reserve) and the ledger entry are data-modifying CTEs of one `INSERT`, atomic on their own,
/// in or out of a transaction. Refused (balance short, or over the limit) means no row: nothing
/// was written.
pub(super) async fn one_statement(
    conn: &mut PgConnection,
    req: &LedgerRequest,
    fingerprint: &str,
) -> Result<LedgerReceipt> {
    let (text, amount, job) = match req.op {
        LedgerOp::Grant { amount } => (GRANT_SQL, amount, None),
        LedgerOp::Debit { amount } => (DEBIT_SQL, amount, None),
        LedgerOp::Reserve { amount, job } => (RESERVE_SQL, amount, job),
        LedgerOp::Capture { .. } | LedgerOp::Release { .. } => {
            return Err(Error::InvalidState("not a single-statement operation"));
        }
    };
    let mut query = sqlx::query_as::<_, (i64, i64)>(text)
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
                available: current_balance::<PgStore>(conn, req.org).await?,
            },
        });
    };
    let hold = match req.op {
        LedgerOp::Reserve { amount, job } => Some(new_hold(req, amount, job)),
        _ => None,
    };
    let delta = match req.op {
        LedgerOp::Grant { .. } => amount.signed(),
        _ => -amount.signed(),
    };
    let entry = LedgerEntry {
        seq: u64::try_from(seq).map_err(|e| corrupt("seq", e))?,
        id: req.entry_id,
        org: req.org,
        kind: req.op.kind(),
        delta,
        amount,
        balance_after: Credits::new(
            u64::try_from(balance).map_err(|e| corrupt("balance_after", e))?,
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

/// One request applied on its own: write first; when the write is refused or conflicts, the
/// earlier entry under the same key (if any) explains it and is replayed.
pub(super) async fn apply_alone(
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
            let receipt = write_op::<PgStore>(&mut tx, request, &fingerprint).await?;
            if let Some(event) = audit {
                insert_audit::<PgStore>(&mut tx, event).await?;
            }
            tx.commit().await.map_err(map_error)?;
            Ok(receipt)
        }
        .await
    };
    match written {
        Err(e) if may_be_repeat(&e) => {
            // Nothing was written. If the key was used before, that explains it.
            let mut conn = pool.acquire().await.map_err(map_error)?;
            explain_refusal::<PgStore>(&mut conn, request, &fingerprint, e).await
        }
        other => other,
    }
}

/// The debit side of the store as [`group_commit::GroupCommit`] sees it.
#[derive(Clone)]
pub(super) struct PgLedger {
    pool: PgPool,
}

impl PgStore {
    /// The ledger's group-commit side.
    pub(super) fn ledger(&self) -> PgLedger {
        PgLedger {
            pool: self.pool.clone(),
        }
    }
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
    type Key = OrgId;
    type Memo = Option<i64>;

    fn key(request: &LedgerRequest) -> OrgId {
        request.org
    }

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
            Some(b) => u64::try_from(b).map_err(|e| corrupt("balance", e))?,
            None => current_balance::<PgStore>(&mut conn, org).await?,
        };
        let mut running = before;
        let mut plan = Vec::with_capacity(requests.len());
        let mut accepted: HashMap<&str, usize> = HashMap::new();
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
        let mut seqs = HashMap::new();
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
        let mut earlier = HashMap::new();
        if !refused.is_empty() {
            let rows = sqlx::query(ENTRIES_UNDER_KEYS)
                .bind(org.as_uuid())
                .bind(&refused)
                .fetch_all(&mut *conn)
                .await
                .map_err(map_error)?;
            for row in &rows {
                let entry = rows::entry(row)?;
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
                        .ok_or_else(|| corrupt("seq", "missing from the batch insert"))?;
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
                        replay::<PgStore>(&mut conn, entry).await
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
        seq: u64::try_from(seq).map_err(|e| corrupt("seq", e))?,
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
