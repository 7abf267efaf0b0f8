//! What bad keys cost: the authenticator's memory of refused keys and its per-address budget of
//! failed authentications, over the in-memory store with a manual clock. Store lookups are
//! counted by the authenticator itself (`Authenticator::store_lookups`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::auth::AuthConfig;
use creapic_core::clock::{ManualClock, Timestamp};
use creapic_core::key::{KeyMode, generate_key};
use creapic_core::org::Organization;
use creapic_core::random::{RandomSource, SeededRandom};
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::memory::MemoryStore;
use creapic_core::{CoreConfig, Creapic, Error, KeySpec};

struct World {
    core: Creapic<MemoryStore>,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    org: Organization,
    ctx: RequestContext,
}

async fn world() -> World {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_800_000_000_000)));
    let store = Arc::new(MemoryStore::new());
    let core = Creapic::builder(Arc::clone(&store))
        .clock(clock.clone())
        .random(Arc::new(SeededRandom::new(42)))
        .config(CoreConfig::default())
        .build();
    let ctx = RequestContext::new(Some([203, 0, 113, 7].into()), Some("tests/1.0"));
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    World {
        core,
        store,
        clock,
        org,
        ctx,
    }
}

fn spec() -> KeySpec {
    KeySpec {
        name: "Production".into(),
        scopes: ScopeSet::new([Scope::ImageGeneration]).unwrap(),
        mode: KeyMode::Live,
        expires_at: None,
    }
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

async fn from(w: &World, key: &str, client: Option<IpAddr>) -> Result<(), Error> {
    w.core
        .authenticate_from(Some(format!("Bearer {key}").as_bytes()), None, client)
        .await
        .map(|_| ())
}

fn random_key(rng: &dyn RandomSource) -> String {
    generate_key(KeyMode::Live, rng).expose().to_owned()
}

fn lookups(w: &World) -> u64 {
    w.core.authenticator().store_lookups()
}

#[tokio::test]
async fn ten_thousand_random_keys_from_one_client_cost_a_bounded_number_of_lookups() {
    let w = world().await;
    let burst = u64::from(AuthConfig::default().failures_burst);
    let valid = w
        .core
        .create_key(Actor::Operator, w.org.id, spec(), &w.ctx)
        .await
        .unwrap();
    let valid = valid.secret.expose().to_owned();
    from(&w, &valid, ip("198.51.100.9")).await.unwrap();
    let before = lookups(&w);
    let rng = SeededRandom::new(9);
    let (mut refused, mut limited) = (0u64, 0u64);
    for _ in 0..10_000 {
        match from(&w, &random_key(&rng), ip("198.51.100.9")).await {
            Err(Error::InvalidKey) => refused += 1,
            Err(Error::TooManyAuthFailures { retry_after }) => {
                assert!(retry_after > Duration::ZERO);
                limited += 1;
            }
            other => panic!("a random key: {other:?}"),
        }
    }
    let spent = lookups(&w) - before;
    assert!(
        spent <= burst,
        "{spent} store lookups for 10,000 random keys"
    );
    assert_eq!((refused, limited), (spent, 10_000 - spent));
    // The limited client's warm key still works, and so does its cached key once stale (this
    // process verified it: its refresh is not charged to the address).
    from(&w, &valid, ip("198.51.100.9")).await.unwrap();
    w.clock.advance(AuthConfig::default().cache_ttl);
    from(&w, &valid, ip("198.51.100.9")).await.unwrap();
    // Another client is not affected.
    let other = from(&w, &random_key(&rng), ip("198.51.100.10")).await;
    assert!(matches!(other, Err(Error::InvalidKey)), "{other:?}");
    // A whole IPv6 /64 is one client.
    let before = lookups(&w);
    for i in 0..1_000u32 {
        let addr = format!("2001:db8:1:2:{:x}:{:x}::1", i >> 8, i & 0xff);
        let _ = from(&w, &random_key(&rng), ip(&addr)).await;
    }
    assert!(lookups(&w) - before <= burst, "one /64, many addresses");
    // The budget refills: one more lookup per interval.
    w.clock.advance(AuthConfig::default().failure_interval);
    let again = from(&w, &random_key(&rng), ip("198.51.100.9")).await;
    assert!(matches!(again, Err(Error::InvalidKey)), "{again:?}");
    let next = from(&w, &random_key(&rng), ip("198.51.100.9")).await;
    assert_eq!(next.unwrap_err().code(), "too_many_auth_failures");
}

#[tokio::test]
async fn a_repeated_bad_key_is_refused_from_memory_until_its_ttl() {
    let w = world().await;
    let bad = random_key(&SeededRandom::new(3));
    let before = lookups(&w);
    for _ in 0..100 {
        assert!(matches!(from(&w, &bad, None).await, Err(Error::InvalidKey)));
    }
    assert_eq!(lookups(&w) - before, 1, "one lookup, then the memory of it");
    w.clock.advance(AuthConfig::default().miss_ttl);
    assert!(matches!(from(&w, &bad, None).await, Err(Error::InvalidKey)));
    assert_eq!(lookups(&w) - before, 2, "asked again once the miss expired");
    // A deleted key is remembered as refused too.
    let key = w
        .core
        .create_key(Actor::Operator, w.org.id, spec(), &w.ctx)
        .await
        .unwrap();
    w.core
        .delete_key(Actor::Operator, w.org.id, key.key.id, &w.ctx)
        .await
        .unwrap();
    let before = lookups(&w);
    for _ in 0..10 {
        let r = from(&w, key.secret.expose(), None).await;
        assert!(matches!(r, Err(Error::InvalidKey)));
    }
    assert_eq!(lookups(&w) - before, 1);
}

#[tokio::test]
async fn a_key_created_after_its_miss_works_at_once_through_this_process() {
    let w = world().await;
    // A process whose randomness we can replay: its next key is known before it exists.
    let seed = 77;
    let creator = Creapic::builder(Arc::clone(&w.store))
        .clock(w.clock.clone())
        .random(Arc::new(SeededRandom::new(seed)))
        .build();
    let predicted = random_key(&SeededRandom::new(seed));
    let refused = creator
        .authenticate(Some(format!("Bearer {predicted}").as_bytes()), None)
        .await;
    assert!(matches!(refused, Err(Error::InvalidKey)), "{refused:?}");
    let created = creator
        .create_key(Actor::Operator, w.org.id, spec(), &w.ctx)
        .await
        .unwrap();
    assert_eq!(created.secret.expose(), predicted);
    creator
        .authenticate(Some(format!("Bearer {predicted}").as_bytes()), None)
        .await
        .expect("the creating process forgets its miss when the key is stored");

    // Another process that missed the same key first learns of it within the miss TTL.
    let seed = 78;
    let predicted = random_key(&SeededRandom::new(seed));
    assert!(from(&w, &predicted, None).await.is_err());
    let elsewhere = Creapic::builder(Arc::clone(&w.store))
        .clock(w.clock.clone())
        .random(Arc::new(SeededRandom::new(seed)))
        .build();
    elsewhere
        .create_key(Actor::Operator, w.org.id, spec(), &w.ctx)
        .await
        .unwrap();
    assert!(
        from(&w, &predicted, None).await.is_err(),
        "still remembered"
    );
    w.clock.advance(AuthConfig::default().miss_ttl);
    from(&w, &predicted, None)
        .await
        .expect("known once the miss expired");
}

#[tokio::test]
async fn a_full_address_table_shares_one_budget_instead_of_growing() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_800_000_000_000)));
    let config = CoreConfig {
        auth: AuthConfig {
            failure_addresses_max: 16,
            miss_capacity: 8,
            ..AuthConfig::default()
        },
        ..CoreConfig::default()
    };
    let core = Creapic::builder(Arc::new(MemoryStore::new()))
        .clock(clock.clone())
        .config(config)
        .build();
    let rng = SeededRandom::new(5);
    for i in 0..10_000u32 {
        let addr: IpAddr = std::net::Ipv4Addr::from(0x0a00_0000 + i).into();
        let key = random_key(&rng);
        let _ = core
            .authenticate_from(Some(format!("Bearer {key}").as_bytes()), None, Some(addr))
            .await;
    }
    let spent = core.authenticator().store_lookups();
    let burst = u64::from(AuthConfig::default().failures_burst);
    assert!(
        spent <= 16 * burst + burst,
        "16 tracked addresses and one shared budget: {spent}"
    );
}

/// The in-memory store's keys, answered after a delay: a database under load.
struct SlowKeys {
    inner: Arc<MemoryStore>,
    delay: Duration,
}

#[async_trait::async_trait]
impl creapic_core::store::KeyStore for SlowKeys {
    async fn insert_key(
        &self,
        key: &creapic_core::key::NewKey,
        audit: &creapic_core::audit::AuditEvent,
    ) -> creapic_core::Result<()> {
        self.inner.insert_key(key, audit).await
    }
    async fn key_by_digest(
        &self,
        digest: &creapic_core::key::KeyDigest,
    ) -> creapic_core::Result<Option<creapic_core::key::ApiKey>> {
        tokio::time::sleep(self.delay).await;
        self.inner.key_by_digest(digest).await
    }
    async fn key(
        &self,
        org: creapic_core::id::OrgId,
        id: creapic_core::id::KeyId,
    ) -> creapic_core::Result<Option<creapic_core::key::ApiKey>> {
        self.inner.key(org, id).await
    }
    async fn key_by_id(
        &self,
        id: creapic_core::id::KeyId,
    ) -> creapic_core::Result<Option<creapic_core::key::ApiKey>> {
        self.inner.key_by_id(id).await
    }
    async fn list_keys(
        &self,
        org: creapic_core::id::OrgId,
        query: &creapic_core::store::KeyQuery,
    ) -> creapic_core::Result<
        creapic_core::page::Page<creapic_core::key::ApiKey, creapic_core::id::KeyId>,
    > {
        self.inner.list_keys(org, query).await
    }
    async fn count_active_keys(&self, org: creapic_core::id::OrgId) -> creapic_core::Result<u64> {
        self.inner.count_active_keys(org).await
    }
    async fn delete_key(
        &self,
        org: creapic_core::id::OrgId,
        id: creapic_core::id::KeyId,
        at: Timestamp,
        audit: &creapic_core::audit::AuditEvent,
    ) -> creapic_core::Result<Option<creapic_core::key::ApiKey>> {
        self.inner.delete_key(org, id, at, audit).await
    }
    async fn record_key_usage(
        &self,
        usage: &[creapic_core::store::KeyUsage],
    ) -> creapic_core::Result<()> {
        self.inner.record_key_usage(usage).await
    }
}

/// A burst of requests with a valid key this process has not verified yet — more than the
/// failed-authentication budget, all at once, from one address, while the store is slow — is
/// one store lookup and every request passes (it used to be 429 past the 20th). A burst with an
/// unknown key is one lookup and one charge: the address can still try another key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_with_one_cold_key_is_one_lookup_and_never_refused() {
    use creapic_core::auth::Authenticator;
    let w = world().await;
    let created = w
        .core
        .create_key(Actor::Operator, w.org.id, spec(), &w.ctx)
        .await
        .unwrap();
    let good = created.secret.expose().to_owned();
    let auth = Arc::new(Authenticator::new(
        Arc::new(SlowKeys {
            inner: Arc::clone(&w.store),
            delay: Duration::from_millis(100),
        }),
        w.clock.clone(),
        Arc::new(SeededRandom::new(9)),
        AuthConfig::default(),
    ));
    let burst = 3 * AuthConfig::default().failures_burst as usize;
    let run = |key: String| {
        let tasks: Vec<_> = (0..burst)
            .map(|_| {
                let (auth, key) = (Arc::clone(&auth), key.clone());
                tokio::spawn(async move {
                    auth.authenticate_from(
                        Some(format!("Bearer {key}").as_bytes()),
                        None,
                        ip("198.51.100.20"),
                    )
                    .await
                    .map(|p| p.key)
                })
            })
            .collect();
        async move {
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.unwrap());
            }
            results
        }
    };
    let results = run(good).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().ok() == Some(&created.key.id)),
        "{results:?}"
    );
    assert_eq!(auth.store_lookups(), 1, "one lookup for the whole burst");

    let rng = SeededRandom::new(11);
    let results = run(random_key(&rng)).await;
    assert!(
        results.iter().all(|r| matches!(r, Err(Error::InvalidKey))),
        "{results:?}"
    );
    assert_eq!(
        auth.store_lookups(),
        2,
        "one lookup for the unknown key's burst"
    );
    let next = auth
        .authenticate_from(
            Some(format!("Bearer {}", random_key(&rng)).as_bytes()),
            None,
            ip("198.51.100.20"),
        )
        .await;
    assert!(
        matches!(next, Err(Error::InvalidKey)),
        "the burst was charged once, not {burst} times: {next:?}"
    );
}
