//! The runner's concurrency limits: generations in flight in the whole runner, and per
//! organization.
//!
//! The design decision that shapes it: **limits apply to generations (items), not to jobs.** A
//! job holds a slot while it is leased, but its items each wait for a permit of the runner and a
//! permit of their organization, so one organization's 100-prompt job cannot take every provider
//! call of the runner, and a second organization's job makes progress beside it. Permits are
//! taken organization first, then global, always in that order, so two waiters never hold one
//! each of what the other needs.
//!
//! And **organizations take turns at the runner's slots.** A first-come queue for the global
//! slots would put a newcomer's item behind every item other organizations already had waiting
//! (each holds its organization's permit, up to `org_max` per organization): a 2-image job
//! submitted beside two large ones waited a whole provider latency for its first slot. Here
//! each organization has its own lane of waiters, and a freed slot goes to the next lane in
//! turn, so a newcomer waits for at most one item of each other organization. A slot is handed
//! over as a [`Slot`] value that gives itself back when dropped — also when the waiter that
//! was to receive it gave up (a cancelled item), so no slot is ever lost.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use creapic_core::id::OrgId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Global slots (taken in turns) and per-organization semaphores.
#[derive(Debug)]
pub(crate) struct Limits {
    global: Arc<Mutex<Turns>>,
    org_max: usize,
    /// One semaphore per organization with work in flight or waiting. Entries nobody holds are
    /// removed on the next acquisition, so the map is bounded by the work in progress.
    orgs: Mutex<HashMap<OrgId, Arc<Semaphore>>>,
}

/// The runner's slots: how many are free, and who waits for one, by organization.
#[derive(Debug, Default)]
struct Turns {
    free: usize,
    /// Each organization's waiters, first come first served within the organization. Bounded by
    /// the items of the leased jobs.
    lanes: HashMap<OrgId, VecDeque<oneshot::Sender<Slot>>>,
    /// Organizations with waiters, in turn order.
    ring: VecDeque<OrgId>,
}

impl Turns {
    /// The next waiter still waiting, taking organizations in turn; `None` when nobody waits.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<Slot>> {
        while let Some(org) = self.ring.pop_front() {
            // The ring holds exactly the organizations with a lane.
            let Some(lane) = self.lanes.get_mut(&org) else {
                continue;
            };
            let waiter = lane.pop_front();
            if lane.is_empty() {
                self.lanes.remove(&org);
            } else {
                self.ring.push_back(org);
            }
            match waiter {
                Some(tx) if !tx.is_closed() => return Some(tx),
                _ => {}
            }
        }
        None
    }
}

/// One of the runner's slots; given back (to the next waiter in turn, or to the free count)
/// when dropped.
#[derive(Debug)]
struct Slot {
    turns: Arc<Mutex<Turns>>,
    /// `false` for a slot a waiter never received: it was passed on already.
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            give_back(&self.turns);
        }
    }
}

fn lock(turns: &Mutex<Turns>) -> std::sync::MutexGuard<'_, Turns> {
    turns.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands a freed slot to the next waiter in turn, or counts it free.
fn give_back(turns: &Arc<Mutex<Turns>>) {
    loop {
        let Some(tx) = lock(turns).next_waiter() else {
            lock(turns).free += 1;
            return;
        };
        let slot = Slot {
            turns: Arc::clone(turns),
            armed: true,
        };
        match tx.send(slot) {
            Ok(()) => return,
            // The waiter gave up after it was picked: try the next one.
            Err(mut slot) => slot.armed = false,
        }
    }
}

/// Permission to run one generation; released on drop. While it lives it counts in
/// `creapic_runner_slots_in_use` ([`crate::telemetry::RUNNER_SLOTS_IN_USE`]).
#[derive(Debug)]
pub(crate) struct Permit {
    _org: OwnedSemaphorePermit,
    _global: Slot,
}

impl Drop for Permit {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::RUNNER_SLOTS_IN_USE).decrement(1.0);
    }
}

impl Limits {
    pub(crate) fn new(global_max: usize, org_max: usize) -> Self {
        Limits {
            global: Arc::new(Mutex::new(Turns {
                free: global_max.max(1),
                ..Turns::default()
            })),
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

    /// Waits for a permit of `org`, then for a runner slot in `org`'s turn. Semaphores here are
    /// never closed and a slot is never lost, so `None` cannot happen in practice; it is
    /// returned rather than panicking.
    pub(crate) async fn acquire(&self, org: OrgId) -> Option<Permit> {
        let org_sem = self.org_semaphore(org);
        let org_permit = org_sem.acquire_owned().await.ok()?;
        let waiting = {
            let mut turns = lock(&self.global);
            if turns.free > 0 {
                turns.free -= 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                let lane = turns.lanes.entry(org).or_default();
                lane.push_back(tx);
                if lane.len() == 1 {
                    turns.ring.push_back(org);
                }
                Some(rx)
            }
        };
        let global = match waiting {
            None => Slot {
                turns: Arc::clone(&self.global),
                armed: true,
            },
            Some(rx) => rx.await.ok()?,
        };
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

    /// With the runner full and three of `a`'s items waiting, an item of `c` that arrives last
    /// gets the second slot freed (after one of `a`'s), not the fourth — the turn of `b`, whose
    /// waiter gave up, passes on instead of losing the slot.
    #[tokio::test]
    async fn organizations_take_turns_at_freed_slots() {
        let rng = SeededRandom::new(6);
        let [a, b, c] = [(); 3].map(|()| OrgId::generate(Timestamp::EPOCH, &rng));
        let limits = Arc::new(Limits::new(2, 8));
        let held = [
            limits.acquire(b).await.unwrap(),
            limits.acquire(b).await.unwrap(),
        ];
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let waiter = |org: OrgId, name: &'static str| {
            let (limits, tx) = (Arc::clone(&limits), tx.clone());
            tokio::spawn(async move {
                let permit = limits.acquire(org).await.unwrap();
                tx.send(name).unwrap();
                // Held until the test ends.
                std::future::pending::<()>().await;
                drop(permit);
            })
        };
        let mut tasks = Vec::new();
        for name in ["a1", "a2", "a3"] {
            tasks.push(waiter(a, name));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A waiter of `b` that gives up before its turn comes: its turn passes to `c`.
        let quitter = {
            let limits = Arc::clone(&limits);
            tokio::spawn(async move { limits.acquire(b).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        tasks.push(waiter(c, "c1"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        quitter.abort();
        let [first, second] = held;
        drop(first);
        assert_eq!(order.recv().await, Some("a1"));
        drop(second);
        assert_eq!(
            order.recv().await,
            Some("c1"),
            "c's turn comes before a's second item"
        );
        for task in tasks {
            task.abort();
        }
    }
}
