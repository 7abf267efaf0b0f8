//! Which webhook event is delivered next: organizations take turns, and none holds more than its
//! share of the delivery slots.
//!
//! The design decision: **a slot is taken per organization, not per event.** Each organization
//! has a lane of waiting events (≤ `org_queue_max`) and at most `org_concurrency_max` deliveries
//! in flight; lanes with work take turns round-robin for the free global slots. So one tenant's
//! endpoint that never answers occupies at most its own few slots for the length of its retries,
//! and one tenant's burst of events waits in its own lane instead of filling the shared queue.
//! Pure bookkeeping, no I/O: the sender's loop asks [`FairQueue::next`] while it has a free slot
//! and reports each finished delivery with [`FairQueue::done`].

use std::collections::{HashMap, VecDeque};

use creapic_core::id::OrgId;

use super::Event;

/// One organization's waiting events and deliveries in flight.
#[derive(Debug, Default)]
struct Lane {
    running: usize,
    waiting: VecDeque<Event>,
}

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The organization's lane is full.
    LaneFull,
    /// Every lane together holds `queue_max` events.
    QueueFull,
}

/// Waiting events per organization, handed out in turns.
#[derive(Debug)]
pub(crate) struct FairQueue {
    org_running_max: usize,
    org_waiting_max: usize,
    waiting_max: usize,
    lanes: HashMap<OrgId, Lane>,
    /// Organizations with waiting events, in the order they get their next turn.
    turns: VecDeque<OrgId>,
    waiting: usize,
}

impl FairQueue {
    /// A queue holding at most `waiting_max` events, `org_waiting_max` per organization, and
    /// handing out at most `org_running_max` deliveries per organization at once.
    pub(crate) fn new(waiting_max: usize, org_waiting_max: usize, org_running_max: usize) -> Self {
        FairQueue {
            org_running_max: org_running_max.max(1),
            org_waiting_max: org_waiting_max.max(1),
            waiting_max: waiting_max.max(1),
            lanes: HashMap::new(),
            turns: VecDeque::new(),
            waiting: 0,
        }
    }

    /// Whether every lane together is full (the sender then stops reading its channel).
    pub(crate) fn is_full(&self) -> bool {
        self.waiting >= self.waiting_max
    }

    /// Whether nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// Queues `event` in its organization's lane.
    pub(crate) fn push(&mut self, event: Event) -> Result<(), Refused> {
        if self.is_full() {
            return Err(Refused::QueueFull);
        }
        let org = event.org;
        let lane = self.lanes.entry(org).or_default();
        if lane.waiting.len() >= self.org_waiting_max {
            return Err(Refused::LaneFull);
        }
        if lane.waiting.is_empty() {
            self.turns.push_back(org);
        }
        lane.waiting.push_back(event);
        self.waiting += 1;
        Ok(())
    }

    /// The next event to deliver: the first organization in turn that is under its in-flight
    /// cap gives its oldest event and goes to the back. `None` when every organization with
    /// waiting events is at its cap (or nothing waits).
    pub(crate) fn next(&mut self) -> Option<Event> {
        for _ in 0..self.turns.len() {
            let org = self.turns.pop_front()?;
            let Some(lane) = self.lanes.get_mut(&org) else {
                continue;
            };
            if lane.running >= self.org_running_max {
                self.turns.push_back(org);
                continue;
            }
            let Some(event) = lane.waiting.pop_front() else {
                continue;
            };
            lane.running += 1;
            self.waiting -= 1;
            if !lane.waiting.is_empty() {
                self.turns.push_back(org);
            }
            return Some(event);
        }
        None
    }

    /// A delivery of `org` finished (however it ended).
    pub(crate) fn done(&mut self, org: OrgId) {
        if let Some(lane) = self.lanes.get_mut(&org) {
            lane.running = lane.running.saturating_sub(1);
            if lane.running == 0 && lane.waiting.is_empty() {
                self.lanes.remove(&org);
            }
        }
    }

    /// Organizations with a lane (waiting or in flight): bounded by `waiting_max` plus the
    /// deliveries in flight.
    #[cfg(test)]
    fn lanes(&self) -> usize {
        self.lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use creapic_core::clock::Timestamp;
    use creapic_core::random::SeededRandom;

    fn org(seed: u64) -> OrgId {
        OrgId::generate(Timestamp::from_unix_ms(1), &SeededRandom::new(seed))
    }

    fn event(org: OrgId, n: usize) -> Event {
        Event {
            org,
            id: format!("msg_{n}"),
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_busy_organization_gets_its_cap_and_others_take_turns() {
        let (a, b, c) = (org(1), org(2), org(3));
        let mut q = FairQueue::new(100, 50, 2);
        for n in 0..20 {
            assert_eq!(q.push(event(a, n)), Ok(()));
        }
        assert_eq!(q.push(event(b, 100)), Ok(()));
        assert_eq!(q.push(event(c, 200)), Ok(()));
        // However many slots are free: a gets two, b and c one each, then a is at its cap.
        let mut taken = Vec::new();
        while let Some(e) = q.next() {
            taken.push((e.org, e.id));
        }
        let of = |o: OrgId| taken.iter().filter(|(x, _)| *x == o).count();
        assert_eq!((of(a), of(b), of(c)), (2, 1, 1), "{taken:?}");
        // a's deliveries hang; b's finishes and b has more to send: b goes on, a waits.
        q.done(b);
        assert_eq!(q.push(event(b, 101)), Ok(()));
        assert_eq!(q.next().map(|e| e.org), Some(b));
        assert!(q.next().is_none(), "a is at its cap, nobody else waits");
        q.done(a);
        assert_eq!(q.next().map(|e| e.id), Some("msg_2".into()), "a, in order");
    }

    #[test]
    fn lanes_and_the_whole_queue_are_bounded() {
        let (a, b) = (org(1), org(2));
        let mut q = FairQueue::new(5, 3, 1);
        for n in 0..3 {
            assert_eq!(q.push(event(a, n)), Ok(()));
        }
        assert_eq!(q.push(event(a, 3)), Err(Refused::LaneFull));
        assert_eq!(q.push(event(b, 4)), Ok(()));
        assert_eq!(q.push(event(b, 5)), Ok(()));
        assert!(q.is_full());
        assert_eq!(q.push(event(b, 6)), Err(Refused::QueueFull));
        while let Some(e) = q.next() {
            q.done(e.org);
        }
        assert!(q.is_empty());
        assert_eq!(q.lanes(), 0, "finished lanes are dropped");
    }
}
