//! Races across replicas on PostgreSQL: two independent connection pools ("replicas") on one
//! database, as two server processes would have. Money, idempotency, job claims and key
//! revocation must hold across them, with nothing but the database to arbitrate.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::job::{JobKind, NewJob, WorkerId};
use creapic_core::key::KeyMode;
use creapic_core::ledger::{Credits, IdempotencyKey, LedgerOp};
use creapic_core::scope::ScopeSet;
use creapic_core::store::Store;
use creapic_core::testing::Fixture;
use creapic_core::{CoreConfig, Creapic, Error, KeySpec};

/// Two replicas of one fresh schema.
async fn replicas() -> (Arc<dyn Store>, Arc<dyn Store>) {
    let schema = support::fresh_schema();
    let a = support::pg_store(&schema, 16).await;
    support::drop_old_schemas(&a).await;
    let b = support::pg_store(&schema, 16).await;
    (Arc::new(a), Arc::new(b))
}

/// 240 concurrent debits and holds of 1 credit, spread over two replicas, against 50 credits:
/// exactly 50 are granted, the balance never goes negative, and balance = sum(ledger).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debits_and_holds_across_two_replicas_grant_exactly_the_balance() {
    let (a, b) = replicas().await;
    let fa = Arc::new(Fixture::new(Arc::clone(&a)));
    let fb = Arc::new(Fixture::new(Arc::clone(&b)));
    let org = fa.funded_org(50).await.expect("funded org");
    let watcher = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let mut lowest = u64::MAX;
            for _ in 0..200 {
                let balance = b.balance(org).await.expect("balance").get();
                lowest = lowest.min(balance);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            lowest
        })
    };
    let mut tasks = Vec::new();
    for i in 0..240u32 {
        let f = if i % 2 == 0 {
            Arc::clone(&fa)
        } else {
            Arc::clone(&fb)
        };
        tasks.push(tokio::spawn(async move {
            let op = if i % 4 < 2 {
                LedgerOp::Debit {
                    amount: Credits::amount(1).expect("amount"),
                }
            } else {
                LedgerOp::Reserve {
                    amount: Credits::amount(1).expect("amount"),
                    job: None,
                }
            };
            match f.apply(org, op, &format!("race-{i}")).await {
                Ok(r) => {
                    assert!(!r.replayed);
                    1u32
                }
                Err(Error::InsufficientCredits { .. }) => 0,
                Err(e) => panic!("unexpected error under contention: {e} ({})", e.code()),
            }
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await.expect("task");
    }
    assert_eq!(granted, 50, "exactly the balance must be granted");
    let _ = watcher.await.expect("watcher");
    assert_eq!(
        fb.assert_ledger_consistent(org).await.expect("ledger"),
        0,
        "balance = sum(ledger) = 0"
    );
}

/// The same request sent 40 times through two replicas at once is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_across_two_replicas_charge_once() {
    let (a, b) = replicas().await;
    let fa = Arc::new(Fixture::new(a));
    let fb = Arc::new(Fixture::new(b));
    let org = fa.funded_org(100).await.expect("org");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let f = if i % 2 == 0 {
            Arc::clone(&fa)
        } else {
            Arc::clone(&fb)
        };
        tasks.push(tokio::spawn(async move {
            f.apply(
                org,
                LedgerOp::Debit {
                    amount: Credits::amount(10).expect("amount"),
                },
                "same-request",
            )
            .await
            .expect("debit or replay")
        }));
    }
    let mut fresh = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.expect("task");
        ids.insert(r.entry.id);
        fresh += usize::from(!r.replayed);
    }
    assert_eq!((fresh, ids.len()), (1, 1), "one charge, one entry");
    assert_eq!(fa.assert_ledger_consistent(org).await.expect("ledger"), 90);
}

/// One hot organization: 64 tasks on each of two replicas debit 1–3 credits eight times each,
/// every debit sent twice at once under one key (so batches hold repeats), against 600 credits.
/// Group commit must keep every promise of a lone debit: each key is charged at most once and
/// both sends get the same entry, a refusal only when the request did not fit (and it never fits
/// later, since nothing is granted), the balance never negative, balance = sum(ledger).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_organization_debits_from_two_replicas_are_group_committed_exactly() {
    let (a, b) = replicas().await;
    let fa = Arc::new(Fixture::new(Arc::clone(&a)));
    let fb = Arc::new(Fixture::new(Arc::clone(&b)));
    let org = fa.funded_org(600).await.expect("funded org");
    let mut tasks = Vec::new();
    for t in 0..128u64 {
        let f = if t % 2 == 0 {
            Arc::clone(&fa)
        } else {
            Arc::clone(&fb)
        };
        tasks.push(tokio::spawn(async move {
            let mut charged = 0u64;
            let mut refused = Vec::new();
            for n in 0..8u64 {
                let amount = 1 + (t + n) % 3;
                let op = LedgerOp::Debit {
                    amount: Credits::amount(amount).expect("amount"),
                };
                let key = format!("hot-{t}-{n}");
                let (first, second) = tokio::join!(f.apply(org, op, &key), f.apply(org, op, &key));
                match (first, second) {
                    (Ok(x), Ok(y)) => {
                        assert_eq!(x.entry.id, y.entry.id, "one key, one entry");
                        assert_eq!(
                            usize::from(x.replayed) + usize::from(y.replayed),
                            1,
                            "exactly one of the two sends is the charge"
                        );
                        assert_eq!(x.entry.amount.get(), amount);
                        charged += amount;
                    }
                    (
                        Err(Error::InsufficientCredits { needed, available }),
                        Err(Error::InsufficientCredits { .. }),
                    ) => {
                        assert_eq!(needed, amount);
                        assert!(available < needed, "refused though it fit");
                        refused.push(amount);
                    }
                    (x, y) => panic!("the two sends of one key disagree: {x:?} / {y:?}"),
                }
            }
            (charged, refused)
        }));
    }
    let mut charged = 0;
    let mut refused = Vec::new();
    for t in tasks {
        let (c, r) = t.await.expect("task");
        charged += c;
        refused.extend(r);
    }
    let balance = fb.assert_ledger_consistent(org).await.expect("ledger");
    assert_eq!(balance, 600 - charged, "balance = grant - charges");
    assert!(
        refused.iter().all(|&needed| needed > balance),
        "a refused request would fit the final balance {balance}"
    );
    assert!(charged > 590, "the balance was used up: charged {charged}");
}

/// Workers on two replicas claim 30 jobs at once: each job goes to exactly one worker; a job
/// whose lease expired is reclaimed through the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_claims_across_two_replicas_never_share_a_job() {
    let (a, b) = replicas().await;
    let f = Arc::new(Fixture::new(Arc::clone(&a)));
    let org = f.funded_org(100).await.expect("org");
    for i in 0..30 {
        let job = NewJob {
            id: creapic_core::id::JobId::generate(f.now, f.rng.as_ref()),
            org,
            key: None,
            kind: JobKind::Bulk,
            mode: KeyMode::Live,
            inputs: vec![format!("prompt {i}")],
            unit_cost: Credits::new(1).expect("unit"),
            idempotency_key: IdempotencyKey::new(&format!("job-{i}")).expect("key"),
            hold_entry: f.entry_id(),
            at: f.now,
        };
        a.enqueue(&job).await.expect("enqueue");
    }
    let lease = f.now.plus(Duration::from_secs(60));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        let now = f.now;
        tasks.push(tokio::spawn(async move {
            let me = WorkerId::new(&format!("worker-{w}")).expect("worker");
            let mut got = Vec::new();
            for _ in 0..100 {
                match store.claim_job(&me, now, lease).await.expect("claim") {
                    Some(job) => got.push(job.id),
                    None => break,
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let unique: std::collections::HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 30, "every job claimed once");
    assert_eq!(unique.len(), 30, "no job claimed twice");
    // Every lease expires: a worker on replica B takes a job over, and only once.
    let later = lease.plus(Duration::from_millis(1));
    let taker = WorkerId::new("taker").expect("worker");
    let again = b
        .claim_job(&taker, later, later.plus(Duration::from_secs(60)))
        .await
        .expect("reclaim")
        .expect("an expired lease is claimable");
    assert_eq!(again.attempts, 2);
    assert_eq!(again.lease.map(|l| l.worker), Some(taker));
}

/// A key deleted through one replica is refused by the other within 1 s, although the other's
/// verification cache would trust it for a minute: the delete's NOTIFY drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_deleted_on_one_replica_is_refused_by_the_other_within_a_second() {
    let schema = support::fresh_schema();
    let store_a = Arc::new(support::pg_store(&schema, 4).await);
    let store_b = Arc::new(support::pg_store(&schema, 4).await);
    let mut config = CoreConfig::default();
    config.auth.cache_ttl = Duration::from_secs(60);
    let core_a = Creapic::builder(Arc::clone(&store_a))
        .config(config)
        .build();
    let core_b = Arc::new(
        Creapic::builder(Arc::clone(&store_b))
            .config(config)
            .build(),
    );
    let listener = store_b
        .spawn_revocation_listener_for(Arc::clone(&core_b))
        .await
        .expect("listener");

    let ctx = RequestContext::default();
    let owner = core_a.ensure_user("owner@example.com").await.expect("user");
    let org = core_a
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .expect("org");
    let spec = KeySpec {
        name: "replicated".into(),
        scopes: ScopeSet::all(),
        mode: KeyMode::Live,
        expires_at: None,
    };
    let created = core_a
        .create_key(Actor::User(owner.id), org.id, spec, &ctx)
        .await
        .expect("key");
    let header = format!("Bearer {}", created.secret.expose());
    let who = core_b
        .authenticate(Some(header.as_bytes()), None)
        .await
        .expect("replica B verifies and caches the key");
    assert_eq!(who.key, created.key.id);

    core_a
        .delete_key(Actor::User(owner.id), org.id, created.key.id, &ctx)
        .await
        .expect("delete on replica A");
    let deleted_at = Instant::now();
    let mut refused = None;
    while deleted_at.elapsed() < Duration::from_secs(1) {
        match core_b.authenticate(Some(header.as_bytes()), None).await {
            Err(Error::InvalidKey) => {
                refused = Some(deleted_at.elapsed());
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let took = refused.expect("replica B must refuse the deleted key within 1 s");
    assert!(took < Duration::from_secs(1), "{took:?}");
    listener.shutdown().await;
}

/// 120 holds of requests that died (older than `stale_hold_after`), swept by two replicas at
/// once while a third of them are settled by their own (slow, still alive) requests: every hold
/// ends either captured by its request or released by exactly one sweep, never both, a sweep
/// takes at most `STALE_HOLDS_PER_SWEEP`, fresh holds are left alone, and the ledger adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_holds_are_released_once_by_sweepers_on_two_replicas() {
    use creapic_core::clock::ManualClock;
    use creapic_core::service::STALE_HOLDS_PER_SWEEP;

    let (a, b) = replicas().await;
    let f = Arc::new(Fixture::new(Arc::clone(&a)));
    let org = f.funded_org(200).await.expect("funded org");
    let mut stale = Vec::new();
    for i in 0..120 {
        let r = f
            .apply(
                org,
                LedgerOp::Reserve {
                    amount: Credits::amount(1).expect("amount"),
                    job: None,
                },
                &format!("dead-{i}"),
            )
            .await
            .expect("reserve");
        stale.push(r.hold.expect("hold").id);
    }
    // A request still within its time: reserved 5 minutes before the sweepers' "now".
    let fresh = f
        .apply_at(
            org,
            LedgerOp::Reserve {
                amount: Credits::amount(7).expect("amount"),
                job: None,
            },
            "alive",
            f.now.plus(Duration::from_secs(15 * 60)),
        )
        .await
        .expect("fresh reserve")
        .hold
        .expect("hold")
        .id;
    let clock = Arc::new(ManualClock::new(f.now.plus(Duration::from_secs(20 * 60))));
    let replica = |store: &Arc<dyn Store>| {
        Arc::new(
            Creapic::builder(Arc::clone(store))
                .clock(Arc::clone(&clock) as Arc<dyn creapic_core::clock::Clock>)
                .config(CoreConfig {
                    stale_hold_after: Duration::from_secs(15 * 60),
                    ..CoreConfig::default()
                })
                .build(),
        )
    };
    let (ra, rb) = (replica(&a), replica(&b));
    let sweeper = |core: Arc<Creapic<dyn Store>>| {
        tokio::spawn(async move {
            let (mut total, mut largest) = (0u64, 0u64);
            for _ in 0..20 {
                let n = core.release_stale_holds().await.expect("sweep");
                total += n;
                largest = largest.max(n);
                if n == 0 {
                    break;
                }
            }
            (total, largest)
        })
    };
    let (sa, sb) = (sweeper(Arc::clone(&ra)), sweeper(Arc::clone(&rb)));
    // The slow requests settle their own holds meanwhile (capture), racing the sweeps.
    let mut captures = Vec::new();
    for (i, hold) in stale
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
    {
        let core = if i % 2 == 0 {
            Arc::clone(&ra)
        } else {
            Arc::clone(&rb)
        };
        captures.push(tokio::spawn(async move {
            core.capture(org, hold, 1, &format!("capture-{i}"))
                .await
                .is_ok()
        }));
    }
    let mut captured = 0u64;
    for c in captures {
        captured += u64::from(c.await.expect("capture task"));
    }
    let ((ta, la), (tb, lb)) = (sa.await.expect("sweeper a"), sb.await.expect("sweeper b"));
    assert!(
        la <= u64::from(STALE_HOLDS_PER_SWEEP) && lb <= u64::from(STALE_HOLDS_PER_SWEEP),
        "one sweep releases at most the bound: {la}, {lb}"
    );
    // Sweeps that ended early may leave a few for the next period: sweep until nothing is left.
    let mut rest = 0;
    loop {
        let n = ra.release_stale_holds().await.expect("last sweep");
        if n == 0 {
            break;
        }
        rest += n;
    }
    assert_eq!(
        ta + tb + rest + captured,
        120,
        "each abandoned hold released once or captured once (released {ta}+{tb}+{rest}, captured {captured})"
    );
    for hold in &stale {
        let h = a.hold(org, *hold).await.expect("hold").expect("exists");
        assert_eq!(h.remaining(), 0, "nothing left open in {hold}");
        assert!(
            h.captured.get() + h.released.get() == 1,
            "settled exactly once: {h:?}"
        );
    }
    let h = a.hold(org, fresh).await.expect("hold").expect("exists");
    assert_eq!(h.remaining(), 7, "a request within its time keeps its hold");
    let balance = f.assert_ledger_consistent(org).await.expect("ledger");
    assert_eq!(balance, 200 - captured - 7);
}

/// 40 key creations at once on two replicas for an organization allowed 10 active keys:
/// exactly 10 are created, the rest refused with `limit_exceeded`, none over the limit (the
/// count and the insert are one transaction holding the organization's row).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_key_creations_on_two_replicas_never_exceed_the_limit() {
    let (a, b) = replicas().await;
    let config = CoreConfig {
        keys_per_org_max: 10,
        ..CoreConfig::default()
    };
    let core_a = Arc::new(Creapic::builder(a).config(config).build());
    let core_b = Arc::new(Creapic::builder(b).config(config).build());
    let ctx = RequestContext::default();
    let owner = core_a.ensure_user("owner@example.com").await.expect("user");
    let org = core_a
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .expect("org");
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let core = if i % 2 == 0 {
            Arc::clone(&core_a)
        } else {
            Arc::clone(&core_b)
        };
        tasks.push(tokio::spawn(async move {
            let spec = KeySpec {
                name: format!("key {i}"),
                scopes: ScopeSet::all(),
                mode: KeyMode::Live,
                expires_at: None,
            };
            match core
                .create_key(Actor::Operator, org.id, spec, &RequestContext::default())
                .await
            {
                Ok(_) => 1u32,
                Err(Error::LimitExceeded { .. }) => 0,
                Err(e) => panic!("unexpected error under contention: {e} ({})", e.code()),
            }
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += t.await.expect("task");
    }
    assert_eq!(created, 10, "exactly the limit is created");
    let query = creapic_core::store::KeyQuery {
        include_deleted: false,
        after: None,
        limit: creapic_core::page::PageLimit::new(100).expect("limit"),
    };
    let active = core_b
        .list_keys(Actor::Operator, org.id, &query)
        .await
        .map(|p| p.items.len());
    assert_eq!(active.ok(), Some(10));
}
