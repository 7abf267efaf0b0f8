//! Property tests of the credit ledger and its holds, against the memory and SQLite stores.
//!
//! A generated sequence of grants, debits, reserves, captures, releases, idempotent replays and
//! conflicting reuses of a key is applied to a real store and to a tiny reference model (a
//! balance and a list of holds). After every operation the store must agree with the model on
//! the outcome (applied, replayed, or which error); after the sequence, balance = sum of entry
//! deltas ≥ 0, each `balance_after` is the running sum, every hold satisfies
//! `captured + released ≤ amount`, and no idempotency key has two entries. A second property
//! runs the same operations concurrently (where the order is the scheduler's, so only the
//! invariants are checked, not the model).
//!
//! Bounded on purpose: 64 cases × ≤ 40 operations per store (a few seconds on SQLite), so it
//! runs in every CI build. `PROPTEST_CASES` overrides the case count for a longer local run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use creapic_core::Error;
use creapic_core::id::{HoldId, OrgId};
use creapic_core::ledger::{Credits, IdempotencyKey, LedgerOp, LedgerRequest};
use creapic_core::page::PageLimit;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_core::testing::Fixture;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Operations per case, at most.
const OPS_MAX: usize = 40;

/// One generated step.
#[derive(Debug, Clone)]
enum Step {
    Grant(u64),
    Debit(u64),
    Reserve(u64),
    /// Capture from the n-th hold created so far (modulo), or from an unknown hold if none.
    Capture(usize, u64),
    /// Release from the n-th hold: `Some(n)` credits, or everything (closing it).
    Release(usize, Option<u64>),
    /// Capture from the other organization's hold: must be `NotFound`.
    ForeignCapture(u64),
    /// Repeat the n-th earlier step under its own idempotency key.
    Replay(usize),
    /// Reuse the n-th earlier step's key for a different operation.
    Reuse(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let amount = 1u64..=60;
    prop_oneof![
        3 => amount.clone().prop_map(Step::Grant),
        3 => amount.clone().prop_map(Step::Debit),
        3 => amount.clone().prop_map(Step::Reserve),
        3 => (any::<usize>(), 1u64..=40).prop_map(|(h, a)| Step::Capture(h, a)),
        3 => (any::<usize>(), proptest::option::of(1u64..=40)).prop_map(|(h, a)| Step::Release(h, a)),
        1 => (1u64..=10).prop_map(Step::ForeignCapture),
        3 => any::<usize>().prop_map(Step::Replay),
        1 => any::<usize>().prop_map(Step::Reuse),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 1..=OPS_MAX)
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    Config {
        cases,
        // Shrinking replays whole sequences against a real database: keep it short.
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

/// The reference model of one organization's ledger.
#[derive(Debug, Default)]
struct Model {
    balance: u64,
    /// Holds by creation order: (id, amount, captured, released, closed).
    holds: Vec<(HoldId, u64, u64, u64, bool)>,
    /// Keys that wrote an entry: fingerprint and the entry's balance_after.
    keys: HashMap<String, (String, u64)>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Applied { balance: u64 },
    Replayed { balance: u64 },
    Refused(&'static str),
}

impl Model {
    fn hold_index(&self, id: HoldId) -> Option<usize> {
        self.holds.iter().position(|h| h.0 == id)
    }

    /// What the store must answer to `op` under `key`, and the model after it.
    fn apply(&mut self, op: &LedgerOp, key: &str, entry: HoldId) -> Outcome {
        let fingerprint = op.fingerprint();
        if let Some((seen, balance_after)) = self.keys.get(key) {
            return if *seen == fingerprint {
                Outcome::Replayed {
                    balance: *balance_after,
                }
            } else {
                Outcome::Refused("idempotency_conflict")
            };
        }
        let outcome = match *op {
            LedgerOp::Grant { amount } => {
                self.balance += amount.get();
                Outcome::Applied {
                    balance: self.balance,
                }
            }
            LedgerOp::Debit { amount } | LedgerOp::Reserve { amount, .. } => {
                if amount.get() > self.balance {
                    return Outcome::Refused("insufficient_credits");
                }
                self.balance -= amount.get();
                if matches!(op, LedgerOp::Reserve { .. }) {
                    self.holds.push((entry, amount.get(), 0, 0, false));
                }
                Outcome::Applied {
                    balance: self.balance,
                }
            }
            LedgerOp::Capture { hold, amount } => {
                let Some(i) = self.hold_index(hold) else {
                    return Outcome::Refused("not_found");
                };
                let h = &mut self.holds[i];
                if h.4 || amount.get() > h.1 - h.2 - h.3 {
                    return Outcome::Refused("invalid_state");
                }
                h.2 += amount.get();
                Outcome::Applied {
                    balance: self.balance,
                }
            }
            LedgerOp::Release { hold, amount } => {
                let Some(i) = self.hold_index(hold) else {
                    return Outcome::Refused("not_found");
                };
                let h = &mut self.holds[i];
                let remaining = h.1 - h.2 - h.3;
                let take = amount.map_or(remaining, Credits::get);
                if h.4 || take > remaining {
                    return Outcome::Refused("invalid_state");
                }
                h.3 += take;
                if amount.is_none() {
                    h.4 = true;
                }
                self.balance += take;
                Outcome::Applied {
                    balance: self.balance,
                }
            }
        };
        if let Outcome::Applied { balance } = outcome {
            self.keys.insert(key.to_owned(), (fingerprint, balance));
        }
        outcome
    }
}

fn credits(n: u64) -> Credits {
    Credits::amount(n).expect("amount in range")
}

/// A hold id that no store knows.
fn unknown_hold(fx: &Fixture) -> HoldId {
    HoldId::from_uuid(fx.entry_id().as_uuid())
}

/// Runs one generated sequence against `fx.store` and the model.
async fn run_sequence(fx: &Fixture, steps: &[Step]) -> Result<(), TestCaseError> {
    let org = fx.funded_org(0).await.expect("org");
    // Another organization with an open hold, for the tenancy check.
    let other = fx.funded_org(100).await.expect("other org");
    let foreign = fx
        .apply(
            other,
            LedgerOp::Reserve {
                amount: credits(50),
                job: None,
            },
            "foreign-hold",
        )
        .await
        .expect("foreign hold");
    let foreign_hold = foreign.hold.expect("a hold").id;

    let mut model = Model::default();
    // What each step sent (op and key), so replays and reuses can refer to it.
    let mut sent: Vec<(LedgerOp, String)> = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let pick_hold = |i: usize| {
            if model.holds.is_empty() {
                unknown_hold(fx)
            } else {
                model.holds[i % model.holds.len()].0
            }
        };
        let fresh = format!("op-{n}");
        let (op, key) = match step {
            Step::Grant(a) => (
                LedgerOp::Grant {
                    amount: credits(*a),
                },
                fresh,
            ),
            Step::Debit(a) => (
                LedgerOp::Debit {
                    amount: credits(*a),
                },
                fresh,
            ),
            Step::Reserve(a) => (
                LedgerOp::Reserve {
                    amount: credits(*a),
                    job: None,
                },
                fresh,
            ),
            Step::Capture(h, a) => (
                LedgerOp::Capture {
                    hold: pick_hold(*h),
                    amount: credits(*a),
                },
                fresh,
            ),
            Step::Release(h, a) => (
                LedgerOp::Release {
                    hold: pick_hold(*h),
                    amount: a.map(credits),
                },
                fresh,
            ),
            Step::ForeignCapture(a) => (
                LedgerOp::Capture {
                    hold: foreign_hold,
                    amount: credits(*a),
                },
                fresh,
            ),
            Step::Replay(i) if !sent.is_empty() => sent[i % sent.len()].clone(),
            Step::Reuse(i) if !sent.is_empty() => {
                let (_, key) = sent[i % sent.len()].clone();
                // A grant of an amount no generated grant uses: always a different fingerprint.
                (
                    LedgerOp::Grant {
                        amount: credits(999),
                    },
                    key,
                )
            }
            Step::Replay(_) | Step::Reuse(_) => (LedgerOp::Grant { amount: credits(1) }, fresh),
        };
        let request = LedgerRequest {
            entry_id: fx.entry_id(),
            org,
            op,
            idempotency_key: IdempotencyKey::new(&key).expect("key"),
            at: fx.now,
        };
        let expected = model.apply(&op, &key, HoldId::from_uuid(request.entry_id.as_uuid()));
        let got = match fx.store.apply(&request, None).await {
            Ok(receipt) if receipt.replayed => Outcome::Replayed {
                balance: receipt.balance().get(),
            },
            Ok(receipt) => Outcome::Applied {
                balance: receipt.balance().get(),
            },
            Err(e) => Outcome::Refused(e.code()),
        };
        prop_assert_eq!(&got, &expected, "step {} {:?}", n, step);
        sent.push((op, key));
        let balance = fx.store.balance(org).await.expect("balance").get();
        prop_assert_eq!(balance, model.balance, "balance after step {}", n);
    }

    // The invariants, read back from the store.
    let balance = fx.assert_ledger_consistent(org).await.expect("ledger");
    prop_assert_eq!(balance, model.balance);
    for (id, amount, captured, released, closed) in &model.holds {
        let hold = fx
            .store
            .hold(org, *id)
            .await
            .expect("hold")
            .expect("exists");
        prop_assert_eq!(hold.amount.get(), *amount);
        prop_assert_eq!(hold.captured.get(), *captured);
        prop_assert_eq!(hold.released.get(), *released);
        prop_assert_eq!(hold.closed_at.is_some(), *closed);
        prop_assert!(hold.captured.get() + hold.released.get() <= hold.amount.get());
    }
    assert_unique_keys(fx, org).await?;
    // The other organization was never touched.
    prop_assert_eq!(fx.assert_ledger_consistent(other).await.expect("other"), 50);
    Ok(())
}

/// No idempotency key of `org` has two entries.
async fn assert_unique_keys(fx: &Fixture, org: OrgId) -> Result<(), TestCaseError> {
    let mut seen = HashSet::new();
    let mut after = None;
    loop {
        let page = fx
            .store
            .entries(org, after, PageLimit::max())
            .await
            .expect("entries");
        for e in &page.items {
            prop_assert!(
                seen.insert(e.idempotency_key.as_str().to_owned()),
                "two entries under {}",
                e.idempotency_key
            );
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// Runs the same steps concurrently (each step one task): whatever the order, the invariants
/// hold and every key has at most one entry.
async fn run_concurrently(fx: &Arc<Fixture>, steps: &[Step]) -> Result<(), TestCaseError> {
    let org = fx.funded_org(100).await.expect("org");
    // Holds to capture from and release, created before the race.
    let mut holds = Vec::new();
    for i in 0..3 {
        let r = fx
            .apply(
                org,
                LedgerOp::Reserve {
                    amount: credits(20),
                    job: None,
                },
                &format!("pre-hold-{i}"),
            )
            .await
            .expect("hold");
        holds.push(r.hold.expect("hold").id);
    }
    let mut tasks = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let hold = holds[n % holds.len()];
        // Replays and reuses share the keys `k-0`..`k-7`, so many tasks race on one key.
        let (op, key) = match step {
            Step::Grant(a) => (
                LedgerOp::Grant {
                    amount: credits(*a),
                },
                format!("c-{n}"),
            ),
            Step::Debit(a) | Step::ForeignCapture(a) => (
                LedgerOp::Debit {
                    amount: credits(*a),
                },
                format!("c-{n}"),
            ),
            Step::Reserve(a) => (
                LedgerOp::Reserve {
                    amount: credits(*a),
                    job: None,
                },
                format!("c-{n}"),
            ),
            Step::Capture(_, a) => (
                LedgerOp::Capture {
                    hold,
                    amount: credits(*a),
                },
                format!("c-{n}"),
            ),
            Step::Release(_, a) => (
                LedgerOp::Release {
                    hold,
                    amount: a.map(credits),
                },
                format!("c-{n}"),
            ),
            Step::Replay(i) => (
                LedgerOp::Debit { amount: credits(7) },
                format!("k-{}", i % 8),
            ),
            Step::Reuse(i) => (
                LedgerOp::Grant { amount: credits(3) },
                format!("k-{}", i % 8),
            ),
        };
        let fx = Arc::clone(fx);
        tasks.push(tokio::spawn(async move {
            let request = LedgerRequest {
                entry_id: fx.entry_id(),
                org,
                op,
                idempotency_key: IdempotencyKey::new(&key).expect("key"),
                at: fx.now,
            };
            fx.store.apply(&request, None).await
        }));
    }
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => {}
            Err(
                Error::InsufficientCredits { .. }
                | Error::InvalidState(_)
                | Error::IdempotencyConflict,
            ) => {}
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
        }
    }
    fx.assert_ledger_consistent(org).await.expect("ledger");
    for hold in holds {
        let h = fx
            .store
            .hold(org, hold)
            .await
            .expect("hold")
            .expect("exists");
        prop_assert!(h.captured.get() + h.released.get() <= h.amount.get());
    }
    assert_unique_keys(fx, org).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

fn check_sequences(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>) {
    let fx = Fixture::new(store);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&steps(), |steps| rt.block_on(run_sequence(&fx, &steps)));
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn check_concurrent(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>) {
    let fx = Arc::new(Fixture::new(store));
    let mut config = config();
    config.cases = config.cases.div_ceil(2);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&steps(), |steps| rt.block_on(run_concurrently(&fx, &steps)));
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn sqlite(rt: &tokio::runtime::Runtime) -> Arc<dyn Store> {
    let path = support::sqlite_path("ledger-properties");
    Arc::new(rt.block_on(support::sqlite_store(
        &path,
        std::time::Duration::from_secs(5),
    )))
}

#[test]
fn memory_sequences_match_the_model() {
    let rt = runtime();
    check_sequences(&rt, Arc::new(MemoryStore::new()));
}

#[test]
fn sqlite_sequences_match_the_model() {
    let rt = runtime();
    let store = sqlite(&rt);
    check_sequences(&rt, store);
}

#[test]
fn memory_concurrent_operations_keep_the_invariants() {
    let rt = runtime();
    check_concurrent(&rt, Arc::new(MemoryStore::new()));
}

#[test]
fn sqlite_concurrent_operations_keep_the_invariants() {
    let rt = runtime();
    let store = sqlite(&rt);
    check_concurrent(&rt, store);
}
