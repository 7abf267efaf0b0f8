//! Generation pipeline benchmarks: the offline renderer's images per second at each quality
//! (render + PNG encode of one image, one core), and the end-to-end latency of a 100-prompt bulk
//! job on the offline renderer (submit → completed) through the job runner and the in-memory
//! store. `bash bench/render.sh` runs this and rewrites the "Generation pipeline" section of
//! docs/benchmarks.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::generation::{AspectRatio, Quality};
use creapic_core::job::JobKind;
use creapic_core::key::KeyMode;
use creapic_core::ledger::Credits;
use creapic_core::scope::ScopeSet;
use creapic_core::store::memory::MemoryStore;
use creapic_core::{Creapic, JobSpec, KeySpec};
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::prompt::RuleComposer;
use creapic_server_kit::generation::provider::ImageRequest;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::runner::{Runner, RunnerConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Prompts as the rule composer makes them from varied text, so that every image differs.
fn prompts(n: usize) -> Vec<String> {
    let subjects = [
        "citrus mocktails with summer ingredients",
        "a neon night city street, cinematic",
        "watercolor spring garden with pink blossoms",
        "a minimal flat icon of a coffee cup",
        "golden hour over a mountain lake",
    ];
    (0..n)
        .map(|i| format!("{} #{i}", subjects[i % subjects.len()]))
        .collect()
}

fn offline_images(c: &mut Criterion) {
    let renderer = OfflineRenderer::new();
    let texts = prompts(64);
    let mut group = c.benchmark_group("offline_render");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    for quality in [Quality::Standard, Quality::Hd] {
        let requests: Vec<ImageRequest> = texts
            .iter()
            .map(|t| ImageRequest {
                prompt: RuleComposer
                    .compose_now(t, AspectRatio::Square, quality)
                    .to_value(),
                aspect_ratio: AspectRatio::Square,
                quality,
            })
            .collect();
        let mut i = 0;
        group.bench_function(quality.as_str(), |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                renderer.render_png(&requests[i]).unwrap()
            })
        });
    }
    group.finish();
}

fn bulk_job(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let core = Arc::new(Creapic::new(Arc::new(MemoryStore::new())));
    let ctx = RequestContext::default();
    let principal = rt.block_on(async {
        let owner = core.ensure_user("bench@example.com").await.unwrap();
        let org = core
            .create_org("Bench", owner.id, Actor::Operator, &ctx)
            .await
            .unwrap();
        core.grant(Actor::Operator, org.id, 1_000_000, "seed", &ctx)
            .await
            .unwrap();
        let key = core
            .create_key(
                Actor::Operator,
                org.id,
                KeySpec {
                    name: "bench".into(),
                    scopes: ScopeSet::all(),
                    mode: KeyMode::Live,
                    expires_at: None,
                },
                &ctx,
            )
            .await
            .unwrap();
        let header = format!("Bearer {}", key.secret.expose());
        core.authenticate(Some(header.as_bytes()), None)
            .await
            .unwrap()
    });
    let media = MediaStore::in_memory(SigningKey::generate());
    let config = RunnerConfig {
        poll_interval: Duration::from_millis(50),
        jobs_max: 4,
        concurrency_max: 4,
        org_concurrency_max: 4,
        ..RunnerConfig::default()
    };
    let runner = rt.block_on(async {
        Runner::new(Arc::clone(&core), Pipeline::offline(media), config)
            .start()
            .unwrap()
    });
    let texts = prompts(100);
    let mut n = 0u64;
    let mut group = c.benchmark_group("bulk_job");
    group.sample_size(10);
    group.bench_function("100_prompts_standard", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                // Different prompts each time: no image is a repeat of an earlier run's.
                let inputs = texts.iter().map(|t| format!("{t} run {n}")).collect();
                let spec = JobSpec {
                    kind: JobKind::Bulk,
                    inputs,
                    unit_cost: Credits::new(1).unwrap(),
                };
                total += rt.block_on(async {
                    let started = Instant::now();
                    let job = core
                        .submit_job(&principal, spec, &format!("bench-{n}"))
                        .await
                        .unwrap()
                        .job;
                    runner.wake();
                    loop {
                        let now = core.job(&principal, job.id).await.unwrap();
                        if now.status.is_terminal() {
                            assert_eq!(now.succeeded(), 100);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    started.elapsed()
                });
            }
            total
        })
    });
    group.finish();
    rt.block_on(runner.shutdown(Duration::from_secs(5)));
}

criterion_group!(benches, offline_images, bulk_job);
criterion_main!(benches);
