//! Behaviour of the `Creapic` service over the in-memory store, with a manual clock and seeded
//! randomness: roles, key lifecycle, authentication and its cache, last-used coalescing, credits,
//! jobs and audit retention.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use creapic_core::audit::{Actor, AuditAction, AuditQuery, RequestContext};
use creapic_core::clock::{Clock, ManualClock, Timestamp};
use creapic_core::job::{ItemError, ItemOutcome, JobKind, JobStatus, WorkerId};
use creapic_core::key::KeyMode;
use creapic_core::ledger::Credits;
use creapic_core::org::Role;
use creapic_core::page::PageLimit;
use creapic_core::random::SeededRandom;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::memory::MemoryStore;
use creapic_core::store::{KeyQuery, KeyStore};
use creapic_core::{CoreConfig, Creapic, Error, JobSpec, KeySpec, Principal};

struct World {
    core: Creapic<MemoryStore>,
    clock: Arc<ManualClock>,
    ctx: RequestContext,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_800_000_000_000)));
    let core = Creapic::builder(Arc::new(MemoryStore::new()))
        .clock(clock.clone())
        .random(Arc::new(SeededRandom::new(42)))
        .config(CoreConfig::default())
        .build();
    let ctx = RequestContext::new(Some([203, 0, 113, 7].into()), Some("tests/1.0"));
    World { core, clock, ctx }
}

fn spec(scopes: &[Scope]) -> KeySpec {
    KeySpec {
        name: "Production".into(),
        scopes: ScopeSet::new(scopes.iter().copied()).unwrap(),
        mode: KeyMode::Live,
        expires_at: None,
    }
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

async fn auth(w: &World, header: &str) -> Result<Principal, Error> {
    w.core.authenticate(Some(header.as_bytes()), None).await
}

#[tokio::test]
async fn authentication_answers_the_documented_errors() {
    let w = world();
    let owner = w.core.ensure_user("owner@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let key = w
        .core
        .create_key(
            Actor::User(owner.id),
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();

    let who = auth(&w, &bearer(key.secret.expose())).await.unwrap();
    assert_eq!(
        (who.org, who.key, who.mode),
        (org.id, key.key.id, KeyMode::Live)
    );
    let via_x = w
        .core
        .authenticate(None, Some(key.secret.expose().as_bytes()))
        .await
        .unwrap();
    assert_eq!(via_x.key, key.key.id);

    let missing = w.core.authenticate(None, None).await.unwrap_err();
    assert_eq!(
        missing.to_string(),
        "Missing or invalid Authorization header"
    );
    let shape = auth(&w, "Bearer sk_XXXX").await.unwrap_err();
    assert_eq!(shape.to_string(), "Invalid API key format");
    let unknown = format!("Bearer wi_live_{}", "0".repeat(64));
    assert_eq!(
        auth(&w, &unknown).await.unwrap_err().to_string(),
        "Invalid API key"
    );
    // A test key's text with a live key's body is another key.
    let swapped = bearer(&key.secret.expose().replacen("wi_live_", "wi_test_", 1));
    assert_eq!(
        auth(&w, &swapped).await.unwrap_err().code(),
        "invalid_api_key"
    );
}

#[tokio::test]
async fn scope_and_organization_are_distinct_refusals() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let a = w
        .core
        .create_org("A", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let b = w
        .core
        .create_org("B", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let key = w
        .core
        .create_key(Actor::Operator, a.id, spec(&[Scope::SceneRender]), &w.ctx)
        .await
        .unwrap();
    let who = auth(&w, &bearer(key.secret.expose())).await.unwrap();
    assert!(who.authorize(Scope::SceneRender, a.id).is_ok());
    let e = who.authorize(Scope::ImageGeneration, a.id).unwrap_err();
    assert!(
        matches!(e, Error::MissingScope(Scope::ImageGeneration)),
        "{e:?}"
    );
    assert_eq!(e.code(), "missing_scope");
    let e = who.authorize(Scope::SceneRender, b.id).unwrap_err();
    assert_eq!(e.code(), "wrong_organization");
}

#[tokio::test]
async fn only_owners_and_admins_manage_keys() {
    let w = world();
    let owner = w.core.ensure_user("owner@example.com").await.unwrap();
    let admin = w.core.ensure_user("admin@example.com").await.unwrap();
    let member = w.core.ensure_user("member@example.com").await.unwrap();
    let stranger = w.core.ensure_user("stranger@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    w.core
        .set_role(Actor::User(owner.id), org.id, admin.id, Role::Admin, &w.ctx)
        .await
        .unwrap();
    w.core
        .set_role(
            Actor::User(admin.id),
            org.id,
            member.id,
            Role::Member,
            &w.ctx,
        )
        .await
        .unwrap();
    // An admin may not promote anyone to admin or owner.
    let e = w
        .core
        .set_role(
            Actor::User(admin.id),
            org.id,
            member.id,
            Role::Owner,
            &w.ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");

    let by_admin = w
        .core
        .create_key(
            Actor::User(admin.id),
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    assert_eq!(by_admin.key.created_by, admin.id);
    let e = w
        .core
        .create_key(
            Actor::User(member.id),
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
    let e = w
        .core
        .create_key(
            Actor::User(stranger.id),
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        "not_found",
        "outsiders must not learn the organization exists"
    );
    let e = w
        .core
        .delete_key(Actor::User(member.id), org.id, by_admin.key.id, &w.ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
    let who = auth(&w, &bearer(by_admin.secret.expose())).await.unwrap();
    let e = w
        .core
        .delete_key(Actor::Key(who.key), org.id, by_admin.key.id, &w.ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forbidden", "keys never manage keys");
    // Operator-created keys are attributed to the first owner.
    let by_op = w
        .core
        .create_key(
            Actor::Operator,
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    assert_eq!(by_op.key.created_by, owner.id);
}

#[tokio::test]
async fn key_input_is_validated() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let mut s = spec(&[Scope::ImageGeneration]);
    s.name = "   ".into();
    let e = w
        .core
        .create_key(Actor::Operator, org.id, s, &w.ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_request");
    let mut s = spec(&[Scope::ImageGeneration]);
    s.name = "🔑".repeat(65);
    let e = w
        .core
        .create_key(Actor::Operator, org.id, s, &w.ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "limit_exceeded");
    let mut s = spec(&[Scope::ImageGeneration]);
    s.expires_at = Some(w.clock.now());
    let e = w
        .core
        .create_key(Actor::Operator, org.id, s, &w.ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_request");
    let missing = creapic_core::id::OrgId::generate(w.clock.now(), &SeededRandom::new(1));
    let e = w
        .core
        .create_key(
            Actor::Operator,
            missing,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "not_found");
}

#[tokio::test]
async fn a_delete_takes_effect_before_it_returns_even_for_a_cached_key() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let key = w
        .core
        .create_key(
            Actor::User(owner.id),
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    let header = bearer(key.secret.expose());
    auth(&w, &header).await.unwrap();
    assert_eq!(w.core.authenticator().cached_len(), 1);
    let deleted = w
        .core
        .delete_key(Actor::User(owner.id), org.id, key.key.id, &w.ctx)
        .await
        .unwrap();
    assert!(deleted.deleted_at.is_some());
    assert_eq!(
        auth(&w, &header).await.unwrap_err().to_string(),
        "Invalid API key"
    );
    // Idempotent and audited once, with the IP and user agent of the request.
    w.core
        .delete_key(Actor::User(owner.id), org.id, key.key.id, &w.ctx)
        .await
        .unwrap();
    let log = w
        .core
        .audit(Actor::User(owner.id), &AuditQuery::all(org.id))
        .await
        .unwrap();
    let deletions: Vec<_> = log
        .items
        .iter()
        .filter(|r| r.event.action == AuditAction::KeyDeleted)
        .collect();
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0].event.ip, w.ctx.ip);
    assert_eq!(deletions[0].event.user_agent.as_deref(), Some("tests/1.0"));
    assert_eq!(deletions[0].event.key_prefix, Some(key.key.prefix));
    let created: Vec<_> = log
        .items
        .iter()
        .filter(|r| r.event.action == AuditAction::KeyCreated)
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].event.ip, w.ctx.ip);
}

#[tokio::test]
async fn the_cache_serves_warm_hits_and_rechecks_the_store_after_its_ttl() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let key = w
        .core
        .create_key(
            Actor::Operator,
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    let header = bearer(key.secret.expose());
    auth(&w, &header).await.unwrap();
    // Another process deletes the key straight in the store (this process is not told).
    let event = creapic_core::audit::AuditEvent::new(
        creapic_core::id::AuditId::generate(w.clock.now(), &SeededRandom::new(5)),
        org.id,
        w.clock.now(),
        AuditAction::KeyDeleted,
        Actor::Operator,
        &w.ctx,
    );
    w.core
        .store()
        .delete_key(org.id, key.key.id, w.clock.now(), &event)
        .await
        .unwrap();
    // Within the TTL the warm cache answers without asking the store...
    w.clock.advance(Duration::from_millis(500));
    assert!(auth(&w, &header).await.is_ok());
    // ...and once the TTL (1 s) has passed, the store is asked again and says no.
    w.clock.advance(Duration::from_millis(600));
    assert_eq!(
        auth(&w, &header).await.unwrap_err().code(),
        "invalid_api_key"
    );
}

#[tokio::test]
async fn expired_keys_stop_working_at_their_expiry() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let mut s = spec(&[Scope::ImageGeneration]);
    s.expires_at = Some(w.clock.now().plus(Duration::from_secs(10)));
    let key = w
        .core
        .create_key(Actor::Operator, org.id, s, &w.ctx)
        .await
        .unwrap();
    let header = bearer(key.secret.expose());
    assert!(auth(&w, &header).await.is_ok());
    w.clock.advance(Duration::from_millis(9_999));
    assert!(
        auth(&w, &header).await.is_ok(),
        "cached and not yet expired"
    );
    w.clock.advance(Duration::from_millis(1));
    assert_eq!(
        auth(&w, &header).await.unwrap_err().code(),
        "invalid_api_key"
    );
}

#[tokio::test]
async fn last_used_is_coalesced_into_one_write_per_key_per_interval() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let k1 = w
        .core
        .create_key(
            Actor::Operator,
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    let k2 = w
        .core
        .create_key(Actor::Operator, org.id, spec(&[Scope::SceneRender]), &w.ctx)
        .await
        .unwrap();
    let (h1, h2) = (bearer(k1.secret.expose()), bearer(k2.secret.expose()));
    for _ in 0..1000 {
        auth(&w, &h1).await.unwrap();
        auth(&w, &h2).await.unwrap();
    }
    let stored = w
        .core
        .store()
        .key(org.id, k1.key.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.last_used_at, None,
        "verification itself never writes"
    );
    let used_at = w.clock.now();
    assert_eq!(
        w.core.flush_usage(false).await.unwrap(),
        2,
        "one batch, one usage per key"
    );
    let stored = w
        .core
        .store()
        .key(org.id, k1.key.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.last_used_at, Some(used_at));
    // Used again 10 s later: not written before the 60 s interval has passed.
    w.clock.advance(Duration::from_secs(10));
    auth(&w, &h1).await.unwrap();
    assert_eq!(w.core.flush_usage(false).await.unwrap(), 0);
    w.clock.advance(Duration::from_secs(50));
    assert_eq!(w.core.flush_usage(false).await.unwrap(), 1);
    let stored = w
        .core
        .store()
        .key(org.id, k1.key.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.last_used_at,
        Some(used_at.plus(Duration::from_secs(10)))
    );
    assert_eq!(
        w.core.flush_usage(true).await.unwrap(),
        0,
        "nothing new to write"
    );
    // A deleted key's last use before deletion is still flushed.
    w.clock.advance(Duration::from_secs(1));
    auth(&w, &h2).await.unwrap();
    let last = w.clock.now();
    w.core
        .delete_key(Actor::Operator, org.id, k2.key.id, &w.ctx)
        .await
        .unwrap();
    assert_eq!(w.core.flush_usage(false).await.unwrap(), 1);
    let stored = w
        .core
        .store()
        .key(org.id, k2.key.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.last_used_at, Some(last));
    let used = w
        .core
        .audit(Actor::Operator, &AuditQuery::all(org.id))
        .await
        .unwrap();
    let used = used
        .items
        .iter()
        .filter(|r| r.event.action == AuditAction::KeyUsed)
        .count();
    assert_eq!(used, 4);
}

#[tokio::test]
async fn plaintext_keys_are_never_stored_or_printed() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let key = w
        .core
        .create_key(
            Actor::User(owner.id),
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    let body = key.secret.expose()[8..].to_owned();
    auth(&w, &bearer(key.secret.expose())).await.unwrap();
    w.core.flush_usage(true).await.unwrap();
    let everything = format!(
        "{:?} {:?} {:?}",
        w.core.store(),
        key,
        w.core.authenticator()
    );
    assert!(
        !everything.contains(&body),
        "the secret leaked into Debug output or the store"
    );
    assert!(
        everything.contains(key.key.prefix.as_str()),
        "the prefix is what identifies a key"
    );
    let listed = w
        .core
        .list_keys(Actor::User(owner.id), org.id, &KeyQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].prefix.as_str(), &key.secret.expose()[..12]);
}

#[tokio::test]
async fn an_org_created_through_a_key_is_owned_by_the_keys_creator() {
    let w = world();
    let owner = w.core.ensure_user("founder@example.com").await.unwrap();
    let admin = w.core.ensure_user("admin@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    w.core
        .set_role(Actor::Operator, org.id, admin.id, Role::Admin, &w.ctx)
        .await
        .unwrap();
    let writer = w
        .core
        .create_key(
            Actor::User(admin.id),
            org.id,
            spec(&[Scope::OrganizationWrite]),
            &w.ctx,
        )
        .await
        .unwrap();
    let who = auth(&w, &bearer(writer.secret.expose())).await.unwrap();
    let new_org = w
        .core
        .create_org_with_key(&who, "Acme Labs", &w.ctx)
        .await
        .unwrap();
    assert_eq!(
        w.core.store().role(new_org.id, admin.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(
        w.core.store().role(new_org.id, owner.id).await.unwrap(),
        None
    );
    let reader = w
        .core
        .create_key(
            Actor::Operator,
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    let who = auth(&w, &bearer(reader.secret.expose())).await.unwrap();
    let e = w
        .core
        .create_org_with_key(&who, "Nope", &w.ctx)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::MissingScope(Scope::OrganizationWrite)));
}

use creapic_core::store::OrgStore;

#[tokio::test]
async fn jobs_through_the_service_reserve_capture_and_refund() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    w.core
        .grant(Actor::Operator, org.id, 5, "seed", &w.ctx)
        .await
        .unwrap();
    let key = w
        .core
        .create_key(
            Actor::Operator,
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    let who = auth(&w, &bearer(key.secret.expose())).await.unwrap();
    let scene = JobSpec {
        kind: JobKind::Scene,
        inputs: vec!["{}".into()],
        unit_cost: Credits::new(1).unwrap(),
    };
    let e = w.core.submit_job(&who, scene, "scene-1").await.unwrap_err();
    assert!(matches!(e, Error::MissingScope(Scope::SceneRender)));
    let bulk = JobSpec {
        kind: JobKind::Bulk,
        inputs: vec!["a sunset".into(), "a city".into(), "a forest".into()],
        unit_cost: Credits::new(1).unwrap(),
    };
    let queued = w
        .core
        .submit_job(&who, bulk.clone(), "bulk-1")
        .await
        .unwrap();
    assert_eq!(queued.balance.get(), 2);
    let replay = w
        .core
        .submit_job(&who, bulk.clone(), "bulk-1")
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(
        w.core.balance(org.id).await.unwrap().get(),
        2,
        "a retry is not charged again"
    );
    let e = w.core.submit_job(&who, bulk, "bulk-2").await.unwrap_err();
    assert_eq!(e.to_string(), "Insufficient credits");

    let worker = WorkerId::new("worker-1").unwrap();
    let job = w
        .core
        .claim_job(&worker, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.id, queued.job.id);
    let ok = |n: u32| ItemOutcome::Succeeded {
        output: format!("img-{n}.png"),
    };
    w.core.finish_item(job.id, &worker, 0, ok(0)).await.unwrap();
    w.core.finish_item(job.id, &worker, 1, ok(1)).await.unwrap();
    let failed = ItemOutcome::Failed(ItemError::new("provider_timeout", "timed out"));
    w.core
        .finish_item(job.id, &worker, 2, failed)
        .await
        .unwrap();
    let done = w.core.complete_job(job.id, &worker).await.unwrap();
    assert_eq!(done.status, JobStatus::Partial);
    assert_eq!(
        w.core.balance(org.id).await.unwrap().get(),
        3,
        "the failed item was refunded"
    );
    let seen = w.core.job(&who, job.id).await.unwrap();
    assert_eq!(seen.succeeded(), 2);
    let e = w
        .core
        .claim_job(&worker, Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_request", "leases are bounded");
}

#[tokio::test]
async fn grants_are_audited_and_only_owners_or_the_operator_grant() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let admin = w.core.ensure_user("a@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    w.core
        .set_role(Actor::Operator, org.id, admin.id, Role::Admin, &w.ctx)
        .await
        .unwrap();
    let e = w
        .core
        .grant(Actor::User(admin.id), org.id, 10, "g", &w.ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
    w.core
        .grant(Actor::User(owner.id), org.id, 10, "g", &w.ctx)
        .await
        .unwrap();
    let again = w
        .core
        .grant(Actor::User(owner.id), org.id, 10, "g", &w.ctx)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(w.core.balance(org.id).await.unwrap().get(), 10);
    let e = w
        .core
        .grant(Actor::Operator, org.id, 0, "zero", &w.ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_request");
    let log = w
        .core
        .audit(Actor::Operator, &AuditQuery::all(org.id))
        .await
        .unwrap();
    let grants = log
        .items
        .iter()
        .filter(|r| r.event.action == AuditAction::CreditsGranted)
        .count();
    assert_eq!(grants, 1, "a replayed grant is not audited twice");
    let e = w.core.debit(org.id, 11, "d").await.unwrap_err();
    assert_eq!(e.code(), "insufficient_credits");
    let page = w
        .core
        .entries(org.id, None, PageLimit::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn audit_events_older_than_the_retention_are_purged() {
    let w = world();
    let owner = w.core.ensure_user("o@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    w.clock.advance(Duration::from_secs(89 * 24 * 3600));
    w.core
        .create_key(
            Actor::Operator,
            org.id,
            spec(&[Scope::ImageGeneration]),
            &w.ctx,
        )
        .await
        .unwrap();
    assert_eq!(
        w.core.purge_audit().await.unwrap(),
        0,
        "nothing is 90 days old yet"
    );
    w.clock.advance(Duration::from_secs(2 * 24 * 3600));
    assert_eq!(
        w.core.purge_audit().await.unwrap(),
        1,
        "the org.created event is now 91 days old"
    );
    let log = w
        .core
        .audit(Actor::Operator, &AuditQuery::all(org.id))
        .await
        .unwrap();
    assert_eq!(log.items.len(), 1);
    assert_eq!(log.items[0].event.action, AuditAction::KeyCreated);
}

#[tokio::test]
async fn generations_are_recorded_under_their_hold_and_read_per_organization() {
    use creapic_core::generation::{AspectRatio, GenerationParams, Quality};
    use creapic_core::id::GenerationId;

    let w = world();
    let owner = w.core.ensure_user("g@example.com").await.unwrap();
    let mut keys = Vec::new();
    for name in ["Acme", "Other"] {
        let org = w
            .core
            .create_org(name, owner.id, Actor::Operator, &w.ctx)
            .await
            .unwrap();
        w.core
            .grant(Actor::Operator, org.id, 10, "seed", &w.ctx)
            .await
            .unwrap();
        let key = w
            .core
            .create_key(
                Actor::Operator,
                org.id,
                spec(&[Scope::ImageGeneration]),
                &w.ctx,
            )
            .await
            .unwrap();
        keys.push(auth(&w, &bearer(key.secret.expose())).await.unwrap());
    }
    let (who, other) = (keys[0], keys[1]);
    let params = || GenerationParams {
        prompt: r#"{"subject":"a fox"}"#.into(),
        aspect_ratio: AspectRatio::Portrait4x5,
        quality: Quality::Standard,
    };
    let hold = w
        .core
        .reserve(who.org, 2, None, "r-1")
        .await
        .unwrap()
        .hold
        .unwrap()
        .id;
    // Not yet paid: recording it as completed is refused, nothing stored.
    let early = w
        .core
        .record_completed_generation(
            who.org,
            hold,
            params(),
            "a.png".into(),
            Credits::new(2).unwrap(),
        )
        .await;
    assert!(matches!(early, Err(Error::InvalidState(_))), "{early:?}");
    w.core.capture(who.org, hold, 2, "c-1").await.unwrap();
    let record = w
        .core
        .record_completed_generation(
            who.org,
            hold,
            params(),
            "a.png".into(),
            Credits::new(2).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(record.id, GenerationId::of_hold(hold));
    assert_eq!(record.created_at, w.clock.now());
    // A repeat (a resumed attempt) later on answers with the first record.
    w.clock.advance(Duration::from_secs(5));
    let again = w
        .core
        .record_completed_generation(
            who.org,
            hold,
            params(),
            "a.png".into(),
            Credits::new(2).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again, record);
    assert_eq!(w.core.generation(&who, record.id).await.unwrap(), record);
    let hidden = w.core.generation(&other, record.id).await;
    assert!(
        matches!(
            hidden,
            Err(Error::NotFound {
                resource: "generation"
            })
        ),
        "{hidden:?}"
    );
    // Another organization cannot record over a hold it does not own.
    let stolen = w
        .core
        .record_failed_generation(other.org, hold, params(), "provider_failed")
        .await;
    assert!(matches!(stolen, Err(Error::NotFound { .. })), "{stolen:?}");

    // A failed generation: recorded only once its hold is released whole.
    let failed = w
        .core
        .reserve(who.org, 2, None, "r-2")
        .await
        .unwrap()
        .hold
        .unwrap()
        .id;
    let early = w
        .core
        .record_failed_generation(who.org, failed, params(), "provider_failed")
        .await;
    assert!(matches!(early, Err(Error::InvalidState(_))), "{early:?}");
    w.core.release(who.org, failed, None, "x-2").await.unwrap();
    let record = w
        .core
        .record_failed_generation(who.org, failed, params(), "provider_failed")
        .await
        .unwrap();
    assert_eq!(record.outcome.status(), "failed");
    assert_eq!(record.outcome.tokens(), Credits::ZERO);
    assert_eq!(
        w.core.balance(who.org).await.unwrap(),
        Credits::new(8).unwrap()
    );
}

/// The membership rules of issue #17 item 4, through the service: who may add, re-role and
/// remove whom, the hole of `set_role` closed (an admin could demote an owner), and the last
/// owner kept against everyone, the operator too.
#[tokio::test]
async fn membership_rules_hold_for_every_actor() {
    let w = world();
    let owner = w.core.ensure_user("owner@example.com").await.unwrap();
    let outsider = w.core.ensure_user("outsider@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Acme", owner.id, Actor::Operator, &w.ctx)
        .await
        .unwrap();
    let o = Actor::User(owner.id);
    let admin = w
        .core
        .add_member(o, org.id, "Admin@Example.com", Role::Admin, &w.ctx)
        .await
        .unwrap();
    assert_eq!(admin.user.email.as_str(), "admin@example.com");
    assert_eq!(admin.role, Role::Admin);
    let a = Actor::User(admin.user.id);
    // An admin adds plain members only; adding a member twice is `already_member`.
    let member = w
        .core
        .add_member(a, org.id, "member@example.com", Role::Member, &w.ctx)
        .await
        .unwrap();
    let code = |r: Result<creapic_core::org::Member, Error>| r.unwrap_err().code();
    assert_eq!(
        code(
            w.core
                .add_member(a, org.id, "member@example.com", Role::Member, &w.ctx)
                .await
        ),
        "already_member"
    );
    assert_eq!(
        code(
            w.core
                .add_member(a, org.id, "new-admin@example.com", Role::Admin, &w.ctx)
                .await
        ),
        "forbidden"
    );
    assert!(
        w.core
            .store()
            .user_by_email(&creapic_core::org::Email::new("new-admin@example.com").unwrap())
            .await
            .unwrap()
            .is_none(),
        "nobody is created for a refused addition"
    );
    // The hole: an admin could set an owner (or another admin) to member. No longer.
    assert_eq!(
        code(
            w.core
                .set_role(a, org.id, owner.id, Role::Member, &w.ctx)
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            w.core
                .change_role(a, org.id, owner.id, Role::Member, &w.ctx)
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(w.core.remove_member(a, org.id, owner.id, &w.ctx).await),
        "forbidden"
    );
    assert_eq!(
        code(
            w.core
                .change_role(a, org.id, member.user.id, Role::Admin, &w.ctx)
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        w.core.store().role(org.id, owner.id).await.unwrap(),
        Some(Role::Owner)
    );
    // Members change nothing; outsiders are told the organization does not exist.
    let m = Actor::User(member.user.id);
    assert_eq!(
        code(
            w.core
                .add_member(m, org.id, "x@example.com", Role::Member, &w.ctx)
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(w.core.remove_member(m, org.id, admin.user.id, &w.ctx).await),
        "forbidden"
    );
    let x = Actor::User(outsider.id);
    assert_eq!(
        code(
            w.core
                .change_role(x, org.id, member.user.id, Role::Member, &w.ctx)
                .await
        ),
        "not_found"
    );
    assert_eq!(
        w.core
            .members(x, org.id, None, PageLimit::default())
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    // Any member reads the members.
    let listed = w
        .core
        .members(m, org.id, None, PageLimit::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);
    // The last owner stays, whoever asks; a second owner lets the first go.
    for by in [o, Actor::Operator] {
        assert_eq!(
            code(
                w.core
                    .change_role(by, org.id, owner.id, Role::Admin, &w.ctx)
                    .await
            ),
            "last_owner"
        );
        assert_eq!(
            code(w.core.remove_member(by, org.id, owner.id, &w.ctx).await),
            "last_owner"
        );
    }
    w.core
        .change_role(o, org.id, admin.user.id, Role::Owner, &w.ctx)
        .await
        .unwrap();
    let removed = w
        .core
        .remove_member(o, org.id, owner.id, &w.ctx)
        .await
        .unwrap();
    assert_eq!(removed.role, Role::Owner);
    assert_eq!(
        code(w.core.remove_member(a, org.id, owner.id, &w.ctx).await),
        "not_found"
    );
    // An admin removes a plain member; the events name the user and the role.
    let now_admin_owner = Actor::User(admin.user.id);
    w.core
        .remove_member(now_admin_owner, org.id, member.user.id, &w.ctx)
        .await
        .unwrap();
    let events = w
        .core
        .audit(Actor::Operator, &AuditQuery::all(org.id))
        .await
        .unwrap();
    let removed: Vec<_> = events
        .items
        .iter()
        .filter(|r| r.event.action == AuditAction::MemberRemoved)
        .map(|r| r.event.detail.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        removed,
        [
            format!("user={} role=owner", owner.id),
            format!("user={} role=member", member.user.id)
        ]
    );
    let orgs = w
        .core
        .organizations_of(admin.user.id, None, PageLimit::default())
        .await
        .unwrap();
    assert_eq!(
        orgs.items
            .iter()
            .map(|(o, r)| (o.id, *r))
            .collect::<Vec<_>>(),
        [(org.id, Role::Owner)]
    );
}
