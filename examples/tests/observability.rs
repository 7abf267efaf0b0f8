//! What an operator reads from `creapic serve`, tried against the built binary on SQLite:
//!
//! - with `--log-format json` every log event is one JSON object per line, and every request,
//!   answered or refused, has one access line at info naming its route template, status,
//!   latency, request id and (once the key is verified) organization — and no line holds the
//!   key's secret part, nor a console password, session or CSRF token;
//! - `/metrics` on `--metrics-listen` exports request durations as Prometheus histograms (with
//!   `le` buckets, not quantiles), the queue-depth and runner-slot gauges, and after a bulk job
//!   the generation histogram of the offline provider and the ledger histogram.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Serve;
use support::console_http::{csrf_of, get_page, no_redirects, sign_in};
use support::store::{PASSWORD, Store};

/// The longest a test waits for the server (a log line, a job).
const WAIT_MAX: Duration = Duration::from_secs(60);

/// An organization with credits and a live image key: (org id, key).
fn org_with_key(store: &Store) -> (String, String) {
    let org = store.org("Observed");
    store.json(
        &[
            "credits", "grant", "--org", &org, "--amount", "20", "--json",
        ],
        None,
    );
    let key = store.json(
        &[
            "key",
            "create",
            "--org",
            &org,
            "--name",
            "observed",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
        None,
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    (org, key)
}

/// The JSON log events so far. Every line must parse: a collector reads them all, the start-up
/// banner and the warnings included.
fn events(server: &Serve) -> Vec<Value> {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        // Every line: a collector parses them all, the start-up banner included.
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The access line of the request sent with `x-request-id: id`, waiting for it.
fn access_line(server: &Serve, id: &str) -> Value {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let found = events(server)
            .into_iter()
            .find(|e| e["message"] == "finished" && e["span"]["request_id"] == id);
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no access line for {id}; log:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `http://ADDR/metrics`, from the server's start: the text banner's line, or the `metrics`
/// field of the JSON `listening` event.
fn metrics_url(server: &Serve) -> String {
    if let Some(url) = events_if_json(server)
        .and_then(|e| e.into_iter().find(|e| e["message"] == "listening"))
        .and_then(|start| start["metrics"].as_str().map(str::to_owned))
    {
        return url;
    }
    let line = server
        .wait_for_log("creapic metrics on ", WAIT_MAX)
        .expect("the metrics address is printed");
    line.trim_start_matches("creapic metrics on ")
        .trim()
        .to_owned()
}

/// [`events`] when the server logs JSON (its first line is an object).
fn events_if_json(server: &Serve) -> Option<Vec<Value>> {
    let json = server
        .log
        .lock()
        .unwrap()
        .first()
        .is_some_and(|l| l.starts_with('{'));
    json.then(|| events(server))
}

/// The value of the sample line that starts with `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_and_histograms_tell_an_operator_what_happened() {
    let store = Store::sqlite();
    let (org, key) = org_with_key(&store);
    store.person("watcher@example.com", &org, "owner");
    let server = store.serve_with(
        &["--log-format", "json", "--metrics-listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info")],
    );
    let base = &server.base;
    let http = reqwest::Client::new();

    // The start is one event with the facts a person reads in the text banner; no plain line
    // (`events` refuses any line that is not JSON, the data directory's warning included).
    let start = events(&server)
        .into_iter()
        .find(|e| e["message"] == "listening")
        .expect("a listening event");
    assert_eq!(start["target"], "creapic::serve", "{start}");
    assert_eq!(start["address"], base.as_str(), "{start}");
    assert!(
        start["store"]
            .as_str()
            .is_some_and(|s| s.starts_with("sqlite:")),
        "{start}"
    );
    assert!(
        start["metrics"]
            .as_str()
            .is_some_and(|m| m.ends_with("/metrics")),
        "{start}"
    );
    assert!(
        start["runner"]
            .as_str()
            .is_some_and(|r| r.contains("generations at once")),
        "{start}"
    );

    // A bulk job (the runner is on), then its status: the route with a template.
    let submitted = http
        .post(format!("{base}/api/playground/images"))
        .bearer_auth(&key)
        .json(&json!({"prompts": ["a red kite", "a blue boat"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);
    let job: Value = submitted.json().await.unwrap();
    let job_id = job["jobId"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + WAIT_MAX;
    let mut n = 0;
    let request_id = loop {
        n += 1;
        let id = format!("obs-status-{n}");
        let status: Value = http
            .get(format!("{base}/api/playground/images/{job_id}"))
            .bearer_auth(&key)
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "completed" {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not complete: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let line = access_line(&server, &request_id);
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    assert_eq!(line["target"], "creapic_server_kit::http::request_id");
    let span = &line["span"];
    assert_eq!(span["method"], "GET", "{line}");
    assert_eq!(span["route"], "/api/playground/images/{job_id}", "{line}");
    assert_eq!(
        span["path"],
        format!("/api/playground/images/{job_id}"),
        "{line}"
    );
    assert_eq!(span["status"], 200, "{line}");
    assert_eq!(span["org"], org.as_str(), "{line}");
    assert_eq!(span["key"], &key[..12], "{line}");
    assert!(
        span["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );

    // A refused request is logged too, with its status and route, and no organization.
    let refused = http
        .get(format!("{base}/api/public/credits"))
        .bearer_auth(format!("{}{}", &key[..12], "0".repeat(key.len() - 12)))
        .header("x-request-id", "obs-refused")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let line = access_line(&server, "obs-refused");
    assert_eq!(line["span"]["status"], 401, "{line}");
    assert_eq!(line["span"]["route"], "/api/public/credits", "{line}");
    assert!(line["span"]["org"].is_null(), "{line}");

    // The console: its pages are logged under their templates, its secrets never.
    let console = no_redirects();
    let (_, cookie) = sign_in(&console, base, "watcher@example.com").await;
    let (status, page) = get_page(&console, &format!("{base}/console/keys"), &cookie).await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    let session = cookie.split_once('=').unwrap().1.to_owned();
    let deadline = Instant::now() + WAIT_MAX;
    while !events(&server)
        .iter()
        .any(|e| e["message"] == "finished" && e["span"]["route"] == "/console/keys")
    {
        assert!(
            Instant::now() < deadline,
            "no access line for /console/keys"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // One access line per request, and never a secret anywhere.
    let log = server.log_text();
    let same_id = events(&server)
        .iter()
        .filter(|e| e["message"] == "finished" && e["span"]["request_id"] == request_id)
        .count();
    assert_eq!(same_id, 1, "{log}");
    assert!(!log.contains(&key[12..]), "the key's secret is in the log");
    assert!(!log.contains(PASSWORD), "a password is in the log");
    assert!(!log.contains(&session), "a session token is in the log");
    assert!(!log.contains(&csrf), "a CSRF token is in the log");

    // Metrics: histograms with buckets, the two gauges, generations per provider, the ledger.
    let url = metrics_url(&server);
    let text = http.get(&url).send().await.unwrap().text().await.unwrap();
    let bucket = text.lines().find(|l| {
        l.starts_with("creapic_http_request_duration_seconds_bucket{")
            && l.contains(r#"route="/api/playground/images/{job_id}""#)
            && l.contains(r#"le="0.005""#)
    });
    assert!(
        bucket.is_some(),
        "no 5 ms bucket of the status route:\n{text}"
    );
    assert!(
        !text.contains("creapic_http_request_duration_seconds{"),
        "durations are still a summary:\n{text}"
    );
    assert!(sample(&text, "creapic_jobs_queued").is_some(), "{text}");
    assert!(
        sample(&text, "creapic_runner_slots_in_use").is_some(),
        "{text}"
    );
    let generations = sample(
        &text,
        r#"creapic_generation_duration_seconds_count{provider="offline"}"#,
    );
    assert!(generations.is_some_and(|n| n >= 2.0), "{text}");
    assert!(
        text.contains(
            r#"creapic_generation_duration_seconds_bucket{provider="offline",le="0.05"}"#
        ),
        "{text}"
    );
    let finished_items = sample(
        &text,
        r#"creapic_ledger_apply_duration_seconds_count{op="finish_item"}"#,
    );
    assert!(finished_items.is_some_and(|n| n >= 2.0), "{text}");
}

#[test]
fn log_format_is_in_help_with_its_variable() {
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--log-format") && help.contains("CREAPIC_LOG_FORMAT"),
        "{help}"
    );
}

/// A server that cannot start (its address is taken) says why as a JSON `ERROR` event — with
/// `--log-format json` nothing on stderr is plain text, not even the last word — and exits 1.
#[test]
fn a_failed_start_in_json_mode_is_one_json_error_event() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = support::store::temp_dir("obs");
    let out = support::cli(&dir, &["serve", "--listen", &addr, "--log-format", "json"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let error = lines
        .iter()
        .find(|e| e["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR event in {stderr}"));
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains(&addr)),
        "the error names the address: {error}"
    );
}
