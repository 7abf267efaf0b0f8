//! The API reference in its two published forms: the OpenAPI document as canonical text (what
//! `docs/openapi.json` holds and `creapic openapi` prints), and the browsable page at
//! `GET /api/docs` with the viewer it loads.
//!
//! The decision that shapes the page: the viewer (Redoc's standalone bundle, pinned, with its
//! licenses in `assets/redoc/`) is compiled into the crate, so the page works on an offline
//! deployment and no third-party origin is ever trusted. The page has no inline script or style:
//! Redoc starts itself from the `<redoc spec-url>` element, so the Content-Security-Policy
//! allows scripts from the server's own origin only. Every URL in the page is relative
//! (`openapi`, `docs/redoc-….js`), so the page works wherever a host nests the kit.
//!
//! The page is on by default ([`KitConfig::reference_page`](crate::KitConfig::reference_page)):
//! it shows nothing `GET /api/openapi` does not already publish. It is not in the OpenAPI
//! document, which describes the API, not the pages about it.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;

use crate::config::Limits;

/// The pinned Redoc version; the asset's path carries it (see [`VIEWER_PATH`]).
macro_rules! redoc_version {
    () => {
        "2.5.4"
    };
}

/// The version of the bundled viewer (Redoc).
pub const VIEWER_VERSION: &str = redoc_version!();

/// Where the page is served.
pub const PAGE_PATH: &str = "/api/docs";

/// Where the viewer's bundle is served. The version in the path lets it be cached as immutable.
pub const VIEWER_PATH: &str = concat!("/api/docs/redoc-", redoc_version!(), ".standalone.js");

/// Redoc's standalone bundle, byte for byte as the npm package ships it (`assets/redoc/`).
pub const VIEWER_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

/// The licence notices of the viewer and what it bundles, as the npm package ships them.
pub const VIEWER_NOTICES: &str = include_str!("../../assets/redoc/redoc.standalone.js.LICENSE.txt");

/// The page: the viewer pointed at the document, both by relative URL (the page is at
/// `…/api/docs`, so `openapi` is `…/api/openapi`). `<noscript>` says where the document is.
const PAGE_HTML: &str = concat!(
    "<!doctype html>\n",
    "<html lang=\"en\">\n",
    "<head>\n",
    "<meta charset=\"utf-8\">\n",
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
    "<title>creapic API reference</title>\n",
    "</head>\n",
    "<body>\n",
    "<noscript><p>This reference needs JavaScript. The OpenAPI document it shows is at ",
    "<a href=\"openapi\">openapi</a>.</p></noscript>\n",
    "<redoc spec-url=\"openapi\"></redoc>\n",
    "<script src=\"docs/redoc-",
    redoc_version!(),
    ".standalone.js\"></script>\n",
    "</body>\n",
    "</html>\n",
);

/// What the page may load: scripts and the document from its own origin only; Redoc's search
/// runs in a worker it builds from a `blob:` URL, and its styles are injected at run time
/// (styled-components), which CSP counts as inline style. No plugin, frame, form or `<base>`.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset never changes under its versioned path: a year, immutable.
const VIEWER_CACHE: &str = "public, max-age=31536000, immutable";

/// `GET /api/docs`: the reference page.
pub async fn page() -> Response {
    let mut response = (StatusCode::OK, PAGE_HTML).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    // The page names the document by a relative URL; a deploy that changes the API changes
    // what the page shows, so it is revalidated, never served stale.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /api/docs/redoc-<version>.standalone.js`: the viewer.
pub async fn viewer() -> Response {
    let mut response = (StatusCode::OK, VIEWER_JS).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(VIEWER_CACHE),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The document a kit with `limits` serves, as canonical text: [`canonical_text`] of
/// [`crate::http::openapi::document_for`]. This is what `docs/openapi.json` holds for the default
/// limits.
pub fn document_text(limits: &Limits) -> String {
    canonical_text(&crate::http::openapi::document_for(limits))
}

/// `doc` pretty-printed with every object's keys sorted and a final newline: one text per
/// document, whatever order the serializer kept (serde_json's `preserve_order` may be on in one
/// build and off in another), so a committed copy diffs only where the document changed.
/// Arrays keep their order: in OpenAPI it means something (`required`, `enum`, parameters).
pub fn canonical_text(doc: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(doc)).unwrap_or_default();
    text.push('\n');
    text
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), sorted(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_the_served_viewer_and_document_by_relative_urls() {
        // The script's URL resolved against `/api/docs` is exactly the route of the viewer.
        let src = VIEWER_PATH
            .strip_prefix("/api/")
            .map(|rest| format!("<script src=\"{rest}\">"));
        assert!(src.is_some_and(|src| PAGE_HTML.contains(&src)));
        assert!(PAGE_HTML.contains("<redoc spec-url=\"openapi\">"));
        // No inline script: every <script> has a src.
        assert_eq!(
            PAGE_HTML.matches("<script").count(),
            PAGE_HTML.matches("<script src=").count()
        );
        assert!(!PAGE_HTML.contains("style="));
    }

    #[test]
    fn the_pinned_version_is_the_bundled_one() {
        assert!(VIEWER_NOTICES.contains(&format!("Version: \"{VIEWER_VERSION}\"")));
    }

    #[test]
    fn canonical_text_sorts_keys_and_keeps_array_order() {
        let doc = serde_json::json!({"b": [3, 1, {"z": 1, "a": 2}], "a": null});
        assert_eq!(
            canonical_text(&doc),
            "{\n  \"a\": null,\n  \"b\": [\n    3,\n    1,\n    {\n      \"a\": 2,\n      \"z\": 1\n    }\n  ]\n}\n"
        );
    }
}
