//! Faults injected under load, against the real server kit on loopback.
//!
//! - **PostgreSQL goes away and comes back.** The store reaches PostgreSQL through a loopback TCP
//!   proxy that the test cuts (every open connection dropped, new ones refused) and restores,
//!   while clients submit bulk jobs and generate images concurrently and a job runner works.
//!   The shared PostgreSQL server itself is never stopped: other tests use it at the same time.
//!   During the cut every answer is a 503 with `Retry-After` (never a 500); afterwards clients
//!   retry with the same `Idempotency-Key`, every job completes, and the ledger is exact:
//!   balance = sum of entries, no idempotency key twice, each item charged once, and the
//!   balance is what was granted minus what was delivered.
//! - **A runner killed mid-job** (its handle dropped while it holds a lease, on PostgreSQL with
//!   the real clock and a 1 s lease): a second runner finishes the job and each item is charged
//!   exactly once.
//! - **A provider timing out** (the OpenAI-compatible adapter against a mockito server that
//!   answers after the adapter's timeout): the job's items fail with `provider_timeout` and
//!   their credits come back.
//!
//! Bounded: the cut lasts 2 s, the load 5 s, every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestApp, body};
use creapic_core::id::OrgId;
use creapic_core::ledger::EntryKind;
use creapic_core::page::PageLimit;
use creapic_core::scope::Scope;
use creapic_core::store::{ConnectOptions, Store, connect};
use creapic_core::testing::Fixture;
use creapic_server_kit::KitConfig;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::retry::RetryPolicy;
use creapic_server_kit::generation::runner::{Runner, RunnerConfig, RunnerHandle};
use serde_json::{Value, json};

const PG: &str = "127.0.0.1:5432";

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| format!("postgres://postgres@{PG}/test"))
}

/// A schema named like the store tests' ones, so their cleanup of old schemas covers it.
fn fresh_schema() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "test_{secs}_{}",
        &uuid::Uuid::now_v7().simple().to_string()[16..]
    )
}

async fn pg_store(url: &str, schema: &str) -> Arc<dyn Store> {
    let options = ConnectOptions::default()
        .schema(schema)
        .max_connections(6)
        .acquire_timeout(Duration::from_millis(500));
    match connect(url, options).await {
        Ok(s) => s,
        Err(e) => panic!("PostgreSQL through {url} is required: {e}"),
    }
}

/// A loopback TCP proxy to PostgreSQL that can be cut and restored.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let pipes: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (flag, registry) = (Arc::clone(&up), Arc::clone(&pipes));
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(client); // refused: the database is "down"
                    continue;
                }
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(PG).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                registry.lock().unwrap().push(pipe.abort_handle());
            }
        });
        Proxy {
            addr,
            up,
            pipes,
            accept,
        }
    }

    fn url(&self) -> String {
        pg_url().replace(PG, &self.addr.to_string())
    }

    /// Every open connection dropped, new ones refused.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

fn pipeline() -> Pipeline {
    Pipeline::offline(MediaStore::in_memory(SigningKey::generate()))
        .with_offline_renderer(OfflineRenderer::with_long_sides(32, 48))
}

fn runner_config(name: &str, lease: Duration) -> RunnerConfig {
    RunnerConfig {
        worker_id: Some(name.into()),
        lease,
        heartbeat: lease / 3,
        poll_interval: Duration::from_millis(20),
        store_retry: RetryPolicy {
            attempts_max: 3,
            delay_min: Duration::from_millis(50),
            delay_max: Duration::from_millis(200),
        },
        ..RunnerConfig::default()
    }
}

fn start_runner(app: &TestApp, pipeline: Pipeline, config: RunnerConfig) -> RunnerHandle {
    Runner::new(Arc::clone(&app.core), pipeline, config)
        .start()
        .unwrap()
}

/// One request a client made, and how it was answered.
#[derive(Debug, Clone)]
struct Call {
    route: &'static str,
    idem: String,
    payload: Value,
    status: u16,
    retry_after: bool,
    body: Value,
}

async fn post(app: &TestApp, key: &str, route: &'static str, idem: &str, payload: &Value) -> Call {
    let (status, headers, b) = body(
        app.http
            .post(app.url(route))
            .bearer_auth(key)
            .header("idempotency-key", idem)
            .json(payload)
            .send()
            .await
            .unwrap(),
    )
    .await;
    Call {
        route,
        idem: idem.to_owned(),
        payload: payload.clone(),
        status,
        retry_after: headers.contains_key("retry-after"),
        body: b,
    }
}

/// Every entry of `org`, all pages.
async fn all_entries(store: &Arc<dyn Store>, org: OrgId) -> Vec<creapic_core::ledger::LedgerEntry> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.entries(org, after, PageLimit::max()).await.unwrap();
        out.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// Polls a job over HTTP until it is terminal (at most `wait`).
async fn wait_job(app: &TestApp, key: &str, job: &str, wait: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (status, _, b) = body(
            app.http
                .get(app.url(&format!("/api/playground/images/{job}")))
                .bearer_auth(key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if status == 200
            && ["completed", "failed", "canceled"].contains(&b["status"].as_str().unwrap_or(""))
        {
            return b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job} stuck: {status} {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cut_under_load_answers_503_and_loses_nothing() {
    const GRANTED: u64 = 10_000;
    let proxy = Proxy::start().await;
    let schema = fresh_schema();
    let store = pg_store(&proxy.url(), &schema).await;
    // A direct connection to the same schema, for the checks after the run.
    let direct = pg_store(&pg_url(), &schema).await;
    let mut config = KitConfig::default();
    // A request whose lock outlived the cut can be retried soon after.
    config.limits.idempotency_lock = Duration::from_secs(2);
    // The retry flood after the cut is the test's load, not abuse.
    config.rate_limit.per_second = 10_000;
    config.rate_limit.burst = 10_000;
    let pipeline = pipeline();
    let app = common::app_with_pipeline(store, config, pipeline.clone()).await;
    app.grant(app.org, GRANTED).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let runner = start_runner(
        &app,
        pipeline,
        runner_config("fault-runner", Duration::from_secs(2)),
    );

    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (app, key, stop) = (Arc::clone(&app), key.clone(), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let call = if i % 3 == 2 {
                    let payload = json!({"source": {"type": "text", "text": format!("client {c} image {i}")}});
                    post(&app, &key, "/api/public/images/generate", &format!("g-{c}-{i}"), &payload).await
                } else {
                    let payload = json!({"prompts": [format!("c{c} j{i} a"), format!("c{c} j{i} b")]});
                    post(&app, &key, "/api/playground/images", &format!("j-{c}-{i}"), &payload).await
                };
                calls.push(call);
                i += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            calls
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut calls = Vec::new();
    for c in clients {
        calls.extend(c.await.unwrap());
    }

    // During the run: 503 with Retry-After when the database was away, never another 5xx.
    let mut bad = Vec::new();
    let unavailable = calls.iter().filter(|c| c.status == 503).count();
    for c in &calls {
        if c.status >= 500 && c.status != 503 {
            bad.push(format!("{} {} → {} {}", c.route, c.idem, c.status, c.body));
        }
        if c.status == 503 && !c.retry_after {
            bad.push(format!("{} {} → 503 without Retry-After", c.route, c.idem));
        }
        if ![200, 202, 409, 503].contains(&c.status) {
            bad.push(format!("{} {} → {} {}", c.route, c.idem, c.status, c.body));
        }
    }
    assert!(
        bad.is_empty(),
        "bad answers under the fault:\n{}",
        bad.join("\n")
    );
    assert!(unavailable > 0, "the cut was seen by some request");
    assert!(
        calls.iter().filter(|c| c.status < 300).count() > 10,
        "the load ran"
    );

    // Afterwards: clients retry what failed, with the same key, until it is accepted (all
    // retries at once, as real clients would).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let retries = calls.into_iter().map(|c| {
        let (app, key) = (Arc::clone(&app), key.clone());
        async move {
            let mut c = c;
            while c.status == 503 || c.status == 409 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "retry never accepted: {c:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                c = post(&app, &key, c.route, &c.idem.clone(), &c.payload.clone()).await;
                assert!(c.status != 500, "{c:?}");
            }
            assert!(c.status == 200 || c.status == 202, "{c:?}");
            c
        }
    });
    let accepted: Vec<Call> = futures::future::join_all(retries).await;
    // Every job completes once the database is back.
    let mut spent = 0;
    for c in &accepted {
        if c.route == "/api/playground/images" {
            let job = c.body["jobId"].as_str().unwrap();
            let done = wait_job(&app, &key, job, Duration::from_secs(30)).await;
            assert_eq!(done["status"], "completed", "{done}");
            assert_eq!(done["completedImages"], 2, "{done}");
            assert_eq!(done["creditsUsed"], 2, "{done}");
            spent += 2;
        } else {
            spent += c.body["generation"]["tokensUsed"].as_u64().unwrap();
        }
    }
    drop(runner);

    // The ledger, read directly: consistent, no key twice, nothing lost or charged twice.
    let fx = Fixture::new(Arc::clone(&direct));
    let balance = fx.assert_ledger_consistent(app.org).await.unwrap();
    let entries = all_entries(&direct, app.org).await;
    let mut keys = HashSet::new();
    for e in &entries {
        assert!(
            keys.insert(e.idempotency_key.as_str().to_owned()),
            "{} twice",
            e.idempotency_key
        );
    }
    let open: u64 = {
        let mut holds: HashMap<_, u64> = HashMap::new();
        for e in &entries {
            if let (EntryKind::Hold, Some(h)) = (e.kind, e.hold) {
                holds.insert(h, 0);
            }
        }
        let mut open = 0;
        for h in holds.keys() {
            let hold = direct.hold(app.org, *h).await.unwrap().unwrap();
            open += hold.remaining();
        }
        open
    };
    assert_eq!(open, 0, "no credits left stranded in holds");
    assert_eq!(balance, GRANTED - spent, "granted - delivered = balance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_mid_job_is_finished_by_another_and_charged_once() {
    use creapic_server_kit::generation::provider::{GeneratedImage, ImageProvider, ImageRequest};

    /// The offline renderer, slowed down so a job is mid-way when its runner dies.
    #[derive(Debug)]
    struct Slow(OfflineRenderer);
    #[async_trait::async_trait]
    impl ImageProvider for Slow {
        fn name(&self) -> &'static str {
            "slow-offline"
        }

        async fn generate(
            &self,
            req: &ImageRequest,
        ) -> Result<GeneratedImage, creapic_server_kit::generation::Error> {
            tokio::time::sleep(Duration::from_millis(150)).await;
            self.0.generate(req).await
        }
    }

    let schema = fresh_schema();
    let store = pg_store(&pg_url(), &schema).await;
    let media = MediaStore::in_memory(SigningKey::generate());
    let slow = Pipeline::new(
        Arc::new(creapic_server_kit::generation::prompt::RuleComposer),
        Arc::new(Slow(OfflineRenderer::with_long_sides(32, 48))),
        media.clone(),
    )
    .with_offline_renderer(OfflineRenderer::with_long_sides(32, 48));
    let app =
        common::app_with_pipeline(Arc::clone(&store), KitConfig::default(), slow.clone()).await;
    app.grant(app.org, 100).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let prompts: Vec<String> = (0..8).map(|i| format!("item {i}")).collect();
    let call = post(
        &app,
        &key,
        "/api/playground/images",
        "killed-job",
        &json!({"prompts": prompts}),
    )
    .await;
    assert_eq!(call.status, 202, "{:?}", call.body);
    let job = call.body["jobId"].as_str().unwrap().to_owned();

    let mut one = runner_config("doomed", Duration::from_secs(1));
    one.concurrency_max = 1;
    let doomed = start_runner(&app, slow.clone(), one);
    // Kill it once it has finished some items but not all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, b) = body(
            app.http
                .get(app.url(&format!("/api/playground/images/{job}")))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if b["completedImages"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(b["status"], "running", "{b}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first runner never started: {b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(doomed); // the crash: tasks aborted, the lease is still held
    let rescuer = start_runner(&app, slow, runner_config("rescuer", Duration::from_secs(1)));
    let done = wait_job(&app, &key, &job, Duration::from_secs(20)).await;
    drop(rescuer);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["completedImages"], 8);
    assert_eq!(done["creditsUsed"], 8);
    let fx = Fixture::new(Arc::clone(&store));
    assert_eq!(fx.assert_ledger_consistent(app.org).await.unwrap(), 92);
    let entries = all_entries(&store, app.org).await;
    for i in 0..8 {
        let item_key = format!("job:{job}:item:{i}");
        let n = entries
            .iter()
            .filter(|e| e.idempotency_key.as_str() == item_key)
            .count();
        assert_eq!(n, 1, "item {i} charged {n} times");
    }
}

#[cfg(feature = "openai")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_times_out_fails_the_items_and_refunds_them() {
    use creapic_server_kit::generation::provider::HttpSettings;
    use creapic_server_kit::generation::provider::openai::{OpenAiConfig, OpenAiProvider};

    let mut server = mockito::Server::new_async().await;
    let slow = server
        .mock("POST", "/v1/images/generations")
        .with_chunked_body(|w| {
            std::thread::sleep(Duration::from_millis(600));
            w.write_all(b"{}")
        })
        .expect_at_least(1)
        .create_async()
        .await;
    let mut config = OpenAiConfig::new(None);
    config.base_url = server.url();
    config.http = HttpSettings {
        timeout: Duration::from_millis(150),
        connect_timeout: Duration::from_millis(150),
        ..HttpSettings::default()
    };
    let live = Arc::new(OpenAiProvider::new(config).unwrap());
    let pipeline = Pipeline::new(
        Arc::new(creapic_server_kit::generation::prompt::RuleComposer),
        live,
        MediaStore::in_memory(SigningKey::generate()),
    )
    .with_retry(RetryPolicy {
        attempts_max: 2,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(5),
    });
    let app = common::app_with_pipeline(
        Arc::new(creapic_core::store::memory::MemoryStore::new()),
        KitConfig::default(),
        pipeline.clone(),
    )
    .await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let runner = start_runner(
        &app,
        pipeline,
        runner_config("timeouts", Duration::from_secs(30)),
    );
    let call = post(
        &app,
        &key,
        "/api/playground/images",
        "slow-job",
        &json!({"prompts": ["a", "b", "c"]}),
    )
    .await;
    assert_eq!(call.status, 202, "{:?}", call.body);
    assert_eq!(
        app.core.balance(app.org).await.unwrap().get(),
        7,
        "reserved"
    );
    let job = call.body["jobId"].as_str().unwrap().to_owned();
    let done = wait_job(&app, &key, &job, Duration::from_secs(20)).await;
    drop(runner);
    slow.assert_async().await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["failedImages"], 3, "{done}");
    assert_eq!(done["creditsRefunded"], 3, "{done}");
    assert_eq!(done["creditsUsed"], 0, "{done}");
    for image in done["images"].as_array().unwrap() {
        assert_eq!(image["error"]["code"], "provider_timeout", "{image}");
    }
    let fx = Fixture::new(Arc::clone(app.core.store()));
    assert_eq!(
        fx.assert_ledger_consistent(app.org).await.unwrap(),
        10,
        "all refunded"
    );
}
