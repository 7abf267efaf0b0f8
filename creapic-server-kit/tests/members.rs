//! The dashboard's organizations and members over HTTP, on every store backend (memory, SQLite,
//! PostgreSQL): who may list, add, re-role and remove whom (owners anything, admins plain
//! members only, members nothing, outsiders see 404), the last owner kept (409 `last_owner`),
//! path and body validation, each change audited with the request's address, idempotent replays,
//! and cursor pages that visit every organization and member once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{TestApp, app_with, backends, body};
use creapic_core::audit::{Actor, AuditAction, AuditQuery, RequestContext};
use creapic_core::id::UserId;
use creapic_core::org::Role;
use creapic_server_kit::KitConfig;
use serde_json::{Value, json};

struct Call<'a> {
    app: &'a TestApp,
    user: UserId,
}

impl Call<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body_json: Option<Value>,
        key: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut r = self
            .app
            .http
            .request(method, self.app.url(path))
            .header("x-test-user", self.user.to_string());
        if let Some(b) = body_json {
            r = r.json(&b);
        }
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        body(r.send().await.unwrap()).await
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self.send(reqwest::Method::GET, path, None, None).await;
        (s, b)
    }
    async fn add(&self, org: &str, email: &str, role: &str) -> (u16, Value) {
        let (s, _, b) = self
            .send(
                reqwest::Method::POST,
                &format!("/api/organizations/{org}/members"),
                Some(json!({"email": email, "role": role})),
                None,
            )
            .await;
        (s, b)
    }
    async fn patch(&self, org: &str, user: &str, role: &str) -> (u16, Value) {
        let (s, _, b) = self
            .send(
                reqwest::Method::PATCH,
                &format!("/api/organizations/{org}/members/{user}"),
                Some(json!({"role": role})),
                None,
            )
            .await;
        (s, b)
    }
    async fn delete(&self, org: &str, user: &str) -> (u16, Value) {
        let (s, _, b) = self
            .send(
                reqwest::Method::DELETE,
                &format!("/api/organizations/{org}/members/{user}"),
                None,
                None,
            )
            .await;
        (s, b)
    }
}

fn as_user(app: &TestApp, user: UserId) -> Call<'_> {
    Call { app, user }
}

fn code(b: &Value) -> &str {
    b["code"].as_str().unwrap_or("")
}

async fn roles_and_refusals(name: &str, app: &TestApp) {
    let org = app.org.to_string();
    let owner = as_user(app, app.owner);
    // The owner adds an admin and a member (users created by e-mail).
    let (s, b) = owner.add(&org, "Admin@Example.com", "admin").await;
    assert_eq!(s, 201, "{name}: {b}");
    assert_eq!(b["member"]["email"], "admin@example.com");
    assert_eq!(b["member"]["role"], "admin");
    assert!(b["member"]["joinedAt"].is_string(), "{name}: {b}");
    let admin_id = UserId::parse(b["member"]["userId"].as_str().unwrap()).unwrap();
    let admin = as_user(app, admin_id);
    let (s, b) = admin.add(&org, "member@example.com", "member").await;
    assert_eq!(s, 201, "{name}: {b}");
    let member_id = b["member"]["userId"].as_str().unwrap().to_owned();
    let member = as_user(app, UserId::parse(&member_id).unwrap());
    // Adding again: 409 already_member.
    let (s, b) = owner.add(&org, "member@example.com", "member").await;
    assert_eq!((s, code(&b)), (409, "already_member"), "{name}");
    // Admins: plain members only, to or from `member`.
    let owner_id = app.owner.to_string();
    let admin_str = admin_id.to_string();
    for (s, b) in [
        admin.add(&org, "boss@example.com", "owner").await,
        admin.add(&org, "boss@example.com", "admin").await,
        admin.patch(&org, &owner_id, "member").await,
        admin.patch(&org, &member_id, "admin").await,
        admin.delete(&org, &owner_id).await,
    ] {
        assert_eq!((s, code(&b)), (403, "forbidden"), "{name}: {b}");
    }
    // Members: nothing.
    for (s, b) in [
        member.add(&org, "x@example.com", "member").await,
        member.patch(&org, &member_id, "member").await,
        member.delete(&org, &admin_str).await,
    ] {
        assert_eq!((s, code(&b)), (403, "forbidden"), "{name}: {b}");
    }
    // Any member reads the members, oldest user first; the owner's role is there.
    let (s, b) = member
        .get(&format!("/api/organizations/{org}/members"))
        .await;
    assert_eq!(s, 200, "{name}: {b}");
    let members = b["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{name}: {b}");
    assert!(
        members
            .iter()
            .any(|m| m["userId"] == owner_id.as_str() && m["role"] == "owner")
    );
    // Another organization is invisible: 404 for its owner on every route of this one.
    let (_, stranger) = app.other_org().await;
    let stranger = as_user(app, stranger);
    let (s, b) = stranger
        .get(&format!("/api/organizations/{org}/members"))
        .await;
    assert_eq!((s, code(&b)), (404, "not_found"), "{name}: {b}");
    assert!(!b.to_string().contains("owner@example.com"), "{name}: {b}");
    for (s, b) in [
        stranger.add(&org, "x@example.com", "member").await,
        stranger.patch(&org, &member_id, "member").await,
        stranger.delete(&org, &member_id).await,
    ] {
        assert_eq!((s, code(&b)), (404, "not_found"), "{name}: {b}");
    }
    // Malformed ids and bodies.
    let (s, b) = owner.get("/api/organizations/nope/members").await;
    assert_eq!((s, code(&b)), (400, "invalid_parameter"), "{name}: {b}");
    let (s, b) = owner.patch(&org, "nope", "member").await;
    assert_eq!((s, code(&b)), (400, "invalid_parameter"), "{name}: {b}");
    let (s, b) = owner.delete("nope", &member_id).await;
    assert_eq!((s, code(&b)), (400, "invalid_parameter"), "{name}: {b}");
    let (s, b) = owner.add(&org, "y@example.com", "king").await;
    assert_eq!((s, code(&b)), (400, "invalid_json"), "{name}: {b}");
    let (s, _, b) = owner
        .send(
            reqwest::Method::PATCH,
            &format!("/api/organizations/{org}/members/{member_id}"),
            Some(json!({"role": "admin", "extra": 1})),
            None,
        )
        .await;
    assert_eq!((s, code(&b)), (400, "invalid_json"), "{name}: {b}");
    let (s, b) = owner.add(&org, "not an e-mail", "member").await;
    assert_eq!((s, code(&b)), (400, "invalid_request"), "{name}: {b}");
    let (s, b) = owner
        .patch(
            &org,
            &UserId::from_uuid(uuid::Uuid::now_v7()).to_string(),
            "member",
        )
        .await;
    assert_eq!((s, code(&b)), (404, "not_found"), "{name}: {b}");
    // Signed out: 401.
    let (s, b) = body(
        app.http
            .get(app.url("/api/organizations"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .then_drop_headers();
    assert_eq!((s, code(&b)), (401, "not_signed_in"), "{name}: {b}");

    // The last owner: neither demoted nor removed, by themselves or anyone.
    let (s, b) = owner.patch(&org, &owner_id, "admin").await;
    assert_eq!((s, code(&b)), (409, "last_owner"), "{name}: {b}");
    let (s, b) = owner.delete(&org, &owner_id).await;
    assert_eq!((s, code(&b)), (409, "last_owner"), "{name}: {b}");
    // Owners do anything else: promote the admin to owner, then step down.
    let (s, b) = owner.patch(&org, &admin_str, "owner").await;
    assert_eq!(
        (s, b["member"]["role"].as_str()),
        (200, Some("owner")),
        "{name}: {b}"
    );
    let (s, b) = owner.patch(&org, &owner_id, "member").await;
    assert_eq!(s, 200, "{name}: {b}");
    // An admin removes a plain member (now the former owner can't: they are a member).
    let (s, b) = owner.delete(&org, &member_id).await;
    assert_eq!((s, code(&b)), (403, "forbidden"), "{name}: {b}");
    let new_owner = as_user(app, admin_id);
    let (s, b) = new_owner.delete(&org, &member_id).await;
    assert_eq!(
        (s, b["member"]["role"].as_str()),
        (200, Some("member")),
        "{name}: {b}"
    );
    let (s, b) = new_owner.delete(&org, &member_id).await;
    assert_eq!(
        (s, code(&b)),
        (404, "not_found"),
        "removing again: {name}: {b}"
    );

    // Every change audited with the request's address, in the org's log.
    let events = app
        .core
        .audit(
            Actor::Operator,
            &AuditQuery {
                limit: creapic_core::page::PageLimit::max(),
                ..AuditQuery::all(app.org)
            },
        )
        .await
        .unwrap()
        .items;
    let changed: Vec<_> = events
        .iter()
        .filter(|r| {
            matches!(
                r.event.action,
                AuditAction::MemberChanged | AuditAction::MemberRemoved
            )
        })
        .collect();
    // 2 adds, 2 role changes, 1 removal (refusals record nothing).
    assert_eq!(changed.len(), 5, "{name}: {changed:?}");
    for r in &changed {
        assert_eq!(
            r.event.ip,
            Some(std::net::IpAddr::from([127, 0, 0, 1])),
            "{name}: {r:?}"
        );
        assert!(r.event.detail.as_deref().unwrap_or("").contains("role="));
    }
    let removed = changed
        .iter()
        .find(|r| r.event.action == AuditAction::MemberRemoved)
        .unwrap();
    assert_eq!(removed.event.actor, Actor::User(admin_id));
    assert_eq!(
        removed.event.detail.as_deref(),
        Some(format!("user={member_id} role=member").as_str())
    );
}

trait DropHeaders {
    fn then_drop_headers(self) -> (u16, Value);
}
impl DropHeaders for (u16, reqwest::header::HeaderMap, Value) {
    fn then_drop_headers(self) -> (u16, Value) {
        (self.0, self.2)
    }
}

async fn replays_and_pages(name: &str, app: &TestApp) {
    let org = app.org.to_string();
    let owner = as_user(app, app.owner);
    // A repeated add under one Idempotency-Key answers the first 201, marked replayed; the same
    // key with another body is 422.
    let add = |email: &str| json!({"email": email, "role": "member"});
    let path = format!("/api/organizations/{org}/members");
    let (s1, h1, b1) = owner
        .send(
            reqwest::Method::POST,
            &path,
            Some(add("r@example.com")),
            Some("add-1"),
        )
        .await;
    let (s2, h2, b2) = owner
        .send(
            reqwest::Method::POST,
            &path,
            Some(add("r@example.com")),
            Some("add-1"),
        )
        .await;
    assert_eq!((s1, s2), (201, 201), "{name}: {b1} {b2}");
    assert_eq!(b1, b2);
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true", "{name}");
    let (s, _, b) = owner
        .send(
            reqwest::Method::POST,
            &path,
            Some(add("other@example.com")),
            Some("add-1"),
        )
        .await;
    assert_eq!((s, code(&b)), (422, "idempotency_conflict"), "{name}: {b}");
    // A removal retried answers the first removal, not 404.
    let user = b1["member"]["userId"].as_str().unwrap();
    let one = format!("/api/organizations/{org}/members/{user}");
    let (s1, _, b1) = owner
        .send(reqwest::Method::DELETE, &one, None, Some("rm-1"))
        .await;
    let (s2, h2, b2) = owner
        .send(reqwest::Method::DELETE, &one, None, Some("rm-1"))
        .await;
    assert_eq!((s1, s2), (200, 200), "{name}: {b1} {b2}");
    assert_eq!(b1, b2);
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    // Another user's identical key is theirs (records are namespaced per caller).
    let admin = app.core.ensure_user("ns@example.com").await.unwrap();
    app.core
        .set_role(
            Actor::Operator,
            app.org,
            admin.id,
            Role::Admin,
            &RequestContext::default(),
        )
        .await
        .unwrap();
    let (s, h, b) = as_user(app, admin.id)
        .send(
            reqwest::Method::POST,
            &path,
            Some(add("r@example.com")),
            Some("add-1"),
        )
        .await;
    assert_eq!(s, 201, "{name}: {b}");
    assert!(h.get("idempotent-replayed").is_none(), "{name}");

    // Pages: 7 organizations and 7 members, 3 at a time, each once.
    for i in 0..6 {
        let other = app
            .core
            .create_org(
                &format!("Org {i}"),
                app.owner,
                Actor::Operator,
                &RequestContext::default(),
            )
            .await
            .unwrap();
        let _ = other;
        app.core
            .add_member(
                Actor::Operator,
                app.org,
                &format!("p{i}@example.com"),
                Role::Member,
                &RequestContext::default(),
            )
            .await
            .unwrap();
    }
    for (first, field) in [
        ("/api/organizations?limit=3".to_owned(), "organizations"),
        (
            format!("/api/organizations/{org}/members?limit=3"),
            "members",
        ),
    ] {
        let mut seen = Vec::new();
        let mut url = first.clone();
        for _ in 0..10 {
            let (s, b) = owner.get(&url).await;
            assert_eq!(s, 200, "{name}: {b}");
            let items = b[field].as_array().unwrap();
            assert!(items.len() <= 3);
            seen.extend(items.iter().cloned());
            match b["nextCursor"].as_str() {
                Some(c) => url = format!("{first}&cursor={c}"),
                None => break,
            }
        }
        let mut ids: Vec<String> = seen
            .iter()
            .map(|v| {
                v["organization"]["id"]
                    .as_str()
                    .or(v["userId"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let n = ids.len();
        let sorted = {
            let mut s = ids.clone();
            s.sort();
            s
        };
        assert_eq!(ids, sorted, "{name} {field}: in id order");
        ids.dedup();
        assert_eq!(ids.len(), n, "{name} {field}: no repeats");
        let expected = if field == "organizations" { 7 } else { 9 };
        assert_eq!(n, expected, "{name} {field}");
    }
    let (s, b) = owner.get("/api/organizations?cursor=nope").await;
    assert_eq!((s, code(&b)), (400, "invalid_parameter"), "{name}: {b}");
    let (s, b) = owner.get("/api/organizations?limit=0").await;
    assert_eq!(s, 400, "{name}: {b}");
    let (s, b) = owner.get("/api/organizations?limit=1001").await;
    assert_eq!((s, code(&b)), (422, "limit_exceeded"), "{name}: {b}");
    let (s, b) = owner.get("/api/organizations").await;
    assert_eq!(s, 200);
    assert!(
        b["organizations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["role"] == "owner"),
        "{name}: {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_routes_enforce_roles_on_every_backend() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let app = app_with(Arc::clone(&store), KitConfig::default()).await;
        roles_and_refusals(name, &app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_changes_replay_and_listings_page_on_every_backend() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let app = app_with(Arc::clone(&store), KitConfig::default()).await;
        replays_and_pages(name, &app).await;
    }
}
