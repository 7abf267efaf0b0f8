//! Request ids: every request gets one, every response carries it in `x-request-id`, and every
//! error body repeats it, so a client can quote it to support.
//!
//! The id lives in a task-local for the duration of the request, so an error turned into a
//! response deep inside a handler finds it without threading it through every signature. A
//! client-supplied `x-request-id` is kept when it is short visible ASCII (≤ 64 bytes); anything
//! else is replaced, so logs never carry attacker-sized or control-character ids.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

/// The header name.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id (empty outside a request).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

fn acceptable(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// A fresh id: a UUID v7 from the wall clock and the thread-local CSPRNG (no system call per
/// request, unlike asking the OS for randomness each time), as 32 hex characters.
fn new_id() -> String {
    use rand::Rng as _;
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let mut text = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes)
        .into_uuid()
        .simple()
        .encode_lower(&mut text)
        .to_owned()
}

/// Middleware: assigns the id, runs the request inside it, stamps the response.
pub async fn layer(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(acceptable)
        .unwrap_or_else(new_id);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        key = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let header = HeaderValue::from_str(&id).ok();
    let mut response = {
        use tracing::Instrument;
        REQUEST_ID
            .scope(id, next.run(request))
            .instrument(span.clone())
            .await
    };
    span.record("status", response.status().as_u16());
    if let Some(h) = header {
        response.headers_mut().insert(HEADER, h);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert_eq!(
            acceptable(&HeaderValue::from_static("abc-123_x.y")).as_deref(),
            Some("abc-123_x.y")
        );
        assert!(acceptable(&HeaderValue::from_static("has space")).is_none());
        let long = HeaderValue::from_str(&"a".repeat(65)).expect("header");
        assert!(acceptable(&long).is_none());
    }
}
