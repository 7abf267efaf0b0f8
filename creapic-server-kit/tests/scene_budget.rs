//! A scene's pixel work is bounded per render: geometry already over the budget is refused at
//! submission (422 `limit_exceeded`, nothing reserved), and a scene whose layers turn out over
//! it only when their real sizes are read fails at render time with the same code, before any
//! layer is decoded and before the provider is paid to draw the background.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::{app, body};
use creapic_core::generation::{AspectRatio, Quality};
use creapic_core::key::KeyMode;
use creapic_core::scope::Scope;
use creapic_server_kit::generation::media::{MediaStore, MediaType, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::scene::{Layer, SceneSpec};
use image::{ImageEncoder, RgbaImage};
use serde_json::json;

/// The offline renderer, counting its calls (a paid provider, as far as the test can tell).
#[derive(Debug, Default)]
struct Counting {
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl creapic_server_kit::generation::provider::ImageProvider for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    async fn generate(
        &self,
        request: &creapic_server_kit::generation::provider::ImageRequest,
    ) -> Result<
        creapic_server_kit::generation::provider::GeneratedImage,
        creapic_server_kit::generation::Error,
    > {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        creapic_server_kit::generation::provider::offline::OfflineRenderer::with_long_sides(64, 64)
            .generate(request)
            .await
    }
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = RgbaImage::new(width, height);
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgba8)
        .unwrap();
    out
}

#[tokio::test]
async fn sixteen_layers_upscaled_to_8192_are_refused_at_submission() {
    let app = app().await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::SceneRender]).await;
    let layer = base64::engine::general_purpose::STANDARD.encode(png(1024, 1024));
    let layers: Vec<_> = (0..16)
        .map(|_| json!({"source": {"type": "base64", "data": layer}, "x": 0, "y": 0, "scale": 4}))
        .collect();
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/scenes/render"))
            .bearer_auth(&key)
            .json(&json!({
                "background": {"type": "text", "text": "a studio backdrop"},
                "layers": layers,
                "quality": "hd"
            }))
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
    assert_eq!(
        app.core.balance(app.org).await.unwrap().get(),
        10,
        "nothing reserved"
    );
}

#[tokio::test]
async fn layers_over_the_budget_only_by_their_real_size_fail_at_render_time() {
    let media = MediaStore::in_memory(SigningKey::generate());
    let provider = std::sync::Arc::new(Counting::default());
    let pipeline = Pipeline::new(
        std::sync::Arc::new(creapic_server_kit::generation::prompt::RuleComposer),
        provider.clone(),
        media.clone(),
    );
    let app = app().await;
    // Tall layers (1:16): their geometry looks small, their scaled size is 512 × 8192 each.
    let tall = media
        .put(app.org, png(64, 1024).into(), MediaType::Png)
        .await
        .unwrap();
    let spec = SceneSpec {
        background: json!("a studio backdrop"),
        layers: vec![
            Layer {
                media: tall,
                upload: None,
                x: 0.0,
                y: 0.0,
                scale: 0.5,
                opacity: 1.0,
            };
            16
        ],
        aspect_ratio: AspectRatio::Square,
        quality: Quality::Standard,
    };
    spec.validate()
        .expect("the geometry alone is within the budget");
    let failed = pipeline
        .render_scene(app.org, KeyMode::Live, &spec)
        .await
        .unwrap_err();
    assert_eq!(failed.code(), "limit_exceeded", "{failed}");
    let calls = || provider.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        calls(),
        0,
        "the background was drawn for a scene over its budget"
    );
    // Fewer of the same layers render.
    let fewer = SceneSpec {
        layers: spec.layers[..2].to_vec(),
        ..spec
    };
    pipeline
        .render_scene(app.org, KeyMode::Live, &fewer)
        .await
        .expect("two tall layers fit");
    assert_eq!(calls(), 1);
}
