//! One store lookup per key at a time: concurrent cold verifications of the same key digest
//! wait for the one already asking the store (the leader) instead of asking — and being charged
//! to their client's failed-authentication budget — again. An integrator that sends a burst of
//! requests with a key this process has not verified yet costs one lookup and one charge, not
//! one per request (which used to end in `429 too_many_auth_failures` for a valid key).
//!
//! Design decisions: no async runtime is assumed (the core runs on any executor), so the wait is
//! a small hand-written future over a waker list; the leader's guard ends the flight when it is
//! dropped — on success, failure or cancellation alike — so a follower never waits for a leader
//! that went away. The map holds one entry per digest being looked up, so it is bounded by the
//! requests in flight.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// The lookups in flight, by key.
#[derive(Debug)]
pub(crate) struct InFlight<K> {
    flights: Mutex<HashMap<K, Arc<Flight>>>,
}

/// One lookup in flight: done once its leader's guard is dropped.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    done: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

/// What joining a key's flight made of the caller.
#[derive(Debug)]
pub(crate) enum Role<'a, K: Eq + Hash> {
    /// Nobody was looking this key up: the caller does, holding the guard until its answer is
    /// recorded.
    Leader(LeaderGuard<'a, K>),
    /// Someone is: wait for [`Flight::landed`], then read what the leader recorded.
    Follower(Arc<Flight>),
}

/// Ends the leader's flight when dropped.
#[derive(Debug)]
pub(crate) struct LeaderGuard<'a, K: Eq + Hash> {
    owner: &'a InFlight<K>,
    key: Option<K>,
    flight: Arc<Flight>,
}

impl<K: Eq + Hash + Clone> InFlight<K> {
    pub(crate) fn new() -> Self {
        InFlight {
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Leads the lookup of `key`, or follows the one in flight.
    pub(crate) fn join(&self, key: &K) -> Role<'_, K> {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = flights.get(key) {
            return Role::Follower(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::default());
        flights.insert(key.clone(), Arc::clone(&flight));
        Role::Leader(LeaderGuard {
            owner: self,
            key: Some(key.clone()),
            flight,
        })
    }

    /// How many lookups are in flight (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<K: Eq + Hash> Drop for LeaderGuard<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.owner
                .flights
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        }
        // `done` is set under the wakers' lock, which a follower holds while it checks `done`
        // and registers: no wake-up can be lost between the two.
        let wakers = {
            let mut wakers = self
                .flight
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.flight.done.store(true, Ordering::Release);
            std::mem::take(&mut *wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Flight {
    /// Resolves once the leader's guard is dropped.
    pub(crate) fn landed(self: Arc<Self>) -> Landed {
        Landed { flight: self }
    }
}

/// The future of [`Flight::landed`].
#[derive(Debug)]
pub(crate) struct Landed {
    flight: Arc<Flight>,
}

impl Future for Landed {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut wakers = self
            .flight
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.flight.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_leads_the_others_follow_until_the_guard_drops() {
        let flights = InFlight::new();
        let Role::Leader(guard) = flights.join(&1) else {
            panic!("the first caller leads")
        };
        let Role::Follower(flight) = flights.join(&1) else {
            panic!("a second caller follows")
        };
        assert!(
            matches!(flights.join(&2), Role::Leader(_)),
            "another key leads"
        );
        assert!(!flight.done.load(Ordering::Acquire));
        drop(guard);
        assert!(flight.done.load(Ordering::Acquire));
        assert_eq!(flights.len(), 0, "a finished flight leaves the map");
        assert!(
            matches!(flights.join(&1), Role::Leader(_)),
            "the next lookup leads"
        );
    }

    #[test]
    fn a_follower_waiting_is_woken_when_the_leader_is_dropped() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let flights = InFlight::new();
        let Role::Leader(guard) = flights.join(&"k") else {
            panic!("leads")
        };
        let Role::Follower(flight) = flights.join(&"k") else {
            panic!("follows")
        };
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut landed = flight.landed();
        assert!(Pin::new(&mut landed).poll(&mut cx).is_pending());
        assert!(
            Pin::new(&mut landed).poll(&mut cx).is_pending(),
            "polled again"
        );
        drop(guard);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
        assert!(Pin::new(&mut landed).poll(&mut cx).is_ready());
    }
}
