//! `/metrics` serves Prometheus text when the host hands the kit a handle and asks for the route
//! (off the public router by default), and counts requests per route template and errors per
//! stable code; `routes::metrics_router` serves the same text on its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::{KitConfig, ServiceBuilder};
use tower::ServiceExt;

#[tokio::test]
async fn metrics_count_requests_by_route_and_errors_by_code() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let core = Arc::new(creapic_core::Creapic::new(Arc::new(
        creapic_core::store::memory::MemoryStore::new(),
    )
        as Arc<dyn creapic_core::store::Store>));
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    // By default the public router has no /metrics, even with a handle.
    let public = ServiceBuilder::new(Arc::clone(&core), pipeline.clone())
        .metrics(handle.clone())
        .build();
    let request = http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = public.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 404);
    let service = ServiceBuilder::new(core, pipeline)
        .config(KitConfig {
            metrics_route: true,
            ..KitConfig::default()
        })
        .metrics(handle.clone())
        .build();
    let job = uuid::Uuid::now_v7();
    let request = http::Request::get(format!("/api/playground/images/{job}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    let request = http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(r#"creapic_http_requests_total{route="/api/playground/images/{job_id}",method="GET",status="401"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"creapic_http_errors_total{code="missing_authorization"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains(&job.to_string()),
        "raw ids never become labels"
    );
    // The host's private metrics router serves the same counters.
    let request = http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = creapic_server_kit::http::routes::metrics_router(handle)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let private = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&private).contains("creapic_http_requests_total"),
        "the metrics router renders the same recorder"
    );
}
