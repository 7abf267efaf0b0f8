//! `POST /api/playground/images/{jobId}/cancel` on every backend: a queued job is canceled and
//! every credit it reserved comes back in the same step; canceling again answers the same job;
//! another organization's job, a render id and a garbage id are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{app_with_core, backends, body};
use creapic_core::Creapic;
use creapic_core::scope::Scope;
use creapic_server_kit::KitConfig;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_is_canceled_and_refunded_on_every_backend() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
        let app = app_with_core(
            Arc::new(Creapic::new(store)),
            KitConfig::default(),
            pipeline,
        )
        .await;
        app.grant(app.org, 10).await;
        let key = app.key(&[Scope::ImageGeneration, Scope::SceneRender]).await;
        let balance = || async { app.core.balance(app.org).await.unwrap().get() };
        let (status, _, job) = body(
            app.http
                .post(app.url("/api/playground/images"))
                .bearer_auth(&key)
                .json(&json!({"prompts": ["a", "b", "c"]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{name}: {job}");
        assert_eq!(balance().await, 7, "{name}");
        let id = job["jobId"].as_str().unwrap().to_owned();
        let cancel = |id: &str, key: &str| {
            app.http
                .post(app.url(&format!("/api/playground/images/{id}/cancel")))
                .bearer_auth(key)
                .send()
        };
        let (status, _, canceled) = body(cancel(&id, &key).await.unwrap()).await;
        assert_eq!(
            (status, canceled["status"].as_str()),
            (200, Some("canceled")),
            "{name}: {canceled}"
        );
        assert_eq!(balance().await, 10, "{name}: every reserved credit is back");
        let (status, _, again) = body(cancel(&id, &key).await.unwrap()).await;
        assert_eq!((status, &again), (200, &canceled), "{name}: idempotent");
        assert_eq!(balance().await, 10, "{name}");
        // Another organization's key: not found, and the job is unchanged.
        let (other, _) = app.other_org().await;
        let theirs = app
            .key_in(
                other,
                &[Scope::ImageGeneration],
                creapic_core::key::KeyMode::Live,
            )
            .await;
        let (status, _, _) = body(cancel(&id, &theirs).await.unwrap()).await;
        assert_eq!(status, 404, "{name}");
        let (status, _, _) = body(cancel("not-a-job", &key).await.unwrap()).await;
        assert_eq!(status, 400, "{name}");
        // A render is not a bulk job on this route.
        let (status, _, render) = body(
            app.http
                .post(app.url("/api/public/scenes/render"))
                .bearer_auth(&key)
                .json(&json!({"background": {"type": "text", "text": "a harbour"}}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{name}: {render}");
        let render_id = render["render"]["id"].as_str().unwrap().to_owned();
        let (status, _, _) = body(cancel(&render_id, &key).await.unwrap()).await;
        assert_eq!(status, 404, "{name}");
        let (sum, _) = {
            let entries = app
                .core
                .entries(
                    app.org,
                    None,
                    creapic_core::page::PageLimit::new(100).unwrap(),
                )
                .await
                .unwrap()
                .items;
            (entries.iter().map(|e| e.delta).sum::<i64>(), entries.len())
        };
        assert_eq!(sum, balance().await as i64, "{name}: ledger = balance");
    }
}
