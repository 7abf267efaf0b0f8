//! The same HTTP scenario against every store backend — memory, SQLite (a temp file) and
//! PostgreSQL (a fresh schema; an unreachable server fails the test, it never skips): keys made
//! through the dashboard routes, a bulk job charged all or nothing, an idempotent replay, a 402,
//! tenancy, and a store that goes away answering 503 with Retry-After.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::body;
use creapic_core::store::{ConnectOptions, Store, connect};
use serde_json::json;

fn pg_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn scenario(name: &str, store: Arc<dyn Store>) {
    let app = common::app_with(store, Default::default()).await;
    app.grant(app.org, 3).await;
    let owner = app.owner.to_string();
    let org = app.org.to_string();
    let (status, _, created) = body(
        app.http
            .post(app.url("/api/keys"))
            .header("x-test-user", &owner)
            .json(&json!({"organizationId": org, "name": "Backend test", "scopes": ["IMAGE_GENERATION"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{name}: {created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let submit = |prompts: serde_json::Value, idem: &'static str| {
        app.http
            .post(app.url("/api/playground/images"))
            .bearer_auth(&key)
            .header("idempotency-key", idem)
            .json(&json!({ "prompts": prompts }))
            .send()
    };
    let (status, _, first) = body(submit(json!(["a", "b"]), "k1").await.unwrap()).await;
    assert_eq!(status, 202, "{name}: {first}");
    assert_eq!(
        (first["creditsUsed"].as_u64(), first["credits"].as_u64()),
        (Some(2), Some(1)),
        "{name}"
    );
    let (status, headers, again) = body(submit(json!(["a", "b"]), "k1").await.unwrap()).await;
    assert_eq!((status, &again), (202, &first), "{name}: replay");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, short) = body(submit(json!(["c", "d"]), "k2").await.unwrap()).await;
    assert_eq!(
        (status, short["error"].as_str()),
        (402, Some("Insufficient credits")),
        "{name}"
    );
    assert_eq!(
        app.core.balance(app.org).await.unwrap().get(),
        1,
        "{name}: charged once"
    );
    let job = first["jobId"].as_str().unwrap();
    let (status, _, view) = body(
        app.http
            .get(app.url(&format!("/api/playground/images/{job}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, view["totalImages"].as_u64()),
        (200, Some(2)),
        "{name}: {view}"
    );
    let (other, _) = app.other_org().await;
    let theirs = app
        .key_in(
            other,
            &[creapic_core::scope::Scope::ImageGeneration],
            creapic_core::key::KeyMode::Live,
        )
        .await;
    let (status, _, _) = body(
        app.http
            .get(app.url(&format!("/api/playground/images/{job}")))
            .bearer_auth(&theirs)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{name}: another organization's job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_serves_the_same_api() {
    let (stores, _dir) = common::backends().await;
    for (name, store) in stores {
        scenario(name, store).await;
    }
}

/// A loopback TCP proxy to PostgreSQL that can be cut, to take the database away mid-test.
struct Proxy {
    addr: std::net::SocketAddr,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let registry = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                registry.lock().unwrap().push(pipe.abort_handle());
            }
        });
        Proxy {
            addr,
            tasks,
            accept,
        }
    }

    fn cut(&self) {
        self.accept.abort();
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_goes_away_answers_503_with_retry_after() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let schema = format!(
        "test_{secs}_{}",
        &uuid::Uuid::now_v7().simple().to_string()[16..]
    );
    let url = pg_url().replace("127.0.0.1:5432", &proxy.addr.to_string());
    let options = ConnectOptions::default()
        .schema(&schema)
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_millis(500));
    let store = match connect(&url, options).await {
        Ok(s) => s,
        Err(e) => panic!("PostgreSQL through {url} is required: {e}"),
    };
    let app = common::app_with(store, Default::default()).await;
    app.grant(app.org, 5).await;
    let key = app
        .key(&[creapic_core::scope::Scope::ImageGeneration])
        .await;
    let ok = app
        .http
        .post(app.url("/api/playground/images"))
        .bearer_auth(&key)
        .json(&json!({"prompts": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    proxy.cut();
    // The key is cached; the job submission needs the database, which is gone.
    let (status, headers, b) = body(
        app.http
            .post(app.url("/api/playground/images"))
            .bearer_auth(&key)
            .json(&json!({"prompts": ["y"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (503, Some("store_unavailable")),
        "{b}"
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(
        !b["error"].as_str().unwrap().contains("postgres"),
        "no internals leak: {b}"
    );
    // Alive, not ready: an orchestrator keeps the process and sends it no traffic.
    let (status, _, _) = body(app.http.get(app.url("/api/health")).send().await.unwrap()).await;
    assert_eq!(status, 200, "liveness never depends on the database");
    let (status, headers, b) =
        body(app.http.get(app.url("/api/ready")).send().await.unwrap()).await;
    assert_eq!(
        (status, b["code"].as_str()),
        (503, Some("store_unavailable")),
        "{b}"
    );
    assert!(headers.contains_key("retry-after"));
}

/// Readiness follows the schema: a database this build has not migrated is 503
/// `migrations_pending` (with `Retry-After`) until a replica migrates it; then 200.
#[tokio::test]
async fn readiness_waits_for_the_migrations_of_this_build() {
    let dir = std::env::temp_dir().join(format!("creapic-ready-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("ready.db").display());
    let unmigrated = connect(&url, ConnectOptions::default().migrate(false))
        .await
        .unwrap();
    let app = common::app_with_unseeded(unmigrated).await;
    let (status, headers, b) =
        body(app.http.get(app.url("/api/ready")).send().await.unwrap()).await;
    assert_eq!(
        (status, b["code"].as_str()),
        (503, Some("migrations_pending")),
        "{b}"
    );
    assert_eq!(headers["retry-after"], "5");
    let (status, _, _) = body(app.http.get(app.url("/api/health")).send().await.unwrap()).await;
    assert_eq!(status, 200);

    // Another replica (this one) migrates the same file: every server is ready.
    let migrated = connect(&url, ConnectOptions::default()).await.unwrap();
    let (status, _, b) = body(app.http.get(app.url("/api/ready")).send().await.unwrap()).await;
    assert_eq!((status, &b), (200, &json!({"status": "ready"})));
    drop(migrated);

    // PostgreSQL, migrated on connect: ready.
    let schema = format!("ready_{}", uuid::Uuid::now_v7().simple());
    let pg = connect(&pg_url(), ConnectOptions::default().schema(&schema))
        .await
        .expect("PostgreSQL through DATABASE_URL is required");
    let app = common::app_with(pg, Default::default()).await;
    let (status, _, b) = body(app.http.get(app.url("/api/ready")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{b}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_database_is_a_typed_unavailable_error() {
    let options = ConnectOptions::default()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_millis(500));
    let err = connect("postgres://postgres@127.0.0.1:1/test", options)
        .await
        .err()
        .expect("nothing listens on port 1");
    assert_eq!(err.code(), "store_unavailable", "{err}");
}
