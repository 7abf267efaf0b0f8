//! Credits: grants (owners and the operator), debits, holds (reserve, capture, release), the
//! balance, entries, held credits, daily usage, and the sweep that releases abandoned holds.
//!
//! Every change is one [`LedgerRequest`] with a fresh entry id and the caller's idempotency key,
//! so a repeat is answered with the first result and never charged twice; the sweep relies on
//! this too (one key per hold), so sweepers on several replicas release a hold once.

use crate::audit::{Actor, AuditAction, AuditEvent, RequestContext};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{EntryId, HoldId, JobId, OrgId};
use crate::ledger::{
    Credits, DailyUsage, DayRange, IdempotencyKey, LEDGER_MISMATCHES_SHOWN_MAX, LedgerCheck,
    LedgerEntry, LedgerOp, LedgerReceipt, LedgerRequest,
};
use crate::org::Role;
use crate::page::{Page, PageLimit};
use crate::store::Store;

use super::Creapic;

/// Most pages of organizations (each [`PageLimit::max`]) one [`Creapic::verify_ledgers`] reads.
pub const LEDGER_CHECK_PAGES_MAX: usize = 10_000;

/// Most holds one [`Creapic::release_stale_holds`] call releases (the next call takes the rest).
pub const STALE_HOLDS_PER_SWEEP: u32 = 100;

impl<S: Store + ?Sized> Creapic<S> {
    async fn ledger(
        &self,
        org: OrgId,
        op: LedgerOp,
        idempotency_key: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt> {
        let at = self.now();
        let request = LedgerRequest {
            entry_id: EntryId::generate(at, self.rng.as_ref()),
            org,
            op,
            idempotency_key: IdempotencyKey::new(idempotency_key)?,
            at,
        };
        self.store.apply(&request, audit).await
    }

    /// Adds `amount` credits to `org` (the operator, or an owner).
    pub async fn grant(
        &self,
        by: Actor,
        org: OrgId,
        amount: u64,
        idempotency_key: &str,
        ctx: &RequestContext,
    ) -> Result<LedgerReceipt> {
        let amount = Credits::amount(amount)?;
        self.require_org(org).await?;
        if let Actor::User(user) = by
            && self.store.role(org, user).await? != Some(Role::Owner)
        {
            return Err(Error::Forbidden {
                action: "grant credits",
            });
        }
        if let Actor::Key(_) = by {
            return Err(Error::Forbidden {
                action: "grant credits",
            });
        }
        let audit = self
            .audit_event(org, self.now(), AuditAction::CreditsGranted, by, ctx)
            .with_detail(&format!("amount={amount}"));
        self.ledger(
            org,
            LedgerOp::Grant { amount },
            idempotency_key,
            Some(&audit),
        )
        .await
    }

    /// Removes `amount` credits from `org`, all or nothing.
    pub async fn debit(
        &self,
        org: OrgId,
        amount: u64,
        idempotency_key: &str,
    ) -> Result<LedgerReceipt> {
        let amount = Credits::amount(amount)?;
        self.ledger(org, LedgerOp::Debit { amount }, idempotency_key, None)
            .await
    }

    /// Moves `amount` credits of `org` into a new hold.
    pub async fn reserve(
        &self,
        org: OrgId,
        amount: u64,
        job: Option<JobId>,
        idempotency_key: &str,
    ) -> Result<LedgerReceipt> {
        let amount = Credits::amount(amount)?;
        self.ledger(
            org,
            LedgerOp::Reserve { amount, job },
            idempotency_key,
            None,
        )
        .await
    }

    /// Makes `amount` credits of a hold final.
    pub async fn capture(
        &self,
        org: OrgId,
        hold: HoldId,
        amount: u64,
        idempotency_key: &str,
    ) -> Result<LedgerReceipt> {
        let amount = Credits::amount(amount)?;
        self.ledger(
            org,
            LedgerOp::Capture { hold, amount },
            idempotency_key,
            None,
        )
        .await
    }

    /// Returns `amount` credits of a hold, or everything left (closing it) when `None`.
    pub async fn release(
        &self,
        org: OrgId,
        hold: HoldId,
        amount: Option<u64>,
        idempotency_key: &str,
    ) -> Result<LedgerReceipt> {
        let amount = amount.map(Credits::amount).transpose()?;
        self.ledger(
            org,
            LedgerOp::Release { hold, amount },
            idempotency_key,
            None,
        )
        .await
    }

    /// The balance of `org`.
    pub async fn balance(&self, org: OrgId) -> Result<Credits> {
        self.store.balance(org).await
    }

    /// Ledger entries of `org`, oldest first.
    pub async fn entries(
        &self,
        org: OrgId,
        after: Option<u64>,
        limit: PageLimit,
    ) -> Result<Page<LedgerEntry, u64>> {
        self.store.entries(org, after, limit).await
    }

    /// The credits of `org` in open holds (work queued or running; see [`crate::store::LedgerStore::held`]).
    /// Read after, not together with, [`Creapic::balance`]: a hold opened between the two
    /// reads shows in both or neither, never half.
    pub async fn held(&self, org: OrgId) -> Result<Credits> {
        self.store.held(org).await
    }

    /// Usage of `org` per UTC day, from the day holding `from` to the day holding `to` (both
    /// included, at most [`USAGE_DAYS_MAX`](crate::ledger::USAGE_DAYS_MAX) days): every day of
    /// the range, days without entries as zeros.
    pub async fn usage(
        &self,
        org: OrgId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(DayRange, Vec<DailyUsage>)> {
        let range = DayRange::new(from, to)?;
        let reported = self.store.usage(org, &range).await?;
        let days = range.fill(&reported);
        Ok((range, days))
    }

    /// Checks every organization's ledger against its balance: the entries of each must add up
    /// to it. Reads [`crate::store::LedgerStore::ledger_totals`] page by page, at most
    /// [`LEDGER_CHECK_PAGES_MAX`] pages (past them: `LimitExceeded`), and reports the totals and
    /// the first mismatches. `creapic restore` runs it on a backup before using it.
    pub async fn verify_ledgers(&self) -> Result<LedgerCheck> {
        let mut check = LedgerCheck::default();
        let mut after = None;
        for _ in 0..LEDGER_CHECK_PAGES_MAX {
            let page = self.store.ledger_totals(after, PageLimit::max()).await?;
            for totals in &page.items {
                check.organizations += 1;
                check.entries += totals.entries;
                check.total_balance = check.total_balance.saturating_add(totals.balance.get());
                if !totals.is_consistent() {
                    check.mismatched += 1;
                    if check.mismatches.len() < LEDGER_MISMATCHES_SHOWN_MAX {
                        check.mismatches.push(*totals);
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(check),
            }
        }
        Err(Error::LimitExceeded {
            what: "pages of organizations in one ledger check",
            max: LEDGER_CHECK_PAGES_MAX as u64,
        })
    }

    /// Gives back the credits of abandoned holds: open holds of synchronous requests (no job)
    /// older than [`CoreConfig::stale_hold_after`], whose request died between its reserve and
    /// its capture or release (a crash, a kill). Each gets what it had left released by an
    /// ordinary ledger request under the key `stale-hold:{id}`, so sweepers on several replicas
    /// release a hold once, and a request settling it meanwhile wins (the release no longer
    /// fits and is skipped). Releases at most [`STALE_HOLDS_PER_SWEEP`] holds; returns how many.
    ///
    /// [`CoreConfig::stale_hold_after`]: super::CoreConfig::stale_hold_after
    pub async fn release_stale_holds(&self) -> Result<u64> {
        let cutoff = self.now().minus(self.config.stale_hold_after);
        let stale = self
            .store
            .stale_holds(cutoff, PageLimit::new(STALE_HOLDS_PER_SWEEP)?)
            .await?;
        let mut released = 0;
        for hold in stale {
            // Exactly what the listing saw left: if the request captured or released since,
            // the hold no longer has it and the release is refused (`InvalidState`) — a
            // request settling its own hold always wins over the sweep.
            let key = format!("stale-hold:{}", hold.id);
            match self
                .release(hold.org, hold.id, Some(hold.remaining()), &key)
                .await
            {
                Ok(receipt) if !receipt.replayed => released += 1,
                // Released by another sweep (same key), or settled meanwhile.
                Ok(_) | Err(Error::InvalidState(_) | Error::IdempotencyConflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }
}
