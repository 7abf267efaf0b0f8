//! Webhook delivery against a mockito receiver: signed in the Standard Webhooks format,
//! retried with backoff on 5xx, not retried on a 4xx refusal, skipped without an endpoint.
// Test helpers outside #[test] functions unwrap too: a failure is the test's answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use creapic_core::clock::{Clock, SystemClock, Timestamp};
use creapic_core::id::OrgId;
use creapic_core::random::SeededRandom;
use creapic_server_kit::retry::RetryPolicy;
use creapic_server_kit::webhook::{
    Event, StaticEndpoints, WebhookConfig, WebhookEndpoint, WebhookSecret, WebhookSender,
};

fn config() -> WebhookConfig {
    WebhookConfig {
        queue_max: 8,
        concurrency_max: 2,
        retry: RetryPolicy {
            attempts_max: 3,
            delay_min: Duration::from_millis(5),
            delay_max: Duration::from_millis(20),
        },
        timeout: Duration::from_secs(2),
    }
}

fn org(seed: u64) -> OrgId {
    OrgId::generate(Timestamp::from_unix_ms(1), &SeededRandom::new(seed))
}

fn event(org: OrgId) -> Event {
    Event {
        org,
        id: "msg_test".into(),
        body: Bytes::from_static(br#"{"type":"job.completed"}"#),
    }
}

#[tokio::test]
async fn deliveries_are_signed_and_retried_after_server_errors() {
    let secret = WebhookSecret::generate();
    let mut server = mockito::Server::new_async().await;
    let failing = server
        .mock("POST", "/hook")
        .with_status(503)
        .expect(1)
        .create_async()
        .await;
    let verifier = secret.clone();
    let ok = server
        .mock("POST", "/hook")
        .match_header("webhook-id", "msg_test")
        .match_request(move |req| {
            let now = SystemClock.now().unix_ms() / 1000;
            let body = req.body().cloned().unwrap_or_default();
            verifier
                .verify(req.headers(), &body, now, Duration::from_secs(60))
                .is_ok()
        })
        .with_status(200)
        .expect(1)
        .create_async()
        .await;
    let endpoints = Arc::new(StaticEndpoints::new());
    let (a, b) = (org(1), org(2));
    endpoints.set(
        a,
        WebhookEndpoint::new(&format!("{}/hook", server.url()), secret).unwrap(),
    );
    let sender = WebhookSender::start(endpoints, config()).unwrap();
    let queue = sender.queue();
    assert!(queue.enqueue(event(a)));
    // An organization without an endpoint gets nothing (and nothing fails).
    assert!(queue.enqueue(event(b)));
    drop(queue);
    sender.close(Duration::from_secs(5)).await;
    failing.assert_async().await;
    ok.assert_async().await;
}

#[tokio::test]
async fn a_refusal_is_final_and_a_full_queue_drops() {
    let mut server = mockito::Server::new_async().await;
    let refused = server
        .mock("POST", "/hook")
        .with_status(410)
        .expect(1)
        .create_async()
        .await;
    let endpoints = Arc::new(StaticEndpoints::new());
    let a = org(3);
    endpoints.set(
        a,
        WebhookEndpoint::new(&format!("{}/hook", server.url()), WebhookSecret::generate()).unwrap(),
    );
    let sender = WebhookSender::start(endpoints, config()).unwrap();
    let queue = sender.queue();
    assert!(queue.enqueue(event(a)));
    drop(queue);
    sender.close(Duration::from_secs(5)).await;
    refused.assert_async().await;

    // A queue of one, with the sender's task not yet running, refuses the overflow.
    let tiny = WebhookConfig {
        queue_max: 1,
        ..config()
    };
    let sender = WebhookSender::start(Arc::new(StaticEndpoints::new()), tiny).unwrap();
    let queue = sender.queue();
    let accepted = (0..5).filter(|_| queue.enqueue(event(a))).count();
    assert!(accepted < 5);
}
