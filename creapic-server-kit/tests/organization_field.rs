//! `organizationId` in a public body, as the 000 document describes it: the organization comes
//! from the key, so the field is optional; sent with the key's own organization it is accepted,
//! with another organization it is 403 `wrong_organization` and nothing is charged, malformed it
//! is 400 — on generate, bulk submit and scene render.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{app, body};
use creapic_core::scope::Scope;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_id_must_name_the_keys_organization() {
    let app = app().await;
    app.grant(app.org, 100).await;
    let key = app.key(&[Scope::ImageGeneration, Scope::SceneRender]).await;
    let (other, _) = app.other_org().await;
    let own = app.org.to_string();
    let routes: [(&str, Value); 3] = [
        (
            "/api/public/images/generate",
            json!({"source": {"type": "text", "text": "a lemon"}}),
        ),
        ("/api/playground/images", json!({"prompts": ["a lemon"]})),
        (
            "/api/public/scenes/render",
            json!({"background": {"type": "text", "text": "a harbour"}}),
        ),
    ];
    for (path, base) in routes {
        let send = |org: Option<&str>| {
            let mut b = base.clone();
            if let Some(org) = org {
                b["organizationId"] = json!(org);
            }
            app.http
                .post(app.url(path))
                .bearer_auth(&key)
                .json(&b)
                .send()
        };
        let before = app.core.balance(app.org).await.unwrap().get();
        let (status, _, refused) = body(send(Some(&other.to_string())).await.unwrap()).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("wrong_organization")),
            "{path}: {refused}"
        );
        let (status, _, refused) = body(send(Some("not-a-uuid")).await.unwrap()).await;
        assert_eq!(status, 400, "{path}: {refused}");
        assert_eq!(
            app.core.balance(app.org).await.unwrap().get(),
            before,
            "{path}: nothing charged"
        );
        let (status, _, accepted) = body(send(Some(&own)).await.unwrap()).await;
        assert!(
            status == 200 || status == 202,
            "{path}: {status} {accepted}"
        );
        let (status, _, accepted) = body(send(None).await.unwrap()).await;
        assert!(
            status == 200 || status == 202,
            "{path}: {status} {accepted}"
        );
    }
}
