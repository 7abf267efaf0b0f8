//! The console's stylesheet and its one script, embedded in the crate (`include_str!` from
//! `assets/console/`): no CDN, nothing fetched at run time, and nothing inline, so the pages'
//! Content-Security-Policy can forbid inline code. Their paths carry the crate version, so a
//! browser may cache them for a day and still never mixes a new page with an old stylesheet.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

/// The stylesheet's path under the kit.
pub const STYLE_PATH: &str = concat!(
    "/console/assets/console-",
    env!("CARGO_PKG_VERSION"),
    ".css"
);
/// The script's path under the kit.
pub const SCRIPT_PATH: &str = concat!("/console/assets/console-", env!("CARGO_PKG_VERSION"), ".js");

const STYLE: &str = include_str!("../../../assets/console/console.css");
const SCRIPT: &str = include_str!("../../../assets/console/console.js");

/// `GET` the stylesheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET` the script (the copy button).
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The stylesheet's path relative to the console's base (`/assets/console-VERSION.css`), for
/// templates.
pub fn style_href(base: &str) -> String {
    format!("{base}{}", STYLE_PATH.trim_start_matches("/console"))
}

/// The script's path relative to the console's base, for templates.
pub fn script_href(base: &str) -> String {
    format!("{base}{}", SCRIPT_PATH.trim_start_matches("/console"))
}
