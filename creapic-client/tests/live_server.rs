//! The client against a real creapic server on loopback (server kit, SQLite store, offline
//! renderer, job runner): every endpoint answered with its wire type, the waiters running jobs
//! to the end, the 001 error table and the other API errors arriving as typed values, replays
//! charged once, and the dashboard's key and audit calls through a host's login layer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Server, server, server_with};
use creapic_client::wire::{
    AspectRatioWire, CreateKeyRequest, GenerateImageRequest, ImageSource, JobStatusWire,
    KeyModeWire, LayerSource, QualityWire, SceneLayer, SceneRenderRequest, ScopeWire,
};
use creapic_client::{Client, Error, ErrorCode, WaitOptions};
use creapic_core::scope::Scope;
use reqwest::StatusCode;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

fn fast_wait() -> WaitOptions {
    WaitOptions {
        max_wait: Duration::from_secs(20),
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

/// The API error of a result that must have failed with one.
fn api<T: std::fmt::Debug>(r: creapic_client::Result<T>) -> creapic_client::ApiError {
    match r {
        Err(Error::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_public_endpoint_answers_with_its_wire_type() {
    let s = server().await;
    s.grant(s.org, 100).await;
    let key = s
        .key(&[
            Scope::ImageGeneration,
            Scope::SceneRender,
            Scope::OrganizationWrite,
        ])
        .await;
    let client = s.client(&key);

    // One image, synchronously.
    let generated = client
        .images()
        .generate(GenerateImageRequest {
            source: ImageSource::Text {
                text: "Article about citrus mocktails with summer ingredients".into(),
            },
            aspect_ratio: AspectRatioWire::R4x5,
            quality: QualityWire::Hd,
            organization_id: None,
        })
        .send_with_meta()
        .await
        .unwrap();
    let image = generated.body;
    assert_eq!(image.generation.status, JobStatusWire::Completed);
    assert_eq!(image.generation.aspect_ratio, AspectRatioWire::R4x5);
    assert_eq!((image.generation.tokens_used, image.tokens), (2, 98));
    let meta = generated.meta;
    assert_eq!(
        (meta.status, meta.attempts, meta.replayed),
        (StatusCode::OK, 1, false)
    );
    assert!(meta.request_id.is_some());
    assert!(meta.rate_limit.is_some(), "public routes send RateLimit-*");
    assert!(
        meta.idempotency_key
            .as_deref()
            .is_some_and(|k| k.starts_with("creapic-rs-"))
    );
    let file = client.media().download(&image.image_url).await.unwrap();
    assert!(file.bytes.starts_with(PNG), "a PNG image");
    assert_eq!(file.extension(), "png");
    let quick = client.images().generate_text("A lemon").await.unwrap();
    assert_eq!(quick.tokens, 97);

    // An organization owned by the key's creator.
    let created = client.organizations().create("Acme Labs 🧪").await.unwrap();
    assert_eq!(created.role, "owner");
    assert_eq!(created.organization.name, "Acme Labs 🧪");

    // A bulk job, polled to the end.
    let job = client
        .playground()
        .create([
            "A beautiful sunset over the ocean",
            "A futuristic cityscape",
        ])
        .await
        .unwrap();
    assert_eq!(
        (job.total_images, job.credits_used, job.credits),
        (2, 2, 95)
    );
    let status = client.playground().get(&job.job_id).await.unwrap();
    assert_eq!(status.job_id, job.job_id);
    assert_eq!(status.images[1].prompt, "A futuristic cityscape");
    let done = client
        .playground()
        .wait_for_job(&job.job_id, fast_wait())
        .await
        .unwrap();
    assert_eq!(done.status, JobStatusWire::Completed);
    let url = done.images[0].url.as_deref().expect("an image url");
    assert!(
        client
            .media()
            .download(url)
            .await
            .unwrap()
            .bytes
            .starts_with(PNG)
    );

    // A scene with the first image as a layer, rendered by the runner.
    let accepted = client
        .scenes()
        .render(SceneRenderRequest {
            background: ImageSource::Text {
                text: "A summer terrace".into(),
            },
            layers: vec![SceneLayer {
                source: LayerSource::Generation {
                    id: image.generation.id.clone(),
                },
                x: 0.1,
                y: 0.2,
                scale: 0.5,
                opacity: 0.9,
            }],
            aspect_ratio: AspectRatioWire::R16x9,
            quality: QualityWire::Standard,
            organization_id: None,
        })
        .await
        .unwrap()
        .render;
    assert_eq!(accepted.tokens_reserved, 2);
    let polled = client.scenes().get(&accepted.id).await.unwrap().render;
    assert_eq!(polled.id, accepted.id);
    let mut progress = Vec::new();
    let render = client
        .scenes()
        .wait_for_render(&accepted.id, fast_wait())
        .on_progress(|p| progress.push(p))
        .await
        .unwrap();
    assert_eq!(render.status, JobStatusWire::Completed, "{render:?}");
    assert_eq!(render.tokens_used, 2);
    let last = progress.last().copied().unwrap_or_default();
    assert_eq!((last.completed, last.total), (1, 1));
    let scene = client
        .media()
        .download(render.image_url.as_deref().expect("scene url"))
        .await
        .unwrap();
    assert!(scene.bytes.starts_with(PNG));

    assert_eq!(s.balance().await, 100 - 2 - 1 - 2 - 2);
}

#[tokio::test]
async fn the_bulk_job_waiter_reports_progress_to_the_last_image() {
    let s = server().await;
    s.grant(s.org, 10).await;
    let client = s.client(&s.key(&[Scope::ImageGeneration]).await);
    let prompts: Vec<String> = (1..=5).map(|i| format!("Postcard number {i}")).collect();
    let job = client.playground().create(prompts).await.unwrap();
    let mut seen = Vec::new();
    let done = client
        .playground()
        .wait_for_job(&job.job_id, fast_wait())
        .on_progress(|p| seen.push(p))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatusWire::Completed);
    assert_eq!((done.completed_images, done.credits_used), (5, 5));
    assert!(seen.iter().all(|p| p.total == 5));
    assert!(
        seen.windows(2).all(|w| w[0].completed <= w[1].completed),
        "progress never goes back: {seen:?}"
    );
    assert_eq!(seen.last().map(|p| p.completed), Some(5));
    assert_eq!(s.balance().await, 5);
}

#[tokio::test]
async fn the_001_error_table_arrives_as_typed_errors() {
    let s = server().await;
    s.grant(s.org, 1).await;
    // 401: no key at all.
    let anonymous = Client::builder().base_url(&s.base).build().unwrap();
    let e = api(anonymous.playground().create(["x"]).await);
    assert_eq!(
        (e.status, &e.code, e.message.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            &ErrorCode::MissingAuthorization,
            "Missing or invalid Authorization header"
        )
    );
    assert!(e.request_id.is_some(), "every error carries the request id");
    // 401: a credential that is not a key (sent raw by a proxy header: the client itself
    // refuses to send a malformed key).
    let raw = Client::builder()
        .base_url(&s.base)
        .default_header("authorization", "Bearer sk_XXXX")
        .build()
        .unwrap();
    let e = api(raw.playground().create(["x"]).await);
    assert_eq!(
        (e.status, &e.code, e.message.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            &ErrorCode::InvalidApiKeyFormat,
            "Invalid API key format"
        )
    );
    let local = Client::builder()
        .base_url(&s.base)
        .api_key_text("sk_XXXX")
        .build();
    assert_eq!(
        local.err().map(|e| e.code().to_owned()).as_deref(),
        Some("invalid_api_key_format"),
        "the client checks the format before any request"
    );
    // 401: well-formed but unknown.
    let unknown =
        s.client("wi_live_0000000000000000000000000000000000000000000000000000000000000000");
    let e = api(unknown.playground().create(["x"]).await);
    assert_eq!(
        (e.status, &e.code, e.message.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            &ErrorCode::InvalidApiKey,
            "Invalid API key"
        )
    );
    // 402: two images against one credit; nothing is debited.
    let client = s.client(&s.key(&[Scope::ImageGeneration]).await);
    let e = api(client.playground().create(["a", "b"]).await);
    assert_eq!(
        (e.status, &e.code, e.message.as_str()),
        (
            StatusCode::PAYMENT_REQUIRED,
            &ErrorCode::InsufficientCredits,
            "Insufficient credits"
        )
    );
    assert_eq!(s.balance().await, 1);
    let e = api(client
        .images()
        .generate(GenerateImageRequest {
            source: ImageSource::Text { text: "x".into() },
            aspect_ratio: AspectRatioWire::Square,
            quality: QualityWire::Hd,
            organization_id: None,
        })
        .await);
    assert_eq!(e.code, ErrorCode::InsufficientCredits);
    assert_eq!(s.balance().await, 1);
    // `organizationId` naming another organization: 403 wrong_organization, typed.
    let (other, _) = s.other_org().await;
    let e = api(client
        .images()
        .generate(GenerateImageRequest {
            source: ImageSource::Text { text: "x".into() },
            aspect_ratio: AspectRatioWire::Square,
            quality: QualityWire::Standard,
            organization_id: Some(other.to_string()),
        })
        .await);
    assert_eq!(
        (e.status, &e.code),
        (StatusCode::FORBIDDEN, &ErrorCode::WrongOrganization)
    );
    assert_eq!(s.balance().await, 1);
}

#[tokio::test]
async fn the_other_api_errors_arrive_typed_with_their_status() {
    let s = server().await;
    s.grant(s.org, 10).await;
    let images = s.client(&s.key(&[Scope::ImageGeneration]).await);
    let scenes_only = s.client(&s.key(&[Scope::SceneRender]).await);
    let (other, _) = s.other_org().await;
    let stranger = s.client(&s.key_in(other, &[Scope::ImageGeneration]).await);
    let job = images.playground().create(["mine"]).await.unwrap();
    let missing = uuid::Uuid::now_v7().to_string();
    let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let wrong_prefix = Client::builder()
        .base_url(format!("{}/not-creapic", s.base))
        .api_key_text(s.key(&[Scope::ImageGeneration]).await)
        .build()
        .unwrap();
    let cases: Vec<(creapic_client::Result<()>, StatusCode, ErrorCode)> = vec![
        (
            scenes_only.playground().create(["x"]).await.map(drop),
            StatusCode::FORBIDDEN,
            ErrorCode::MissingScope,
        ),
        (
            stranger.playground().get(&job.job_id).await.map(drop),
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
        ),
        (
            images.playground().get(&missing).await.map(drop),
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
        ),
        (
            images.playground().get("not-a-uuid").await.map(drop),
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidParameter,
        ),
        (
            images
                .playground()
                .create(Vec::<String>::new())
                .await
                .map(drop),
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
        ),
        (
            images.playground().create(many).await.map(drop),
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::LimitExceeded,
        ),
        (
            scenes_only.scenes().get(&job.job_id).await.map(drop),
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
        ),
        (
            wrong_prefix.playground().get(&missing).await.map(drop),
            StatusCode::NOT_FOUND,
            ErrorCode::RouteNotFound,
        ),
        (
            s.client(&s.key(&[Scope::ImageGeneration]).await)
                .organizations()
                .create("x")
                .await
                .map(drop),
            StatusCode::FORBIDDEN,
            ErrorCode::MissingScope,
        ),
    ];
    for (i, (result, status, code)) in cases.into_iter().enumerate() {
        let e = api(result);
        assert_eq!(
            (e.status, e.code),
            (status, code),
            "case {i}: {}",
            e.message
        );
        assert!(e.request_id.is_some(), "case {i}");
    }
    // Local argument checks send nothing.
    let e = images.playground().get("").await.err();
    assert_eq!(
        e.map(|e| e.code().to_owned()).as_deref(),
        Some("invalid_argument")
    );
    let e = images
        .playground()
        .create(["x"])
        .idempotency_key("has space")
        .await
        .err();
    assert_eq!(
        e.map(|e| e.code().to_owned()).as_deref(),
        Some("invalid_argument")
    );
    assert_eq!(s.balance().await, 9, "only the one job was charged");
}

#[tokio::test]
async fn a_repeated_post_is_replayed_and_charged_once_and_a_changed_body_conflicts() {
    let s = server().await;
    s.grant(s.org, 10).await;
    let client = s.client(&s.key(&[Scope::ImageGeneration]).await);
    let send = |prompts: &[&str]| {
        client
            .playground()
            .create(prompts.to_vec())
            .idempotency_key("order-42")
            .send_with_meta()
    };
    let first = send(&["a", "b", "c"]).await.unwrap();
    let again = send(&["a", "b", "c"]).await.unwrap();
    assert!(!first.meta.replayed);
    assert!(
        again.meta.replayed,
        "the second answer is the stored first one"
    );
    assert_eq!(first.body, again.body);
    assert_eq!(again.meta.idempotency_key.as_deref(), Some("order-42"));
    assert_eq!(s.balance().await, 7, "charged once");
    let e = api(send(&["different"]).await);
    assert_eq!(
        (e.status, e.code),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyConflict
        )
    );
    assert_eq!(s.balance().await, 7);
}

#[tokio::test]
async fn a_rate_limited_call_waits_for_retry_after_or_reports_it() {
    let config = creapic_server_kit::KitConfig {
        rate_limit: creapic_server_kit::RateLimitConfig {
            per_second: 1,
            burst: 1,
        },
        ..Default::default()
    };
    let s = server_with(config, false).await;
    let key = s.key(&[Scope::ImageGeneration]).await;
    let missing = uuid::Uuid::now_v7().to_string();
    let impatient = Client::builder()
        .base_url(&s.base)
        .api_key_text(&key)
        .max_retries(0)
        .build()
        .unwrap();
    let _ = impatient.playground().get(&missing).await;
    let e = api(impatient.playground().get(&missing).await);
    assert_eq!(
        (e.status, &e.code),
        (StatusCode::TOO_MANY_REQUESTS, &ErrorCode::RateLimited)
    );
    let wait = e.retry_after.expect("Retry-After");
    assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2));
    // With retries, the client waits as asked (about a second, for real) and gets through.
    let patient = s.client(&key);
    let got = patient.playground().get(&missing).send_with_meta().await;
    let e = api(got);
    assert_eq!(e.code, ErrorCode::NotFound, "the retry passed the limiter");
}

#[tokio::test]
async fn dashboard_calls_manage_keys_and_read_the_audit_log_through_the_host_session() {
    let s = server().await;
    let dashboard = s.dashboard(s.owner);
    let org = s.org.to_string();
    let request = CreateKeyRequest {
        organization_id: org.clone(),
        name: "Production".into(),
        scopes: vec![ScopeWire::ImageGeneration],
        mode: KeyModeWire::Live,
        expires_at: None,
    };
    let call = dashboard.keys().create(request.clone());
    let idempotency_key = call.key().expect("a generated key").to_owned();
    let created = call.await.unwrap();
    let plaintext = created.key.expose().to_owned();
    assert!(plaintext.starts_with("wi_live_"));
    assert_eq!(created.api_key.prefix, &plaintext[..12]);
    assert!(
        !format!("{created:?}").contains(&plaintext[8..]),
        "the created key's Debug is redacted"
    );
    // A retry of the same creation never shows the key again.
    let e = api(dashboard
        .keys()
        .create(request)
        .idempotency_key(idempotency_key)
        .await);
    assert_eq!(
        (e.status, e.code),
        (StatusCode::CONFLICT, ErrorCode::AlreadyProcessed)
    );
    // The new key works for the public API.
    let integration = s.client(&plaintext);
    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        api(integration.playground().get(&missing).await).code,
        ErrorCode::NotFound
    );
    let listed = dashboard
        .keys()
        .list(&org, &Default::default())
        .await
        .unwrap();
    assert_eq!(listed.keys.len(), 1);
    let deleted = dashboard
        .keys()
        .delete(&org, &created.api_key.id)
        .await
        .unwrap();
    assert!(deleted.api_key.deleted_at.is_some());
    assert_eq!(
        api(integration.playground().get(&missing).await).code,
        ErrorCode::InvalidApiKey
    );
    let with_deleted = dashboard
        .keys()
        .list(
            &org,
            &creapic_client::resources::ListKeys {
                include_deleted: true,
                limit: Some(10),
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(with_deleted.keys.len(), 1);
    // The audit log names the proxy's user agent and the loopback address.
    let filter = creapic_client::resources::AuditFilter {
        since: Some("2000-01-01".into()),
        ..Default::default()
    };
    let log = dashboard.audit().list(&org, &filter).await.unwrap();
    let created_event = log
        .events
        .iter()
        .find(|e| e.action == "key.created")
        .expect("key.created");
    assert_eq!(
        created_event.user_agent.as_deref(),
        Some("dashboard-proxy/1.0")
    );
    assert_eq!(created_event.ip.as_deref(), Some("127.0.0.1"));
    assert!(log.events.iter().any(|e| e.action == "key.deleted"));
    let csv = dashboard.audit().export_csv(&org, &filter).await.unwrap();
    assert!(
        csv.csv
            .starts_with("id,at,action,actor,ip,user_agent,key_id,key_prefix,detail\r\n")
    );
    assert!(csv.csv.contains("key.deleted"));
    // Without the host's session, and for another organization's owner.
    let signed_out = Client::builder().base_url(&s.base).build().unwrap();
    let e = api(signed_out.keys().list(&org, &Default::default()).await);
    assert_eq!(
        (e.status, e.code),
        (StatusCode::UNAUTHORIZED, ErrorCode::NotSignedIn)
    );
    let (_, stranger) = s.other_org().await;
    let e = api(s.dashboard(stranger).audit().list(&org, &filter).await);
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = api(dashboard
        .audit()
        .list(
            &org,
            &creapic_client::resources::AuditFilter {
                since: Some("yesterday".into()),
                ..Default::default()
            },
        )
        .await);
    assert_eq!(e.code, ErrorCode::InvalidParameter);
}

#[tokio::test]
async fn the_key_never_appears_in_debug_output_or_errors() {
    let s = server().await;
    let key = s.key(&[Scope::ImageGeneration]).await;
    let client = s.client(&key);
    let e = client
        .playground()
        .create(["x"])
        .await
        .expect_err("no credits");
    let unreachable = Client::builder()
        .base_url("http://127.0.0.1:1")
        .api_key_text(&key)
        .max_retries(0)
        .build()
        .unwrap();
    let c = unreachable
        .playground()
        .get("x")
        .await
        .expect_err("refused");
    assert_eq!(c.code(), "connect");
    let shown = format!(
        "{client:?} {e} {e:?} {c} {c:?} {:?}",
        client.playground().create(["x"])
    );
    assert!(!shown.contains(&key[8..]), "{shown}");
    let _: &Server = &s;
}

#[tokio::test]
async fn a_job_is_canceled_through_the_client_and_its_credits_come_back() {
    // No runner: the job stays queued until it is canceled.
    let s = server_with(Default::default(), false).await;
    s.grant(s.org, 5).await;
    let client = s.client(&s.key(&[Scope::ImageGeneration]).await);
    let job = client.playground().create(["a", "b"]).await.unwrap();
    assert_eq!(s.balance().await, 3);
    let canceled = client.playground().cancel(&job.job_id).await.unwrap();
    assert_eq!(canceled.status, JobStatusWire::Canceled);
    assert_eq!(s.balance().await, 5);
    let again = client.playground().cancel(&job.job_id).await.unwrap();
    assert_eq!(again.status, JobStatusWire::Canceled);
    let e = client
        .playground()
        .cancel(&uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
}
