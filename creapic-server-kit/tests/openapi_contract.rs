//! The served OpenAPI document against the server itself: every operation is probed over HTTP
//! with what a client gets wrong (no key, a malformed or unknown key, a key without the scope,
//! an empty or broken body, the wrong content type, a garbage or unknown id, a bad
//! `Idempotency-Key`, no credits, too many requests) and every status the server answers must
//! be listed for that operation in the document; the document's operations and the kit's
//! route contract (`contract::ROUTES`) must be the same set. Default settings (rate limits on).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{app, body};
use creapic_core::scope::Scope;
use creapic_server_kit::http::contract::ROUTES;
use serde_json::Value;

/// (path, method) → documented statuses.
fn documented(doc: &Value) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let statuses = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter_map(|k| k.parse().ok())
                .collect();
            out.insert((path.clone(), method.to_uppercase()), statuses);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_the_server_answers_is_in_the_document() {
    let app = app().await;
    let (_, doc_headers, doc) =
        body(app.http.get(app.url("/api/openapi")).send().await.unwrap()).await;
    assert!(doc_headers.get("x-request-id").is_some());
    let documented = documented(&doc);
    let contract: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(p, m, _)| ((*p).to_owned(), m.as_str().to_owned()))
        .collect();
    let in_doc: BTreeSet<(String, String)> = documented.keys().cloned().collect();
    assert_eq!(in_doc, contract, "document operations vs contract::ROUTES");

    // Keys: one with every scope (funded), one with none of the needed ones, one of a broke org.
    app.grant(app.org, 1000).await;
    let full = app
        .key(&[
            Scope::ImageGeneration,
            Scope::SceneRender,
            Scope::OrganizationWrite,
        ])
        .await;
    let (broke_org, _) = app.other_org().await;
    let broke = app
        .key_in(
            broke_org,
            &[Scope::ImageGeneration, Scope::SceneRender],
            creapic_core::key::KeyMode::Live,
        )
        .await;
    let unknown = format!("wi_live_{}", "0".repeat(64));
    let owner = app.owner.to_string();
    let garbage_id = "not-an-id".to_owned();
    let unknown_id = uuid::Uuid::now_v7().to_string();
    let mut seen: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    for ((path, method), statuses) in &documented {
        for id in [&garbage_id, &unknown_id] {
            let url_path = path
                .replace("{jobId}", id)
                .replace("{organizationId}", id)
                .replace("{userId}", id)
                .replace("{id}", id)
                .replace("{org}", id)
                .replace("{key}", id);
            let mut probes: Vec<reqwest::RequestBuilder> = Vec::new();
            let request = || {
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                app.http.request(m, app.url(&url_path))
            };
            probes.push(request());
            probes.push(request().header("authorization", "Bearer nope"));
            probes.push(request().bearer_auth(&unknown));
            probes.push(request().header("x-api-key", &broke));
            probes.push(request().bearer_auth(&full));
            probes.push(request().bearer_auth(&full).header("x-test-user", &owner));
            probes.push(
                request()
                    .bearer_auth(&full)
                    .header("x-test-user", &unknown_id),
            );
            if method == "POST" || method == "DELETE" || method == "PATCH" {
                for key in [&full, &broke] {
                    probes.push(
                        request()
                            .bearer_auth(key)
                            .header("x-test-user", &owner)
                            .header("content-type", "application/json")
                            .body("{}"),
                    );
                    probes.push(
                        request()
                            .bearer_auth(key)
                            .header("content-type", "application/json")
                            .body("{not json"),
                    );
                    probes.push(request().bearer_auth(key).body("text"));
                    probes.push(
                        request()
                            .bearer_auth(key)
                            .header("x-test-user", &owner)
                            .header("idempotency-key", "é")
                            .header("content-type", "application/json")
                            .body("{}"),
                    );
                    probes.push(
                        request()
                            .bearer_auth(key)
                            .header("content-type", "application/json")
                            .body(vec![b' '; 1024 * 1024 + 16]),
                    );
                }
                probes.push(
                    request()
                        .bearer_auth(&broke)
                        .json(&serde_json::json!({"prompts": ["a lemon"]})),
                );
                probes.push(request().bearer_auth(&broke).json(&serde_json::json!({
                    "source": {"type": "text", "text": "a lemon"}
                })));
            }
            for probe in probes {
                // An oversized body may be refused before it is all sent: the connection then
                // closes under the client, which is not an answer to check.
                let Ok(sent) = probe.send().await else {
                    continue;
                };
                let (status, headers, answer) = body(sent).await;
                assert!(
                    headers.get("x-request-id").is_some(),
                    "{method} {path}: no x-request-id"
                );
                seen.entry((path.clone(), method.clone()))
                    .or_default()
                    .insert(status);
                assert!(
                    statuses.contains(&status),
                    "{method} {path} answered {status}, which its document does not list ({statuses:?}): {answer}"
                );
            }
        }
    }
    // Past the key's rate limit (defaults: 50/s, burst 100): a GET behind a key answers 429.
    let status_path = format!("/api/playground/images/{unknown_id}");
    let mut limited = false;
    for _ in 0..400 {
        let (status, headers, _) = body(
            app.http
                .get(app.url(&status_path))
                .bearer_auth(&full)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if status == 429 {
            assert!(headers.get("retry-after").is_some());
            limited = true;
            break;
        }
    }
    assert!(limited, "the rate limit was never reached");
    let statuses = &documented[&(
        "/api/playground/images/{jobId}".to_owned(),
        "GET".to_owned(),
    )];
    assert!(statuses.contains(&429));
    // The probes reached more than the happy path on every operation.
    for ((path, method), got) in &seen {
        if path.starts_with("/api/health")
            || path.starts_with("/api/ready")
            || path.starts_with("/api/openapi")
        {
            continue; // nothing a client sends makes these fail (a database outage does: tests/http_backends.rs)
        }
        assert!(got.iter().any(|s| *s >= 400), "{method} {path}: {got:?}");
    }
}

/// A ready prompt given as a plain string is accepted and sent as written, as the document
/// describes it (`oneOf` string | object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_prompt_may_be_a_plain_string() {
    let app = app().await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let (_, _, doc) = body(app.http.get(app.url("/api/openapi")).send().await.unwrap()).await;
    // The ready-prompt variant, inline or behind a `$ref`.
    let schemas = &doc["components"]["schemas"];
    let ready = schemas["ImageSource"]["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| match v["$ref"].as_str() {
            Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
            None => v,
        })
        .map(|v| &v["properties"]["prompt"])
        .find(|p| p.is_object())
        .unwrap_or(&Value::Null);
    let types: Vec<&str> = ready["oneOf"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types, ["string", "object"], "{ready}");
    let (status, _, answer) = body(
        app.http
            .post(app.url("/api/public/images/generate"))
            .bearer_auth(&key)
            .json(&serde_json::json!({
                "source": {"type": "prompt", "prompt": "a watercolor lemon on linen"}
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["generation"]["prompt"],
        "a watercolor lemon on linen"
    );
    for bad in [
        serde_json::json!(""),
        serde_json::json!(7),
        serde_json::json!([]),
    ] {
        let (status, _, answer) = body(
            app.http
                .post(app.url("/api/public/images/generate"))
                .bearer_auth(&key)
                .json(&serde_json::json!({"source": {"type": "prompt", "prompt": bad}}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
}
