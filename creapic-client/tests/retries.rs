//! Retries and failures a real server will not produce on demand, against mockito (429 with
//! `Retry-After`, 503 bursts, malformed JSON, slow answers, unknown codes, oversized bodies),
//! and the promise that matters most against the real server behind a lossy proxy: a POST
//! whose answer was lost is retried with the same `Idempotency-Key` and charged once.
//!
//! Waits go through a [`RecordingTime`], so backoffs are asserted exactly and cost nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{DropFirstResponses, RecordingTime, quick_retries, server};
use creapic_client::{Client, DashboardAuth, Error, ErrorCode, RetryPolicy};
use creapic_core::scope::Scope;
use mockito::Matcher;
use reqwest::StatusCode;

const KEY: &str = "wi_live_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ACCEPTED: &str = r#"{"jobId":"job-1","totalImages":1,"creditsUsed":1,"credits":4}"#;

fn error_body(code: &str) -> String {
    format!(r#"{{"error":"{code} happened","code":"{code}","requestId":"req-{code}"}}"#)
}

fn client(base: &str, time: &Arc<RecordingTime>, retry: RetryPolicy) -> Client {
    Client::builder()
        .base_url(base)
        .api_key_text(KEY)
        .retry(retry)
        .time(time.clone())
        .build()
        .unwrap()
}

/// Records the `Idempotency-Key` of every request a mock answers.
fn recorder() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(&mockito::Request) -> String + Send + Sync + 'static,
) {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&keys);
    let record = move |req: &mockito::Request| {
        let key = req
            .header("idempotency-key")
            .first()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        seen.lock().unwrap().push(key.clone());
        key
    };
    (keys, record)
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_with_the_same_idempotency_key() {
    let mut mock = mockito::Server::new_async().await;
    let (keys, record) = recorder();
    let record = Arc::new(record);
    let r1 = Arc::clone(&record);
    let limited = mock
        .mock("POST", "/api/playground/images")
        .match_header("authorization", format!("Bearer {KEY}").as_str())
        .with_status(429)
        .with_header("retry-after", "2")
        .with_body_from_request(move |req| {
            r1(req);
            error_body("rate_limited").into_bytes()
        })
        .expect(1)
        .create_async()
        .await;
    let r2 = Arc::clone(&record);
    let accepted = mock
        .mock("POST", "/api/playground/images")
        .with_status(202)
        .with_header("content-type", "application/json")
        .with_header("idempotent-replayed", "true")
        .with_body_from_request(move |req| {
            r2(req);
            ACCEPTED.as_bytes().to_vec()
        })
        .expect(1)
        .create_async()
        .await;
    let time = RecordingTime::new();
    let got = client(&mock.url(), &time, quick_retries())
        .playground()
        .create(["A beautiful sunset over the ocean"])
        .send_with_meta()
        .await
        .unwrap();
    limited.assert_async().await;
    accepted.assert_async().await;
    assert_eq!(got.body.job_id, "job-1");
    assert_eq!((got.meta.attempts, got.meta.replayed), (2, true));
    assert_eq!(
        time.sleeps(),
        vec![Duration::from_secs(2)],
        "exactly Retry-After"
    );
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].starts_with("creapic-rs-"), "{keys:?}");
    assert_eq!(keys[0], keys[1], "a retry repeats the Idempotency-Key");
    assert_eq!(got.meta.idempotency_key.as_deref(), Some(keys[0].as_str()));
}

#[tokio::test]
async fn a_503_burst_backs_off_exponentially_and_ends_with_the_last_error() {
    let mut mock = mockito::Server::new_async().await;
    let burst = mock
        .mock("GET", "/api/playground/images/job-1")
        .with_status(503)
        .with_body(error_body("store_unavailable"))
        .expect(4)
        .create_async()
        .await;
    let time = RecordingTime::new();
    let policy = RetryPolicy::new()
        .max_retries(3)
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(300))
        .jitter(false);
    let e = client(&mock.url(), &time, policy)
        .playground()
        .get("job-1")
        .await
        .expect_err("the burst outlasts the retries");
    burst.assert_async().await;
    let ms = Duration::from_millis;
    assert_eq!(
        time.sleeps(),
        vec![ms(100), ms(200), ms(300)],
        "doubling, capped"
    );
    let api = e.api().expect("the last answer");
    assert_eq!(
        (api.status, &api.code, api.request_id.as_deref()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            &ErrorCode::StoreUnavailable,
            Some("req-store_unavailable")
        )
    );
    assert!(e.is_retryable());
    // A shorter burst (a load balancer's bare 502s) is ridden out.
    mock.reset();
    let _bare = mock
        .mock("GET", "/api/playground/images/job-1")
        .with_status(502)
        .with_body("<html>bad gateway</html>")
        .expect(2)
        .create_async()
        .await;
    let status = r#"{"jobId":"job-1","status":"queued","totalImages":1,"completedImages":0,"failedImages":0,"creditsUsed":0,"creditsRefunded":0,"images":[],"createdAt":"2026-01-01T00:00:00Z","completedAt":null}"#;
    let _ok = mock
        .mock("GET", "/api/playground/images/job-1")
        .with_body(status)
        .create_async()
        .await;
    let got = client(&mock.url(), &time, quick_retries())
        .playground()
        .get("job-1")
        .send_with_meta()
        .await
        .unwrap();
    assert_eq!(got.meta.attempts, 3);
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let mut mock = mockito::Server::new_async().await;
    let time = RecordingTime::new();
    let cases = [
        (
            502,
            error_body("provider_blocked"),
            ErrorCode::ProviderBlocked,
        ),
        (500, error_body("internal_error"), ErrorCode::InternalError),
        (
            402,
            error_body("insufficient_credits"),
            ErrorCode::InsufficientCredits,
        ),
        (
            418,
            error_body("quota_frozen"),
            ErrorCode::Unknown("quota_frozen".into()),
        ),
    ];
    for (status, body, code) in cases {
        mock.reset();
        let once = mock
            .mock("POST", "/api/public/images/generate")
            .with_status(status)
            .with_body(&body)
            .expect(1)
            .create_async()
            .await;
        let e = client(&mock.url(), &time, quick_retries())
            .images()
            .generate_text("x")
            .await
            .expect_err("an error");
        once.assert_async().await;
        assert_eq!(e.api().map(|a| &a.code), Some(&code), "{body}");
        assert_eq!(e.code(), code.as_str(), "unknown codes keep their text");
    }
    assert!(time.sleeps().is_empty());
}

#[tokio::test]
async fn a_retry_after_beyond_the_bound_is_returned_at_once() {
    let mut mock = mockito::Server::new_async().await;
    let once = mock
        .mock("GET", "/api/playground/images/job-1")
        .with_status(429)
        .with_header("retry-after", "3600")
        .with_body(error_body("rate_limited"))
        .expect(1)
        .create_async()
        .await;
    let time = RecordingTime::new();
    let e = client(&mock.url(), &time, quick_retries())
        .playground()
        .get("job-1")
        .await
        .expect_err("refused");
    once.assert_async().await;
    assert_eq!(
        e.api().and_then(|a| a.retry_after),
        Some(Duration::from_secs(3600))
    );
    assert!(time.sleeps().is_empty(), "no hour-long sleep");
}

#[tokio::test]
async fn malformed_json_and_oversized_answers_are_decode_failures_not_retried() {
    let mut mock = mockito::Server::new_async().await;
    let malformed = mock
        .mock("GET", "/api/playground/images/job-1")
        .with_header("x-request-id", "req-bad-json")
        .with_body(r#"{"jobId": "job-1", "status": "#)
        .expect(1)
        .create_async()
        .await;
    let time = RecordingTime::new();
    let e = client(&mock.url(), &time, quick_retries())
        .playground()
        .get("job-1")
        .await
        .expect_err("malformed");
    malformed.assert_async().await;
    assert!(
        matches!(&e, Error::Decode { status, .. } if *status == StatusCode::OK),
        "{e:?}"
    );
    assert_eq!((e.code(), e.request_id()), ("decode", Some("req-bad-json")));
    // A body of the wrong shape is a decode error too, naming what is missing.
    mock.reset();
    let _shape = mock
        .mock("POST", "/api/public/organizations/create")
        .with_status(201)
        .with_body(r#"{"organization": {"id": "o"}, "role": "owner"}"#)
        .create_async()
        .await;
    let e = client(&mock.url(), &time, quick_retries())
        .organizations()
        .create("x")
        .await
        .expect_err("wrong shape");
    assert!(e.to_string().contains("missing field"), "{e}");
    // An answer over the size bound is not read past it.
    mock.reset();
    let _big = mock
        .mock("GET", "/api/playground/images/job-1")
        .with_body(vec![b' '; 4096])
        .create_async()
        .await;
    let small = Client::builder()
        .base_url(mock.url())
        .api_key_text(KEY)
        .response_max_bytes(1024)
        .build()
        .unwrap();
    let e = small.playground().get("job-1").await.expect_err("too big");
    assert!(
        matches!(e, Error::ResponseTooLarge { max_bytes: 1024 }),
        "{e:?}"
    );
    assert!(time.sleeps().is_empty());
}

#[tokio::test]
async fn a_slow_answer_times_out_is_retried_and_reports_the_request_id() {
    let mut mock = mockito::Server::new_async().await;
    let _slow = mock
        .mock("GET", "/api/playground/images/job-1")
        .with_chunked_body(|w| {
            std::thread::sleep(Duration::from_millis(300));
            w.write_all(b"{}")
        })
        .create_async()
        .await;
    let time = RecordingTime::new();
    let c = Client::builder()
        .base_url(mock.url())
        .api_key_text(KEY)
        .timeout(Duration::from_millis(100))
        .retry(quick_retries().max_retries(1))
        .time(time.clone())
        .build()
        .unwrap();
    let e = c.playground().get("job-1").await.expect_err("too slow");
    assert!(
        matches!(e, Error::Timeout { timeout, .. } if timeout == Duration::from_millis(100)),
        "{e:?}"
    );
    assert!(e.request_id().is_some_and(|id| id.len() == 32));
    assert_eq!(
        time.sleeps().len(),
        1,
        "timed out twice: once, then once more after a retry"
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported_as_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let time = RecordingTime::new();
    let e = client(&base, &time, quick_retries())
        .images()
        .generate_text("x")
        .await
        .expect_err("nobody listens");
    assert_eq!(e.code(), "connect");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    assert_eq!(time.sleeps().len(), 3);
}

#[tokio::test]
async fn dashboard_calls_and_media_downloads_never_carry_the_api_key() {
    let mut mock = mockito::Server::new_async().await;
    let listed = mock
        .mock("GET", "/api/keys")
        .match_query(Matcher::UrlEncoded("organizationId".into(), "org 1".into()))
        .match_header("authorization", "Bearer session-123")
        .match_header("x-proxy", "p")
        .with_body(r#"{"keys":[],"nextCursor":null}"#)
        .expect(1)
        .create_async()
        .await;
    let media = mock
        .mock("GET", "/api/media/o/k.png")
        .match_query(Matcher::UrlEncoded("sig".into(), "s".into()))
        .match_header("authorization", Matcher::Missing)
        .with_header("content-type", "image/png")
        .with_body(b"\x89PNG")
        .expect(1)
        .create_async()
        .await;
    let c = Client::builder()
        .base_url(mock.url())
        .api_key_text(KEY)
        .dashboard_auth(DashboardAuth::bearer("session-123"))
        .default_header("x-proxy", "p")
        .build()
        .unwrap();
    let page = c.keys().list("org 1", &Default::default()).await.unwrap();
    assert!(page.keys.is_empty());
    let file = c
        .media()
        .download("/api/media/o/k.png?expires=1&sig=s")
        .await
        .unwrap();
    assert_eq!(
        (file.bytes.as_slice(), file.extension()),
        (&b"\x89PNG"[..], "png")
    );
    listed.assert_async().await;
    media.assert_async().await;
    // A link to another host (a CDN) gets neither the key nor the default headers.
    let mut cdn = mockito::Server::new_async().await;
    let elsewhere = cdn
        .mock("GET", "/k.png")
        .match_header("authorization", Matcher::Missing)
        .match_header("x-proxy", Matcher::Missing)
        .with_body(b"\x89PNG")
        .expect(1)
        .create_async()
        .await;
    c.media()
        .download(&format!("{}/k.png", cdn.url()))
        .await
        .unwrap();
    elsewhere.assert_async().await;
}

#[tokio::test]
async fn a_post_whose_answer_was_lost_is_retried_and_charged_once() {
    let s = server().await;
    s.grant(s.org, 10).await;
    let key = s.key(&[Scope::ImageGeneration]).await;
    // The first answer is lost after the server has run (and charged) the request.
    let proxy = DropFirstResponses::start(&s.base, 1).await;
    let client = Client::builder()
        .base_url(&proxy.base)
        .api_key_text(&key)
        .retry(quick_retries())
        .build()
        .unwrap();
    let got = client
        .playground()
        .create([
            "A beautiful sunset over the ocean",
            "A futuristic cityscape",
        ])
        .send_with_meta()
        .await
        .unwrap();
    assert_eq!(got.meta.attempts, 2, "the lost answer was retried");
    assert!(got.meta.replayed, "the retry got the stored answer");
    assert_eq!((got.body.credits_used, got.body.credits), (2, 8));
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 2);
    assert_eq!(s.balance().await, 8, "two images charged once, not twice");
    // Same for a synchronous generation.
    let proxy = DropFirstResponses::start(&s.base, 1).await;
    let client = Client::builder()
        .base_url(&proxy.base)
        .api_key_text(&key)
        .retry(quick_retries())
        .build()
        .unwrap();
    let image = client
        .images()
        .generate_text("A lemon")
        .send_with_meta()
        .await
        .unwrap();
    assert!(image.meta.replayed);
    assert_eq!(image.body.tokens, 7);
    assert_eq!(s.balance().await, 7);
}
