//! A host that mounts the kit the documented way (nested in an axum router) and starts
//! `Upkeep` gets every guarantee `creapic serve` gets, on SQLite and PostgreSQL (and memory):
//! a bulk job runs to completion, an abandoned request's hold is released (refunded), expired
//! idempotency records and audit events past their retention are purged, last-used times are
//! flushed; and `UpkeepHandle::shutdown` leaves no task running. Periods are shortened to tens
//! of milliseconds; retentions are crossed by moving the core's `ManualClock`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use creapic_core::audit::{Actor, AuditAction, AuditQuery, RequestContext};
use creapic_core::clock::{Clock, ManualClock, SystemClock};
use creapic_core::key::KeyMode;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::Store;
use creapic_core::{Creapic, KeySpec};
use creapic_server_kit::ServiceBuilder;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::runner::RunnerConfig;
use creapic_server_kit::upkeep::{Upkeep, UpkeepConfig};
use serde_json::json;

use common::{body, eventually, serve_nested};

/// Every period short, so a test sees several rounds in well under a second.
fn fast() -> UpkeepConfig {
    let period = Duration::from_millis(40);
    UpkeepConfig {
        usage_flush_period: period,
        purge_period: period,
        stale_hold_period: period,
        upload_sweep_period: period,
        upload_max_age: Duration::from_secs(60),
        metrics_upkeep_period: period,
        runner: Some(RunnerConfig {
            poll_interval: period,
            ..RunnerConfig::default()
        }),
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_starts_upkeep_keeps_every_promise_of_creapic_serve() {
    let (backends, _dir) = common::backends().await;
    for (name, store) in backends {
        keeps_every_promise(name, store).await;
    }
}

async fn keeps_every_promise(name: &str, store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let core: Arc<Creapic<dyn Store>> = Arc::new(
        Creapic::builder(store)
            .clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .build(),
    );
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let ctx = RequestContext::default();
    let org = core
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap()
        .id;
    core.grant(Actor::Operator, org, 50, "grant", &ctx)
        .await
        .unwrap();
    let created = core
        .create_key(
            Actor::Operator,
            org,
            KeySpec {
                name: "host".into(),
                scopes: ScopeSet::new([Scope::ImageGeneration]).unwrap(),
                mode: KeyMode::Live,
                expires_at: None,
            },
            &ctx,
        )
        .await
        .unwrap();
    let key = created.secret.expose().to_owned();
    let key_id = created.key.id;

    // The documented mount: the service nested in the host's router, then `Upkeep`.
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let service = ServiceBuilder::new(Arc::clone(&core), pipeline).build();
    let (base, server) = serve_nested(service.clone(), None).await;
    let http = reqwest::Client::new();
    let baseline = Arc::strong_count(&core);
    let upkeep = Upkeep::for_service(service.state())
        .config(fast())
        .start()
        .unwrap();

    // A bulk job runs to completion, and its image downloads through the host.
    let submit = || {
        http.post(format!("{base}/creapic/api/playground/images"))
            .bearer_auth(&key)
            .header("idempotency-key", "bulk-1")
            .json(&json!({"prompts": ["a lighthouse at dusk"]}))
            .send()
    };
    let (status, _, job) = body(submit().await.unwrap()).await;
    assert_eq!(status, 202, "{name}: {job}");
    let job_id = job["jobId"].as_str().unwrap().to_owned();
    let status_of = || async {
        let (_, _, b) = body(
            http.get(format!("{base}/creapic/api/playground/images/{job_id}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        b
    };
    let done = eventually(WAIT, || async {
        status_of().await["status"] == "completed"
    })
    .await;
    let finished = status_of().await;
    assert!(done, "{name}: the job never completed: {finished}");
    let link = finished["images"][0]["url"].as_str().unwrap();
    assert!(link.starts_with("/creapic/api/media/"), "{name}: {link}");
    let image = http.get(format!("{base}{link}")).send().await.unwrap();
    assert_eq!(image.status(), 200, "{name}: {link}");
    assert!(
        image.bytes().await.unwrap().starts_with(b"\x89PNG"),
        "{name}"
    );
    // Its Idempotency-Key replays for now.
    let (_, headers, replay) = body(submit().await.unwrap()).await;
    assert_eq!(replay["jobId"], job["jobId"], "{name}");
    assert!(headers.contains_key("idempotent-replayed"), "{name}");

    // Last-used times are flushed without anyone asking.
    let flushed = eventually(WAIT, || async {
        let key = core.key(Actor::Operator, org, key_id).await.unwrap();
        key.last_used_at.is_some()
    })
    .await;
    assert!(flushed, "{name}: last_used_at never written");

    // A synchronous request that died between its reserve and its capture.
    let abandoned = core
        .reserve(org, 3, None, "request-that-died")
        .await
        .unwrap()
        .hold
        .unwrap();
    let balance = core.balance(org).await.unwrap();

    // A console session, which will have ended by then.
    let password = creapic_core::account::Password::new("a long enough secret").unwrap();
    core.set_password("console@example.com", &password)
        .await
        .unwrap();
    let (token, _) = core
        .sign_in("console@example.com", &password)
        .await
        .unwrap();
    // 91 days later: the hold is stale, the idempotency record and the first audit events are
    // past their retention, the session is long over.
    clock.advance(Duration::from_secs(91 * 24 * 60 * 60));
    let released = eventually(WAIT, || async {
        let hold = core.store().hold(org, abandoned.id).await.unwrap().unwrap();
        hold.remaining() == 0
    })
    .await;
    assert!(released, "{name}: the abandoned hold was never released");
    let hold = core.store().hold(org, abandoned.id).await.unwrap().unwrap();
    assert_eq!(hold.released.get(), 3, "{name}");
    assert_eq!(
        core.balance(org).await.unwrap().get(),
        balance.get() + 3,
        "{name}: refunded"
    );
    let cutoff = clock.now().minus(core.config().audit_retention);
    let purged = eventually(WAIT, || async {
        let page = core
            .audit(Actor::Operator, &AuditQuery::all(org))
            .await
            .unwrap();
        page.items.iter().all(|r| r.event.at >= cutoff)
    })
    .await;
    assert!(purged, "{name}: audit events past the retention were kept");
    let page = core
        .audit(Actor::Operator, &AuditQuery::all(org))
        .await
        .unwrap();
    assert!(
        page.items
            .iter()
            .all(|r| r.event.action != AuditAction::KeyCreated),
        "{name}: the key's creation (day 0) is gone"
    );
    // The record under "bulk-1" is gone: the same request is a new job now.
    let fresh = eventually(WAIT, || async {
        let (status, headers, again) = body(submit().await.unwrap()).await;
        status == 202
            && !headers.contains_key("idempotent-replayed")
            && again["jobId"] != job["jobId"]
    })
    .await;
    assert!(fresh, "{name}: the idempotency record was never purged");
    let gone = eventually(WAIT, || async {
        core.store()
            .session(&token.digest())
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert!(gone, "{name}: the ended console session was never purged");

    // Shutdown stops every task: none keeps the core alive.
    let report = upkeep.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        (report.tasks_stopped, report.tasks_aborted),
        (4, 0),
        "{name}: {report:?}"
    );
    let stats = report.runner.unwrap();
    assert!(stats.completed >= 1, "{name}: {stats:?}");
    assert_eq!(
        Arc::strong_count(&core),
        baseline,
        "{name}: a task still holds the core after shutdown"
    );
    server.abort();
}

/// With a metrics recorder, its upkeep is a fifth task, and shutdown stops it too; nothing is
/// left running (the runner's tasks included), checked by the core's reference count.
#[tokio::test]
async fn shutdown_leaves_no_task_running() {
    let store: Arc<dyn Store> = Arc::new(creapic_core::store::memory::MemoryStore::new());
    let core: Arc<Creapic<dyn Store>> = Arc::new(Creapic::new(store));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let service = ServiceBuilder::new(Arc::clone(&core), pipeline)
        .metrics(recorder.handle())
        .build();
    let baseline = Arc::strong_count(&core);
    let upkeep = Upkeep::for_service(service.state())
        .config(fast())
        .start()
        .unwrap();
    assert!(
        Arc::strong_count(&core) > baseline,
        "the tasks hold the core"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = upkeep.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (report.tasks_stopped, report.tasks_aborted),
        (5, 0),
        "{report:?}"
    );
    assert_eq!(report.final_flush, Some(0));
    assert_eq!(
        Arc::strong_count(&core),
        baseline,
        "a task outlived shutdown"
    );

    // Without a runner: the periodic tasks only.
    let upkeep = Upkeep::for_service(service.state())
        .config(UpkeepConfig {
            runner: None,
            ..fast()
        })
        .start()
        .unwrap();
    let report = upkeep.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.runner, None);
    assert_eq!(Arc::strong_count(&core), baseline);
}

/// A zero period is refused before anything starts.
#[tokio::test]
async fn a_zero_period_is_refused() {
    let store: Arc<dyn Store> = Arc::new(creapic_core::store::memory::MemoryStore::new());
    let core: Arc<Creapic<dyn Store>> = Arc::new(Creapic::new(store));
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let baseline = Arc::strong_count(&core);
    let refused = Upkeep::new(Arc::clone(&core), pipeline)
        .config(UpkeepConfig {
            purge_period: Duration::ZERO,
            ..UpkeepConfig::default()
        })
        .start();
    let err = refused.unwrap_err();
    assert_eq!(err.code(), "invalid_parameter", "{err}");
    assert!(err.to_string().contains("purge_period"), "{err}");
    assert_eq!(Arc::strong_count(&core), baseline);
}
