//! Conformance of users, organizations and members: users upserted by e-mail, the creator as
//! owner, role changes and their audit events, paged listings and removal, role checks repeated
//! inside the writing transaction, and the last owner, never demoted or removed even by racing
//! demotions.

use std::sync::Arc;

use crate::audit::AuditAction;
use crate::error::{Error, StoreErrorKind};
use crate::id::OrgId;
use crate::org::{Email, Removal, Role, RoleChange, User};
use crate::page::PageLimit;
use crate::store::Store;
use crate::testing::Fixture;

use super::ok;

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
