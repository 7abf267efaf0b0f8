//! `Idempotency-Key` on every POST: a retried request gets the stored response of the first one
//! (marked `Idempotent-Replayed: true`) instead of being run — and charged — again.
//!
//! Two layers keep the promise. This module stores the HTTP response per (organization, key),
//! locked while the first request runs, so concurrent duplicates get a 409 and a different body
//! under the same key a 422. Underneath, the ledger call made by the request carries an
//! idempotency key derived from the same header, so even a retry that takes over an expired lock
//! (the first process crashed mid-request) replays the charge instead of repeating it.
//! Requests without the header get a fresh random ledger key: they are never deduplicated.

use std::future::Future;

use axum::response::{IntoResponse, Response};
use creapic_core::id::OrgId;
use creapic_core::idempotency::{IdempotencyBegin, RequestFingerprint, StoredResponse};
use creapic_core::ledger::IdempotencyKey;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::error::Error;
use crate::response::bytes_response;
use crate::service::AppState;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The response header marking a replay.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest accepted `Idempotency-Key`, leaving room for the derived ledger keys.
pub const KEY_MAX_LEN: usize = 200;

/// What the stored copy of a response should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Store the response as sent.
    Body,
    /// Store a 409 saying the operation already happened (for responses that must exist only
    /// once, such as the one carrying a new key's plaintext).
    Refuse,
}

/// The idempotency key of the request, validated, or `None` when the header is absent.
pub fn header_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Error> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| Error::InvalidParameter {
        name: "Idempotency-Key",
        message: "must be visible ASCII".into(),
    })?;
    if text.len() > KEY_MAX_LEN {
        return Err(Error::InvalidParameter {
            name: "Idempotency-Key",
            message: format!("must be at most {KEY_MAX_LEN} characters"),
        });
    }
    IdempotencyKey::new(text)
        .map(Some)
        .map_err(|e| Error::InvalidParameter {
            name: "Idempotency-Key",
            message: e.to_string(),
        })
}

/// Runs `work` at most once per (organization, `Idempotency-Key`). `work` receives the ledger
/// idempotency key to use for the request's charge and returns the status and JSON body.
#[allow(clippy::too_many_arguments)]
pub async fn run<F, Fut>(
    state: &AppState,
    org: OrgId,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
    replay: Replay,
    work: F,
) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(StatusCode, Vec<u8>), Error>>,
{
    let key = match header_key(headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let Some(key) = key else {
        let ledger_key = format!("req:{}", uuid::Uuid::now_v7().simple());
        return match work(ledger_key).await {
            Ok((status, bytes)) => bytes_response(status, bytes),
            Err(e) => e.into_response(),
        };
    };
    let fingerprint = RequestFingerprint::of(method, path, body);
    let lock = state.config().limits.idempotency_lock;
    let begin = state
        .core()
        .begin_request(org, &key, fingerprint, lock)
        .await;
    match begin {
        Err(e) => return Error::Core(e).into_response(),
        Ok(IdempotencyBegin::Replay(stored)) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut response = bytes_response(status, stored.body);
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            return response;
        }
        Ok(IdempotencyBegin::InProgress) => {
            return Error::Core(creapic_core::Error::IdempotencyInProgress).into_response();
        }
        Ok(IdempotencyBegin::Mismatch) => {
            return Error::Core(creapic_core::Error::IdempotencyConflict).into_response();
        }
        Ok(IdempotencyBegin::Started) => {}
    }
    let ledger_key = format!("http:{}", key.as_str());
    let outcome = work(ledger_key).await;
    let (response, status, bytes, retryable) = match outcome {
        Ok((status, bytes)) => (bytes_response(status, bytes.clone()), status, bytes, false),
        Err(e) => {
            let status = e.status();
            let retryable = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::CONFLICT;
            let response = e.into_response();
            let bytes = serde_json::to_vec(&Error::body_of(&response)).unwrap_or_default();
            (response, status, bytes, retryable)
        }
    };
    if retryable {
        // Let the client retry: nothing final happened (the ledger undid any charge).
        if let Err(e) = state.core().abandon_request(org, &key).await {
            tracing::warn!(error = %e, "could not release an idempotency lock");
        }
    } else {
        let stored = match replay {
            Replay::Body => StoredResponse {
                status: status.as_u16(),
                body: bytes,
            },
            Replay::Refuse => StoredResponse {
                status: StatusCode::CONFLICT.as_u16(),
                body: serde_json::to_vec(&creapic_core::wire::ErrorBody {
                    error: "this request was already processed; its result is shown only once"
                        .into(),
                    code: "already_processed".into(),
                    request_id: crate::request_id::current(),
                })
                .unwrap_or_default(),
            },
        };
        if let Err(e) = state.core().complete_request(org, &key, &stored).await {
            tracing::warn!(error = %e, "could not store an idempotent response");
        }
    }
    response
}

impl Error {
    /// The error body a response was built from (the kit's own error responses only).
    fn body_of(response: &Response) -> creapic_core::wire::ErrorBody {
        response
            .extensions()
            .get::<creapic_core::wire::ErrorBody>()
            .cloned()
            .unwrap_or_else(|| creapic_core::wire::ErrorBody {
                error: "internal error".into(),
                code: "internal_error".into(),
                request_id: crate::request_id::current(),
            })
    }
}
