//! The tenant isolation matrix over a real server on loopback: organization A owns one of every
//! resource (a bulk job with finished images, a generation, a scene render, keys, audit events,
//! media), and organization B — its API key, its owner on the dashboard routes, a member of B,
//! and links it forges — is pointed at every one of them through every route.
//!
//! Every answer must be a 403 or 404 (or a 401/400 where the request is malformed by design)
//! with an error body, and no answer may contain anything of A: not its prompts, ids, key
//! prefixes, image bytes or audit lines. Checked with a marker string in A's prompts and A's
//! identifiers searched in every response body. Run on memory, SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, body};
use creapic_core::audit::{Actor, RequestContext};
use creapic_core::key::KeyMode;
use creapic_core::org::Role;
use creapic_core::scope::Scope;
use creapic_core::store::memory::MemoryStore;
use creapic_core::store::sqlite::SqliteStore;
use creapic_core::store::{ConnectOptions, Store};
use creapic_server_kit::KitConfig;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::runner::{Runner, RunnerConfig};
use serde_json::{Value, json};

/// In every prompt of A: no answer to B may contain it.
const MARKER: &str = "zebracorn-of-organization-a";

/// One request of the matrix.
struct Probe {
    name: String,
    method: reqwest::Method,
    path: String,
    /// API key (Bearer) to send, if any.
    key: Option<String>,
    /// Dashboard user to send (the test login layer reads `x-test-user`), if any.
    user: Option<String>,
    body: Option<Value>,
}

impl Probe {
    fn new(name: impl Into<String>, method: reqwest::Method, path: impl Into<String>) -> Self {
        Probe {
            name: name.into(),
            method,
            path: path.into(),
            key: None,
            user: None,
            body: None,
        }
    }

    fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    fn user(mut self, user: impl ToString) -> Self {
        self.user = Some(user.to_string());
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// What A owns, as B could learn it (ids travel in URLs; the test knows them all).
struct OrgA {
    org: String,
    owner: String,
    key_id: String,
    key_prefix: String,
    job_id: String,
    render_id: String,
    generation_id: String,
    /// Signed links to A's images.
    links: Vec<String>,
}

async fn send(app: &TestApp, probe: &Probe) -> (u16, Value, String) {
    let mut req = app.http.request(probe.method.clone(), app.url(&probe.path));
    if let Some(key) = &probe.key {
        req = req.bearer_auth(key);
    }
    if let Some(user) = &probe.user {
        req = req.header("x-test-user", user);
    }
    if let Some(b) = &probe.body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, text)
}

async fn seed_a(app: &TestApp, runner_pipeline: Pipeline) -> OrgA {
    app.grant(app.org, 50).await;
    let key = app
        .key(&[
            Scope::ImageGeneration,
            Scope::SceneRender,
            Scope::OrganizationWrite,
        ])
        .await;
    // A bulk job, run to the end so its images have links.
    let runner = Runner::new(
        Arc::clone(&app.core),
        runner_pipeline,
        RunnerConfig {
            poll_interval: Duration::from_millis(10),
            ..RunnerConfig::default()
        },
    )
    .start()
    .unwrap();
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/playground/images"))
            .bearer_auth(&key)
            .json(
                &json!({"prompts": [format!("a {MARKER} at dawn"), format!("a {MARKER} at dusk")]}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{b}");
    let job_id = b["jobId"].as_str().unwrap().to_owned();
    runner.wake();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let job = loop {
        let (_, _, b) = body(
            app.http
                .get(app.url(&format!("/api/playground/images/{job_id}")))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if b["status"] == "completed" {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline, "job stuck: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut links: Vec<String> = job["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["url"].as_str().unwrap().to_owned())
        .collect();
    // A synchronous generation and a scene render that layers it.
    let (status, _, g) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&json!({"source": {"type": "text", "text": format!("a {MARKER} portrait")}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{g}");
    links.push(g["imageUrl"].as_str().unwrap().to_owned());
    let generation_id = g["generation"]["id"].as_str().unwrap().to_owned();
    let (status, _, r) = body(
        app.http
            .post(app.url("/api/public/scenes/render"))
            .bearer_auth(&key)
            .json(&json!({
                "background": {"type": "text", "text": format!("{MARKER} meadow")},
                "layers": [{"source": {"type": "generation", "id": generation_id}, "x": 0.1, "y": 0.1, "scale": 0.3}]
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{r}");
    let render_id = r["render"]["id"].as_str().unwrap().to_owned();
    drop(runner);
    let keys = app
        .core
        .list_keys(
            Actor::Operator,
            app.org,
            &creapic_core::store::KeyQuery::default(),
        )
        .await
        .unwrap();
    let record = &keys.items[0];
    OrgA {
        org: app.org.to_string(),
        owner: app.owner.to_string(),
        key_id: record.id.to_string(),
        key_prefix: record.prefix.as_str().to_owned(),
        job_id,
        render_id,
        generation_id,
        links,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_b_reaches_nothing_of_organization_a_in_memory() {
    matrix(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_b_reaches_nothing_of_organization_a_on_sqlite() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("isolation");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!(
        "{}-{}.db",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    let store = SqliteStore::connect(
        &format!("sqlite://{}", file.display()),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    matrix(Arc::new(store)).await;
}

/// The same matrix on PostgreSQL, in a fresh schema of `DATABASE_URL` (named like the store
/// tests' `test_{secs}_…`, so their cleanup of old schemas covers it); an unreachable server
/// fails the test, it never skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_b_reaches_nothing_of_organization_a_on_postgres() {
    matrix(common::pg_store().await).await;
}

async fn matrix(store: Arc<dyn Store>) {
    let media = MediaStore::in_memory(SigningKey::generate());
    let pipeline =
        Pipeline::offline(media).with_offline_renderer(OfflineRenderer::with_long_sides(64, 96));
    let app = common::app_with_pipeline(store, KitConfig::default(), pipeline.clone()).await;
    let a = seed_a(&app, pipeline).await;

    // Organization B: a funded key with every scope, its owner, and a plain member.
    let (b_org, b_owner) = app.other_org().await;
    app.grant(b_org, 50).await;
    let b_key = app
        .key_in(
            b_org,
            &[
                Scope::ImageGeneration,
                Scope::SceneRender,
                Scope::OrganizationWrite,
            ],
            KeyMode::Live,
        )
        .await;
    let b_test_key = app
        .key_in(b_org, &[Scope::ImageGeneration], KeyMode::Test)
        .await;
    let b_member = app.core.ensure_user("member-b@example.com").await.unwrap();
    app.core
        .set_role(
            Actor::User(b_owner),
            b_org,
            b_member.id,
            Role::Member,
            &RequestContext::default(),
        )
        .await
        .unwrap();
    // B's own image, so its signature can be grafted onto A's objects.
    let (_, _, b_gen) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&b_key)
            .json(&json!({"source": {"type": "text", "text": "a plain square"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let b_link = b_gen["imageUrl"].as_str().unwrap().to_owned();
    let b_balance = app.core.balance(b_org).await.unwrap().get();

    use reqwest::Method as M;
    let mut probes = Vec::new();
    for key in [&b_key, &b_test_key] {
        probes.push(
            Probe::new(
                // A's last poll saw the job completed, so its status body is in the kit's
                // finished-status cache by now: B must still get a 404, never A's cached body.
                "job of A by B's key",
                M::GET,
                format!("/api/playground/images/{}", a.job_id),
            )
            .key(key),
        );
        probes.push(
            Probe::new(
                "render of A by B's key",
                M::GET,
                format!("/api/public/scenes/render/{}", a.render_id),
            )
            .key(key),
        );
        probes.push(
            Probe::new(
                "A's generation as B's scene layer",
                M::POST,
                "/api/public/scenes/render",
            )
            .key(key)
            .json(json!({
                "background": {"type": "text", "text": "x"},
                "layers": [{"source": {"type": "generation", "id": a.generation_id}, "x": 0, "y": 0}]
            })),
        );
        // API keys do not open dashboard routes, whoever's resource they name.
        probes.push(
            Probe::new(
                "A's keys by B's key",
                M::GET,
                format!("/api/keys?organizationId={}", a.org),
            )
            .key(key),
        );
        probes.push(
            Probe::new(
                "A's audit by B's key",
                M::GET,
                format!("/api/audit?organizationId={}", a.org),
            )
            .key(key),
        );
        probes.push(
            Probe::new(
                "delete A's key by B's key",
                M::DELETE,
                format!("/api/keys/{}?organizationId={}", a.key_id, a.org),
            )
            .key(key),
        );
    }
    for (who, user) in [("B's owner", b_owner), ("B's member", b_member.id)] {
        probes.push(
            Probe::new(
                format!("A's keys by {who}"),
                M::GET,
                format!("/api/keys?organizationId={}", a.org),
            )
            .user(user),
        );
        probes.push(
            Probe::new(
                format!("A's deleted keys by {who}"),
                M::GET,
                format!("/api/keys?organizationId={}&includeDeleted=true", a.org),
            )
            .user(user),
        );
        probes.push(
            Probe::new(
                format!("create a key in A by {who}"),
                M::POST,
                "/api/keys",
            )
            .user(user)
            .json(json!({"organizationId": a.org, "name": "intruder", "scopes": ["IMAGE_GENERATION"]})),
        );
        probes.push(
            Probe::new(
                format!("delete A's key in A by {who}"),
                M::DELETE,
                format!("/api/keys/{}?organizationId={}", a.key_id, a.org),
            )
            .user(user),
        );
        probes.push(
            Probe::new(
                format!("delete A's key named under B by {who}"),
                M::DELETE,
                format!("/api/keys/{}?organizationId={b_org}", a.key_id),
            )
            .user(user),
        );
        probes.push(
            Probe::new(
                format!("A's audit by {who}"),
                M::GET,
                format!("/api/audit?organizationId={}", a.org),
            )
            .user(user),
        );
        probes.push(
            Probe::new(
                format!("A's audit as CSV by {who}"),
                M::GET,
                format!("/api/audit?organizationId={}&format=csv", a.org),
            )
            .user(user),
        );
    }
    // Media: A's links with B's organization, B's signature on A's objects, A's objects under
    // B's organization with B's signature, and A's link unsigned.
    let b_query = b_link.split_once('?').unwrap().1.to_owned();
    for link in &a.links {
        let (path, query) = link.split_once('?').unwrap();
        let object = path.rsplit('/').next().unwrap();
        probes.push(Probe::new(
            "A's link moved to B",
            M::GET,
            link.replace(&a.org, &b_org.to_string()),
        ));
        probes.push(Probe::new(
            "B's signature on A's object",
            M::GET,
            format!("{path}?{b_query}"),
        ));
        probes.push(Probe::new(
            "A's object under B with B's signature",
            M::GET,
            format!("/api/media/{b_org}/{object}?{b_query}"),
        ));
        probes.push(Probe::new(
            "A's object with a forged expiry",
            M::GET,
            format!(
                "{path}?{}",
                query
                    .replace("expires=", "expires=9")
                    .replace("sig=", "sig=0")
            ),
        ));
        probes.push(Probe::new("A's link unsigned", M::GET, path.to_owned()).key(&b_key));
    }

    let forbidden_text = [
        MARKER,
        a.job_id.as_str(),
        a.render_id.as_str(),
        a.key_prefix.as_str(),
        a.owner.as_str(),
    ];
    let mut report = Vec::new();
    for probe in &probes {
        let (status, json, text) = send(&app, probe).await;
        let allowed: &[u16] = if probe.path.starts_with("/api/media/") && probe.key.is_some() {
            &[400]
        } else if probe.key.is_some()
            && !probe.path.starts_with("/api/public")
            && !probe.path.starts_with("/api/playground")
        {
            // Dashboard routes called with an API key but no signed-in user.
            &[401]
        } else {
            &[403, 404]
        };
        if !allowed.contains(&status) {
            report.push(format!(
                "{}: {} {} → {status} {text}",
                probe.name, probe.method, probe.path
            ));
        }
        if json["code"].as_str().is_none() {
            report.push(format!("{}: no error body: {text}", probe.name));
        }
        for secret in forbidden_text {
            if text.contains(secret) {
                report.push(format!("{}: answer contains {secret}: {text}", probe.name));
            }
        }
    }
    assert!(
        report.is_empty(),
        "isolation broken:\n{}",
        report.join("\n")
    );
    assert!(probes.len() >= 40, "the matrix shrank: {}", probes.len());

    // Nothing of A changed, and B paid nothing for refused work.
    let keys = app
        .core
        .list_keys(
            Actor::Operator,
            app.org,
            &creapic_core::store::KeyQuery {
                include_deleted: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys.items.len(), 1, "no key was added to A");
    assert!(
        keys.items[0].deleted_at.is_none(),
        "A's key was not deleted"
    );
    assert_eq!(app.core.balance(b_org).await.unwrap().get(), b_balance);
    // A's own key and owner still see everything (the matrix is not vacuous).
    let (status, _, _) = send(
        &app,
        &Probe::new(
            "A's audit by A's owner",
            M::GET,
            format!("/api/audit?organizationId={}", a.org),
        )
        .user(&a.owner),
    )
    .await;
    assert_eq!(status, 200);
    for link in &a.links {
        let (status, _, _) = send(&app, &Probe::new("A's link", M::GET, link.clone())).await;
        assert_eq!(status, 200, "{link}");
    }
}
