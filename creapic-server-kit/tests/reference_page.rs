//! The API reference page over HTTP: the page and the viewer with their content types, CSP and
//! cache headers, the viewer byte for byte the committed bundle, the page's relative URLs
//! resolving to the document and the viewer when a host nests the kit under a prefix, and the
//! switch that turns both routes off. (That the page renders is checked in a real browser by
//! `examples/tests/reference.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use creapic_core::Creapic;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::http::reference;
use creapic_server_kit::{KitConfig, ServiceBuilder};

/// The attribute `name="…"`'s value in `html`.
fn attribute<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + name.len()
        + 2;
    let len = html[start..].find('"').unwrap();
    &html[start..start + len]
}

#[tokio::test]
async fn the_page_and_the_viewer_are_served_with_their_headers() {
    let app = common::app().await;
    let page = app.http.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert_eq!(csp, reference::PAGE_CSP);
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(headers.contains_key("x-request-id"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<redoc spec-url=\"openapi\">"), "{html}");
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=").count(),
        "no inline script: {html}"
    );

    let viewer = app
        .http
        .get(app.url(reference::VIEWER_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(viewer.status(), 200);
    let headers = viewer.headers().clone();
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let committed = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/redoc/redoc.standalone.js"),
    )
    .unwrap();
    let served = viewer.bytes().await.unwrap();
    assert!(
        served.as_ref() == committed.as_slice(),
        "the committed bundle, byte for byte"
    );

    // HEAD works (axum answers it from GET) and sends no body.
    let head = app
        .http
        .head(app.url(reference::VIEWER_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        committed.len().to_string()
    );

    // Neither route is an API operation: the document does not list them.
    let doc: serde_json::Value = app
        .http
        .get(app.url("/api/openapi"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|p| !p.starts_with("/api/docs")),
        "{paths:?}"
    );
}

/// A host that mounts the kit under `/creapic` and serves it on loopback.
async fn nested(config: KitConfig) -> String {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core = Arc::new(Creapic::new(store));
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let service = ServiceBuilder::new(core, pipeline).config(config).build();
    let router = axum::Router::new().nest("/creapic", service.into_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}/creapic")
}

#[tokio::test]
async fn the_page_works_under_a_host_prefix() {
    let base = nested(KitConfig::default()).await;
    let http = reqwest::Client::new();
    let page_url = url::Url::parse(&format!("{base}/api/docs")).unwrap();
    let html = http
        .get(page_url.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // The URLs in the page, resolved as a browser does, land on the nested routes.
    let document = page_url.join(attribute(&html, "spec-url")).unwrap();
    assert_eq!(document.path(), "/creapic/api/openapi");
    let response = http.get(document).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));

    let script = page_url.join(attribute(&html, "src")).unwrap();
    assert_eq!(script.path(), format!("/creapic{}", reference::VIEWER_PATH));
    let response = http.get(script).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        reference::VIEWER_JS
    );
}

#[tokio::test]
async fn a_host_can_switch_the_page_off() {
    let base = nested(KitConfig {
        reference_page: false,
        ..KitConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    for path in ["/api/docs", reference::VIEWER_PATH] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "route_not_found", "{path}");
    }
    // The document itself stays.
    let response = http
        .get(format!("{base}/api/openapi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
