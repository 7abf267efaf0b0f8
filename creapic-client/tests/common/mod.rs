//! The test harness of the client: a real creapic server on loopback (the server kit over a
//! SQLite file or a PostgreSQL schema, see [`Backend`]; the offline renderer; a job runner; and
//! a stand-in for the host's login layer that reads the dashboard user from an `x-test-user`
//! header), a [`RecordingTime`] that records the client's waits and returns at once, and
//! [`DropFirstResponses`], a TCP proxy that loses the first answers on their way back.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use creapic_client::time::{Sleep, Time};
use creapic_client::{Client, DashboardAuth, RetryPolicy};
use creapic_core::audit::{Actor, RequestContext};
use creapic_core::id::{OrgId, UserId};
use creapic_core::key::KeyMode;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::{ConnectOptions, Store};
use creapic_core::{Creapic, KeySpec};
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::runner::{Runner, RunnerConfig, RunnerHandle};
use creapic_server_kit::http::auth::DashboardUser;
use creapic_server_kit::{KitConfig, RateLimitConfig, ServiceBuilder};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Aborts a background task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A SQLite file in the temp directory, deleted (with its WAL files) on drop.
pub struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        let name = format!("creapic-client-test-{}.db", uuid::Uuid::now_v7().simple());
        TempDb(std::env::temp_dir().join(name))
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A creapic server on 127.0.0.1 with an organization ("Acme") and its owner.
pub struct Server {
    pub base: String,
    pub core: Arc<Creapic<dyn Store>>,
    pub owner: UserId,
    pub org: OrgId,
    _runner: Option<RunnerHandle>,
    _server: AbortOnDrop,
    _db: TempDb,
}

/// A server with a job runner and a rate limit no test reaches.
pub async fn server() -> Server {
    let config = KitConfig {
        rate_limit: RateLimitConfig {
            per_second: 10_000,
            burst: 10_000,
        },
        ..KitConfig::default()
    };
    server_with(config, true).await
}

pub async fn server_with(config: KitConfig, runner: bool) -> Server {
    // Small images: the tests check the flow, not the renderer (debug builds encode slowly).
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()))
        .with_offline_renderer(OfflineRenderer::with_long_sides(64, 96));
    server_with_pipeline(config, runner, pipeline).await
}

/// A server whose live keys generate with `pipeline` (a mocked third-party provider, say).
pub async fn server_with_pipeline(config: KitConfig, runner: bool, pipeline: Pipeline) -> Server {
    server_on(Backend::Sqlite, config, runner, pipeline).await
}

/// Which database a test server keeps its data in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the temp directory (deleted on drop).
    Sqlite,
    /// A fresh schema of `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
    /// named `test_{secs}_…` like the store tests' schemas, whose cleanup covers it. An
    /// unreachable server fails the test; it never skips.
    Postgres,
}

/// Both backends, for tests that must pass on each.
pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// The default test server (runner on, limits no test reaches) on `backend`.
pub async fn server_on_backend(backend: Backend) -> Server {
    let config = KitConfig {
        rate_limit: RateLimitConfig {
            per_second: 10_000,
            burst: 10_000,
        },
        ..KitConfig::default()
    };
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()))
        .with_offline_renderer(OfflineRenderer::with_long_sides(64, 96));
    server_on(backend, config, true, pipeline).await
}

/// A server on `backend` whose live keys generate with `pipeline`.
pub async fn server_on(
    backend: Backend,
    config: KitConfig,
    runner: bool,
    pipeline: Pipeline,
) -> Server {
    let db = TempDb::new();
    let store = match backend {
        Backend::Sqlite => creapic_core::store::connect(&db.url(), ConnectOptions::default())
            .await
            .expect("sqlite store"),
        Backend::Postgres => {
            let url = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let schema = format!(
                "test_{secs}_{}",
                &uuid::Uuid::now_v7().simple().to_string()[16..]
            );
            let options = ConnectOptions::default().schema(&schema).max_connections(4);
            match creapic_core::store::connect(&url, options).await {
                Ok(s) => s,
                Err(e) => panic!("PostgreSQL at {url} is required: {e}"),
            }
        }
    };
    let core: Arc<Creapic<dyn Store>> = Arc::new(Creapic::new(store));
    let router = ServiceBuilder::new(core.clone(), pipeline.clone())
        .config(config)
        .build()
        .into_router()
        .layer(axum::middleware::from_fn(
            |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
                // The host's login layer: a signed-in user, found from the session.
                let user = req
                    .headers()
                    .get("x-test-user")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| UserId::parse(v).ok());
                if let Some(user) = user {
                    req.extensions_mut().insert(DashboardUser(user));
                }
                next.run(req).await
            },
        ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let runner = runner.then(|| {
        let config = RunnerConfig {
            poll_interval: Duration::from_millis(20),
            ..RunnerConfig::default()
        };
        Runner::new(core.clone(), pipeline, config)
            .start()
            .expect("runner")
    });
    let ctx = RequestContext::default();
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    Server {
        base: format!("http://{addr}"),
        core,
        owner: owner.id,
        org: org.id,
        _runner: runner,
        _server: AbortOnDrop(server),
        _db: db,
    }
}

/// Fast, exact retries for tests (no jitter, 10 ms doubling).
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy::new()
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(100))
        .jitter(false)
}

impl Server {
    /// A live key of the server's organization with `scopes`.
    pub async fn key(&self, scopes: &[Scope]) -> String {
        self.key_in(self.org, scopes).await
    }

    pub async fn key_in(&self, org: OrgId, scopes: &[Scope]) -> String {
        let spec = KeySpec {
            name: "client test".into(),
            scopes: ScopeSet::new(scopes.iter().copied()).unwrap(),
            mode: KeyMode::Live,
            expires_at: None,
        };
        let created = self
            .core
            .create_key(Actor::Operator, org, spec, &RequestContext::default())
            .await
            .unwrap();
        created.secret.expose().to_owned()
    }

    /// A client of this server with `key`.
    pub fn client(&self, key: &str) -> Client {
        Client::builder()
            .base_url(&self.base)
            .api_key_text(key)
            .retry(quick_retries())
            .build()
            .unwrap()
    }

    /// A dashboard client signed in as `user` (through the host's stand-in login layer).
    pub fn dashboard(&self, user: UserId) -> Client {
        Client::builder()
            .base_url(&self.base)
            .dashboard_auth(DashboardAuth::header("x-test-user", user.to_string()))
            .user_agent("dashboard-proxy/1.0")
            .retry(quick_retries())
            .build()
            .unwrap()
    }

    pub async fn grant(&self, org: OrgId, n: u64) {
        let key = format!("grant-{}", uuid::Uuid::now_v7());
        self.core
            .grant(Actor::Operator, org, n, &key, &RequestContext::default())
            .await
            .unwrap();
    }

    pub async fn balance(&self) -> u64 {
        self.core.balance(self.org).await.unwrap().get()
    }

    /// Another organization, with its owner.
    pub async fn other_org(&self) -> (OrgId, UserId) {
        let user = self
            .core
            .ensure_user(&format!("{}@example.com", uuid::Uuid::now_v7().simple()))
            .await
            .unwrap();
        let org = self
            .core
            .create_org(
                "Other",
                user.id,
                Actor::Operator,
                &RequestContext::default(),
            )
            .await
            .unwrap();
        (org.id, user.id)
    }
}

/// A [`Time`] whose sleeps return at once and advance a virtual clock; it records every wait.
#[derive(Debug)]
pub struct RecordingTime {
    start: tokio::time::Instant,
    state: Mutex<(Duration, Vec<Duration>)>,
}

impl RecordingTime {
    pub fn new() -> Arc<Self> {
        Arc::new(RecordingTime {
            start: tokio::time::Instant::now(),
            state: Mutex::new((Duration::ZERO, Vec::new())),
        })
    }

    /// Every sleep so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.state.lock().unwrap().1.clone()
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.state.lock().unwrap().0
    }
}

impl Time for RecordingTime {
    fn now(&self) -> tokio::time::Instant {
        self.start + self.state.lock().unwrap().0
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let mut state = self.state.lock().unwrap();
        state.0 += duration;
        state.1.push(duration);
        Box::pin(std::future::ready(()))
    }
}

/// A TCP proxy in front of `upstream` that forwards the first `drop_first` requests but closes
/// the client's connection as soon as the answer starts coming back (the server has finished
/// the request), so the client never sees it; later connections are forwarded both ways.
pub struct DropFirstResponses {
    pub base: String,
    pub connections: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl DropFirstResponses {
    pub async fn start(upstream: &str, drop_first: usize) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::spawn(async move {
                    if n < drop_first {
                        lose_the_answer(client, server).await;
                    } else {
                        let (mut client, mut server) = (client, server);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        DropFirstResponses {
            base: format!("http://{addr}"),
            connections,
            _task: AbortOnDrop(task),
        }
    }
}

async fn lose_the_answer(client: TcpStream, server: TcpStream) {
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let forward =
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    let mut first = [0u8; 1];
    // Bounded: a test server answers well within this.
    let _ = tokio::time::timeout(Duration::from_secs(10), server_read.read(&mut first)).await;
    forward.abort();
    drop(client_write);
}
