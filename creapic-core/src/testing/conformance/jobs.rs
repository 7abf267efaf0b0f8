//! Conformance of the job queue: enqueue that reserves in the same step, replays and conflicts,
//! claims with leases and reclaim, hand-back, items charged exactly once, completion and
//! cancellation that return what is left, tenancy, listing with item counts, and concurrent
//! claims that never share a job.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::Error;
use crate::id::JobId;
use crate::job::{ItemStatus, JobStatus, WorkerId};
use crate::ledger::Credits;
use crate::page::PageLimit;
use crate::store::Store;
use crate::testing::Fixture;

use super::{finish, new_job, ok, worker};

/// Enqueueing reserves unit cost × items as one hold tied to the job.
pub async fn jobs_enqueue_reserves_in_one_step(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let new = new_job(&f, org, 3, 2, "job-1");
    let e = ok(f.store.enqueue(&new).await, "enqueue");
    assert!(!e.replayed);
    assert_eq!(e.balance.get(), 4);
    assert_eq!(e.job.status, JobStatus::Queued);
    assert_eq!(e.job.items.len(), 3);
    assert!(e.job.items.iter().all(|i| i.status == ItemStatus::Pending));
    let hold = e.hold.expect("a paid job has a hold");
    assert_eq!((hold.amount.get(), hold.job), (6, Some(new.id)));
    assert_eq!(e.job.hold, Some(hold.id));
    assert_eq!(
        ok(f.store.job(org, new.id).await, "job"),
        Some(e.job.clone())
    );
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 4);
}

/// The same submission again returns the same job without a second reservation; a different
/// job under the same key is a conflict.
pub async fn jobs_enqueue_replays_and_conflicts(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let new = new_job(&f, org, 2, 1, "job-k");
    let first = ok(f.store.enqueue(&new).await, "enqueue");
    let mut retry = new_job(&f, org, 2, 1, "job-k");
    retry.hold_entry = f.entry_id();
    let again = ok(f.store.enqueue(&retry).await, "replay");
    assert!(again.replayed);
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(
        again.balance, first.balance,
        "a replay reports the balance of the first"
    );
    let other = new_job(&f, org, 3, 1, "job-k");
    let r = f.store.enqueue(&other).await;
    assert!(matches!(r, Err(Error::IdempotencyConflict)), "{r:?}");
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 8);
}

/// A job whose cost exceeds the balance is refused and not stored.
pub async fn jobs_enqueue_is_refused_without_credits(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(2).await, "org");
    let new = new_job(&f, org, 3, 1, "too-big");
    let r = f.store.enqueue(&new).await;
    assert!(
        matches!(
            r,
            Err(Error::InsufficientCredits {
                needed: 3,
                available: 2
            })
        ),
        "{r:?}"
    );
    assert_eq!(ok(f.store.job(org, new.id).await, "job"), None);
    let w = worker("w");
    let claimed = ok(
        f.store
            .claim_job(&w, f.now, f.now.plus(Duration::from_secs(30)))
            .await,
        "claim",
    );
    assert!(
        claimed.is_none_or(|j| j.id != new.id),
        "a refused job must not be claimable"
    );
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 2);
}

/// The queued-jobs count sees a newly queued job and never exceeds its bound.
pub async fn jobs_queued_count_is_bounded(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    for key in ["queued-a", "queued-b"] {
        ok(
            f.store.enqueue(&new_job(&f, org, 1, 1, key)).await,
            "enqueue",
        );
    }
    let bound = |n| crate::page::PageLimit::new(n).unwrap_or_default();
    // Other tests may share the database: at least ours, at most the bound.
    let many = ok(f.store.count_queued_jobs(bound(1000)).await, "count");
    assert!(many >= 2, "two jobs were queued, counted {many}");
    let one = ok(f.store.count_queued_jobs(bound(1)).await, "count");
    assert_eq!(one, 1, "the count stops at its bound");
}

/// A free job (unit cost 0) is enqueued without a hold, even with no credits.
pub async fn jobs_free_jobs_need_no_hold(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(0).await, "org");
    let new = new_job(&f, org, 2, 0, "free");
    let e = ok(f.store.enqueue(&new).await, "enqueue");
    assert!(e.hold.is_none() && e.job.hold.is_none());
    assert_eq!(e.balance, Credits::ZERO);
}

/// Claims take a lease; a leased job is not claimable until the lease expires; then another
/// worker reclaims it and the first loses it.
pub async fn jobs_claim_lease_and_reclaim(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let new = new_job(&f, org, 2, 1, "lease");
    ok(f.store.enqueue(&new).await, "enqueue");
    let (w1, w2) = (worker("w1"), worker("w2"));
    let lease = Duration::from_secs(30);
    // Other suites may share the store: claim until we get our job.
    let mut mine = None;
    for _ in 0..1000 {
        match ok(
            f.store.claim_job(&w1, f.now, f.now.plus(lease)).await,
            "claim",
        ) {
            Some(j) if j.id == new.id => {
                mine = Some(j);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let job = mine.expect("the queued job must be claimable");
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.attempts, 1);
    assert_eq!(
        job.lease.as_ref().map(|l| l.worker.clone()),
        Some(w1.clone())
    );
    let mid = f.now.plus(Duration::from_secs(10));
    let other = ok(f.store.claim_job(&w2, mid, mid.plus(lease)).await, "claim");
    assert!(
        other.is_none_or(|j| j.id != new.id),
        "a leased job must not be claimed twice"
    );
    let renewed = ok(
        f.store.renew_lease(new.id, &w1, mid.plus(lease)).await,
        "renew",
    );
    assert_eq!(renewed.lease.map(|l| l.expires_at), Some(mid.plus(lease)));
    let r = f.store.renew_lease(new.id, &w2, mid.plus(lease)).await;
    assert!(matches!(r, Err(Error::LeaseLost)), "{r:?}");
    ok(
        f.store.finish_item(&finish(&f, new.id, &w1, 0, true)).await,
        "finish 0",
    );
    let expired = mid.plus(lease).plus(Duration::from_millis(1));
    let mut reclaimed = None;
    for _ in 0..1000 {
        match ok(
            f.store.claim_job(&w2, expired, expired.plus(lease)).await,
            "reclaim",
        ) {
            Some(j) if j.id == new.id => {
                reclaimed = Some(j);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let job = reclaimed.expect("an expired lease must be reclaimable");
    assert_eq!(job.attempts, 2);
    assert_eq!(
        job.items[0].status,
        ItemStatus::Succeeded,
        "finished items stay finished"
    );
    let r = f.store.finish_item(&finish(&f, new.id, &w1, 1, true)).await;
    assert!(
        matches!(r, Err(Error::LeaseLost)),
        "the old worker must lose the lease: {r:?}"
    );
    let r = f
        .store
        .complete_job(new.id, &w1, f.entry_id(), expired)
        .await;
    assert!(matches!(r, Err(Error::LeaseLost)), "{r:?}");
}

/// Claims as `worker` at `now` until `id` comes up (other suites may share the store).
async fn claim_mine(
    f: &Fixture,
    id: JobId,
    worker: &WorkerId,
    now: Timestamp,
) -> Option<crate::job::Job> {
    for _ in 0..1000 {
        match ok(
            f.store
                .claim_job(worker, now, now.plus(Duration::from_secs(30)))
                .await,
            "claim",
        ) {
            Some(j) if j.id == id => return Some(j),
            Some(_) => continue,
            None => return None,
        }
    }
    None
}

/// A job handed back (graceful shutdown) is claimable by another runner at once, keeps its
/// finished items, and the attempt does not count; only the holder can hand it back.
pub async fn jobs_handed_back_are_claimable_at_once(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let new = new_job(&f, org, 2, 1, "hand-back");
    ok(f.store.enqueue(&new).await, "enqueue");
    let (w1, w2) = (worker("w1"), worker("w2"));
    let job = claim_mine(&f, new.id, &w1, f.now).await.expect("claimable");
    assert_eq!(job.attempts, 1);
    ok(
        f.store.finish_item(&finish(&f, new.id, &w1, 0, true)).await,
        "finish 0",
    );
    let r = f.store.release_lease(new.id, &w2, f.now).await;
    assert!(
        matches!(r, Err(Error::LeaseLost)),
        "only the holder hands back: {r:?}"
    );
    let back = ok(f.store.release_lease(new.id, &w1, f.now).await, "hand back");
    assert!(back.lease.is_none());
    assert_eq!(back.attempts, 0, "a hand-back is not a failed attempt");
    // Same instant, long before the old lease would have expired.
    let job = claim_mine(&f, new.id, &w2, f.now)
        .await
        .expect("a handed-back job must be claimable at once");
    assert_eq!(job.attempts, 1);
    assert_eq!(job.items[0].status, ItemStatus::Succeeded);
    let r = f.store.finish_item(&finish(&f, new.id, &w1, 1, true)).await;
    assert!(
        matches!(r, Err(Error::LeaseLost)),
        "the old holder is out: {r:?}"
    );
    ok(
        f.store.finish_item(&finish(&f, new.id, &w2, 1, true)).await,
        "finish 1",
    );
    ok(
        f.store.complete_job(new.id, &w2, f.entry_id(), f.now).await,
        "complete",
    );
    assert_eq!(
        ok(f.store.balance(org).await, "balance").get(),
        8,
        "two items of 1 charged once each"
    );
}

/// Reporting an item twice (or from a retry) captures its cost once; failed items are refunded.
pub async fn jobs_items_are_charged_exactly_once(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let new = new_job(&f, org, 3, 2, "charge-once");
    ok(f.store.enqueue(&new).await, "enqueue");
    let w = worker("w-once");
    let job = claim_exact(&f, &w, new.id).await;
    assert_eq!(job.id, new.id);
    ok(
        f.store.finish_item(&finish(&f, new.id, &w, 0, true)).await,
        "item 0",
    );
    let again = ok(
        f.store.finish_item(&finish(&f, new.id, &w, 0, true)).await,
        "item 0 again",
    );
    assert_eq!(again.items[0].status, ItemStatus::Succeeded);
    let flip = ok(
        f.store.finish_item(&finish(&f, new.id, &w, 0, false)).await,
        "item 0 flip",
    );
    assert_eq!(
        flip.items[0].status,
        ItemStatus::Succeeded,
        "a finished item never changes"
    );
    let failed = ok(
        f.store.finish_item(&finish(&f, new.id, &w, 1, false)).await,
        "item 1",
    );
    assert_eq!(failed.items[1].status, ItemStatus::Failed);
    assert_eq!(
        failed.items[1].error.as_ref().map(|e| e.code.as_str()),
        Some("provider_error")
    );
    assert_eq!(
        ok(f.assert_ledger_consistent(org).await, "ledger"),
        6,
        "failed item refunded"
    );
    let hold = ok(f.store.hold(org, job.hold.expect("hold")).await, "hold").expect("hold");
    assert_eq!((hold.captured.get(), hold.released.get()), (2, 2));
    let r = f.store.finish_item(&finish(&f, new.id, &w, 7, true)).await;
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
}

/// A listing shows each job with its items counted by state, oldest first, one page at a
/// time, and only the organization's own jobs.
pub async fn jobs_list_counts_items_by_state(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(100).await, "org");
    let other = ok(f.funded_org(100).await, "other");
    let first = new_job(&f, org, 4, 1, "list-1");
    ok(f.store.enqueue(&first).await, "enqueue 1");
    let second = new_job(&f, org, 2, 1, "list-2");
    ok(f.store.enqueue(&second).await, "enqueue 2");
    let third = new_job(&f, org, 1, 1, "list-3");
    ok(f.store.enqueue(&third).await, "enqueue 3");
    ok(
        f.store
            .enqueue(&new_job(&f, other, 1, 1, "list-other"))
            .await,
        "enqueue other",
    );
    let w = worker("w-list");
    claim_exact(&f, &w, first.id).await;
    ok(
        f.store
            .finish_item(&finish(&f, first.id, &w, 0, true))
            .await,
        "0",
    );
    ok(
        f.store
            .finish_item(&finish(&f, first.id, &w, 1, true))
            .await,
        "1",
    );
    ok(
        f.store
            .finish_item(&finish(&f, first.id, &w, 2, false))
            .await,
        "2",
    );
    ok(
        f.store
            .cancel_job(org, second.id, f.entry_id(), f.now)
            .await,
        "cancel",
    );

    // Ids made in one millisecond sort by their random bits: "oldest first" is id order.
    let mut order = vec![first.id, second.id, third.id];
    order.sort();
    let limit = ok(PageLimit::new(2), "limit");
    let page = ok(f.store.list_jobs(org, None, limit).await, "page 1");
    let next = page.next.expect("a second page");
    let rest = ok(f.store.list_jobs(org, Some(next), limit).await, "page 2");
    assert_eq!(rest.next, None);
    let all: Vec<_> = page.items.iter().chain(&rest.items).cloned().collect();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        order,
        "id order, two per page, each job once"
    );
    let find = |id: JobId| all.iter().find(|j| j.id == id).expect("listed").clone();
    let running = find(first.id);
    assert_eq!(
        (
            running.items,
            running.succeeded,
            running.failed,
            running.canceled
        ),
        (4, 2, 1, 0)
    );
    assert_eq!(running.pending(), 1);
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.org, org);
    assert_eq!(running.unit_cost.get(), 1);
    let canceled = find(second.id);
    assert_eq!(canceled.status, JobStatus::Canceled);
    assert_eq!(
        (canceled.items, canceled.canceled, canceled.pending()),
        (2, 2, 0)
    );
    assert!(canceled.finished_at.is_some());
    // (Claiming the first job may have claimed this one on the way: queued or running.)
    let untouched = find(third.id);
    assert_eq!(
        (untouched.items, untouched.pending(), untouched.finished_at),
        (1, 1, None),
        "a job not worked on: every item pending"
    );
    // The listing agrees with the whole job, item by item.
    let whole = ok(f.store.job(org, first.id).await, "job").expect("job");
    assert_eq!(crate::job::JobSummary::of(&whole), running);
}

async fn claim_exact(f: &Fixture, w: &WorkerId, id: JobId) -> crate::job::Job {
    for _ in 0..1000 {
        match ok(
            f.store
                .claim_job(w, f.now, f.now.plus(Duration::from_secs(60)))
                .await,
            "claim",
        ) {
            Some(j) if j.id == id => return j,
            Some(_) => continue,
            None => break,
        }
    }
    panic!("job {id} was not claimable")
}

/// Completing sets the outcome, clears the lease and releases what is left, closing the hold.
pub async fn jobs_complete_releases_the_rest(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let new = new_job(&f, org, 2, 3, "complete");
    ok(f.store.enqueue(&new).await, "enqueue");
    let w = worker("w-complete");
    let job = claim_exact(&f, &w, new.id).await;
    ok(
        f.store.finish_item(&finish(&f, new.id, &w, 0, true)).await,
        "item 0",
    );
    let early = f.store.complete_job(new.id, &w, f.entry_id(), f.now).await;
    assert!(matches!(early, Err(Error::InvalidState(_))), "{early:?}");
    ok(
        f.store.finish_item(&finish(&f, new.id, &w, 1, false)).await,
        "item 1",
    );
    let done = ok(
        f.store.complete_job(new.id, &w, f.entry_id(), f.now).await,
        "complete",
    );
    assert_eq!(done.status, JobStatus::Partial);
    assert!(done.lease.is_none() && done.finished_at.is_some());
    let hold = ok(f.store.hold(org, job.hold.expect("hold")).await, "hold").expect("hold");
    assert!(hold.closed_at.is_some(), "completing closes the hold");
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 7);
    let r = f.store.finish_item(&finish(&f, new.id, &w, 1, true)).await;
    assert!(
        matches!(r, Err(Error::LeaseLost)),
        "a finished job takes no reports: {r:?}"
    );
    let r = f.store.cancel_job(org, new.id, f.entry_id(), f.now).await;
    assert!(matches!(r, Err(Error::InvalidState(_))), "{r:?}");
}

/// Canceling refunds every unfinished item and is idempotent; the worker loses the job.
pub async fn jobs_cancel_refunds_unfinished_items(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let new = new_job(&f, org, 4, 2, "cancel");
    ok(f.store.enqueue(&new).await, "enqueue");
    let w = worker("w-cancel");
    claim_exact(&f, &w, new.id).await;
    ok(
        f.store.finish_item(&finish(&f, new.id, &w, 0, true)).await,
        "item 0",
    );
    let c = ok(
        f.store.cancel_job(org, new.id, f.entry_id(), f.now).await,
        "cancel",
    );
    assert_eq!(c.status, JobStatus::Canceled);
    assert_eq!(c.items[0].status, ItemStatus::Succeeded);
    assert!(
        c.items[1..]
            .iter()
            .all(|i| i.status == ItemStatus::Canceled)
    );
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 8);
    let again = ok(
        f.store.cancel_job(org, new.id, f.entry_id(), f.now).await,
        "again",
    );
    assert_eq!(again.status, JobStatus::Canceled);
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 8);
    let r = f.store.finish_item(&finish(&f, new.id, &w, 1, true)).await;
    assert!(matches!(r, Err(Error::LeaseLost)), "{r:?}");
    // A queued job can be canceled too, before any worker sees it.
    let queued = new_job(&f, org, 1, 1, "cancel-queued");
    ok(f.store.enqueue(&queued).await, "enqueue");
    let c = ok(
        f.store
            .cancel_job(org, queued.id, f.entry_id(), f.now)
            .await,
        "cancel",
    );
    assert_eq!(c.status, JobStatus::Canceled);
    assert_eq!(ok(f.assert_ledger_consistent(org).await, "ledger"), 8);
}

/// Another organization can neither read, list nor cancel a job.
pub async fn jobs_are_invisible_to_other_orgs(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let a = ok(f.funded_org(10).await, "a");
    let b = ok(f.funded_org(10).await, "b");
    let new = new_job(&f, a, 1, 1, "mine");
    ok(f.store.enqueue(&new).await, "enqueue");
    assert_eq!(ok(f.store.job(b, new.id).await, "job"), None);
    let page = ok(
        f.store.list_jobs(b, None, PageLimit::default()).await,
        "list",
    );
    assert!(page.items.is_empty());
    let page = ok(
        f.store.list_jobs(a, None, PageLimit::default()).await,
        "list",
    );
    assert_eq!(
        page.items.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![new.id]
    );
    let r = f.store.cancel_job(b, new.id, f.entry_id(), f.now).await;
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    // The same idempotency key in another organization is another job.
    let other = new_job(&f, b, 1, 1, "mine");
    let e = ok(f.store.enqueue(&other).await, "enqueue b");
    assert!(!e.replayed);
}

/// Organizations take turns at claims: with three jobs of one organization queued before one
/// of another, the second claim takes the other organization's job (fewest jobs running under
/// a live lease first), then the first organization's remaining jobs oldest first; once every
/// lease has lapsed no job counts as running and the oldest comes first again.
pub async fn jobs_claims_take_turns_between_organizations(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let a = ok(f.funded_org(10).await, "org a");
    let b = ok(f.funded_org(10).await, "org b");
    let mut a_jobs = Vec::new();
    for i in 0..3 {
        let new = new_job(&f, a, 1, 1, &format!("turn-a-{i}"));
        a_jobs.push(new.id);
        ok(f.store.enqueue(&new).await, "enqueue a");
    }
    a_jobs.sort();
    // Queued after every job of `a`.
    let mut later = new_job(&f, b, 1, 1, "turn-b");
    later.id = JobId::generate(f.now.plus(Duration::from_secs(1)), f.rng.as_ref());
    ok(f.store.enqueue(&later).await, "enqueue b");
    let w = worker("turns");
    let lease = Duration::from_secs(30);
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let job = ok(
            f.store.claim_job(&w, f.now, f.now.plus(lease)).await,
            "claim",
        );
        claimed.push(job.expect("a claimable job").id);
    }
    assert_eq!(
        claimed,
        vec![a_jobs[0], later.id, a_jobs[1], a_jobs[2]],
        "a's oldest, then b's (a has one running), then a's others oldest first"
    );
    let lapsed = f.now.plus(lease).plus(Duration::from_millis(1));
    let again = ok(
        f.store.claim_job(&w, lapsed, lapsed.plus(lease)).await,
        "reclaim",
    );
    assert_eq!(
        again.map(|j| j.id),
        Some(a_jobs[0]),
        "lapsed leases count as nothing running: the oldest job first"
    );
}

/// Eight workers claim twenty jobs at once: every job goes to exactly one worker.
pub async fn concurrent_claims_never_share_a_job(store: Arc<dyn Store>) {
    let f = Arc::new(Fixture::new(store));
    let org = ok(f.funded_org(100).await, "org");
    let mut ids = Vec::new();
    for i in 0..20 {
        let new = new_job(&f, org, 1, 1, &format!("claim-{i}"));
        ids.push(new.id);
        ok(f.store.enqueue(&new).await, "enqueue");
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            let me = worker(&format!("racer-{w}"));
            let mut got = Vec::new();
            for _ in 0..200 {
                let lease = f.now.plus(Duration::from_secs(600));
                match f.store.claim_job(&me, f.now, lease).await {
                    Ok(Some(j)) => got.push(j.id),
                    Ok(None) => break,
                    Err(e) => panic!("claim failed: {e}"),
                }
            }
            got
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.expect("task"));
    }
    let mine: Vec<_> = claimed
        .iter()
        .filter(|id| ids.contains(id))
        .copied()
        .collect();
    let mut unique = mine.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), mine.len(), "a job was claimed twice");
    assert_eq!(unique.len(), 20, "every job must be claimed");
}
