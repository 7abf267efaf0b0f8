//! Jobs: submission by a [`Caller`] — an API key, or a member of the organization through the
//! console — with the cost reserved in the same store call; reading, listing and cancelling
//! them; and the worker's side: claims, leases, hand-back, each item's result and completion.
//!
//! A key is checked as it always was (its scope for submitting and listing; reading and
//! canceling check none, the routes do); a member's membership is checked in the store first
//! ([`Creapic::check_caller`]), any role. A member's job records no key and runs live.
//!
//! A lease is bounded by [`CoreConfig::lease_max`](super::CoreConfig::lease_max). A finished job
//! never changes again, so a read looks in the [`FinishedJobs`](crate::finished_jobs::FinishedJobs)
//! cache before the store.

use std::time::Duration;

use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{EntryId, JobId};
use crate::job::{Enqueued, FinishItem, ItemOutcome, Job, JobKind, JobSummary, NewJob, WorkerId};
use crate::ledger::{Credits, IdempotencyKey};
use crate::page::{Page, PageLimit};
use crate::scope::Scope;
use crate::store::Store;

use super::Creapic;

/// A job to submit.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Bulk images or a scene.
    pub kind: JobKind,
    /// One input per item.
    pub inputs: Vec<String>,
    /// Credits per succeeded item.
    pub unit_cost: Credits,
}

impl<S: Store + ?Sized> Creapic<S> {
    /// Submits a job for the caller's organization, reserving its cost. A key needs
    /// `IMAGE_GENERATION` for bulk jobs, `SCENE_RENDER` for scenes; a person, membership. The
    /// same `idempotency_key` in the same organization returns the first job and reserves
    /// nothing more.
    pub async fn submit_job(
        &self,
        caller: impl Into<Caller>,
        spec: JobSpec,
        idempotency_key: &str,
    ) -> Result<Enqueued> {
        let caller = caller.into();
        if let Caller::Key(principal) = &caller {
            principal.require(match spec.kind {
                JobKind::Bulk => Scope::ImageGeneration,
                JobKind::Scene => Scope::SceneRender,
            })?;
        }
        self.check_caller(&caller).await?;
        let at = self.now();
        let new = NewJob {
            id: JobId::generate(at, self.rng.as_ref()),
            org: caller.org(),
            key: caller.key(),
            kind: spec.kind,
            mode: caller.mode(),
            inputs: spec.inputs,
            unit_cost: spec.unit_cost,
            idempotency_key: IdempotencyKey::new(idempotency_key)?,
            hold_entry: EntryId::generate(at, self.rng.as_ref()),
            at,
        };
        new.validate()?;
        self.store.enqueue(&new).await
    }

    /// A job of the caller's organization; another organization's job is "not found".
    pub async fn job(&self, caller: impl Into<Caller>, id: JobId) -> Result<Job> {
        let caller = caller.into();
        self.check_caller(&caller).await?;
        let org = caller.org();
        if let Some(job) = self.finished_jobs.get(org, id) {
            return Ok(job);
        }
        let job = self
            .store
            .job(org, id)
            .await?
            .ok_or(Error::NotFound { resource: "job" })?;
        self.finished_jobs.note(&job);
        Ok(job)
    }

    /// The caller's organization's jobs (bulk jobs and scene renders), oldest first, without
    /// their items. A key needs `IMAGE_GENERATION` or `SCENE_RENDER`: a summary names no
    /// prompt, so either scope may see both kinds.
    pub async fn list_jobs(
        &self,
        caller: impl Into<Caller>,
        after: Option<JobId>,
        limit: PageLimit,
    ) -> Result<Page<JobSummary, JobId>> {
        let caller = caller.into();
        if let Caller::Key(principal) = &caller
            && principal.require(Scope::ImageGeneration).is_err()
        {
            principal.require(Scope::SceneRender)?;
        }
        self.check_caller(&caller).await?;
        self.store.list_jobs(caller.org(), after, limit).await
    }

    /// Cancels a job of the caller's organization, refunding unfinished items.
    pub async fn cancel_job(&self, caller: impl Into<Caller>, id: JobId) -> Result<Job> {
        let caller = caller.into();
        self.check_caller(&caller).await?;
        let at = self.now();
        let entry = EntryId::generate(at, self.rng.as_ref());
        self.store.cancel_job(caller.org(), id, entry, at).await
    }

    fn lease_until(&self, now: Timestamp, lease: Duration) -> Result<Timestamp> {
        if lease.is_zero() || lease > self.config.lease_max {
            return Err(Error::invalid(
                "lease",
                "must be between 1 ms and the configured maximum",
            ));
        }
        Ok(now.plus(lease))
    }

    /// How many jobs wait for a runner, counting at most `max` (a queue-depth gauge's reading).
    pub async fn queued_jobs(&self, max: PageLimit) -> Result<u64> {
        self.store.count_queued_jobs(max).await
    }

    /// Claims the next job for `worker` with a lease of `lease`.
    pub async fn claim_job(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Job>> {
        let now = self.now();
        let until = self.lease_until(now, lease)?;
        self.store.claim_job(worker, now, until).await
    }

    /// Extends `worker`'s lease on `job` to `lease` from now.
    pub async fn renew_lease(&self, job: JobId, worker: &WorkerId, lease: Duration) -> Result<Job> {
        let until = self.lease_until(self.now(), lease)?;
        self.store.renew_lease(job, worker, until).await
    }

    /// Hands `job` back: `worker` stops, and any runner may claim it at once (graceful shutdown).
    pub async fn release_lease(&self, job: JobId, worker: &WorkerId) -> Result<Job> {
        self.store.release_lease(job, worker, self.now()).await
    }

    /// Reports how an item ended; captures or releases its cost exactly once.
    pub async fn finish_item(
        &self,
        job: JobId,
        worker: &WorkerId,
        index: u32,
        outcome: ItemOutcome,
    ) -> Result<Job> {
        let at = self.now();
        let report = FinishItem {
            job,
            worker: worker.clone(),
            index,
            outcome,
            entry_id: EntryId::generate(at, self.rng.as_ref()),
            at,
        };
        report.validate()?;
        self.store.finish_item(&report).await
    }

    /// Ends a job whose items have all finished, releasing what is left of its hold.
    pub async fn complete_job(&self, job: JobId, worker: &WorkerId) -> Result<Job> {
        let at = self.now();
        let entry = EntryId::generate(at, self.rng.as_ref());
        self.store.complete_job(job, worker, entry, at).await
    }
}
