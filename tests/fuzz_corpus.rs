//! The fuzz corpus (tests/fuzz/corpus) as a regression suite on stable: the same inputs the
//! cargo-fuzz targets start from go through key parsing, header extraction, every request body
//! type, and every POST route of the real HTTP service. Nothing may panic, and no input may get
//! a 5xx: bad input is always a 4xx with a stable code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::key::{KeyMode, extract_key, parse_key};
use creapic_core::scope::ScopeSet;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_core::wire::{
    BulkImagesRequest, CreateKeyRequest, CreateOrganizationRequest, GenerateImageRequest,
    SceneRenderRequest,
};
use creapic_core::{Creapic, KeySpec};
use creapic_server_kit::ServiceBuilder;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::http::auth::DashboardUser;
use creapic_server_kit::http::body::parse;
use tower::ServiceExt;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn key_corpus_parses_or_is_refused() {
    let mut accepted = 0;
    for (name, data) in corpus("key") {
        if let Ok(text) = std::str::from_utf8(&data)
            && let Ok(key) = parse_key(text)
        {
            assert_eq!(text.len(), 72, "{name}");
            let _ = key.digest();
            accepted += 1;
        }
    }
    assert_eq!(
        accepted, 2,
        "exactly the valid live and test keys are accepted"
    );
}

#[test]
fn header_corpus_never_panics() {
    for (name, data) in corpus("headers") {
        let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
        let (auth, x) = data.split_at(split);
        for (a, b) in [(Some(auth), None), (None, Some(x)), (Some(auth), Some(x))] {
            if let Ok(key) = extract_key(a, b) {
                assert_eq!(key.prefix().as_str().len(), 12, "{name}");
            }
        }
    }
}

#[test]
fn body_corpus_parses_or_names_the_failing_path() {
    for (name, data) in corpus("bodies") {
        for result in [
            parse::<GenerateImageRequest>(&data).map(|_| ()),
            parse::<SceneRenderRequest>(&data).map(|_| ()),
            parse::<CreateOrganizationRequest>(&data).map(|_| ()),
            parse::<BulkImagesRequest>(&data).map(|_| ()),
            parse::<CreateKeyRequest>(&data).map(|_| ()),
        ] {
            if let Err(e) = result {
                assert_eq!(e.code(), "invalid_json", "{name}: {e}");
                assert!(e.status().is_client_error(), "{name}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_post_route_answers_the_corpus_with_a_4xx_or_success() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core = Arc::new(Creapic::new(store));
    let ctx = RequestContext::default();
    let owner = core.ensure_user("fuzz@example.com").await.unwrap();
    let org = core
        .create_org("Fuzz", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    core.grant(Actor::Operator, org.id, 1_000_000, "seed", &ctx)
        .await
        .unwrap();
    let spec = KeySpec {
        name: "fuzz".into(),
        scopes: ScopeSet::all(),
        mode: KeyMode::Test,
        expires_at: None,
    };
    let key = core
        .create_key(Actor::Operator, org.id, spec, &ctx)
        .await
        .unwrap();
    let auth = format!("Bearer {}", key.secret.expose());
    // Small offline images keep the accepted inputs fast.
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()))
        .with_offline_renderer(OfflineRenderer::with_long_sides(64, 96));
    let service = ServiceBuilder::new(core.clone(), pipeline).build();
    let routes = [
        "/api/public/images/generate",
        "/api/public/scenes/render",
        "/api/public/organizations/create",
        "/api/playground/images",
        "/api/keys",
    ];
    for (name, data) in corpus("bodies") {
        for route in routes {
            let mut request = http::Request::post(route)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(data.clone()))
                .unwrap();
            request.extensions_mut().insert(DashboardUser(owner.id));
            let response = service.clone().oneshot(request).await.unwrap();
            let status = response.status();
            assert!(!status.is_server_error(), "{name} → {route}: {status}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("{name} → {route}: not JSON"));
            if !status.is_success() {
                assert!(json["code"].is_string(), "{name} → {route}: {json}");
            }
        }
    }
    // The ledger stayed consistent through all of it.
    let page = core
        .entries(org.id, None, creapic_core::page::PageLimit::max())
        .await
        .unwrap();
    let sum: i64 = page.items.iter().map(|e| e.delta).sum();
    assert_eq!(
        u64::try_from(sum).ok(),
        Some(core.balance(org.id).await.unwrap().get())
    );
}
