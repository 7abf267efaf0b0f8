//! Idempotency records of HTTP requests on both SQL backends: `IdempotencyStore` for every
//! [`SqlBackend`].
//!
//! Each step is one conditional write on the `(org, key)` row — insert-or-nothing, take over an
//! expired lock, renew, complete, give back — so no step races another request without a
//! transaction around them; a record given back between two steps sends `begin_request` round
//! again, a bounded number of times.

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{AttemptId, OrgId};
use crate::idempotency::{
    Abandon, IdempotencyBegin, RESPONSE_MAX_BYTES, RequestFingerprint, StoredResponse,
};
use crate::ledger::IdempotencyKey;
use crate::store::IdempotencyStore;
use crate::store::sql::backend::{SqlBackend, purge_in_batches};
use crate::store::sql::exec::{Columns, corrupt, stmt};

/// How often `begin_request` goes round when the record changes between its steps.
const BEGIN_ROUNDS: usize = 3;

/// `IdempotencyStore` statements, the same text on both backends. Parameters of
/// [`REQUEST_INSERT`]: org, key, fingerprint, attempt, now, lock until.
const REQUEST_INSERT: &str = "INSERT INTO idempotency_requests \
     (org, key, fingerprint, attempt, created_at, locked_until) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (org, key) DO NOTHING";

/// A takeover of an unfinished record whose lock expired (or was given back): org, key,
/// fingerprint, now, lock until. Returns the record's attempt, which the takeover resumes.
const REQUEST_TAKE_OVER: &str = "UPDATE idempotency_requests SET locked_until = $5 \
     WHERE org = $1 AND key = $2 AND fingerprint = $3 AND response_status IS NULL \
     AND (locked_until IS NULL OR locked_until <= $4) RETURNING attempt";

/// The record under (org, key), for [`begin_outcome`].
const REQUEST_READ: &str = "SELECT fingerprint, response_status, response_body \
     FROM idempotency_requests WHERE org = $1 AND key = $2";

/// Extends a running request's lock: org, key, attempt, lock until.
const REQUEST_RENEW: &str = "UPDATE idempotency_requests SET locked_until = $4 \
     WHERE org = $1 AND key = $2 AND attempt = $3 AND response_status IS NULL";

/// Stores the response: org, key, status, body.
const REQUEST_COMPLETE: &str = "UPDATE idempotency_requests SET locked_until = NULL, \
     response_status = $3, response_body = $4 WHERE org = $1 AND key = $2";

/// [`Abandon::Settled`](crate::idempotency::Abandon): the unfinished record goes.
const REQUEST_ABANDON_SETTLED: &str = "DELETE FROM idempotency_requests \
     WHERE org = $1 AND key = $2 AND response_status IS NULL";

/// [`Abandon::Unsettled`](crate::idempotency::Abandon): unlocked, attempt kept.
const REQUEST_ABANDON_UNSETTLED: &str = "UPDATE idempotency_requests \
     SET locked_until = NULL WHERE org = $1 AND key = $2 AND response_status IS NULL";

/// The statement giving back a started request.
const fn abandon_statement(how: Abandon) -> &'static str {
    match how {
        Abandon::Settled => REQUEST_ABANDON_SETTLED,
        Abandon::Unsettled => REQUEST_ABANDON_UNSETTLED,
    }
}

/// What a takeover's `RETURNING attempt` row says: the attempt it resumes (`None` for a record
/// written before attempts existed).
fn taken_over(row: &impl Columns) -> Result<IdempotencyBegin> {
    Ok(IdempotencyBegin::Started {
        attempt: row.opt_uuid("attempt")?.map(AttemptId::from_uuid),
    })
}

/// What an existing record answers to a new start (after the insert and the takeover failed).
fn begin_outcome(row: &impl Columns, fingerprint: RequestFingerprint) -> Result<IdempotencyBegin> {
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

#[async_trait]
impl<B: SqlBackend> IdempotencyStore for B {
    async fn begin_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        fingerprint: RequestFingerprint,
        attempt: AttemptId,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> Result<IdempotencyBegin> {
        let mut conn = self.autocommit().await?;
        for _ in 0..BEGIN_ROUNDS {
            let started = stmt(REQUEST_INSERT)
                .bind(org.as_uuid())
                .bind(key.as_str())
                .bind(fingerprint.as_bytes().as_slice())
                .bind(attempt.as_uuid())
                .bind(now)
                .bind(lock_until)
                .execute(&mut *conn)
                .await?;
            if started == 1 {
                return Ok(IdempotencyBegin::Started {
                    attempt: Some(attempt),
                });
            }
            let taken = stmt(REQUEST_TAKE_OVER)
                .bind(org.as_uuid())
                .bind(key.as_str())
                .bind(fingerprint.as_bytes().as_slice())
                .bind(now)
                .bind(lock_until)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = taken {
                return taken_over(&row);
            }
            let row = stmt(REQUEST_READ)
                .bind(org.as_uuid())
                .bind(key.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = row {
                return begin_outcome(&row, fingerprint);
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
        if response.body.len() > RESPONSE_MAX_BYTES {
            return Err(Error::LimitExceeded {
                what: "stored response size",
                max: RESPONSE_MAX_BYTES as u64,
            });
        }
        let mut conn = self.autocommit().await?;
        let done = stmt(REQUEST_COMPLETE)
            .bind(org.as_uuid())
            .bind(key.as_str())
            .bind(i64::from(response.status))
            .bind(response.body.as_slice())
            .execute(&mut *conn)
            .await?;
        if done == 0 {
            return Err(Error::NotFound {
                resource: "idempotency record",
            });
        }
        Ok(())
    }

    async fn renew_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        attempt: AttemptId,
        lock_until: Timestamp,
    ) -> Result<bool> {
        let mut conn = self.autocommit().await?;
        let renewed = stmt(REQUEST_RENEW)
            .bind(org.as_uuid())
            .bind(key.as_str())
            .bind(attempt.as_uuid())
            .bind(lock_until)
            .execute(&mut *conn)
            .await?;
        Ok(renewed == 1)
    }

    async fn abandon_request(&self, org: OrgId, key: &IdempotencyKey, how: Abandon) -> Result<()> {
        let mut conn = self.autocommit().await?;
        stmt(abandon_statement(how))
            .bind(org.as_uuid())
            .bind(key.as_str())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn purge_requests_before(&self, cutoff: Timestamp) -> Result<u64> {
        purge_in_batches(self, || {
            stmt(
                "DELETE FROM idempotency_requests WHERE (org, key) IN \
                 (SELECT org, key FROM idempotency_requests WHERE created_at < $1 LIMIT $2)",
            )
            .bind(cutoff)
        })
        .await
    }
}
