//! The two HTTP baselines `bench/run` measures `creapic serve` against, in one small binary:
//!
//! - `bare ADDR`: the least a Rust HTTP handler can do — an axum route answering a JSON document
//!   of the same shape as a job status, with no authentication, no store and no middleware.
//! - `handrolled ADDR DATABASE_URL KEY`: what a first implementation of the same authenticated
//!   route does — per request, SHA-256 the bearer key and look its digest up in SQL, `UPDATE
//!   last_used_at`, `SELECT` the organization's balance then `UPDATE` it (metering), and read the
//!   job row. Each statement is its own round trip on a pool of 32 connections, in a schema of
//!   its own (`handrolled`, recreated at start with one key, one organization and one job).
//!
//! - `slow-provider ADDR LATENCY_MS`: not a baseline but the stand-in for a real image provider
//!   in `bench/bulk.sh` — an OpenAI-compatible `POST /v1/images/generations` that answers every
//!   call after exactly `LATENCY_MS` (real providers take seconds per image) with a small PNG,
//!   however many calls are in flight, and `GET /stats` with the calls served and the most
//!   that were ever in flight at once (what the runner really asked of it).
//!
//! Design decision: a bench binary (an `[[example]]` of the examples package), not a product
//! path — it exists so the numbers in docs/benchmarks.md compare creapic with the obvious code
//! on the same machine, in the same run, against the same PostgreSQL. Listens where told
//! (`bench/run` only ever passes 127.0.0.1).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::Digest as _;
use sqlx::postgres::PgPoolOptions;

/// The job id both baselines answer for.
const JOB_ID: &str = "01a213a3-8011-7410-9a39-3458a6da4de3";

fn status_document() -> serde_json::Value {
    serde_json::json!({"jobId": JOB_ID, "status": "completed", "totalImages": 2,
        "completedImages": 2, "failedImages": 0, "creditsUsed": 2, "creditsRefunded": 0,
        "images": [
            {"index": 0, "prompt": "a lighthouse", "status": "succeeded", "url": "/api/media/x/0.png", "error": null},
            {"index": 1, "prompt": "a harbour", "status": "succeeded", "url": "/api/media/x/1.png", "error": null}],
        "createdAt": "2026-11-25T17:00:00.000Z", "completedAt": "2026-11-25T17:00:01.000Z"})
}

async fn bare(Path(_job): Path<String>) -> axum::Json<serde_json::Value> {
    axum::Json(status_document())
}

async fn handrolled(
    State(pool): State<Arc<sqlx::PgPool>>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(job) = uuid::Uuid::parse_str(&job) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(key) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let digest = sha2::Sha256::digest(key.as_bytes()).to_vec();
    let row: Option<(uuid::Uuid, uuid::Uuid)> =
        sqlx::query_as("SELECT id, org FROM handrolled.api_keys WHERE digest = $1")
            .bind(&digest)
            .fetch_optional(&*pool)
            .await
            .unwrap();
    let Some((key_id, org)) = row else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    sqlx::query("UPDATE handrolled.api_keys SET last_used_at = now() WHERE id = $1")
        .bind(key_id)
        .execute(&*pool)
        .await
        .unwrap();
    let (balance,): (i64,) =
        sqlx::query_as("SELECT balance FROM handrolled.balances WHERE org = $1")
            .bind(org)
            .fetch_one(&*pool)
            .await
            .unwrap();
    // A status read costs nothing, but the first implementation meters every call the same way.
    sqlx::query("UPDATE handrolled.balances SET balance = $2, calls = calls + 1 WHERE org = $1")
        .bind(org)
        .bind(balance)
        .execute(&*pool)
        .await
        .unwrap();
    let body: Option<(String,)> =
        sqlx::query_as("SELECT body FROM handrolled.jobs WHERE id = $1 AND org = $2")
            .bind(job)
            .bind(org)
            .fetch_optional(&*pool)
            .await
            .unwrap();
    match body {
        Some((body,)) => ([("content-type", "application/json")], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn setup(pool: &sqlx::PgPool, key: &str) {
    let org = uuid::Uuid::from_u128(1);
    for statement in [
        "DROP SCHEMA IF EXISTS handrolled CASCADE",
        "CREATE SCHEMA handrolled",
        "CREATE TABLE handrolled.api_keys (id uuid PRIMARY KEY, org uuid NOT NULL, \
         digest bytea NOT NULL UNIQUE, last_used_at timestamptz)",
        "CREATE TABLE handrolled.balances (org uuid PRIMARY KEY, balance bigint NOT NULL, \
         calls bigint NOT NULL DEFAULT 0)",
        "CREATE TABLE handrolled.jobs (id uuid PRIMARY KEY, org uuid NOT NULL, body text NOT NULL)",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    sqlx::query("INSERT INTO handrolled.api_keys (id, org, digest) VALUES ($1, $2, $3)")
        .bind(uuid::Uuid::from_u128(2))
        .bind(org)
        .bind(sha2::Sha256::digest(key.as_bytes()).to_vec())
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO handrolled.balances (org, balance) VALUES ($1, 1000000)")
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO handrolled.jobs (id, org, body) VALUES ($1, $2, $3)")
        .bind(uuid::Uuid::parse_str(JOB_ID).unwrap())
        .bind(org)
        .bind(status_document().to_string())
        .execute(pool)
        .await
        .unwrap();
}

/// A 1×1 PNG, base64: the smallest image the provider's caller will accept as an image.
const PIXEL_PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

/// The slow provider's state: its latency and what it has seen.
#[derive(Debug, Default)]
struct Provider {
    latency: Duration,
    served: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
}

async fn slow_generate(State(p): State<Arc<Provider>>) -> axum::Json<serde_json::Value> {
    let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    p.in_flight_max.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(p.latency).await;
    p.in_flight.fetch_sub(1, Ordering::SeqCst);
    p.served.fetch_add(1, Ordering::SeqCst);
    axum::Json(serde_json::json!({"created": 0, "data": [{"b64_json": PIXEL_PNG_B64}]}))
}

async fn slow_stats(State(p): State<Arc<Provider>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "served": p.served.load(Ordering::SeqCst),
        "inFlight": p.in_flight.load(Ordering::SeqCst),
        "inFlightMax": p.in_flight_max.load(Ordering::SeqCst),
    }))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: baselines bare ADDR | baselines handrolled ADDR DATABASE_URL KEY \
                 | baselines slow-provider ADDR LATENCY_MS";
    let (mode, addr) = (
        args.first().expect(usage).as_str(),
        args.get(1).expect(usage),
    );
    let app = match mode {
        "bare" => axum::Router::new().route("/api/playground/images/{job}", get(bare)),
        "handrolled" => {
            let url = args.get(2).expect(usage);
            let key = args.get(3).expect(usage);
            let pool = PgPoolOptions::new()
                .max_connections(32)
                .connect(url)
                .await
                .unwrap();
            setup(&pool, key).await;
            axum::Router::new()
                .route("/api/playground/images/{job}", get(handrolled))
                .with_state(Arc::new(pool))
        }
        "slow-provider" => {
            let ms: u64 = args.get(2).expect(usage).parse().expect(usage);
            let provider = Provider {
                latency: Duration::from_millis(ms),
                ..Provider::default()
            };
            axum::Router::new()
                .route("/v1/images/generations", post(slow_generate))
                .route("/stats", get(slow_stats))
                .with_state(Arc::new(provider))
        }
        _ => panic!("{usage}"),
    };
    let listener = tokio::net::TcpListener::bind(addr.as_str()).await.unwrap();
    println!(
        "{mode} listening on http://{}/api/playground/images/{JOB_ID}",
        listener.local_addr().unwrap()
    );
    axum::serve(listener, app).await.unwrap();
}
