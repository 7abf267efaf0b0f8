//! Conformance of API keys: insert and lookup by digest and id, listing per organization oldest
//! first, unique digests and ids, the soft, idempotent and audited delete, tenancy, and the
//! last-used times written in one batch that never moves a time backwards.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditAction;
use crate::clock::Timestamp;
use crate::error::{Error, StoreErrorKind};
use crate::key::{KeyMode, generate_key};
use crate::page::PageLimit;
use crate::store::{KeyQuery, KeyUsage, Store};
use crate::testing::Fixture;

use super::ok;

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
