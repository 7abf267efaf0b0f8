//! Webhook delivery against mock receivers on loopback: signed in the Standard Webhooks format,
//! retried with backoff on 5xx, not retried on a 4xx refusal, skipped without an endpoint;
//! loopback, private and link-local destinations refused unless the host allows them (the
//! receivers here live on loopback, so every other test allows them explicitly); and one
//! tenant's receiver that never answers does not hold up another tenant's events.
// Test helpers outside #[test] functions unwrap too: a failure is the test's answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use creapic_core::clock::{Clock, SystemClock, Timestamp};
use creapic_core::id::OrgId;
use creapic_core::random::SeededRandom;
use creapic_server_kit::generation::retry::RetryPolicy;
use creapic_server_kit::generation::webhook::{
    Destinations, Event, StaticEndpoints, WebhookConfig, WebhookEndpoint, WebhookSecret,
    WebhookSender,
};

/// Small limits and fast retries; loopback receivers allowed explicitly.
fn config() -> WebhookConfig {
    WebhookConfig {
        queue_max: 8,
        org_queue_max: 8,
        concurrency_max: 2,
        org_concurrency_max: 2,
        retry: RetryPolicy {
            attempts_max: 3,
            delay_min: Duration::from_millis(5),
            delay_max: Duration::from_millis(20),
        },
        timeout: Duration::from_secs(2),
        destinations: Destinations::Any,
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

#[tokio::test]
async fn loopback_private_and_link_local_destinations_are_refused_by_default() {
    let mut server = mockito::Server::new_async().await;
    let never = server
        .mock("POST", "/hook")
        .with_status(200)
        .expect(0)
        .create_async()
        .await;
    let port = server.socket_address().port();
    let targets = [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
        "http://192.168.1.1/hook".to_owned(),
        "http://[fd00::1]/hook".to_owned(),
    ];
    let endpoints = Arc::new(StaticEndpoints::new());
    let refusing = WebhookConfig {
        destinations: Destinations::PublicOnly,
        ..config()
    };
    for (i, url) in targets.iter().enumerate() {
        let endpoint = WebhookEndpoint::new(url, WebhookSecret::generate()).unwrap();
        // A host registering it learns at once.
        let refused = endpoint
            .check_destination(Destinations::PublicOnly)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), "invalid_parameter", "{url}");
        assert!(
            endpoint.check_destination(Destinations::Any).await.is_ok(),
            "{url}"
        );
        endpoints.set(org(100 + i as u64), endpoint);
    }
    let sender = WebhookSender::start(endpoints.clone(), refusing).unwrap();
    let queue = sender.queue();
    for i in 0..targets.len() {
        assert!(queue.enqueue(event(org(100 + i as u64))));
    }
    drop(queue);
    sender.close(Duration::from_secs(10)).await;
    never.assert_async().await;

    // The same loopback receiver, allowed explicitly by the host: delivered.
    let allowed = server
        .mock("POST", "/hook")
        .with_status(200)
        .expect(2)
        .create_async()
        .await;
    let sender = WebhookSender::start(endpoints, config()).unwrap();
    let queue = sender.queue();
    assert!(queue.enqueue(event(org(100))));
    assert!(queue.enqueue(event(org(101))));
    drop(queue);
    sender.close(Duration::from_secs(10)).await;
    allowed.assert_async().await;
}

/// A receiver on loopback that accepts connections and never answers; counts them.
async fn silent_receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_tenant_whose_receiver_never_answers_does_not_hold_up_the_others() {
    let (silent, accepted) = silent_receiver().await;
    let mut server = mockito::Server::new_async().await;
    let answered = server
        .mock("POST", "/hook")
        .with_status(200)
        .expect(1)
        .create_async()
        .await;
    let (a, b) = (org(7), org(8));
    let endpoints = Arc::new(StaticEndpoints::new());
    endpoints.set(
        a,
        WebhookEndpoint::new(&silent, WebhookSecret::generate()).unwrap(),
    );
    endpoints.set(
        b,
        WebhookEndpoint::new(&format!("{}/hook", server.url()), WebhookSecret::generate()).unwrap(),
    );
    // The shipped slot counts; attempts that outlast the test.
    let config = WebhookConfig {
        queue_max: 64,
        org_queue_max: 32,
        concurrency_max: WebhookConfig::default().concurrency_max,
        org_concurrency_max: WebhookConfig::default().org_concurrency_max,
        retry: RetryPolicy {
            attempts_max: 1,
            delay_min: Duration::from_millis(5),
            delay_max: Duration::from_millis(5),
        },
        timeout: Duration::from_secs(120),
        destinations: Destinations::Any,
    };
    let sender = WebhookSender::start(endpoints, config).unwrap();
    let queue = sender.queue();
    for _ in 0..20 {
        assert!(queue.enqueue(event(a)));
    }
    assert!(queue.enqueue(event(b)));
    // Wait (bounded) for b's event; a's attempts will not end for minutes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !answered.matched_async().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b's event waited behind a's silent receiver ({} connections held)",
            accepted.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        config.org_concurrency_max,
        "a holds only its own share of the slots"
    );
    drop(queue);
    drop(sender);
}
