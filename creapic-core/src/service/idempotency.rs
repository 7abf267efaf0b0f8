//! HTTP idempotency records (`Idempotency-Key`): begin under a lock, complete, renew a long
//! request's lock, abandon, and purge past the retention.
//!
//! This file mints the attempt ids and times; the store decides replay, mismatch and takeover in
//! one atomic call.

use std::time::Duration;

use crate::error::Result;
use crate::id::{AttemptId, OrgId};
use crate::idempotency::{Abandon, IdempotencyBegin, RequestFingerprint, StoredResponse};
use crate::ledger::IdempotencyKey;
use crate::store::Store;

use super::Creapic;

impl<S: Store + ?Sized> Creapic<S> {
    /// Starts a request under an `Idempotency-Key`, locking it for `lock`. A new record gets a
    /// new [`AttemptId`]; a takeover of an expired lock resumes the record's attempt.
    pub async fn begin_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        fingerprint: RequestFingerprint,
        lock: Duration,
    ) -> Result<IdempotencyBegin> {
        let now = self.now();
        let attempt = AttemptId::generate(now, self.rng.as_ref());
        self.store
            .begin_request(org, key, fingerprint, attempt, now, now.plus(lock))
            .await
    }

    /// Stores the response of a started request.
    pub async fn complete_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<()> {
        self.store
            .complete_request(org, key, response, self.now())
            .await
    }

    /// Keeps the lock of a request still running (attempt `attempt`) for another `lock`: a
    /// long request renews it, so a retry never takes over while it works, yet the lock of a
    /// request that died lapses within `lock`. `false` when the record moved on.
    pub async fn renew_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        attempt: AttemptId,
        lock: Duration,
    ) -> Result<bool> {
        let until = self.now().plus(lock);
        self.store.renew_request(org, key, attempt, until).await
    }

    /// Gives back a started request so it may be retried: as a new attempt when nothing of it
    /// is charged ([`Abandon::Settled`]), as the same attempt when that is unknown.
    pub async fn abandon_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        how: Abandon,
    ) -> Result<()> {
        self.store.abandon_request(org, key, how).await
    }

    /// Deletes idempotency records past their retention.
    pub async fn purge_requests(&self) -> Result<u64> {
        let cutoff = self.now().minus(self.config.idempotency_retention);
        self.store.purge_requests_before(cutoff).await
    }
}
