//! Generation records over HTTP on every backend (memory, SQLite, PostgreSQL): each synchronous
//! generation answers with its own UUID v7 id — the id of the hold that paid for it — and is
//! read back by `GET /api/public/images/{id}` exactly as it was answered; a failed generation is
//! recorded as failed with nothing charged; another organization's id is 404, a malformed one
//! 400; a replay under the same `Idempotency-Key` answers with the same id.
//!
//! The failing provider is a stand-in for a third-party model that answers with an error (test
//! keys always use the offline renderer, so one server has a failing live key and a working
//! test key).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{TestApp, backends, body};
use creapic_core::id::HoldId;
use creapic_core::key::KeyMode;
use creapic_core::ledger::EntryKind;
use creapic_core::page::PageLimit;
use creapic_core::scope::Scope;
use creapic_core::store::Store;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::provider::{GeneratedImage, ImageProvider, ImageRequest};
use serde_json::{Value, json};

/// A model that always fails (as a remote provider answering 500 does).
#[derive(Debug)]
struct Fails;

#[async_trait::async_trait]
impl ImageProvider for Fails {
    fn name(&self) -> &'static str {
        "fails"
    }

    async fn generate(
        &self,
        _: &ImageRequest,
    ) -> Result<GeneratedImage, creapic_server_kit::generation::Error> {
        Err(creapic_server_kit::generation::Error::ProviderFailed {
            provider: "fails",
            message: "upstream exploded".into(),
        })
    }
}

/// A server on `store` whose live keys fail and whose test keys draw offline.
async fn app_on(store: Arc<dyn Store>) -> TestApp {
    let media = MediaStore::in_memory(SigningKey::generate());
    let pipeline = Pipeline::new(
        Arc::new(creapic_server_kit::generation::prompt::RuleComposer),
        Arc::new(Fails),
        media,
    )
    .with_retry(creapic_server_kit::generation::retry::RetryPolicy::none());
    common::app_with_pipeline(store, creapic_server_kit::KitConfig::default(), pipeline).await
}

async fn generate(app: &TestApp, key: &str, idempotency: Option<&str>) -> (u16, bool, Value) {
    let mut request = app
        .http
        .post(app.url("/api/public/images/generate"))
        .bearer_auth(key)
        .json(&json!({
            "source": {"type": "text", "text": "A lighthouse at dusk, watercolor"},
            "aspectRatio": "16:9",
            "quality": "hd"
        }));
    if let Some(k) = idempotency {
        request = request.header("Idempotency-Key", k);
    }
    let (status, headers, b) = body(request.send().await.unwrap()).await;
    (status, headers.contains_key("idempotent-replayed"), b)
}

async fn get(app: &TestApp, key: &str, id: &str) -> (u16, Value) {
    let (status, _, b) = body(
        app.http
            .get(app.url(&format!("/api/public/images/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, b)
}

/// The holds of the organization's ledger, oldest first.
async fn holds(app: &TestApp) -> Vec<HoldId> {
    let entries = app
        .core
        .entries(app.org, None, PageLimit::max())
        .await
        .unwrap();
    entries
        .items
        .iter()
        .filter(|e| e.kind == EntryKind::Hold)
        .filter_map(|e| e.hold)
        .collect()
}

async fn image_bytes(app: &TestApp, url: &str) -> Vec<u8> {
    let response = app.http.get(app.url(url)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_generations_get_distinct_v7_ids_each_read_back_as_answered() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let app = app_on(store).await;
        app.grant(app.org, 10).await;
        let key = app
            .key_in(app.org, &[Scope::ImageGeneration], KeyMode::Test)
            .await;
        let (s1, _, first) = generate(&app, &key, None).await;
        let (s2, _, second) = generate(&app, &key, None).await;
        assert_eq!((s1, s2), (200, 200), "{name}: {first} {second}");
        let ids: Vec<&str> = [&first, &second]
            .iter()
            .map(|b| b["generation"]["id"].as_str().unwrap())
            .collect();
        assert_ne!(ids[0], ids[1], "{name}: two paid generations, two ids");
        for id in &ids {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{name}: {id} is a UUID v7");
        }
        // Each id is the id of the hold that paid for it.
        let paid: Vec<String> = holds(&app).await.iter().map(|h| h.to_string()).collect();
        assert_eq!(paid, ids, "{name}: generation ids are their holds' ids");
        assert_eq!(app.core.balance(app.org).await.unwrap().get(), 6, "{name}");

        for answered in [&first, &second] {
            let g = &answered["generation"];
            let (status, read) = get(&app, &key, g["id"].as_str().unwrap()).await;
            assert_eq!(status, 200, "{name}: {read}");
            assert_eq!(
                &read["generation"], g,
                "{name}: the record is what was answered"
            );
            assert_eq!(read["generation"]["status"], "completed");
            assert_eq!(read["generation"]["tokensUsed"], 2);
            assert!(
                read["generation"].get("errorCode").is_none(),
                "{name}: {read}"
            );
            // A fresh link to the same image.
            let again = image_bytes(&app, read["imageUrl"].as_str().unwrap()).await;
            let original = image_bytes(&app, answered["imageUrl"].as_str().unwrap()).await;
            assert!(again.starts_with(b"\x89PNG"), "{name}");
            assert_eq!(again, original, "{name}: the same image");
        }

        // The new id names the image as a scene layer, like the content hash did.
        let scene_key = app
            .key_in(app.org, &[Scope::SceneRender], KeyMode::Test)
            .await;
        let (status, _, render) = body(
            app.http
                .post(app.url("/api/public/scenes/render"))
                .bearer_auth(&scene_key)
                .json(&json!({
                    "background": {"type": "text", "text": "A summer terrace"},
                    "layers": [{"source": {"type": "generation", "id": ids[0]}, "x": 0.1, "y": 0.1, "scale": 0.3}]
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{name}: {render}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_generation_is_recorded_failed_with_nothing_charged() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let app = app_on(store).await;
        app.grant(app.org, 5).await;
        let live = app.key(&[Scope::ImageGeneration, Scope::SceneRender]).await;
        let (status, _, b) = generate(&app, &live, Some("fails-once")).await;
        assert_eq!(status, 502, "{name}: {b}");
        assert_eq!(b["code"], "provider_failed");
        assert_eq!(
            app.core.balance(app.org).await.unwrap().get(),
            5,
            "{name}: refunded"
        );
        let entries = app
            .core
            .entries(app.org, None, PageLimit::max())
            .await
            .unwrap();
        let kinds: Vec<_> = entries.items.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["grant", "hold", "release"], "{name}");
        let hold = holds(&app).await;
        assert_eq!(hold.len(), 1, "{name}");
        let id = hold[0].to_string();

        let (status, read) = get(&app, &live, &id).await;
        assert_eq!(status, 200, "{name}: {read}");
        let g = &read["generation"];
        assert_eq!(g["id"], id.as_str());
        assert_eq!(g["status"], "failed", "{name}: {read}");
        assert_eq!(g["tokensUsed"], 0);
        assert_eq!(g["errorCode"], "provider_failed");
        assert_eq!(g["aspectRatio"], "16:9");
        assert_eq!(g["quality"], "hd");
        assert_eq!(g["prompt"], "A lighthouse at dusk, watercolor", "as asked");
        assert!(read.get("imageUrl").is_none(), "{name}: no image: {read}");

        // A failed generation has no image to use as a layer.
        let (status, _, render) = body(
            app.http
                .post(app.url("/api/public/scenes/render"))
                .bearer_auth(&live)
                .json(&json!({
                    "background": {"type": "text", "text": "A summer terrace"},
                    "layers": [{"source": {"type": "generation", "id": id}, "x": 0.1, "y": 0.1}]
                }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404, "{name}: {render}");
        assert_eq!(app.core.balance(app.org).await.unwrap().get(), 5, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organizations_id_is_404_and_a_malformed_id_400() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let app = app_on(store).await;
        app.grant(app.org, 5).await;
        let key = app
            .key_in(app.org, &[Scope::ImageGeneration], KeyMode::Test)
            .await;
        let (status, _, b) = generate(&app, &key, None).await;
        assert_eq!(status, 200, "{name}: {b}");
        let id = b["generation"]["id"].as_str().unwrap().to_owned();

        let (other, _) = app.other_org().await;
        let outsider = app
            .key_in(other, &[Scope::ImageGeneration], KeyMode::Test)
            .await;
        let (status, b) = get(&app, &outsider, &id).await;
        assert_eq!(status, 404, "{name}: {b}");
        assert_eq!(b["code"], "not_found");
        assert!(!b.to_string().contains(&id), "{name}: nothing of A: {b}");

        let unknown = uuid::Uuid::now_v7().to_string();
        let (status, b) = get(&app, &key, &unknown).await;
        assert_eq!(
            (status, b["code"].as_str()),
            (404, Some("not_found")),
            "{name}"
        );

        for bad in ["not-a-uuid", "0123", &"a".repeat(36)] {
            let (status, b) = get(&app, &key, bad).await;
            assert_eq!(status, 400, "{name}: {bad}: {b}");
        }

        let no_scope = app.key(&[Scope::SceneRender]).await;
        let (status, b) = get(&app, &no_scope, &id).await;
        assert_eq!(status, 403, "{name}: {b}");
        let (status, _) = get(&app, "wi_live_nope", &id).await;
        assert_eq!(status, 401, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_answers_with_the_same_id_and_charges_once() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let app = app_on(store).await;
        app.grant(app.org, 10).await;
        let key = app
            .key_in(app.org, &[Scope::ImageGeneration], KeyMode::Test)
            .await;
        let (s1, replayed1, first) = generate(&app, &key, Some("same-key")).await;
        let (s2, replayed2, second) = generate(&app, &key, Some("same-key")).await;
        assert_eq!((s1, s2), (200, 200), "{name}");
        assert_eq!((replayed1, replayed2), (false, true), "{name}");
        assert_eq!(
            first["generation"], second["generation"],
            "{name}: the replay answers with the same generation"
        );
        assert_eq!(app.core.balance(app.org).await.unwrap().get(), 8, "{name}");
        assert_eq!(holds(&app).await.len(), 1, "{name}: one hold");
        // Another key is another generation.
        let (_, _, third) = generate(&app, &key, Some("other-key")).await;
        assert_ne!(
            third["generation"]["id"], first["generation"]["id"],
            "{name}"
        );
        let (status, read) = get(&app, &key, first["generation"]["id"].as_str().unwrap()).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(read["generation"], first["generation"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_attempt_whose_generation_is_recorded_answers_from_the_record() {
    use creapic_core::generation::{AspectRatio, GenerationParams, Quality};
    use creapic_core::idempotency::{IdempotencyBegin, RequestFingerprint};
    use creapic_core::ledger::{Credits, IdempotencyKey};

    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let app = app_on(store).await;
        app.grant(app.org, 5).await;
        // A live key: its provider fails, so a 200 proves the provider was not called again.
        let live = app.key(&[Scope::ImageGeneration]).await;
        let body_bytes = serde_json::to_vec(&json!({
            "source": {"type": "text", "text": "A lighthouse at dusk, watercolor"},
            "quality": "hd"
        }))
        .unwrap();
        // An earlier process began the request, paid, recorded the generation and died before
        // storing the answer; its lock lapses.
        let key = IdempotencyKey::new("crashed-after-record").unwrap();
        let fingerprint =
            RequestFingerprint::of("POST", "/api/public/images/generate", &body_bytes);
        let begun = app
            .core
            .begin_request(
                app.org,
                &key,
                fingerprint,
                std::time::Duration::from_millis(1),
            )
            .await
            .unwrap();
        let IdempotencyBegin::Started {
            attempt: Some(attempt),
        } = begun
        else {
            panic!("{name}: expected a started attempt, got {begun:?}");
        };
        let ledger_key = format!("http:{}:{}", key.as_str(), attempt.as_uuid().simple());
        let hold = app
            .core
            .reserve(app.org, 2, None, &format!("{ledger_key}:hold"))
            .await
            .unwrap()
            .hold
            .unwrap()
            .id;
        app.core
            .capture(app.org, hold, 2, &format!("{ledger_key}:capture"))
            .await
            .unwrap();
        let params = GenerationParams {
            prompt: r#"{"subject":"a lighthouse"}"#.into(),
            aspect_ratio: AspectRatio::Square,
            quality: Quality::Hd,
        };
        let media = format!("{}.png", "cd".repeat(32));
        let record = app
            .core
            .record_completed_generation(app.org, hold, params, media, Credits::new(2).unwrap())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;

        let (status, headers, b) = body(
            app.http
                .post(app.url("/api/public/images/generate"))
                .bearer_auth(&live)
                .header("content-type", "application/json")
                .header("Idempotency-Key", key.as_str())
                .body(body_bytes.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{name}: resumed, not regenerated: {b}");
        assert!(!headers.contains_key("idempotent-replayed"), "{name}");
        assert_eq!(
            b["generation"]["id"],
            record.id.to_string().as_str(),
            "{name}"
        );
        assert_eq!(
            b["generation"]["prompt"]["subject"], "a lighthouse",
            "{name}"
        );
        assert_eq!(b["tokens"], 3, "{name}: the capture replayed, charged once");
        assert_eq!(app.core.balance(app.org).await.unwrap().get(), 3, "{name}");
        assert_eq!(holds(&app).await, vec![hold], "{name}: no second hold");
    }
}
