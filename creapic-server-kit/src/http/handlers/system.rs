//! Operational routes: the OpenAPI document, liveness (`/api/health`) and readiness
//! (`/api/ready`) probes, and Prometheus metrics.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::http::error::Error;
use crate::http::response::json;
use crate::http::service::AppState;

/// The OpenAPI 3.1 document, derived from the wire types.
#[utoipa::path(
    get,
    path = "/api/openapi",
    operation_id = "getOpenApiDocument",
    tag = "system",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn openapi(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &crate::http::openapi::document_for(&state.config().limits),
    )
}

/// Liveness: the process serves requests. It touches nothing else, so a database outage never
/// makes an orchestrator restart healthy replicas (readiness is [`ready`]).
#[utoipa::path(
    get,
    path = "/api/health",
    operation_id = "getHealth",
    tag = "system",
    responses(
        (status = 200, description = "The process serves requests"),
    )
)]
pub async fn health() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// Readiness: the database answers and has every migration this build needs. While it does
/// not, 503 (`store_unavailable` or `migrations_pending`, with `Retry-After`): a load balancer
/// sends this replica no traffic.
#[utoipa::path(
    get,
    path = "/api/ready",
    operation_id = "getReadiness",
    tag = "system",
    responses(
        (status = 200, description = "Ready to serve"),
        (status = 503, description = "The database is unreachable or lacks migrations", body = creapic_core::wire::ErrorBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.core().pending_migrations().await {
        Ok(0) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        Ok(pending) => Error::MigrationsPending { pending }.into_response(),
        Err(e) => Error::Core(e).into_response(),
    }
}

/// Prometheus metrics, when the host enabled them (and put the route on the kit's router with
/// `KitConfig::metrics_route`).
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics() {
        Some(handle) => prometheus_text(handle),
        None => Error::RouteNotFound.into_response(),
    }
}

/// The Prometheus text exposition of `handle`.
pub fn prometheus_text(handle: &metrics_exporter_prometheus::PrometheusHandle) -> Response {
    let mut response = (StatusCode::OK, handle.render()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
