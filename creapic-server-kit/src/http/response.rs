//! Turning results into HTTP responses: JSON bodies, the error body with its request id, and the
//! `Retry-After` header where the error says when to come back — for the HTTP error and for the
//! generation error it wraps.

use axum::response::{IntoResponse, Response};
use creapic_core::wire::ErrorBody;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::http::error::Error;

/// A JSON response with a status.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => bytes_response(status, bytes),
        Err(e) => Error::Internal {
            message: format!("serializing a response: {e}"),
        }
        .into_response(),
    }
}

/// A JSON response from already-serialized bytes (a `Vec<u8>`, or shared `Bytes`: no copy).
pub fn bytes_response(status: StatusCode, bytes: impl Into<bytes::Bytes>) -> Response {
    let bytes: bytes::Bytes = bytes.into();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl Error {
    /// The error body sent for this error.
    pub fn body(&self) -> ErrorBody {
        let error = if self.is_internal() {
            // Never leak internals; the log has the details.
            "internal error".to_owned()
        } else if let Some(creapic_core::Error::Store { .. }) = self.core() {
            match self.status() {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "the service is temporarily unavailable, retry later".to_owned()
                }
                _ => "internal error".to_owned(),
            }
        } else {
            self.to_string()
        };
        ErrorBody {
            error,
            code: self.code().to_owned(),
            request_id: crate::http::request_id::current(),
        }
    }
}

/// A generation error is answered as the HTTP error that wraps it ([`Error::Generation`]).
impl IntoResponse for crate::generation::Error {
    fn into_response(self) -> Response {
        Error::Generation(self).into_response()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request refused");
        }
        metrics::counter!("creapic_http_errors_total", "code" => self.code()).increment(1);
        let body = self.body();
        let mut response = json(status, &body);
        // Kept for layers that need the body without re-parsing (idempotent storage).
        response.extensions_mut().insert(body);
        if let Some(wait) = self.retry_after() {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
