//! Cancel against the runner, on memory, SQLite and PostgreSQL: a bulk job is canceled through
//! HTTP while the runner has images in flight, at a different moment each round. Whatever the
//! interleaving, an item is paid exactly when it succeeded (one capture), everything else comes
//! back in the cancel's step, an image finished after the cancel is never charged, and the
//! ledger still sums to the balance — also after the in-flight images have landed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{app_with_core, backends, body};
use creapic_core::Creapic;
use creapic_core::id::JobId;
use creapic_core::job::{FinishItem, ItemStatus, Job, JobStatus};
use creapic_core::ledger::EntryKind;
use creapic_core::page::PageLimit;
use creapic_core::scope::Scope;
use creapic_core::testing::Fixture;
use creapic_server_kit::KitConfig;
use creapic_server_kit::generation::Error;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::prompt::RuleComposer;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::provider::{GeneratedImage, ImageProvider, ImageRequest};
use creapic_server_kit::generation::runner::{Runner, RunnerConfig};
use serde_json::json;

const ITEMS: usize = 24;
const GRANT: u64 = 1_000;

/// The offline renderer, a few milliseconds slower per image (a remote provider, shortened).
#[derive(Debug)]
struct Slow(Duration);

#[async_trait]
impl ImageProvider for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    async fn generate(&self, req: &ImageRequest) -> Result<GeneratedImage, Error> {
        tokio::time::sleep(self.0).await;
        OfflineRenderer::with_long_sides(32, 48).generate(req).await
    }
}

/// Every item captured once if it succeeded, never otherwise; the hold closed with
/// captured + released = reserved; returns how many succeeded.
async fn paid_exactly_for_what_succeeded(
    name: &str,
    core: &Creapic<dyn creapic_core::store::Store>,
    job: &Job,
) -> usize {
    Fixture::new(core.store().clone())
        .assert_ledger_consistent(job.org)
        .await
        .unwrap();
    let entries = core.entries(job.org, None, PageLimit::max()).await.unwrap();
    let mut per_item: HashMap<String, Vec<EntryKind>> = HashMap::new();
    for e in &entries.items {
        per_item
            .entry(e.idempotency_key.as_str().to_owned())
            .or_default()
            .push(e.kind);
    }
    let mut succeeded = 0;
    for item in &job.items {
        let kinds = per_item
            .get(FinishItem::ledger_key(job.id, item.index).as_str())
            .cloned()
            .unwrap_or_default();
        match item.status {
            ItemStatus::Succeeded => {
                assert_eq!(kinds, [EntryKind::Capture], "{name}: item {}", item.index);
                assert!(item.output.is_some(), "{name}: item {}", item.index);
                succeeded += 1;
            }
            ItemStatus::Canceled => {
                assert!(kinds.is_empty(), "{name}: item {}: {kinds:?}", item.index)
            }
            other => panic!("{name}: item {} is {other:?} after a cancel", item.index),
        }
    }
    let hold = core
        .store()
        .hold(job.org, job.hold.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(hold.closed_at.is_some(), "{name}: the hold is closed");
    assert_eq!(
        (hold.captured.get(), hold.released.get()),
        (
            succeeded as u64 * job.unit_cost.get(),
            (ITEMS - succeeded) as u64 * job.unit_cost.get()
        ),
        "{name}"
    );
    succeeded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_the_runner_never_charges_an_image_it_did_not_deliver() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let media = MediaStore::in_memory(SigningKey::generate());
        let pipeline = Pipeline::new(
            Arc::new(RuleComposer),
            Arc::new(Slow(Duration::from_millis(15))),
            media,
        );
        let core: Arc<Creapic<dyn creapic_core::store::Store>> = Arc::new(Creapic::new(store));
        let app = app_with_core(core.clone(), KitConfig::default(), pipeline.clone()).await;
        let runner = Runner::new(
            core.clone(),
            pipeline,
            RunnerConfig {
                poll_interval: Duration::from_millis(5),
                concurrency_max: 4,
                org_concurrency_max: 4,
                ..RunnerConfig::default()
            },
        )
        .start()
        .unwrap();
        app.grant(app.org, GRANT).await;
        let key = app.key(&[Scope::ImageGeneration]).await;
        let mut outcomes = Vec::new();
        // Cancel at once, a little into the job, and further in.
        for (round, wait_ms) in [0u64, 10, 25, 40, 70].into_iter().enumerate() {
            let prompts: Vec<String> = (0..ITEMS).map(|i| format!("r{round} image {i}")).collect();
            let (status, _, submitted) = body(
                app.http
                    .post(app.url("/api/playground/images"))
                    .bearer_auth(&key)
                    .json(&json!({ "prompts": prompts }))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 202, "{name}: {submitted}");
            let id = JobId::parse(submitted["jobId"].as_str().unwrap()).unwrap();
            runner.wake();
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            let (status, _, canceled) = body(
                app.http
                    .post(app.url(&format!("/api/playground/images/{id}/cancel")))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            // A job that finished before the cancel arrived is 409; otherwise it is canceled.
            assert!(
                status == 200 || status == 409,
                "{name}: {status} {canceled}"
            );
            let header = format!("Bearer {key}");
            let principal = core
                .authenticate(Some(header.as_bytes()), None)
                .await
                .unwrap();
            let job = core.job(&principal, id).await.unwrap();
            if status == 200 {
                assert_eq!(job.status, JobStatus::Canceled, "{name}");
            }
            let at_cancel = paid_exactly_for_what_succeeded(name, &core, &job).await;
            // Images in flight at the cancel land now; none of them may be charged.
            tokio::time::sleep(Duration::from_millis(120)).await;
            let later = core.job(&principal, id).await.unwrap();
            assert_eq!(
                later.items, job.items,
                "{name}: nothing changes after a cancel"
            );
            assert_eq!(
                paid_exactly_for_what_succeeded(name, &core, &later).await,
                at_cancel,
                "{name}"
            );
            outcomes.push((status, at_cancel));
        }
        eprintln!("{name}: (status, delivered) per round: {outcomes:?}");
        let spent: u64 = outcomes.iter().map(|(_, n)| *n as u64).sum();
        assert_eq!(
            core.balance(app.org).await.unwrap().get(),
            GRANT - spent,
            "{name}: the balance is the grant minus the images delivered"
        );
        // The rounds did race: at least one cancel stopped a job part-way.
        assert!(
            outcomes
                .iter()
                .any(|(status, n)| *status == 200 && *n > 0 && *n < ITEMS),
            "{name}: {outcomes:?}"
        );
        runner.shutdown(Duration::from_secs(5)).await;
    }
}
