//! The HTTP API over a real server on loopback: authentication errors with the documents' exact
//! texts, scopes, credits, idempotency, tenancy, the dashboard key routes, audit export, the
//! OpenAPI document, and every malformed-input path answering a 4xx with a stable code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{app, body};
use creapic_core::key::KeyMode;
use creapic_core::scope::Scope;
use serde_json::json;

#[tokio::test]
async fn the_001_error_table_is_answered_exactly() {
    let app = app().await;
    let url = app.url("/api/playground/images");
    let payload = json!({"prompts": ["A beautiful sunset over the ocean"]});
    let cases = [
        (
            None,
            "Missing or invalid Authorization header",
            "missing_authorization",
        ),
        (
            Some("Basic dXNlcjpwYXNz"),
            "Missing or invalid Authorization header",
            "missing_authorization",
        ),
        (
            Some("Bearer sk_XXXX"),
            "Invalid API key format",
            "invalid_api_key_format",
        ),
        (
            Some("Bearer wi_live_0000000000000000000000000000000000000000000000000000000000000000"),
            "Invalid API key",
            "invalid_api_key",
        ),
    ];
    for (auth, text, code) in cases {
        let mut req = app.http.post(&url).json(&payload);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let (status, headers, b) = body(req.send().await.unwrap()).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(b["error"], text);
        assert_eq!(b["code"], code);
        let rid = headers["x-request-id"].to_str().unwrap();
        assert_eq!(
            b["requestId"], rid,
            "the body repeats the x-request-id header"
        );
    }
}

#[tokio::test]
async fn bulk_jobs_debit_one_credit_per_image_all_or_nothing() {
    let app = app().await;
    app.grant(app.org, 6).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let resp = app
        .http
        .post(app.url("/api/playground/images"))
        .bearer_auth(&key)
        .json(&json!({"prompts": ["A beautiful sunset over the ocean", "A futuristic cityscape"]}))
        .send()
        .await
        .unwrap();
    let (status, headers, b) = body(resp).await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(b["totalImages"], 2);
    assert_eq!(b["creditsUsed"], 2);
    assert_eq!(b["credits"], 4);
    assert_eq!(
        b.as_object().unwrap().len(),
        4,
        "exactly the 001 fields: {b}"
    );
    assert!(headers.contains_key("ratelimit-remaining"));
    // Five prompts against four credits: refused, nothing debited.
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/playground/images"))
            .header("x-api-key", &key)
            .json(&json!({"prompts": ["a", "b", "c", "d", "e"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 402);
    assert_eq!(b["error"], "Insufficient credits");
    assert_eq!(b["code"], "insufficient_credits");
    assert_eq!(app.core.balance(app.org).await.unwrap().get(), 4);
    // The job is visible to its organization.
    let job_id = {
        let (_, _, b) = body(
            app.http
                .post(app.url("/api/playground/images"))
                .bearer_auth(&key)
                .json(&json!({"prompts": ["one more"]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        b["jobId"].as_str().unwrap().to_owned()
    };
    let (status, _, b) = body(
        app.http
            .get(app.url(&format!("/api/playground/images/{job_id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["jobId"], job_id.as_str());
    assert_eq!(b["status"], "queued");
    assert_eq!(b["totalImages"], 1);
    assert_eq!(b["images"][0]["prompt"], "one more");
    assert_eq!(b["images"][0]["status"], "pending");
}

#[tokio::test]
async fn scopes_and_tenancy_are_enforced() {
    let app = app().await;
    app.grant(app.org, 5).await;
    let renderer = app.key(&[Scope::SceneRender]).await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/playground/images"))
            .bearer_auth(&renderer)
            .json(&json!({"prompts": ["x"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(b["code"], "missing_scope");
    // Org B cannot see org A's job, and gets the same 404 as for a job that does not exist.
    let mine = app.key(&[Scope::ImageGeneration]).await;
    let (_, _, b) = body(
        app.http
            .post(app.url("/api/playground/images"))
            .bearer_auth(&mine)
            .json(&json!({"prompts": ["secret"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let job = b["jobId"].as_str().unwrap().to_owned();
    let (other, _) = app.other_org().await;
    let theirs = app
        .key_in(other, &[Scope::ImageGeneration], KeyMode::Live)
        .await;
    let (status, _, b) = body(
        app.http
            .get(app.url(&format!("/api/playground/images/{job}")))
            .bearer_auth(&theirs)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(b["code"], "not_found");
    let missing = uuid::Uuid::now_v7();
    let (status, _, _) = body(
        app.http
            .get(app.url(&format!("/api/playground/images/{missing}")))
            .bearer_auth(&theirs)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, b) = body(
        app.http
            .get(app.url("/api/playground/images/not-a-uuid"))
            .bearer_auth(&theirs)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(b["code"], "invalid_parameter");
}

#[tokio::test]
async fn a_retried_post_is_charged_once_and_replayed() {
    let app = app().await;
    app.grant(app.org, 10).await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let send = |prompts: serde_json::Value| {
        app.http
            .post(app.url("/api/playground/images"))
            .bearer_auth(&key)
            .header("idempotency-key", "order-42")
            .json(&json!({ "prompts": prompts }))
            .send()
    };
    let (s1, h1, b1) = body(send(json!(["a", "b", "c"])).await.unwrap()).await;
    let (s2, h2, b2) = body(send(json!(["a", "b", "c"])).await.unwrap()).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(b1, b2, "a replay returns the first response");
    assert!(!h1.contains_key("idempotent-replayed"));
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(
        app.core.balance(app.org).await.unwrap().get(),
        7,
        "charged once"
    );
    let (s3, _, b3) = body(send(json!(["different"])).await.unwrap()).await;
    assert_eq!(s3, 422);
    assert_eq!(b3["code"], "idempotency_conflict");
    // Concurrent duplicates: exactly one charge.
    let key2 = key.clone();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let http = app.http.clone();
        let url = app.url("/api/playground/images");
        let key = key2.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .header("idempotency-key", "burst-1")
                .json(&json!({"prompts": ["p"]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 409),
        "{statuses:?}"
    );
    assert_eq!(
        app.core.balance(app.org).await.unwrap().get(),
        6,
        "{statuses:?}"
    );
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/playground/images"))
            .bearer_auth(&key)
            .header("idempotency-key", "has space")
            .json(&json!({"prompts": ["p"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(b["code"], "invalid_parameter");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_stable_code() {
    let app = app().await;
    app.grant(app.org, 1000).await;
    let key = app
        .key(&[Scope::ImageGeneration, Scope::OrganizationWrite])
        .await;
    let url = app.url("/api/playground/images");
    let post = |body: Vec<u8>, ct: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let long_prompt = "é".repeat(4001);
    let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let cases: Vec<(Vec<u8>, &'static str, u16, &str)> = vec![
        (b"{".to_vec(), "application/json", 400, "invalid_json"),
        (b"".to_vec(), "application/json", 400, "invalid_json"),
        (b"[]".to_vec(), "application/json", 400, "invalid_json"),
        (
            br#"{"prompts": "one"}"#.to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            br#"{"prompts": [1]}"#.to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            br#"{"prompts": []}"#.to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            br#"{"prompts": ["  "]}"#.to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            br#"{"prompts": ["ok"], "extra": 1}"#.to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            serde_json::to_vec(&json!({ "prompts": [long_prompt] })).unwrap(),
            "application/json",
            422,
            "limit_exceeded",
        ),
        (
            serde_json::to_vec(&json!({ "prompts": many })).unwrap(),
            "application/json",
            422,
            "limit_exceeded",
        ),
        (
            vec![b' '; 2 * 1024 * 1024],
            "application/json",
            413,
            "body_too_large",
        ),
        (
            br#"{"prompts": ["ok"]}"#.to_vec(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            b"\xff\xfe".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
    ];
    for (payload, ct, want_status, want_code) in cases {
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(40)]).into_owned();
        let (status, headers, b) = body(post(payload, ct).await.unwrap()).await;
        assert_eq!(status, want_status, "{shown}: {b}");
        assert_eq!(b["code"], want_code, "{shown}: {b}");
        assert!(headers.contains_key("x-request-id"));
    }
    let (status, _, b) = body(
        app.http
            .post(&url)
            .bearer_auth(&key)
            .json(&json!({"prompts": [1]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        b["error"].as_str().unwrap().contains("prompts[0]"),
        "the failing path is named: {b}"
    );
    assert_eq!(
        app.core.balance(app.org).await.unwrap().get(),
        1000,
        "no bad request was charged"
    );
    let (status, _, b) = body(app.http.get(app.url("/api/nope")).send().await.unwrap()).await;
    assert_eq!((status, b["code"].as_str()), (404, Some("route_not_found")));
    let (status, _, b) = body(
        app.http
            .put(app.url("/api/playground/images"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn organizations_are_created_through_a_key_and_owned_by_its_creator() {
    let app = app().await;
    let key = app.key(&[Scope::OrganizationWrite]).await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/organizations/create"))
            .bearer_auth(&key)
            .json(&json!({"name": "Acme Labs 🧪"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["role"], "owner");
    assert_eq!(b["organization"]["name"], "Acme Labs 🧪");
    let id = creapic_core::id::OrgId::parse(b["organization"]["id"].as_str().unwrap()).unwrap();
    let role = app.core.store().role(id, app.owner).await.unwrap();
    assert_eq!(role, Some(creapic_core::org::Role::Owner));
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/organizations/create"))
            .bearer_auth(&key)
            .json(&json!({"name": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, b["code"].as_str()), (400, Some("invalid_request")));
    let images_only = app.key(&[Scope::ImageGeneration]).await;
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/public/organizations/create"))
            .bearer_auth(&images_only)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, b["code"].as_str()), (403, Some("missing_scope")));
}

#[tokio::test]
async fn dashboard_users_manage_keys_and_read_the_audit_log() {
    let app = app().await;
    let owner = app.owner.to_string();
    let org = app.org.to_string();
    // No signed-in user: 401.
    let (status, _, b) = body(
        app.http
            .get(app.url(&format!("/api/keys?organizationId={org}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, b["code"].as_str()), (401, Some("not_signed_in")));
    let (status, _, created) = body(
        app.http
            .post(app.url("/api/keys"))
            .header("x-test-user", &owner)
            .header("user-agent", "dashboard-test/1")
            .header("idempotency-key", "create-prod")
            .json(&json!({"organizationId": org, "name": "Production", "scopes": ["IMAGE_GENERATION"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let plaintext = created["key"].as_str().unwrap().to_owned();
    assert!(plaintext.starts_with("wi_live_") && plaintext.len() == 72);
    assert_eq!(created["apiKey"]["prefix"], &plaintext[..12]);
    // The replay never shows the key again.
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/keys"))
            .header("x-test-user", &owner)
            .header("idempotency-key", "create-prod")
            .json(&json!({"organizationId": org, "name": "Production", "scopes": ["IMAGE_GENERATION"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 409);
    assert!(!b.to_string().contains(&plaintext[8..]));
    let (status, _, listed) = body(
        app.http
            .get(app.url(&format!("/api/keys?organizationId={org}")))
            .header("x-test-user", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&plaintext[8..]),
        "listing never shows the key"
    );
    // The key works, then is deleted, then is refused.
    let (status, _, _) = body(
        app.http
            .get(app.url(&format!("/api/playground/images/{}", uuid::Uuid::now_v7())))
            .bearer_auth(&plaintext)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let id = created["apiKey"]["id"].as_str().unwrap();
    let (status, _, b) = body(
        app.http
            .delete(app.url(&format!("/api/keys/{id}?organizationId={org}")))
            .header("x-test-user", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert!(b["apiKey"]["deletedAt"].is_string());
    let (status, _, b) = body(
        app.http
            .get(app.url(&format!("/api/playground/images/{}", uuid::Uuid::now_v7())))
            .bearer_auth(&plaintext)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["error"].as_str()),
        (401, Some("Invalid API key"))
    );
    // Another organization's owner sees nothing.
    let (_, stranger) = app.other_org().await;
    let (status, _, _) = body(
        app.http
            .get(app.url(&format!("/api/keys?organizationId={org}")))
            .header("x-test-user", stranger.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = body(
        app.http
            .delete(app.url(&format!("/api/keys/{id}?organizationId={org}")))
            .header("x-test-user", stranger.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    // The audit log shows creation and deletion with the client's IP and user agent.
    let (status, _, log) = body(
        app.http
            .get(app.url(&format!("/api/audit?organizationId={org}&since=2000-01-01")))
            .header("x-test-user", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{log}");
    let events = log["events"].as_array().unwrap();
    let created_ev = events
        .iter()
        .find(|e| e["action"] == "key.created")
        .unwrap();
    assert_eq!(created_ev["ip"], "127.0.0.1");
    assert_eq!(created_ev["userAgent"], "dashboard-test/1");
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "key.deleted" && e["ip"] == "127.0.0.1")
    );
    // Filtered by action: only the deletion; an unknown action is a 400.
    let (status, _, deleted) = body(
        app.http
            .get(app.url(&format!(
                "/api/audit?organizationId={org}&action=key.deleted"
            )))
            .header("x-test-user", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    let actions: Vec<_> = deleted["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["key.deleted"]);
    let (status, _, b) = body(
        app.http
            .get(app.url(&format!(
                "/api/audit?organizationId={org}&action=key.exploded"
            )))
            .header("x-test-user", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let csv = app
        .http
        .get(app.url(&format!("/api/audit?organizationId={org}&format=csv")))
        .header("x-test-user", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("id,at,action,actor,ip,user_agent,key_id,key_prefix,detail\r\n"));
    assert!(text.contains("key.deleted"));
    let (status, _, b) = body(
        app.http
            .get(app.url(&format!("/api/audit?organizationId={org}&since=yesterday")))
            .header("x-test-user", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let config = creapic_server_kit::KitConfig {
        rate_limit: creapic_server_kit::RateLimitConfig {
            per_second: 1,
            burst: 2,
        },
        ..Default::default()
    };
    let app = common::app_with(
        std::sync::Arc::new(creapic_core::store::memory::MemoryStore::new()),
        config,
    )
    .await;
    let key = app.key(&[Scope::ImageGeneration]).await;
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            app.http
                .get(app.url(&format!("/api/playground/images/{}", uuid::Uuid::now_v7())))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        );
    }
    let (status, headers, b) = body(last.unwrap()).await;
    assert_eq!((status, b["code"].as_str()), (429, Some("rate_limited")));
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait));
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let app = app().await;
    let (status, _, doc) = body(app.http.get(app.url("/api/openapi")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/playground/images",
        "/api/playground/images/{jobId}",
        "/api/keys",
        "/api/audit",
        "/api/public/organizations/create",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    assert!(doc["components"]["schemas"]["BulkImagesResponse"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_service_mounts_without_a_server() {
    use tower::ServiceExt;
    let app = app().await;
    let request = http::Request::get("/api/health")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn a_client_request_id_is_kept_when_plain_and_replaced_otherwise() {
    let app = app().await;
    let send = |path: &'static str, id: &'static str| {
        let http = app.http.clone();
        let url = app.url(path);
        async move {
            body(
                http.get(url)
                    .header("x-request-id", id)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // Kept: echoed in the header and repeated in the error body, on a handler's error and on
    // the router's own 404.
    for path in ["/api/playground/images/nope", "/api/no-such-route"] {
        let (status, headers, b) = send(path, "support-ticket_42.a").await;
        assert!(status == 401 || status == 404, "{path}: {status}");
        assert_eq!(headers["x-request-id"], "support-ticket_42.a", "{path}");
        assert_eq!(b["requestId"], "support-ticket_42.a", "{path}");
    }
    // Replaced: not the documented alphabet, or longer than 64 bytes.
    let long: &'static str = "a".repeat(65).leak();
    for bad in ["has space", "semi;colon", long] {
        let (_, headers, b) = send("/api/no-such-route", bad).await;
        let id = headers["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32, "{bad:?} → {id}");
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_eq!(b["requestId"], id);
    }
}

#[tokio::test]
async fn the_openapi_document_states_ids_and_the_hosts_own_limits() {
    let mut config = creapic_server_kit::KitConfig::default();
    config.limits.prompts_max = 7;
    config.limits.prompt_max_chars = 300;
    let app = common::app_with(
        std::sync::Arc::new(creapic_core::store::memory::MemoryStore::new()),
        config,
    )
    .await;
    let (status, _, doc) = body(app.http.get(app.url("/api/openapi")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let param = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has {name}"))["schema"]
            .clone()
    };
    for (path, method, name) in [
        ("/api/playground/images/{jobId}", "get", "jobId"),
        ("/api/keys/{id}", "delete", "id"),
        ("/api/keys", "get", "organizationId"),
        ("/api/media/{org}/{key}", "get", "org"),
    ] {
        assert_eq!(param(path, method, name)["format"], "uuid", "{path} {name}");
    }
    let prompts = &doc["components"]["schemas"]["BulkImagesRequest"]["properties"]["prompts"];
    assert_eq!(prompts["minItems"], 1);
    assert_eq!(prompts["maxItems"], 7, "the host's limit, not the default");
    assert_eq!(prompts["items"]["maxLength"], 300);
    // What the document says is what the server enforces.
    let key = app.key(&[Scope::ImageGeneration]).await;
    app.grant(app.org, 100).await;
    let eight: Vec<String> = (0..8).map(|i| format!("prompt {i}")).collect();
    let (status, _, b) = body(
        app.http
            .post(app.url("/api/playground/images"))
            .bearer_auth(&key)
            .json(&json!({ "prompts": eight }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{b}");
    assert_eq!(b["code"], "limit_exceeded");
}

/// The key (or the dashboard user) is checked before the body is read: a request without a key,
/// or with a key that lacks the route's scope, is refused as such whatever its body (too large, not JSON, of
/// another content type) — the body is never the first thing an unauthenticated caller learns
/// about.
#[tokio::test]
async fn the_key_is_checked_before_the_body_is_read() {
    let app = app().await;
    let wrong_scope = app.key(&[Scope::OrganizationWrite]).await;
    let write_only = app.key(&[Scope::ImageGeneration]).await;
    let scene = app.key(&[Scope::SceneRender]).await;
    // (route, a key without its scope, a key with it)
    let routes = [
        ("/api/public/images/generate", &wrong_scope, &write_only),
        ("/api/public/scenes/render", &wrong_scope, &scene),
        ("/api/playground/images", &wrong_scope, &write_only),
        (
            "/api/public/organizations/create",
            &write_only,
            &wrong_scope,
        ),
    ];
    let big = "x".repeat(1024 * 1024 + 1);
    // An `Idempotency-Key` too long to accept: a 400 too, but only once the key is known.
    let long_key = "k".repeat(300);
    // (content type, body, the status once the key passes)
    let bodies: [(&str, String, u16); 3] = [
        ("application/json", "{".into(), 400),
        ("text/plain", "hello".into(), 415),
        ("application/json", big, 413),
    ];
    for (path, key, right_key) in routes {
        for (content_type, payload, refused) in &bodies {
            let send = |auth: Option<&str>| {
                let mut req = app
                    .http
                    .post(app.url(path))
                    .header("content-type", *content_type)
                    .header("idempotency-key", &long_key)
                    .body(payload.clone());
                if let Some(key) = auth {
                    req = req.bearer_auth(key);
                }
                req.send()
            };
            let (status, _, b) = body(send(None).await.unwrap()).await;
            assert_eq!(
                (status, b["code"].as_str()),
                (401, Some("missing_authorization")),
                "{path} {content_type}"
            );
            let (status, _, b) = body(send(Some(key)).await.unwrap()).await;
            assert_eq!(
                (status, b["code"].as_str()),
                (403, Some("missing_scope")),
                "{path} {content_type}: {b}"
            );
            // With the right key, the body itself is refused (it is read before the header).
            let (status, _, b) = body(send(Some(right_key)).await.unwrap()).await;
            assert_eq!(status, *refused, "{path} {content_type}: {b}");
        }
    } // The dashboard's caller likewise: no signed-in user is a 401 whatever the body.
    let org = app.org.to_string();
    let user = app.owner.to_string();
    for path in [
        "/api/keys".to_owned(),
        format!("/api/organizations/{org}/members"),
        format!("/api/organizations/{org}/members/{user}"),
    ] {
        let method = if path.ends_with(&user) {
            reqwest::Method::PATCH
        } else {
            reqwest::Method::POST
        };
        let (status, _, b) = body(
            app.http
                .request(method, app.url(&path))
                .header("content-type", "text/plain")
                .body("{")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, b["code"].as_str()),
            (401, Some("not_signed_in")),
            "{path}"
        );
    }
}
