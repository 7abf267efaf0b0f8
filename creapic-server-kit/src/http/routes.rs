//! The route table: every path of both product documents and the console's, in one place,
//! each named by its template in the request span (the access log) and measured by it when the
//! host enabled metrics; and the metrics route, which is not on the public
//! table unless the host asks for it ([`crate::KitConfig::metrics_route`]) — hosts serve
//! [`metrics_router`] on a private address; and the API reference page with its viewer
//! ([`crate::http::reference`]), on unless the host switches [`crate::KitConfig::reference_page`]
//! off; and the web console's pages ([`crate::http::console`]), unless
//! [`crate::KitConfig::console`] is off.

use axum::Router;
use axum::routing::{MethodRouter, get, patch, post};

use crate::http::error::Error;
use crate::http::handlers::{
    audit, credits, images, keys, media, members, organizations, playground, scenes, system,
};
use crate::http::reference;
use crate::http::service::AppState;

/// All routes, with request ids, panic safety and the JSON fallback for unknown routes.
pub fn router(state: AppState) -> Router {
    // Request metrics only when a host reads them (see `measure`: pre-registered handles).
    let measured = state.metrics().is_some();
    let metrics_route = state.config().metrics_route;
    let table: [(&'static str, MethodRouter<AppState>); 20] = [
        ("/api/public/images/generate", post(images::generate)),
        ("/api/public/images/{id}", get(images::get)),
        ("/api/public/scenes/render", post(scenes::render)),
        ("/api/public/scenes/render/{id}", get(scenes::get)),
        (
            "/api/public/organizations/create",
            post(organizations::create),
        ),
        ("/api/public/credits", get(credits::get)),
        ("/api/public/credits/usage", get(credits::usage)),
        (
            "/api/playground/images",
            get(playground::list).post(playground::submit),
        ),
        ("/api/playground/images/{job_id}", get(playground::status)),
        (
            "/api/playground/images/{job_id}/cancel",
            post(playground::cancel),
        ),
        ("/api/keys", get(keys::list).post(keys::create)),
        ("/api/keys/{id}", axum::routing::delete(keys::delete)),
        ("/api/audit", get(audit::list)),
        ("/api/organizations", get(members::list_organizations)),
        (
            "/api/organizations/{organization_id}/members",
            get(members::list_members).post(members::add),
        ),
        (
            "/api/organizations/{organization_id}/members/{user_id}",
            patch(members::set_role).delete(members::remove),
        ),
        ("/api/media/{org}/{key}", get(media::get)),
        ("/api/openapi", get(system::openapi)),
        ("/api/health", get(system::health)),
        ("/api/ready", get(system::ready)),
    ];
    let metrics = metrics_route.then(|| ("/metrics", get(system::metrics)));
    // The reference page and its viewer: pages about the API, not operations of it, so they
    // are not in the OpenAPI document.
    let reference = state
        .config()
        .reference_page
        .then(|| {
            [
                (reference::PAGE_PATH, get(reference::page)),
                (reference::VIEWER_PATH, get(reference::viewer)),
            ]
        })
        .into_iter()
        .flatten();
    // The console's pages, with their full paths: merged, not nested, so the request-id layer
    // sees the path the host sent and the mount prefix stays right.
    let console = state
        .config()
        .console
        .then(crate::http::console::routes)
        .into_iter()
        .flatten();
    // Every route named by its template in the request span (the access log), and measured
    // when metrics are on: one layer per route either way.
    let routes = table
        .into_iter()
        .chain(metrics)
        .chain(reference)
        .chain(console)
        .fold(Router::new(), |router, (path, handlers)| {
            let layer = if measured {
                crate::http::measure::MeasureLayer::new(path)
            } else {
                crate::http::measure::MeasureLayer::name_only(path)
            };
            router.route(path, handlers.layer(layer))
        });
    routes
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        // One layer around the router (axum boxes each `.layer` separately): the request id and
        // span outermost, so a panic's 500 carries the id too.
        .layer(
            tower::ServiceBuilder::new()
                .layer(crate::http::request_id::RequestIdLayer)
                .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                    |_: Box<dyn std::any::Any + Send>| {
                        axum::response::IntoResponse::into_response(Error::Internal {
                            message: "a handler panicked".into(),
                        })
                    },
                )),
        )
        .with_state(state)
}

/// `GET /metrics` alone (Prometheus text from `handle`), with the kit's JSON fallbacks, for a
/// host to serve on an address integrators cannot reach (`creapic serve --metrics-listen`).
pub fn metrics_router(handle: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { system::prometheus_text(&handle) }
            }),
        )
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
}
