//! The two host examples, run as written: `examples/axum_host.rs` and `examples/hyper_host.rs`
//! are compiled into this test (`#[path]`), and their own `app`/`service` and `serve` functions
//! mount the kit on loopback. Through each host a bulk job runs to completion (their `Upkeep`
//! runs it), its image link downloads through the same host (the axum host nests the kit under
//! `/creapic`), an organization created through a key is audited with the client's IP, and
//! shutting the upkeep down reports the job the runner completed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../axum_host.rs"]
mod axum_host;

#[allow(dead_code, unreachable_pub)]
#[path = "../hyper_host.rs"]
mod hyper_host;

use std::sync::Arc;
use std::time::Duration;

use creapic_core::audit::{Actor, AuditQuery, RequestContext};
use creapic_core::key::KeyMode;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_core::{Creapic, KeySpec};
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use serde_json::{Value, json};

/// A core with an organization, 10 credits and a key for images and organizations.
async fn seeded() -> (Arc<Creapic<dyn Store>>, String) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core: Arc<Creapic<dyn Store>> = Arc::new(Creapic::new(store));
    let ctx = RequestContext::default();
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap()
        .id;
    core.grant(Actor::Operator, org, 10, "grant", &ctx)
        .await
        .unwrap();
    let key = core
        .create_key(
            Actor::Operator,
            org,
            KeySpec {
                name: "host".into(),
                scopes: ScopeSet::new([Scope::ImageGeneration, Scope::OrganizationWrite]).unwrap(),
                mode: KeyMode::Live,
                expires_at: None,
            },
            &ctx,
        )
        .await
        .unwrap();
    (core, key.secret.expose().to_owned())
}

async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Through the kit at `api` on the host `host`: a bulk job to completion and its image
/// downloaded, and an organization created with the client's IP in its audit event.
async fn exercise(core: &Creapic<dyn Store>, host: &str, api: &str, key: &str) {
    let http = reqwest::Client::new();
    let (status, job) = json(
        http.post(format!("{api}/api/playground/images"))
            .bearer_auth(key)
            .json(&json!({"prompts": ["a lighthouse at dusk", "a red fox"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["jobId"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let (_, b) = json(
            http.get(format!("{api}/api/playground/images/{id}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if b["status"] == "completed" {
            break b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never completed: {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for image in finished["images"].as_array().unwrap() {
        let link = image["url"].as_str().unwrap();
        let resp = http.get(format!("{host}{link}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{host}{link}");
        assert!(resp.bytes().await.unwrap().starts_with(b"\x89PNG"));
    }
    let (status, org) = json(
        http.post(format!("{api}/api/public/organizations/create"))
            .bearer_auth(key)
            .json(&json!({"name": "Acme Labs"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{org}");
    let new_org =
        creapic_core::id::OrgId::parse(org["organization"]["id"].as_str().unwrap()).unwrap();
    let log = core
        .audit(Actor::Operator, &AuditQuery::all(new_org))
        .await
        .unwrap();
    let ips: Vec<_> = log.items.iter().map(|r| r.event.ip).collect();
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    assert!(
        !ips.is_empty() && ips.iter().all(|ip| *ip == Some(loopback)),
        "{ips:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_host_runs_jobs_serves_links_under_its_prefix_and_audits_ips() {
    let (core, key) = seeded().await;
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let (app, upkeep) = axum_host::app(Arc::clone(&core), pipeline).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(axum_host::serve(listener, app, async {
        let _ = stopped.await;
    }));
    exercise(&core, &host, &format!("{host}/creapic"), &key).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let report = upkeep.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.runner.unwrap().completed, 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_host_runs_jobs_serves_links_and_audits_ips() {
    let (core, key) = seeded().await;
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let (service, upkeep) = hyper_host::service(Arc::clone(&core), pipeline).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hyper_host::serve(listener, service, async {
        let _ = stopped.await;
    }));
    exercise(&core, &host, &host, &key).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let report = upkeep.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.runner.unwrap().completed, 1, "{report:?}");
}
