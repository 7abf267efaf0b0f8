//! A real creapic server on loopback for the HTTP tests: core + store + media + the kit's
//! service, served by axum on 127.0.0.1 with a stand-in for the host's login layer (a dashboard
//! user id taken from the `x-test-user` header, as a host's session middleware would).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::id::{OrgId, UserId};
use creapic_core::key::KeyMode;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_core::{Creapic, KeySpec};
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::http::auth::DashboardUser;
use creapic_server_kit::{CreapicService, KitConfig, ServiceBuilder};

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub core: Arc<Creapic<dyn Store>>,
    pub service: CreapicService,
    pub owner: UserId,
    pub org: OrgId,
    _server: tokio::task::JoinHandle<()>,
}

pub async fn app() -> TestApp {
    app_with(Arc::new(MemoryStore::new()), KitConfig::default()).await
}

pub async fn app_with(store: Arc<dyn Store>, config: KitConfig) -> TestApp {
    let media = MediaStore::in_memory(SigningKey::generate());
    let pipeline = creapic_server_kit::generation::pipeline::Pipeline::offline(media);
    app_with_pipeline(store, config, pipeline).await
}

pub async fn app_with_pipeline(
    store: Arc<dyn Store>,
    config: KitConfig,
    pipeline: creapic_server_kit::generation::pipeline::Pipeline,
) -> TestApp {
    app_with_core(Arc::new(Creapic::new(store)), config, pipeline).await
}

/// A server over a core the test built (an injected clock, say), with an owner and "Acme".
pub async fn app_with_core(
    core: Arc<Creapic<dyn Store>>,
    config: KitConfig,
    pipeline: creapic_server_kit::generation::pipeline::Pipeline,
) -> TestApp {
    let (core, service, base, server) = serve_core(core, config, pipeline).await;
    let (owner, org) = seed(&core).await;
    TestApp {
        base,
        http: reqwest::Client::new(),
        core,
        service,
        owner,
        org,
        _server: server,
    }
}

/// The owner (`owner@example.com`) and organization ("Acme") every seeded app starts with.
pub async fn seed(core: &Creapic<dyn Store>) -> (UserId, OrgId) {
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org(
            "Acme",
            owner.id,
            Actor::Operator,
            &RequestContext::default(),
        )
        .await
        .unwrap();
    (owner.id, org.id)
}

/// A server over a store that may not work (no user or organization is created).
pub async fn app_with_unseeded(store: Arc<dyn Store>) -> TestApp {
    let media = MediaStore::in_memory(SigningKey::generate());
    let pipeline = creapic_server_kit::generation::pipeline::Pipeline::offline(media);
    let (core, service, base, server) = serve(store, KitConfig::default(), pipeline).await;
    TestApp {
        base,
        http: reqwest::Client::new(),
        core,
        service,
        owner: UserId::from_uuid(uuid::Uuid::nil()),
        org: OrgId::from_uuid(uuid::Uuid::nil()),
        _server: server,
    }
}

pub type Served = (
    Arc<Creapic<dyn Store>>,
    CreapicService,
    String,
    tokio::task::JoinHandle<()>,
);

async fn serve(
    store: Arc<dyn Store>,
    config: KitConfig,
    pipeline: creapic_server_kit::generation::pipeline::Pipeline,
) -> Served {
    serve_core(Arc::new(Creapic::new(store)), config, pipeline).await
}

pub async fn serve_core(
    core: Arc<Creapic<dyn Store>>,
    config: KitConfig,
    pipeline: creapic_server_kit::generation::pipeline::Pipeline,
) -> Served {
    let service = ServiceBuilder::new(core.clone(), pipeline)
        .config(config)
        .build();
    let router = service
        .clone()
        .into_router()
        .layer(axum::middleware::from_fn(
            |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (core, service, format!("http://{addr}"), server)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn key(&self, scopes: &[Scope]) -> String {
        self.key_in(self.org, scopes, KeyMode::Live).await
    }

    pub async fn key_in(&self, org: OrgId, scopes: &[Scope], mode: KeyMode) -> String {
        let spec = KeySpec {
            name: "test".into(),
            scopes: ScopeSet::new(scopes.iter().copied()).unwrap(),
            mode,
            expires_at: None,
        };
        let created = self
            .core
            .create_key(Actor::Operator, org, spec, &RequestContext::default())
            .await
            .unwrap();
        created.secret.expose().to_owned()
    }

    pub async fn grant(&self, org: OrgId, n: u64) {
        let key = format!("grant-{}", uuid::Uuid::now_v7());
        self.core
            .grant(Actor::Operator, org, n, &key, &RequestContext::default())
            .await
            .unwrap();
    }

    pub async fn other_org(&self) -> (OrgId, UserId) {
        let user = self
            .core
            .ensure_user(&format!("{}@example.com", uuid::Uuid::now_v7()))
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

pub async fn body(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, headers, json)
}

/// Every store backend, fresh: memory, SQLite (a temp file, kept for the test's life by the
/// returned guard) and PostgreSQL (a fresh schema of `DATABASE_URL`; unreachable fails the
/// test, it never skips). Schemas are named like the store tests' (`test_{secs}_…`), so their
/// cleanup of old schemas covers these too.
pub async fn backends() -> (Vec<(&'static str, Arc<dyn Store>)>, TempDir) {
    use creapic_core::store::{ConnectOptions, connect};
    let dir = TempDir(
        std::env::temp_dir().join(format!("creapic-kit-{}", uuid::Uuid::now_v7().simple())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let sqlite = connect(
        &format!("sqlite://{}", dir.0.join("creapic.db").display()),
        ConnectOptions::default(),
    )
    .await
    .unwrap();
    (
        vec![
            ("memory", Arc::new(MemoryStore::new()) as Arc<dyn Store>),
            ("sqlite", sqlite),
            ("postgres", pg_store().await),
        ],
        dir,
    )
}

/// A PostgreSQL store in a fresh schema of `DATABASE_URL`, named like the store tests' schemas
/// (`test_{secs}_…`) so their cleanup of old schemas covers it. An unreachable server fails the
/// test; it never skips.
pub async fn pg_store() -> Arc<dyn Store> {
    use creapic_core::store::{ConnectOptions, connect};
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
    match connect(&url, options).await {
        Ok(s) => s,
        Err(e) => panic!("PostgreSQL at {url} is required: {e}"),
    }
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The kit mounted the way the axum example does: nested under `/creapic` in a host router,
/// served with each connection's address (`ConnectInfo`). Returns the host's base URL (the kit
/// is at `{base}/creapic`) and the server task.
pub async fn serve_nested(
    service: CreapicService,
    host_layer: Option<fn(axum::extract::Request) -> axum::extract::Request>,
) -> (String, tokio::task::JoinHandle<()>) {
    let mut app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the host's own page" }))
        .nest_service("/creapic", service);
    if let Some(layer) = host_layer {
        app = app.layer(axum::middleware::map_request(
            move |req: axum::extract::Request| async move { layer(req) },
        ));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (format!("http://{addr}"), server)
}

/// Polls `check` every 20 ms until it is true, for at most `max`; false if it never was.
pub async fn eventually<F, Fut>(max: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + max;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The stand-in login layer of the test hosts: a dashboard user id from `x-test-user`.
pub fn test_login(mut req: axum::extract::Request) -> axum::extract::Request {
    let user = req
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| UserId::parse(v).ok());
    if let Some(user) = user {
        req.extensions_mut().insert(DashboardUser(user));
    }
    req
}

/// The kit served by plain hyper, as `examples/hyper_host.rs` does: with `peer`, each request
/// carries the connection's address as a `PeerAddr`; with `strip`, the host serves the kit
/// under that prefix by removing it from the path itself (a request outside it reaches the
/// kit unchanged). Dashboard users come from `x-test-user` ([`test_login`]).
pub async fn serve_hyper(
    service: CreapicService,
    peer: bool,
    strip: Option<&'static str>,
) -> (String, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, remote) = listener.accept().await.unwrap();
            let service = tower::ServiceBuilder::new()
                .map_request(move |req: http::Request<hyper::body::Incoming>| {
                    let mut req = test_login(req.map(axum::body::Body::new));
                    if peer {
                        req.extensions_mut()
                            .insert(creapic_server_kit::PeerAddr(remote));
                    }
                    if let Some(prefix) = strip {
                        let stripped = req
                            .uri()
                            .path_and_query()
                            .and_then(|pq| pq.as_str().strip_prefix(prefix))
                            .and_then(|rest| rest.parse::<http::Uri>().ok());
                        if let Some(uri) = stripped {
                            *req.uri_mut() = uri;
                        }
                    }
                    req
                })
                .service(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    (format!("http://{addr}"), server)
}
