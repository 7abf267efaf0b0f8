//! The serialized status bodies of finished bulk jobs, so that polling a finished job costs a map
//! lookup instead of a job copy, a view, two HMACs per image and a JSON serialization.
//!
//! Design decision: **a body is cached only for a finished job and only for one link window.**
//! A finished job never changes (see `creapic_core::finished_jobs`), so its status body changes
//! only through its signed media links, and those are the same URL for every request within one
//! [`LinkWindow`](crate::http::service::LinkWindow) (their expiry is rounded down to the window's
//! step). An entry remembers the window's expiry it was built for: a lookup in a later window is a
//! miss, and the entry is rebuilt. Lookups check the organization: another organization's job is a
//! miss, never another organization's body. They check the mount prefix the links were built on
//! too ([`crate::http::mount`]): a kit reached under two prefixes never answers one with the
//! other's links. Only `GET /api/playground/images/{jobId}` fills and
//! reads it (bulk jobs), after authentication, scope and rate limit, exactly as on a miss.
//! Bounded at [`FINISHED_STATUS_MAX`] entries; when full, an arbitrary entry is evicted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use creapic_core::clock::Timestamp;
use creapic_core::id::{JobId, OrgId};

/// Most bodies kept.
pub const FINISHED_STATUS_MAX: usize = 1024;

#[derive(Debug)]
struct Entry {
    org: OrgId,
    until: Timestamp,
    mount: Option<Arc<str>>,
    body: Bytes,
}

/// The cache (one per service).
#[derive(Debug, Default)]
pub struct FinishedStatus {
    bodies: Mutex<HashMap<JobId, Entry>>,
}

impl FinishedStatus {
    /// The body of finished job `id` of `org` built for links expiring at `until` under the
    /// mount prefix `mount`, if cached.
    pub fn get(
        &self,
        org: OrgId,
        id: JobId,
        until: Timestamp,
        mount: Option<&str>,
    ) -> Option<Bytes> {
        let bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        bodies
            .get(&id)
            .filter(|e| e.org == org && e.until == until && e.mount.as_deref() == mount)
            .map(|e| e.body.clone())
    }

    /// Keeps the body of finished job `id` of `org`, built for links expiring at `until` under
    /// the mount prefix `mount`. The caller guarantees the job is finished (terminal).
    pub fn put(
        &self,
        org: OrgId,
        id: JobId,
        until: Timestamp,
        mount: Option<Arc<str>>,
        body: Bytes,
    ) {
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        if bodies.len() >= FINISHED_STATUS_MAX
            && !bodies.contains_key(&id)
            && let Some(victim) = bodies.keys().next().copied()
        {
            bodies.remove(&victim);
        }
        bodies.insert(
            id,
            Entry {
                org,
                until,
                mount,
                body,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use creapic_core::random::SeededRandom;

    #[test]
    fn a_body_is_served_only_to_its_organization_within_its_window() {
        let rng = SeededRandom::new(7);
        let now = Timestamp::from_unix_ms(1_000);
        let (org, other) = (OrgId::generate(now, &rng), OrgId::generate(now, &rng));
        let job = JobId::generate(now, &rng);
        let cache = FinishedStatus::default();
        let until = Timestamp::from_unix_ms(60_000);
        cache.put(org, job, until, None, Bytes::from_static(b"{}"));
        assert_eq!(
            cache.get(org, job, until, None).as_deref(),
            Some(&b"{}"[..])
        );
        assert!(
            cache.get(other, job, until, None).is_none(),
            "another organization"
        );
        let later = Timestamp::from_unix_ms(120_000);
        assert!(
            cache.get(org, job, later, None).is_none(),
            "another link window"
        );
        assert!(
            cache.get(org, job, until, Some("/creapic")).is_none(),
            "another mount prefix"
        );
    }

    #[test]
    fn it_stays_bounded() {
        let rng = SeededRandom::new(8);
        let now = Timestamp::from_unix_ms(1_000);
        let org = OrgId::generate(now, &rng);
        let cache = FinishedStatus::default();
        for _ in 0..FINISHED_STATUS_MAX + 10 {
            cache.put(org, JobId::generate(now, &rng), now, None, Bytes::new());
        }
        let len = cache
            .bodies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert_eq!(len, FINISHED_STATUS_MAX);
    }
}
