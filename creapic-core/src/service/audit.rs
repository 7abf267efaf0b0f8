//! The audit log: a page of an organization's events for its owners and admins, the retention
//! purge, and the operator's check of the whole hash chain.
//!
//! The check reads the chain page by page while appends and purges go on; a purge that moves the
//! anchor under it restarts it (at most [`VERIFY_RESTARTS_MAX`] times), so a purge is never
//! reported as a deletion.

use crate::audit::{Actor, AuditQuery, AuditRecord};
use crate::audit_chain::{ChainReport, ChainVerifier};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::page::{Page, PageLimit};
use crate::store::Store;

use super::Creapic;

/// Most times [`Creapic::verify_audit_chain`] restarts because a purge moved the anchor.
pub const VERIFY_RESTARTS_MAX: u32 = 3;

impl<S: Store + ?Sized> Creapic<S> {
    /// A page of `org`'s audit log. People must be owners or admins.
    pub async fn audit(&self, by: Actor, query: &AuditQuery) -> Result<Page<AuditRecord, u64>> {
        self.require_manager(by, query.org, "read the audit log")
            .await?;
        self.store.audit(query).await
    }

    /// Deletes audit events older than the retention period; returns how many.
    pub async fn purge_audit(&self) -> Result<u64> {
        let cutoff = self.now().minus(self.config.audit_retention);
        self.store.purge_audit_before(cutoff).await
    }

    /// Checks the whole audit log's hash chain ([`crate::audit_chain`]) page by page and reports
    /// the first edited, deleted or re-linked row. An operator's call (it reads every
    /// organization's events). The anchor is checked first: its stored event must hash to it
    /// and be older than the retention (less [`crate::audit_chain::ANCHOR_CLOCK_SKEW_MAX`]) by
    /// this service's clock, so recent rows deleted with the anchor moved past them are
    /// reported. Events appended while it runs are left for the next check; a retention purge
    /// that moves the anchor while it runs restarts the check (at most [`VERIFY_RESTARTS_MAX`]
    /// times), so a purge is never reported as a deletion.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        let mut attempt = 0;
        loop {
            let head = self.store.audit_chain_head().await?;
            let anchor = self.store.audit_chain_anchor().await?;
            let mut verifier = ChainVerifier::new(head);
            verifier.check_anchor(anchor.as_ref(), self.anchor_purgeable_before());
            while verifier.wants_more() {
                let rows = self
                    .store
                    .audit_chain(verifier.cursor(), PageLimit::default())
                    .await?;
                let exhausted = rows.len() < PageLimit::default().as_usize();
                verifier.feed(&rows);
                if exhausted {
                    break;
                }
            }
            let report = verifier.finish();
            attempt += 1;
            if report.is_intact() || attempt > VERIFY_RESTARTS_MAX {
                return Ok(report);
            }
            let now = self.store.audit_chain_head().await?;
            if now.anchor_seq == head.anchor_seq {
                return Ok(report);
            }
        }
    }

    /// The time before which the anchor event must have been written: a purge run now would
    /// delete only events before `now - retention`; the skew allowance covers a purging replica
    /// whose clock runs ahead.
    fn anchor_purgeable_before(&self) -> Timestamp {
        self.now()
            .minus(self.config.audit_retention)
            .plus(crate::audit_chain::ANCHOR_CLOCK_SKEW_MAX)
    }
}
