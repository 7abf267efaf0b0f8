//! The remote adapters against mockito stand-ins of the Gemini and OpenAI APIs: success, 429
//! with a retry delay honoured, 5xx, timeout, malformed JSON, blocked prompt, oversized
//! response; and Gemini prompt composition with its fallback to the rules.
#![cfg(all(feature = "gemini", feature = "openai"))]
// Test helpers outside #[test] functions unwrap too: a failure is the test's answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use creapic_core::generation::{AspectRatio, Quality};
use creapic_server_kit::generation::Error;
use creapic_server_kit::generation::prompt::{GeminiComposer, PromptComposer};
use creapic_server_kit::generation::provider::gemini::{GeminiConfig, GeminiProvider};
use creapic_server_kit::generation::provider::openai::{OpenAiConfig, OpenAiProvider, SizeTable};
use creapic_server_kit::generation::provider::{HttpSettings, ImageProvider, ImageRequest};
use mockito::Matcher;
use secrecy::SecretString;
use serde_json::json;

const GEMINI_PATH: &str = "/v1beta/models/gemini-2.5-flash-image:generateContent";
const OPENAI_PATH: &str = "/v1/images/generations";

/// Pooled and standalone mockito servers alike.
trait Url {
    fn base(&self) -> String;
}

impl Url for mockito::ServerGuard {
    fn base(&self) -> String {
        self.url()
    }
}

impl Url for mockito::Server {
    fn base(&self) -> String {
        self.url()
    }
}

/// A server outside mockito's pool, for mocks that stall their thread: a pooled server would
/// be handed, still stalled, to the next test.
async fn standalone() -> mockito::Server {
    mockito::Server::new_with_opts_async(mockito::ServerOpts::default()).await
}

fn png_b64(w: u32, h: u32) -> String {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    base64::engine::general_purpose::STANDARD.encode(out.into_inner())
}

fn settings() -> HttpSettings {
    HttpSettings {
        timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        response_max_bytes: 1024 * 1024,
        rate_limit_retries_max: 2,
        retry_delay_max: Duration::from_secs(2),
        retry_delay_default: Duration::from_millis(10),
    }
}

fn request() -> ImageRequest {
    ImageRequest {
        prompt: json!({"subject": "a lemon", "palette": ["yellow"]}),
        aspect_ratio: AspectRatio::Landscape16x9,
        quality: Quality::Hd,
    }
}

fn gemini(server: &impl Url, http: HttpSettings) -> GeminiProvider {
    let mut config = GeminiConfig::new(SecretString::from("test-gemini-key"));
    config.base_url = server.base();
    config.http = http;
    GeminiProvider::new(config).unwrap()
}

fn openai(server: &impl Url, http: HttpSettings) -> OpenAiProvider {
    let mut config = OpenAiConfig::new(Some(SecretString::from("test-openai-key")));
    config.base_url = server.base();
    config.http = http;
    OpenAiProvider::new(config).unwrap()
}

fn gemini_image(part: serde_json::Value) -> String {
    json!({
        "candidates": [{
            "content": { "parts": [{ "text": "Here you go." }, part] },
            "finishReason": "STOP"
        }]
    })
    .to_string()
}

fn rate_limited(delay: &str) -> String {
    json!({"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
        ]
    }})
    .to_string()
}

// ----- Gemini -----

#[tokio::test]
async fn gemini_success_sends_the_documented_request() {
    let mut server = mockito::Server::new_async().await;
    let mock = server
        .mock("POST", GEMINI_PATH)
        .match_header("x-goog-api-key", "test-gemini-key")
        .match_body(Matcher::PartialJson(json!({
            "generationConfig": {
                "responseModalities": ["IMAGE"],
                "imageConfig": { "aspectRatio": "16:9" }
            }
        })))
        .match_body(Matcher::Regex("a lemon".into()))
        .with_header("content-type", "application/json")
        .with_body(gemini_image(
            json!({"inlineData": {"mimeType": "image/png", "data": png_b64(32, 18)}}),
        ))
        .expect(1)
        .create_async()
        .await;
    let image = gemini(&server, settings())
        .generate(&request())
        .await
        .unwrap();
    assert_eq!((image.width, image.height), (32, 18));
    assert_eq!(image.content_type(), "image/png");
    mock.assert_async().await;
}

#[tokio::test]
async fn gemini_accepts_snake_case_inline_data() {
    let mut server = mockito::Server::new_async().await;
    let _m = server
        .mock("POST", GEMINI_PATH)
        .with_body(gemini_image(
            json!({"inline_data": {"mime_type": "image/png", "data": png_b64(4, 4)}}),
        ))
        .create_async()
        .await;
    let image = gemini(&server, settings())
        .generate(&request())
        .await
        .unwrap();
    assert_eq!(image.width, 4);
}

#[tokio::test]
async fn gemini_429_waits_the_retry_delay_it_was_given() {
    let mut server = mockito::Server::new_async().await;
    let limited = server
        .mock("POST", GEMINI_PATH)
        .with_status(429)
        .with_body(rate_limited("0.3s"))
        .expect(1)
        .create_async()
        .await;
    let ok = server
        .mock("POST", GEMINI_PATH)
        .with_body(gemini_image(json!({"inlineData": {"data": png_b64(2, 2)}})))
        .expect(1)
        .create_async()
        .await;
    let started = Instant::now();
    let image = gemini(&server, settings())
        .generate(&request())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(image.width, 2);
    limited.assert_async().await;
    ok.assert_async().await;
}

#[tokio::test]
async fn gemini_429_with_a_delay_past_the_limit_is_returned_not_waited() {
    let mut server = mockito::Server::new_async().await;
    let limited = server
        .mock("POST", GEMINI_PATH)
        .with_status(429)
        .with_body(rate_limited("45s"))
        .expect(1)
        .create_async()
        .await;
    let started = Instant::now();
    let e = gemini(&server, settings())
        .generate(&request())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        e,
        Error::ProviderRateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(45)
    ));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(45)));
    limited.assert_async().await;
}

#[tokio::test]
async fn gemini_5xx_is_unavailable_and_left_to_the_runner() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", GEMINI_PATH)
        .with_status(503)
        .with_body(r#"{"error": {"code": 503, "message": "The model is overloaded."}}"#)
        .expect(1)
        .create_async()
        .await;
    let e = gemini(&server, settings())
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "provider_unavailable");
    assert!(e.to_string().contains("overloaded"));
    assert!(!e.to_string().contains("test-gemini-key"));
    m.assert_async().await;
}

#[tokio::test]
async fn gemini_timeout_is_typed() {
    let mut server = standalone().await;
    let _m = server
        .mock("POST", GEMINI_PATH)
        .with_chunked_body(|w| {
            std::thread::sleep(Duration::from_millis(1500));
            w.write_all(b"{}")
        })
        .create_async()
        .await;
    let http = HttpSettings {
        timeout: Duration::from_millis(200),
        ..settings()
    };
    let started = Instant::now();
    let e = gemini(&server, http)
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "provider_timeout");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn gemini_malformed_json_is_an_invalid_response() {
    let mut server = mockito::Server::new_async().await;
    let _m = server
        .mock("POST", GEMINI_PATH)
        .with_body(r#"{"candidates": [{"content": "#)
        .create_async()
        .await;
    let e = gemini(&server, settings())
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "provider_invalid_response");
    // Base64 that is not an image is invalid too.
    let mut server = mockito::Server::new_async().await;
    let _m = server
        .mock("POST", GEMINI_PATH)
        .with_body(gemini_image(
            json!({"inlineData": {"data": "bm90IGFuIGltYWdl"}}),
        ))
        .create_async()
        .await;
    let e = gemini(&server, settings())
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "provider_invalid_response");
}

#[tokio::test]
async fn gemini_blocked_prompts_are_typed_failures() {
    let cases = [
        (
            json!({"promptFeedback": {"blockReason": "SAFETY"}}),
            "SAFETY",
        ),
        (
            json!({"candidates": [{"finishReason": "IMAGE_SAFETY"}]}),
            "IMAGE_SAFETY",
        ),
        (
            json!({"candidates": [{"content": {"parts": [{"text": "I can't draw that."}]},
                   "finishReason": "STOP"}]}),
            "NO_IMAGE",
        ),
    ];
    for (body, reason) in cases {
        let mut server = mockito::Server::new_async().await;
        let m = server
            .mock("POST", GEMINI_PATH)
            .with_body(body.to_string())
            .expect(1)
            .create_async()
            .await;
        let e = gemini(&server, settings())
            .generate(&request())
            .await
            .unwrap_err();
        match e {
            Error::ProviderBlocked { reason: r, .. } => assert_eq!(r, reason),
            other => panic!("{other:?}"),
        }
        m.assert_async().await;
    }
}

#[tokio::test]
async fn gemini_oversized_responses_are_refused() {
    let mut server = mockito::Server::new_async().await;
    let _m = server
        .mock("POST", GEMINI_PATH)
        .with_body(gemini_image(
            json!({"inlineData": {"data": png_b64(64, 64)}}),
        ))
        .create_async()
        .await;
    let http = HttpSettings {
        response_max_bytes: 128,
        ..settings()
    };
    let e = gemini(&server, http)
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "provider_invalid_response");
    assert!(e.to_string().contains("exceeds 128 bytes"));
    // Without a Content-Length (chunked), the limit still holds.
    let mut server = mockito::Server::new_async().await;
    let _m = server
        .mock("POST", GEMINI_PATH)
        .with_chunked_body(|w| {
            for _ in 0..64 {
                w.write_all(&[b' '; 1024])?;
            }
            Ok(())
        })
        .create_async()
        .await;
    let http = HttpSettings {
        response_max_bytes: 4096,
        ..settings()
    };
    let e = gemini(&server, http)
        .generate(&request())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exceeds 4096 bytes"), "{e}");
}

#[tokio::test]
async fn gemini_composer_uses_the_model_and_falls_back_to_the_rules() {
    let mut server = mockito::Server::new_async().await;
    let composed = json!({
        "subject": "three citrus mocktails", "setting": "a sunlit bar", "style": "editorial",
        "lighting": "", "composition": "centered", "palette": ["lemon", "coral"],
        "negative": "text", "aspectRatio": "1:1", "quality": "standard"
    });
    let m = server
        .mock("POST", "/v1beta/models/gemini-2.5-flash:generateContent")
        .match_body(Matcher::PartialJson(json!({
            "generationConfig": { "responseMimeType": "application/json" }
        })))
        .with_body(
            json!({"candidates": [{"content": {"parts": [{"text": composed.to_string()}]}}]})
                .to_string(),
        )
        .expect(1)
        .create_async()
        .await;
    let mut config = GeminiConfig::new(SecretString::from("k"));
    config.base_url = server.url();
    config.http = settings();
    let composer = GeminiComposer::new(config.clone()).unwrap();
    let p = composer
        .compose("citrus mocktails", AspectRatio::Portrait4x5, Quality::Hd)
        .await
        .unwrap();
    assert_eq!(p.subject, "three citrus mocktails");
    assert_eq!(p.palette, ["lemon", "coral"]);
    // The request's ratio and quality win over the model's; empty fields come from the rules.
    assert_eq!((p.aspect_ratio.as_str(), p.quality.as_str()), ("4:5", "hd"));
    assert_eq!(p.lighting, "soft natural light");
    m.assert_async().await;

    // The model is down: the rules answer.
    let mut down = mockito::Server::new_async().await;
    let _m = down
        .mock("POST", Matcher::Any)
        .with_status(500)
        .create_async()
        .await;
    config.base_url = down.url();
    config.http.rate_limit_retries_max = 0;
    let p = GeminiComposer::new(config)
        .unwrap()
        .compose("citrus mocktails", AspectRatio::Square, Quality::Standard)
        .await
        .unwrap();
    assert_eq!(p.subject, "citrus mocktails");
}

// ----- OpenAI-compatible -----

fn openai_image(w: u32, h: u32) -> String {
    json!({"created": 1, "data": [{"b64_json": png_b64(w, h)}]}).to_string()
}

#[tokio::test]
async fn openai_success_maps_the_aspect_ratio_to_an_accepted_size() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", OPENAI_PATH)
        .match_header("authorization", "Bearer test-openai-key")
        .match_body(Matcher::PartialJson(json!({
            "model": "gpt-image-1", "size": "1536x1024", "quality": "high", "n": 1
        })))
        .with_body(openai_image(24, 16))
        .expect(1)
        .create_async()
        .await;
    let image = openai(&server, settings())
        .generate(&request())
        .await
        .unwrap();
    assert_eq!((image.width, image.height), (24, 16));
    m.assert_async().await;
}

#[tokio::test]
async fn openai_compatible_servers_get_exact_sizes_and_b64_json() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", OPENAI_PATH)
        .match_body(Matcher::PartialJson(json!({
            "model": "sdxl", "size": "2048x1152", "quality": "hd", "response_format": "b64_json"
        })))
        .with_body(openai_image(8, 8))
        .expect(1)
        .create_async()
        .await;
    let mut config = OpenAiConfig::new(None);
    config.base_url = server.url();
    config.model = "sdxl".into();
    config.sizes = SizeTable::for_model("sdxl");
    config.http = settings();
    let image = OpenAiProvider::new(config)
        .unwrap()
        .generate(&request())
        .await
        .unwrap();
    assert_eq!(image.width, 8);
    m.assert_async().await;
}

#[tokio::test]
async fn openai_429_waits_the_retry_after_it_was_given() {
    let mut server = mockito::Server::new_async().await;
    let limited = server
        .mock("POST", OPENAI_PATH)
        .with_status(429)
        .with_header("retry-after-ms", "250")
        .with_body(r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#)
        .expect(1)
        .create_async()
        .await;
    let ok = server
        .mock("POST", OPENAI_PATH)
        .with_body(openai_image(2, 2))
        .expect(1)
        .create_async()
        .await;
    let started = Instant::now();
    openai(&server, settings())
        .generate(&request())
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    limited.assert_async().await;
    ok.assert_async().await;
}

#[tokio::test]
async fn openai_failures_are_typed() {
    // (status, body, expected code)
    let cases = [
        (500, r#"{"error": {"message": "server error"}}"#.to_owned(), "provider_unavailable"),
        (
            400,
            r#"{"error": {"message": "Your request was rejected", "code": "content_policy_violation"}}"#
                .to_owned(),
            "provider_blocked",
        ),
        (401, r#"{"error": {"message": "Incorrect API key"}}"#.to_owned(), "provider_failed"),
        (200, "not json".to_owned(), "provider_invalid_response"),
        (200, r#"{"data": [{"url": "https://example.com/x.png"}]}"#.to_owned(), "provider_invalid_response"),
    ];
    for (status, body, code) in cases {
        let mut server = mockito::Server::new_async().await;
        let m = server
            .mock("POST", OPENAI_PATH)
            .with_status(status)
            .with_body(body)
            .expect(1)
            .create_async()
            .await;
        let e = openai(&server, settings())
            .generate(&request())
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{status}: {e}");
        m.assert_async().await;
    }
}

#[tokio::test]
async fn openai_timeouts_and_oversized_responses_are_typed() {
    let mut server = standalone().await;
    let _m = server
        .mock("POST", OPENAI_PATH)
        .with_chunked_body(|w| {
            std::thread::sleep(Duration::from_millis(1500));
            w.write_all(b"{}")
        })
        .create_async()
        .await;
    let http = HttpSettings {
        timeout: Duration::from_millis(200),
        ..settings()
    };
    let e = openai(&server, http)
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "provider_timeout");

    let mut server = mockito::Server::new_async().await;
    let _m = server
        .mock("POST", OPENAI_PATH)
        .with_body(openai_image(64, 64))
        .create_async()
        .await;
    let http = HttpSettings {
        response_max_bytes: 100,
        ..settings()
    };
    let e = openai(&server, http)
        .generate(&request())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exceeds 100 bytes"));
}
