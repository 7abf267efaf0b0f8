//! Idempotency records for the HTTP layer: (organization, `Idempotency-Key`) → the request's
//! fingerprint and the response that was sent, so a client retrying a POST whose response it
//! never saw gets the same answer instead of a second charge.
//!
//! A record is first *started* (a lock with an expiry, so a crashed request does not block its
//! retries forever), then *completed* with the response, or *abandoned* when the request failed in
//! a way worth retrying. Records are kept at least [`RETENTION`].
//!
//! Every record carries an [`AttemptId`], minted when the record is created, and the ledger keys
//! a request derives name it. That ties the ledger's own idempotency to the record's life:
//! - a takeover of an expired lock (the first process crashed, outcome unknown) *resumes* the
//!   attempt: same ledger keys, so a charge that happened replays instead of repeating;
//! - an [`Abandon::Unsettled`] failure (the store failed mid-way) resumes it too;
//! - an [`Abandon::Settled`] failure (nothing charged, or refunded) deletes the record, and a
//!   record purged after its retention is gone: the next request under the key is a *new*
//!   attempt with new ledger keys — a fresh charge, never a replay of a released or spent hold,
//!   so reusing a key can never produce work that was not paid for.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::id::AttemptId;

/// How long completed records are kept at least.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest response body stored for replay, in bytes.
pub const RESPONSE_MAX_BYTES: usize = 1024 * 1024;

/// SHA-256 over a request's method, path and body: two requests under one key must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestFingerprint([u8; 32]);

impl RequestFingerprint {
    /// The fingerprint of a request.
    pub fn of(method: &str, path: &str, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        for part in [method.as_bytes(), path.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(body);
        RequestFingerprint(h.finalize().into())
    }

    /// Wraps stored bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        RequestFingerprint(bytes)
    }

    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body (JSON), at most [`RESPONSE_MAX_BYTES`].
    pub body: Vec<u8>,
}

/// What starting a request under an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// No live record: the caller now holds the lock and must complete or abandon it.
    Started {
        /// The attempt the request runs: new for a new record, the record's own for a takeover.
        /// `None` only for a record written before attempts existed (its ledger keys name no
        /// attempt).
        attempt: Option<AttemptId>,
    },
    /// Another request with the same key holds an unexpired lock.
    InProgress,
    /// The request was completed before: send this response again.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
}

/// How a started request that failed in a retryable way gives its record back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    /// Nothing of the attempt is charged (it failed before paying, or its hold was released):
    /// the record is deleted and the next request under the key is a new attempt.
    Settled,
    /// The outcome is unknown (the store failed mid-way): the record is unlocked and keeps its
    /// attempt, so a retry resumes it and its ledger calls replay whatever did happen.
    Unsettled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_fields() {
        let a = RequestFingerprint::of("POST", "/a", b"bc");
        let b = RequestFingerprint::of("POST", "/ab", b"c");
        assert_ne!(a, b);
        assert_eq!(a, RequestFingerprint::of("POST", "/a", b"bc"));
    }
}
