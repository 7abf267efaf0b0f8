//! The credit ledger: amounts, idempotency keys, operations, entries and holds.
//!
//! One balance per organization (the 000 document calls the same units "tokens"). Every change is
//! an immutable, append-only [`LedgerEntry`]; a correction is a new entry, never an edit.
//!
//! **Invariant:** for every organization, balance = sum of its entries' `delta`, and balance ≥ 0.
//!
//! Operations are requests ([`LedgerRequest`]) that the caller identifies twice: by the id of the
//! entry it will create (the caller chooses ids, so a store never invents one) and by an
//! [`IdempotencyKey`], under which a repeat returns the first result instead of a second charge.
//! The atomic application of a request is the store's job; this module only defines what a
//! request means, so that every backend agrees.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{EntryId, HoldId, JobId, OrgId};

/// The largest amount a single operation may move.
pub const AMOUNT_MAX: u64 = 1_000_000_000_000;
/// The largest balance an organization may hold (far below `i64::MAX`, so sums never overflow).
pub const BALANCE_MAX: u64 = 1_000_000_000_000_000;
/// The longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;

/// A non-negative number of credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credits(u64);

impl Credits {
    /// Zero credits.
    pub const ZERO: Credits = Credits(0);

    /// Any number of credits up to [`BALANCE_MAX`] (a balance or a price).
    pub fn new(n: u64) -> Result<Self> {
        if n > BALANCE_MAX {
            return Err(Error::LimitExceeded {
                what: "credits",
                max: BALANCE_MAX,
            });
        }
        Ok(Credits(n))
    }

    /// The amount of one operation: 1..=[`AMOUNT_MAX`].
    pub fn amount(n: u64) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("amount", "must be at least 1"));
        }
        if n > AMOUNT_MAX {
            return Err(Error::LimitExceeded {
                what: "amount",
                max: AMOUNT_MAX,
            });
        }
        Ok(Credits(n))
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The number as a signed value (always fits: bounded by [`BALANCE_MAX`]).
    pub fn signed(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// `self * n`, or a [`Error::LimitExceeded`] past [`AMOUNT_MAX`].
    pub fn times(self, n: u64) -> Result<Self> {
        self.0
            .checked_mul(n)
            .filter(|v| *v <= AMOUNT_MAX)
            .map(Credits)
            .ok_or(Error::LimitExceeded {
                what: "amount",
                max: AMOUNT_MAX,
            })
    }
}

impl std::fmt::Display for Credits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client-chosen key that makes an operation safe to retry: 1–255 visible ASCII characters.
/// Scoped per organization.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates `text`.
    pub fn new(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::invalid("idempotency key", "must not be empty"));
        }
        if text.len() > IDEMPOTENCY_KEY_MAX_LEN {
            return Err(Error::LimitExceeded {
                what: "idempotency key length",
                max: IDEMPOTENCY_KEY_MAX_LEN as u64,
            });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "idempotency key",
                "only visible ASCII characters are allowed",
            ));
        }
        Ok(IdempotencyKey(text.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key built by core itself from text that is valid by construction.
    pub(crate) fn trusted(text: String) -> Self {
        debug_assert!(IdempotencyKey::new(&text).is_ok(), "{text:?}");
        IdempotencyKey(text)
    }

    /// A derived key, `self` + `:` + `suffix`, for the sub-operations of one request (e.g. the
    /// capture of item 3 of a job). Truncation never happens silently: too long is an error.
    pub fn derive(&self, suffix: &str) -> Result<Self> {
        IdempotencyKey::new(&format!("{}:{suffix}", self.0))
    }
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a ledger request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOp {
    /// Adds credits (a purchase, a grant by an operator).
    Grant {
        /// How many.
        amount: Credits,
    },
    /// Removes credits, all or nothing: refused with [`Error::InsufficientCredits`] when the
    /// balance is short.
    Debit {
        /// How many.
        amount: Credits,
    },
    /// Moves credits out of the balance into a new hold (all or nothing), for work whose cost
    /// becomes final later. The hold's id is the request's entry id.
    Reserve {
        /// How many.
        amount: Credits,
        /// The job the hold pays for, if any.
        job: Option<JobId>,
    },
    /// Makes part of a hold final. The balance does not change (the credits left it at reserve).
    Capture {
        /// The hold.
        hold: HoldId,
        /// How many of its remaining credits.
        amount: Credits,
    },
    /// Returns credits of a hold to the balance: `Some(n)` returns `n` and leaves the hold open;
    /// `None` returns everything that remains and closes the hold.
    Release {
        /// The hold.
        hold: HoldId,
        /// How many, or everything.
        amount: Option<Credits>,
    },
}

impl LedgerOp {
    /// The entry kind this operation writes.
    pub fn kind(&self) -> EntryKind {
        match self {
            LedgerOp::Grant { .. } => EntryKind::Grant,
            LedgerOp::Debit { .. } => EntryKind::Debit,
            LedgerOp::Reserve { .. } => EntryKind::Hold,
            LedgerOp::Capture { .. } => EntryKind::Capture,
            LedgerOp::Release { .. } => EntryKind::Release,
        }
    }

    /// A canonical text of the operation and its parameters. Two requests under one idempotency
    /// key must have equal fingerprints, or the second is an [`Error::IdempotencyConflict`].
    pub fn fingerprint(&self) -> String {
        match self {
            LedgerOp::Grant { amount } => format!("grant:{amount}"),
            LedgerOp::Debit { amount } => format!("debit:{amount}"),
            LedgerOp::Reserve { amount, job } => match job {
                Some(job) => format!("reserve:{amount}:{job}"),
                None => format!("reserve:{amount}"),
            },
            LedgerOp::Capture { hold, amount } => format!("capture:{hold}:{amount}"),
            LedgerOp::Release { hold, amount } => match amount {
                Some(amount) => format!("release:{hold}:{amount}"),
                None => format!("release:{hold}:all"),
            },
        }
    }

    /// The hold the operation acts on, for capture and release.
    pub fn hold(&self) -> Option<HoldId> {
        match self {
            LedgerOp::Capture { hold, .. } | LedgerOp::Release { hold, .. } => Some(*hold),
            _ => None,
        }
    }
}

/// One ledger operation, fully identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRequest {
    /// The id of the entry this request creates (for a reserve, also the hold's id).
    pub entry_id: EntryId,
    /// The organization whose balance changes. Capture and release must name the organization
    /// that owns the hold, or the hold is [`Error::NotFound`].
    pub org: OrgId,
    /// What to do.
    pub op: LedgerOp,
    /// Under which key a retry is recognized.
    pub idempotency_key: IdempotencyKey,
    /// When.
    pub at: Timestamp,
}

/// The kind of a ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Credits added.
    Grant,
    /// Credits removed for good.
    Debit,
    /// Credits moved into a hold.
    Hold,
    /// Part of a hold made final (delta 0).
    Capture,
    /// Credits returned from a hold.
    Release,
}

impl EntryKind {
    /// `grant`, `debit`, `hold`, `capture` or `release`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Debit => "debit",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Release => "release",
        }
    }

    /// Parses the text of [`EntryKind::as_str`].
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "grant" => EntryKind::Grant,
            "debit" => EntryKind::Debit,
            "hold" => EntryKind::Hold,
            "capture" => EntryKind::Capture,
            "release" => EntryKind::Release,
            _ => return Err(Error::invalid("entry kind", "unknown")),
        })
    }
}

/// One immutable line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Store-assigned position in the whole ledger, strictly increasing: the pagination cursor.
    pub seq: u64,
    /// The id the request chose.
    pub id: EntryId,
    /// The organization.
    pub org: OrgId,
    /// What happened.
    pub kind: EntryKind,
    /// The signed change of the balance (0 for a capture).
    pub delta: i64,
    /// The operation's amount (for a capture: the credits made final).
    pub amount: Credits,
    /// The balance right after this entry.
    pub balance_after: Credits,
    /// The hold involved, for hold, capture and release entries.
    pub hold: Option<HoldId>,
    /// The job involved, if any.
    pub job: Option<JobId>,
    /// The request's idempotency key.
    pub idempotency_key: IdempotencyKey,
    /// When.
    pub created_at: Timestamp,
}

/// Credits set aside for work in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Its id (the id of the entry that created it).
    pub id: HoldId,
    /// The organization.
    pub org: OrgId,
    /// The job it pays for, if any.
    pub job: Option<JobId>,
    /// Credits reserved.
    pub amount: Credits,
    /// Credits made final so far.
    pub captured: Credits,
    /// Credits returned so far.
    pub released: Credits,
    /// When it was created.
    pub created_at: Timestamp,
    /// When everything left was released; a closed hold accepts no capture or release.
    pub closed_at: Option<Timestamp>,
}

impl Hold {
    /// Credits neither captured nor released.
    pub fn remaining(&self) -> u64 {
        self.amount
            .get()
            .saturating_sub(self.captured.get())
            .saturating_sub(self.released.get())
    }

    /// Checks that `amount` may be captured or released now.
    pub fn check_take(&self, amount: u64) -> Result<()> {
        if self.closed_at.is_some() {
            return Err(Error::InvalidState("the hold is closed"));
        }
        if amount > self.remaining() {
            return Err(Error::InvalidState(
                "the amount exceeds the credits remaining in the hold",
            ));
        }
        Ok(())
    }
}

/// What a ledger request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerReceipt {
    /// The entry the request wrote (on a replay: the entry the first request wrote).
    pub entry: LedgerEntry,
    /// For hold operations, the hold as it is now.
    pub hold: Option<Hold>,
    /// Whether this was a replay of an earlier request with the same idempotency key.
    pub replayed: bool,
}

impl LedgerReceipt {
    /// The balance right after the entry.
    pub fn balance(&self) -> Credits {
        self.entry.balance_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_bounded() {
        assert!(Credits::amount(0).is_err());
        assert!(Credits::amount(AMOUNT_MAX + 1).is_err());
        assert!(Credits::new(BALANCE_MAX + 1).is_err());
        assert!(Credits::amount(1).and_then(|c| c.times(u64::MAX)).is_err());
        assert_eq!(
            Credits::amount(3).and_then(|c| c.times(4)).ok(),
            Some(Credits(12))
        );
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::new("req-123_ABC:x").is_ok());
        for bad in ["", "has space", "tab\t", "ünï", &"k".repeat(256)] {
            assert!(IdempotencyKey::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_tell_operations_apart() {
        let a = Credits(5);
        let ops = [
            LedgerOp::Grant { amount: a },
            LedgerOp::Debit { amount: a },
            LedgerOp::Debit { amount: Credits(6) },
            LedgerOp::Reserve {
                amount: a,
                job: None,
            },
        ];
        let mut prints: Vec<_> = ops.iter().map(LedgerOp::fingerprint).collect();
        prints.sort();
        prints.dedup();
        assert_eq!(prints.len(), ops.len());
    }
}

/// One organization's ledger against its balance, as a store reads it for a whole-database check
/// ([`crate::Creapic::verify_ledgers`], which `creapic restore` runs on a backup): the stored
/// balance, the sum of its entries' deltas and how many entries there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerTotals {
    /// The organization.
    pub org: OrgId,
    /// The stored balance (`balances`), zero when it has none.
    pub balance: Credits,
    /// The sum of the `delta` of every entry of the organization.
    pub entries_sum: i64,
    /// How many entries the organization has.
    pub entries: u64,
}

impl LedgerTotals {
    /// Whether the entries add up to the balance, the ledger's first invariant.
    pub fn is_consistent(&self) -> bool {
        i64::try_from(self.balance.get()).ok() == Some(self.entries_sum)
    }
}

/// Most mismatched organizations a [`LedgerCheck`] lists (it counts them all).
pub const LEDGER_MISMATCHES_SHOWN_MAX: usize = 20;

/// Every organization's ledger checked against its balance ([`crate::Creapic::verify_ledgers`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerCheck {
    /// Organizations checked: every one with a balance or an entry.
    pub organizations: u64,
    /// Entries counted, over all organizations.
    pub entries: u64,
    /// The sum of every organization's balance.
    pub total_balance: u64,
    /// How many organizations' entries do not add up to their balance.
    pub mismatched: u64,
    /// The first of them (at most [`LEDGER_MISMATCHES_SHOWN_MAX`]), in organization id order.
    pub mismatches: Vec<LedgerTotals>,
}

impl LedgerCheck {
    /// Whether every organization's entries add up to its balance.
    pub fn is_consistent(&self) -> bool {
        self.mismatched == 0
    }
}

/// How many days one usage query may span.
pub const USAGE_DAYS_MAX: u32 = 366;
/// Milliseconds in a day: usage is counted per UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// What an organization's ledger recorded on one UTC day, by kind of movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyUsage {
    /// The day's first millisecond (UTC midnight).
    pub day: Timestamp,
    /// Credits spent for good: captures (work paid from a hold) plus debits.
    pub spent: Credits,
    /// Credits added (grants).
    pub granted: Credits,
    /// Credits returned from holds (refunds of failed or canceled work, unused reservations).
    pub released: Credits,
}

/// A range of whole UTC days, `[first, first + days)`, checked against [`USAGE_DAYS_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    first: Timestamp,
    days: u32,
}

impl DayRange {
    /// The days from the one holding `from` to the one holding `to`, both included.
    pub fn new(from: Timestamp, to: Timestamp) -> Result<Self> {
        let first = from.unix_ms().div_euclid(DAY_MS);
        let last = to.unix_ms().div_euclid(DAY_MS);
        if last < first {
            return Err(Error::invalid("to", "must not be before from"));
        }
        let days = last - first + 1;
        if days > i64::from(USAGE_DAYS_MAX) {
            return Err(Error::LimitExceeded {
                what: "days in a usage range",
                max: u64::from(USAGE_DAYS_MAX),
            });
        }
        Ok(DayRange {
            first: Timestamp::from_unix_ms(first.saturating_mul(DAY_MS)),
            days: u32::try_from(days).unwrap_or(USAGE_DAYS_MAX),
        })
    }

    /// The first day's first millisecond.
    pub fn start(&self) -> Timestamp {
        self.first
    }

    /// The first millisecond after the last day.
    pub fn end(&self) -> Timestamp {
        Timestamp::from_unix_ms(self.first.unix_ms() + i64::from(self.days) * DAY_MS)
    }

    /// How many days.
    pub fn days(&self) -> u32 {
        self.days
    }

    /// Every day of the range, in order, with the days a store reported filled in and the
    /// others zero (a chart needs every day).
    pub fn fill(&self, reported: &[DailyUsage]) -> Vec<DailyUsage> {
        (0..i64::from(self.days))
            .map(|i| {
                let day = Timestamp::from_unix_ms(self.first.unix_ms() + i * DAY_MS);
                reported
                    .iter()
                    .find(|u| u.day == day)
                    .copied()
                    .unwrap_or(DailyUsage {
                        day,
                        spent: Credits::ZERO,
                        granted: Credits::ZERO,
                        released: Credits::ZERO,
                    })
            })
            .collect()
    }
}
