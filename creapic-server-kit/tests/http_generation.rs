//! Image generation, scene renders and media links over a real server on loopback, with the
//! offline renderer (and, for provider failures, the OpenAI-compatible adapter pointed at a
//! mockito server): tokens are charged on success, refunded on failure, images are served only
//! through signed links of their own organization.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{app, body};
use creapic_core::key::KeyMode;
use creapic_core::scope::Scope;
use serde_json::json;

#[tokio::test]
async fn a_text_prompt_becomes_a_json_prompt_and_a_real_image() {
    let app = app().await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&json!({
                "source": {"type": "text", "text": "Article about citrus mocktails with summer ingredients"},
                "aspectRatio": "4:5",
                "quality": "hd"
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    let g = &b["generation"];
    assert_eq!(g["status"], "completed");
    assert_eq!(g["aspectRatio"], "4:5");
    assert_eq!(g["quality"], "hd");
    assert_eq!(g["tokensUsed"], 2, "hd costs 2");
    assert_eq!(b["tokens"], 8);
    for field in [
        "subject",
        "setting",
        "style",
        "lighting",
        "composition",
        "palette",
        "negative",
    ] {
        assert!(
            !g["prompt"][field].is_null(),
            "the JSON prompt has {field}: {}",
            g["prompt"]
        );
    }
    let url = b["imageUrl"].as_str().unwrap();
    let image = app.http.get(app.url(url)).send().await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    assert!(
        image.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );
    let bytes = image.bytes().await.unwrap();
    let decoded = image::load_from_memory(&bytes).unwrap();
    let (w, h) = (decoded.width(), decoded.height());
    assert!(
        (f64::from(w) / f64::from(h) - 0.8).abs() < 0.02,
        "4:5 image, got {w}x{h}"
    );
    // A ready-made prompt is used as given; standard costs 1.
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&json!({"source": {"type": "prompt", "prompt": {"subject": "a lighthouse", "style": "watercolor"}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["generation"]["prompt"]["subject"], "a lighthouse");
    assert_eq!(b["generation"]["aspectRatio"], "1:1");
    assert_eq!(b["tokens"], 7);
}

#[tokio::test]
async fn media_links_only_open_their_own_object() {
    let app = app().await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let (_, _, b) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&json!({"source": {"type": "text", "text": "a red fox"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let url = b["imageUrl"].as_str().unwrap().to_owned();
    let (other, _) = app.other_org().await;
    let forged = url.replace(&app.org.to_string(), &other.to_string());
    let (status, _, b) = body(app.http.get(app.url(&forged)).send().await.unwrap()).await;
    assert_eq!(
        (status, b["code"].as_str()),
        (403, Some("media_link_invalid")),
        "{b}"
    );
    let tampered = format!("{}x", url);
    let (status, _, _) = body(app.http.get(app.url(&tampered)).send().await.unwrap()).await;
    assert_eq!(status, 403);
    let unsigned = url.split('?').next().unwrap().to_owned();
    let (status, _, _) = body(app.http.get(app.url(&unsigned)).send().await.unwrap()).await;
    assert_eq!(status, 400);
    let (status, _, _) = body(
        app.http
            .get(app.url("/api/media/x/../../etc/passwd"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status == 400 || status == 404, "{status}");
}

#[tokio::test]
async fn scenes_are_accepted_as_tasks_and_polled() {
    let app = app().await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::SceneRender, Scope::ImageGeneration]).await;
    let (_, _, g) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&json!({"source": {"type": "text", "text": "a small boat"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let generation = g["generation"]["id"].as_str().unwrap().to_owned();
    let png = {
        use base64::Engine as _;
        let img = image::RgbImage::from_pixel(8, 8, image::Rgb([255, 0, 0]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    };
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/scenes/render"))
            .bearer_auth(&key)
            .json(&json!({
                "background": {"type": "text", "text": "a calm harbour at dawn"},
                "layers": [
                    {"source": {"type": "generation", "id": generation}, "x": 0.1, "y": 0.1, "scale": 0.3},
                    {"source": {"type": "base64", "data": png}, "x": 0.6, "y": 0.6, "scale": 0.2, "opacity": 0.5}
                ],
                "aspectRatio": "16:9"
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{b}");
    let render = &b["render"];
    assert_eq!(render["status"], "queued");
    assert_eq!(render["aspectRatio"], "16:9");
    assert_eq!(render["tokensReserved"], 2);
    assert_eq!(
        app.core.balance(app.org).await.unwrap().get(),
        7,
        "1 image + 2 reserved"
    );
    let id = render["id"].as_str().unwrap();
    let (status, _, b) = body(
        app.http
            .get(app.url(&format!("/api/public/scenes/render/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, b["render"]["id"].as_str()), (200, Some(id)));
    // Another organization: its own key sees nothing, and cannot layer our generation.
    let (other, _) = app.other_org().await;
    app.grant(other, 10).await;
    let theirs = app
        .key_in(other, &[Scope::SceneRender], KeyMode::Live)
        .await;
    let (status, _, _) = body(
        app.http
            .get(app.url(&format!("/api/public/scenes/render/{id}")))
            .bearer_auth(&theirs)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/scenes/render"))
            .bearer_auth(&theirs)
            .json(&json!({
                "background": {"type": "text", "text": "x"},
                "layers": [{"source": {"type": "generation", "id": generation}, "x": 0.1, "y": 0.1}]
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (404, Some("not_found")),
        "{b}"
    );
    let bad_layers = [
        (json!({"type": "base64", "data": "!!!"}), 400),
        (json!({"type": "base64", "data": "aGVsbG8="}), 422),
        (json!({"type": "generation", "id": "../../etc"}), 400),
    ];
    for (source, want) in bad_layers {
        let (status, _, b) = body(
            app.http
                .post(app.url("/api/public/scenes/render"))
                .bearer_auth(&theirs)
                .json(&json!({"background": {"type": "text", "text": "x"}, "layers": [{"source": source, "x": 0, "y": 0}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, want, "{b}");
    }
    assert_eq!(
        app.core.balance(other).await.unwrap().get(),
        10,
        "refused renders cost nothing"
    );
}

#[cfg(feature = "openai")]
#[tokio::test]
async fn a_provider_failure_refunds_the_tokens_and_test_keys_stay_offline() {
    use creapic_server_kit::generation::media::{MediaStore, SigningKey};
    use creapic_server_kit::generation::pipeline::Pipeline;
    use creapic_server_kit::generation::prompt::RuleComposer;
    use creapic_server_kit::generation::provider::openai::{OpenAiConfig, OpenAiProvider};
    use std::sync::Arc;

    let mut server = mockito::Server::new_async().await;
    let failing = server
        .mock("POST", "/v1/images/generations")
        .with_status(500)
        .with_body(r#"{"error":{"message":"upstream exploded"}}"#)
        .expect_at_least(1)
        .create_async()
        .await;
    let mut config = OpenAiConfig::new(None);
    config.base_url = server.url();
    let live = Arc::new(OpenAiProvider::new(config).unwrap());
    let media = MediaStore::in_memory(SigningKey::generate());
    let pipeline = Pipeline::new(Arc::new(RuleComposer), live, media)
        .with_retry(creapic_server_kit::generation::retry::RetryPolicy::none());
    let app = common::app_with_pipeline(
        Arc::new(creapic_core::store::memory::MemoryStore::new()),
        Default::default(),
        pipeline,
    )
    .await;
    app.grant(app.org, 5).await;
    let live_key = app.key(&[Scope::ImageGeneration]).await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&live_key)
            .json(&json!({"source": {"type": "text", "text": "a cat"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502, "{b}");
    assert_eq!(b["code"], "provider_unavailable");
    failing.assert_async().await;
    assert_eq!(
        app.core.balance(app.org).await.unwrap().get(),
        5,
        "the tokens came back"
    );
    let entries = app
        .core
        .entries(app.org, None, creapic_core::page::PageLimit::max())
        .await
        .unwrap();
    let kinds: Vec<_> = entries.items.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["grant", "hold", "release"]);
    let test_key = app
        .key_in(app.org, &[Scope::ImageGeneration], KeyMode::Test)
        .await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&test_key)
            .json(&json!({"source": {"type": "text", "text": "a cat"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status, 200,
        "test keys always use the offline renderer: {b}"
    );
}

#[tokio::test]
async fn a_panicking_provider_is_a_failed_provider_refunded_and_the_server_stays_up() {
    use creapic_server_kit::generation::media::{MediaStore, SigningKey};
    use creapic_server_kit::generation::pipeline::Pipeline;
    use creapic_server_kit::generation::provider::{GeneratedImage, ImageProvider, ImageRequest};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Panics;
    #[async_trait::async_trait]
    impl ImageProvider for Panics {
        fn name(&self) -> &'static str {
            "panics"
        }

        async fn generate(
            &self,
            _: &ImageRequest,
        ) -> Result<GeneratedImage, creapic_server_kit::generation::Error> {
            panic!("a provider bug");
        }
    }

    let media = MediaStore::in_memory(SigningKey::generate());
    let pipeline = Pipeline::new(
        Arc::new(creapic_server_kit::generation::prompt::RuleComposer),
        Arc::new(Panics),
        media,
    );
    let app = common::app_with_pipeline(
        Arc::new(creapic_core::store::memory::MemoryStore::new()),
        creapic_server_kit::KitConfig::default(),
        pipeline,
    )
    .await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    for attempt in 0..2 {
        let (status, headers, b) = body(
            app.http
                .post(app.url("/api/public/images/generate"))
                .bearer_auth(&key)
                .json(&json!({"source": {"type": "text", "text": "a lighthouse"}}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 502, "attempt {attempt}: {b}");
        assert_eq!(b["code"], "provider_failed");
        assert_eq!(b["requestId"], headers["x-request-id"].to_str().unwrap());
        assert_eq!(
            app.core.balance(app.org).await.unwrap().get(),
            10,
            "the hold was released, not left open"
        );
    }
    let health = app.http.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server survived");
}
