//! The route table: every path of both product documents, in one place.

use axum::Router;
use axum::routing::{get, post};

use crate::error::Error;
use crate::handlers::{audit, images, keys, media, organizations, playground, scenes, system};
use crate::service::AppState;

/// All routes, with request ids, panic safety and the JSON fallback for unknown routes.
pub fn router(state: AppState) -> Router {
    let measured = state.metrics().is_some();
    let routes = Router::new()
        .route("/api/public/images/generate", post(images::generate))
        .route("/api/public/scenes/render", post(scenes::render))
        .route("/api/public/scenes/render/{id}", get(scenes::get))
        .route(
            "/api/public/organizations/create",
            post(organizations::create),
        )
        .route("/api/playground/images", post(playground::submit))
        .route("/api/playground/images/{job_id}", get(playground::status))
        .route("/api/keys", get(keys::list).post(keys::create))
        .route("/api/keys/{id}", axum::routing::delete(keys::delete))
        .route("/api/audit", get(audit::list))
        .route("/api/media/{org}/{key}", get(media::get))
        .route("/api/openapi", get(system::openapi))
        .route("/api/health", get(system::health))
        .route("/metrics", get(system::metrics));
    // Request metrics cost a few allocations per request: only when a host reads them.
    let routes = if measured {
        routes.route_layer(axum::middleware::from_fn(crate::request_id::measure))
    } else {
        routes
    };
    routes
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(Error::Internal {
                    message: "a handler panicked".into(),
                })
            },
        ))
        .layer(axum::middleware::from_fn(crate::request_id::layer))
        .with_state(state)
}
