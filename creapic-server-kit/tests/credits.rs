//! What a key reads of its own organization, on every backend, through HTTP:
//! `GET /api/public/credits` (balance, held tokens, the ledger page by page),
//! `GET /api/public/credits/usage` (per UTC day, every day of the range) and
//! `GET /api/playground/images` (bulk jobs and renders, their items counted) — each only the
//! key's organization's, each refusing bad queries with a 4xx.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, app_with_core, backends, body};
use creapic_core::Creapic;
use creapic_core::clock::{ManualClock, Timestamp};
use creapic_core::key::KeyMode;
use creapic_core::scope::Scope;
use creapic_server_kit::KitConfig;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use serde_json::{Value, json};

/// 2026-03-10T10:00:00Z: a fixed "now" so that days are known.
const NOW_MS: i64 = 1_773_136_800_000;

async fn app_at(store: Arc<dyn creapic_core::store::Store>) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_ms(NOW_MS)));
    let core = Creapic::builder(store).clock(clock.clone()).build();
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let app = app_with_core(Arc::new(core), KitConfig::default(), pipeline).await;
    (app, clock)
}

async fn get(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    let (status, _, json) = body(
        app.http
            .get(app.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_key_reads_its_organizations_balance_held_tokens_and_ledger() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let (app, _clock) = app_at(store).await;
        app.grant(app.org, 100).await;
        let generate = app.key(&[Scope::ImageGeneration]).await;
        // A key with no generation scope at all still reads its organization's credits.
        let reader = app.key(&[Scope::OrganizationWrite]).await;
        let (status, _, generated) = body(
            app.http
                .post(app.url("/api/public/images/generate"))
                .bearer_auth(&generate)
                .json(&json!({"source": {"type": "text", "text": "a lighthouse"}}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{name}: {generated}");
        let cost = generated["generation"]["tokensUsed"].as_u64().unwrap();
        // A bulk job nobody runs: its three tokens stay held.
        let (status, _, _) = body(
            app.http
                .post(app.url("/api/playground/images"))
                .bearer_auth(&generate)
                .json(&json!({"prompts": ["a", "b", "c"]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{name}");

        let (status, credits) = get(&app, "/api/public/credits", &reader).await;
        assert_eq!(status, 200, "{name}: {credits}");
        assert_eq!(credits["organizationId"], app.org.to_string(), "{name}");
        assert_eq!(credits["balance"], 100 - cost - 3, "{name}: {credits}");
        assert_eq!(credits["held"], 3, "{name}: {credits}");
        let types: Vec<&str> = credits["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["grant", "hold", "capture", "hold"],
            "{name}: {credits}"
        );
        let entries = credits["entries"].as_array().unwrap();
        assert_eq!(entries[2]["amount"], cost, "{name}");
        assert_eq!(entries[2]["delta"], 0, "{name}: a capture moves no balance");
        assert_eq!(
            entries[2]["holdId"], entries[1]["holdId"],
            "{name}: the capture names the generation's hold"
        );
        assert_eq!(
            entries[2]["generationId"], generated["generation"]["id"],
            "{name}: and the generation it paid for"
        );
        assert!(
            entries[3].get("generationId").is_none(),
            "{name}: a job's hold"
        );
        assert!(entries[3]["jobId"].is_string(), "{name}: the job's hold");
        assert_eq!(entries[3]["balanceAfter"], 100 - cost - 3, "{name}");
        assert!(credits["nextCursor"].is_null(), "{name}");

        // Page by page: two, then the other two, then nothing.
        let (_, first) = get(&app, "/api/public/credits?limit=2", &reader).await;
        assert_eq!(first["entries"].as_array().unwrap().len(), 2, "{name}");
        let cursor = first["nextCursor"].as_str().unwrap().to_owned();
        let (_, rest) = get(
            &app,
            &format!("/api/public/credits?limit=2&cursor={cursor}"),
            &reader,
        )
        .await;
        let ids = |v: &Value| -> Vec<String> {
            v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let mut paged = ids(&first);
        paged.extend(ids(&rest));
        assert_eq!(paged, ids(&credits), "{name}");

        // Another organization's key sees its own (empty) account only.
        let (other, _) = app.other_org().await;
        let theirs = app
            .key_in(other, &[Scope::ImageGeneration], KeyMode::Live)
            .await;
        let (status, mine) = get(&app, "/api/public/credits", &theirs).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(
            (
                &mine["balance"],
                &mine["held"],
                mine["entries"].as_array().map(Vec::len)
            ),
            (&json!(0), &json!(0), Some(0)),
            "{name}: {mine}"
        );

        // Refusals: no key, a garbage cursor, a page size out of range, an unknown parameter.
        let (status, _, _) = body(
            app.http
                .get(app.url("/api/public/credits"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401, "{name}");
        for (query, expected) in [
            ("cursor=abc", 400),
            ("limit=0", 400),
            ("limit=1001", 422),
            ("bogus=1", 400),
        ] {
            let (status, error) = get(&app, &format!("/api/public/credits?{query}"), &reader).await;
            assert_eq!(status, expected, "{name}: {query}: {error}");
            assert!(error["code"].is_string(), "{name}: {error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_counted_per_utc_day_with_every_day_of_the_range() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let (app, clock) = app_at(store).await;
        // 2026-03-10: grant 50, generate once. 2026-03-12: generate twice.
        app.grant(app.org, 50).await;
        let key = app.key(&[Scope::ImageGeneration]).await;
        let generate = || async {
            let (status, _, g) = body(
                app.http
                    .post(app.url("/api/public/images/generate"))
                    .bearer_auth(&key)
                    .json(&json!({"source": {"type": "text", "text": "a kite"}}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{name}: {g}");
            g["generation"]["tokensUsed"].as_u64().unwrap()
        };
        let cost = generate().await;
        clock.advance(Duration::from_secs(2 * 86_400));
        generate().await;
        generate().await;

        let (status, usage) = get(
            &app,
            "/api/public/credits/usage?from=2026-03-09&to=2026-03-12",
            &key,
        )
        .await;
        assert_eq!(status, 200, "{name}: {usage}");
        assert_eq!(
            (&usage["from"], &usage["to"]),
            (&json!("2026-03-09"), &json!("2026-03-12")),
            "{name}"
        );
        let days: Vec<(String, u64, u64)> = usage["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["date"].as_str().unwrap().to_owned(),
                    d["spent"].as_u64().unwrap(),
                    d["granted"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            days,
            vec![
                ("2026-03-09".into(), 0, 0),
                ("2026-03-10".into(), cost, 50),
                ("2026-03-11".into(), 0, 0),
                ("2026-03-12".into(), 2 * cost, 0),
            ],
            "{name}: {usage}"
        );
        assert_eq!(usage["spent"], 3 * cost, "{name}");

        // The default: the 30 days that end today.
        let (status, default) = get(&app, "/api/public/credits/usage", &key).await;
        assert_eq!(status, 200, "{name}: {default}");
        assert_eq!(default["days"].as_array().unwrap().len(), 30, "{name}");
        assert_eq!(default["to"], "2026-03-12", "{name}");
        assert_eq!(default["spent"], 3 * cost, "{name}");

        for (query, expected) in [
            ("from=2026-03-12&to=2026-03-09", 400),
            ("from=yesterday", 400),
            ("from=2026-03-09T10:00:00Z", 400),
            ("from=2024-01-01&to=2026-03-12", 422),
        ] {
            let (status, error) =
                get(&app, &format!("/api/public/credits/usage?{query}"), &key).await;
            assert_eq!(status, expected, "{name}: {query}: {error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_renders_are_listed_with_their_items_counted() {
    let (stores, _dir) = backends().await;
    for (name, store) in stores {
        let (app, _clock) = app_at(store).await;
        app.grant(app.org, 100).await;
        let key = app.key(&[Scope::ImageGeneration, Scope::SceneRender]).await;
        let post = |path: &str, payload: Value| {
            let request = app
                .http
                .post(app.url(path))
                .bearer_auth(&key)
                .json(&payload);
            async move { body(request.send().await.unwrap()).await }
        };
        let (_, _, a) = post("/api/playground/images", json!({"prompts": ["a", "b"]})).await;
        let (_, _, b) = post("/api/playground/images", json!({"prompts": ["c"]})).await;
        let (status, _, render) = post(
            "/api/public/scenes/render",
            json!({"background": {"type": "text", "text": "a harbour"}}),
        )
        .await;
        assert_eq!(status, 202, "{name}: {render}");
        let b_id = b["jobId"].as_str().unwrap().to_owned();
        let (status, _, _) =
            post(&format!("/api/playground/images/{b_id}/cancel"), json!({})).await;
        assert_eq!(status, 200, "{name}");

        let (status, page) = get(&app, "/api/playground/images?limit=2", &key).await;
        assert_eq!(status, 200, "{name}: {page}");
        let cursor = page["nextCursor"].as_str().unwrap().to_owned();
        let (_, rest) = get(
            &app,
            &format!("/api/playground/images?limit=2&cursor={cursor}"),
            &key,
        )
        .await;
        assert!(rest["nextCursor"].is_null(), "{name}: {rest}");
        let jobs: Vec<Value> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .chain(rest["jobs"].as_array().unwrap())
            .cloned()
            .collect();
        let mut expected = vec![
            a["jobId"].as_str().unwrap().to_owned(),
            b_id.clone(),
            render["render"]["id"].as_str().unwrap().to_owned(),
        ];
        expected.sort();
        let listed: Vec<String> = jobs
            .iter()
            .map(|j| j["jobId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, expected, "{name}: oldest (lowest id) first");
        let find = |id: &str| jobs.iter().find(|j| j["jobId"] == id).unwrap().clone();
        let queued = find(a["jobId"].as_str().unwrap());
        assert_eq!(
            (&queued["kind"], &queued["status"], &queued["totalImages"]),
            (&json!("bulk"), &json!("queued"), &json!(2)),
            "{name}: {queued}"
        );
        let canceled = find(&b_id);
        assert_eq!(
            (&canceled["status"], &canceled["canceledImages"]),
            (&json!("canceled"), &json!(1)),
            "{name}: {canceled}"
        );
        assert!(canceled["completedAt"].is_string(), "{name}");
        let scene = find(render["render"]["id"].as_str().unwrap());
        assert_eq!(scene["kind"], "scene", "{name}: {scene}");
        assert!(
            queued.get("images").is_none() && queued.get("prompts").is_none(),
            "{name}: a listing names no prompt"
        );

        // A render-only key lists too; a key with neither scope is refused; another
        // organization sees none of these.
        let scenes_only = app.key(&[Scope::SceneRender]).await;
        let (status, _) = get(&app, "/api/playground/images", &scenes_only).await;
        assert_eq!(status, 200, "{name}");
        let neither = app.key(&[Scope::OrganizationWrite]).await;
        let (status, error) = get(&app, "/api/playground/images", &neither).await;
        assert_eq!(status, 403, "{name}: {error}");
        let (other, _) = app.other_org().await;
        let theirs = app
            .key_in(other, &[Scope::ImageGeneration], KeyMode::Live)
            .await;
        let (status, none) = get(&app, "/api/playground/images", &theirs).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(none["jobs"], json!([]), "{name}");
        let (status, _) = get(&app, "/api/playground/images?cursor=nope", &key).await;
        assert_eq!(status, 400, "{name}");
    }
}
