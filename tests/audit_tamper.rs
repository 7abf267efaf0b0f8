//! The audit hash chain against someone with write access to the database: on PostgreSQL and
//! SQLite, rows are edited, deleted, re-hashed and cut off with plain SQL behind creapic's back,
//! and `Creapic::verify_audit_chain` must name the first broken `seq` and how, each time. On
//! PostgreSQL the log is first written by two replicas at once, which must still make one
//! gap-free chain. Recent rows deleted with the chain's anchor moved past them (every row, or a
//! prefix) are reported at the anchor and change the head hash; a purge past the retention
//! still verifies.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use creapic_core::Creapic;
use creapic_core::audit::{Actor, DEFAULT_RETENTION, RequestContext};
use creapic_core::audit_chain::{BreakKind, ChainBreak, link_hash};
use creapic_core::clock::{Clock, ManualClock, SystemClock, Timestamp};
use creapic_core::page::PageLimit;
use creapic_core::store::Store;
use sqlx::AssertSqlSafe;

type Core = Arc<Creapic<dyn Store>>;

/// The columns of an audit row as the chain reads them (`audit_anchor` has them too).
const CHAIN: &str =
    "seq, id, org, at, action, actor, ip, user_agent, key_id, key_prefix, detail, prev_hash, hash";

/// Raw SQL access to the store's database, as an intruder would have.
enum Db {
    Pg(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Db {
    async fn exec(&self, sql: &str) {
        let q = sqlx::query(AssertSqlSafe(sql.to_owned()));
        let done = match self {
            Db::Pg(pool) => q.execute(pool).await.map(|_| ()),
            Db::Sqlite(pool) => sqlx::query(AssertSqlSafe(sql.to_owned()))
                .execute(pool)
                .await
                .map(|_| ()),
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A literal of `bytes` in this database's SQL.
    fn blob(&self, bytes: &[u8]) -> String {
        match self {
            Db::Pg(_) => format!("'\\x{}'::bytea", hex::encode(bytes)),
            Db::Sqlite(_) => format!("X'{}'", hex::encode(bytes)),
        }
    }
}

/// The organization's creation and 60 grants (one audit event each), the grants spread over
/// `replicas` and sent concurrently.
async fn write_log(replicas: &[Core]) {
    let ctx = RequestContext::new(Some([192, 0, 2, 7].into()), Some("tamper-test"));
    let first = &replicas[0];
    let owner = first.ensure_user("owner@example.com").await.expect("user");
    let org = first
        .create_org("Tamper", owner.id, Actor::Operator, &ctx)
        .await
        .expect("org");
    let tasks: Vec<_> = (0..60u64)
        .map(|i| {
            let core = Arc::clone(&replicas[i as usize % replicas.len()]);
            let ctx = ctx.clone();
            tokio::spawn(async move {
                core.grant(Actor::Operator, org.id, i + 1, &format!("g-{i}"), &ctx)
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("grant");
    }
}

async fn broken(core: &Core) -> Option<ChainBreak> {
    core.verify_audit_chain().await.expect("verify").broken
}

fn at(seq: u64, kind: BreakKind) -> Option<ChainBreak> {
    Some(ChainBreak { seq, kind })
}

/// Every tampering in turn, each restored from a copy before the next.
async fn tamper_suite(core: &Core, db: &Db) {
    let report = core.verify_audit_chain().await.expect("verify");
    assert_eq!(report.broken, None, "the untouched log verifies");
    assert!(
        report.checked >= 61,
        "org.created and 60 grants: {report:?}"
    );
    let (first, last) = (report.head.anchor_seq + 1, report.head.last_seq);
    assert_eq!(report.checked, last - first + 1);
    db.exec("CREATE TABLE audit_copy AS SELECT * FROM audit_events")
        .await;
    let s = last - 5;

    let cases: Vec<(String, Option<ChainBreak>)> = vec![
        (
            format!("UPDATE audit_events SET detail = 'amount=1000000' WHERE seq = {s}"),
            at(s, BreakKind::Edited),
        ),
        (
            format!("UPDATE audit_events SET ip = '10.0.0.1' WHERE seq = {s}"),
            at(s, BreakKind::Edited),
        ),
        (
            format!("UPDATE audit_events SET ip = NULL, user_agent = NULL WHERE seq = {s}"),
            at(s, BreakKind::Edited),
        ),
        (
            format!("UPDATE audit_events SET at = at - 1 WHERE seq = {s}"),
            at(s, BreakKind::Edited),
        ),
        (
            format!("UPDATE audit_events SET action = 'key.used' WHERE seq = {s}"),
            at(s, BreakKind::Edited),
        ),
        (
            format!("UPDATE audit_events SET action = 'bogus' WHERE seq = {s}"),
            at(s, BreakKind::Edited),
        ),
        (
            format!("UPDATE audit_events SET hash = NULL WHERE seq = {s}"),
            at(s, BreakKind::Edited),
        ),
        (
            format!("DELETE FROM audit_events WHERE seq = {s}"),
            at(s, BreakKind::Missing),
        ),
        (
            format!("DELETE FROM audit_events WHERE seq = {first}"),
            at(first, BreakKind::Missing),
        ),
        (
            format!("DELETE FROM audit_events WHERE seq = {last}"),
            at(last, BreakKind::Missing),
        ),
        (
            format!("DELETE FROM audit_events WHERE seq >= {s}"),
            at(s, BreakKind::Missing),
        ),
    ];
    for (sql, want) in cases {
        db.exec(&sql).await;
        assert_eq!(broken(core).await, want, "{sql}");
        db.exec("DELETE FROM audit_events").await;
        db.exec("INSERT INTO audit_events SELECT * FROM audit_copy")
            .await;
        assert_eq!(broken(core).await, None, "restored after {sql}");
    }

    // Someone who knows the algorithm edits a row and re-hashes it: the next row's link breaks.
    let row = stored_row(core, s).await;
    let mut event = row.event.clone().expect("decodes");
    event.detail = Some("amount=1000000".into());
    let forged = link_hash(&row.prev_hash.expect("prev"), s, &event);
    db.exec(&format!(
        "UPDATE audit_events SET detail = 'amount=1000000', hash = {} WHERE seq = {s}",
        db.blob(forged.as_bytes())
    ))
    .await;
    assert_eq!(broken(core).await, at(s + 1, BreakKind::Relinked));
    db.exec("DELETE FROM audit_events").await;
    db.exec("INSERT INTO audit_events SELECT * FROM audit_copy")
        .await;

    anchor_cases(core, db, s, last).await;

    // The newest row cut off and the head moved back to match its count: the head's hash is
    // not the new newest row's.
    db.exec(&format!("DELETE FROM audit_events WHERE seq = {last}"))
        .await;
    db.exec(&format!(
        "UPDATE audit_chain SET last_seq = {} WHERE id = 1",
        last - 1
    ))
    .await;
    assert_eq!(broken(core).await, at(last - 1, BreakKind::HeadMismatch));
    restore(db).await;

    // A legitimate purge, run by a clock past the retention, deletes every event (all minutes
    // old by the real clock) and moves the anchor: that clock verifies it, the real clock —
    // at which those events are young — reports the anchor.
    let later = now_plus(DEFAULT_RETENTION + Duration::from_secs(2 * 3600));
    let purger: Core = Arc::new(
        Creapic::builder(Arc::clone(core.store()))
            .clock(Arc::new(ManualClock::new(later)))
            .build(),
    );
    let purged = purger.purge_audit().await.expect("purge");
    assert_eq!(
        purged, last,
        "by that clock every event is past the retention"
    );
    let report = purger.verify_audit_chain().await.expect("verify");
    assert_eq!(report.broken, None, "a purge past the retention verifies");
    assert_eq!((report.head.anchor_seq, report.checked), (last, 0));
    assert_eq!(broken(core).await, at(last, BreakKind::AnchorTooRecent));
}

/// `now` by the system clock, plus `d`.
fn now_plus(d: Duration) -> Timestamp {
    SystemClock.now().plus(d)
}

/// Puts back the log, the head and the (empty) anchor event saved by [`anchor_cases`].
async fn restore(db: &Db) {
    db.exec("DELETE FROM audit_events").await;
    db.exec("INSERT INTO audit_events SELECT * FROM audit_copy")
        .await;
    db.exec("DELETE FROM audit_chain").await;
    db.exec("INSERT INTO audit_chain SELECT * FROM chain_copy")
        .await;
    db.exec("DELETE FROM audit_anchor").await;
}

/// Recent rows deleted and the anchor moved past them, the anchor pointed at a real row's hash
/// (so every remaining link holds): with and without a copy of that row as the anchor event,
/// every row or a prefix. Each is reported at the anchor and changes the head hash.
async fn anchor_cases(core: &Core, db: &Db, s: u64, last: u64) {
    db.exec("CREATE TABLE chain_copy AS SELECT * FROM audit_chain")
        .await;
    let untouched = core.store().audit_chain_head().await.expect("head");
    let move_anchor = |k: u64| {
        format!(
            "UPDATE audit_chain SET anchor_seq = {k}, \
             anchor_hash = (SELECT hash FROM audit_copy WHERE seq = {k}) WHERE id = 1"
        )
    };
    let copy_anchor_event = |k: u64| {
        format!(
            "INSERT INTO audit_anchor (slot, {CHAIN}) SELECT 1, {CHAIN} FROM audit_copy \
             WHERE seq = {k}"
        )
    };
    let cases: Vec<(&str, Vec<String>, Option<ChainBreak>)> = vec![
        (
            "every row deleted, the anchor moved to the newest",
            vec!["DELETE FROM audit_events".into(), move_anchor(last)],
            at(last, BreakKind::AnchorUnproven),
        ),
        (
            "every row deleted, the anchor moved to the newest, its row kept as anchor event",
            vec![
                "DELETE FROM audit_events".into(),
                move_anchor(last),
                copy_anchor_event(last),
            ],
            at(last, BreakKind::AnchorTooRecent),
        ),
        (
            "a recent prefix deleted, the anchor moved to its last row",
            vec![
                format!("DELETE FROM audit_events WHERE seq <= {s}"),
                move_anchor(s),
            ],
            at(s, BreakKind::AnchorUnproven),
        ),
        (
            "a recent prefix deleted, the anchor moved to its last row, kept as anchor event",
            vec![
                format!("DELETE FROM audit_events WHERE seq <= {s}"),
                move_anchor(s),
                copy_anchor_event(s),
            ],
            at(s, BreakKind::AnchorTooRecent),
        ),
    ];
    for (what, statements, want) in cases {
        for sql in &statements {
            db.exec(sql).await;
        }
        let report = core.verify_audit_chain().await.expect("verify");
        assert_eq!(report.broken, want, "{what}");
        assert_ne!(
            report.head.digest(),
            untouched.digest(),
            "{what}: the head hash must change with the set of events"
        );
        assert_eq!(report.head.last_hash, untouched.last_hash, "{what}");
        restore(db).await;
        assert_eq!(broken(core).await, None, "restored after: {what}");
    }
}

/// The stored row at `seq`.
async fn stored_row(core: &Core, seq: u64) -> creapic_core::audit_chain::ChainRow {
    let rows = core
        .store()
        .audit_chain(seq - 1, PageLimit::new(1).expect("limit"))
        .await
        .expect("row");
    rows.into_iter().next().expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_tampering_is_found_at_its_seq() {
    let schema = support::fresh_schema();
    let a = support::pg_store(&schema, 8).await;
    support::drop_old_schemas(&a).await;
    let b = support::pg_store(&schema, 8).await;
    let db = Db::Pg(a.pool().clone());
    let a: Core = Arc::new(Creapic::new(Arc::new(a) as Arc<dyn Store>));
    let b: Core = Arc::new(Creapic::new(Arc::new(b) as Arc<dyn Store>));
    write_log(&[Arc::clone(&a), b]).await;
    tamper_suite(&a, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_tampering_is_found_at_its_seq() {
    let path = support::sqlite_path("audit-tamper");
    let store = support::sqlite_store(&path, Duration::from_secs(5)).await;
    let db = Db::Sqlite(
        sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("raw connection"),
    );
    let core: Core = Arc::new(Creapic::new(Arc::new(store) as Arc<dyn Store>));
    write_log(&[Arc::clone(&core)]).await;
    tamper_suite(&core, &db).await;
}
