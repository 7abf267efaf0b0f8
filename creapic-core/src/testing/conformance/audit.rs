//! Conformance of the audit log: queries per organization filtered by time and action and paged, the
//! retention purge, and the hash chain that links every append and still verifies after a purge.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditAction, AuditQuery};
use crate::ledger::{Credits, LedgerOp};
use crate::page::PageLimit;
use crate::store::{KeyUsage, Store};
use crate::testing::Fixture;

use super::{idem, ok};

/// Audit events are read per organization, in a time range, page by page, and purged.
pub async fn audit_queries_filter_page_and_purge(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, _) = ok(f.org().await, "org");
    let (other, _) = ok(f.org().await, "other");
    let mut events = Vec::new();
    for i in 0..10u64 {
        let mut e = f.event(org.id, AuditAction::CreditsGranted);
        e.at = f.now.plus(Duration::from_secs(i * 3600));
        e.detail = Some(format!("n={i}"));
        e.ip = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        e.user_agent = Some("conformance/1".into());
        events.push(e);
    }
    ok(f.store.append_audit(&events).await, "append");
    let all = ok(f.all_audit(org.id).await, "all");
    let granted: Vec<_> = all
        .iter()
        .filter(|e| e.action == AuditAction::CreditsGranted)
        .collect();
    assert_eq!(granted.len(), 10);
    assert_eq!(
        granted[3], &events[3],
        "events must round-trip exactly (ip, user agent, detail)"
    );
    assert!(
        ok(f.all_audit(other.id).await, "other")
            .iter()
            .all(|e| e.action != AuditAction::CreditsGranted)
    );
    let mut q = AuditQuery::all(org.id);
    q.since = Some(f.now.plus(Duration::from_secs(2 * 3600)));
    q.until = Some(f.now.plus(Duration::from_secs(6 * 3600)));
    q.limit = ok(PageLimit::new(3), "limit");
    let mut got = Vec::new();
    loop {
        let page = ok(f.store.audit(&q).await, "page");
        assert!(page.items.len() <= 3);
        got.extend(page.items.iter().map(|r| r.event.detail.clone()));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    let want: Vec<_> = (2..6).map(|i| Some(format!("n={i}"))).collect();
    assert_eq!(got, want);
    let cutoff = f.now.plus(Duration::from_secs(5 * 3600));
    let purged = ok(f.store.purge_audit_before(cutoff).await, "purge");
    assert!(purged >= 5, "purged {purged}");
    let left = ok(f.all_audit(org.id).await, "left");
    assert!(left.iter().all(|e| e.at >= cutoff));
    assert_eq!(
        left.iter()
            .filter(|e| e.action == AuditAction::CreditsGranted)
            .count(),
        5
    );
}

/// The action filter: only events of the asked action, in order and paged like any query,
/// combined with the time range, never another organization's.
pub async fn audit_queries_filter_by_action(store: Arc<dyn Store>) {
    let f = Fixture::new(store);
    let (org, _) = ok(f.org().await, "org");
    let (other, _) = ok(f.org().await, "other");
    let actions = [
        AuditAction::KeyCreated,
        AuditAction::CreditsGranted,
        AuditAction::KeyDeleted,
    ];
    let mut events = Vec::new();
    for i in 0..9u64 {
        let mut e = f.event(org.id, actions[(i % 3) as usize]);
        e.at = f.now.plus(Duration::from_secs(i * 60));
        e.detail = Some(format!("n={i}"));
        events.push(e);
    }
    let mut foreign = f.event(other.id, AuditAction::KeyDeleted);
    foreign.detail = Some("other".into());
    events.push(foreign);
    ok(f.store.append_audit(&events).await, "append");

    let mut q = AuditQuery::all(org.id);
    q.action = Some(AuditAction::KeyDeleted);
    q.limit = ok(PageLimit::new(2), "limit");
    let mut got = Vec::new();
    loop {
        let page = ok(f.store.audit(&q).await, "page");
        assert!(page.items.len() <= 2);
        for r in &page.items {
            assert_eq!(r.event.action, AuditAction::KeyDeleted);
            assert_eq!(r.event.org, org.id);
        }
        got.extend(page.items.iter().map(|r| r.event.detail.clone()));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    let want: Vec<_> = [2, 5, 8].iter().map(|i| Some(format!("n={i}"))).collect();
    assert_eq!(
        got, want,
        "every key.deleted of the organization, oldest first"
    );

    let mut q = AuditQuery::all(org.id);
    q.action = Some(AuditAction::KeyDeleted);
    q.since = Some(f.now.plus(Duration::from_secs(3 * 60)));
    q.until = Some(f.now.plus(Duration::from_secs(8 * 60)));
    let page = ok(f.store.audit(&q).await, "range");
    let got: Vec<_> = page.items.iter().map(|r| r.event.detail.clone()).collect();
    assert_eq!(
        got,
        vec![Some("n=5".to_owned())],
        "action and time range together"
    );

    let mut q = AuditQuery::all(org.id);
    q.action = Some(AuditAction::MemberRemoved);
    let page = ok(f.store.audit(&q).await, "none");
    assert!(page.items.is_empty() && page.next.is_none());
}

/// Every append, however it arrives (a key insert, a grant, a usage flush, 64 concurrent
/// appenders), is linked into one gap-free hash chain in commit order; the chain verifies page by
/// page, and still verifies from its new anchor after a retention purge.
pub async fn audit_chain_links_every_append_and_survives_purge(store: Arc<dyn Store>) {
    let f = Fixture::new(Arc::clone(&store));
    // The verifier's clock is past the retention of the fixture's events (the purge below is
    // a legitimate one), so the anchor it leaves is old enough.
    let past_retention = f
        .now
        .plus(crate::audit::DEFAULT_RETENTION + Duration::from_secs(2 * 3600));
    let clock = Arc::new(crate::clock::ManualClock::new(past_retention));
    let core = crate::Creapic::builder(Arc::clone(&store))
        .clock(clock.clone())
        .build();
    let start = ok(store.audit_chain_head().await, "head");
    let (org, owner) = ok(f.org().await, "org");
    let key = ok(f.key(org.id, owner.id).await, "key");
    let grant = crate::ledger::LedgerRequest {
        entry_id: f.entry_id(),
        org: org.id,
        op: LedgerOp::Grant {
            amount: ok(Credits::amount(50), "amount"),
        },
        idempotency_key: idem("chain-grant"),
        at: f.now,
    };
    let granted = f.event(org.id, AuditAction::CreditsGranted);
    ok(store.apply(&grant, Some(&granted)).await, "grant");
    let usage = KeyUsage {
        key: key.key.id,
        org: org.id,
        prefix: key.key.prefix,
        last_used_at: f.now,
        audit_id: crate::id::AuditId::generate(f.now, f.rng.as_ref()),
    };
    ok(store.record_key_usage(&[usage]).await, "usage");
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let store = Arc::clone(&store);
            let events: Vec<_> = (0..=(i % 3))
                .map(|j| {
                    let mut e = f.event(org.id, AuditAction::CreditsGranted);
                    e.at = f.now.plus(Duration::from_secs(3600 + i));
                    e.detail = Some(format!("task={i} n={j}"));
                    e
                })
                .collect();
            tokio::spawn(async move { store.append_audit(&events).await })
        })
        .collect();
    for t in tasks {
        match t.await {
            Ok(r) => ok(r, "concurrent append"),
            Err(e) => panic!("append task: {e}"),
        }
    }
    let head = ok(store.audit_chain_head().await, "head");
    let mine = ok(f.all_audit(org.id).await, "audit");
    // org.created (+ owner), key.created, credits.granted, key.used, 64 tasks of 1..=3 events.
    let appended = head.last_seq - start.last_seq;
    assert_eq!(
        appended as usize,
        mine.len(),
        "every event of this fresh organization must take exactly one seq"
    );
    let report = ok(core.verify_audit_chain().await, "verify");
    assert_eq!(report.broken, None, "an untouched chain must verify");
    assert_eq!(report.checked, head.last_seq - head.anchor_seq);
    // seq is commit order without gaps: the whole log pages back as 1, 2, 3, … after the anchor.
    let mut after = head.anchor_seq;
    let mut seen = 0u64;
    loop {
        let rows = ok(
            store
                .audit_chain(after, ok(PageLimit::new(7), "limit"))
                .await,
            "chain page",
        );
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            assert_eq!(r.seq, after + 1, "audit seq must have no gaps");
            assert!(r.hash.is_some() && r.prev_hash.is_some() && r.event.is_some());
            after = r.seq;
            seen += 1;
        }
    }
    assert_eq!(seen, report.checked);
    // Purge everything up to the concurrent appends (all at now + 1 h and later).
    let purged = ok(
        store
            .purge_audit_before(f.now.plus(Duration::from_secs(60)))
            .await,
        "purge",
    );
    assert!(
        purged >= 4,
        "org, key, grant and usage events are old enough: {purged}"
    );
    let after_purge = ok(store.audit_chain_head().await, "head");
    assert!(after_purge.anchor_seq >= start.last_seq + 4);
    assert_eq!(after_purge.last_seq, head.last_seq);
    let report = ok(core.verify_audit_chain().await, "verify after purge");
    assert_eq!(
        report.broken, None,
        "a purged log must verify from its anchor"
    );
    assert_eq!(report.checked, head.last_seq - after_purge.anchor_seq);
    assert_ne!(
        after_purge.digest(),
        head.digest(),
        "the head hash commits to the anchor: a purge changes it"
    );
    let anchor = ok(store.audit_chain_anchor().await, "anchor event");
    assert_eq!(
        anchor.map(|a| (a.seq, a.hash)),
        Some((after_purge.anchor_seq, Some(after_purge.anchor_hash))),
        "the purge keeps the event its anchor names"
    );
    // The same anchor, judged by a clock at which its event is younger than the retention, is
    // a deletion of recent events.
    clock.set(f.now.plus(Duration::from_secs(3600)));
    let early = ok(core.verify_audit_chain().await, "verify early");
    assert_eq!(
        early.broken.map(|b| (b.seq, b.kind)),
        Some((
            after_purge.anchor_seq,
            crate::audit_chain::BreakKind::AnchorTooRecent
        ))
    );
    clock.set(past_retention);
    ok(
        store
            .append_audit(&[f.event(org.id, AuditAction::KeyUsed)])
            .await,
        "append",
    );
    assert!(ok(core.verify_audit_chain().await, "verify").is_intact());
}
