//! `/metrics` serves Prometheus text when the host hands the kit a handle, and counts requests
//! per route template and errors per stable code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use creapic_server_kit::ServiceBuilder;
use creapic_server_kit::media::{MediaStore, SigningKey};
use creapic_server_kit::pipeline::Pipeline;
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
    let service = ServiceBuilder::new(
        core,
        Pipeline::offline(MediaStore::in_memory(SigningKey::generate())),
    )
    .metrics(handle)
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
}
