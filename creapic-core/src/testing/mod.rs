//! Test support for store backends: fixtures and the conformance suite every backend runs.
//!
//! Enabled by the `testing` feature. A backend's test file calls [`conformance_suite!`] once with
//! a function that returns a fresh, empty store; the macro expands to one `#[tokio::test]` per
//! behaviour, so every backend reports the same test names and a failure names the behaviour.
//!
//! [`conformance_suite!`]: crate::conformance_suite

use std::sync::Arc;

use crate::audit::{Actor, AuditEvent, AuditQuery, RequestContext};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::id::{AuditId, EntryId, KeyId, OrgId, UserId};
use crate::key::{ApiKey, KeyMode, KeyName, NewKey, generate_key};
use crate::ledger::{Credits, IdempotencyKey, LedgerOp, LedgerRequest};
use crate::org::{Email, OrgName, Organization, User};
use crate::page::PageLimit;
use crate::random::{RandomSource, SeededRandom};
use crate::scope::ScopeSet;
use crate::store::Store;

pub mod conformance;

/// A store under test plus deterministic ids and times.
pub struct Fixture {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Seeded randomness for ids.
    pub rng: Arc<SeededRandom>,
    /// A fixed "now" the fixture's helpers use.
    pub now: Timestamp,
}

impl Fixture {
    /// A fixture over `store`. Each fixture uses its own seed so that fixtures sharing one
    /// database (parallel tests) never mint the same ids.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let mut seed = [0u8; 8];
        crate::random::OsRandom.fill(&mut seed);
        Fixture {
            store,
            rng: Arc::new(SeededRandom::new(u64::from_le_bytes(seed))),
            now: Timestamp::from_unix_ms(1_800_000_000_000),
        }
    }

    /// A fresh entry id.
    pub fn entry_id(&self) -> EntryId {
        EntryId::generate(self.now, self.rng.as_ref())
    }

    /// A fresh user id that no stored user has.
    pub fn new_user_id(&self) -> UserId {
        UserId::generate(self.now, self.rng.as_ref())
    }

    /// A fresh audit event of `org`.
    pub fn event(&self, org: OrgId, action: crate::audit::AuditAction) -> AuditEvent {
        AuditEvent::new(
            AuditId::generate(self.now, self.rng.as_ref()),
            org,
            self.now,
            action,
            Actor::Operator,
            &RequestContext::default(),
        )
    }

    /// A new user with a unique e-mail.
    pub async fn user(&self) -> Result<User> {
        let id = UserId::generate(self.now, self.rng.as_ref());
        let user = User {
            id,
            email: Email::new(&format!("{id}@example.com"))?,
            created_at: self.now,
        };
        self.store.upsert_user(&user).await
    }

    /// A new organization with a new owner; returns both.
    pub async fn org(&self) -> Result<(Organization, User)> {
        let owner = self.user().await?;
        let org = Organization {
            id: OrgId::generate(self.now, self.rng.as_ref()),
            name: OrgName::new("Conformance Org")?,
            created_at: self.now,
        };
        let audit = self.event(org.id, crate::audit::AuditAction::OrgCreated);
        self.store
            .create_org(&org, owner.id, u64::MAX, &audit)
            .await?;
        Ok((org, owner))
    }

    /// A new organization holding `credits`.
    pub async fn funded_org(&self, credits: u64) -> Result<OrgId> {
        let (org, _) = self.org().await?;
        if credits > 0 {
            self.apply(
                org.id,
                LedgerOp::Grant {
                    amount: Credits::amount(credits)?,
                },
                "seed-grant",
            )
            .await?;
        }
        Ok(org.id)
    }

    /// Applies a ledger operation with a fresh entry id, at the fixture's "now".
    pub async fn apply(
        &self,
        org: OrgId,
        op: LedgerOp,
        key: &str,
    ) -> Result<crate::ledger::LedgerReceipt> {
        self.apply_at(org, op, key, self.now).await
    }

    /// Applies a ledger operation with a fresh entry id, dated `at` (e.g. a hold made earlier).
    pub async fn apply_at(
        &self,
        org: OrgId,
        op: LedgerOp,
        key: &str,
        at: Timestamp,
    ) -> Result<crate::ledger::LedgerReceipt> {
        let request = LedgerRequest {
            entry_id: self.entry_id(),
            org,
            op,
            idempotency_key: IdempotencyKey::new(key)?,
            at,
        };
        self.store.apply(&request, None).await
    }

    /// Inserts a new live key with every scope for `org`, created by `by`.
    pub async fn key(&self, org: OrgId, by: UserId) -> Result<NewKey> {
        let secret = generate_key(KeyMode::Live, self.rng.as_ref());
        let key = ApiKey {
            id: KeyId::generate(self.now, self.rng.as_ref()),
            org,
            name: KeyName::new("conformance key")?,
            prefix: secret.prefix(),
            scopes: ScopeSet::all(),
            mode: KeyMode::Live,
            created_at: self.now,
            created_by: by,
            last_used_at: None,
            deleted_at: None,
            expires_at: None,
        };
        let new = NewKey {
            key,
            digest: secret.digest(),
            active_max: u64::MAX,
        };
        let audit = self
            .event(org, crate::audit::AuditAction::KeyCreated)
            .with_key(new.key.id, new.key.prefix);
        self.store.insert_key(&new, &audit).await?;
        Ok(new)
    }

    /// Asserts the ledger invariant for `org`: balance = sum of entry deltas ≥ 0, each entry's
    /// `balance_after` is the running sum, and `seq` strictly increases. Returns the balance.
    pub async fn assert_ledger_consistent(&self, org: OrgId) -> Result<u64> {
        let balance = self.store.balance(org).await?.get();
        let mut sum: i64 = 0;
        let mut last_seq = 0;
        let mut after = None;
        loop {
            let page = self.store.entries(org, after, PageLimit::max()).await?;
            for e in &page.items {
                assert!(e.seq > last_seq, "ledger seq must increase");
                last_seq = e.seq;
                sum += e.delta;
                assert!(sum >= 0, "running balance went negative at seq {}", e.seq);
                assert_eq!(
                    u64::try_from(sum).ok(),
                    Some(e.balance_after.get()),
                    "balance_after of seq {} is not the running sum",
                    e.seq
                );
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(
            u64::try_from(sum).ok(),
            Some(balance),
            "balance != sum(ledger)"
        );
        Ok(balance)
    }

    /// Every audit event of `org`, all pages.
    pub async fn all_audit(&self, org: OrgId) -> Result<Vec<AuditEvent>> {
        let mut query = AuditQuery::all(org);
        query.limit = PageLimit::max();
        let mut out = Vec::new();
        loop {
            let page = self.store.audit(&query).await?;
            out.extend(page.items.into_iter().map(|r| r.event));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(out),
            }
        }
    }
}
