//! A profiling loop, not a measurement: job-status requests through `tower::ServiceExt::oneshot`
//! on a current-thread runtime, so that `valgrind --tool=callgrind` (or `perf`) sees one request's
//! server work many times and nothing else — no sockets, no load generator.
//!
//! `status_loop MODE N`, MODE one of:
//! - `bare`: the bare axum JSON handler of `benches/http.rs`;
//! - `kit`: the kit as `benches/http.rs` measures it (no subscriber, no metrics, a queued job read
//!   from the memory store);
//! - `serve`: the kit as `creapic serve` runs it — the same `tracing_subscriber::fmt` subscriber
//!   at `info` (to stderr: redirect it), the Prometheus recorder and `/metrics` enabled, an
//!   absolute public URL, the peer address in the request, and a finished job (served from the
//!   finished-jobs cache, with signed links).
//!
//! Runs 1,000 warm-up requests, then N in `measured` (never inlined), so
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*status_loop*measured*'`
//! counts exactly N requests. `bash bench/profile.sh` does that for each mode and prints
//! instructions per request.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::job::{ItemOutcome, JobKind, WorkerId};
use creapic_core::key::KeyMode;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_core::{Creapic, JobSpec, KeySpec, ledger::Credits};
use creapic_server_kit::generation::item::ItemOutput;
use creapic_server_kit::generation::media::{MediaKey, MediaStore, MediaType, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::{KitConfig, RateLimitConfig, ServiceBuilder};
use tower::ServiceExt as _;

struct Target {
    router: axum::Router,
    path: String,
    auth: Option<String>,
    peer: bool,
}

fn request(target: &Target) -> http::Request<axum::body::Body> {
    let mut req = http::Request::get(&target.path);
    if let Some(auth) = &target.auth {
        req = req.header("authorization", auth);
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    if target.peer {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
    }
    req
}

async fn one(target: &Target) {
    let resp = target
        .router
        .clone()
        .oneshot(request(target))
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let _ = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
}

/// The measured requests: a plain function (not an `async fn`, whose body would be inlined into
/// its caller's future), so callgrind can toggle collection on it.
#[inline(never)]
fn measured(rt: &tokio::runtime::Runtime, target: &Target, n: u32) {
    rt.block_on(async {
        for _ in 0..n {
            one(target).await;
        }
    });
}

fn bare() -> axum::Router {
    axum::Router::new().route(
        "/status",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!({"jobId": "01a213a3-8011-7410-9a39-3458a6da4de3", "status": "queued", "totalImages": 2, "completedImages": 0, "failedImages": 0, "creditsUsed": 0, "creditsRefunded": 0, "images": [{"index": 0, "prompt": "a lighthouse", "status": "pending", "url": null, "error": null}, {"index": 1, "prompt": "a harbour", "status": "pending", "url": null, "error": null}], "createdAt": "2026-11-25T17:00:00.000Z", "completedAt": null}))
        }),
    )
}

async fn kit(serve: bool) -> Target {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core = Arc::new(Creapic::new(store));
    let ctx = RequestContext::default();
    let owner = core.ensure_user("bench@example.com").await.unwrap();
    let org = core
        .create_org("Bench", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    core.grant(Actor::Operator, org.id, 10, "seed", &ctx)
        .await
        .unwrap();
    let spec = KeySpec {
        name: "bench".into(),
        scopes: ScopeSet::only(Scope::ImageGeneration),
        mode: KeyMode::Live,
        expires_at: None,
    };
    let key = core
        .create_key(Actor::Operator, org.id, spec, &ctx)
        .await
        .unwrap();
    let auth = format!("Bearer {}", key.secret.expose());
    let who = core
        .authenticate(Some(auth.as_bytes()), None)
        .await
        .unwrap();
    let spec = JobSpec {
        kind: JobKind::Bulk,
        inputs: vec!["a lighthouse".into(), "a harbour".into()],
        unit_cost: Credits::new(1).unwrap(),
    };
    let job = core.submit_job(&who, spec, "bench-job").await.unwrap();
    let mut config = KitConfig {
        rate_limit: RateLimitConfig {
            per_second: 10_000_000,
            burst: 10_000_000,
        },
        ..Default::default()
    };
    let media = MediaStore::in_memory(SigningKey::generate());
    let mut builder = ServiceBuilder::new(core.clone(), Pipeline::offline(media));
    if serve {
        // What `creapic serve` adds: its subscriber, the metrics recorder, absolute links, and
        // the job finished (two images), so the cache of finished jobs answers.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // As `creapic serve` writes its log: lines batched by a writer thread.
        let (writer, guard) =
            creapic_server_kit::log_writer::LogWriter::stderr().expect("log writer thread");
        // Lines still buffered at exit need not be written: the bench counts instructions.
        std::mem::forget(guard);
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::field::MakeExt::delimited(
                tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                    if field.name() == "message" {
                        write!(w, "{value:?}")
                    } else {
                        write!(w, "{field}={value:?}")
                    }
                }),
                " ",
            ))
            .init();
        let prometheus = creapic_server_kit::telemetry::prometheus_builder()
            .unwrap()
            .install_recorder()
            .unwrap();
        builder = builder.metrics(prometheus);
        config.public_url = Some("http://127.0.0.1:18481".into());
        let worker = WorkerId::new("profile").unwrap();
        let claimed = core
            .claim_job(&worker, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        for item in &claimed.items {
            let output = ItemOutput {
                media: MediaKey::of(item.input.as_bytes(), MediaType::Png),
                prompt: MediaKey::of(item.input.as_bytes(), MediaType::Json),
                content_type: "image/png".into(),
                width: 1024,
                height: 1024,
                provider: "offline".into(),
            };
            let outcome = ItemOutcome::Succeeded {
                output: output.to_output().unwrap(),
            };
            core.finish_item(claimed.id, &worker, item.index, outcome)
                .await
                .unwrap();
        }
        let done = core.complete_job(claimed.id, &worker).await.unwrap();
        assert!(done.status.is_terminal(), "{:?}", done.status);
    }
    Target {
        router: builder.config(config).build().into_router(),
        path: format!("/api/playground/images/{}", job.job.id),
        auth: Some(auth),
        peer: serve,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`: skip flags.
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().copied().unwrap_or("kit");
    let n: u32 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = rt.block_on(async {
        match mode {
            "bare" => Target {
                router: bare(),
                path: "/status".into(),
                auth: None,
                peer: false,
            },
            "kit" => kit(false).await,
            "serve" => kit(true).await,
            other => panic!("unknown mode {other}: bare | kit | serve"),
        }
    });
    rt.block_on(async {
        for _ in 0..1_000 {
            one(&target).await;
        }
    });
    let start = std::time::Instant::now();
    measured(&rt, &target, n);
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("PROFILE mode={mode} n={n} ns_per_request={ns:.0}");
}
