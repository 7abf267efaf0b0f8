//! The in-memory store: a complete backend for tests, examples and single-process embedding.
//!
//! Not a mock: it implements every store trait with the same atomicity a database gives, by
//! applying each call under one mutex. The mutex is never held across an `.await` (every method
//! body is synchronous), so it cannot deadlock the async runtime, and each call is one critical
//! section, which is exactly the transaction boundary the SQL backends use. Nothing survives the
//! process.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::account::{PasswordHash, Session, SessionDigest};

use crate::audit::{Actor, AuditAction, AuditEvent, AuditQuery, AuditRecord, RequestContext};
use crate::audit_chain::{self, AuditHash, ChainHead, ChainLink, ChainRow};
use crate::clock::Timestamp;
use crate::error::{Error, Result, StoreErrorKind};
use crate::generation::GenerationRecord;
use crate::id::{AttemptId, EntryId, GenerationId, HoldId, JobId, KeyId, OrgId, UserId};
use crate::idempotency::{Abandon, IdempotencyBegin, RequestFingerprint, StoredResponse};
use crate::job::{Enqueued, FinishItem, Job, JobStatus, JobSummary, NewJob, Transition, WorkerId};
use crate::key::{ApiKey, KeyDigest, NewKey};
use crate::ledger::{
    BALANCE_MAX, Credits, DAY_MS, DailyUsage, DayRange, EntryKind, Hold, IdempotencyKey,
    LedgerEntry, LedgerOp, LedgerReceipt, LedgerRequest, LedgerTotals,
};
use crate::org::{Email, Member, Organization, Removal, Role, RoleChange, User};
use crate::page::{Page, PageLimit};
use crate::store::{
    AccountStore, AuditStore, GenerationStore, IdempotencyStore, JobStore, KeyQuery, KeyStore,
    KeyUsage, LedgerStore, OrgStore,
};

/// A store that keeps everything in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation below validates before it writes, so a panic cannot leave a half-applied
        // change behind; the state under a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, User>,
    user_by_email: HashMap<Email, UserId>,
    orgs: HashMap<OrgId, Organization>,
    /// (org, user) → their membership; its `seq` (order of joining) answers `first_owner`.
    members: BTreeMap<(OrgId, UserId), Seat>,
    /// (user, org) for every membership: `orgs_of_user` in organization order.
    orgs_by_user: BTreeSet<(UserId, OrgId)>,
    member_seq: u64,
    keys: BTreeMap<KeyId, ApiKey>,
    key_digests: HashMap<KeyDigest, KeyId>,
    balances: HashMap<OrgId, u64>,
    /// The whole ledger; an entry's `seq` is its index + 1.
    entries: Vec<LedgerEntry>,
    entry_ids: HashSet<EntryId>,
    /// (org, idempotency key) → (fingerprint, index in `entries`).
    ledger_keys: HashMap<(OrgId, IdempotencyKey), (String, usize)>,
    holds: HashMap<HoldId, Hold>,
    jobs: BTreeMap<JobId, Job>,
    /// Jobs not yet terminal, in claim order.
    open_jobs: BTreeSet<JobId>,
    job_keys: HashMap<(OrgId, IdempotencyKey), JobId>,
    /// The audit log in `seq` order, each event with its chain link.
    audit: Vec<(AuditRecord, ChainLink)>,
    chain: ChainHead,
    /// The last event a purge deleted, which the chain's anchor names.
    anchor: Option<(AuditRecord, ChainLink)>,
    requests: HashMap<(OrgId, IdempotencyKey), RequestSlot>,
    generations: HashMap<GenerationId, GenerationRecord>,
    passwords: HashMap<UserId, PasswordHash>,
    sessions: HashMap<SessionDigest, Session>,
}

/// One membership.
#[derive(Debug, Clone, Copy)]
struct Seat {
    role: Role,
    seq: u64,
    joined_at: Option<Timestamp>,
}

#[derive(Debug)]
struct RequestSlot {
    fingerprint: RequestFingerprint,
    attempt: AttemptId,
    created_at: Timestamp,
    locked_until: Option<Timestamp>,
    response: Option<StoredResponse>,
}

fn conflict(what: &str) -> Error {
    Error::store(StoreErrorKind::Conflict, format!("{what} already exists"))
}

impl State {
    fn seat(&self, org: OrgId, user: UserId) -> Option<Seat> {
        self.members.get(&(org, user)).copied()
    }

    fn owners(&self, org: OrgId) -> u64 {
        self.members
            .range((org, UserId::from_uuid(uuid::Uuid::nil()))..)
            .take_while(|((o, _), _)| *o == org)
            .filter(|(_, seat)| seat.role == Role::Owner)
            .count() as u64
    }

    fn member(&self, org: OrgId, user: UserId) -> Option<Member> {
        let seat = self.seat(org, user)?;
        Some(Member {
            user: self.users.get(&user)?.clone(),
            role: seat.role,
            joined_at: seat.joined_at,
        })
    }

    fn append_audit(&mut self, event: &AuditEvent) {
        for l in audit_chain::link(&mut self.chain, std::slice::from_ref(event)) {
            let record = AuditRecord {
                seq: l.seq,
                event: event.clone(),
            };
            self.audit.push((record, l));
        }
    }

    fn replay(&self, index: usize) -> LedgerReceipt {
        let entry = self.entries[index].clone();
        let hold = entry.hold.and_then(|h| self.holds.get(&h).cloned());
        LedgerReceipt {
            entry,
            hold,
            replayed: true,
        }
    }

    /// Applies one ledger request: every check first, then every write.
    fn apply(&mut self, req: &LedgerRequest) -> Result<LedgerReceipt> {
        let fingerprint = req.op.fingerprint();
        let idem = (req.org, req.idempotency_key.clone());
        if let Some((seen, index)) = self.ledger_keys.get(&idem) {
            if *seen != fingerprint {
                return Err(Error::IdempotencyConflict);
            }
            return Ok(self.replay(*index));
        }
        if self.entry_ids.contains(&req.entry_id) {
            return Err(conflict("ledger entry"));
        }
        let balance = self.balances.get(&req.org).copied().unwrap_or(0);
        let mut hold_after: Option<Hold> = None;
        let (delta, amount, job): (i64, u64, Option<JobId>) = match req.op {
            LedgerOp::Grant { amount } => {
                if balance + amount.get() > BALANCE_MAX {
                    return Err(Error::LimitExceeded {
                        what: "balance",
                        max: BALANCE_MAX,
                    });
                }
                (amount.signed(), amount.get(), None)
            }
            LedgerOp::Debit { amount } => {
                if amount.get() > balance {
                    return Err(Error::InsufficientCredits {
                        needed: amount.get(),
                        available: balance,
                    });
                }
                (-amount.signed(), amount.get(), None)
            }
            LedgerOp::Reserve { amount, job } => {
                if amount.get() > balance {
                    return Err(Error::InsufficientCredits {
                        needed: amount.get(),
                        available: balance,
                    });
                }
                let id = HoldId::from_uuid(req.entry_id.as_uuid());
                if self.holds.contains_key(&id) {
                    return Err(conflict("hold"));
                }
                hold_after = Some(Hold {
                    id,
                    org: req.org,
                    job,
                    amount,
                    captured: Credits::ZERO,
                    released: Credits::ZERO,
                    created_at: req.at,
                    closed_at: None,
                });
                (-amount.signed(), amount.get(), job)
            }
            LedgerOp::Capture { hold, amount } => {
                let mut h = self.org_hold(req.org, hold)?;
                h.check_take(amount.get())?;
                h.captured = Credits::new(h.captured.get() + amount.get())?;
                let job = h.job;
                hold_after = Some(h);
                (0, amount.get(), job)
            }
            LedgerOp::Release { hold, amount } => {
                let mut h = self.org_hold(req.org, hold)?;
                let take = amount.map_or(h.remaining(), Credits::get);
                h.check_take(take)?;
                h.released = Credits::new(h.released.get() + take)?;
                if amount.is_none() {
                    h.closed_at = Some(req.at);
                }
                let job = h.job;
                hold_after = Some(h);
                (i64::try_from(take).unwrap_or(i64::MAX), take, job)
            }
        };
        let new_balance = u64::try_from(i64::try_from(balance).unwrap_or(i64::MAX) + delta)
            .map_err(|_| Error::InvalidState("the balance would become negative"))?;
        let entry = LedgerEntry {
            seq: self.entries.len() as u64 + 1,
            id: req.entry_id,
            org: req.org,
            kind: req.op.kind(),
            delta,
            amount: Credits::new(amount)?,
            balance_after: Credits::new(new_balance)?,
            hold: hold_after.as_ref().map(|h| h.id),
            job,
            idempotency_key: req.idempotency_key.clone(),
            created_at: req.at,
        };
        // All checks passed: write.
        self.balances.insert(req.org, new_balance);
        self.entry_ids.insert(req.entry_id);
        self.ledger_keys
            .insert(idem, (fingerprint, self.entries.len()));
        self.entries.push(entry.clone());
        if let Some(h) = &hold_after {
            self.holds.insert(h.id, h.clone());
        }
        Ok(LedgerReceipt {
            entry,
            hold: hold_after,
            replayed: false,
        })
    }

    fn org_hold(&self, org: OrgId, id: HoldId) -> Result<Hold> {
        self.holds
            .get(&id)
            .filter(|h| h.org == org)
            .cloned()
            .ok_or(Error::NotFound { resource: "hold" })
    }

    fn job(&self, id: JobId) -> Result<&Job> {
        self.jobs
            .get(&id)
            .ok_or(Error::NotFound { resource: "job" })
    }

    fn leased_job(&self, id: JobId, worker: &WorkerId) -> Result<Job> {
        let job = self.job(id)?;
        job.check_lease(worker)?;
        Ok(job.clone())
    }

    /// The job's hold, for the job's decisions.
    fn hold_of(&self, job: &Job) -> Option<&Hold> {
        job.hold.and_then(|id| self.holds.get(&id))
    }

    /// Writes what `Job::cancel`, `Job::complete` or `Job::hand_back` decided: the hold's
    /// closing release, then the job (its items included). The job as it is now.
    fn write_transition(&mut self, t: Transition) -> Result<Job> {
        if let Some(close) = &t.close {
            self.apply(close)?;
        }
        self.store_job(t.job.clone());
        Ok(t.job)
    }

    fn store_job(&mut self, job: Job) {
        if job.status.is_terminal() {
            self.open_jobs.remove(&job.id);
        }
        self.jobs.insert(job.id, job);
    }
}

#[async_trait]
impl OrgStore for MemoryStore {
    async fn upsert_user(&self, user: &User) -> Result<User> {
        let mut s = self.lock();
        if let Some(id) = s.user_by_email.get(&user.email)
            && let Some(existing) = s.users.get(id)
        {
            return Ok(existing.clone());
        }
        if s.users.contains_key(&user.id) {
            return Err(conflict("user"));
        }
        s.user_by_email.insert(user.email.clone(), user.id);
        s.users.insert(user.id, user.clone());
        Ok(user.clone())
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>> {
        let s = self.lock();
        Ok(s.user_by_email
            .get(email)
            .and_then(|id| s.users.get(id))
            .cloned())
    }

    async fn create_org(
        &self,
        org: &Organization,
        owner: UserId,
        owned_max: u64,
        audit: &AuditEvent,
    ) -> Result<()> {
        let mut s = self.lock();
        if s.orgs.contains_key(&org.id) {
            return Err(conflict("organization"));
        }
        if !s.users.contains_key(&owner) {
            return Err(Error::NotFound { resource: "user" });
        }
        let owned = s
            .members
            .iter()
            .filter(|((_, user), seat)| *user == owner && seat.role == Role::Owner)
            .count();
        if owned as u64 >= owned_max {
            return Err(Error::LimitExceeded {
                what: "organizations owned per user",
                max: owned_max,
            });
        }
        s.orgs.insert(org.id, org.clone());
        s.member_seq += 1;
        let seq = s.member_seq;
        s.members.insert(
            (org.id, owner),
            Seat {
                role: Role::Owner,
                seq,
                joined_at: Some(org.created_at),
            },
        );
        s.orgs_by_user.insert((owner, org.id));
        s.append_audit(audit);
        Ok(())
    }

    async fn org(&self, id: OrgId) -> Result<Option<Organization>> {
        Ok(self.lock().orgs.get(&id).cloned())
    }

    async fn set_role(&self, change: &RoleChange, audit: &AuditEvent) -> Result<Member> {
        let mut s = self.lock();
        if !s.orgs.contains_key(&change.org) {
            return Err(Error::NotFound {
                resource: "organization",
            });
        }
        let Some(user) = s.users.get(&change.user).cloned() else {
            return Err(Error::NotFound { resource: "user" });
        };
        let current = s.seat(change.org, change.user).map(|seat| seat.role);
        let actor = change
            .by
            .and_then(|(by, _)| s.seat(change.org, by))
            .map(|seat| seat.role);
        change.check(current, actor, s.owners(change.org))?;
        s.member_seq += 1;
        let seq = s.member_seq;
        let seat = s.members.entry((change.org, change.user)).or_insert(Seat {
            role: change.role,
            seq,
            joined_at: Some(change.at),
        });
        seat.role = change.role;
        let member = Member {
            user,
            role: seat.role,
            joined_at: seat.joined_at,
        };
        s.orgs_by_user.insert((change.user, change.org));
        s.append_audit(audit);
        Ok(member)
    }

    async fn remove_member(&self, removal: &Removal, audit: &AuditEvent) -> Result<Option<Member>> {
        let mut s = self.lock();
        let Some(member) = s.member(removal.org, removal.user) else {
            return Ok(None);
        };
        let actor = removal
            .by
            .and_then(|(by, _)| s.seat(removal.org, by))
            .map(|seat| seat.role);
        removal.check(Some(member.role), actor, s.owners(removal.org))?;
        s.members.remove(&(removal.org, removal.user));
        s.orgs_by_user.remove(&(removal.user, removal.org));
        s.append_audit(audit);
        Ok(Some(member))
    }

    async fn orgs_of_user(
        &self,
        user: UserId,
        after: Option<OrgId>,
        limit: PageLimit,
    ) -> Result<Page<(Organization, Role), OrgId>> {
        let s = self.lock();
        let start = after.unwrap_or(OrgId::from_uuid(uuid::Uuid::nil()));
        let items: Vec<(Organization, Role)> = s
            .orgs_by_user
            .range((user, start)..)
            .take_while(|(u, _)| *u == user)
            .filter(|(_, org)| after.is_none_or(|a| *org > a))
            .filter_map(|(_, org)| {
                let seat = s.seat(*org, user)?;
                Some((s.orgs.get(org)?.clone(), seat.role))
            })
            .take(limit.as_usize() + 1)
            .collect();
        Ok(Page::from_overfetch(items, limit, |(o, _)| o.id))
    }

    async fn members(
        &self,
        org: OrgId,
        after: Option<UserId>,
        limit: PageLimit,
    ) -> Result<Page<Member, UserId>> {
        let s = self.lock();
        let start = after.unwrap_or(UserId::from_uuid(uuid::Uuid::nil()));
        let items: Vec<Member> = s
            .members
            .range((org, start)..)
            .take_while(|((o, _), _)| *o == org)
            .filter(|((_, u), _)| after.is_none_or(|a| *u > a))
            .filter_map(|((_, u), _)| s.member(org, *u))
            .take(limit.as_usize() + 1)
            .collect();
        Ok(Page::from_overfetch(items, limit, |m| m.user.id))
    }

    async fn role(&self, org: OrgId, user: UserId) -> Result<Option<Role>> {
        Ok(self.lock().seat(org, user).map(|seat| seat.role))
    }

    async fn first_owner(&self, org: OrgId) -> Result<Option<UserId>> {
        let s = self.lock();
        Ok(s.members
            .range((org, UserId::from_uuid(uuid::Uuid::nil()))..)
            .take_while(|((o, _), _)| *o == org)
            .filter(|(_, seat)| seat.role == Role::Owner)
            .min_by_key(|(_, seat)| seat.seq)
            .map(|((_, u), _)| *u))
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert_key(&self, new: &NewKey, audit: &AuditEvent) -> Result<()> {
        let mut s = self.lock();
        if s.keys.contains_key(&new.key.id) || s.key_digests.contains_key(&new.digest) {
            return Err(conflict("key"));
        }
        if !s.orgs.contains_key(&new.key.org) {
            return Err(Error::NotFound {
                resource: "organization",
            });
        }
        let active = s
            .keys
            .values()
            .filter(|k| k.org == new.key.org && k.deleted_at.is_none())
            .count();
        if active as u64 >= new.active_max {
            return Err(Error::LimitExceeded {
                what: "active keys per organization",
                max: new.active_max,
            });
        }
        s.key_digests.insert(new.digest, new.key.id);
        s.keys.insert(new.key.id, new.key.clone());
        s.append_audit(audit);
        Ok(())
    }

    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<ApiKey>> {
        let s = self.lock();
        Ok(s.key_digests
            .get(digest)
            .and_then(|id| s.keys.get(id))
            .cloned())
    }

    async fn key(&self, org: OrgId, id: KeyId) -> Result<Option<ApiKey>> {
        Ok(self.lock().keys.get(&id).filter(|k| k.org == org).cloned())
    }

    async fn key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>> {
        Ok(self.lock().keys.get(&id).cloned())
    }

    async fn list_keys(&self, org: OrgId, q: &KeyQuery) -> Result<Page<ApiKey, KeyId>> {
        let s = self.lock();
        let start = q
            .after
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let items: Vec<ApiKey> = s
            .keys
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, k)| k)
            .filter(|k| k.org == org && (q.include_deleted || k.deleted_at.is_none()))
            .take(q.limit.as_usize() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, q.limit, |k| k.id))
    }

    async fn count_active_keys(&self, org: OrgId) -> Result<u64> {
        let s = self.lock();
        Ok(s.keys
            .values()
            .filter(|k| k.org == org && k.deleted_at.is_none())
            .count() as u64)
    }

    async fn delete_key(
        &self,
        org: OrgId,
        id: KeyId,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<ApiKey>> {
        let mut s = self.lock();
        let Some(key) = s.keys.get_mut(&id).filter(|k| k.org == org) else {
            return Ok(None);
        };
        if key.deleted_at.is_some() {
            return Ok(Some(key.clone()));
        }
        key.deleted_at = Some(at);
        let key = key.clone();
        s.append_audit(audit);
        Ok(Some(key))
    }

    async fn record_key_usage(&self, usage: &[KeyUsage]) -> Result<()> {
        let mut s = self.lock();
        for u in usage {
            let Some(key) = s.keys.get_mut(&u.key).filter(|k| k.org == u.org) else {
                continue;
            };
            key.last_used_at = Some(
                key.last_used_at
                    .map_or(u.last_used_at, |t| t.max(u.last_used_at)),
            );
            let event = AuditEvent::new(
                u.audit_id,
                u.org,
                u.last_used_at,
                AuditAction::KeyUsed,
                Actor::Key(u.key),
                &RequestContext::default(),
            )
            .with_key(u.key, u.prefix);
            s.append_audit(&event);
        }
        Ok(())
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn apply(
        &self,
        request: &LedgerRequest,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt> {
        let mut s = self.lock();
        let receipt = s.apply(request)?;
        if let Some(event) = audit
            && !receipt.replayed
        {
            s.append_audit(event);
        }
        Ok(receipt)
    }

    async fn balance(&self, org: OrgId) -> Result<Credits> {
        Credits::new(self.lock().balances.get(&org).copied().unwrap_or(0))
    }

    async fn hold(&self, org: OrgId, id: HoldId) -> Result<Option<Hold>> {
        Ok(self.lock().holds.get(&id).filter(|h| h.org == org).cloned())
    }

    async fn stale_holds(&self, before: Timestamp, limit: PageLimit) -> Result<Vec<Hold>> {
        let s = self.lock();
        let mut stale: Vec<Hold> = s
            .holds
            .values()
            .filter(|h| {
                h.job.is_none()
                    && h.closed_at.is_none()
                    && h.remaining() > 0
                    && h.created_at < before
            })
            .cloned()
            .collect();
        stale.sort_by_key(|h| (h.created_at, h.id.as_uuid()));
        stale.truncate(limit.as_usize());
        Ok(stale)
    }

    async fn entries(
        &self,
        org: OrgId,
        after: Option<u64>,
        limit: PageLimit,
    ) -> Result<Page<LedgerEntry, u64>> {
        let s = self.lock();
        let skip = usize::try_from(after.unwrap_or(0)).unwrap_or(usize::MAX);
        let items: Vec<LedgerEntry> = s
            .entries
            .iter()
            .skip(skip)
            .filter(|e| e.org == org)
            .take(limit.as_usize() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, limit, |e| e.seq))
    }

    async fn held(&self, org: OrgId) -> Result<Credits> {
        let s = self.lock();
        let held = s
            .holds
            .values()
            .filter(|h| h.org == org && h.closed_at.is_none())
            .map(Hold::remaining)
            .sum();
        Credits::new(held)
    }

    async fn usage(&self, org: OrgId, range: &DayRange) -> Result<Vec<DailyUsage>> {
        let s = self.lock();
        let mut days: BTreeMap<i64, [u64; 3]> = BTreeMap::new();
        for e in s
            .entries
            .iter()
            .filter(|e| e.org == org && e.created_at >= range.start() && e.created_at < range.end())
        {
            let day = days
                .entry(e.created_at.unix_ms().div_euclid(DAY_MS))
                .or_default();
            match e.kind {
                EntryKind::Capture | EntryKind::Debit => day[0] += e.amount.get(),
                EntryKind::Grant => day[1] += e.amount.get(),
                EntryKind::Release => day[2] += e.amount.get(),
                EntryKind::Hold => {}
            }
        }
        days.into_iter()
            .map(|(day, [spent, granted, released])| {
                Ok(DailyUsage {
                    day: Timestamp::from_unix_ms(day * DAY_MS),
                    spent: Credits::new(spent)?,
                    granted: Credits::new(granted)?,
                    released: Credits::new(released)?,
                })
            })
            .collect()
    }

    async fn ledger_totals(
        &self,
        after: Option<OrgId>,
        limit: PageLimit,
    ) -> Result<Page<LedgerTotals, OrgId>> {
        let s = self.lock();
        let past = |org: &OrgId| after.is_none_or(|a| *org > a);
        let mut totals: BTreeMap<OrgId, (i64, u64)> = s
            .balances
            .keys()
            .filter(|org| past(org))
            .map(|org| (*org, (0, 0)))
            .collect();
        for e in s.entries.iter().filter(|e| past(&e.org)) {
            let t = totals.entry(e.org).or_default();
            t.0 += e.delta;
            t.1 += 1;
        }
        let items = totals
            .into_iter()
            .take(limit.as_usize() + 1)
            .map(|(org, (entries_sum, entries))| {
                Ok(LedgerTotals {
                    org,
                    balance: Credits::new(s.balances.get(&org).copied().unwrap_or(0))?,
                    entries_sum,
                    entries,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |t| t.org))
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn enqueue(&self, new: &NewJob) -> Result<Enqueued> {
        let mut s = self.lock();
        let idem = (new.org, new.idempotency_key.clone());
        if let Some(id) = s.job_keys.get(&idem) {
            let job = s
                .jobs
                .get(id)
                .cloned()
                .ok_or(Error::NotFound { resource: "job" })?;
            if !new.matches(&job) {
                return Err(Error::IdempotencyConflict);
            }
            let hold = job.hold.and_then(|h| s.holds.get(&h).cloned());
            let balance = match job.hold {
                Some(h) => s
                    .entries
                    .iter()
                    .find(|e| e.kind == EntryKind::Hold && e.hold == Some(h))
                    .map(|e| e.balance_after),
                None => None,
            };
            let balance = match balance {
                Some(b) => b,
                None => Credits::new(s.balances.get(&new.org).copied().unwrap_or(0))?,
            };
            return Ok(Enqueued {
                job,
                hold,
                balance,
                replayed: true,
            });
        }
        new.validate()?;
        if s.jobs.contains_key(&new.id) {
            return Err(conflict("job"));
        }
        if !s.orgs.contains_key(&new.org) {
            return Err(Error::NotFound {
                resource: "organization",
            });
        }
        let (hold, balance) = match new.reserve_request()? {
            Some(reserve) => {
                let receipt = s.apply(&reserve)?;
                (receipt.hold, receipt.entry.balance_after)
            }
            None => (
                None,
                Credits::new(s.balances.get(&new.org).copied().unwrap_or(0))?,
            ),
        };
        let job = new.to_job(hold.as_ref().map(|h| h.id));
        s.job_keys.insert(idem, job.id);
        s.open_jobs.insert(job.id);
        s.jobs.insert(job.id, job.clone());
        Ok(Enqueued {
            job,
            hold,
            balance,
            replayed: false,
        })
    }

    async fn job(&self, org: OrgId, id: JobId) -> Result<Option<Job>> {
        Ok(self.lock().jobs.get(&id).filter(|j| j.org == org).cloned())
    }

    async fn list_jobs(
        &self,
        org: OrgId,
        after: Option<JobId>,
        limit: PageLimit,
    ) -> Result<Page<JobSummary, JobId>> {
        let s = self.lock();
        let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let items: Vec<JobSummary> = s
            .jobs
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, j)| j)
            .filter(|j| j.org == org)
            .take(limit.as_usize() + 1)
            .map(JobSummary::of)
            .collect();
        Ok(Page::from_overfetch(items, limit, |j| j.id))
    }

    async fn count_queued_jobs(&self, max: PageLimit) -> Result<u64> {
        let s = self.lock();
        let queued = s
            .open_jobs
            .iter()
            .filter(|id| {
                s.jobs
                    .get(id)
                    .is_some_and(|j| j.status == JobStatus::Queued)
            })
            .take(max.as_usize())
            .count();
        Ok(u64::try_from(queued).unwrap_or(u64::MAX))
    }

    async fn claim_job(
        &self,
        worker: &WorkerId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Job>> {
        let mut s = self.lock();
        // Organizations take turns: fewest jobs running under a live lease first, then oldest.
        let mut running: HashMap<OrgId, usize> = HashMap::new();
        for job in s.open_jobs.iter().filter_map(|id| s.jobs.get(id)) {
            if job.status == JobStatus::Running && !job.is_claimable(now) {
                *running.entry(job.org).or_default() += 1;
            }
        }
        let found = s
            .open_jobs
            .iter()
            .filter_map(|id| s.jobs.get(id))
            .filter(|j| j.is_claimable(now))
            .min_by_key(|j| (running.get(&j.org).copied().unwrap_or(0), j.id))
            .map(|j| j.id);
        let Some(id) = found else { return Ok(None) };
        let Some(job) = s.jobs.get_mut(&id) else {
            return Ok(None);
        };
        job.status = JobStatus::Running;
        job.lease = Some(crate::job::Lease {
            worker: worker.clone(),
            expires_at: lease_until,
        });
        job.attempts = job.attempts.saturating_add(1);
        job.updated_at = now;
        Ok(Some(job.clone()))
    }

    async fn renew_lease(
        &self,
        id: JobId,
        worker: &WorkerId,
        lease_until: Timestamp,
    ) -> Result<Job> {
        let mut s = self.lock();
        let mut job = s.leased_job(id, worker)?;
        if let Some(lease) = job.lease.as_mut() {
            lease.expires_at = lease_until;
        }
        s.store_job(job.clone());
        Ok(job)
    }

    async fn release_lease(&self, id: JobId, worker: &WorkerId, at: Timestamp) -> Result<Job> {
        let mut s = self.lock();
        let transition = s.job(id)?.hand_back(worker, at)?;
        s.write_transition(transition)
    }

    async fn finish_item(&self, report: &FinishItem) -> Result<Job> {
        let mut s = self.lock();
        let mut job = s.leased_job(report.job, &report.worker)?;
        let Some(index) = report.pending_index(&job)? else {
            return Ok(job);
        };
        if let Some(request) = report.ledger_request(&job) {
            s.apply(&request)?;
        }
        report.apply_to(&mut job, index);
        s.store_job(job.clone());
        Ok(job)
    }

    async fn complete_job(
        &self,
        id: JobId,
        worker: &WorkerId,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Result<Job> {
        let mut s = self.lock();
        let job = s.job(id)?;
        let transition = job.complete(worker, s.hold_of(job), entry_id, at)?;
        s.write_transition(transition)
    }

    async fn cancel_job(
        &self,
        org: OrgId,
        id: JobId,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Result<Job> {
        let mut s = self.lock();
        let job = s
            .jobs
            .get(&id)
            .filter(|j| j.org == org)
            .ok_or(Error::NotFound { resource: "job" })?;
        match job.cancel(s.hold_of(job), entry_id, at)? {
            Some(transition) => s.write_transition(transition),
            None => Ok(job.clone()),
        }
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        let mut s = self.lock();
        for e in events {
            s.append_audit(e);
        }
        Ok(())
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Page<AuditRecord, u64>> {
        let s = self.lock();
        let items: Vec<AuditRecord> = s
            .audit
            .iter()
            .map(|(r, _)| r)
            .filter(|r| q.matches(r.seq, &r.event))
            .take(q.limit.as_usize() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, q.limit, |r| r.seq))
    }

    async fn purge_audit_before(&self, cutoff: Timestamp) -> Result<u64> {
        let mut s = self.lock();
        let upto = audit_chain::purge_prefix(
            s.audit
                .iter()
                .map(|(r, l)| (r.seq, r.event.at < cutoff, Some(&l.hash.as_bytes()[..]))),
        );
        let Some((seq, hash)) = upto else {
            return Ok(0);
        };
        let n = s.audit.partition_point(|(r, _)| r.seq <= seq);
        let anchor = s.audit.drain(..n).next_back();
        s.anchor = anchor;
        s.chain.anchor_seq = seq;
        s.chain.anchor_hash = hash.unwrap_or(AuditHash::GENESIS);
        Ok(n as u64)
    }

    async fn audit_chain_head(&self) -> Result<ChainHead> {
        Ok(self.lock().chain)
    }

    async fn audit_chain_anchor(&self) -> Result<Option<ChainRow>> {
        Ok(self
            .lock()
            .anchor
            .as_ref()
            .map(|(r, l)| ChainRow::of(r.clone(), *l)))
    }

    async fn audit_chain(&self, after: u64, limit: PageLimit) -> Result<Vec<ChainRow>> {
        let s = self.lock();
        let start = s.audit.partition_point(|(r, _)| r.seq <= after);
        Ok(s.audit[start..]
            .iter()
            .take(limit.as_usize())
            .map(|(r, l)| ChainRow::of(r.clone(), *l))
            .collect())
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn begin_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        fingerprint: RequestFingerprint,
        attempt: AttemptId,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> Result<IdempotencyBegin> {
        let mut s = self.lock();
        let slot = s.requests.entry((org, key.clone())).or_insert(RequestSlot {
            fingerprint,
            attempt,
            created_at: now,
            locked_until: None,
            response: None,
        });
        if slot.fingerprint != fingerprint {
            return Ok(IdempotencyBegin::Mismatch);
        }
        if let Some(response) = &slot.response {
            return Ok(IdempotencyBegin::Replay(response.clone()));
        }
        if slot.locked_until.is_some_and(|until| until > now) {
            return Ok(IdempotencyBegin::InProgress);
        }
        slot.locked_until = Some(lock_until);
        Ok(IdempotencyBegin::Started {
            attempt: Some(slot.attempt),
        })
    }

    async fn complete_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        response: &StoredResponse,
        _at: Timestamp,
    ) -> Result<()> {
        if response.body.len() > crate::idempotency::RESPONSE_MAX_BYTES {
            return Err(Error::LimitExceeded {
                what: "stored response size",
                max: crate::idempotency::RESPONSE_MAX_BYTES as u64,
            });
        }
        let mut s = self.lock();
        let slot = s
            .requests
            .get_mut(&(org, key.clone()))
            .ok_or(Error::NotFound {
                resource: "idempotency record",
            })?;
        slot.locked_until = None;
        slot.response = Some(response.clone());
        Ok(())
    }

    async fn renew_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        attempt: AttemptId,
        lock_until: Timestamp,
    ) -> Result<bool> {
        let mut s = self.lock();
        match s.requests.get_mut(&(org, key.clone())) {
            Some(r) if r.attempt == attempt && r.response.is_none() => {
                r.locked_until = Some(lock_until);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn abandon_request(&self, org: OrgId, key: &IdempotencyKey, how: Abandon) -> Result<()> {
        let mut s = self.lock();
        let idem = (org, key.clone());
        match (s.requests.get_mut(&idem), how) {
            (Some(r), Abandon::Unsettled) if r.response.is_none() => r.locked_until = None,
            (Some(r), Abandon::Settled) if r.response.is_none() => {
                s.requests.remove(&idem);
            }
            _ => {}
        }
        Ok(())
    }

    async fn purge_requests_before(&self, cutoff: Timestamp) -> Result<u64> {
        let mut s = self.lock();
        let before = s.requests.len();
        s.requests.retain(|_, r| r.created_at >= cutoff);
        Ok((before - s.requests.len()) as u64)
    }
}

#[async_trait]
impl GenerationStore for MemoryStore {
    async fn insert_generation(&self, record: &GenerationRecord) -> Result<GenerationRecord> {
        let mut state = self.lock();
        let stored = state
            .generations
            .entry(record.id)
            .or_insert_with(|| record.clone());
        if stored.org != record.org {
            return Err(conflict("generation"));
        }
        Ok(stored.clone())
    }

    async fn generation(&self, org: OrgId, id: GenerationId) -> Result<Option<GenerationRecord>> {
        Ok(self
            .lock()
            .generations
            .get(&id)
            .filter(|g| g.org == org)
            .cloned())
    }
}

#[async_trait]
impl crate::store::SchemaStore for MemoryStore {
    async fn pending_migrations(&self) -> Result<u32> {
        Ok(0)
    }
}

#[async_trait]
impl AccountStore for MemoryStore {
    async fn set_password(&self, user: UserId, hash: &PasswordHash, _at: Timestamp) -> Result<()> {
        let mut s = self.lock();
        if !s.users.contains_key(&user) {
            return Err(Error::NotFound { resource: "user" });
        }
        s.passwords.insert(user, hash.clone());
        s.sessions.retain(|_, session| session.user != user);
        Ok(())
    }

    async fn credentials(&self, email: &Email) -> Result<Option<(User, PasswordHash)>> {
        let s = self.lock();
        let Some(user) = s.user_by_email.get(email).and_then(|id| s.users.get(id)) else {
            return Ok(None);
        };
        Ok(s.passwords.get(&user.id).map(|h| (user.clone(), h.clone())))
    }

    async fn insert_session(&self, session: &Session, per_user_max: u32) -> Result<()> {
        let mut s = self.lock();
        if !s.users.contains_key(&session.user) {
            return Err(Error::NotFound { resource: "user" });
        }
        if s.sessions.contains_key(&session.digest) {
            return Err(conflict("session"));
        }
        s.sessions.insert(session.digest, session.clone());
        let mut mine: Vec<(Timestamp, SessionDigest)> = s
            .sessions
            .values()
            .filter(|x| x.user == session.user)
            .map(|x| (x.created_at, x.digest))
            .collect();
        let max = per_user_max.max(1) as usize;
        if mine.len() > max {
            mine.sort_by_key(|(at, d)| (*at, *d.as_bytes()));
            for (_, digest) in &mine[..mine.len() - max] {
                s.sessions.remove(digest);
            }
        }
        Ok(())
    }

    async fn session(&self, digest: &SessionDigest) -> Result<Option<Session>> {
        Ok(self.lock().sessions.get(digest).cloned())
    }

    async fn touch_session(&self, digest: &SessionDigest, at: Timestamp) -> Result<()> {
        if let Some(session) = self.lock().sessions.get_mut(digest) {
            session.last_seen_at = session.last_seen_at.max(at);
        }
        Ok(())
    }

    async fn delete_session(&self, digest: &SessionDigest) -> Result<bool> {
        Ok(self.lock().sessions.remove(digest).is_some())
    }

    async fn purge_sessions(&self, now: Timestamp, idle_cutoff: Timestamp) -> Result<u64> {
        let mut s = self.lock();
        let before = s.sessions.len();
        s.sessions
            .retain(|_, x| x.expires_at > now && x.last_seen_at >= idle_cutoff);
        Ok((before - s.sessions.len()) as u64)
    }
}
