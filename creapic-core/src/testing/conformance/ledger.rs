//! Conformance of the ledger's balance: grants and debits whose entries sum to the balance,
//! all-or-nothing debits, idempotent replays and conflicting reuse of a key, the balance limit,
//! paged entries, usage per UTC day, and concurrent debits and replays that never overdraw or
//! charge twice. Holds have their own file (`holds.rs`).

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::error::Error;
use crate::id::OrgId;
use crate::ledger::{Credits, EntryKind, LedgerOp};
use crate::page::PageLimit;
use crate::store::Store;
use crate::testing::Fixture;

use super::{amount, ok};

/// Grants and debits move the balance and write entries whose sum is the balance.
pub async fn ledger_grant_and_debit_keep_balance_equal_to_entries(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(100).await, "org");
    let r = ok(
        f.apply(org, LedgerOp::Debit { amount: amount(30) }, "d1")
            .await,
        "debit",
    );
    assert_eq!(r.balance().get(), 70);
    assert_eq!(r.entry.kind, EntryKind::Debit);
    assert_eq!(r.entry.delta, -30);
    assert!(!r.replayed);
    ok(
        f.apply(org, LedgerOp::Grant { amount: amount(5) }, "g2")
            .await,
        "grant",
    );
    assert_eq!(ok(f.store.balance(org).await, "balance").get(), 75);
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 75);
    let empty = OrgId::generate(f.now, f.rng.as_ref());
    assert_eq!(ok(f.store.balance(empty).await, "balance"), Credits::ZERO);
}

/// A debit larger than the balance is refused and writes nothing.
pub async fn ledger_debit_is_all_or_nothing(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let r = f
        .apply(org, LedgerOp::Debit { amount: amount(11) }, "big")
        .await;
    match r {
        Err(Error::InsufficientCredits { needed, available }) => {
            assert_eq!((needed, available), (11, 10));
        }
        other => panic!("expected insufficient credits, got {other:?}"),
    }
    let r = f
        .apply(
            org,
            LedgerOp::Reserve {
                amount: amount(11),
                job: None,
            },
            "big-hold",
        )
        .await;
    assert!(matches!(r, Err(Error::InsufficientCredits { .. })), "{r:?}");
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 10);
    // A refused request leaves its key unused: the same key works once credits arrive.
    ok(
        f.apply(org, LedgerOp::Grant { amount: amount(1) }, "top-up")
            .await,
        "grant",
    );
    let r = ok(
        f.apply(org, LedgerOp::Debit { amount: amount(11) }, "big")
            .await,
        "retry",
    );
    assert!(!r.replayed);
    assert_eq!(r.balance(), Credits::ZERO);
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 0);
}

/// Repeating a request with the same key returns the first entry and charges once.
pub async fn ledger_replays_return_the_first_result(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(50).await, "org");
    let first = ok(
        f.apply(org, LedgerOp::Debit { amount: amount(7) }, "once")
            .await,
        "debit",
    );
    let again = ok(
        f.apply(org, LedgerOp::Debit { amount: amount(7) }, "once")
            .await,
        "replay",
    );
    assert!(again.replayed);
    assert_eq!(
        again.entry, first.entry,
        "a replay must return the first entry"
    );
    let hold = ok(
        f.apply(
            org,
            LedgerOp::Reserve {
                amount: amount(5),
                job: None,
            },
            "hold",
        )
        .await,
        "reserve",
    );
    let hold_again = ok(
        f.apply(
            org,
            LedgerOp::Reserve {
                amount: amount(5),
                job: None,
            },
            "hold",
        )
        .await,
        "reserve replay",
    );
    assert!(hold_again.replayed);
    assert_eq!(hold_again.entry.id, hold.entry.id);
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 38);
}

/// The same key with other parameters or another operation is a conflict.
pub async fn ledger_reused_key_with_other_parameters_conflicts(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(50).await, "org");
    ok(
        f.apply(org, LedgerOp::Debit { amount: amount(7) }, "k")
            .await,
        "debit",
    );
    for op in [
        LedgerOp::Debit { amount: amount(8) },
        LedgerOp::Grant { amount: amount(7) },
        LedgerOp::Reserve {
            amount: amount(7),
            job: None,
        },
    ] {
        let r = f.apply(org, op, "k").await;
        assert!(
            matches!(r, Err(Error::IdempotencyConflict)),
            "{op:?} gave {r:?}"
        );
    }
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 43);
}

/// Idempotency keys of different organizations never collide.
pub async fn ledger_idempotency_is_scoped_per_org(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let a = ok(f.funded_org(10).await, "a");
    let b = ok(f.funded_org(10).await, "b");
    let ra = ok(
        f.apply(a, LedgerOp::Debit { amount: amount(3) }, "same")
            .await,
        "a",
    );
    let rb = ok(
        f.apply(b, LedgerOp::Debit { amount: amount(3) }, "same")
            .await,
        "b",
    );
    assert!(!ra.replayed && !rb.replayed);
    assert_eq!(ok(f.store.balance(a).await, "a").get(), 7);
    assert_eq!(ok(f.store.balance(b).await, "b").get(), 7);
}

/// A grant that would push the balance past the limit is refused.
pub async fn ledger_grant_respects_the_balance_limit(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(crate::ledger::AMOUNT_MAX).await, "org");
    let mut granted = crate::ledger::AMOUNT_MAX;
    let mut i = 0;
    while granted + crate::ledger::AMOUNT_MAX <= crate::ledger::BALANCE_MAX && i < 2000 {
        ok(
            f.apply(
                org,
                LedgerOp::Grant {
                    amount: amount(crate::ledger::AMOUNT_MAX),
                },
                &format!("g{i}"),
            )
            .await,
            "grant",
        );
        granted += crate::ledger::AMOUNT_MAX;
        i += 1;
    }
    let r = f
        .apply(
            org,
            LedgerOp::Grant {
                amount: amount(crate::ledger::AMOUNT_MAX),
            },
            "over",
        )
        .await;
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
    assert_eq!(ok(f.store.balance(org).await, "balance").get(), granted);
}

/// Entries page in ledger order with a cursor.
pub async fn ledger_entries_page_in_order(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(100).await, "org");
    for i in 0..9 {
        ok(
            f.apply(org, LedgerOp::Debit { amount: amount(1) }, &format!("d{i}"))
                .await,
            "debit",
        );
    }
    let limit = ok(PageLimit::new(4), "limit");
    let mut after = None;
    let mut kinds = Vec::new();
    let mut pages = 0;
    loop {
        let page = ok(f.store.entries(org, after, limit).await, "entries");
        pages += 1;
        kinds.extend(page.items.iter().map(|e| (e.kind, e.balance_after.get())));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(kinds.len(), 10);
    assert_eq!(kinds[0], (EntryKind::Grant, 100));
    assert_eq!(kinds[9], (EntryKind::Debit, 91));
}

/// 64 tasks race debits and holds of 1 credit against 50 credits: exactly 50 succeed.
pub async fn concurrent_debits_and_holds_never_overdraw(store: Arc<dyn Store>) {
    let f = Arc::new(Fixture::new(store));
    let org = ok(f.funded_org(50).await, "org");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            let op = if i % 2 == 0 {
                LedgerOp::Debit { amount: amount(1) }
            } else {
                LedgerOp::Reserve {
                    amount: amount(1),
                    job: None,
                }
            };
            let mut wins = 0u32;
            for round in 0..2 {
                match f.apply(org, op, &format!("t{i}-{round}")).await {
                    Ok(_) => wins += 1,
                    Err(Error::InsufficientCredits { .. }) => {}
                    Err(e) => panic!("unexpected error under contention: {e}"),
                }
            }
            wins
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await.expect("task");
    }
    assert_eq!(
        granted, 50,
        "exactly the balance must be granted, never more"
    );
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 0);
}

/// 32 tasks replay the same request concurrently: it is charged once.
pub async fn concurrent_replays_charge_once(store: Arc<dyn Store>) {
    let f = Arc::new(Fixture::new(store));
    let org = ok(f.funded_org(100).await, "org");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            f.apply(org, LedgerOp::Debit { amount: amount(10) }, "retry-me")
                .await
        }));
    }
    let mut ids = Vec::new();
    let mut fresh = 0;
    for t in tasks {
        let r = ok(t.await.expect("task"), "debit");
        ids.push(r.entry.id);
        if !r.replayed {
            fresh += 1;
        }
    }
    ids.dedup();
    assert_eq!(fresh, 1, "exactly one request may charge");
    assert_eq!(ids.len(), 1, "every replay must return the same entry");
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 90);
}

/// Many kinds of request from several organizations at once — fresh debits, one key sent with
/// two amounts, one key sent many times, a debit the balance cannot cover, reserve → capture →
/// release — are each answered as if applied alone: a backend that applies queued requests
/// together (group commit) must keep every answer and every balance exactly right.
pub async fn concurrent_mixed_requests_are_answered_as_if_alone(store: Arc<dyn Store>) {
    /// What one task did: (fresh entries, replays, conflicts, refusals, credits it took).
    type Outcome = (u32, u32, u32, u32, u64);
    let f = Arc::new(Fixture::new(store));
    let mut orgs = Vec::new();
    for _ in 0..3 {
        orgs.push(ok(f.funded_org(100).await, "org"));
    }
    let mut tasks: Vec<tokio::task::JoinHandle<Outcome>> = Vec::new();
    for (o, &org) in orgs.iter().enumerate() {
        // 8 fresh debits of 5: 40.
        for i in 0..8 {
            let f = Arc::clone(&f);
            tasks.push(tokio::spawn(async move {
                ok(
                    f.apply(
                        org,
                        LedgerOp::Debit { amount: amount(5) },
                        &format!("d{o}-{i}"),
                    )
                    .await,
                    "fresh debit",
                );
                (1, 0, 0, 0, 5)
            }));
        }
        // 4 keys, each sent with 3 and with 4 credits: one of each pair is written.
        for j in 0..4 {
            for n in [3, 4] {
                let f = Arc::clone(&f);
                tasks.push(tokio::spawn(async move {
                    let key = format!("p{o}-{j}");
                    match f
                        .apply(org, LedgerOp::Debit { amount: amount(n) }, &key)
                        .await
                    {
                        Ok(r) if !r.replayed => (1, 0, 0, 0, n),
                        Err(Error::IdempotencyConflict) => (0, 0, 1, 0, 0),
                        other => panic!("a key sent with two amounts: {other:?}"),
                    }
                }));
            }
        }
        // One key sent 6 times: charged once.
        for _ in 0..6 {
            let f = Arc::clone(&f);
            tasks.push(tokio::spawn(async move {
                let r = ok(
                    f.apply(
                        org,
                        LedgerOp::Debit { amount: amount(2) },
                        &format!("same{o}"),
                    )
                    .await,
                    "repeated debit",
                );
                if r.replayed {
                    (0, 1, 0, 0, 0)
                } else {
                    (1, 0, 0, 0, 2)
                }
            }));
        }
        // Two debits the balance never covers.
        for k in 0..2 {
            let f = Arc::clone(&f);
            tasks.push(tokio::spawn(async move {
                match f
                    .apply(
                        org,
                        LedgerOp::Debit {
                            amount: amount(1000),
                        },
                        &format!("big{o}-{k}"),
                    )
                    .await
                {
                    Err(Error::InsufficientCredits { needed: 1000, .. }) => (0, 0, 0, 1, 0),
                    other => panic!("a debit past the balance: {other:?}"),
                }
            }));
        }
        // 4 holds of 5: capture 3, release the rest.
        for k in 0..4 {
            let f = Arc::clone(&f);
            tasks.push(tokio::spawn(async move {
                let reserve = LedgerOp::Reserve {
                    amount: amount(5),
                    job: None,
                };
                let held = ok(f.apply(org, reserve, &format!("h{o}-{k}")).await, "reserve");
                let hold = held.hold.map(|h| h.id).expect("a reserve opens a hold");
                let capture = LedgerOp::Capture {
                    hold,
                    amount: amount(3),
                };
                ok(f.apply(org, capture, &format!("c{o}-{k}")).await, "capture");
                let release = LedgerOp::Release { hold, amount: None };
                let released = ok(f.apply(org, release, &format!("r{o}-{k}")).await, "release");
                assert_eq!(released.entry.amount, amount(2), "the rest of the hold");
                (3, 0, 0, 0, 3)
            }));
        }
    }
    let mut taken = [0u64; 3];
    let (mut conflicts, mut replays, mut refusals) = (0, 0, 0);
    for (n, t) in tasks.into_iter().enumerate() {
        let (_, replayed, conflicted, refused, credits) = t.await.expect("task");
        // Tasks were spawned organization by organization, 8 + 8 + 6 + 2 + 4 each.
        taken[n / 28] += credits;
        replays += replayed;
        conflicts += conflicted;
        refusals += refused;
    }
    assert_eq!(
        conflicts,
        3 * 4,
        "one request of each two-amount pair conflicts"
    );
    assert_eq!(replays, 3 * 5, "a key sent 6 times is replayed 5 times");
    assert_eq!(refusals, 3 * 2, "debits past the balance are refused");
    for (o, &org) in orgs.iter().enumerate() {
        let balance = ok(f.assert_ledger_consistent(org).await, "ledger");
        assert_eq!(
            balance,
            100 - taken[o],
            "organization {o}: the balance is what was taken"
        );
        assert_eq!(
            ok(f.store.held(org).await, "held"),
            Credits::ZERO,
            "no hold left open"
        );
    }
}

/// Usage sums each UTC day's entries by kind (spent = captures + debits; grants; releases),
/// of this organization only, within the range only; reserves move nothing here.
pub async fn ledger_usage_sums_each_utc_day(store: Arc<dyn Store>) {
    use crate::ledger::{DAY_MS, DayRange};
    let f = Fixture::new(store);
    let org = ok(f.funded_org(0).await, "org");
    let other = ok(f.funded_org(0).await, "other");
    // Three days: d0 (outside the range), d1 and d2.
    let d0 = (f.now.unix_ms() / DAY_MS - 3) * DAY_MS;
    let (d1, d2) = (d0 + DAY_MS, d0 + 2 * DAY_MS);
    let at = |ms: i64| Timestamp::from_unix_ms(ms);
    ok(
        f.apply_at(
            org,
            LedgerOp::Grant {
                amount: amount(100),
            },
            "u-g0",
            at(d0 + 5),
        )
        .await,
        "g0",
    );
    ok(
        f.apply_at(org, LedgerOp::Grant { amount: amount(50) }, "u-g1", at(d1))
            .await,
        "g1",
    );
    ok(
        f.apply_at(
            org,
            LedgerOp::Debit { amount: amount(3) },
            "u-d1",
            at(d1 + DAY_MS - 1),
        )
        .await,
        "d1",
    );
    let r = ok(
        f.apply_at(
            org,
            LedgerOp::Reserve {
                amount: amount(10),
                job: None,
            },
            "u-r2",
            at(d2 + 1),
        )
        .await,
        "r2",
    );
    let hold = r.hold.expect("hold").id;
    ok(
        f.apply_at(
            org,
            LedgerOp::Capture {
                hold,
                amount: amount(6),
            },
            "u-c2",
            at(d2 + 2),
        )
        .await,
        "c2",
    );
    ok(
        f.apply_at(
            org,
            LedgerOp::Release { hold, amount: None },
            "u-x2",
            at(d2 + 3),
        )
        .await,
        "x2",
    );
    ok(
        f.apply_at(
            other,
            LedgerOp::Grant { amount: amount(9) },
            "u-o",
            at(d1 + 7),
        )
        .await,
        "other",
    );
    let range = ok(DayRange::new(at(d1 + 123), at(d2 + 456)), "range");
    assert_eq!((range.start(), range.days()), (at(d1), 2));
    let days = ok(f.store.usage(org, &range).await, "usage");
    let got: Vec<_> = days
        .iter()
        .map(|u| {
            (
                u.day.unix_ms(),
                u.spent.get(),
                u.granted.get(),
                u.released.get(),
            )
        })
        .collect();
    assert_eq!(got, vec![(d1, 3, 50, 0), (d2, 6, 0, 4)]);
    let empty = ok(
        DayRange::new(at(d2 + DAY_MS), at(d2 + DAY_MS)),
        "empty range",
    );
    assert!(ok(f.store.usage(org, &empty).await, "usage").is_empty());
}

/// Every organization with credits is listed once, in id order across pages, with its balance,
/// the sum of its entries' deltas and their count; holds, captures and releases included.
pub async fn ledger_totals_list_every_organization_in_pages(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let mut orgs = Vec::new();
    for i in 0..3u64 {
        let org = ok(f.funded_org(100 + i).await, "org");
        ok(
            f.apply(org, LedgerOp::Debit { amount: amount(7) }, "d")
                .await,
            "debit",
        );
        orgs.push(org);
    }
    let held = ok(
        f.apply(
            orgs[0],
            LedgerOp::Reserve {
                amount: amount(10),
                job: None,
            },
            "h",
        )
        .await,
        "reserve",
    );
    let hold = held.hold.map(|h| h.id).expect("a reserve returns its hold");
    ok(
        f.apply(
            orgs[0],
            LedgerOp::Capture {
                hold,
                amount: amount(4),
            },
            "c",
        )
        .await,
        "capture",
    );
    ok(
        f.apply(orgs[0], LedgerOp::Release { hold, amount: None }, "r")
            .await,
        "release",
    );
    let no_credits = ok(f.org().await, "org without credits").0.id;
    let limit = ok(PageLimit::new(1), "limit");
    let mut after = None;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let page = ok(f.store.ledger_totals(after, limit).await, "ledger totals");
        assert!(page.items.len() <= 1, "a page holds at most its limit");
        seen.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0].org < w[1].org),
        "organizations come once each, in id order"
    );
    assert!(
        seen.iter().all(|t| t.org != no_credits),
        "an organization without a balance or entries is not listed"
    );
    for (i, org) in orgs.iter().enumerate() {
        let t = seen
            .iter()
            .find(|t| t.org == *org)
            .unwrap_or_else(|| panic!("organization {i} missing from the totals"));
        let balance = ok(f.store.balance(*org).await, "balance");
        assert_eq!(t.balance, balance, "totals carry the stored balance");
        assert!(t.is_consistent(), "entries add up to the balance: {t:?}");
        // grant + debit; the first also hold, capture and release.
        assert_eq!(t.entries, if i == 0 { 5 } else { 2 }, "entry count of {i}");
    }
    let first = seen.iter().find(|t| t.org == orgs[0]);
    assert_eq!(first.map(|t| t.entries_sum), Some(100 - 7 - 4));
}
