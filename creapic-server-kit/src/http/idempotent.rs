//! `Idempotency-Key` on every POST: a retried request gets the stored response of the first one
//! (marked `Idempotent-Replayed: true`) instead of being run — and charged — again.
//!
//! Two layers keep the promise. This module stores the HTTP response per (organization, key),
//! locked while the first request runs, so concurrent duplicates get a 409 and a different body
//! under the same key a 422. Underneath, the ledger call made by the request carries an
//! idempotency key derived from the header *and the record's attempt*
//! (`http:{key}:{attempt}`, see [`creapic_core::idempotency`]):
//! - a retry that takes over an expired lock (the first process crashed mid-request), or that
//!   follows a failure whose outcome is unknown ([`Failure`] not settled), resumes the attempt and
//!   replays its charge instead of repeating it;
//! - a retry after a failure that is known to have charged nothing ([`Failure::settled`]: the
//!   provider failed and the hold was released), or any use of the key after its record was
//!   purged, is a new attempt with new ledger keys: a fresh, paid charge — never a replay of a
//!   released or spent hold, so reusing a key never yields unpaid work.
//!
//! Requests without the header get a fresh random ledger key: they are never deduplicated.

use std::future::Future;

use axum::response::{IntoResponse, Response};
use creapic_core::id::OrgId;
use creapic_core::idempotency::{Abandon, IdempotencyBegin, RequestFingerprint, StoredResponse};
use creapic_core::ledger::IdempotencyKey;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::http::error::Error;
use crate::http::response::bytes_response;
use crate::http::service::AppState;

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

/// A request that failed, and whether anything of it may still be charged.
#[derive(Debug)]
pub struct Failure {
    error: Error,
    settled: bool,
}

impl Failure {
    /// A failure after which nothing of the attempt is charged (it never paid, or its hold was
    /// released and the release is confirmed): a retry under the same key is a new attempt.
    pub fn settled(error: Error) -> Self {
        Failure {
            error,
            settled: true,
        }
    }
}

impl From<Error> for Failure {
    /// A failure whose outcome is unknown: a retry resumes the attempt (its charges replay).
    fn from(error: Error) -> Self {
        Failure {
            error,
            settled: false,
        }
    }
}

/// A paid attempt's failure keeps its word on whether anything is charged.
impl From<crate::generation::paid::AttemptFailure> for Failure {
    fn from(failure: crate::generation::paid::AttemptFailure) -> Self {
        let (error, settled) = failure.into_parts();
        Failure {
            error: Error::Generation(error),
            settled,
        }
    }
}

impl From<crate::generation::Error> for Failure {
    fn from(error: crate::generation::Error) -> Self {
        Failure::from(Error::Generation(error))
    }
}

impl From<creapic_core::Error> for Failure {
    fn from(error: creapic_core::Error) -> Self {
        Failure::from(Error::Core(error))
    }
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

/// What [`run`] needs of the request: its `Idempotency-Key` (validated, or the error to answer),
/// method and path. Built from the request's parts, or taken as an extractor
/// (`crate::http::extract`); it never rejects: a malformed header is answered by [`run`].
#[derive(Debug)]
pub struct IdempotencyKeyHeader {
    key: Result<Option<IdempotencyKey>, Error>,
    present: bool,
    method: http::Method,
    path: String,
}

impl IdempotencyKeyHeader {
    /// The header, method and path of a request.
    pub fn from_parts(parts: &http::request::Parts) -> Self {
        IdempotencyKeyHeader {
            key: header_key(&parts.headers),
            present: parts.headers.contains_key(HEADER),
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
        }
    }

    /// Whether the request carries the header at all (valid or not).
    pub fn is_present(&self) -> bool {
        self.present
    }

    /// The request as [`run`] takes it: for `org`, fingerprinted over `body`, storing its body
    /// for replays ([`Replay::Body`]) with no caller namespace until told otherwise.
    pub fn request(self, org: OrgId, body: &[u8]) -> IdempotentRequest<'_> {
        IdempotentRequest {
            org,
            caller: None,
            header: self,
            body,
            replay: Replay::Body,
        }
    }
}

/// A request [`run`] runs at most once: built by [`IdempotencyKeyHeader::request`].
#[derive(Debug)]
pub struct IdempotentRequest<'a> {
    org: OrgId,
    caller: Option<&'a str>,
    header: IdempotencyKeyHeader,
    body: &'a [u8],
    replay: Replay,
}

impl<'a> IdempotentRequest<'a> {
    /// Namespaces the key by `caller`, for when the organization alone does not say who is
    /// asking (dashboard users: two people of one organization, or an outsider, never share or
    /// block each other's records).
    pub fn caller(mut self, caller: &'a str) -> Self {
        self.caller = Some(caller);
        self
    }

    /// What the stored copy of the response holds (default [`Replay::Body`]).
    pub fn replay(mut self, replay: Replay) -> Self {
        self.replay = replay;
        self
    }
}

/// Runs `work` at most once per (organization, caller, `Idempotency-Key`) of `request`, its lock
/// held for `Limits::idempotency_lock`. Authorize the caller *before* calling this, so a refused
/// caller opens no record at all. `work` receives the ledger idempotency key of this attempt
/// (derive the request's ledger keys from it, see `crate::generation::paid::AttemptKeys`) and
/// returns the status and JSON body, or a [`Failure`].
pub async fn run<F, Fut>(state: &AppState, request: IdempotentRequest<'_>, work: F) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(StatusCode, Vec<u8>), Failure>>,
{
    let IdempotentRequest {
        org,
        caller,
        header,
        body,
        replay,
    } = request;
    let method = header.method.as_str();
    let path = header.path.as_str();
    let key = match header.key {
        Ok(Some(k)) => match caller {
            None => Some(k),
            Some(caller) => match IdempotencyKey::new(&format!("{caller}:{}", k.as_str())) {
                Ok(k) => Some(k),
                Err(e) => return Error::Core(e).into_response(),
            },
        },
        Ok(None) => None,
        Err(e) => return e.into_response(),
    };
    let Some(key) = key else {
        let ledger_key = format!("req:{}", uuid::Uuid::now_v7().simple());
        return match work(ledger_key).await {
            Ok((status, bytes)) => match replay {
                Replay::Body => bytes_response(status, bytes),
                Replay::Refuse => secret_response(status, bytes),
            },
            Err(failure) => failure.error.into_response(),
        };
    };
    let fingerprint = RequestFingerprint::of(method, path, body);
    let ran = once(state, org, &key, fingerprint, |ledger_key| async move {
        let (status, bytes) = work(ledger_key).await?;
        Ok(match replay {
            Replay::Body => (
                bytes_response(status, bytes.clone()),
                StoredResponse {
                    status: status.as_u16(),
                    body: bytes,
                },
            ),
            // The body holds a secret shown once: only a 409 saying it happened is stored.
            Replay::Refuse => (secret_response(status, bytes), already_processed()),
        })
    })
    .await;
    match ran {
        Ok(Once::Ran(response)) => response,
        Ok(Once::Replayed(stored)) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut response = bytes_response(status, stored.body);
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            response
        }
        Err(e) => e.into_response(),
    }
}

/// What [`once`] did.
#[derive(Debug)]
pub enum Once<T> {
    /// It ran the work, which answered this.
    Ran(T),
    /// An earlier request under the key completed: its stored response, to answer again.
    Replayed(StoredResponse),
}

/// The stored answer of an operation that must happen, and be shown, only once (a new key's
/// plaintext): a 409 `already_processed`.
pub fn already_processed() -> StoredResponse {
    StoredResponse {
        status: Error::AlreadyProcessed.status().as_u16(),
        body: serde_json::to_vec(&Error::AlreadyProcessed.body()).unwrap_or_default(),
    }
}

/// The engine under [`run`], for any answer type (the console renders pages): runs `work` at
/// most once per (`org`, `key`), its lock held and renewed for `Limits::idempotency_lock`, and
/// stores the [`StoredResponse`] `work` returns beside its answer. Another request holding
/// the key is `IdempotencyInProgress` (409), the key reused for another `fingerprint`
/// `IdempotencyConflict` (422). A failure is not stored: the record is abandoned — settled
/// (a retry is a new attempt) unless the failure is transient and not known to be settled.
/// Authorize the caller before calling this, so a refused caller opens no record.
pub async fn once<T, F, Fut>(
    state: &AppState,
    org: OrgId,
    key: &IdempotencyKey,
    fingerprint: RequestFingerprint,
    work: F,
) -> Result<Once<T>, Error>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(T, StoredResponse), Failure>>,
{
    let lock = state.config().limits.idempotency_lock;
    let begin = state
        .core()
        .begin_request(org, key, fingerprint, lock)
        .await
        .map_err(Error::Core)?;
    let attempt = match begin {
        IdempotencyBegin::Replay(stored) => return Ok(Once::Replayed(stored)),
        IdempotencyBegin::InProgress => {
            return Err(Error::Core(creapic_core::Error::IdempotencyInProgress));
        }
        IdempotencyBegin::Mismatch => {
            return Err(Error::Core(creapic_core::Error::IdempotencyConflict));
        }
        IdempotencyBegin::Started { attempt } => attempt,
    };
    let ledger_key = match attempt {
        Some(attempt) => format!("http:{}:{}", key.as_str(), attempt.as_uuid().simple()),
        // A record from before attempts existed: its charges were keyed without one.
        None => format!("http:{}", key.as_str()),
    };
    let outcome = match attempt {
        Some(attempt) => held(state, org, key, attempt, lock, work(ledger_key)).await,
        None => work(ledger_key).await,
    };
    let (answer, stored) = match outcome {
        Ok(done) => done,
        Err(Failure { error, settled }) => {
            // Only a success is stored. A refusal (4xx) did nothing and is not remembered, so a
            // retry after its cause is fixed (credits granted, a role given) runs; nor is a
            // failure, which a retry resumes — as a new attempt when nothing of this one is
            // charged, as the same attempt (whose ledger calls replay) when that is unknown.
            let status = error.status();
            let transient = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::CONFLICT;
            let how = if settled || !transient {
                Abandon::Settled
            } else {
                Abandon::Unsettled
            };
            if let Err(e) = state.core().abandon_request(org, key, how).await {
                tracing::warn!(error = %e, "could not release an idempotency lock");
            }
            return Err(error);
        }
    };
    if let Err(e) = state.core().complete_request(org, key, &stored).await {
        tracing::warn!(error = %e, "could not store an idempotent response");
    }
    Ok(Once::Ran(answer))
}

/// Runs `work` while keeping its idempotency lock: renewed every third of `lock`, so a request
/// that runs longer than the lock (a slow provider) is never taken over by a retry, while the
/// lock of a request whose process died lapses within `lock`.
async fn held<T>(
    state: &AppState,
    org: OrgId,
    key: &IdempotencyKey,
    attempt: creapic_core::id::AttemptId,
    lock: std::time::Duration,
    work: impl Future<Output = T>,
) -> T {
    let period = (lock / 3).max(std::time::Duration::from_millis(10));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = renew.tick() => {
                match state.core().renew_request(org, key, attempt, lock).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("an idempotency lock was lost while its request ran"),
                    Err(e) => tracing::warn!(error = %e, "could not renew an idempotency lock"),
                }
            }
        }
    }
}

/// A response whose body holds a secret shown once: the buffer is zeroized when the response
/// is dropped after sending.
fn secret_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    bytes_response(
        status,
        bytes::Bytes::from_owner(zeroize::Zeroizing::new(bytes)),
    )
}
