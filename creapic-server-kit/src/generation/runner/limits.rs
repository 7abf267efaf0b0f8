//! The runner's concurrency limits: generations in flight in the whole runner, and per
//! organization.
//!
//! The design decision that shapes it: **limits apply to generations (items), not to jobs.** A
//! job holds a slot while it is leased, but its items each wait for a permit of the runner and a
//! permit of their organization, so one organization's 100-prompt job cannot take every provider
//! call of the runner, and a second organization's job makes progress beside it. Permits are
//! taken organization first, then global, always in that order, so two waiters never hold one
//! each of what the other needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use creapic_core::id::OrgId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Global and per-organization semaphores.
#[derive(Debug)]
pub(crate) struct Limits {
    global: Arc<Semaphore>,
    org_max: usize,
    /// One semaphore per organization with work in flight or waiting. Entries nobody holds are
    /// removed on the next acquisition, so the map is bounded by the work in progress.
    orgs: Mutex<HashMap<OrgId, Arc<Semaphore>>>,
}

/// Permission to run one generation; released on drop. While it lives it counts in
/// `creapic_runner_slots_in_use` ([`crate::telemetry::RUNNER_SLOTS_IN_USE`]).
#[derive(Debug)]
pub(crate) struct Permit {
    _org: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::RUNNER_SLOTS_IN_USE).decrement(1.0);
    }
}

impl Limits {
    pub(crate) fn new(global_max: usize, org_max: usize) -> Self {
        Limits {
            global: Arc::new(Semaphore::new(global_max.max(1))),
            org_max: org_max.max(1),
            orgs: Mutex::new(HashMap::new()),
        }
    }

    fn org_semaphore(&self, org: OrgId) -> Arc<Semaphore> {
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        // Held elsewhere (a permit or a waiter owns a clone) means in use.
        orgs.retain(|_, s| Arc::strong_count(s) > 1);
        Arc::clone(
            orgs.entry(org)
                .or_insert_with(|| Arc::new(Semaphore::new(self.org_max))),
        )
    }

    /// Waits for a permit of `org` and then of the runner. Semaphores here are never closed,
    /// so `None` cannot happen in practice; it is returned rather than panicking.
    pub(crate) async fn acquire(&self, org: OrgId) -> Option<Permit> {
        let org_sem = self.org_semaphore(org);
        let org_permit = org_sem.acquire_owned().await.ok()?;
        let global = Arc::clone(&self.global).acquire_owned().await.ok()?;
        metrics::gauge!(crate::telemetry::RUNNER_SLOTS_IN_USE).increment(1.0);
        Some(Permit {
            _org: org_permit,
            _global: global,
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.orgs.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use creapic_core::clock::Timestamp;
    use creapic_core::random::SeededRandom;

    #[tokio::test]
    async fn permits_respect_both_limits_and_the_map_stays_small() {
        let rng = SeededRandom::new(5);
        let (a, b) = (
            OrgId::generate(Timestamp::EPOCH, &rng),
            OrgId::generate(Timestamp::EPOCH, &rng),
        );
        let limits = Limits::new(3, 2);
        let p1 = limits.acquire(a).await.unwrap();
        let p2 = limits.acquire(a).await.unwrap();
        // A third permit for `a` waits (org limit) while `b` still gets one.
        let blocked = tokio::time::timeout(Duration::from_millis(20), limits.acquire(a)).await;
        assert!(blocked.is_err());
        let p3 = limits.acquire(b).await.unwrap();
        // The runner is now full (3): even `b` waits.
        let full = tokio::time::timeout(Duration::from_millis(20), limits.acquire(b)).await;
        assert!(full.is_err());
        drop((p1, p2, p3));
        let _p = limits.acquire(b).await.unwrap();
        assert_eq!(limits.tracked(), 1, "idle organizations are forgotten");
    }
}
