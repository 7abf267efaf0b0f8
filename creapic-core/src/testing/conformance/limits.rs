//! Conformance of the limits the store enforces in its writing transaction: active keys per
//! organization and organizations per owner, under concurrent creations.

use std::sync::Arc;

use crate::error::Error;
use crate::store::Store;

use super::ok;

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
