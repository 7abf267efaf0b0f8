//! A generation whose provider fails, retried the way the client retries it: through the real
//! server kit (SQLite) with an OpenAI-compatible provider mocked by mockito. The client resends
//! a 502 with the same `Idempotency-Key`; the server must treat that as a fresh, paid attempt
//! (the first one was refunded), never as a replay of the released hold — which would call the
//! provider without payment and then fail to capture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::server_with_pipeline;
use creapic_client::Client;
use creapic_core::generation::{AspectRatio, Quality};
use creapic_core::ledger::EntryKind;
use creapic_core::page::PageLimit;
use creapic_core::scope::Scope;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::prompt::RuleComposer;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::provider::openai::{OpenAiConfig, OpenAiProvider};
use creapic_server_kit::generation::provider::{ImageProvider, ImageRequest};
use creapic_server_kit::generation::retry::RetryPolicy;
use creapic_server_kit::{KitConfig, RateLimitConfig};
use secrecy::SecretString;

const OPENAI_PATH: &str = "/v1/images/generations";

/// A real PNG, as an OpenAI-compatible server would send it.
async fn openai_image() -> String {
    let image = OfflineRenderer::with_long_sides(48, 48)
        .generate(&ImageRequest {
            prompt: serde_json::json!({"subject": "a lemon"}),
            aspect_ratio: AspectRatio::Square,
            quality: Quality::Standard,
        })
        .await
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image.bytes);
    serde_json::json!({"created": 1, "data": [{"b64_json": b64}]}).to_string()
}

fn pipeline(provider_base: String) -> Pipeline {
    let mut config = OpenAiConfig::new(Some(SecretString::from("test-openai-key")));
    config.base_url = provider_base;
    config.http.timeout = Duration::from_secs(5);
    let provider = OpenAiProvider::new(config).unwrap();
    // One provider attempt per request, so the request's 502 is the mock's first 500.
    let retry = RetryPolicy {
        attempts_max: 1,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(1),
    };
    Pipeline::new(
        Arc::new(RuleComposer),
        Arc::new(provider),
        MediaStore::in_memory(SigningKey::generate()),
    )
    .with_retry(retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_retry_after_a_provider_failure_is_a_fresh_paid_attempt() {
    let mut provider = mockito::Server::new_async().await;
    // The first answer is a 500; every later one an image (mockito answers with the first
    // matching mock that still misses hits, then the last one).
    let failing = provider
        .mock("POST", OPENAI_PATH)
        .with_status(500)
        .with_body(r#"{"error":{"message":"upstream exploded"}}"#)
        .expect(1)
        .create_async()
        .await;
    let working = provider
        .mock("POST", OPENAI_PATH)
        .with_body(openai_image().await)
        .expect(1)
        .create_async()
        .await;
    let config = KitConfig {
        rate_limit: RateLimitConfig {
            per_second: 10_000,
            burst: 10_000,
        },
        ..KitConfig::default()
    };
    let server = server_with_pipeline(config, false, pipeline(provider.url())).await;
    server.grant(server.org, 10).await;
    let key = server.key(&[Scope::ImageGeneration]).await;
    let client: Client = server.client(&key);

    // One call: the client sends, gets 502 provider_unavailable, retries with the same key.
    let response = client
        .images()
        .generate_text("A lemon on a table")
        .send_with_meta()
        .await
        .expect("the retry is a fresh attempt that succeeds");
    assert_eq!(response.meta.attempts, 2, "one failure, one retry");
    failing.assert_async().await;
    working.assert_async().await;

    // Paid exactly once: the failed attempt was refunded, the retry held and captured anew.
    assert_eq!(server.balance().await, 9);
    assert_eq!(response.body.tokens, 9);
    let entries = server
        .core
        .entries(server.org, None, PageLimit::new(100).unwrap())
        .await
        .unwrap()
        .items;
    let sum: i64 = entries.iter().map(|e| e.delta).sum();
    assert_eq!(sum, 9, "the ledger sums to the balance: {entries:?}");
    let holds: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Hold)
        .map(|e| e.idempotency_key.as_str())
        .collect();
    assert_eq!(holds.len(), 2, "a hold per attempt: {entries:?}");
    assert_ne!(holds[0], holds[1], "the retry's hold is its own");
    let released = entries.iter().filter(|e| e.kind == EntryKind::Release);
    assert_eq!(released.count(), 1, "the failed attempt was refunded");
}
