//! The store traits: everything creapic persists, grouped by what each trait owns.
//!
//! Backends implement all of them ([`Store`] is the union): the in-memory store here, SQLite and
//! PostgreSQL in their own modules. The contract every backend must honour is written down once,
//! as the conformance suite in `testing::conformance`, and each backend's tests run it unchanged.
//!
//! Design decisions shared by every method:
//! - **Callers choose ids and timestamps.** A store never reads a clock or invents an id, so the
//!   core stays deterministic and a retried call carries the same ids.
//! - **Money moves atomically.** Every credit change is one conditional write plus its ledger entry
//!   in one transaction; a refused change writes nothing. No method reads a balance and then writes.
//! - **Tenancy is in the signature.** Methods that read or change an organization's resource take
//!   the organization and answer "not found" for another organization's resource.
//! - **Idempotent by id.** A record keyed by an id the caller derived (a generation's is its
//!   hold's) is inserted at most once; a repeat returns the stored one.
//! - **Audit rides along.** A change that must be audited takes its [`AuditEvent`] and commits it in
//!   the same transaction, linked into the audit hash chain ([`crate::audit_chain`]) as the last
//!   write of that transaction.

use async_trait::async_trait;

use crate::account::{PasswordHash, Session, SessionDigest};
use crate::audit::{AuditEvent, AuditQuery, AuditRecord};
use crate::audit_chain::{ChainHead, ChainRow};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::generation::GenerationRecord;
use crate::id::{AttemptId, AuditId, EntryId, GenerationId, JobId, KeyId, OrgId, UserId};
use crate::idempotency::{Abandon, IdempotencyBegin, RequestFingerprint, StoredResponse};
use crate::job::{Enqueued, FinishItem, Job, JobSummary, WorkerId};
use crate::key::{ApiKey, KeyDigest, KeyPrefix, NewKey};
use crate::ledger::{
    Credits, DailyUsage, DayRange, Hold, IdempotencyKey, LedgerEntry, LedgerReceipt, LedgerRequest,
    LedgerTotals,
};
use crate::org::{Email, Member, Organization, Removal, Role, RoleChange, User};
use crate::page::{Page, PageLimit};

mod connect;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod group_commit;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use connect::{ConnectOptions, connect};

/// Users, organizations and memberships.
#[async_trait]
pub trait OrgStore: Send + Sync {
    /// Inserts `user`, or returns the existing user with the same e-mail unchanged.
    async fn upsert_user(&self, user: &User) -> Result<User>;
    /// A user by id.
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    /// A user by e-mail.
    async fn user_by_email(&self, email: &Email) -> Result<Option<User>>;
    /// Creates `org` with `owner` as its owner, and appends `audit`, atomically — unless
    /// `owner` already owns `owned_max` organizations: `LimitExceeded`, nothing written (the
    /// count and the insert are one transaction holding the owner's row).
    async fn create_org(
        &self,
        org: &Organization,
        owner: UserId,
        owned_max: u64,
        audit: &AuditEvent,
    ) -> Result<()>;
    /// An organization by id.
    async fn org(&self, id: OrgId) -> Result<Option<Organization>>;
    /// Sets a user's role in an organization — adding them (joined at `change.at`) when
    /// `change.from` is `None` — and appends `audit`, atomically, after checking in the same
    /// transaction, with the organization's row locked, what
    /// [`RoleChange::check`] checks: the acting person still has the role they were authorized
    /// with, the target still has `change.from` (`AlreadyMember`, `NotFound { member }` or
    /// `InvalidState` otherwise), and the organization keeps an owner (`LastOwner`: the owners
    /// are counted under that lock, so two owners demoting each other at once leave one).
    /// `NotFound` for an unknown organization or user. A refused change writes nothing.
    async fn set_role(&self, change: &RoleChange, audit: &AuditEvent) -> Result<Member>;
    /// Removes a member and appends `audit`, atomically, with the checks of
    /// [`Removal::check`] made in the same transaction under the organization's row lock (the
    /// last owner is never removed: `LastOwner`). The removed member, or `None` when the user is
    /// not a member of `org` (nothing written). The user and the keys they created stay.
    async fn remove_member(&self, removal: &Removal, audit: &AuditEvent) -> Result<Option<Member>>;
    /// The organizations `user` belongs to, with their role in each, by organization id (which
    /// sorts by creation time), after the cursor `after`.
    async fn orgs_of_user(
        &self,
        user: UserId,
        after: Option<OrgId>,
        limit: PageLimit,
    ) -> Result<Page<(Organization, Role), OrgId>>;
    /// The members of `org` by user id (which sorts by the user's creation time), after the
    /// cursor `after`; an empty page for an unknown organization.
    async fn members(
        &self,
        org: OrgId,
        after: Option<UserId>,
        limit: PageLimit,
    ) -> Result<Page<Member, UserId>>;
    /// A user's role in an organization, if they are a member.
    async fn role(&self, org: OrgId, user: UserId) -> Result<Option<Role>>;
    /// The earliest owner of an organization (keys created by the operator are attributed to it).
    async fn first_owner(&self, org: OrgId) -> Result<Option<UserId>>;
}

/// One key's usage, for the coalesced last-used flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// The key.
    pub key: KeyId,
    /// Its organization.
    pub org: OrgId,
    /// Its display prefix (for the audit event).
    pub prefix: KeyPrefix,
    /// The latest use seen.
    pub last_used_at: Timestamp,
    /// The id of the `key.used` audit event this usage records.
    pub audit_id: AuditId,
}

/// Which keys a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyQuery {
    /// Include soft-deleted keys.
    pub include_deleted: bool,
    /// Keys after this id (ids sort by creation time).
    pub after: Option<KeyId>,
    /// Page size.
    pub limit: PageLimit,
}

/// API key records. Stores see digests, never secrets.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a key and appends `audit`, atomically. A duplicate id or digest is a
    /// `Store { kind: Conflict }` error.
    async fn insert_key(&self, key: &NewKey, audit: &AuditEvent) -> Result<()>;
    /// The key with this digest, deleted or not (the caller decides what a deleted key means).
    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<ApiKey>>;
    /// A key of `org` by id.
    async fn key(&self, org: OrgId, id: KeyId) -> Result<Option<ApiKey>>;
    /// A key by id in any organization. Not tenant-scoped: for the operator of the installation
    /// (the admin CLI), never for a request's caller.
    async fn key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>>;
    /// Keys of `org`, oldest first.
    async fn list_keys(&self, org: OrgId, query: &KeyQuery) -> Result<Page<ApiKey, KeyId>>;
    /// How many keys of `org` are not deleted.
    async fn count_active_keys(&self, org: OrgId) -> Result<u64>;
    /// Soft-deletes a key of `org` at `at` and appends `audit`, atomically. Idempotent: deleting
    /// a deleted key changes nothing, appends nothing and returns the record. `None` when the key
    /// does not exist in `org`.
    async fn delete_key(
        &self,
        org: OrgId,
        id: KeyId,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<ApiKey>>;
    /// Records many keys' last use in one call (one statement in SQL backends): `last_used_at`
    /// becomes the later of the stored and the given time, and one `key.used` audit event is
    /// appended per usage.
    async fn record_key_usage(&self, usage: &[KeyUsage]) -> Result<()>;
}

/// The credit ledger.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Applies one ledger request atomically (see [`crate::ledger::LedgerOp`]), with `audit` in
    /// the same transaction when given. A repeat under the same (organization, idempotency key)
    /// returns the first receipt with `replayed: true`; different parameters are an
    /// `IdempotencyConflict`. A refused request writes nothing.
    async fn apply(
        &self,
        request: &LedgerRequest,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt>;
    /// The balance of `org` (zero for an organization without entries).
    async fn balance(&self, org: OrgId) -> Result<Credits>;
    /// A hold of `org`.
    async fn hold(&self, org: OrgId, id: crate::id::HoldId) -> Result<Option<Hold>>;
    /// Open holds with credits left that no job pays through (those of synchronous requests),
    /// created before `before`, of every organization, oldest first, at most `limit`. A request
    /// whose process died between its reserve and its capture or release leaves one behind;
    /// [`crate::Creapic::release_stale_holds`] gives their credits back.
    async fn stale_holds(&self, before: Timestamp, limit: PageLimit) -> Result<Vec<Hold>>;
    /// Entries of `org` in ledger order, after the cursor `after` (an entry's `seq`).
    async fn entries(
        &self,
        org: OrgId,
        after: Option<u64>,
        limit: PageLimit,
    ) -> Result<Page<LedgerEntry, u64>>;
    /// The credits of `org` in open holds: reserved, neither captured nor released yet (work
    /// running or queued). Zero for an organization without holds.
    async fn held(&self, org: OrgId) -> Result<Credits>;
    /// What the ledger of `org` recorded per UTC day in `range`: one [`DailyUsage`] per day
    /// that has entries, oldest first (days without entries are absent). Summed by the store
    /// over the entries' `created_at`, one query whatever the number of entries.
    async fn usage(&self, org: OrgId, range: &DayRange) -> Result<Vec<DailyUsage>>;
    /// Every organization that has a balance or a ledger entry, in organization id order after
    /// the cursor `after`, each with its balance, the sum of its entries' deltas and their
    /// count ([`LedgerTotals`]), at most `limit`. Summed by the store, one query per page.
    async fn ledger_totals(
        &self,
        after: Option<OrgId>,
        limit: PageLimit,
    ) -> Result<Page<LedgerTotals, OrgId>>;
}

/// Jobs and their items, with the holds that pay for them.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new queued job and reserves `unit_cost × items` as one hold, atomically. Refused
    /// with `InsufficientCredits` (storing nothing) when the balance is short. A repeat under the
    /// same (organization, idempotency key) returns the first job with `replayed: true`; a
    /// different job under the same key is an `IdempotencyConflict`.
    async fn enqueue(&self, job: &crate::job::NewJob) -> Result<Enqueued>;
    /// A job of `org`.
    async fn job(&self, org: OrgId, id: JobId) -> Result<Option<Job>>;
    /// Jobs of `org` without their items, oldest first, after the cursor: each with its
    /// items counted by state (one query for the page, not one per job).
    async fn list_jobs(
        &self,
        org: OrgId,
        after: Option<JobId>,
        limit: PageLimit,
    ) -> Result<Page<JobSummary, JobId>>;
    /// How many jobs are queued (not yet claimed), counting at most `max`: a bounded count for
    /// a queue-depth gauge, cheap enough to run every few seconds.
    async fn count_queued_jobs(&self, max: PageLimit) -> Result<u64>;
    /// Claims a claimable job (queued, or running with an expired lease) for `worker` until
    /// `lease_until`, marking it running and counting the attempt. Organizations take turns:
    /// the job is one of the organization with the fewest jobs running under a live lease (any
    /// worker's), the oldest of those first; so one organization's queue of many jobs never
    /// keeps another's job waiting behind all of it. Two concurrent claims never get the same
    /// job.
    async fn claim_job(
        &self,
        worker: &WorkerId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Job>>;
    /// Extends the lease of a job `worker` holds; `LeaseLost` when it does not.
    async fn renew_lease(
        &self,
        job: JobId,
        worker: &WorkerId,
        lease_until: Timestamp,
    ) -> Result<Job>;
    /// Hands back a job `worker` holds ([`crate::job::Job::hand_back`]): claimable by any runner
    /// at once. `LeaseLost` unless `worker` holds the lease.
    async fn release_lease(&self, job: JobId, worker: &WorkerId, at: Timestamp) -> Result<Job>;
    /// Records how one item ended and, in the same transaction, captures (succeeded) or releases
    /// (failed) its unit cost. An item that already finished is left as it is and the job is
    /// returned unchanged: it is never charged twice. `LeaseLost` unless `worker` holds the lease.
    async fn finish_item(&self, report: &FinishItem) -> Result<Job>;
    /// Ends a job `worker` holds whose items have all finished ([`crate::job::Job::complete`]):
    /// sets its terminal state, clears the lease and releases what is left of its hold (closing
    /// it), atomically.
    async fn complete_job(
        &self,
        job: JobId,
        worker: &WorkerId,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Result<Job>;
    /// Cancels a job of `org` that has not reached a terminal state
    /// ([`crate::job::Job::cancel`]): pending items become
    /// canceled and what is left of the hold is released, atomically. Canceling a canceled job
    /// returns it unchanged; canceling another terminal job is `InvalidState`.
    async fn cancel_job(
        &self,
        org: OrgId,
        job: JobId,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Result<Job>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends events, linking each into the hash chain ([`crate::audit_chain::link`]) and
    /// saving the chain head in the same transaction. Appends are serialized: `seq` order is
    /// commit order, with no gaps. (Every other method that takes an `audit` event appends it
    /// the same way.)
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()>;
    /// One page of an organization's events, oldest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Page<AuditRecord, u64>>;
    /// Deletes the oldest events while they are older than `cutoff` (a prefix of the log, see
    /// [`crate::audit_chain::purge_prefix`]) and moves the chain's anchor to the last one
    /// deleted, keeping a copy of that event as the anchor event
    /// ([`AuditStore::audit_chain_anchor`]); returns how many.
    async fn purge_audit_before(&self, cutoff: Timestamp) -> Result<u64>;
    /// The chain head: anchor and newest link.
    async fn audit_chain_head(&self) -> Result<ChainHead>;
    /// The anchor event: the last event a purge deleted (the one the head's anchor names), kept
    /// by that purge so verification can prove the anchor and read its time; `None` for a log
    /// never purged past a chained event.
    async fn audit_chain_anchor(&self) -> Result<Option<ChainRow>>;
    /// Up to `limit` events of every organization with `seq > after`, oldest first, exactly as
    /// stored (an undecodable column is `None`, for the verifier to report).
    async fn audit_chain(&self, after: u64, limit: PageLimit) -> Result<Vec<ChainRow>>;
}

/// HTTP idempotency records (see [`crate::idempotency`]).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Starts a request under `(org, key)`: takes the lock until `lock_until` when there is no
    /// record (a new record, whose attempt is `attempt`) or the previous lock expired by `now`
    /// (a takeover, which keeps the record's attempt).
    #[allow(clippy::too_many_arguments)]
    async fn begin_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        fingerprint: RequestFingerprint,
        attempt: AttemptId,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> Result<IdempotencyBegin>;
    /// Stores the response of a started request for replay.
    async fn complete_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        response: &StoredResponse,
        at: Timestamp,
    ) -> Result<()>;
    /// Extends the lock of a request still running, attempt `attempt`, to `lock_until`; `false`
    /// when the record is no longer that attempt's or is completed (nothing changed).
    async fn renew_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        attempt: AttemptId,
        lock_until: Timestamp,
    ) -> Result<bool>;
    /// Gives back a started (not completed) request so a retry can run it: deletes its record
    /// ([`Abandon::Settled`]) or unlocks it keeping its attempt ([`Abandon::Unsettled`]).
    async fn abandon_request(&self, org: OrgId, key: &IdempotencyKey, how: Abandon) -> Result<()>;
    /// Deletes records created before `cutoff`; returns how many.
    async fn purge_requests_before(&self, cutoff: Timestamp) -> Result<u64>;
}

/// Records of synchronous generations (see [`crate::generation::GenerationRecord`]).
#[async_trait]
pub trait GenerationStore: Send + Sync {
    /// Stores a finished generation and returns what is stored under its id. Idempotent on the
    /// id: when a record with that id exists (a resumed attempt recording again), nothing is
    /// written and the stored record is returned as it is — a repeat never fails and never
    /// duplicates. An id stored for another organization is a `Store { kind: Conflict }` error.
    async fn insert_generation(&self, record: &GenerationRecord) -> Result<GenerationRecord>;
    /// A generation of `org`; `None` for an unknown id or another organization's.
    async fn generation(&self, org: OrgId, id: GenerationId) -> Result<Option<GenerationRecord>>;
}

/// Console accounts: password hashes and sign-in sessions (stored by digest only).
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Sets or replaces `user`'s password hash and ends every session of theirs, atomically (a
    /// new password signs everyone out). `NotFound` for an unknown user.
    async fn set_password(&self, user: UserId, hash: &PasswordHash, at: Timestamp) -> Result<()>;
    /// The user with `email` and their password hash; `None` when either is missing.
    async fn credentials(&self, email: &Email) -> Result<Option<(User, PasswordHash)>>;
    /// Stores `session`, then ends its user's oldest sessions beyond `per_user_max`, atomically.
    async fn insert_session(&self, session: &Session, per_user_max: u32) -> Result<()>;
    /// A session by the digest of its token.
    async fn session(&self, digest: &SessionDigest) -> Result<Option<Session>>;
    /// Moves the session's `last_seen_at` forward to `at` (never back; nothing if it ended).
    async fn touch_session(&self, digest: &SessionDigest, at: Timestamp) -> Result<()>;
    /// Ends a session; whether there was one.
    async fn delete_session(&self, digest: &SessionDigest) -> Result<bool>;
    /// Deletes sessions that ended — `expires_at <= now` or `last_seen_at < idle_cutoff` — in
    /// bounded batches; how many.
    async fn purge_sessions(&self, now: Timestamp, idle_cutoff: Timestamp) -> Result<u64>;
}

/// The store's own state, for readiness probes.
#[async_trait]
pub trait SchemaStore: Send + Sync {
    /// How many of this build's migrations the database has not applied: 0 when its schema is
    /// the one this build expects (a store without a schema, in memory, is always 0). An
    /// unreachable database is an `Unavailable` store error.
    async fn pending_migrations(&self) -> Result<u32>;
}

/// Every store trait: what a backend implements.
pub trait Store:
    OrgStore
    + KeyStore
    + LedgerStore
    + JobStore
    + AuditStore
    + IdempotencyStore
    + GenerationStore
    + AccountStore
    + SchemaStore
    + 'static
{
}

impl<T> Store for T where
    T: OrgStore
        + KeyStore
        + LedgerStore
        + JobStore
        + AuditStore
        + IdempotencyStore
        + GenerationStore
        + AccountStore
        + SchemaStore
        + 'static
{
}

/// Compile-time proof that the store traits stay object-safe: hosts hold `Arc<dyn Store>`.
#[allow(dead_code)]
fn _object_safe(_: &dyn Store) {}
