//! `Idempotency-Key` at its edges, through the real service on loopback: a key reused after its
//! record was purged is a fresh, paid request on every backend (never a replay of the old
//! charge that yields free work); a synchronous generation keeps its key locked while it runs,
//! so a retry never calls the provider a second time; and a generation past its deadline is a
//! 504 whose hold is released.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{app_with_core, backends, body};
use creapic_core::clock::{ManualClock, Timestamp};
use creapic_core::page::PageLimit;
use creapic_core::scope::Scope;
use creapic_core::store::Store;
use creapic_core::{CoreConfig, Creapic};
use creapic_server_kit::KitConfig;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::provider::{GeneratedImage, ImageProvider, ImageRequest};
use serde_json::{Value, json};

fn small_offline() -> Pipeline {
    Pipeline::offline(MediaStore::in_memory(SigningKey::generate()))
        .with_offline_renderer(OfflineRenderer::with_long_sides(48, 64))
}

async fn ledger_sum(core: &Creapic<dyn Store>, org: creapic_core::id::OrgId) -> (i64, usize) {
    let entries = core
        .entries(org, None, PageLimit::new(1000).unwrap())
        .await
        .unwrap()
        .items;
    (entries.iter().map(|e| e.delta).sum(), entries.len())
}

/// Generate, bulk and scene under one key each; the records are purged after their retention;
/// the same keys with other bodies are new, charged requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_after_its_record_is_purged_is_a_fresh_charge_on_every_backend() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(1_800_000_000_000)));
        let core: Arc<Creapic<dyn Store>> = Arc::new(
            Creapic::builder(store)
                .clock(clock.clone())
                .config(CoreConfig::default())
                .build(),
        );
        let app = app_with_core(core.clone(), KitConfig::default(), small_offline()).await;
        app.grant(app.org, 100).await;
        let key = app.key(&[Scope::ImageGeneration, Scope::SceneRender]).await;
        let post = |path: &'static str, idem: &'static str, json: Value| {
            app.http
                .post(app.url(path))
                .bearer_auth(&key)
                .header("idempotency-key", idem)
                .json(&json)
                .send()
        };
        let generate = |text: &str| json!({"source": {"type": "text", "text": text}});
        let balance = || async { core.balance(app.org).await.unwrap().get() };

        // Within the window: the same body replays, another body is refused.
        let (status, _, first) = body(
            post("/api/public/images/generate", "gen-K", generate("a lemon"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{name}: {first}");
        assert_eq!(balance().await, 99, "{name}");
        let (status, headers, again) = body(
            post("/api/public/images/generate", "gen-K", generate("a lemon"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, &again), (200, &first), "{name}: replay");
        assert_eq!(headers["idempotent-replayed"], "true");
        let (status, _, _) = body(
            post("/api/public/images/generate", "gen-K", generate("a lime"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{name}: another body within the window");
        let generation = first["generation"]["id"].as_str().unwrap().to_owned();
        let (status, _, job) = body(
            post(
                "/api/playground/images",
                "bulk-K",
                json!({"prompts": ["a"]}),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{name}: {job}");
        let scene = |text: &str| {
            json!({
                "background": {"type": "text", "text": text},
                "layers": [{"source": {"type": "generation", "id": generation}, "x": 0.1, "y": 0.1}]
            })
        };
        let (status, _, render) = body(
            post("/api/public/scenes/render", "scene-K", scene("a harbour"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{name}: {render}");
        // 1 (standard image) + 1 (bulk) + 2 (standard scene).
        assert_eq!(balance().await, 96, "{name}");

        // The records' retention passes and they are purged.
        clock.advance(Duration::from_secs(25 * 60 * 60));
        assert!(core.purge_requests().await.unwrap() >= 3, "{name}: purged");

        // The same keys, other bodies: each a new request, paid again.
        let (status, headers, fresh) = body(
            post("/api/public/images/generate", "gen-K", generate("a lime"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{name}: {fresh}");
        assert!(headers.get("idempotent-replayed").is_none(), "{name}");
        assert_eq!(balance().await, 95, "{name}: the reused key paid again");
        let (status, _, job2) = body(
            post(
                "/api/playground/images",
                "bulk-K",
                json!({"prompts": ["b", "c"]}),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{name}: {job2}");
        assert_ne!(job2["jobId"], job["jobId"], "{name}: a new job");
        assert_eq!(balance().await, 93, "{name}: the new job reserved its cost");
        let (status, _, render2) = body(
            post("/api/public/scenes/render", "scene-K", scene("a field"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{name}: {render2}");
        assert_ne!(render2["render"]["id"], render["render"]["id"], "{name}");
        assert_eq!(
            balance().await,
            91,
            "{name}: the new render reserved its cost"
        );

        // And the very first body under the reused key is no longer a replay of 24 h ago:
        // the key now names the request made after the purge.
        let (status, _, _) = body(
            post("/api/public/images/generate", "gen-K", generate("a lemon"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{name}");
        let (sum, _) = ledger_sum(&core, app.org).await;
        assert_eq!(sum, 91, "{name}: ledger sum = balance");
    }
}

/// An image provider that takes `delay` per image and counts its calls.
#[derive(Debug)]
struct Slow {
    delay: Duration,
    calls: AtomicUsize,
    inner: OfflineRenderer,
}

#[async_trait::async_trait]
impl ImageProvider for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    async fn generate(
        &self,
        request: &ImageRequest,
    ) -> Result<GeneratedImage, creapic_server_kit::generation::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.generate(request).await
    }
}

fn slow_pipeline(delay: Duration) -> (Pipeline, Arc<Slow>) {
    let slow = Arc::new(Slow {
        delay,
        calls: AtomicUsize::new(0),
        inner: OfflineRenderer::with_long_sides(48, 64),
    });
    let pipeline = Pipeline::new(
        Arc::new(creapic_server_kit::generation::prompt::RuleComposer),
        slow.clone(),
        MediaStore::in_memory(SigningKey::generate()),
    );
    (pipeline, slow)
}

/// The plain idempotency lock (1 s here) is shorter than the generation (2 s): the request
/// still holds its key until it is done, so the client's retry is a 409, not a second call of
/// the provider; once done, the retry replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_holds_its_key_for_as_long_as_it_may_run() {
    let (pipeline, slow) = slow_pipeline(Duration::from_secs(2));
    let mut config = KitConfig::default();
    config.limits.idempotency_lock = Duration::from_secs(1);
    config.limits.generation_timeout = Duration::from_secs(10);
    let store: Arc<dyn Store> = Arc::new(creapic_core::store::memory::MemoryStore::new());
    let app = app_with_core(Arc::new(Creapic::new(store)), config, pipeline).await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let send = || {
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .header("idempotency-key", "slow-1")
            .json(&json!({"source": {"type": "text", "text": "a slow lemon"}}))
            .send()
    };
    let first = tokio::spawn(send());
    // Past the plain lock, well inside the generation.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, _, retry) = body(send().await.unwrap()).await;
    assert_eq!(
        (status, retry["code"].as_str()),
        (409, Some("idempotency_in_progress")),
        "{retry}"
    );
    let (status, _, done) = body(first.await.unwrap().unwrap()).await;
    assert_eq!(status, 200, "{done}");
    let (status, headers, replay) = body(send().await.unwrap()).await;
    assert_eq!((status, &replay), (200, &done));
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(
        slow.calls.load(Ordering::SeqCst),
        1,
        "the provider ran once"
    );
    assert_eq!(app.core.balance(app.org).await.unwrap().get(), 9);
}

/// A provider slower than the generation deadline: 504 `provider_timeout`, the hold released,
/// nothing charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_past_its_deadline_is_a_504_and_refunded() {
    let (pipeline, slow) = slow_pipeline(Duration::from_secs(30));
    let mut config = KitConfig::default();
    config.limits.generation_timeout = Duration::from_secs(1);
    let store: Arc<dyn Store> = Arc::new(creapic_core::store::memory::MemoryStore::new());
    let app = app_with_core(Arc::new(Creapic::new(store)), config, pipeline).await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let (status, _, answer) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&json!({"source": {"type": "text", "text": "a slow lemon"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (504, Some("provider_timeout")),
        "{answer}"
    );
    assert!(slow.calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(app.core.balance(app.org).await.unwrap().get(), 10);
    let (sum, entries) = ledger_sum(&app.core, app.org).await;
    assert_eq!((sum, entries), (10, 3), "grant, hold, release");
}

/// Dashboard key creation: an outsider's request for another organization, and a member's
/// refused request, leave no idempotency record behind; records are per signed-in user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_creation_records_nothing_under_its_idempotency_key() {
    use creapic_core::audit::{Actor, RequestContext};
    use creapic_core::org::Role;
    let app = common::app().await;
    let org = app.org.to_string();
    let (_, outsider) = app.other_org().await;
    let member = app.core.ensure_user("member@example.com").await.unwrap().id;
    app.core
        .set_role(
            Actor::Operator,
            app.org,
            member,
            Role::Member,
            &RequestContext::default(),
        )
        .await
        .unwrap();
    let create = |user: creapic_core::id::UserId, idem: &'static str| {
        app.http
            .post(app.url("/api/keys"))
            .header("x-test-user", user.to_string())
            .header("idempotency-key", idem)
            .json(&json!({"organizationId": org, "name": "CI", "scopes": ["IMAGE_GENERATION"]}))
            .send()
    };
    // The outsider first, with the key the owner will use.
    let (status, _, refused) = body(create(outsider, "K").await.unwrap()).await;
    assert_eq!(status, 404, "{refused}");
    let (status, _, created) = body(create(app.owner, "K").await.unwrap()).await;
    assert_eq!(
        status, 201,
        "the owner is not blocked by the outsider: {created}"
    );
    assert!(created["key"].as_str().unwrap().starts_with("wi_live_"));
    // A member is refused; once made an admin, the same request under the same key works.
    let (status, _, refused) = body(create(member, "M").await.unwrap()).await;
    assert_eq!(status, 403, "{refused}");
    app.core
        .set_role(
            Actor::Operator,
            app.org,
            member,
            Role::Admin,
            &RequestContext::default(),
        )
        .await
        .unwrap();
    let (status, _, created) = body(create(member, "M").await.unwrap()).await;
    assert_eq!(
        status, 201,
        "a refusal is not stored as processed: {created}"
    );
    // A success is stored: the same user's retry is told it was processed, the plaintext is
    // never shown twice.
    let (status, _, again) = body(create(member, "M").await.unwrap()).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("already_processed"))
    );
}
