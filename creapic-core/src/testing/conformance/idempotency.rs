//! Conformance of HTTP idempotency records: the lock, replay, mismatch detection, lock expiry
//! and takeover, abandon (settled or not), and the retention purge.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::id::AttemptId;
use crate::idempotency::{Abandon, IdempotencyBegin, RequestFingerprint, StoredResponse};
use crate::ledger::IdempotencyKey;
use crate::store::Store;
use crate::testing::Fixture;

use super::{idem, ok};

/// Idempotency records lock, replay, detect mismatches, expire their lock, and are purged. A
/// takeover or an unsettled abandon resumes the record's attempt; a settled abandon or a purge
/// makes the next request a new attempt (so its ledger keys are new: a fresh charge).
pub async fn idempotency_records_lock_replay_and_expire(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, _) = ok(f.org().await, "org");
    let key = idem("http-1");
    let fp = RequestFingerprint::of("POST", "/x", b"{}");
    let lock = f.now.plus(Duration::from_secs(60));
    let minted = std::sync::atomic::AtomicU64::new(1);
    let attempt = |n: u64| AttemptId::from_uuid(uuid::Uuid::from_u64_pair(0x7000, n));
    let b = |now: Timestamp, fp: RequestFingerprint, key: IdempotencyKey| {
        let store = Arc::clone(&f.store);
        let n = minted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            ok(
                store
                    .begin_request(
                        org.id,
                        &key,
                        fp,
                        attempt(n),
                        now,
                        now.plus(Duration::from_secs(60)),
                    )
                    .await,
                "begin",
            )
        }
    };
    let started = |n: u64| IdempotencyBegin::Started {
        attempt: Some(attempt(n)),
    };
    assert_eq!(b(f.now, fp, key.clone()).await, started(1));
    assert_eq!(
        b(f.now, fp, key.clone()).await,
        IdempotencyBegin::InProgress
    );
    let other = RequestFingerprint::of("POST", "/x", b"{\"a\":1}");
    assert_eq!(
        b(f.now, other, key.clone()).await,
        IdempotencyBegin::Mismatch
    );
    // The lock expires: a retry after a crash takes over and resumes the first attempt.
    assert_eq!(
        b(lock.plus(Duration::from_millis(1)), fp, key.clone()).await,
        started(1)
    );
    let response = StoredResponse {
        status: 200,
        body: br#"{"ok":true}"#.to_vec(),
    };
    ok(
        f.store
            .complete_request(org.id, &key, &response, f.now)
            .await,
        "complete",
    );
    assert_eq!(
        b(f.now, fp, key.clone()).await,
        IdempotencyBegin::Replay(response.clone())
    );
    // An unsettled abandon unlocks the record and keeps its attempt (same fingerprint only);
    // a settled one deletes it, so the next request is a new attempt.
    let key2 = idem("http-2");
    assert_eq!(b(f.now, fp, key2.clone()).await, started(6));
    ok(
        f.store
            .abandon_request(org.id, &key2, Abandon::Unsettled)
            .await,
        "abandon unsettled",
    );
    assert_eq!(
        b(f.now, other, key2.clone()).await,
        IdempotencyBegin::Mismatch
    );
    assert_eq!(b(f.now, fp, key2.clone()).await, started(6));
    ok(
        f.store
            .abandon_request(org.id, &key2, Abandon::Settled)
            .await,
        "abandon settled",
    );
    assert_eq!(b(f.now, fp, key2.clone()).await, started(9));
    // Renewing: only the record's own attempt, only while unfinished, and it extends the lock.
    let renew_at = lock.plus(Duration::from_secs(30));
    assert!(ok(
        f.store
            .renew_request(org.id, &key2, attempt(9), renew_at)
            .await,
        "renew"
    ));
    assert!(!ok(
        f.store
            .renew_request(org.id, &key2, attempt(6), renew_at)
            .await,
        "renew another attempt"
    ));
    assert!(!ok(
        f.store
            .renew_request(org.id, &key, attempt(1), renew_at)
            .await,
        "renew a completed record"
    ));
    assert_eq!(
        b(lock.plus(Duration::from_secs(1)), fp, key2.clone()).await,
        IdempotencyBegin::InProgress,
        "the renewed lock holds past the first one"
    );
    // Neither kind of abandon touches a completed record.
    for how in [Abandon::Settled, Abandon::Unsettled] {
        ok(
            f.store.abandon_request(org.id, &key, how).await,
            "abandon completed",
        );
    }
    assert_eq!(
        b(f.now, fp, key.clone()).await,
        IdempotencyBegin::Replay(response)
    );
    // Records of another organization are separate.
    let (org_b, _) = ok(f.org().await, "org b");
    assert_eq!(
        ok(
            f.store
                .begin_request(org_b.id, &key, other, attempt(99), f.now, lock)
                .await,
            "b"
        ),
        IdempotencyBegin::Started {
            attempt: Some(attempt(99))
        }
    );
    let purged = ok(
        f.store
            .purge_requests_before(f.now.plus(Duration::from_secs(1)))
            .await,
        "purge",
    );
    assert!(purged >= 3, "purged {purged}");
    // After the purge the key is new again: a new attempt, never the old one.
    assert_eq!(b(f.now, fp, key.clone()).await, started(12));
}
