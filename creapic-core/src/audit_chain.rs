//! The audit log's hash chain: how each event is linked to the one before it, and how the whole
//! log is checked for edited, deleted or re-ordered rows.
//!
//! Design decision: one chain over the whole log, in `seq` order. Every event's `hash` is SHA-256
//! of a domain tag, its `seq`, the previous event's hash and a length-prefixed encoding of every
//! stored field, so changing any byte of a row, deleting a row or inserting one breaks the chain
//! at that row. The store computes links with [`link`] inside the transaction that appends the
//! events and keeps a one-row [`ChainHead`] (the last `seq` and hash) in the same transaction,
//! which also serializes appends so that `seq` order is commit order. Retention deletes a prefix
//! of the log and moves the head's *anchor* (the last deleted row's seq and hash), so a purged log
//! still verifies and a deleted first row is still detected. Deleting the newest rows is detected
//! because the head remembers the last hash.
//!
//! The anchor may only move past events older than the retention, and verification checks that
//! it did: a purge keeps a copy of the event the anchor names (its *anchor event*), so the verifier
//! recomputes the anchor's hash from it and reads its time. Someone who deletes recent rows and
//! points the anchor at a real row's hash must show that row, whose time says it is too young to
//! have been purged ([`BreakKind::AnchorTooRecent`]); pointing the anchor at a hash without its
//! event is [`BreakKind::AnchorUnproven`]; forging an older event with the same hash needs a
//! SHA-256 preimage. Because the log is in commit order, every event before the anchor event was
//! committed before it, so "the anchor event is past the retention" covers every deleted event,
//! up to clock skew between replicas ([`ANCHOR_CLOCK_SKEW_MAX`]). The printed head hash
//! ([`ChainHead::digest`]) commits to the anchor as well as to the newest link, so it changes
//! whenever the set of events in the chain changes, a purge included.
//!
//! What the chain does not do: someone who can write the database can rewrite every hash and the
//! head together. Operators who need that covered record the head hash printed by
//! `creapic audit verify` somewhere the database's writers cannot reach, and compare later.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::audit::{AuditEvent, AuditRecord};
use crate::clock::Timestamp;
use crate::error::{Error, Result};

/// Domain tag hashed first, so a chain hash can never be confused with any other SHA-256 here.
const DOMAIN: &[u8] = b"creapic/audit-chain/v1\0";

/// Domain tag of [`ChainHead::digest`].
const HEAD_DOMAIN: &[u8] = b"creapic/audit-head/v1\0";

/// How much younger than the retention an anchor event may be and still verify: the clock of
/// the process that purged may run ahead of the verifier's. Deleting events younger than the
/// retention by more than this is reported; within it, it is indistinguishable from skew.
pub const ANCHOR_CLOCK_SKEW_MAX: Duration = Duration::from_secs(60 * 60);

/// A link of the chain: 32 bytes of SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuditHash([u8; 32]);

impl AuditHash {
    /// The hash before the first event ever appended.
    pub const GENESIS: AuditHash = AuditHash([0; 32]);

    /// A hash from its 32 stored bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        <[u8; 32]>::try_from(bytes)
            .map(AuditHash)
            .map_err(|_| Error::invalid("audit hash", "must be 32 bytes"))
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditHash({})", self.to_hex())
    }
}

impl fmt::Display for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Hashes one optional field: a presence byte, then the length and the bytes.
fn field(h: &mut Sha256, value: Option<&[u8]>) {
    match value {
        None => h.update([0u8]),
        Some(bytes) => {
            h.update([1u8]);
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
    }
}

/// The hash of the event at `seq` whose predecessor's hash is `prev`.
pub fn link_hash(prev: &AuditHash, seq: u64, e: &AuditEvent) -> AuditHash {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(prev.0);
    h.update(e.id.as_uuid().as_bytes());
    h.update(e.org.as_uuid().as_bytes());
    h.update(e.at.unix_ms().to_be_bytes());
    field(&mut h, Some(e.action.as_str().as_bytes()));
    field(&mut h, Some(e.actor.to_text().as_bytes()));
    field(
        &mut h,
        e.ip.map(|ip| ip.to_string()).as_deref().map(str::as_bytes),
    );
    field(&mut h, e.user_agent.as_deref().map(str::as_bytes));
    field(
        &mut h,
        e.key_id
            .map(|k| k.as_uuid())
            .as_ref()
            .map(|u| &u.as_bytes()[..]),
    );
    field(&mut h, e.key_prefix.as_ref().map(|p| p.as_str().as_bytes()));
    field(&mut h, e.detail.as_deref().map(str::as_bytes));
    AuditHash(h.finalize().into())
}

/// The chain's one-row state, kept by the store next to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The `seq` just before the first row kept: 0 for a log never purged (or the last event
    /// written before the chain existed), else the last purged event's.
    pub anchor_seq: u64,
    /// The hash the first kept row must name as its predecessor.
    pub anchor_hash: AuditHash,
    /// The `seq` of the newest event.
    pub last_seq: u64,
    /// The newest event's hash.
    pub last_hash: AuditHash,
}

impl ChainHead {
    /// The head of an empty log.
    pub const EMPTY: ChainHead = ChainHead {
        anchor_seq: 0,
        anchor_hash: AuditHash::GENESIS,
        last_seq: 0,
        last_hash: AuditHash::GENESIS,
    };

    /// The head hash to record elsewhere: SHA-256 over a domain tag, the anchor (`seq` and hash)
    /// and the newest link (`seq` and hash). It commits to both ends of the chain, so it changes
    /// whenever the set of events the chain holds changes — an append, a purge, or rows deleted
    /// with the anchor moved to match.
    pub fn digest(&self) -> AuditHash {
        let mut h = Sha256::new();
        h.update(HEAD_DOMAIN);
        h.update(self.anchor_seq.to_be_bytes());
        h.update(self.anchor_hash.0);
        h.update(self.last_seq.to_be_bytes());
        h.update(self.last_hash.0);
        AuditHash(h.finalize().into())
    }
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead::EMPTY
    }
}

/// Where one appended event goes: its `seq` and its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLink {
    /// Its position.
    pub seq: u64,
    /// The previous event's hash.
    pub prev_hash: AuditHash,
    /// Its own hash.
    pub hash: AuditHash,
}

/// Links `events`, in order, after `head` and advances `head` past them. The store writes each
/// event with its link and saves `head`, all in the transaction that appends them.
pub fn link(head: &mut ChainHead, events: &[AuditEvent]) -> Vec<ChainLink> {
    events
        .iter()
        .map(|e| {
            let seq = head.last_seq + 1;
            let prev_hash = head.last_hash;
            let hash = link_hash(&prev_hash, seq, e);
            head.last_seq = seq;
            head.last_hash = hash;
            ChainLink {
                seq,
                prev_hash,
                hash,
            }
        })
        .collect()
}

/// One stored row as verification reads it. A column that does not decode (a hash of the wrong
/// length, an unknown action) is `None`: to the verifier that is an edited row, not a read error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    /// Its position.
    pub seq: u64,
    /// The stored predecessor hash.
    pub prev_hash: Option<AuditHash>,
    /// The stored hash.
    pub hash: Option<AuditHash>,
    /// The stored event.
    pub event: Option<AuditEvent>,
}

impl ChainRow {
    /// A row whose every column decoded.
    pub fn of(record: AuditRecord, link: ChainLink) -> Self {
        ChainRow {
            seq: record.seq,
            prev_hash: Some(link.prev_hash),
            hash: Some(link.hash),
            event: Some(record.event),
        }
    }
}

/// How the chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakKind {
    /// The event at this `seq` is gone (deleted, or the newest rows were cut off).
    Missing,
    /// The row's contents no longer match its hash.
    Edited,
    /// The row names a predecessor hash other than the previous row's: a row before it was
    /// replaced, or rows were re-linked.
    Relinked,
    /// Every row links up, but the newest one is not the one the head recorded.
    HeadMismatch,
    /// The anchor names a hash that no stored anchor event produces: it was moved by hand.
    AnchorUnproven,
    /// The anchor's event is younger than the retention: events that retention would have kept
    /// were deleted and the anchor moved past them.
    AnchorTooRecent,
}

impl BreakKind {
    /// A stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakKind::Missing => "missing",
            BreakKind::Edited => "edited",
            BreakKind::Relinked => "relinked",
            BreakKind::HeadMismatch => "head_mismatch",
            BreakKind::AnchorUnproven => "anchor_unproven",
            BreakKind::AnchorTooRecent => "anchor_too_recent",
        }
    }

    /// What it means, for people.
    pub const fn describe(self) -> &'static str {
        match self {
            BreakKind::Missing => "the event is missing (deleted)",
            BreakKind::Edited => "the row's contents do not match its hash (edited)",
            BreakKind::Relinked => "the row does not link to the row before it",
            BreakKind::HeadMismatch => "the newest row is not the one the chain head recorded",
            BreakKind::AnchorUnproven => {
                "the chain's anchor names a hash no stored anchor event produces (moved by hand)"
            }
            BreakKind::AnchorTooRecent => {
                "the chain's anchor moved past events younger than the retention (deleted)"
            }
        }
    }
}

/// The first place the chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainBreak {
    /// The `seq` at which it breaks.
    pub seq: u64,
    /// How.
    pub kind: BreakKind,
}

/// The result of checking the whole chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainReport {
    /// The head verified against.
    pub head: ChainHead,
    /// Rows checked.
    pub checked: u64,
    /// The first break, if any.
    pub broken: Option<ChainBreak>,
}

impl ChainReport {
    /// Whether the chain is intact.
    pub const fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Checks rows page by page against a head read before the first page: pure logic, fed by
/// whoever reads the store. Rows after the head's `last_seq` (appended since) are ignored.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    head: ChainHead,
    next_seq: u64,
    prev: AuditHash,
    checked: u64,
    broken: Option<ChainBreak>,
}

impl ChainVerifier {
    /// A verifier of the rows after `head.anchor_seq` up to `head.last_seq`. It trusts the
    /// anchor until [`ChainVerifier::check_anchor`] is called.
    pub fn new(head: ChainHead) -> Self {
        ChainVerifier {
            head,
            next_seq: head.anchor_seq.saturating_add(1),
            prev: head.anchor_hash,
            checked: 0,
            broken: None,
        }
    }

    /// Checks the anchor against its stored event (`anchor`, what the last purge kept) before
    /// any row: the event must hash to the anchor at the anchor's `seq`, and must have been
    /// written before `purgeable_before` (now − retention + [`ANCHOR_CLOCK_SKEW_MAX`]), or the
    /// anchor moved past events retention would have kept. An anchor at the genesis hash (a log
    /// never purged past a chained event) has no event to show.
    pub fn check_anchor(&mut self, anchor: Option<&ChainRow>, purgeable_before: Timestamp) {
        let seq = self.head.anchor_seq;
        if self.head.anchor_hash == AuditHash::GENESIS {
            if anchor.is_some() {
                self.fail(seq, BreakKind::AnchorUnproven);
            }
            return;
        }
        let proven = anchor.and_then(|row| match (row.prev_hash, row.hash, &row.event) {
            (Some(prev), Some(hash), Some(event))
                if row.seq == seq
                    && hash == self.head.anchor_hash
                    && link_hash(&prev, seq, event) == hash =>
            {
                Some(event.at)
            }
            _ => None,
        });
        match proven {
            None => self.fail(seq, BreakKind::AnchorUnproven),
            Some(at) if at >= purgeable_before => self.fail(seq, BreakKind::AnchorTooRecent),
            Some(_) => {}
        }
    }

    /// The cursor to read the next page after (`seq > cursor`).
    pub const fn cursor(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Whether more rows are needed: not broken and not yet at the head.
    pub const fn wants_more(&self) -> bool {
        self.broken.is_none() && self.next_seq <= self.head.last_seq
    }

    /// Checks the next page (rows in `seq` order, each after [`ChainVerifier::cursor`]).
    pub fn feed(&mut self, rows: &[ChainRow]) {
        for row in rows {
            if !self.wants_more() {
                return;
            }
            if row.seq != self.next_seq {
                self.fail(self.next_seq, BreakKind::Missing);
                return;
            }
            let (Some(prev), Some(hash), Some(event)) = (row.prev_hash, row.hash, &row.event)
            else {
                self.fail(row.seq, BreakKind::Edited);
                return;
            };
            if prev != self.prev {
                self.fail(row.seq, BreakKind::Relinked);
                return;
            }
            if link_hash(&prev, row.seq, event) != hash {
                self.fail(row.seq, BreakKind::Edited);
                return;
            }
            self.prev = hash;
            self.next_seq += 1;
            self.checked += 1;
        }
    }

    fn fail(&mut self, seq: u64, kind: BreakKind) {
        self.broken = Some(ChainBreak { seq, kind });
    }

    /// The report, once the store has no more rows to give.
    pub fn finish(mut self) -> ChainReport {
        if self.broken.is_none() {
            if self.next_seq <= self.head.last_seq {
                self.fail(self.next_seq, BreakKind::Missing);
            } else if self.prev != self.head.last_hash {
                self.fail(self.head.last_seq, BreakKind::HeadMismatch);
            }
        }
        ChainReport {
            head: self.head,
            checked: self.checked,
            broken: self.broken,
        }
    }
}

/// Where a retention purge may stop: the longest prefix of `rows` (in `seq` order, from the
/// oldest kept) whose events are all older than the cutoff. Returns the last such row's `seq`
/// and hash, the new anchor. Stopping at the first younger event keeps the log a contiguous
/// chain; an older event behind it (clock skew between replicas, a late `key.used`) is purged
/// by a later run once everything before it is old enough.
pub fn purge_prefix<'a>(
    rows: impl IntoIterator<Item = (u64, bool, Option<&'a [u8]>)>,
) -> Option<(u64, Option<AuditHash>)> {
    let mut upto = None;
    for (seq, old_enough, hash) in rows {
        if !old_enough {
            break;
        }
        upto = Some((seq, hash.and_then(|h| AuditHash::from_slice(h).ok())));
    }
    upto
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditAction, RequestContext};
    use crate::clock::Timestamp;
    use crate::id::{AuditId, OrgId};
    use crate::random::SeededRandom;

    fn events(n: usize) -> Vec<AuditEvent> {
        let rng = SeededRandom::new(7);
        let at = Timestamp::from_unix_ms(1_800_000_000_000);
        let org = OrgId::generate(at, &rng);
        (0..n)
            .map(|i| {
                AuditEvent::new(
                    AuditId::generate(at, &rng),
                    org,
                    at,
                    AuditAction::CreditsGranted,
                    Actor::Operator,
                    &RequestContext::new(Some([10, 0, 0, 1].into()), Some("ua")),
                )
                .with_detail(&format!("amount={i}"))
            })
            .collect()
    }

    fn chain(n: usize) -> (ChainHead, Vec<ChainRow>) {
        let mut head = ChainHead::EMPTY;
        let evs = events(n);
        let links = link(&mut head, &evs);
        let rows = evs
            .into_iter()
            .zip(links)
            .map(|(event, l)| ChainRow::of(AuditRecord { seq: l.seq, event }, l))
            .collect();
        (head, rows)
    }

    fn verify(head: ChainHead, rows: &[ChainRow], page: usize) -> ChainReport {
        let mut v = ChainVerifier::new(head);
        for chunk in rows.chunks(page) {
            v.feed(chunk);
        }
        v.finish()
    }

    #[test]
    fn an_untouched_chain_verifies_in_any_page_size() {
        let (head, rows) = chain(10);
        for page in [1, 3, 10] {
            let r = verify(head, &rows, page);
            assert_eq!(r.broken, None);
            assert_eq!(r.checked, 10);
        }
        assert!(verify(ChainHead::EMPTY, &[], 5).is_intact());
    }

    #[test]
    fn an_edited_field_is_found_at_its_row() {
        let (head, mut rows) = chain(10);
        if let Some(e) = rows[4].event.as_mut() {
            e.detail = Some("amount=1000000".into());
        }
        let r = verify(head, &rows, 3);
        assert_eq!(
            r.broken,
            Some(ChainBreak {
                seq: 5,
                kind: BreakKind::Edited
            })
        );
        let (head, mut rows) = chain(3);
        rows[1].event = None;
        assert_eq!(verify(head, &rows, 3).broken.map(|b| b.seq), Some(2));
    }

    #[test]
    fn a_rehashed_row_breaks_the_next_link() {
        let (head, mut rows) = chain(5);
        if let Some(e) = rows[1].event.as_mut() {
            e.ip = None;
        }
        rows[1].hash = rows[1]
            .event
            .as_ref()
            .map(|e| link_hash(&rows[0].hash.unwrap_or(AuditHash::GENESIS), 2, e));
        let r = verify(head, &rows, 5);
        assert_eq!(
            r.broken,
            Some(ChainBreak {
                seq: 3,
                kind: BreakKind::Relinked
            })
        );
    }

    #[test]
    fn deleted_rows_are_missing_wherever_they_were() {
        let (head, rows) = chain(6);
        let mut middle = rows.clone();
        middle.remove(2);
        assert_eq!(
            verify(head, &middle, 2).broken,
            Some(ChainBreak {
                seq: 3,
                kind: BreakKind::Missing
            })
        );
        let mut first = rows.clone();
        first.remove(0);
        assert_eq!(verify(head, &first, 2).broken.map(|b| b.seq), Some(1));
        let mut last = rows.clone();
        last.pop();
        assert_eq!(
            verify(head, &last, 2).broken,
            Some(ChainBreak {
                seq: 6,
                kind: BreakKind::Missing
            })
        );
    }

    #[test]
    fn a_cut_tail_with_a_rewritten_head_count_is_a_head_mismatch() {
        let (mut head, rows) = chain(4);
        head.last_seq = 3;
        assert_eq!(
            verify(head, &rows[..3], 3).broken,
            Some(ChainBreak {
                seq: 3,
                kind: BreakKind::HeadMismatch
            })
        );
    }

    #[test]
    fn a_purged_prefix_verifies_from_its_anchor() {
        let (head, rows) = chain(8);
        let bools: Vec<_> = rows
            .iter()
            .map(|r| (r.seq, r.seq <= 3, r.hash.map(|h| *h.as_bytes())))
            .collect();
        let upto = purge_prefix(
            bools
                .iter()
                .map(|(s, o, h)| (*s, *o, h.as_ref().map(|h| &h[..]))),
        );
        assert_eq!(upto.map(|u| u.0), Some(3));
        let anchored = ChainHead {
            anchor_seq: 3,
            anchor_hash: upto.and_then(|u| u.1).unwrap_or(AuditHash::GENESIS),
            ..head
        };
        assert!(verify(anchored, &rows[3..], 4).is_intact());
        assert_eq!(
            verify(anchored, &rows[4..], 4).broken.map(|b| b.seq),
            Some(4)
        );
    }

    /// A verifier of `head` whose anchor event is `anchor`, judged at `purgeable_before`.
    fn verify_anchored(
        head: ChainHead,
        anchor: Option<&ChainRow>,
        purgeable_before: Timestamp,
        rows: &[ChainRow],
    ) -> ChainReport {
        let mut v = ChainVerifier::new(head);
        v.check_anchor(anchor, purgeable_before);
        v.feed(rows);
        v.finish()
    }

    #[test]
    fn an_anchor_moved_past_recent_events_is_reported() {
        let (head, rows) = chain(6);
        let written = rows[0].event.as_ref().map(|e| e.at).unwrap_or_default();
        let later = written.plus(Duration::from_secs(1));
        let earlier = written.minus(Duration::from_secs(1));
        // Every row deleted, the anchor pointed at the newest: same last hash, nothing to check.
        let moved = ChainHead {
            anchor_seq: 6,
            anchor_hash: head.last_hash,
            ..head
        };
        assert!(
            verify(moved, &[], 4).is_intact(),
            "what the anchor check adds"
        );
        let at = |seq, kind| Some(ChainBreak { seq, kind });
        assert_eq!(
            verify_anchored(moved, None, later, &[]).broken,
            at(6, BreakKind::AnchorUnproven),
            "an anchor without its event"
        );
        assert_eq!(
            verify_anchored(moved, Some(&rows[5]), earlier, &[]).broken,
            at(6, BreakKind::AnchorTooRecent),
            "an anchor whose event is younger than the retention"
        );
        assert_eq!(
            verify_anchored(moved, Some(&rows[4]), later, &[]).broken,
            at(6, BreakKind::AnchorUnproven),
            "another row's event"
        );
        let mut older = rows[5].clone();
        if let Some(e) = older.event.as_mut() {
            e.at = e.at.minus(Duration::from_secs(86_400 * 365));
        }
        assert_eq!(
            verify_anchored(moved, Some(&older), earlier, &[]).broken,
            at(6, BreakKind::AnchorUnproven),
            "the event back-dated: its hash no longer matches"
        );
        // A recent prefix deleted and the anchor moved to its last row.
        let prefix = ChainHead {
            anchor_seq: 3,
            anchor_hash: rows[2].hash.unwrap_or(AuditHash::GENESIS),
            ..head
        };
        assert_eq!(
            verify_anchored(prefix, Some(&rows[2]), earlier, &rows[3..]).broken,
            at(3, BreakKind::AnchorTooRecent)
        );
        // The same anchor once its event is past the retention: a legitimate purge.
        let r = verify_anchored(prefix, Some(&rows[2]), later, &rows[3..]);
        assert!(r.is_intact(), "{r:?}");
        assert_eq!(r.checked, 3);
        // A log never purged: the genesis anchor has no event, and may not claim one.
        assert!(verify_anchored(head, None, earlier, &rows).is_intact());
        assert_eq!(
            verify_anchored(head, Some(&rows[0]), later, &rows).broken,
            at(0, BreakKind::AnchorUnproven)
        );
    }

    #[test]
    fn the_head_hash_commits_to_both_ends() {
        let (head, rows) = chain(4);
        let moved = ChainHead {
            anchor_seq: 4,
            anchor_hash: head.last_hash,
            ..head
        };
        assert_ne!(head.digest(), moved.digest());
        let purged = ChainHead {
            anchor_seq: 1,
            anchor_hash: rows[0].hash.unwrap_or(AuditHash::GENESIS),
            ..head
        };
        assert_ne!(head.digest(), purged.digest());
        assert_eq!(head.digest(), head.digest());
        assert_ne!(head.digest(), head.last_hash);
    }

    #[test]
    fn rows_appended_after_the_head_was_read_are_ignored() {
        let (head, rows) = chain(5);
        let early = ChainHead {
            last_seq: 3,
            last_hash: rows[2].hash.unwrap_or(AuditHash::GENESIS),
            ..head
        };
        let r = verify(early, &rows, 5);
        assert!(r.is_intact());
        assert_eq!(r.checked, 3);
    }
}
