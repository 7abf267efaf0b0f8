//! The dashboard's organizations and members through the typed client, against a real server
//! on SQLite and on PostgreSQL: list, add, re-role and remove with typed answers and typed
//! refusals (`AlreadyMember`, `LastOwner`, `Forbidden`, `NotFound`), a retried change replayed,
//! and the paginators following `nextCursor` to the end and stopping at their bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BACKENDS, server_on_backend};
use creapic_client::resources::{ListMembers, ListOrganizations};
use creapic_client::wire::RoleWire;
use creapic_client::{Error, ErrorCode};
use creapic_core::audit::{Actor, RequestContext};

fn code(e: &Error) -> ErrorCode {
    e.api()
        .map(|a| a.code.clone())
        .unwrap_or(ErrorCode::Unknown(e.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_managed_through_the_client_on_both_backends() {
    for backend in BACKENDS {
        let server = server_on_backend(backend).await;
        let org = server.org.to_string();
        let owner = server.dashboard(server.owner);
        let members = owner.organizations().members(&org);

        let added = members
            .add("Ada@Example.com", RoleWire::Admin)
            .await
            .unwrap();
        assert_eq!(added.member.email, "ada@example.com", "{backend:?}");
        assert_eq!(added.member.role, RoleWire::Admin);
        let e = members
            .add("ada@example.com", RoleWire::Member)
            .await
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::AlreadyMember, "{backend:?}: {e}");

        let ada = creapic_core::id::UserId::parse(&added.member.user_id).unwrap();
        let as_ada = server.dashboard(ada);
        let e = as_ada
            .organizations()
            .members(&org)
            .set_role(&server.owner.to_string(), RoleWire::Member)
            .await
            .unwrap_err();
        assert_eq!(
            code(&e),
            ErrorCode::Forbidden,
            "an admin never demotes an owner: {e}"
        );
        let e = members
            .set_role(&server.owner.to_string(), RoleWire::Admin)
            .await
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::LastOwner, "{backend:?}: {e}");
        let e = members.remove(&server.owner.to_string()).await.unwrap_err();
        assert_eq!(code(&e), ErrorCode::LastOwner, "{backend:?}: {e}");

        // A change retried under its Idempotency-Key is answered with the first answer.
        let call = members.set_role(&added.member.user_id, RoleWire::Member);
        let key = call.key().unwrap().to_owned();
        let first = call.send_with_meta().await.unwrap();
        assert_eq!(first.body.member.role, RoleWire::Member);
        let again = members
            .set_role(&added.member.user_id, RoleWire::Member)
            .idempotency_key(&key)
            .send_with_meta()
            .await
            .unwrap();
        assert!(again.meta.replayed, "{backend:?}");
        assert_eq!(again.body, first.body);

        let removed = members.remove(&added.member.user_id).await.unwrap();
        assert_eq!(removed.member.role, RoleWire::Member);
        let e = members.remove(&added.member.user_id).await.unwrap_err();
        assert_eq!(code(&e), ErrorCode::NotFound, "removing again: {e}");

        // Another organization's owner sees none of this one.
        let (_, stranger) = server.other_org().await;
        let e = server
            .dashboard(stranger)
            .organizations()
            .members(&org)
            .list(&ListMembers::default())
            .await
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::NotFound, "{backend:?}: {e}");
        let e = members.remove("not-a-uuid").await.unwrap_err();
        assert_eq!(code(&e), ErrorCode::InvalidParameter, "{backend:?}: {e}");

        // Pages: 11 organizations and 12 members, walked 4 at a time.
        let ctx = RequestContext::default();
        for i in 0..10 {
            server
                .core
                .create_org(&format!("Org {i}"), server.owner, Actor::Operator, &ctx)
                .await
                .unwrap();
            server
                .core
                .add_member(
                    Actor::Operator,
                    server.org,
                    &format!("p{i}@example.com"),
                    creapic_core::org::Role::Member,
                    &ctx,
                )
                .await
                .unwrap();
        }
        let four = ListOrganizations {
            cursor: None,
            limit: Some(4),
        };
        let page = owner.organizations().list(&four).await.unwrap();
        assert_eq!(page.organizations.len(), 4);
        assert!(page.next_cursor.is_some());
        let mut pages = owner.organizations().pages(&four);
        let mut sizes = Vec::new();
        let mut ids = Vec::new();
        while let Some(page) = pages.next_page().await.unwrap() {
            sizes.push(page.organizations.len());
            ids.extend(page.organizations.into_iter().map(|m| m.organization.id));
        }
        assert_eq!(sizes, [4, 4, 3], "{backend:?}");
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted, "each organization once, in order");
        let all = owner
            .organizations()
            .pages(&four)
            .collect(1000)
            .await
            .unwrap();
        assert_eq!(all.len(), 11);
        assert!(all.iter().all(|m| m.role == RoleWire::Owner));
        let first = owner.organizations().pages(&four).take(6).await.unwrap();
        assert_eq!(first, all[..6], "take stops the walk at its count");
        assert!(
            owner.organizations().pages(&four).collect(6).await.is_err(),
            "collect refuses a listing past its bound"
        );
        let listed = members
            .pages(&ListMembers {
                cursor: None,
                limit: Some(5),
            })
            .collect(1000)
            .await
            .unwrap();
        assert_eq!(listed.len(), 11, "{backend:?}: owner + 10");
        assert_eq!(
            listed.iter().filter(|m| m.role == RoleWire::Owner).count(),
            1
        );
    }
}
