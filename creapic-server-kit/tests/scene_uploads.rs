//! Scene layers and media storage, through the real service with media on the local disk: a
//! refused render (402) writes nothing; a paid render's inline layers are staged, composited and
//! deleted; an organization at its media quota is refused with a clear 422 before anything is
//! paid or drawn; and the sweep removes uploads a crash left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::{TempDir, app_with_pipeline, body};
use creapic_core::clock::Timestamp;
use creapic_core::scope::Scope;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_server_kit::KitConfig;
use creapic_server_kit::generation::media::{MediaStore, MediaType, SigningKey, UploadId};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::runner::{Runner, RunnerConfig};
use serde_json::json;

/// Every file under `dir`, with its size.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// A PNG of about `kib` KiB that does not compress (noise).
fn noisy_png(kib: usize, seed: u8) -> String {
    let side = ((kib * 1024 / 3) as f64).sqrt() as u32;
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).max(1);
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let b = state.to_le_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    base64::engine::general_purpose::STANDARD.encode(out.into_inner())
}

fn local_media(dir: &Path, quota: Option<u64>) -> MediaStore {
    let media = MediaStore::local(dir, SigningKey::generate()).unwrap();
    match quota {
        Some(q) => media.with_quota(q),
        None => media,
    }
}

fn pipeline(media: MediaStore) -> Pipeline {
    Pipeline::offline(media).with_offline_renderer(OfflineRenderer::with_long_sides(48, 64))
}

fn scene(layers: &[String]) -> serde_json::Value {
    let layers: Vec<_> = layers
        .iter()
        .enumerate()
        .map(|(i, data)| {
            json!({"source": {"type": "base64", "data": data}, "x": 0.1 * i as f64, "y": 0.1, "scale": 0.2})
        })
        .collect();
    json!({"background": {"type": "text", "text": "a harbour"}, "layers": layers})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_render_writes_nothing_and_a_paid_one_leaves_only_its_output() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("creapic-scene-{}", uuid::Uuid::now_v7().simple())),
    );
    let media = local_media(&dir.0, None);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let app = app_with_pipeline(store, KitConfig::default(), pipeline(media.clone())).await;
    let key = app.key(&[Scope::SceneRender]).await;
    let layers: Vec<String> = (0..2).map(|i| noisy_png(200, i)).collect();
    let render = || {
        app.http
            .post(app.url("/api/public/scenes/render"))
            .bearer_auth(&key)
            .json(&scene(&layers))
            .send()
    };
    // No credits: three refusals, and not one byte in storage.
    for _ in 0..3 {
        let (status, _, b) = body(render().await.unwrap()).await;
        assert_eq!(status, 402, "{b}");
    }
    assert_eq!(files(&dir.0), vec![], "a refused render stored its layers");

    // Paid: the layers are staged, the runner composites them and deletes them.
    app.grant(app.org, 10).await;
    let (status, _, b) = body(render().await.unwrap()).await;
    assert_eq!(status, 202, "{b}");
    let id = b["render"]["id"].as_str().unwrap().to_owned();
    let uploads = dir.0.join("uploads");
    assert!(
        !files(&uploads).is_empty(),
        "the paid render's layers are staged"
    );
    let runner = Runner::new(
        app.core.clone(),
        pipeline(media.clone()),
        RunnerConfig {
            poll_interval: Duration::from_millis(10),
            ..RunnerConfig::default()
        },
    )
    .start()
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let done = loop {
        let (_, _, b) = body(
            app.http
                .get(app.url(&format!("/api/public/scenes/render/{id}")))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if b["render"]["status"] == "completed" || b["render"]["status"] == "failed" {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(done["render"]["status"], "completed", "{done}");
    assert_eq!(
        files(&uploads),
        vec![],
        "the uploads are deleted after the render"
    );
    // Kept: the composed image and its prompt, nothing of the 200 KiB layers.
    let kept = files(&dir.0.join("orgs"));
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|(_, size)| *size < 100 * 1024), "{kept:?}");
    assert_eq!(app.core.balance(app.org).await.unwrap().get(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_at_its_media_quota_is_refused_before_it_pays() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("creapic-quota-{}", uuid::Uuid::now_v7().simple())),
    );
    // Room for a few small generated images, not for 300 KiB of layers.
    let media = local_media(&dir.0, Some(200 * 1024));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let app = app_with_pipeline(store, KitConfig::default(), pipeline(media.clone())).await;
    app.grant(app.org, 100).await;
    let key = app.key(&[Scope::SceneRender, Scope::ImageGeneration]).await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/scenes/render"))
            .bearer_auth(&key)
            .json(&scene(&[noisy_png(150, 1), noisy_png(150, 2)]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (422, Some("limit_exceeded")),
        "{b}"
    );
    assert_eq!(app.core.balance(app.org).await.unwrap().get(), 100);
    assert_eq!(files(&dir.0), vec![]);

    // Fill the quota with other media, then a generation is refused before it is paid.
    media
        .put(
            app.org,
            bytes::Bytes::from(vec![7u8; 200 * 1024]),
            MediaType::Png,
        )
        .await
        .unwrap();
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&json!({"source": {"type": "text", "text": "a lemon"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (422, Some("limit_exceeded")),
        "{b}"
    );
    assert_eq!(app.core.balance(app.org).await.unwrap().get(), 100);
    // Another organization is not affected by this one's usage.
    let (other, _) = app.other_org().await;
    app.grant(other, 5).await;
    let theirs = app
        .key_in(
            other,
            &[Scope::ImageGeneration],
            creapic_core::key::KeyMode::Live,
        )
        .await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&theirs)
            .json(&json!({"source": {"type": "text", "text": "a lemon"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{b}");
}

#[tokio::test]
async fn the_sweep_removes_stale_uploads_and_keeps_fresh_ones() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("creapic-sweep-{}", uuid::Uuid::now_v7().simple())),
    );
    let media = local_media(&dir.0, None);
    let org = creapic_core::id::OrgId::from_uuid(uuid::Uuid::now_v7());
    let upload = UploadId::for_request("http:crashed:1");
    media
        .put_upload(
            org,
            &upload,
            bytes::Bytes::from_static(b"layer"),
            MediaType::Png,
        )
        .await
        .unwrap();
    let now = Timestamp::from_unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    // Younger than the cutoff: kept.
    assert_eq!(
        media
            .sweep_uploads(now.minus(Duration::from_secs(3600)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(files(&dir.0.join("uploads")).len(), 1);
    // Older: swept.
    assert_eq!(
        media
            .sweep_uploads(now.plus(Duration::from_secs(1)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(files(&dir.0.join("uploads")), vec![]);
}

/// A media store that fails answers 503 `media_unavailable` with a body that names the
/// operation, never the object's path or the store's own message; the hold is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_media_store_is_a_503_without_paths_in_the_body() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("creapic-broken-{}", uuid::Uuid::now_v7().simple())),
    );
    let media = local_media(&dir.0, None);
    // The media directory becomes a file: every write fails inside the object store.
    std::fs::remove_dir_all(&dir.0).unwrap();
    std::fs::write(&dir.0, b"not a directory").unwrap();
    let fast = creapic_server_kit::generation::retry::RetryPolicy {
        attempts_max: 1,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(1),
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let app = app_with_pipeline(
        store,
        KitConfig::default(),
        pipeline(media).with_retry(fast),
    )
    .await;
    app.grant(app.org, 5).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&json!({"source": {"type": "text", "text": "a lemon"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let _ = std::fs::remove_file(&dir.0);
    assert_eq!(
        (status, b["code"].as_str()),
        (503, Some("media_unavailable")),
        "{b}"
    );
    let text = b.to_string();
    let dir_name = dir.0.file_name().unwrap().to_string_lossy().to_string();
    assert!(!text.contains(&dir_name), "a path leaked: {text}");
    assert!(!text.contains("orgs/"), "an object path leaked: {text}");
    assert_eq!(app.core.balance(app.org).await.unwrap().get(), 5);
}
