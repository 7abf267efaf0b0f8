//! A bounded in-process cache of finished jobs, so that polling a job that has finished costs no
//! store read.
//!
//! Design decision: **only terminal jobs are cached, because only they are immutable.** A job in
//! `completed`, `failed`, `partial` or `canceled` never changes again (no store method writes a
//! terminal job: reports need a live lease, a cancel of a finished job is refused), so a copy can
//! never be stale and needs no invalidation, across replicas too. A queued or running job is
//! always read from the store. Bounded at [`FINISHED_JOBS_MAX`] entries; when full, an arbitrary
//! entry is evicted (a miss only costs the store read it would have cost anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::id::JobId;
use crate::job::Job;

/// Most finished jobs kept.
pub const FINISHED_JOBS_MAX: usize = 1024;

/// The cache. Lookups check the organization: a job of another organization is a miss.
#[derive(Debug, Default)]
pub(crate) struct FinishedJobs {
    jobs: Mutex<HashMap<JobId, Arc<Job>>>,
}

impl FinishedJobs {
    /// The cached job `id`, if it is finished and belongs to `org`.
    pub(crate) fn get(&self, org: crate::id::OrgId, id: JobId) -> Option<Job> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.get(&id)
            .filter(|j| j.org == org)
            .map(|j| Job::clone(j))
    }

    /// Keeps `job` if it is finished.
    pub(crate) fn note(&self, job: &Job) {
        if !job.status.is_terminal() {
            return;
        }
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if jobs.len() >= FINISHED_JOBS_MAX
            && !jobs.contains_key(&job.id)
            && let Some(victim) = jobs.keys().next().copied()
        {
            jobs.remove(&victim);
        }
        jobs.insert(job.id, Arc::new(job.clone()));
    }
}
