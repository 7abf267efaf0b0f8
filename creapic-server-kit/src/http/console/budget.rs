//! [`FailureBudget`]: how many failed sign-ins one key (an e-mail, a client address) may have in
//! a window before its next attempt is refused — failures counted, successes free.
//!
//! Design decisions:
//! - **An attempt is a failure until it succeeds.** [`FailureBudget::begin`] counts the attempt
//!   before the password is checked and [`Attempt::succeeded`] takes it back, so attempts running
//!   at the same time cannot all pass the check before any of them has failed: the budget holds
//!   under concurrency, and a person who signs in correctly spends nothing.
//! - **A fixed window from the first failure** ([`SIGN_IN_WINDOW`](super::SIGN_IN_WINDOW)): when
//!   it has passed the count starts again. Refused attempts are not counted (a locked-out
//!   attacker cannot extend the lock-out of the person they target).
//! - **Bounded memory**: at most `keys_max` keys. When full, expired windows are dropped first,
//!   then keys with a single failure; if every key still holds several failures, a new key is not
//!   tracked (its attempt is allowed) — the other budget (by address) still applies to it.
//! - Time is `tokio::time::Instant`, so tests drive it with a paused clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Failures per key per window, for keys of type `K`.
#[derive(Debug)]
pub struct FailureBudget<K> {
    max: u32,
    window: Duration,
    keys_max: usize,
    entries: Mutex<HashMap<K, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
}

impl<K: Hash + Eq + Clone> FailureBudget<K> {
    /// `max` failures per `window`, at most `keys_max` keys remembered.
    pub fn new(max: u32, window: Duration, keys_max: usize) -> Self {
        FailureBudget {
            max: max.max(1),
            window,
            keys_max: keys_max.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt for `key` as a failure until [`Attempt::succeeded`] takes it back; `Err`
    /// with the time until the window ends when `key` has no failures left.
    pub fn begin(self: &Arc<Self>, key: K) -> Result<Attempt<K>, Duration> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&key) {
            let ends = entry.since + self.window;
            if now >= ends {
                *entry = Entry {
                    failures: 0,
                    since: now,
                };
            } else if entry.failures >= self.max {
                return Err(ends - now);
            }
            entry.failures += 1;
        } else {
            if entries.len() >= self.keys_max {
                self.make_room(&mut entries, now);
            }
            if entries.len() < self.keys_max {
                entries.insert(
                    key.clone(),
                    Entry {
                        failures: 1,
                        since: now,
                    },
                );
            } else {
                return Ok(Attempt { budget: None, key });
            }
        }
        Ok(Attempt {
            budget: Some(Arc::clone(self)),
            key,
        })
    }

    fn make_room(&self, entries: &mut HashMap<K, Entry>, now: Instant) {
        entries.retain(|_, e| now < e.since + self.window);
        if entries.len() >= self.keys_max {
            entries.retain(|_, e| e.failures > 1);
        }
    }

    /// Failures `key` has in its current window (0 when it has none or its window ended).
    pub fn failures(&self, key: &K) -> u32 {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|e| Instant::now() < e.since + self.window)
            .map_or(0, |e| e.failures)
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One counted attempt; dropped, it stays a failure.
#[derive(Debug)]
#[must_use = "an attempt is a failure unless `succeeded` is called"]
pub struct Attempt<K: Hash + Eq> {
    budget: Option<Arc<FailureBudget<K>>>,
    key: K,
}

impl<K: Hash + Eq> Attempt<K> {
    /// The attempt succeeded: it is taken back from the count.
    pub fn succeeded(self) {
        if let Some(budget) = &self.budget {
            let mut entries = budget
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = entries.get_mut(&self.key) {
                entry.failures = entry.failures.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: u32, keys: usize) -> Arc<FailureBudget<&'static str>> {
        Arc::new(FailureBudget::new(max, Duration::from_secs(900), keys))
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_counted_and_successes_are_free() {
        let b = budget(3, 10);
        for _ in 0..10 {
            b.begin("a").unwrap().succeeded();
        }
        assert_eq!(b.failures(&"a"), 0);
        for _ in 0..3 {
            drop(b.begin("a").unwrap());
        }
        let wait = b.begin("a").unwrap_err();
        assert_eq!(wait, Duration::from_secs(900));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(b.begin("a").unwrap_err(), Duration::from_secs(300));
        // Refused attempts do not extend the window.
        tokio::time::advance(Duration::from_secs(300)).await;
        b.begin("a").unwrap().succeeded();
        assert_eq!(b.failures(&"a"), 0);
        // Another key has its own budget.
        assert!(b.begin("b").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_count_before_they_fail() {
        let b = budget(2, 10);
        let one = b.begin("a").unwrap();
        let two = b.begin("a").unwrap();
        assert!(
            b.begin("a").is_err(),
            "a third concurrent attempt is refused"
        );
        one.succeeded();
        let three = b.begin("a").unwrap();
        drop((two, three));
        assert_eq!(b.failures(&"a"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_repeat_offenders_are_kept() {
        let b = budget(5, 3);
        drop(b.begin("x").unwrap());
        drop(b.begin("x").unwrap());
        drop(b.begin("y").unwrap());
        drop(b.begin("z").unwrap());
        // Full: the single-failure keys make room, the repeat offender stays.
        drop(b.begin("w").unwrap());
        assert!(b.len() <= 3);
        assert_eq!(b.failures(&"x"), 2);
        // Expired windows are dropped first.
        tokio::time::advance(Duration::from_secs(901)).await;
        for k in ["p", "q", "r"] {
            drop(b.begin(k).unwrap());
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.failures(&"x"), 0);
    }
}
