//! Jobs submitted by a member of the organization (`Caller::Member`, the console's playground)
//! rather than by an API key: the cost is reserved once whatever the replays, a person outside
//! the organization is refused before anything is reserved, canceling refunds what did not
//! finish, and another organization's job does not exist for them. Over the in-memory store,
//! with a manual clock and seeded randomness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::clock::{ManualClock, Timestamp};
use creapic_core::id::{OrgId, UserId};
use creapic_core::job::{ItemOutcome, ItemStatus, JobKind, JobStatus, WorkerId};
use creapic_core::key::KeyMode;
use creapic_core::ledger::{Credits, EntryKind};
use creapic_core::org::Role;
use creapic_core::page::PageLimit;
use creapic_core::random::SeededRandom;
use creapic_core::store::memory::MemoryStore;
use creapic_core::{Caller, CoreConfig, Creapic, Error, JobSpec};

struct World {
    core: Creapic<MemoryStore>,
    ctx: RequestContext,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_800_000_000_000)));
    let core = Creapic::builder(Arc::new(MemoryStore::new()))
        .clock(clock)
        .random(Arc::new(SeededRandom::new(7)))
        .config(CoreConfig::default())
        .build();
    World {
        core,
        ctx: RequestContext::default(),
    }
}

/// An organization with `credits` granted and a plain member (not an owner or admin: any role
/// may use the playground).
async fn org_with_member(w: &World, name: &str, credits: u64) -> (OrgId, UserId) {
    let owner = w
        .core
        .ensure_user(&format!("owner@{name}.example"))
        .await
        .unwrap();
    let org = w
        .core
        .create_org(name, owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let member = w
        .core
        .add_member(
            Actor::Operator,
            org.id,
            &format!("member@{name}.example"),
            Role::Member,
            &w.ctx,
        )
        .await
        .unwrap();
    if credits > 0 {
        w.core
            .grant(Actor::Operator, org.id, credits, "seed", &w.ctx)
            .await
            .unwrap();
    }
    (org.id, member.user.id)
}

fn bulk(prompts: &[&str]) -> JobSpec {
    JobSpec {
        kind: JobKind::Bulk,
        inputs: prompts.iter().map(|p| (*p).to_owned()).collect(),
        unit_cost: Credits::new(1).unwrap(),
    }
}

async fn holds(w: &World, org: OrgId) -> usize {
    let page = w
        .core
        .entries(org, None, PageLimit::new(1000).unwrap())
        .await
        .unwrap();
    page.items
        .iter()
        .filter(|e| e.kind == EntryKind::Hold)
        .count()
}

#[tokio::test]
async fn a_member_submits_and_a_replay_reserves_nothing_more() {
    let w = world();
    let (org, user) = org_with_member(&w, "acme", 10).await;
    let me = Caller::member(user, org);
    let spec = bulk(&["a lighthouse", "a harbour", "a gull"]);

    let first = w
        .core
        .submit_job(me, spec.clone(), "console:nonce-1")
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(first.job.key, None, "a member's job names no key");
    assert_eq!(first.job.mode, KeyMode::Live, "a member's work runs live");
    assert_eq!(first.job.org, org);
    assert_eq!(first.balance.get(), 7);

    // The same form sent again (a reload, a double click): the same job, nothing reserved.
    for _ in 0..3 {
        let again = w
            .core
            .submit_job(me, spec.clone(), "console:nonce-1")
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.job.id, first.job.id);
    }
    assert_eq!(w.core.balance(org).await.unwrap().get(), 7);
    assert_eq!(
        holds(&w, org).await,
        1,
        "one hold, however often it is sent"
    );

    // Another nonce is another job.
    let second = w
        .core
        .submit_job(me, bulk(&["a boat"]), "console:nonce-2")
        .await
        .unwrap();
    assert_ne!(second.job.id, first.job.id);
    assert_eq!(w.core.balance(org).await.unwrap().get(), 6);

    let read = w.core.job(me, first.job.id).await.unwrap();
    assert_eq!(read.items.len(), 3);
    let listed = w
        .core
        .list_jobs(me, None, PageLimit::new(10).unwrap())
        .await
        .unwrap();
    let mut ids: Vec<_> = listed.items.iter().map(|j| j.id).collect();
    ids.sort();
    let mut expected = vec![first.job.id, second.job.id];
    expected.sort();
    assert_eq!(ids, expected, "both jobs, once each");

    // Too little left: refused whole, as for a key.
    let e = w
        .core
        .submit_job(me, bulk(&["x"; 7]), "console:nonce-3")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "insufficient_credits");
    assert_eq!(w.core.balance(org).await.unwrap().get(), 6);
}

#[tokio::test]
async fn a_person_outside_the_organization_is_refused_before_anything_is_reserved() {
    let w = world();
    let (org, _) = org_with_member(&w, "acme", 10).await;
    let stranger = w.core.ensure_user("stranger@example.com").await.unwrap();
    let them = Caller::member(stranger.id, org);

    let e = w
        .core
        .submit_job(them, bulk(&["a lighthouse"]), "console:n")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                resource: "organization"
            }
        ),
        "{e:?}"
    );
    assert_eq!(w.core.balance(org).await.unwrap().get(), 10);
    assert_eq!(holds(&w, org).await, 0);
    let listed = w
        .core
        .list_jobs(them, None, PageLimit::new(10).unwrap())
        .await;
    assert!(matches!(
        listed,
        Err(Error::NotFound {
            resource: "organization"
        })
    ));
    // An organization that does not exist reads the same.
    let nowhere = Caller::member(stranger.id, OrgId::parse(&uuid_like()).unwrap());
    let e = w
        .core
        .list_jobs(nowhere, None, PageLimit::new(10).unwrap())
        .await;
    assert!(matches!(
        e,
        Err(Error::NotFound {
            resource: "organization"
        })
    ));
}

/// A well-formed organization id nobody created.
fn uuid_like() -> String {
    "0190f0f0-0000-7000-8000-000000000001".to_owned()
}

#[tokio::test]
async fn canceling_refunds_the_items_that_did_not_finish() {
    let w = world();
    let (org, user) = org_with_member(&w, "acme", 10).await;
    let me = Caller::member(user, org);
    let queued = w
        .core
        .submit_job(me, bulk(&["a", "b", "c", "d"]), "console:cancel")
        .await
        .unwrap();
    assert_eq!(w.core.balance(org).await.unwrap().get(), 6);

    let worker = WorkerId::new("worker-1").unwrap();
    let claimed = w
        .core
        .claim_job(&worker, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, queued.job.id);
    let ok = ItemOutcome::Succeeded {
        output: "img-0.png".into(),
    };
    w.core
        .finish_item(claimed.id, &worker, 0, ok)
        .await
        .unwrap();

    let canceled = w.core.cancel_job(me, queued.job.id).await.unwrap();
    assert_eq!(canceled.status, JobStatus::Canceled);
    assert_eq!(canceled.succeeded(), 1);
    assert_eq!(
        canceled
            .items
            .iter()
            .filter(|i| i.status == ItemStatus::Canceled)
            .count(),
        3
    );
    assert_eq!(
        w.core.balance(org).await.unwrap().get(),
        9,
        "only the finished image is paid"
    );
    assert_eq!(w.core.held(org).await.unwrap(), Credits::ZERO);
    // Canceling again answers the canceled job and refunds nothing more.
    w.core.cancel_job(me, queued.job.id).await.unwrap();
    assert_eq!(w.core.balance(org).await.unwrap().get(), 9);
}

#[tokio::test]
async fn another_organizations_job_is_not_found() {
    let w = world();
    let (a, alice) = org_with_member(&w, "a", 10).await;
    let (b, bob) = org_with_member(&w, "b", 10).await;
    let bobs = w
        .core
        .submit_job(Caller::member(bob, b), bulk(&["b's"]), "console:b")
        .await
        .unwrap();

    // Alice, acting for her own organization, does not find B's job by its id…
    let as_a = Caller::member(alice, a);
    let e = w.core.job(as_a, bobs.job.id).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { resource: "job" }), "{e:?}");
    let e = w.core.cancel_job(as_a, bobs.job.id).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { resource: "job" }), "{e:?}");
    // …and may not act for B at all.
    let as_b = Caller::member(alice, b);
    let e = w.core.job(as_b, bobs.job.id).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                resource: "organization"
            }
        ),
        "{e:?}"
    );
    let e = w.core.cancel_job(as_b, bobs.job.id).await.unwrap_err();
    assert!(matches!(
        e,
        Error::NotFound {
            resource: "organization"
        }
    ));
    // B's job is untouched.
    let still = w
        .core
        .job(Caller::member(bob, b), bobs.job.id)
        .await
        .unwrap();
    assert_eq!(still.status, JobStatus::Queued);
    assert_eq!(w.core.balance(b).await.unwrap().get(), 9);
}

#[tokio::test]
async fn a_removed_member_loses_the_organizations_jobs_at_once() {
    let w = world();
    let (org, user) = org_with_member(&w, "acme", 10).await;
    let me = Caller::member(user, org);
    let queued = w
        .core
        .submit_job(me, bulk(&["a"]), "console:r")
        .await
        .unwrap();
    w.core
        .remove_member(Actor::Operator, org, user, &w.ctx)
        .await
        .unwrap();
    let e = w.core.job(me, queued.job.id).await.unwrap_err();
    assert!(matches!(
        e,
        Error::NotFound {
            resource: "organization"
        }
    ));
}
