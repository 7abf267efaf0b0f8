//! The waiters over HTTP with scripted answers (mockito) and recorded time: a job polled
//! through queued → running → completed with progress and growing delays, a wait that runs
//! out with a typed `ExceededMaxWait`, a failed render returned as finished, and a poll error
//! ending the wait. (The real server and runner drive the waiters in `live_server.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RecordingTime, quick_retries};
use creapic_client::wire::JobStatusWire;
use creapic_client::{Client, Error, ErrorCode, Progress, WaitOptions};

const KEY: &str = "wi_test_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn job(status: &str, completed: u32, failed: u32) -> String {
    format!(
        r#"{{"jobId":"job-1","status":"{status}","totalImages":3,"completedImages":{completed},"failedImages":{failed},"creditsUsed":{completed},"creditsRefunded":{failed},"images":[],"createdAt":"2026-01-01T00:00:00Z","completedAt":null}}"#
    )
}

fn render(status: &str) -> String {
    format!(
        r#"{{"render":{{"id":"r-1","status":"{status}","aspectRatio":"1:1","quality":"standard","tokensReserved":2,"tokensUsed":0,"error":{{"code":"provider_timeout","message":"slow"}},"createdAt":"2026-01-01T00:00:00Z"}}}}"#
    )
}

fn client(base: &str, time: &Arc<RecordingTime>) -> Client {
    Client::builder()
        .base_url(base)
        .api_key_text(KEY)
        .retry(quick_retries())
        .time(time.clone())
        .build()
        .unwrap()
}

const OPTIONS: WaitOptions = WaitOptions {
    max_wait: Duration::from_secs(60),
    min_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(5),
};

#[tokio::test]
async fn a_job_is_polled_to_the_end_with_progress_and_growing_delays() {
    let mut mock = mockito::Server::new_async().await;
    let path = "/api/playground/images/job-1";
    let mut mocks = Vec::new();
    for (body, hits) in [
        (job("queued", 0, 0), 2),
        (job("running", 1, 0), 2),
        (job("partial", 2, 1), 1),
    ] {
        mocks.push(
            mock.mock("GET", path)
                .with_body(body)
                .expect(hits)
                .create_async()
                .await,
        );
    }
    let time = RecordingTime::new();
    let c = client(&mock.url(), &time);
    let mut seen: Vec<Progress> = Vec::new();
    let done = c
        .playground()
        .wait_for_job("job-1", OPTIONS)
        .on_progress(|p| seen.push(p))
        .await
        .unwrap();
    for m in &mocks {
        m.assert_async().await;
    }
    assert_eq!(
        done.status,
        JobStatusWire::Partial,
        "finished, not necessarily successful"
    );
    let completed: Vec<(u32, u32)> = seen.iter().map(|p| (p.completed, p.failed)).collect();
    assert_eq!(completed, vec![(0, 0), (0, 0), (1, 0), (1, 0), (2, 1)]);
    assert!(seen.iter().all(|p| p.total == 3));
    let sleeps = time.sleeps();
    assert_eq!(sleeps.len(), 4);
    for (i, d) in sleeps.iter().enumerate() {
        let ceiling = (OPTIONS.min_delay * 2u32.pow(i as u32)).min(OPTIONS.max_delay);
        assert!(*d >= OPTIONS.min_delay && *d <= ceiling, "delay {i}: {d:?}");
    }
}

#[tokio::test]
async fn a_job_that_never_finishes_ends_in_exceeded_max_wait() {
    let mut mock = mockito::Server::new_async().await;
    let _running = mock
        .mock("GET", "/api/playground/images/job-1")
        .with_body(job("running", 1, 0))
        .create_async()
        .await;
    let time = RecordingTime::new();
    let e = client(&mock.url(), &time)
        .playground()
        .wait_for_job("job-1", OPTIONS)
        .await
        .expect_err("gives up");
    let Error::ExceededMaxWait(exceeded) = e else {
        panic!("expected ExceededMaxWait, got {e:?}");
    };
    assert_eq!(exceeded.max_wait, OPTIONS.max_wait);
    assert_eq!(exceeded.elapsed, time.elapsed());
    assert!(exceeded.elapsed <= OPTIONS.max_wait);
    assert!(exceeded.elapsed + OPTIONS.min_delay > OPTIONS.max_wait);
    assert_eq!(exceeded.attempts as usize, time.sleeps().len() + 1);
    assert!(
        exceeded.attempts >= 12 && exceeded.attempts <= 60,
        "{exceeded:?}"
    );
}

#[tokio::test]
async fn a_failed_render_is_returned_as_finished_and_poll_errors_end_the_wait() {
    let mut mock = mockito::Server::new_async().await;
    let _queued = mock
        .mock("GET", "/api/public/scenes/render/r-1")
        .with_body(render("running"))
        .expect(1)
        .create_async()
        .await;
    let _failed = mock
        .mock("GET", "/api/public/scenes/render/r-1")
        .with_body(render("failed"))
        .create_async()
        .await;
    let time = RecordingTime::new();
    let c = client(&mock.url(), &time);
    let mut last = Progress::default();
    let r = c
        .scenes()
        .wait_for_render("r-1", OPTIONS)
        .on_progress(|p| last = p)
        .await
        .unwrap();
    assert_eq!(r.status, JobStatusWire::Failed);
    assert_eq!(r.error.map(|e| e.code).as_deref(), Some("provider_timeout"));
    assert_eq!((last.completed, last.failed, last.total), (0, 1, 1));
    // A poll answered with an error is not "still pending".
    let _gone = mock
        .mock("GET", "/api/public/scenes/render/r-2")
        .with_status(404)
        .with_body(r#"{"error":"render not found","code":"not_found","requestId":"x"}"#)
        .expect(1)
        .create_async()
        .await;
    let e = c
        .scenes()
        .wait_for_render("r-2", OPTIONS)
        .await
        .expect_err("not found");
    assert_eq!(e.api().map(|a| &a.code), Some(&ErrorCode::NotFound));
}
