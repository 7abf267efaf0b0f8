//! The conformance suite: one public async function per behaviour every store must show.
//!
//! Each function takes a fresh store and panics with a message naming the broken promise. The
//! [`conformance_suite!`](crate::conformance_suite) macro turns the list below into tests; a new
//! behaviour is added in both places. Concurrency tests use many tasks on a multi-threaded
//! runtime against one organization, because that is where atomicity bugs show.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditAction, AuditQuery};
use crate::clock::Timestamp;
use crate::error::{Error, StoreErrorKind};
use crate::generation::{AspectRatio, GenerationOutcome, GenerationRecord, Quality};
use crate::id::{AttemptId, EntryId, GenerationId, HoldId, JobId, OrgId};
use crate::idempotency::{Abandon, IdempotencyBegin, RequestFingerprint, StoredResponse};
use crate::job::{
    FinishItem, ItemError, ItemOutcome, ItemStatus, JobKind, JobStatus, NewJob, WorkerId,
};
use crate::key::{KeyMode, generate_key};
use crate::ledger::{Credits, EntryKind, IdempotencyKey, LedgerOp, LedgerRequest};
use crate::org::{Email, Removal, Role, RoleChange, User};
use crate::page::PageLimit;
use crate::store::{KeyQuery, KeyUsage, Store};
use crate::testing::Fixture;

/// Expands to one `#[tokio::test]` per conformance behaviour. `$factory` is a path to an
/// `async fn() -> Arc<dyn Store>` returning a fresh, empty store (or one whose other tenants the
/// tests never see). The caller needs `tokio` (with `macros` and `rt-multi-thread`) as a
/// dev-dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@each $factory;
            users_upsert_by_email,
            orgs_have_their_creator_as_owner,
            roles_can_be_changed_and_audited,
            members_and_organizations_are_listed_paged_and_removed,
            membership_writes_recheck_roles_in_their_transaction,
            the_last_owner_is_never_demoted_or_removed,
            concurrent_demotions_always_leave_an_owner,
            keys_insert_find_list_and_hide_nothing_else,
            key_digests_and_ids_are_unique,
            key_delete_is_soft_idempotent_and_audited,
            keys_of_one_org_are_invisible_to_another,
            key_usage_is_recorded_in_one_batch_and_never_regresses,
            ledger_grant_and_debit_keep_balance_equal_to_entries,
            ledger_debit_is_all_or_nothing,
            ledger_replays_return_the_first_result,
            ledger_reused_key_with_other_parameters_conflicts,
            ledger_idempotency_is_scoped_per_org,
            ledger_holds_capture_and_release,
            ledger_holds_belong_to_their_org,
            ledger_stale_holds_are_open_unpaid_and_old,
            ledger_grant_respects_the_balance_limit,
            ledger_entries_page_in_order,
            ledger_held_counts_open_holds_only,
            ledger_usage_sums_each_utc_day,
            concurrent_debits_and_holds_never_overdraw,
            concurrent_replays_charge_once,
            jobs_enqueue_reserves_in_one_step,
            jobs_enqueue_replays_and_conflicts,
            jobs_enqueue_is_refused_without_credits,
            jobs_free_jobs_need_no_hold,
            jobs_claim_lease_and_reclaim,
            jobs_handed_back_are_claimable_at_once,
            jobs_items_are_charged_exactly_once,
            jobs_complete_releases_the_rest,
            jobs_cancel_refunds_unfinished_items,
            jobs_are_invisible_to_other_orgs,
            jobs_list_counts_items_by_state,
            concurrent_claims_never_share_a_job,
            audit_queries_filter_page_and_purge,
            audit_chain_links_every_append_and_survives_purge,
            idempotency_records_lock_replay_and_expire,
            key_and_org_limits_hold_under_concurrency,
            generations_round_trip,
            generations_insert_is_idempotent,
            generations_are_invisible_to_other_orgs,
            generation_ids_sort_in_creation_order,
        );
    };
    (@each $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = $factory().await;
                $crate::testing::conformance::$name(store).await;
            }
        )*
    };
}

fn ok<T>(r: crate::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e} ({})", e.code()),
    }
}

fn amount(n: u64) -> Credits {
    ok(Credits::amount(n), "amount")
}

fn idem(k: &str) -> IdempotencyKey {
    ok(IdempotencyKey::new(k), "idempotency key")
}

fn worker(name: &str) -> WorkerId {
    ok(WorkerId::new(name), "worker id")
}

fn new_job(f: &Fixture, org: OrgId, prompts: usize, unit: u64, key: &str) -> NewJob {
    NewJob {
        id: JobId::generate(f.now, f.rng.as_ref()),
        org,
        key: None,
        kind: JobKind::Bulk,
        mode: KeyMode::Live,
        inputs: (0..prompts).map(|i| format!("prompt {i}")).collect(),
        unit_cost: ok(Credits::new(unit), "unit"),
        idempotency_key: idem(key),
        hold_entry: f.entry_id(),
        at: f.now,
    }
}

fn finish(f: &Fixture, job: JobId, w: &WorkerId, index: u32, success: bool) -> FinishItem {
    FinishItem {
        job,
        worker: w.clone(),
        index,
        outcome: if success {
            ItemOutcome::Succeeded {
                output: format!("media/{job}/{index}.png"),
            }
        } else {
            ItemOutcome::Failed(ItemError::new("provider_error", "the provider failed"))
        },
        entry_id: f.entry_id(),
        at: f.now,
    }
}

/// Upserting a user twice by e-mail returns the first user.
pub async fn users_upsert_by_email(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let first = ok(f.user().await, "user");
    let again = User {
        id: crate::id::UserId::generate(f.now, f.rng.as_ref()),
        email: first.email.clone(),
        created_at: f.now,
    };
    let got = ok(f.store.upsert_user(&again).await, "upsert");
    assert_eq!(
        got.id, first.id,
        "same e-mail must return the existing user"
    );
    assert_eq!(
        ok(f.store.user(first.id).await, "user"),
        Some(first.clone())
    );
    let by_mail = ok(f.store.user_by_email(&first.email).await, "by email");
    assert_eq!(by_mail.map(|u| u.id), Some(first.id));
    let nobody = ok(Email::new("nobody-here@example.com"), "email");
    assert_eq!(ok(f.store.user_by_email(&nobody).await, "by email"), None);
}

/// Creating an organization makes its creator the owner and audits it.
pub async fn orgs_have_their_creator_as_owner(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    assert_eq!(ok(f.store.org(org.id).await, "org"), Some(org.clone()));
    assert_eq!(
        ok(f.store.role(org.id, owner.id).await, "role"),
        Some(Role::Owner)
    );
    assert_eq!(
        ok(f.store.first_owner(org.id).await, "owner"),
        Some(owner.id)
    );
    let stranger = ok(f.user().await, "user");
    assert_eq!(ok(f.store.role(org.id, stranger.id).await, "role"), None);
    let events = ok(f.all_audit(org.id).await, "audit");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == AuditAction::OrgCreated)
            .count(),
        1
    );
    let dup = f
        .store
        .create_org(
            &org,
            owner.id,
            u64::MAX,
            &f.event(org.id, AuditAction::OrgCreated),
        )
        .await;
    assert!(
        matches!(
            dup,
            Err(Error::Store {
                kind: StoreErrorKind::Conflict,
                ..
            })
        ),
        "a duplicate organization id must be a conflict, got {dup:?}"
    );
    let unknown = OrgId::generate(f.now, f.rng.as_ref());
    assert_eq!(ok(f.store.org(unknown).await, "org"), None);
}

/// Roles are set, changed and audited; the first owner stays the first owner.
pub async fn roles_can_be_changed_and_audited(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    let admin = ok(f.user().await, "user");
    let set = |role, from| RoleChange {
        org: org.id,
        user: admin.id,
        role,
        from,
        by: Some((owner.id, Role::Owner)),
        at: f.now,
    };
    let audit = f.event(org.id, AuditAction::MemberChanged);
    let added = ok(
        f.store.set_role(&set(Role::Member, None), &audit).await,
        "set member",
    );
    assert_eq!(added.user, admin);
    assert_eq!(added.role, Role::Member);
    assert_eq!(
        added.joined_at,
        Some(f.now),
        "an addition records when they joined"
    );
    assert_eq!(
        ok(f.store.role(org.id, admin.id).await, "role"),
        Some(Role::Member)
    );
    let audit = f.event(org.id, AuditAction::MemberChanged);
    let promoted = ok(
        f.store
            .set_role(&set(Role::Owner, Some(Role::Member)), &audit)
            .await,
        "set owner",
    );
    assert_eq!(
        promoted.joined_at,
        Some(f.now),
        "a change keeps the join time"
    );
    assert_eq!(
        ok(f.store.role(org.id, admin.id).await, "role"),
        Some(Role::Owner)
    );
    assert_eq!(
        ok(f.store.first_owner(org.id).await, "first"),
        Some(owner.id)
    );
    let events = ok(f.all_audit(org.id).await, "audit");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == AuditAction::MemberChanged)
            .count(),
        2
    );
}

/// Members and a user's organizations are listed by id and paged without gaps or repeats;
/// a removal returns the member, is audited in its transaction, and a second one finds nobody.
pub async fn members_and_organizations_are_listed_paged_and_removed(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    let mut users = vec![owner.id];
    for _ in 0..4 {
        let u = ok(f.user().await, "user");
        let change = RoleChange {
            org: org.id,
            user: u.id,
            role: Role::Member,
            from: None,
            by: None,
            at: f.now,
        };
        let audit = f.event(org.id, AuditAction::MemberChanged);
        ok(f.store.set_role(&change, &audit).await, "add");
        users.push(u.id);
    }
    users.sort();
    let two = ok(PageLimit::new(2), "limit");
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = ok(f.store.members(org.id, after, two).await, "members");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|m| m.user.id));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, users, "every member once, by user id");
    let all = ok(
        f.store.members(org.id, None, PageLimit::max()).await,
        "members",
    );
    let first = all
        .items
        .iter()
        .find(|m| m.user.id == owner.id)
        .expect("the owner is listed");
    assert_eq!(first.role, Role::Owner);
    assert_eq!(first.user.email, owner.email);
    assert_eq!(first.joined_at, Some(org.created_at));
    let other = OrgId::generate(f.now, f.rng.as_ref());
    assert!(
        ok(f.store.members(other, None, two).await, "members")
            .items
            .is_empty(),
        "an unknown organization has no members"
    );

    // The owner's organizations: this one and three more, paged by organization id.
    let mut orgs = vec![(org.id, Role::Owner)];
    for role in [Role::Admin, Role::Member, Role::Owner] {
        let (o, _) = ok(f.org().await, "org");
        let change = RoleChange {
            org: o.id,
            user: owner.id,
            role,
            from: None,
            by: None,
            at: f.now,
        };
        ok(
            f.store
                .set_role(&change, &f.event(o.id, AuditAction::MemberChanged))
                .await,
            "join",
        );
        orgs.push((o.id, role));
    }
    orgs.sort();
    let mut listed = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = ok(f.store.orgs_of_user(owner.id, after, two).await, "orgs");
        listed.extend(page.items.iter().map(|(o, r)| (o.id, *r)));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(
        listed, orgs,
        "every organization once, with the user's role"
    );

    let gone = users
        .iter()
        .copied()
        .find(|u| *u != owner.id)
        .expect("a member");
    let removal = Removal {
        org: org.id,
        user: gone,
        from: Role::Member,
        by: Some((owner.id, Role::Owner)),
    };
    let removed = ok(
        f.store
            .remove_member(&removal, &f.event(org.id, AuditAction::MemberRemoved))
            .await,
        "remove",
    );
    assert_eq!(
        removed.map(|m| (m.user.id, m.role)),
        Some((gone, Role::Member))
    );
    assert_eq!(ok(f.store.role(org.id, gone).await, "role"), None);
    assert!(
        ok(f.store.user(gone).await, "user").is_some(),
        "the user stays"
    );
    let again = ok(
        f.store
            .remove_member(&removal, &f.event(org.id, AuditAction::MemberRemoved))
            .await,
        "remove again",
    );
    assert_eq!(again, None, "nobody to remove the second time");
    let events = ok(f.all_audit(org.id).await, "audit");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == AuditAction::MemberRemoved)
            .count(),
        1,
        "one removal, one event; a removal of nobody appends nothing"
    );
}

/// A membership write carries the roles the service decided on, and the store re-reads them in
/// its transaction: an addition of a member, a change of someone no longer a member, a target
/// or an actor whose role moved meanwhile are refused, writing nothing.
pub async fn membership_writes_recheck_roles_in_their_transaction(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    let admin = ok(f.user().await, "user");
    let member = ok(f.user().await, "user");
    for (u, role) in [(admin.id, Role::Admin), (member.id, Role::Member)] {
        let change = RoleChange {
            org: org.id,
            user: u,
            role,
            from: None,
            by: Some((owner.id, Role::Owner)),
            at: f.now,
        };
        ok(
            f.store
                .set_role(&change, &f.event(org.id, AuditAction::MemberChanged))
                .await,
            "add",
        );
    }
    let before = ok(f.all_audit(org.id).await, "audit").len();
    let change = |user, role, from, by| RoleChange {
        org: org.id,
        user,
        role,
        from,
        by,
        at: f.now,
    };
    let refused = [
        (
            change(member.id, Role::Member, None, None),
            "already_member",
        ),
        (
            change(f.new_user_id(), Role::Member, Some(Role::Member), None),
            "not_found",
        ),
        (
            change(member.id, Role::Admin, Some(Role::Admin), None),
            "invalid_state",
        ),
        (
            // The admin was authorized as an owner (stale): refused.
            change(
                member.id,
                Role::Admin,
                Some(Role::Member),
                Some((admin.id, Role::Owner)),
            ),
            "invalid_state",
        ),
    ];
    for (c, code) in refused {
        let r = f
            .store
            .set_role(&c, &f.event(org.id, AuditAction::MemberChanged))
            .await;
        assert_eq!(
            r.as_ref().map_err(|e| e.code()).err(),
            Some(code),
            "{c:?}: {r:?}"
        );
    }
    let stale = Removal {
        org: org.id,
        user: member.id,
        from: Role::Admin,
        by: None,
    };
    let r = f
        .store
        .remove_member(&stale, &f.event(org.id, AuditAction::MemberRemoved))
        .await;
    assert_eq!(r.map_err(|e| e.code()).err(), Some("invalid_state"));
    let stranger = Removal {
        org: org.id,
        user: member.id,
        from: Role::Member,
        by: Some((f.new_user_id(), Role::Owner)),
    };
    let r = f
        .store
        .remove_member(&stranger, &f.event(org.id, AuditAction::MemberRemoved))
        .await;
    assert_eq!(r.map_err(|e| e.code()).err(), Some("not_found"));
    assert_eq!(
        ok(f.store.role(org.id, member.id).await, "role"),
        Some(Role::Member),
        "nothing was written"
    );
    assert_eq!(
        ok(f.all_audit(org.id).await, "audit").len(),
        before,
        "a refused change appends nothing"
    );
    let unknown = OrgId::generate(f.now, f.rng.as_ref());
    let c = RoleChange {
        org: unknown,
        ..change(member.id, Role::Member, None, None)
    };
    let r = f
        .store
        .set_role(&c, &f.event(unknown, AuditAction::MemberChanged))
        .await;
    assert_eq!(r.map_err(|e| e.code()).err(), Some("not_found"));
}

/// An organization always has an owner: its only owner can be neither demoted nor removed
/// (`LastOwner`, nothing written), by anyone; with a second owner either may go.
pub async fn the_last_owner_is_never_demoted_or_removed(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    let before = ok(f.all_audit(org.id).await, "audit").len();
    for role in [Role::Admin, Role::Member] {
        let c = RoleChange {
            org: org.id,
            user: owner.id,
            role,
            from: Some(Role::Owner),
            by: None,
            at: f.now,
        };
        let r = f
            .store
            .set_role(&c, &f.event(org.id, AuditAction::MemberChanged))
            .await;
        assert_eq!(r.map_err(|e| e.code()).err(), Some("last_owner"), "{role}");
    }
    let removal = Removal {
        org: org.id,
        user: owner.id,
        from: Role::Owner,
        by: Some((owner.id, Role::Owner)),
    };
    let r = f
        .store
        .remove_member(&removal, &f.event(org.id, AuditAction::MemberRemoved))
        .await;
    assert_eq!(r.map_err(|e| e.code()).err(), Some("last_owner"));
    assert_eq!(
        ok(f.store.role(org.id, owner.id).await, "role"),
        Some(Role::Owner)
    );
    assert_eq!(ok(f.all_audit(org.id).await, "audit").len(), before);
    // A second owner: the first may step down to member, and then the second is the last.
    let second = ok(f.user().await, "user");
    let c = RoleChange {
        org: org.id,
        user: second.id,
        role: Role::Owner,
        from: None,
        by: None,
        at: f.now,
    };
    ok(
        f.store
            .set_role(&c, &f.event(org.id, AuditAction::MemberChanged))
            .await,
        "second owner",
    );
    let step_down = RoleChange {
        org: org.id,
        user: owner.id,
        role: Role::Member,
        from: Some(Role::Owner),
        by: Some((owner.id, Role::Owner)),
        at: f.now,
    };
    ok(
        f.store
            .set_role(&step_down, &f.event(org.id, AuditAction::MemberChanged))
            .await,
        "step down",
    );
    let removal = Removal {
        org: org.id,
        user: second.id,
        from: Role::Owner,
        by: None,
    };
    let r = f
        .store
        .remove_member(&removal, &f.event(org.id, AuditAction::MemberRemoved))
        .await;
    assert_eq!(r.map_err(|e| e.code()).err(), Some("last_owner"));
    assert_eq!(
        ok(f.store.first_owner(org.id).await, "first owner"),
        Some(second.id)
    );
}

/// Two owners demoting each other, the operator demoting both, and both removing themselves, at
/// once, round after round: the owner count is read under the organization's lock in the writing
/// transaction, so each race leaves at least one owner (and exactly one where both writes
/// would otherwise succeed).
pub async fn concurrent_demotions_always_leave_an_owner(store: Arc<dyn Store>) {
    use crate::Creapic;
    use crate::audit::{Actor, RequestContext};
    let core = Arc::new(Creapic::new(Arc::clone(&store)));
    let ctx = RequestContext::default();
    for round in 0..8 {
        let a = ok(
            core.ensure_user(&format!("race-a-{round}-{}@example.com", tag(&core)))
                .await,
            "user",
        );
        let b = ok(
            core.ensure_user(&format!("race-b-{round}-{}@example.com", tag(&core)))
                .await,
            "user",
        );
        let org = ok(
            core.create_org("Race", a.id, Actor::Operator, &ctx).await,
            "org",
        );
        ok(
            core.set_role(Actor::Operator, org.id, b.id, Role::Owner, &ctx)
                .await,
            "second owner",
        );
        // (actor, target) pairs racing: each owner demotes the other; the operator both;
        // each owner removes themselves.
        let kind = round % 3;
        let plans: [(Actor, crate::id::UserId); 2] = match kind {
            0 => [(Actor::User(a.id), b.id), (Actor::User(b.id), a.id)],
            1 => [(Actor::Operator, a.id), (Actor::Operator, b.id)],
            _ => [(Actor::User(a.id), a.id), (Actor::User(b.id), b.id)],
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (by, target) in plans {
            let core = Arc::clone(&core);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let ctx = RequestContext::default();
                if kind == 2 {
                    core.remove_member(by, org.id, target, &ctx)
                        .await
                        .map(|_| ())
                } else {
                    core.change_role(by, org.id, target, Role::Member, &ctx)
                        .await
                        .map(|_| ())
                }
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => won += 1,
                // The count under the lock (`last_owner`), or a role that moved under the
                // lock: the loser's authorization (`invalid_state`), or its target's.
                Err(e) => assert!(
                    matches!(e.code(), "last_owner" | "invalid_state" | "forbidden"),
                    "round {round}: {e} ({})",
                    e.code()
                ),
            }
        }
        let owners = ok(
            store.members(org.id, None, PageLimit::max()).await,
            "members",
        )
        .items
        .iter()
        .filter(|m| m.role == Role::Owner)
        .count();
        assert!(
            owners >= 1,
            "round {round}: the organization lost its owners"
        );
        assert_eq!(
            won, 1,
            "round {round}: exactly one of two racing demotions succeeds"
        );
        assert_eq!(owners, 1, "round {round}");
    }
}

/// A distinct tag per call (test e-mails on a shared database must not collide across runs).
fn tag<S: Store + ?Sized>(core: &crate::Creapic<S>) -> String {
    let mut bytes = [0u8; 8];
    core.random().fill(&mut bytes);
    u64::from_le_bytes(bytes).to_string()
}

/// Keys are found by digest and id, listed per organization oldest first, and paged.
pub async fn keys_insert_find_list_and_hide_nothing_else(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(ok(f.key(org.id, owner.id).await, "key"));
    }
    let first = &ids[0];
    let found = ok(f.store.key_by_digest(&first.digest).await, "by digest");
    assert_eq!(
        found.as_ref(),
        Some(&first.key),
        "the record must round-trip exactly"
    );
    assert_eq!(
        ok(f.store.key(org.id, first.key.id).await, "key"),
        Some(first.key.clone())
    );
    let unknown = generate_key(KeyMode::Live, f.rng.as_ref()).digest();
    assert_eq!(ok(f.store.key_by_digest(&unknown).await, "unknown"), None);
    let by_id = ok(f.store.key_by_id(first.key.id).await, "by id");
    assert_eq!(
        by_id.as_ref(),
        Some(&first.key),
        "the operator finds a key by id alone"
    );
    let missing = crate::id::KeyId::generate(f.now, f.rng.as_ref());
    assert_eq!(ok(f.store.key_by_id(missing).await, "missing"), None);
    let query = KeyQuery {
        include_deleted: false,
        after: None,
        limit: ok(PageLimit::new(2), "limit"),
    };
    let mut seen = Vec::new();
    let mut q = query;
    loop {
        let page = ok(f.store.list_keys(org.id, &q).await, "list");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|k| k.id));
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    let mut want: Vec<_> = ids.iter().map(|k| k.key.id).collect();
    want.sort();
    assert_eq!(
        seen, want,
        "listing must return every key once, oldest first"
    );
    assert_eq!(ok(f.store.count_active_keys(org.id).await, "count"), 5);
}

/// A second key with the same digest or id is a conflict, and nothing is written.
pub async fn key_digests_and_ids_are_unique(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    let key = ok(f.key(org.id, owner.id).await, "key");
    let mut same_digest = key.clone();
    same_digest.key.id = crate::id::KeyId::generate(f.now, f.rng.as_ref());
    let audit = f.event(org.id, AuditAction::KeyCreated);
    let r = f.store.insert_key(&same_digest, &audit).await;
    assert!(
        matches!(
            r,
            Err(Error::Store {
                kind: StoreErrorKind::Conflict,
                ..
            })
        ),
        "{r:?}"
    );
    let mut same_id = key.clone();
    same_id.digest = generate_key(KeyMode::Live, f.rng.as_ref()).digest();
    let r = f.store.insert_key(&same_id, &audit).await;
    assert!(
        matches!(
            r,
            Err(Error::Store {
                kind: StoreErrorKind::Conflict,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(ok(f.store.count_active_keys(org.id).await, "count"), 1);
    let created = ok(f.all_audit(org.id).await, "audit")
        .into_iter()
        .filter(|e| e.action == AuditAction::KeyCreated)
        .count();
    assert_eq!(created, 1, "a refused insert must not leave an audit event");
}

/// Delete is soft, immediate, idempotent, audited once, and keeps the record.
pub async fn key_delete_is_soft_idempotent_and_audited(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    let key = ok(f.key(org.id, owner.id).await, "key");
    let at = f.now.plus(Duration::from_secs(5));
    let audit = f.event(org.id, AuditAction::KeyDeleted);
    let deleted = ok(
        f.store.delete_key(org.id, key.key.id, at, &audit).await,
        "delete",
    );
    assert_eq!(deleted.and_then(|k| k.deleted_at), Some(at));
    let later = at.plus(Duration::from_secs(5));
    let audit2 = f.event(org.id, AuditAction::KeyDeleted);
    let again = ok(
        f.store.delete_key(org.id, key.key.id, later, &audit2).await,
        "again",
    );
    assert_eq!(
        again.and_then(|k| k.deleted_at),
        Some(at),
        "a second delete must not move deleted_at"
    );
    let by_digest = ok(f.store.key_by_digest(&key.digest).await, "digest");
    assert_eq!(
        by_digest.and_then(|k| k.deleted_at),
        Some(at),
        "a deleted key stays in the store, marked deleted"
    );
    let active = KeyQuery::default();
    assert!(
        ok(f.store.list_keys(org.id, &active).await, "list")
            .items
            .is_empty()
    );
    let all = KeyQuery {
        include_deleted: true,
        ..KeyQuery::default()
    };
    assert_eq!(
        ok(f.store.list_keys(org.id, &all).await, "list")
            .items
            .len(),
        1
    );
    assert_eq!(ok(f.store.count_active_keys(org.id).await, "count"), 0);
    let deletions = ok(f.all_audit(org.id).await, "audit")
        .into_iter()
        .filter(|e| e.action == AuditAction::KeyDeleted)
        .count();
    assert_eq!(deletions, 1, "an idempotent repeat must not audit twice");
    let missing = crate::id::KeyId::generate(f.now, f.rng.as_ref());
    let audit3 = f.event(org.id, AuditAction::KeyDeleted);
    assert_eq!(
        ok(
            f.store.delete_key(org.id, missing, at, &audit3).await,
            "missing"
        ),
        None
    );
}

/// Another organization can neither read, list nor delete a key.
pub async fn keys_of_one_org_are_invisible_to_another(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (a, owner) = ok(f.org().await, "org a");
    let (b, _) = ok(f.org().await, "org b");
    let key = ok(f.key(a.id, owner.id).await, "key");
    assert_eq!(ok(f.store.key(b.id, key.key.id).await, "key"), None);
    assert!(
        ok(f.store.list_keys(b.id, &KeyQuery::default()).await, "list")
            .items
            .is_empty()
    );
    let audit = f.event(b.id, AuditAction::KeyDeleted);
    let r = ok(
        f.store.delete_key(b.id, key.key.id, f.now, &audit).await,
        "delete",
    );
    assert_eq!(r, None, "org B must not delete org A's key");
    let still = ok(f.store.key(a.id, key.key.id).await, "key");
    assert_eq!(still.and_then(|k| k.deleted_at), None);
    assert!(
        ok(f.all_audit(b.id).await, "audit")
            .iter()
            .all(|e| e.action != AuditAction::KeyDeleted)
    );
}

/// Last-used times are written in one batch, move only forward, and are audited.
pub async fn key_usage_is_recorded_in_one_batch_and_never_regresses(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, owner) = ok(f.org().await, "org");
    let k1 = ok(f.key(org.id, owner.id).await, "key");
    let k2 = ok(f.key(org.id, owner.id).await, "key");
    let t1 = f.now.plus(Duration::from_secs(60));
    let t2 = f.now.plus(Duration::from_secs(120));
    let usage = |k: &crate::key::NewKey, at: Timestamp| KeyUsage {
        key: k.key.id,
        org: org.id,
        prefix: k.key.prefix,
        last_used_at: at,
        audit_id: crate::id::AuditId::generate(at, f.rng.as_ref()),
    };
    ok(
        f.store
            .record_key_usage(&[usage(&k1, t2), usage(&k2, t1)])
            .await,
        "usage",
    );
    ok(
        f.store.record_key_usage(&[usage(&k1, t1)]).await,
        "older usage",
    );
    let got1 = ok(f.store.key(org.id, k1.key.id).await, "k1").and_then(|k| k.last_used_at);
    let got2 = ok(f.store.key(org.id, k2.key.id).await, "k2").and_then(|k| k.last_used_at);
    assert_eq!(
        got1,
        Some(t2),
        "an older usage must not move last_used_at back"
    );
    assert_eq!(got2, Some(t1));
    let used = ok(f.all_audit(org.id).await, "audit")
        .into_iter()
        .filter(|e| e.action == AuditAction::KeyUsed)
        .count();
    assert_eq!(used, 3);
    ok(f.store.record_key_usage(&[]).await, "empty batch");
}

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

/// Audit events are read per organization, in a time range, page by page, and purged.
pub async fn audit_queries_filter_page_and_purge(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, _) = ok(f.org().await, "org");
    let (other, _) = ok(f.org().await, "other");
    let mut events = Vec::new();
    for i in 0..10u64 {
        let mut e = f.event(org.id, AuditAction::CreditsGranted);
        e.at = f.now.plus(Duration::from_secs(i * 3600));
        e.detail = Some(format!("n={i}"));
        e.ip = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        e.user_agent = Some("conformance/1".into());
        events.push(e);
    }
    ok(f.store.append_audit(&events).await, "append");
    let all = ok(f.all_audit(org.id).await, "all");
    let granted: Vec<_> = all
        .iter()
        .filter(|e| e.action == AuditAction::CreditsGranted)
        .collect();
    assert_eq!(granted.len(), 10);
    assert_eq!(
        granted[3], &events[3],
        "events must round-trip exactly (ip, user agent, detail)"
    );
    assert!(
        ok(f.all_audit(other.id).await, "other")
            .iter()
            .all(|e| e.action != AuditAction::CreditsGranted)
    );
    let mut q = AuditQuery::all(org.id);
    q.since = Some(f.now.plus(Duration::from_secs(2 * 3600)));
    q.until = Some(f.now.plus(Duration::from_secs(6 * 3600)));
    q.limit = ok(PageLimit::new(3), "limit");
    let mut got = Vec::new();
    loop {
        let page = ok(f.store.audit(&q).await, "page");
        assert!(page.items.len() <= 3);
        got.extend(page.items.iter().map(|r| r.event.detail.clone()));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    let want: Vec<_> = (2..6).map(|i| Some(format!("n={i}"))).collect();
    assert_eq!(got, want);
    let cutoff = f.now.plus(Duration::from_secs(5 * 3600));
    let purged = ok(f.store.purge_audit_before(cutoff).await, "purge");
    assert!(purged >= 5, "purged {purged}");
    let left = ok(f.all_audit(org.id).await, "left");
    assert!(left.iter().all(|e| e.at >= cutoff));
    assert_eq!(
        left.iter()
            .filter(|e| e.action == AuditAction::CreditsGranted)
            .count(),
        5
    );
}

/// Every append, however it arrives (a key insert, a grant, a usage flush, 64 concurrent
/// appenders), is linked into one gap-free hash chain in commit order; the chain verifies page by
/// page, and still verifies from its new anchor after a retention purge.
pub async fn audit_chain_links_every_append_and_survives_purge(store: Arc<dyn Store>) {
    let f = Fixture::new(Arc::clone(&store));
    // The verifier's clock is past the retention of the fixture's events (the purge below is
    // a legitimate one), so the anchor it leaves is old enough.
    let past_retention = f
        .now
        .plus(crate::audit::DEFAULT_RETENTION + Duration::from_secs(2 * 3600));
    let clock = Arc::new(crate::clock::ManualClock::new(past_retention));
    let core = crate::Creapic::builder(Arc::clone(&store))
        .clock(clock.clone())
        .build();
    let start = ok(store.audit_chain_head().await, "head");
    let (org, owner) = ok(f.org().await, "org");
    let key = ok(f.key(org.id, owner.id).await, "key");
    let grant = crate::ledger::LedgerRequest {
        entry_id: f.entry_id(),
        org: org.id,
        op: LedgerOp::Grant {
            amount: ok(Credits::amount(50), "amount"),
        },
        idempotency_key: idem("chain-grant"),
        at: f.now,
    };
    let granted = f.event(org.id, AuditAction::CreditsGranted);
    ok(store.apply(&grant, Some(&granted)).await, "grant");
    let usage = KeyUsage {
        key: key.key.id,
        org: org.id,
        prefix: key.key.prefix,
        last_used_at: f.now,
        audit_id: crate::id::AuditId::generate(f.now, f.rng.as_ref()),
    };
    ok(store.record_key_usage(&[usage]).await, "usage");
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let store = Arc::clone(&store);
            let events: Vec<_> = (0..=(i % 3))
                .map(|j| {
                    let mut e = f.event(org.id, AuditAction::CreditsGranted);
                    e.at = f.now.plus(Duration::from_secs(3600 + i));
                    e.detail = Some(format!("task={i} n={j}"));
                    e
                })
                .collect();
            tokio::spawn(async move { store.append_audit(&events).await })
        })
        .collect();
    for t in tasks {
        match t.await {
            Ok(r) => ok(r, "concurrent append"),
            Err(e) => panic!("append task: {e}"),
        }
    }
    let head = ok(store.audit_chain_head().await, "head");
    let mine = ok(f.all_audit(org.id).await, "audit");
    // org.created (+ owner), key.created, credits.granted, key.used, 64 tasks of 1..=3 events.
    let appended = head.last_seq - start.last_seq;
    assert_eq!(
        appended as usize,
        mine.len(),
        "every event of this fresh organization must take exactly one seq"
    );
    let report = ok(core.verify_audit_chain().await, "verify");
    assert_eq!(report.broken, None, "an untouched chain must verify");
    assert_eq!(report.checked, head.last_seq - head.anchor_seq);
    // seq is commit order without gaps: the whole log pages back as 1, 2, 3, … after the anchor.
    let mut after = head.anchor_seq;
    let mut seen = 0u64;
    loop {
        let rows = ok(
            store
                .audit_chain(after, ok(PageLimit::new(7), "limit"))
                .await,
            "chain page",
        );
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            assert_eq!(r.seq, after + 1, "audit seq must have no gaps");
            assert!(r.hash.is_some() && r.prev_hash.is_some() && r.event.is_some());
            after = r.seq;
            seen += 1;
        }
    }
    assert_eq!(seen, report.checked);
    // Purge everything up to the concurrent appends (all at now + 1 h and later).
    let purged = ok(
        store
            .purge_audit_before(f.now.plus(Duration::from_secs(60)))
            .await,
        "purge",
    );
    assert!(
        purged >= 4,
        "org, key, grant and usage events are old enough: {purged}"
    );
    let after_purge = ok(store.audit_chain_head().await, "head");
    assert!(after_purge.anchor_seq >= start.last_seq + 4);
    assert_eq!(after_purge.last_seq, head.last_seq);
    let report = ok(core.verify_audit_chain().await, "verify after purge");
    assert_eq!(
        report.broken, None,
        "a purged log must verify from its anchor"
    );
    assert_eq!(report.checked, head.last_seq - after_purge.anchor_seq);
    assert_ne!(
        after_purge.digest(),
        head.digest(),
        "the head hash commits to the anchor: a purge changes it"
    );
    let anchor = ok(store.audit_chain_anchor().await, "anchor event");
    assert_eq!(
        anchor.map(|a| (a.seq, a.hash)),
        Some((after_purge.anchor_seq, Some(after_purge.anchor_hash))),
        "the purge keeps the event its anchor names"
    );
    // The same anchor, judged by a clock at which its event is younger than the retention, is
    // a deletion of recent events.
    clock.set(f.now.plus(Duration::from_secs(3600)));
    let early = ok(core.verify_audit_chain().await, "verify early");
    assert_eq!(
        early.broken.map(|b| (b.seq, b.kind)),
        Some((
            after_purge.anchor_seq,
            crate::audit_chain::BreakKind::AnchorTooRecent
        ))
    );
    clock.set(past_retention);
    ok(
        store
            .append_audit(&[f.event(org.id, AuditAction::KeyUsed)])
            .await,
        "append",
    );
    assert!(ok(core.verify_audit_chain().await, "verify").is_intact());
}

/// Idempotency records lock, replay, detect mismatches, expire their lock, and are purged. A
/// takeover or an unsettled abandon resumes the record's attempt; a settled abandon or a purge
/// makes the next request a new attempt (so its ledger keys are new: a fresh charge).
pub async fn idempotency_records_lock_replay_and_expire(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, _) = ok(f.org().await, "org");
    let key = idem("http-1");
    let fp = RequestFingerprint::of("POST", "/x", b"{}");
    let lock = f.now.plus(Duration::from_secs(60));
    let minted = std::sync::atomic::AtomicU64::new(1);
    let attempt = |n: u64| AttemptId::from_uuid(uuid::Uuid::from_u64_pair(0x7000, n));
    let b = |now: Timestamp, fp: RequestFingerprint, key: IdempotencyKey| {
        let store = Arc::clone(&f.store);
        let n = minted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            ok(
                store
                    .begin_request(
                        org.id,
                        &key,
                        fp,
                        attempt(n),
                        now,
                        now.plus(Duration::from_secs(60)),
                    )
                    .await,
                "begin",
            )
        }
    };
    let started = |n: u64| IdempotencyBegin::Started {
        attempt: Some(attempt(n)),
    };
    assert_eq!(b(f.now, fp, key.clone()).await, started(1));
    assert_eq!(
        b(f.now, fp, key.clone()).await,
        IdempotencyBegin::InProgress
    );
    let other = RequestFingerprint::of("POST", "/x", b"{\"a\":1}");
    assert_eq!(
        b(f.now, other, key.clone()).await,
        IdempotencyBegin::Mismatch
    );
    // The lock expires: a retry after a crash takes over and resumes the first attempt.
    assert_eq!(
        b(lock.plus(Duration::from_millis(1)), fp, key.clone()).await,
        started(1)
    );
    let response = StoredResponse {
        status: 200,
        body: br#"{"ok":true}"#.to_vec(),
    };
    ok(
        f.store
            .complete_request(org.id, &key, &response, f.now)
            .await,
        "complete",
    );
    assert_eq!(
        b(f.now, fp, key.clone()).await,
        IdempotencyBegin::Replay(response.clone())
    );
    // An unsettled abandon unlocks the record and keeps its attempt (same fingerprint only);
    // a settled one deletes it, so the next request is a new attempt.
    let key2 = idem("http-2");
    assert_eq!(b(f.now, fp, key2.clone()).await, started(6));
    ok(
        f.store
            .abandon_request(org.id, &key2, Abandon::Unsettled)
            .await,
        "abandon unsettled",
    );
    assert_eq!(
        b(f.now, other, key2.clone()).await,
        IdempotencyBegin::Mismatch
    );
    assert_eq!(b(f.now, fp, key2.clone()).await, started(6));
    ok(
        f.store
            .abandon_request(org.id, &key2, Abandon::Settled)
            .await,
        "abandon settled",
    );
    assert_eq!(b(f.now, fp, key2.clone()).await, started(9));
    // Renewing: only the record's own attempt, only while unfinished, and it extends the lock.
    let renew_at = lock.plus(Duration::from_secs(30));
    assert!(ok(
        f.store
            .renew_request(org.id, &key2, attempt(9), renew_at)
            .await,
        "renew"
    ));
    assert!(!ok(
        f.store
            .renew_request(org.id, &key2, attempt(6), renew_at)
            .await,
        "renew another attempt"
    ));
    assert!(!ok(
        f.store
            .renew_request(org.id, &key, attempt(1), renew_at)
            .await,
        "renew a completed record"
    ));
    assert_eq!(
        b(lock.plus(Duration::from_secs(1)), fp, key2.clone()).await,
        IdempotencyBegin::InProgress,
        "the renewed lock holds past the first one"
    );
    // Neither kind of abandon touches a completed record.
    for how in [Abandon::Settled, Abandon::Unsettled] {
        ok(
            f.store.abandon_request(org.id, &key, how).await,
            "abandon completed",
        );
    }
    assert_eq!(
        b(f.now, fp, key.clone()).await,
        IdempotencyBegin::Replay(response)
    );
    // Records of another organization are separate.
    let (org_b, _) = ok(f.org().await, "org b");
    assert_eq!(
        ok(
            f.store
                .begin_request(org_b.id, &key, other, attempt(99), f.now, lock)
                .await,
            "b"
        ),
        IdempotencyBegin::Started {
            attempt: Some(attempt(99))
        }
    );
    let purged = ok(
        f.store
            .purge_requests_before(f.now.plus(Duration::from_secs(1)))
            .await,
        "purge",
    );
    assert!(purged >= 3, "purged {purged}");
    // After the purge the key is new again: a new attempt, never the old one.
    assert_eq!(b(f.now, fp, key.clone()).await, started(12));
}

/// The active-keys and owned-organizations limits are the store's: 16 concurrent key creations
/// for an organization allowed 3 create exactly 3; a deleted key frees a place; a user allowed
/// 2 organizations gets 2 of 8 concurrent creations; the operator is not limited.
pub async fn key_and_org_limits_hold_under_concurrency(store: Arc<dyn Store>) {
    use crate::audit::{Actor, RequestContext};
    use crate::{CoreConfig, Creapic, KeySpec};
    let config = CoreConfig {
        keys_per_org_max: 3,
        orgs_per_owner_max: 2,
        ..CoreConfig::default()
    };
    let core = Arc::new(Creapic::builder(store).config(config).build());
    let ctx = RequestContext::default();
    let owner = ok(core.ensure_user("limits@example.com").await, "user");
    let org = ok(
        core.create_org("Limits", owner.id, Actor::Operator, &ctx)
            .await,
        "org",
    );
    let spec = |i: usize| KeySpec {
        name: format!("key {i}"),
        scopes: crate::scope::ScopeSet::all(),
        mode: crate::key::KeyMode::Live,
        expires_at: None,
    };
    let mut tasks = Vec::new();
    for i in 0..16 {
        let core = Arc::clone(&core);
        let spec = spec(i);
        tasks.push(tokio::spawn(async move {
            core.create_key(
                Actor::User(owner.id),
                org.id,
                spec,
                &RequestContext::default(),
            )
            .await
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(k) => created.push(k.key.id),
            Err(Error::LimitExceeded { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(created.len(), 3, "exactly the limit is created");
    ok(
        core.delete_key(Actor::User(owner.id), org.id, created[0], &ctx)
            .await,
        "delete",
    );
    ok(
        core.create_key(Actor::User(owner.id), org.id, spec(99), &ctx)
            .await,
        "a deleted key frees a place",
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let core = Arc::clone(&core);
        tasks.push(tokio::spawn(async move {
            core.create_org(
                &format!("Owned {i}"),
                owner.id,
                Actor::User(owner.id),
                &RequestContext::default(),
            )
            .await
        }));
    }
    let mut owned = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => owned += 1,
            Err(Error::LimitExceeded { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // The operator's "Limits" organization counts: the user owns 1 and may get 1 more.
    assert_eq!(owned, 1, "the user reaches 2 owned organizations, no more");
    ok(
        core.create_org("By the operator", owner.id, Actor::Operator, &ctx)
            .await,
        "the operator is not limited",
    );
}

/// A hold of `org` reserved for `amount` at `at` (its id, the generation's, minted at `at`).
async fn hold_at(f: &Fixture, org: OrgId, amount_: u64, key: &str, at: Timestamp) -> HoldId {
    let request = LedgerRequest {
        entry_id: EntryId::generate(at, f.rng.as_ref()),
        org,
        op: LedgerOp::Reserve {
            amount: amount(amount_),
            job: None,
        },
        idempotency_key: idem(key),
        at,
    };
    let receipt = ok(f.store.apply(&request, None).await, "reserve");
    receipt.hold.map(|h| h.id).expect("a reserve makes a hold")
}

fn completed(org: OrgId, hold: HoldId, tokens: u64, at: Timestamp) -> GenerationRecord {
    GenerationRecord {
        id: GenerationId::of_hold(hold),
        org,
        prompt: r#"{"subject":"a lighthouse at dusk","style":"watercolor"}"#.into(),
        aspect_ratio: AspectRatio::Landscape16x9,
        quality: Quality::Hd,
        outcome: GenerationOutcome::Completed {
            media: format!("{}.png", "ab".repeat(32)),
            tokens: ok(Credits::new(tokens), "tokens"),
        },
        created_at: at,
    }
}

/// A generation reads back exactly as inserted, completed or failed; the insert answers with
/// what is stored.
pub async fn generations_round_trip(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let hold = hold_at(&f, org, 2, "g-1", f.now).await;
    ok(
        f.apply(
            org,
            LedgerOp::Capture {
                hold,
                amount: amount(2),
            },
            "g-1:c",
        )
        .await,
        "capture",
    );
    let record = completed(org, hold, 2, f.now);
    let stored = ok(f.store.insert_generation(&record).await, "insert");
    assert_eq!(stored, record, "the insert answers with the stored record");
    let read = ok(f.store.generation(org, record.id).await, "read");
    assert_eq!(
        read,
        Some(record.clone()),
        "a completed generation round-trips"
    );
    assert_eq!(
        read.map(|r| r.id.hold()),
        Some(hold),
        "its id is its hold's"
    );

    let failed_hold = hold_at(&f, org, 1, "g-2", f.now).await;
    let failed = GenerationRecord {
        id: GenerationId::of_hold(failed_hold),
        prompt: "\"a ready prompt given as a JSON string\"".into(),
        aspect_ratio: AspectRatio::Square,
        quality: Quality::Standard,
        outcome: GenerationOutcome::Failed {
            code: "provider_failed".into(),
        },
        ..record.clone()
    };
    assert_eq!(
        ok(f.store.insert_generation(&failed).await, "insert"),
        failed
    );
    let read = ok(f.store.generation(org, failed.id).await, "read");
    assert_eq!(
        read,
        Some(failed.clone()),
        "a failed generation round-trips"
    );
    let read = read.expect("read");
    assert_eq!(read.outcome.status(), "failed");
    assert_eq!(
        read.outcome.tokens(),
        Credits::ZERO,
        "a failed one charged nothing"
    );
    assert_eq!(read.outcome.media(), None);
    assert_eq!(read.outcome.error_code(), Some("provider_failed"));
    // Both are there, each under its own id.
    assert_ne!(record.id, failed.id);
    assert_eq!(
        ok(f.store.generation(org, record.id).await, "read"),
        Some(record)
    );
}

/// Inserting under an id already stored writes nothing and answers with the stored record, also
/// when many inserts of one id race: a resumed attempt never fails and never duplicates.
pub async fn generations_insert_is_idempotent(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let hold = hold_at(&f, org, 3, "g-1", f.now).await;
    let first = completed(org, hold, 3, f.now);
    assert_eq!(ok(f.store.insert_generation(&first).await, "insert"), first);
    let mut again = completed(
        org,
        hold,
        3,
        Timestamp::from_unix_ms(f.now.unix_ms() + 5_000),
    );
    again.prompt = r#"{"subject":"something else"}"#.into();
    let answered = ok(f.store.insert_generation(&again).await, "repeat");
    assert_eq!(answered, first, "a repeat answers with the first record");
    assert_eq!(
        ok(f.store.generation(org, first.id).await, "read"),
        Some(first.clone()),
        "a repeat changes nothing"
    );

    // Racing inserts of one new id: one wins, every one answers with the winner.
    let raced = hold_at(&f, org, 1, "g-2", f.now).await;
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let store = f.store.clone();
        let mut record = completed(org, raced, 1, Timestamp::from_unix_ms(f.now.unix_ms() + i));
        record.prompt = format!("{{\"subject\":\"racer {i}\"}}");
        tasks.push(tokio::spawn(async move {
            store.insert_generation(&record).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => answers.push(ok(r, "racing insert")),
            Err(e) => panic!("insert task: {e}"),
        }
    }
    let stored = ok(
        f.store.generation(org, GenerationId::of_hold(raced)).await,
        "read",
    )
    .expect("the raced generation is stored");
    assert!(
        answers.iter().all(|a| *a == stored),
        "every racing insert answers with the one stored record"
    );
}

/// A generation belongs to its organization: another organization reads `None` for its id, and
/// cannot claim the id for itself.
pub async fn generations_are_invisible_to_other_orgs(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let a = ok(f.funded_org(10).await, "a");
    let b = ok(f.funded_org(10).await, "b");
    let hold = hold_at(&f, a, 2, "g", f.now).await;
    let record = completed(a, hold, 2, f.now);
    ok(f.store.insert_generation(&record).await, "insert");
    assert_eq!(
        ok(f.store.generation(b, record.id).await, "b reads a's"),
        None,
        "another organization's generation is not found"
    );
    let unknown = GenerationId::of_hold(HoldId::generate(f.now, f.rng.as_ref()));
    assert_eq!(ok(f.store.generation(a, unknown).await, "unknown"), None);
    let stolen = GenerationRecord {
        org: b,
        ..record.clone()
    };
    match f.store.insert_generation(&stolen).await {
        Err(Error::Store {
            kind: StoreErrorKind::Conflict,
            ..
        }) => {}
        other => panic!("another organization's id must conflict, got {other:?}"),
    }
    assert_eq!(ok(f.store.generation(b, record.id).await, "b"), None);
    assert_eq!(
        ok(f.store.generation(a, record.id).await, "a"),
        Some(record),
        "the owner's record is untouched"
    );
}

/// Generation ids are their holds' UUID v7 ids: they sort in the order the holds were made,
/// and the store keeps every id and time exactly.
pub async fn generation_ids_sort_in_creation_order(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let mut made = Vec::new();
    for i in 0..4i64 {
        let at = Timestamp::from_unix_ms(f.now.unix_ms() + i * 1_000);
        let hold = hold_at(&f, org, 1, &format!("g-{i}"), at).await;
        made.push(completed(org, hold, 1, at));
    }
    // Inserted out of order; read back in any order, each exactly.
    for record in made.iter().rev() {
        ok(f.store.insert_generation(record).await, "insert");
    }
    let mut read = Vec::new();
    for record in &made {
        let got = ok(f.store.generation(org, record.id).await, "read")
            .expect("every generation is stored");
        assert_eq!(got.id.as_uuid().get_version_num(), 7, "a UUID v7");
        assert_eq!(&got, record);
        read.push(got);
    }
    assert!(
        read.windows(2)
            .all(|w| w[0].id < w[1].id && w[0].created_at < w[1].created_at),
        "ids sort in creation order: {:?}",
        read.iter().map(|r| r.id).collect::<Vec<_>>()
    );
}
