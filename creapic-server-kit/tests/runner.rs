//! The job runner against the in-memory store: credits captured per finished image, refunds for
//! failed and canceled items, crash recovery without double charges, graceful hand-back,
//! concurrency limits, test-mode isolation from the live provider, scenes and webhooks.
//!
//! Core's time is a `ManualClock` (leases expire only when a test says so); the runner's own
//! sleeps are real but short, and every wait is bounded.
// Test helpers outside #[test] functions unwrap too: a failure is the test's answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use creapic_core::audit::{Actor, RequestContext};
use creapic_core::clock::{ManualClock, Timestamp};
use creapic_core::id::{JobId, OrgId};
use creapic_core::job::{FinishItem, ItemStatus, Job, JobKind, JobStatus};
use creapic_core::key::KeyMode;
use creapic_core::ledger::{Credits, EntryKind, LedgerEntry};
use creapic_core::page::PageLimit;
use creapic_core::random::SeededRandom;
use creapic_core::scope::ScopeSet;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_core::testing::Fixture;
use creapic_core::{Creapic, JobSpec, KeySpec, Principal};
use creapic_server_kit::generation::Error;
use creapic_server_kit::generation::item::ItemOutput;
use creapic_server_kit::generation::media::{MediaStore, MediaType, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::prompt::RuleComposer;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::provider::{GeneratedImage, ImageProvider, ImageRequest};
use creapic_server_kit::generation::retry::RetryPolicy;
use creapic_server_kit::generation::runner::{Runner, RunnerConfig, RunnerHandle};
use creapic_server_kit::generation::scene::{Layer, SceneSpec};
use creapic_server_kit::generation::webhook::{
    StaticEndpoints, WebhookConfig, WebhookEndpoint, WebhookSecret,
};
use tokio::sync::Semaphore;

const CREDITS: u64 = 1000;
const UNIT: u64 = 2;
const LEASE: Duration = Duration::from_secs(60);

struct World {
    core: Arc<Creapic<MemoryStore>>,
    clock: Arc<ManualClock>,
    media: MediaStore,
    live: Principal,
    test: Principal,
}

async fn world() -> World {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_800_000_000_000)));
    let core = Arc::new(
        Creapic::builder(Arc::new(MemoryStore::new()))
            .clock(clock.clone())
            .random(Arc::new(SeededRandom::new(7)))
            .build(),
    );
    let ctx = RequestContext::default();
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    core.grant(Actor::Operator, org.id, CREDITS, "seed", &ctx)
        .await
        .unwrap();
    let mut keys = Vec::new();
    for mode in [KeyMode::Live, KeyMode::Test] {
        let spec = KeySpec {
            name: format!("{} key", mode.as_str()),
            scopes: ScopeSet::all(),
            mode,
            expires_at: None,
        };
        let created = core
            .create_key(Actor::Operator, org.id, spec, &ctx)
            .await
            .unwrap();
        let header = format!("Bearer {}", created.secret.expose());
        keys.push(
            core.authenticate(Some(header.as_bytes()), None)
                .await
                .unwrap(),
        );
    }
    let test = keys.pop().unwrap();
    let live = keys.pop().unwrap();
    World {
        core,
        clock,
        media: MediaStore::in_memory(SigningKey::generate()),
        live,
        test,
    }
}

fn small() -> OfflineRenderer {
    OfflineRenderer::with_long_sides(64, 96)
}

fn config(name: &str) -> RunnerConfig {
    RunnerConfig {
        worker_id: Some(name.into()),
        lease: LEASE,
        // Long enough that no heartbeat runs during a test unless it waits for one.
        heartbeat: Duration::from_secs(30),
        poll_interval: Duration::from_millis(10),
        jobs_max: 4,
        org_jobs_max: 2,
        concurrency_max: 4,
        org_concurrency_max: 4,
        job_claims_max: 5,
        store_retry: RetryPolicy::none(),
        hand_back_max: Duration::from_secs(5),
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts_max: 3,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(5),
    }
}

/// A pipeline whose live provider is `live` and whose offline renderer is small.
fn pipeline(w: &World, live: Arc<dyn ImageProvider>) -> Pipeline {
    Pipeline::new(Arc::new(RuleComposer), live, w.media.clone())
        .with_offline_renderer(small())
        .with_retry(fast_retry())
}

fn start(w: &World, live: Arc<dyn ImageProvider>, name: &str) -> RunnerHandle {
    Runner::new(Arc::clone(&w.core), pipeline(w, live), config(name))
        .start()
        .unwrap()
}

async fn submit(w: &World, who: &Principal, prompts: &[&str], key: &str) -> JobId {
    let spec = JobSpec {
        kind: JobKind::Bulk,
        inputs: prompts.iter().map(|p| (*p).to_owned()).collect(),
        unit_cost: Credits::new(UNIT).unwrap(),
    };
    w.core.submit_job(who, spec, key).await.unwrap().job.id
}

/// Asserts that the job is on its first attempt and leased to `worker`.
async fn assert_held(w: &World, id: JobId, worker: &str, why: &str) {
    let held = w.core.job(&w.live, id).await.unwrap();
    assert_eq!(held.attempts, 1, "{why}");
    assert_eq!(
        held.lease.map(|l| l.worker.as_str().to_owned()).as_deref(),
        Some(worker),
        "{why}"
    );
}

/// Polls the job until `done` holds (at most 10 s).
async fn wait_for(w: &World, who: &Principal, id: JobId, done: impl Fn(&Job) -> bool) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = w.core.job(who, id).await.unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; job is {job:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn terminal(w: &World, who: &Principal, id: JobId) -> Job {
    wait_for(w, who, id, |j| j.status.is_terminal()).await
}

async fn entries(w: &World, org: OrgId) -> Vec<LedgerEntry> {
    let page = w.core.entries(org, None, PageLimit::max()).await.unwrap();
    assert!(page.next.is_none());
    page.items
}

/// Checks the ledger invariant and that each item of `job` was captured or released exactly
/// once; returns (captured items, released items).
async fn charged_once(w: &World, job: &Job) -> (usize, usize) {
    let store: Arc<dyn Store> = w.core.store().clone();
    Fixture::new(store)
        .assert_ledger_consistent(job.org)
        .await
        .unwrap();
    let mut per_item: HashMap<String, Vec<EntryKind>> = HashMap::new();
    for e in entries(w, job.org).await {
        if e.job == Some(job.id)
            || e.idempotency_key
                .as_str()
                .starts_with(&format!("job:{}", job.id))
        {
            per_item
                .entry(e.idempotency_key.as_str().to_owned())
                .or_default()
                .push(e.kind);
        }
    }
    let (mut captured, mut released) = (0, 0);
    for item in &job.items {
        let key = FinishItem::ledger_key(job.id, item.index);
        let kinds = per_item.get(key.as_str()).cloned().unwrap_or_default();
        match item.status {
            ItemStatus::Succeeded => {
                assert_eq!(kinds, [EntryKind::Capture], "item {}", item.index);
                captured += 1;
            }
            ItemStatus::Failed => {
                assert_eq!(kinds, [EntryKind::Release], "item {}", item.index);
                released += 1;
            }
            _ => assert!(kinds.is_empty(), "item {}: {kinds:?}", item.index),
        }
    }
    (captured, released)
}

// ----- providers standing in for remote APIs -----

/// Refuses prompts whose subject mentions "forbidden"; counts calls; optionally fails the
/// first call of every prompt with a transient error; optionally blocks prompts mentioning
/// "slow" until released.
#[derive(Debug, Default)]
struct StandIn {
    calls: AtomicUsize,
    transient_once: bool,
    seen: Mutex<HashMap<String, usize>>,
    gate: Option<Arc<Semaphore>>,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
    delay: Duration,
}

impl StandIn {
    fn gated() -> (Arc<Self>, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let p = StandIn {
            gate: Some(Arc::clone(&gate)),
            ..StandIn::default()
        };
        (Arc::new(p), gate)
    }
}

#[async_trait]
impl ImageProvider for StandIn {
    fn name(&self) -> &'static str {
        "stand-in"
    }

    async fn generate(&self, req: &ImageRequest) -> Result<GeneratedImage, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.in_flight_max.fetch_max(now, Ordering::SeqCst);
        let _guard = Decrement(&self.in_flight);
        let subject = req.prompt["subject"].as_str().unwrap_or("").to_owned();
        if let Some(gate) = &self.gate
            && subject.contains("slow")
        {
            gate.acquire().await.unwrap().forget();
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if subject.contains("forbidden") {
            return Err(Error::ProviderBlocked {
                provider: "stand-in",
                reason: "SAFETY".into(),
            });
        }
        if self.transient_once {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(subject.clone()).or_default();
            *n += 1;
            if *n == 1 {
                return Err(Error::ProviderUnavailable {
                    provider: "stand-in",
                    message: "HTTP 503".into(),
                });
            }
        }
        small().generate(req).await
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct AlwaysDown;

#[async_trait]
impl ImageProvider for AlwaysDown {
    fn name(&self) -> &'static str {
        "down"
    }

    async fn generate(&self, _: &ImageRequest) -> Result<GeneratedImage, Error> {
        Err(Error::ProviderFailed {
            provider: "down",
            message: "HTTP 401: bad key".into(),
        })
    }
}

// ----- tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_completes_and_captures_exactly_the_succeeded_items() {
    let w = world().await;
    let runner = start(&w, Arc::new(small()), "r1");
    let id = submit(&w, &w.live, &["a lemon", "a lime", "an orange"], "bulk-1").await;
    runner.wake();
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(charged_once(&w, &job).await, (3, 0));
    assert_eq!(
        w.core.balance(job.org).await.unwrap().get(),
        CREDITS - 3 * UNIT
    );
    // Every output names a stored PNG of the requested size and the JSON prompt that made it.
    for item in &job.items {
        let out = ItemOutput::parse(item.output.as_deref().unwrap()).unwrap();
        assert_eq!(
            (out.width, out.height, out.provider.as_str()),
            (64, 64, "offline")
        );
        let img = w.media.get(job.org, &out.media).await.unwrap();
        assert_eq!(img.media_type, MediaType::Png);
        let decoded = image::load_from_memory(&img.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 64));
        let prompt = w.media.get(job.org, &out.prompt).await.unwrap();
        let prompt: serde_json::Value = serde_json::from_slice(&prompt.bytes).unwrap();
        assert_eq!(prompt["aspectRatio"], "1:1");
        assert!(item.input.contains(prompt["subject"].as_str().unwrap()));
    }
    let stats = runner.shutdown(Duration::from_secs(1)).await;
    assert_eq!(stats.completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_items_are_refunded_and_transient_failures_retried() {
    let w = world().await;
    let provider = Arc::new(StandIn {
        transient_once: true,
        ..StandIn::default()
    });
    let runner = start(&w, provider.clone(), "r1");
    let id = submit(
        &w,
        &w.live,
        &["a calm lake", "something forbidden", "a red kite"],
        "bulk-2",
    )
    .await;
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Partial);
    assert_eq!(charged_once(&w, &job).await, (2, 1));
    assert_eq!(
        w.core.balance(job.org).await.unwrap().get(),
        CREDITS - 2 * UNIT
    );
    let failed = &job.items[1];
    assert_eq!(failed.error.as_ref().unwrap().code, "provider_blocked");
    // The two good prompts failed once (503) and succeeded on retry: 2 × 2 calls; the blocked
    // one was not retried.
    assert_eq!(provider.calls.load(Ordering::SeqCst), 5);
    drop(runner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_runner_loses_nothing_and_nothing_is_charged_twice() {
    let w = world().await;
    let (gated, gate) = StandIn::gated();
    let a = start(&w, gated.clone(), "runner-a");
    let id = submit(
        &w,
        &w.live,
        &["one", "two", "a slow three", "four"],
        "bulk-crash",
    )
    .await;
    // Runner A finishes what it can and hangs on the slow item.
    let mid = wait_for(&w, &w.live, id, |j| j.succeeded() == 3).await;
    assert_eq!(mid.status, JobStatus::Running);
    assert_eq!(mid.items[2].status, ItemStatus::Pending);
    drop(a); // the crash

    // Nobody can take the job while A's lease stands...
    let b = start(&w, Arc::new(small()), "runner-b");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_held(
        &w,
        id,
        "runner-a",
        "a crash hands nothing back: the lease stays the dead runner's until it lapses",
    )
    .await;
    // ...and once it lapses, B finishes only what was left.
    w.clock.advance(LEASE + Duration::from_secs(1));
    b.wake();
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.attempts, 2);
    assert_eq!(charged_once(&w, &job).await, (4, 0));
    assert_eq!(
        w.core.balance(job.org).await.unwrap().get(),
        CREDITS - 4 * UNIT
    );
    gate.add_permits(10);
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_lost_its_lease_cannot_charge_again() {
    let w = world().await;
    let (gated, gate) = StandIn::gated();
    // One job at a time: while A is stuck on this job its claim loop has no free slot, so once
    // the lease lapses it is B, not A re-claiming its own job, that takes it over.
    let a = Runner::new(
        Arc::clone(&w.core),
        pipeline(&w, gated.clone()),
        RunnerConfig {
            jobs_max: 1,
            ..config("runner-a")
        },
    )
    .start()
    .unwrap();
    let id = submit(&w, &w.live, &["a slow one", "a slow two"], "bulk-zombie").await;
    wait_for(&w, &w.live, id, |j| j.status == JobStatus::Running).await;
    // A is alive but stuck; its lease lapses and B takes the job over and finishes it.
    w.clock.advance(LEASE + Duration::from_secs(1));
    let b = start(&w, Arc::new(small()), "runner-b");
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Completed);
    // A wakes up with finished images and reports them: core refuses, nothing moves.
    gate.add_permits(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.stats().abandoned == 0 {
        assert!(tokio::time::Instant::now() < deadline, "A never noticed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = w.core.job(&w.live, id).await.unwrap();
    assert_eq!(after, job);
    assert_eq!(charged_once(&w, &after).await, (2, 0));
    assert_eq!(
        w.core.balance(job.org).await.unwrap().get(),
        CREDITS - 2 * UNIT
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_refunds_what_has_not_finished() {
    let w = world().await;
    let (gated, gate) = StandIn::gated();
    let runner = start(&w, gated.clone(), "r1");
    let id = submit(
        &w,
        &w.live,
        &["done fast", "a slow one", "a slow two"],
        "bulk-cancel",
    )
    .await;
    wait_for(&w, &w.live, id, |j| j.succeeded() == 1).await;
    let canceled = w.core.cancel_job(&w.live, id).await.unwrap();
    assert_eq!(canceled.status, JobStatus::Canceled);
    assert_eq!(
        w.core.balance(canceled.org).await.unwrap().get(),
        CREDITS - UNIT
    );
    // The runner finishes its generations, is refused, and lets go.
    gate.add_permits(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runner.stats().abandoned == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let job = w.core.job(&w.live, id).await.unwrap();
    assert_eq!(job.status, JobStatus::Canceled);
    assert_eq!(charged_once(&w, &job).await, (1, 0));
    assert_eq!(job.items[1].status, ItemStatus::Canceled);
    assert_eq!(w.core.balance(job.org).await.unwrap().get(), CREDITS - UNIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_leases_back() {
    let w = world().await;
    let (gated, _gate) = StandIn::gated();
    let a = start(&w, gated.clone(), "runner-a");
    let id = submit(&w, &w.live, &["quick", "a slow one"], "bulk-handback").await;
    wait_for(&w, &w.live, id, |j| j.succeeded() == 1).await;
    let stats = a.shutdown(Duration::from_millis(50)).await;
    assert_eq!((stats.completed, stats.handed_back), (0, 1));
    // Handed back: claimable at once, without the clock moving (no lease to wait out), and
    // the attempt it was on is not counted.
    let back = w.core.job(&w.live, id).await.unwrap();
    assert!(back.lease.is_none());
    assert_eq!(back.attempts, 0);
    let b = start(&w, Arc::new(small()), "runner-b");
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(charged_once(&w, &job).await, (2, 0));
    let stats = b.shutdown(Duration::from_secs(1)).await;
    assert_eq!(stats.completed, 1);
}

/// Shutdown finishes the items that are generating and starts no other: with two items in
/// flight and two waiting for a permit, the first two are reported (and charged) and the job is
/// handed back at once with the other two pending, long before the grace period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_items_in_flight_and_hands_back_the_rest() {
    let w = world().await;
    let (gated, gate) = StandIn::gated();
    let a = Runner::new(
        Arc::clone(&w.core),
        pipeline(&w, gated.clone()),
        RunnerConfig {
            concurrency_max: 2,
            ..config("runner-a")
        },
    )
    .start()
    .unwrap();
    let id = submit(
        &w,
        &w.live,
        &["slow one", "slow two", "slow three", "slow four"],
        "bulk-drain",
    )
    .await;
    // Every item waits at the gate once it has a permit: two hold both permits, two wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gated.in_flight.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "items never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = tokio::spawn(a.shutdown(Duration::from_secs(60)));
    // Draining has begun before the gated items are let through (bounded wait for the flag).
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(2);
    let stats = tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("shutdown returned long before its grace period")
        .unwrap();
    assert_eq!((stats.completed, stats.handed_back), (0, 1));
    assert_eq!(
        gated.calls.load(Ordering::SeqCst),
        2,
        "no item started after draining began"
    );
    let back = w.core.job(&w.live, id).await.unwrap();
    assert!(back.lease.is_none(), "handed back: claimable at once");
    assert_eq!(back.succeeded(), 2);
    assert_eq!(
        back.items
            .iter()
            .filter(|i| i.status == ItemStatus::Pending)
            .count(),
        2
    );
    // The next runner does only what was left; every item is charged once.
    let b = start(&w, Arc::new(small()), "runner-b");
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(charged_once(&w, &job).await, (4, 0));
    assert_eq!(b.shutdown(Duration::from_secs(1)).await.completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_keys_always_use_the_offline_renderer() {
    let w = world().await;
    let runner = start(&w, Arc::new(AlwaysDown), "r1");
    let test_job = submit(&w, &w.test, &["a test image"], "bulk-test").await;
    let live_job = submit(&w, &w.live, &["a live image"], "bulk-live").await;
    let t = terminal(&w, &w.test, test_job).await;
    let l = terminal(&w, &w.live, live_job).await;
    assert_eq!(t.status, JobStatus::Completed);
    let out = ItemOutput::parse(t.items[0].output.as_deref().unwrap()).unwrap();
    assert_eq!(out.provider, "offline");
    assert_eq!(l.status, JobStatus::Failed);
    assert_eq!(l.items[0].error.as_ref().unwrap().code, "provider_failed");
    assert_eq!(charged_once(&w, &l).await, (0, 1));
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_limited_globally_and_per_organization() {
    let w = world().await;
    let provider = Arc::new(StandIn {
        delay: Duration::from_millis(15),
        ..StandIn::default()
    });
    let mut cfg = config("r1");
    cfg.concurrency_max = 3;
    cfg.org_concurrency_max = 2;
    let runner = Runner::new(Arc::clone(&w.core), pipeline(&w, provider.clone()), cfg)
        .start()
        .unwrap();
    let prompts: Vec<String> = (0..8).map(|i| format!("prompt {i}")).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let a = submit(&w, &w.live, &refs, "bulk-a").await;
    let b = submit(&w, &w.live, &refs, "bulk-b").await;
    terminal(&w, &w.live, a).await;
    terminal(&w, &w.live, b).await;
    // One organization: its limit (2) binds before the runner's (3).
    assert_eq!(provider.in_flight_max.load(Ordering::SeqCst), 2);

    // Two organizations: together they reach the runner's limit (3), never more.
    provider.in_flight_max.store(0, Ordering::SeqCst);
    let other = second_org(&w).await;
    let a = submit(&w, &w.live, &refs, "bulk-c").await;
    let b = submit(&w, &other, &refs, "bulk-d").await;
    terminal(&w, &w.live, a).await;
    terminal(&w, &other, b).await;
    assert_eq!(provider.in_flight_max.load(Ordering::SeqCst), 3);
    runner.shutdown(Duration::from_secs(1)).await;
}

/// One organization's long queue never holds every job slot: the runner leases at most
/// `org_jobs_max` of its jobs, so another organization's job submitted behind the whole queue is
/// claimed and finished while the first organization's jobs are still generating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_queue_of_one_organization_leaves_room_for_anothers_job() {
    let w = world().await;
    let (provider, gate) = StandIn::gated();
    let runner = start(&w, provider.clone(), "r1");
    let mut queue = Vec::new();
    for i in 0..6 {
        queue.push(submit(&w, &w.live, &["slow lighthouse"], &format!("queue-{i}")).await);
    }
    let other = second_org(&w).await;
    let small = submit(&w, &other, &["a harbour"], "small").await;
    let done = terminal(&w, &other, small).await;
    assert_eq!(done.status, JobStatus::Completed, "{done:#?}");
    let mut leased = 0;
    for id in &queue {
        let job = w.core.job(&w.live, *id).await.unwrap();
        assert!(!job.status.is_terminal(), "the gate holds every slow item");
        leased += usize::from(job.lease.is_some());
    }
    assert!(
        leased <= 2,
        "at most org_jobs_max (2) of one organization's jobs are leased, not {leased}"
    );
    gate.add_permits(queue.len());
    for id in &queue {
        let job = terminal(&w, &w.live, *id).await;
        assert_eq!(charged_once(&w, &job).await, (1, 0));
    }
    runner.shutdown(Duration::from_secs(1)).await;
}

/// A second funded organization with a live key.
async fn second_org(w: &World) -> Principal {
    let ctx = RequestContext::default();
    let owner = w.core.ensure_user("other@example.com").await.unwrap();
    let org = w
        .core
        .create_org("Other", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    w.core
        .grant(Actor::Operator, org.id, CREDITS, "seed", &ctx)
        .await
        .unwrap();
    let spec = KeySpec {
        name: "other".into(),
        scopes: ScopeSet::all(),
        mode: KeyMode::Live,
        expires_at: None,
    };
    let created = w
        .core
        .create_key(Actor::Operator, org.id, spec, &ctx)
        .await
        .unwrap();
    let header = format!("Bearer {}", created.secret.expose());
    w.core
        .authenticate(Some(header.as_bytes()), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenes_composite_layers_of_the_same_organization_only() {
    let w = world().await;
    let runner = start(&w, Arc::new(small()), "r1");
    let org = w.live.org;
    let red = {
        let img = image::RgbaImage::from_pixel(8, 8, image::Rgba([255, 0, 0, 255]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let layer_key = w
        .media
        .put(org, red.clone().into(), MediaType::Png)
        .await
        .unwrap();
    let scene = |key| SceneSpec {
        background: serde_json::json!("a marble countertop"),
        layers: vec![Layer {
            media: key,
            upload: None,
            x: 0.25,
            y: 0.25,
            scale: 0.5,
            opacity: 1.0,
        }],
        aspect_ratio: creapic_core::generation::AspectRatio::Square,
        quality: creapic_core::generation::Quality::Standard,
    };
    let spec = JobSpec {
        kind: JobKind::Scene,
        inputs: vec![scene(layer_key).to_input().unwrap()],
        unit_cost: Credits::new(5).unwrap(),
    };
    let id = w
        .core
        .submit_job(&w.live, spec, "scene-1")
        .await
        .unwrap()
        .job
        .id;
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Completed);
    let out = ItemOutput::parse(job.items[0].output.as_deref().unwrap()).unwrap();
    let png = w.media.get(org, &out.media).await.unwrap();
    let img = image::load_from_memory(&png.bytes).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));
    assert_eq!(
        img.get_pixel(32, 32).0,
        [255, 0, 0],
        "the layer covers the centre"
    );
    assert_ne!(
        img.get_pixel(2, 2).0,
        [255, 0, 0],
        "the corner is background"
    );

    // A layer key of bytes this organization never stored is "not found": failed, refunded.
    let foreign =
        creapic_server_kit::generation::media::MediaKey::of(b"someone else's", MediaType::Png);
    let spec = JobSpec {
        kind: JobKind::Scene,
        inputs: vec![scene(foreign).to_input().unwrap()],
        unit_cost: Credits::new(5).unwrap(),
    };
    let id = w
        .core
        .submit_job(&w.live, spec, "scene-2")
        .await
        .unwrap()
        .job
        .id;
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.items[0].error.as_ref().unwrap().code, "not_found");
    assert_eq!(w.core.balance(org).await.unwrap().get(), CREDITS - 5);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_webhooks_are_signed_in_the_standard_webhooks_format() {
    let w = world().await;
    let secret = WebhookSecret::generate();
    let mut server = mockito::Server::new_async().await;
    let verifier = secret.clone();
    let clock = Arc::clone(&w.clock);
    let hook = server
        .mock("POST", "/hooks/creapic")
        .match_header("content-type", "application/json")
        .match_request(move |req| {
            let now = creapic_core::clock::Clock::now(clock.as_ref()).unix_ms() / 1000;
            let body = req.body().cloned().unwrap_or_default();
            let signed = verifier
                .verify(req.headers(), &body, now, Duration::from_secs(300))
                .is_ok();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            signed
                && json["type"] == "job.completed"
                && json["data"]["creditsUsed"] == 2 * UNIT
                && json["data"]["creditsRefunded"] == UNIT
        })
        .with_status(204)
        .expect(1)
        .create_async()
        .await;
    let endpoints = Arc::new(StaticEndpoints::new());
    endpoints.set(
        w.live.org,
        WebhookEndpoint::new(&format!("{}/hooks/creapic", server.url()), secret).unwrap(),
    );
    let provider = Arc::new(StandIn::default());
    let runner = Runner::new(Arc::clone(&w.core), pipeline(&w, provider), config("r1"))
        .with_webhooks(
            endpoints,
            // The receiver is on loopback: allowed explicitly (refused by default).
            WebhookConfig {
                destinations: creapic_server_kit::generation::webhook::Destinations::Any,
                ..WebhookConfig::default()
            },
        )
        .start()
        .unwrap();
    let id = submit(&w, &w.live, &["a", "b", "forbidden c"], "bulk-hook").await;
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Partial);
    runner.shutdown(Duration::from_secs(5)).await;
    hook.assert_async().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_job_leased() {
    let w = world().await;
    let (gated, gate) = StandIn::gated();
    let mut cfg = config("runner-a");
    cfg.heartbeat = Duration::from_millis(20);
    let a = Runner::new(Arc::clone(&w.core), pipeline(&w, gated.clone()), cfg)
        .start()
        .unwrap();
    let id = submit(&w, &w.live, &["a slow one"], "bulk-heartbeat").await;
    let claimed = wait_for(&w, &w.live, id, |j| j.status == JobStatus::Running).await;
    let first_expiry = claimed.lease.unwrap().expires_at;
    // Time passes in steps of a third of the lease; before each next step a heartbeat has
    // pushed the lease at least half a lease past now, so it never lapses.
    for _ in 0..6 {
        w.clock.advance(LEASE / 3);
        let now = creapic_core::clock::Clock::now(w.clock.as_ref());
        let wanted = now.plus(LEASE / 2);
        wait_for(&w, &w.live, id, |j| {
            j.lease.as_ref().is_some_and(|l| l.expires_at > wanted)
        })
        .await;
    }
    // Well past the first lease, another runner still cannot take the job.
    assert!(creapic_core::clock::Clock::now(w.clock.as_ref()) > first_expiry);
    let b = start(&w, Arc::new(small()), "runner-b");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_held(
        &w,
        id,
        "runner-a",
        "heartbeats keep the lease with its live runner",
    )
    .await;
    gate.add_permits(1);
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(a.shutdown(Duration::from_secs(1)).await.completed, 1);
    assert_eq!(b.shutdown(Duration::from_secs(1)).await.completed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_crashing_runners_is_failed_and_refunded() {
    let w = world().await;
    let (gated, _gate) = StandIn::gated();
    let id = submit(&w, &w.live, &["fine", "a slow poison pill"], "bulk-poison").await;
    let mut cfg = config("runner-a");
    cfg.job_claims_max = 1;
    let a = Runner::new(
        Arc::clone(&w.core),
        pipeline(&w, gated.clone()),
        cfg.clone(),
    )
    .start()
    .unwrap();
    wait_for(&w, &w.live, id, |j| j.succeeded() == 1).await;
    drop(a);
    w.clock.advance(LEASE + Duration::from_secs(1));
    cfg.worker_id = Some("runner-b".into());
    let b = Runner::new(Arc::clone(&w.core), pipeline(&w, gated), cfg)
        .start()
        .unwrap();
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Partial);
    assert_eq!(
        job.items[1].error.as_ref().unwrap().code,
        "job_attempts_exceeded"
    );
    assert_eq!(charged_once(&w, &job).await, (1, 1));
    assert_eq!(w.core.balance(job.org).await.unwrap().get(), CREDITS - UNIT);
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_reclaims_its_own_job_does_not_run_it_twice() {
    let w = world().await;
    let (gated, gate) = StandIn::gated();
    let a = start(&w, gated.clone(), "runner-a");
    let id = submit(&w, &w.live, &["a slow one"], "bulk-reclaim").await;
    wait_for(&w, &w.live, id, |j| j.status == JobStatus::Running).await;
    // A stall longer than the lease (no heartbeat ran): A's own claim loop takes the job again.
    w.clock.advance(LEASE + Duration::from_secs(1));
    a.wake();
    wait_for(&w, &w.live, id, |j| j.attempts == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        gated.calls.load(Ordering::SeqCst),
        1,
        "one generation, not two"
    );
    gate.add_permits(1);
    let job = terminal(&w, &w.live, id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(gated.calls.load(Ordering::SeqCst), 1);
    assert_eq!(charged_once(&w, &job).await, (1, 0));
    assert_eq!(a.shutdown(Duration::from_secs(1)).await.completed, 1);
}
