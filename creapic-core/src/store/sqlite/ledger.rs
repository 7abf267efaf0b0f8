//! SQLite's own ledger writes: a debit written entry-first (two statements, nothing written when
//! it is refused), and every ledger request without an audit event group-committed
//! ([`crate::store::group_commit`]) — the requests that queue while the one writer is busy are
//! applied together in one `BEGIN IMMEDIATE` transaction.
//!
//! Design decision: **one writer, so one queue and one transaction for everything that
//! waited.** SQLite serializes every write transaction of the file; a request's cost is its
//! statements plus a transaction's `BEGIN` and `COMMIT`, each a round trip to the driver's
//! worker thread. Alone (the queue was idle), a debit is four round trips — `BEGIN`, the entry,
//! the balance, `COMMIT` — exactly what a hand-written loop of the same statements sends. When
//! requests queue behind a busy writer, the next batch (any organizations, any operations, at
//! most [`crate::store::group_commit`]'s batch size) shares one `BEGIN` and one `COMMIT`.
//!
//! Each request of a batch is still all or nothing and answered as if applied alone, in arrival
//! order: the transaction holds SQLite's write lock, so what a request reads (its key, the
//! balance, a hold) cannot change before it writes. A refused debit writes nothing (the entry is
//! inserted only when the balance covers it and the key is unused; the balance follows), so the
//! batch goes on. Any other failure inside a batch may have written part of its request: the
//! whole transaction is rolled back and every request of the batch is applied alone, in order,
//! each in its own transaction — slower, never wrong.

use std::sync::atomic::Ordering;

use sqlx::SqliteConnection;

use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::ledger::{Credits, LedgerEntry, LedgerOp, LedgerReceipt, LedgerRequest};
use crate::store::group_commit::{self, BatchApply};
use crate::store::sql::backend::SqlBackend;
use crate::store::sql::exec::{Columns, corrupt, stmt};
use crate::store::sql::insert_audit;
use crate::store::sql::ledger::{apply_in, current_balance, explain_refusal, may_be_repeat};
use crate::store::sqlite::SqliteStore;

/// A debit's entry, written only when the balance covers it and its key is unused: `$1` the
/// entry, `$2` the organization, `$3` the amount, `$4` the idempotency key, `$5` the
/// fingerprint, `$6` the time. No row back: nothing was written. (`WHERE` before `ON CONFLICT`
/// is what SQLite's grammar needs to read an upsert after a `SELECT`.)
const DEBIT_ENTRY_SQL: &str = "INSERT INTO ledger_entries (id, org, kind, delta, amount, \
     balance_after, hold_id, job_id, idempotency_key, fingerprint, created_at) \
     SELECT $1, $2, 'debit', -$3, $3, balance - $3, NULL, NULL, $4, $5, $6 \
     FROM balances WHERE org = $2 AND balance >= $3 \
     ON CONFLICT (org, idempotency_key) DO NOTHING RETURNING seq, balance_after";

/// The balance after a debit's entry: `$1` the organization, `$2` the amount.
const DEBIT_BALANCE_SQL: &str =
    "UPDATE balances SET balance = balance - $2 WHERE org = $1 AND balance >= $2";

/// A debit inside the writer's transaction: the entry (with the balance it leaves), then the
/// balance. Refused — the balance is short, or (the caller explains it) the key was used —
/// means nothing was written.
pub(super) async fn debit(
    conn: &mut SqliteConnection,
    req: &LedgerRequest,
    amount: Credits,
    fingerprint: &str,
) -> Result<LedgerReceipt> {
    let row = stmt(DEBIT_ENTRY_SQL)
        .bind(req.entry_id.as_uuid())
        .bind(req.org.as_uuid())
        .bind(amount.signed())
        .bind(req.idempotency_key.as_str())
        .bind(fingerprint)
        .bind(req.at)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Err(Error::InsufficientCredits {
            needed: amount.get(),
            available: current_balance::<SqliteStore>(conn, req.org).await?,
        });
    };
    let moved = stmt(DEBIT_BALANCE_SQL)
        .bind(req.org.as_uuid())
        .bind(amount.signed())
        .execute(&mut *conn)
        .await?;
    if moved != 1 {
        // The entry was checked against this very balance under the write lock.
        return Err(corrupt(
            "balance",
            "changed between a debit's entry and its balance",
        ));
    }
    Ok(LedgerReceipt {
        entry: LedgerEntry {
            seq: row.count("seq")?,
            id: req.entry_id,
            org: req.org,
            kind: req.op.kind(),
            delta: -amount.signed(),
            amount,
            balance_after: row.credits("balance_after")?,
            hold: None,
            job: None,
            idempotency_key: req.idempotency_key.clone(),
            created_at: req.at,
        },
        hold: None,
        replayed: false,
    })
}

/// `request` inside the writer's transaction. `Ok(answer)`: nothing of the request is
/// half-written (it was written whole, replayed, or refused before writing). `Err`: it failed
/// in a way that may have written part of it; the transaction must be rolled back.
async fn step(
    conn: &mut SqliteConnection,
    request: &LedgerRequest,
) -> Result<Result<LedgerReceipt>> {
    if let LedgerOp::Debit { amount } = request.op {
        // Written first: the hot path is a fresh key, and a refusal writes nothing.
        let fingerprint = request.op.fingerprint();
        return match debit(conn, request, amount, &fingerprint).await {
            Err(e) if may_be_repeat(&e) => {
                Ok(explain_refusal::<SqliteStore>(conn, request, &fingerprint, e).await)
            }
            Err(e) => Err(e),
            Ok(receipt) => Ok(Ok(receipt)),
        };
    }
    // Looked up first (no race: the transaction holds the write lock); a refusal after a
    // partial write (a hold capture's entry, say) is rolled back by the caller.
    apply_in::<SqliteStore>(conn, request).await.map(Ok)
}

/// One request in its own transaction, with its audit event.
pub(super) async fn apply_alone(
    store: &SqliteStore,
    request: &LedgerRequest,
    audit: Option<&AuditEvent>,
) -> Result<LedgerReceipt> {
    let mut tx = store.write().await?;
    // Dropping `tx` rolls back whatever a failed request wrote.
    let receipt = step(&mut tx, request).await??;
    if receipt.replayed {
        return Ok(receipt);
    }
    if let Some(event) = audit {
        insert_audit::<SqliteStore>(&mut tx, event).await?;
    }
    SqliteStore::commit(tx).await?;
    store.ledger_commits.fetch_add(1, Ordering::Relaxed);
    Ok(receipt)
}

/// The store as [`group_commit::GroupCommit`] sees it: one turn for every request.
#[derive(Clone, Debug)]
pub(super) struct SqliteLedger(pub(super) SqliteStore);

impl BatchApply for SqliteLedger {
    type Key = ();
    type Memo = ();

    fn key(_request: &LedgerRequest) {}

    async fn apply_one(&self, request: LedgerRequest) -> Result<LedgerReceipt> {
        apply_alone(&self.0, &request, None).await
    }

    async fn apply_batch(
        &self,
        _key: (),
        requests: Vec<LedgerRequest>,
        _memo: &mut (),
    ) -> Vec<Result<LedgerReceipt>> {
        match batch(&self.0, &requests).await {
            Ok(Some(answers)) => answers,
            // A request failed after writing part of itself: nothing of the batch was
            // committed; each request alone, in order, which handles every case.
            Ok(None) => {
                let mut answers = Vec::with_capacity(requests.len());
                for request in &requests {
                    answers.push(apply_alone(&self.0, request, None).await);
                }
                answers
            }
            // The transaction itself failed (no write lock in time, or the commit): nothing
            // was written.
            Err(e) => requests
                .iter()
                .map(|_| Err(group_commit::replicate(&e)))
                .collect(),
        }
    }
}

/// `requests` in one transaction, answered in order. `Ok(None)`: one of them failed after
/// writing part of itself, and the transaction was rolled back.
async fn batch(
    store: &SqliteStore,
    requests: &[LedgerRequest],
) -> Result<Option<Vec<Result<LedgerReceipt>>>> {
    let mut tx = store.write().await?;
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        match step(&mut tx, request).await {
            Ok(answer) => answers.push(answer),
            Err(_) => return Ok(None),
        }
    }
    SqliteStore::commit(tx).await?;
    store.ledger_commits.fetch_add(1, Ordering::Relaxed);
    Ok(Some(answers))
}
