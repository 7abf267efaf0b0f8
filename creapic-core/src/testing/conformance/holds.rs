//! Conformance of ledger holds: reserve, capture and release (a closed hold takes nothing more),
//! holds that belong to their organization, the stale-hold listing the sweeper reads, and
//! `held`, the credits still in open holds.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::Error;
use crate::id::{HoldId, OrgId};
use crate::ledger::LedgerOp;
use crate::page::PageLimit;
use crate::store::Store;
use crate::testing::Fixture;

use super::{amount, new_job, ok};

/// A hold takes credits out of the balance; captures keep them; releases return them; a closed
/// hold takes nothing more.
pub async fn ledger_holds_capture_and_release(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(20).await, "org");
    let r = ok(
        f.apply(
            org,
            LedgerOp::Reserve {
                amount: amount(10),
                job: None,
            },
            "h",
        )
        .await,
        "reserve",
    );
    assert_eq!(r.balance().get(), 10);
    let hold = r.hold.map(|h| h.id).expect("a reserve returns its hold");
    assert_eq!(
        hold.as_uuid(),
        r.entry.id.as_uuid(),
        "the hold id is the entry id"
    );
    let c = ok(
        f.apply(
            org,
            LedgerOp::Capture {
                hold,
                amount: amount(3),
            },
            "c1",
        )
        .await,
        "c1",
    );
    assert_eq!((c.entry.delta, c.balance().get()), (0, 10));
    ok(
        f.apply(
            org,
            LedgerOp::Capture {
                hold,
                amount: amount(3),
            },
            "c2",
        )
        .await,
        "c2",
    );
    let over = f
        .apply(
            org,
            LedgerOp::Capture {
                hold,
                amount: amount(5),
            },
            "c3",
        )
        .await;
    assert!(matches!(over, Err(Error::InvalidState(_))), "{over:?}");
    let part = ok(
        f.apply(
            org,
            LedgerOp::Release {
                hold,
                amount: Some(amount(1)),
            },
            "r1",
        )
        .await,
        "partial release",
    );
    assert_eq!(part.balance().get(), 11);
    assert_eq!(
        part.hold.as_ref().map(|h| h.closed_at.is_none()),
        Some(true)
    );
    let rest = ok(
        f.apply(org, LedgerOp::Release { hold, amount: None }, "r2")
            .await,
        "release",
    );
    assert_eq!(rest.entry.delta, 3);
    assert_eq!(rest.balance().get(), 14);
    let h = ok(f.store.hold(org, hold).await, "hold").expect("hold exists");
    assert_eq!(
        (h.captured.get(), h.released.get(), h.remaining()),
        (6, 4, 0)
    );
    assert!(h.closed_at.is_some());
    let late = f
        .apply(
            org,
            LedgerOp::Capture {
                hold,
                amount: amount(1),
            },
            "c4",
        )
        .await;
    assert!(matches!(late, Err(Error::InvalidState(_))), "{late:?}");
    let late = f
        .apply(org, LedgerOp::Release { hold, amount: None }, "r3")
        .await;
    assert!(matches!(late, Err(Error::InvalidState(_))), "{late:?}");
    // A replay of the closing release still answers with its first result.
    let replay = ok(
        f.apply(org, LedgerOp::Release { hold, amount: None }, "r2")
            .await,
        "replay",
    );
    assert!(replay.replayed);
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 14);
}

/// The sweep's listing: open holds with credits left, of no job, created before the cutoff, of
/// every organization, oldest first, bounded by the limit.
pub async fn ledger_stale_holds_are_open_unpaid_and_old(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (a, b) = (
        ok(f.funded_org(20).await, "org a"),
        ok(f.funded_org(20).await, "org b"),
    );
    let minutes_ago = |m: u64| f.now.minus(Duration::from_secs(m * 60));
    let reserve_at = |org: OrgId, n: u64, at: Timestamp, key: &'static str| {
        let op = LedgerOp::Reserve {
            amount: amount(n),
            job: None,
        };
        let f = &f;
        async move { ok(f.apply_at(org, op, key, at).await, key) }
    };
    let hold_of = |r: &crate::ledger::LedgerReceipt| r.hold.as_ref().map(|h| h.id).expect("hold");
    let oldest = hold_of(&reserve_at(a, 3, minutes_ago(30), "oldest").await);
    let older_b = hold_of(&reserve_at(b, 2, minutes_ago(20), "older-b").await);
    let fresh = hold_of(&reserve_at(a, 1, f.now, "fresh").await);
    // Settled holds are never stale, however old: used up by a capture, or released.
    let used = hold_of(&reserve_at(a, 1, minutes_ago(40), "used").await);
    ok(
        f.apply(
            a,
            LedgerOp::Capture {
                hold: used,
                amount: amount(1),
            },
            "use",
        )
        .await,
        "capture",
    );
    let closed = hold_of(&reserve_at(a, 1, minutes_ago(40), "closed").await);
    ok(
        f.apply(
            a,
            LedgerOp::Release {
                hold: closed,
                amount: None,
            },
            "close",
        )
        .await,
        "release",
    );
    // A job's hold is settled by its job, never by the sweep.
    ok(
        f.store.enqueue(&new_job(&f, a, 2, 1, "job")).await,
        "enqueue",
    );

    let ids = |holds: Vec<crate::ledger::Hold>| holds.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let limit = |n| ok(PageLimit::new(n), "limit");
    let before_ten_minutes = ok(
        f.store.stale_holds(minutes_ago(10), limit(100)).await,
        "stale",
    );
    assert_eq!(
        ids(before_ten_minutes),
        vec![oldest, older_b],
        "open, unpaid, older than the cutoff, every organization, oldest first"
    );
    let later = f.now.plus(Duration::from_secs(60));
    let all = ids(ok(f.store.stale_holds(later, limit(100)).await, "stale"));
    assert_eq!(all, vec![oldest, older_b, fresh], "never a job's hold");
    assert_eq!(
        ids(ok(f.store.stale_holds(later, limit(1)).await, "stale")),
        vec![oldest],
        "the limit keeps the oldest"
    );
    // Partly released holds are still open with credits left.
    ok(
        f.apply(
            a,
            LedgerOp::Release {
                hold: oldest,
                amount: Some(amount(1)),
            },
            "part",
        )
        .await,
        "partial release",
    );
    let after = ok(
        f.store.stale_holds(minutes_ago(10), limit(100)).await,
        "stale",
    );
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].remaining(), 2, "what is left of the oldest");
    ok(f.assert_ledger_consistent(a).await, "ledger a");
}

/// Another organization cannot capture, release or read a hold.
pub async fn ledger_holds_belong_to_their_org(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let a = ok(f.funded_org(10).await, "a");
    let b = ok(f.funded_org(10).await, "b");
    let r = ok(
        f.apply(
            a,
            LedgerOp::Reserve {
                amount: amount(5),
                job: None,
            },
            "h",
        )
        .await,
        "hold",
    );
    let hold = r.hold.map(|h| h.id).expect("hold");
    let c = f
        .apply(
            b,
            LedgerOp::Capture {
                hold,
                amount: amount(1),
            },
            "c",
        )
        .await;
    assert!(matches!(c, Err(Error::NotFound { .. })), "{c:?}");
    let rel = f
        .apply(b, LedgerOp::Release { hold, amount: None }, "r")
        .await;
    assert!(matches!(rel, Err(Error::NotFound { .. })), "{rel:?}");
    assert_eq!(ok(f.store.hold(b, hold).await, "hold"), None);
    let unknown = HoldId::generate(f.now, f.rng.as_ref());
    let c = f
        .apply(
            a,
            LedgerOp::Capture {
                hold: unknown,
                amount: amount(1),
            },
            "c",
        )
        .await;
    assert!(matches!(c, Err(Error::NotFound { .. })), "{c:?}");
    assert_eq!(ok(f.assert_ledger_consistent(a).await, "a"), 5);
    assert_eq!(ok(f.assert_ledger_consistent(b).await, "b"), 10);
}

/// `held` is what open holds still hold: reserved minus captured minus released, of open
/// holds of this organization only; closing a hold takes it out.
pub async fn ledger_held_counts_open_holds_only(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(100).await, "org");
    let other = ok(f.funded_org(100).await, "other");
    assert_eq!(ok(f.store.held(org).await, "held").get(), 0);
    let a = ok(
        f.apply(
            org,
            LedgerOp::Reserve {
                amount: amount(10),
                job: None,
            },
            "held-a",
        )
        .await,
        "reserve a",
    );
    let b = ok(
        f.apply(
            org,
            LedgerOp::Reserve {
                amount: amount(7),
                job: None,
            },
            "held-b",
        )
        .await,
        "reserve b",
    );
    ok(
        f.apply(
            other,
            LedgerOp::Reserve {
                amount: amount(50),
                job: None,
            },
            "held-o",
        )
        .await,
        "reserve other",
    );
    let hold_a = a.hold.expect("hold a").id;
    let hold_b = b.hold.expect("hold b").id;
    assert_eq!(ok(f.store.held(org).await, "held").get(), 17);
    ok(
        f.apply(
            org,
            LedgerOp::Capture {
                hold: hold_a,
                amount: amount(4),
            },
            "held-cap",
        )
        .await,
        "capture",
    );
    ok(
        f.apply(
            org,
            LedgerOp::Release {
                hold: hold_a,
                amount: Some(amount(1)),
            },
            "held-rel",
        )
        .await,
        "release part",
    );
    assert_eq!(ok(f.store.held(org).await, "held").get(), 5 + 7);
    ok(
        f.apply(
            org,
            LedgerOp::Release {
                hold: hold_b,
                amount: None,
            },
            "held-close",
        )
        .await,
        "close b",
    );
    assert_eq!(ok(f.store.held(org).await, "held").get(), 5);
    assert_eq!(ok(f.store.held(other).await, "held other").get(), 50);
    // Balance plus held plus what was spent is what was granted.
    let balance = ok(f.store.balance(org).await, "balance").get();
    assert_eq!(balance + 5 + 4, 100);
}
