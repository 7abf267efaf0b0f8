//! Requests per second of an authenticated cheap route (bulk job status) through the kit,
//! against a bare axum JSON handler in the same binary, driven by the same load generator in the
//! same run. The ratio is the kit's overhead (authentication, rate limit, request id, tracing,
//! metrics, store read, JSON view) relative to the least a Rust HTTP handler can do.
//!
//! `bash bench/http.sh` runs it and writes the "HTTP (server kit)" section of docs/benchmarks.md.
//! Environment: `BENCH_SECS` (default 5), `BENCH_CONNECTIONS` (default 32).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::key::KeyMode;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_core::{Creapic, JobSpec, KeySpec, ledger::Credits};
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::{KitConfig, RateLimitConfig, ServiceBuilder};

struct Result {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

async fn load(url: String, auth: Option<String>, secs: u64, conns: usize) -> Result {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while Instant::now() < deadline && lat.len() < 5_000_000 {
                let start = Instant::now();
                let mut req = client.get(&url);
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(start.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Result {
        rps: all.len() as f64 / secs as f64,
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
        let conns: usize = std::env::var("BENCH_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
        // The kit, with a rate limit far above what the bench sends.
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let core = Arc::new(Creapic::new(store));
        let ctx = RequestContext::default();
        let owner = core.ensure_user("bench@example.com").await.unwrap();
        let org = core.create_org("Bench", owner.id, Actor::Operator, &ctx).await.unwrap();
        core.grant(Actor::Operator, org.id, 10, "seed", &ctx).await.unwrap();
        let spec = KeySpec { name: "bench".into(), scopes: ScopeSet::only(Scope::ImageGeneration), mode: KeyMode::Live, expires_at: None };
        let key = core.create_key(Actor::Operator, org.id, spec, &ctx).await.unwrap();
        let auth = format!("Bearer {}", key.secret.expose());
        let who = core.authenticate(Some(auth.as_bytes()), None).await.unwrap();
        let job = core
            .submit_job(&who, JobSpec { kind: creapic_core::job::JobKind::Bulk, inputs: vec!["a lighthouse".into(), "a harbour".into()], unit_cost: Credits::new(1).unwrap() }, "bench-job")
            .await
            .unwrap();
        let config = KitConfig { rate_limit: RateLimitConfig { per_second: 10_000_000, burst: 10_000_000 }, ..Default::default() };
        let kit = ServiceBuilder::new(core.clone(), Pipeline::offline(MediaStore::in_memory(SigningKey::generate())))
            .config(config)
            .build()
            .into_router();
        let kit_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kit_addr = kit_listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(kit_listener, kit).await.unwrap() });
        // The baseline: a bare axum handler returning a JSON document of similar size.
        let bare = axum::Router::new().route(
            "/status",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"jobId": "01a213a3-8011-7410-9a39-3458a6da4de3", "status": "queued", "totalImages": 2, "completedImages": 0, "failedImages": 0, "creditsUsed": 0, "creditsRefunded": 0, "images": [{"index": 0, "prompt": "a lighthouse", "status": "pending", "url": null, "error": null}, {"index": 1, "prompt": "a harbour", "status": "pending", "url": null, "error": null}], "createdAt": "2026-11-25T17:00:00.000Z", "completedAt": null}))
            }),
        );
        let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_addr = bare_listener.local_addr().unwrap();
        let served_bare = bare.clone();
        tokio::spawn(async move { axum::serve(bare_listener, served_bare).await.unwrap() });
        // Server CPU alone, no sockets: the same two routes through `tower::ServiceExt::oneshot`.
        {
            use tower::ServiceExt as _;
            let kit_router = ServiceBuilder::new(core.clone(), Pipeline::offline(MediaStore::in_memory(SigningKey::generate())))
                .config(KitConfig { rate_limit: RateLimitConfig { per_second: 10_000_000, burst: 10_000_000 }, ..Default::default() })
                .build()
                .into_router();
            let bare_router = bare.clone();
            let path = format!("/api/playground/images/{}", job.job.id);
            let n = 20_000u32;
            let mut best = (f64::MAX, f64::MAX);
            for _ in 0..3 {
                let start = Instant::now();
                for _ in 0..n {
                    let req = http::Request::get("/status").body(axum::body::Body::empty()).unwrap();
                    let resp = bare_router.clone().oneshot(req).await.unwrap();
                    let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
                }
                let bare_ns = start.elapsed().as_nanos() as f64 / f64::from(n);
                let start = Instant::now();
                for _ in 0..n {
                    let req = http::Request::get(&path).header("authorization", &auth).body(axum::body::Body::empty()).unwrap();
                    let resp = kit_router.clone().oneshot(req).await.unwrap();
                    assert!(resp.status().is_success());
                    let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
                }
                let kit_ns = start.elapsed().as_nanos() as f64 / f64::from(n);
                best = (best.0.min(bare_ns), best.1.min(kit_ns));
            }
            println!("BENCH inproc bare_ns={:.0} kit_ns={:.0} ratio={:.3}", best.0, best.1, best.0 / best.1);
        }
        let kit_url = format!("http://{kit_addr}/api/playground/images/{}", job.job.id);
        let bare_url = format!("http://{bare_addr}/status");
        // Warm up both, then measure alternately.
        load(bare_url.clone(), None, 1, conns).await;
        load(kit_url.clone(), Some(auth.clone()), 1, conns).await;
        let b = load(bare_url, None, secs, conns).await;
        let k = load(kit_url, Some(auth), secs, conns).await;
        println!("BENCH bare rps={:.0} p50_us={} p99_us={} errors={}", b.rps, b.p50.as_micros(), b.p99.as_micros(), b.errors);
        println!("BENCH kit rps={:.0} p50_us={} p99_us={} errors={}", k.rps, k.p50.as_micros(), k.p99.as_micros(), k.errors);
        println!("BENCH ratio={:.3} secs={secs} connections={conns}", k.rps / b.rps);
    });
}
