//! Conformance of generation records: the round trip, the idempotent insert, tenancy, and ids
//! that sort in creation order.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::error::{Error, StoreErrorKind};
use crate::generation::{AspectRatio, GenerationOutcome, GenerationRecord, Quality};
use crate::id::{EntryId, GenerationId, HoldId, OrgId};
use crate::ledger::{Credits, LedgerOp, LedgerRequest};
use crate::store::Store;
use crate::testing::Fixture;

use super::{amount, idem, ok};

/// A hold of `org` reserved for `amount` at `at` (its id, the generation's, minted at `at`).
async fn hold_at(f: &Fixture, org: OrgId, amount_: u64, key: &str, at: Timestamp) -> HoldId {
    let request = LedgerRequest {
        entry_id: EntryId::generate(at, f.rng.as_ref()),
        org,
        op: LedgerOp::Reserve {
            amount: amount(amount_),
            job: None,
        },
        idempotency_key: idem(key),
        at,
    };
    let receipt = ok(f.store.apply(&request, None).await, "reserve");
    receipt.hold.map(|h| h.id).expect("a reserve makes a hold")
}

fn completed(org: OrgId, hold: HoldId, tokens: u64, at: Timestamp) -> GenerationRecord {
    GenerationRecord {
        id: GenerationId::of_hold(hold),
        org,
        prompt: r#"{"subject":"a lighthouse at dusk","style":"watercolor"}"#.into(),
        aspect_ratio: AspectRatio::Landscape16x9,
        quality: Quality::Hd,
        outcome: GenerationOutcome::Completed {
            media: format!("{}.png", "ab".repeat(32)),
            tokens: ok(Credits::new(tokens), "tokens"),
        },
        created_at: at,
    }
}

/// A generation reads back exactly as inserted, completed or failed; the insert answers with
/// what is stored.
pub async fn generations_round_trip(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let hold = hold_at(&f, org, 2, "g-1", f.now).await;
    ok(
        f.apply(
            org,
            LedgerOp::Capture {
                hold,
                amount: amount(2),
            },
            "g-1:c",
        )
        .await,
        "capture",
    );
    let record = completed(org, hold, 2, f.now);
    let stored = ok(f.store.insert_generation(&record).await, "insert");
    assert_eq!(stored, record, "the insert answers with the stored record");
    let read = ok(f.store.generation(org, record.id).await, "read");
    assert_eq!(
        read,
        Some(record.clone()),
        "a completed generation round-trips"
    );
    assert_eq!(
        read.map(|r| r.id.hold()),
        Some(hold),
        "its id is its hold's"
    );

    let failed_hold = hold_at(&f, org, 1, "g-2", f.now).await;
    let failed = GenerationRecord {
        id: GenerationId::of_hold(failed_hold),
        prompt: "\"a ready prompt given as a JSON string\"".into(),
        aspect_ratio: AspectRatio::Square,
        quality: Quality::Standard,
        outcome: GenerationOutcome::Failed {
            code: "provider_failed".into(),
        },
        ..record.clone()
    };
    assert_eq!(
        ok(f.store.insert_generation(&failed).await, "insert"),
        failed
    );
    let read = ok(f.store.generation(org, failed.id).await, "read");
    assert_eq!(
        read,
        Some(failed.clone()),
        "a failed generation round-trips"
    );
    let read = read.expect("read");
    assert_eq!(read.outcome.status(), "failed");
    assert_eq!(
        read.outcome.tokens(),
        Credits::ZERO,
        "a failed one charged nothing"
    );
    assert_eq!(read.outcome.media(), None);
    assert_eq!(read.outcome.error_code(), Some("provider_failed"));
    // Both are there, each under its own id.
    assert_ne!(record.id, failed.id);
    assert_eq!(
        ok(f.store.generation(org, record.id).await, "read"),
        Some(record)
    );
}

/// Inserting under an id already stored writes nothing and answers with the stored record, also
/// when many inserts of one id race: a resumed attempt never fails and never duplicates.
pub async fn generations_insert_is_idempotent(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let hold = hold_at(&f, org, 3, "g-1", f.now).await;
    let first = completed(org, hold, 3, f.now);
    assert_eq!(ok(f.store.insert_generation(&first).await, "insert"), first);
    let mut again = completed(
        org,
        hold,
        3,
        Timestamp::from_unix_ms(f.now.unix_ms() + 5_000),
    );
    again.prompt = r#"{"subject":"something else"}"#.into();
    let answered = ok(f.store.insert_generation(&again).await, "repeat");
    assert_eq!(answered, first, "a repeat answers with the first record");
    assert_eq!(
        ok(f.store.generation(org, first.id).await, "read"),
        Some(first.clone()),
        "a repeat changes nothing"
    );

    // Racing inserts of one new id: one wins, every one answers with the winner.
    let raced = hold_at(&f, org, 1, "g-2", f.now).await;
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let store = f.store.clone();
        let mut record = completed(org, raced, 1, Timestamp::from_unix_ms(f.now.unix_ms() + i));
        record.prompt = format!("{{\"subject\":\"racer {i}\"}}");
        tasks.push(tokio::spawn(async move {
            store.insert_generation(&record).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => answers.push(ok(r, "racing insert")),
            Err(e) => panic!("insert task: {e}"),
        }
    }
    let stored = ok(
        f.store.generation(org, GenerationId::of_hold(raced)).await,
        "read",
    )
    .expect("the raced generation is stored");
    assert!(
        answers.iter().all(|a| *a == stored),
        "every racing insert answers with the one stored record"
    );
}

/// A generation belongs to its organization: another organization reads `None` for its id, and
/// cannot claim the id for itself.
pub async fn generations_are_invisible_to_other_orgs(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let a = ok(f.funded_org(10).await, "a");
    let b = ok(f.funded_org(10).await, "b");
    let hold = hold_at(&f, a, 2, "g", f.now).await;
    let record = completed(a, hold, 2, f.now);
    ok(f.store.insert_generation(&record).await, "insert");
    assert_eq!(
        ok(f.store.generation(b, record.id).await, "b reads a's"),
        None,
        "another organization's generation is not found"
    );
    let unknown = GenerationId::of_hold(HoldId::generate(f.now, f.rng.as_ref()));
    assert_eq!(ok(f.store.generation(a, unknown).await, "unknown"), None);
    let stolen = GenerationRecord {
        org: b,
        ..record.clone()
    };
    match f.store.insert_generation(&stolen).await {
        Err(Error::Store {
            kind: StoreErrorKind::Conflict,
            ..
        }) => {}
        other => panic!("another organization's id must conflict, got {other:?}"),
    }
    assert_eq!(ok(f.store.generation(b, record.id).await, "b"), None);
    assert_eq!(
        ok(f.store.generation(a, record.id).await, "a"),
        Some(record),
        "the owner's record is untouched"
    );
}

/// Generation ids are their holds' UUID v7 ids: they sort in the order the holds were made,
/// and the store keeps every id and time exactly.
pub async fn generation_ids_sort_in_creation_order(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let org = ok(f.funded_org(10).await, "org");
    let mut made = Vec::new();
    for i in 0..4i64 {
        let at = Timestamp::from_unix_ms(f.now.unix_ms() + i * 1_000);
        let hold = hold_at(&f, org, 1, &format!("g-{i}"), at).await;
        made.push(completed(org, hold, 1, at));
    }
    // Inserted out of order; read back in any order, each exactly.
    for record in made.iter().rev() {
        ok(f.store.insert_generation(record).await, "insert");
    }
    let mut read = Vec::new();
    for record in &made {
        let got = ok(f.store.generation(org, record.id).await, "read")
            .expect("every generation is stored");
        assert_eq!(got.id.as_uuid().get_version_num(), 7, "a UUID v7");
        assert_eq!(&got, record);
        read.push(got);
    }
    assert!(
        read.windows(2)
            .all(|w| w[0].id < w[1].id && w[0].created_at < w[1].created_at),
        "ids sort in creation order: {:?}",
        read.iter().map(|r| r.id).collect::<Vec<_>>()
    );
}
