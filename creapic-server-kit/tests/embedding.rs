//! Embedding without surprises: what a host gets when it mounts the kit the documented ways.
//!
//! - Links follow the mount point: under `Router::nest_service("/creapic", …)` an image link
//!   downloads through the same host; so it does served
//!   by plain hyper at the root, and under a prefix the hyper host strips itself with
//!   `KitConfig::public_url` set to it.
//! - The client's address: key creation and deletion are audited with 127.0.0.1 both under
//!   axum (`ConnectInfo`) and under hyper (the kit's own `PeerAddr`), on every backend, and the
//!   per-address budget of failed authentications sees the hyper host's `PeerAddr` (without
//!   an address there is no budget, only 401s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use creapic_core::Creapic;
use creapic_core::audit::{Actor, RequestContext};
use creapic_core::key::{KeyMode, generate_key};
use creapic_core::random::SeededRandom;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::{CreapicService, KitConfig, ServiceBuilder};
use serde_json::json;

use common::{body, serve_hyper, serve_nested, test_login};

struct Seeded {
    core: Arc<Creapic<dyn Store>>,
    owner: String,
    org: String,
    key: String,
}

async fn seeded(store: Arc<dyn Store>) -> Seeded {
    let core: Arc<Creapic<dyn Store>> = Arc::new(Creapic::new(store));
    let ctx = RequestContext::default();
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap()
        .id;
    core.grant(Actor::Operator, org, 100, "grant", &ctx)
        .await
        .unwrap();
    let key = core
        .create_key(
            Actor::Operator,
            org,
            creapic_core::KeySpec {
                name: "host".into(),
                scopes: ScopeSet::new([Scope::ImageGeneration]).unwrap(),
                mode: KeyMode::Live,
                expires_at: None,
            },
            &ctx,
        )
        .await
        .unwrap()
        .secret
        .expose()
        .to_owned();
    Seeded {
        core,
        owner: owner.id.to_string(),
        org: org.to_string(),
        key,
    }
}

fn service(core: &Arc<Creapic<dyn Store>>, config: KitConfig) -> CreapicService {
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    ServiceBuilder::new(Arc::clone(core), pipeline)
        .config(config)
        .build()
}

/// Generates an image through `api` (the kit's base on the host), checks that the answered
/// link starts with `link_prefix`, downloads it through `host` (the host's origin), then reads
/// the generation back and downloads its fresh link too.
async fn generate_and_download(api: &str, host: &str, key: &str, link_prefix: &str) {
    let http = reqwest::Client::new();
    let (status, _, b) = body(
        http.post(format!("{api}/api/public/images/generate"))
            .bearer_auth(key)
            .json(&json!({"source": {"type": "text", "text": "a lighthouse at dusk"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    let link = b["imageUrl"].as_str().unwrap();
    assert!(link.starts_with(link_prefix), "{link} under {api}");
    let id = b["generation"]["id"].as_str().unwrap();
    let image = http.get(format!("{host}{link}")).send().await.unwrap();
    assert_eq!(image.status(), 200, "{host}{link}");
    assert!(image.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let (status, _, read) = body(
        http.get(format!("{api}/api/public/images/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{read}");
    let link = read["imageUrl"].as_str().unwrap();
    assert!(link.starts_with(link_prefix), "{link}");
    let image = http.get(format!("{host}{link}")).send().await.unwrap();
    assert_eq!(image.status(), 200, "{host}{link}");
}

#[tokio::test]
async fn links_follow_the_mount_point_under_nest_service() {
    let s = seeded(Arc::new(MemoryStore::new())).await;
    let (host, server) = serve_nested(service(&s.core, KitConfig::default()), None).await;
    generate_and_download(
        &format!("{host}/creapic"),
        &host,
        &s.key,
        "/creapic/api/media/",
    )
    .await;
    server.abort();
}

#[tokio::test]
async fn links_work_under_plain_hyper_at_the_root_and_under_a_configured_prefix() {
    let s = seeded(Arc::new(MemoryStore::new())).await;
    let (host, server) = serve_hyper(service(&s.core, KitConfig::default()), true, None).await;
    generate_and_download(&host, &host, &s.key, "/api/media/").await;
    server.abort();

    // The hyper host strips `/creapic` itself: it says so in `public_url`.
    let config = KitConfig {
        public_url: Some("/creapic".into()),
        ..KitConfig::default()
    };
    let (host, server) = serve_hyper(service(&s.core, config), true, Some("/creapic")).await;
    generate_and_download(
        &format!("{host}/creapic"),
        &host,
        &s.key,
        "/creapic/api/media/",
    )
    .await;
    server.abort();
}

/// Creates a key and deletes it through `api` as the owner; returns the audit events.
async fn key_created_and_deleted(api: &str, s: &Seeded) -> Vec<serde_json::Value> {
    let http = reqwest::Client::new();
    let (status, _, created) = body(
        http.post(format!("{api}/api/keys"))
            .header("x-test-user", &s.owner)
            .json(&json!({"organizationId": s.org, "name": "Production", "scopes": ["IMAGE_GENERATION"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["apiKey"]["id"].as_str().unwrap();
    let (status, _, b) = body(
        http.delete(format!("{api}/api/keys/{id}?organizationId={}", s.org))
            .header("x-test-user", &s.owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    let (status, _, log) = body(
        http.get(format!(
            "{api}/api/audit?organizationId={}&limit=1000",
            s.org
        ))
        .header("x-test-user", &s.owner)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{log}");
    let events = log["events"].as_array().unwrap().clone();
    events
        .into_iter()
        .filter(|e| e["keyId"] == id || e["detail"].to_string().contains(id))
        .collect()
}

fn ip_of(events: &[serde_json::Value], action: &str) -> serde_json::Value {
    events
        .iter()
        .find(|e| e["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {events:?}"))["ip"]
        .clone()
}

#[tokio::test]
async fn key_changes_are_audited_with_the_client_ip_under_axum_and_hyper() {
    let (backends, _dir) = common::backends().await;
    for (name, store) in backends {
        let s = seeded(store).await;
        // axum, nested, the address from `ConnectInfo`.
        let (host, server) =
            serve_nested(service(&s.core, KitConfig::default()), Some(test_login)).await;
        let events = key_created_and_deleted(&format!("{host}/creapic"), &s).await;
        assert_eq!(ip_of(&events, "key.created"), "127.0.0.1", "{name}: axum");
        assert_eq!(ip_of(&events, "key.deleted"), "127.0.0.1", "{name}: axum");
        server.abort();
        // plain hyper, the address from the kit's `PeerAddr`.
        let (host, server) = serve_hyper(service(&s.core, KitConfig::default()), true, None).await;
        let events = key_created_and_deleted(&host, &s).await;
        assert_eq!(ip_of(&events, "key.created"), "127.0.0.1", "{name}: hyper");
        assert_eq!(ip_of(&events, "key.deleted"), "127.0.0.1", "{name}: hyper");
        server.abort();
    }
}

/// Sends 30 well-formed unknown keys; returns how many were refused with 429.
async fn limited_of_30_bad_keys(host: &str) -> u32 {
    let http = reqwest::Client::new();
    let rng = SeededRandom::new(5);
    let mut limited = 0;
    for _ in 0..30 {
        let key = generate_key(KeyMode::Live, &rng);
        let (status, _, b) = body(
            http.post(format!("{host}/api/playground/images"))
                .bearer_auth(key.expose())
                .json(&json!({"prompts": ["a"]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        match status {
            401 => assert_eq!(b["code"], "invalid_api_key"),
            429 => {
                assert_eq!(b["code"], "too_many_auth_failures", "{b}");
                limited += 1;
            }
            other => panic!("{other}: {b}"),
        }
    }
    limited
}

#[tokio::test]
async fn the_failed_auth_budget_counts_the_hyper_hosts_peer_addr() {
    let s = seeded(Arc::new(MemoryStore::new())).await;
    let (host, server) = serve_hyper(service(&s.core, KitConfig::default()), true, None).await;
    let limited = limited_of_30_bad_keys(&host).await;
    assert!(limited >= 5, "{limited} of 30 refused with 429");
    server.abort();

    // The same host without the address: nothing to charge, only 401s.
    let s = seeded(Arc::new(MemoryStore::new())).await;
    let (host, server) = serve_hyper(service(&s.core, KitConfig::default()), false, None).await;
    assert_eq!(limited_of_30_bad_keys(&host).await, 0);
    server.abort();
}
