//! Jobs: bulk image jobs (1–100 prompts) and scene renders, their items, states and leases.
//!
//! A job moves `queued → running → completed | failed | partial | canceled`. Workers claim a job
//! with a lease and must hold it to report progress; a job whose lease expired is claimable again
//! (another worker picks it up where the first left off, because finished items stay finished).
//! Credits for a job are reserved as one hold when it is enqueued; each item that succeeds
//! captures its unit cost exactly once (the item's own state is the guard), each item that fails
//! releases its unit cost, and completing or canceling the job releases what is left.
//!
//! Design decision: **the job's rules live here, the stores only write them down.** Every change of
//! a job's state is decided by a pure method of [`Job`] or [`FinishItem`] — which item it touches,
//! the job's next status, what its hold gives back — and returned as what the store must write
//! ([`Transition`], [`FinishItem::ledger_request`]); each store loads the job under its lock,
//! applies that in one transaction and saves it, so the memory store and the SQL stores cannot
//! disagree about a rule.
//!
//! Item inputs and outputs are opaque text to core: a prompt, a serialized scene description, a
//! media reference. Their meaning belongs to the server kit.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{EntryId, JobId, KeyId, OrgId};
use crate::key::KeyMode;
use crate::ledger::{Credits, Hold, IdempotencyKey, LedgerOp, LedgerRequest};

/// Most items in one job (the bulk endpoint's prompt limit).
pub const JOB_ITEMS_MAX: usize = 100;
/// Largest item input, in bytes.
pub const ITEM_INPUT_MAX_BYTES: usize = 64 * 1024;
/// Largest item output reference, in bytes.
pub const ITEM_OUTPUT_MAX_BYTES: usize = 2048;
/// Longest item error message, in bytes (longer messages are cut at a character boundary).
pub const ITEM_ERROR_MAX_BYTES: usize = 1024;
/// Longest worker id, in bytes.
pub const WORKER_ID_MAX_LEN: usize = 128;

/// What a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// One image per prompt (`POST /api/playground/images`).
    Bulk,
    /// One composed scene (`POST /api/public/scenes/render`).
    Scene,
}

impl JobKind {
    /// `bulk` or `scene`.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::Bulk => "bulk",
            JobKind::Scene => "scene",
        }
    }

    /// Parses [`JobKind::as_str`].
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "bulk" => Ok(JobKind::Bulk),
            "scene" => Ok(JobKind::Scene),
            _ => Err(Error::invalid("job kind", "unknown")),
        }
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker holds its lease.
    Running,
    /// Every item succeeded.
    Completed,
    /// No item succeeded.
    Failed,
    /// Some items succeeded, some failed.
    Partial,
    /// Canceled before it finished; unfinished items were refunded.
    Canceled,
}

impl JobStatus {
    /// The wire name: `queued`, `running`, `completed`, `failed`, `partial`, `canceled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Partial => "partial",
            JobStatus::Canceled => "canceled",
        }
    }

    /// Parses [`JobStatus::as_str`].
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "partial" => JobStatus::Partial,
            "canceled" => JobStatus::Canceled,
            _ => return Err(Error::invalid("job status", "unknown")),
        })
    }

    /// Whether the job will never change again.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Partial | JobStatus::Canceled
        )
    }
}

/// An item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemStatus {
    /// Not finished yet.
    Pending,
    /// Produced its output; its cost was captured.
    Succeeded,
    /// Failed; its cost was released.
    Failed,
    /// The job was canceled before the item finished; its cost was released.
    Canceled,
}

impl ItemStatus {
    /// `pending`, `succeeded`, `failed` or `canceled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
            ItemStatus::Canceled => "canceled",
        }
    }

    /// Parses [`ItemStatus::as_str`].
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "pending" => ItemStatus::Pending,
            "succeeded" => ItemStatus::Succeeded,
            "failed" => ItemStatus::Failed,
            "canceled" => ItemStatus::Canceled,
            _ => return Err(Error::invalid("item status", "unknown")),
        })
    }
}

/// Why an item failed: a stable code and a bounded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// Stable snake_case code, e.g. `provider_timeout`.
    pub code: String,
    /// For people; at most [`ITEM_ERROR_MAX_BYTES`].
    pub message: String,
}

impl ItemError {
    /// Builds an error, cutting the code to 64 bytes and the message to
    /// [`ITEM_ERROR_MAX_BYTES`] at character boundaries.
    pub fn new(code: &str, message: &str) -> Self {
        ItemError {
            code: cut(code, 64).to_owned(),
            message: cut(message, ITEM_ERROR_MAX_BYTES).to_owned(),
        }
    }
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One unit of work in a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobItem {
    /// Position in the job, from 0.
    pub index: u32,
    /// The input (a prompt, a scene description).
    pub input: String,
    /// Its state.
    pub status: ItemStatus,
    /// A reference to what it produced (e.g. a media object name), when it succeeded.
    pub output: Option<String>,
    /// Why it failed, when it failed.
    pub error: Option<ItemError>,
    /// When it reached its final state.
    pub finished_at: Option<Timestamp>,
}

/// The identity of a worker process (e.g. `host-1:4242:0`): 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerId(String);

impl WorkerId {
    /// Validates `text`.
    pub fn new(text: &str) -> Result<Self> {
        if text.is_empty() || text.len() > WORKER_ID_MAX_LEN {
            return Err(Error::invalid("worker id", "must be 1 to 128 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid("worker id", "only visible ASCII characters"));
        }
        Ok(WorkerId(text.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A worker's claim on a running job, valid until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it.
    pub worker: WorkerId,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

/// A job and its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// The organization that pays for it and may see it.
    pub org: OrgId,
    /// The key that submitted it, if any.
    pub key: Option<KeyId>,
    /// Bulk images or a scene.
    pub kind: JobKind,
    /// Live jobs use the configured provider; test jobs always the offline renderer.
    pub mode: KeyMode,
    /// Its state.
    pub status: JobStatus,
    /// Credits per succeeded item (0 for free work).
    pub unit_cost: Credits,
    /// The hold that pays for it (none when `unit_cost` is 0).
    pub hold: Option<crate::id::HoldId>,
    /// The idempotency key it was submitted under.
    pub idempotency_key: IdempotencyKey,
    /// The items, in order.
    pub items: Vec<JobItem>,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// The current lease, while running.
    pub lease: Option<Lease>,
    /// How many times it has been claimed.
    pub attempts: u32,
}

impl Job {
    /// Items that succeeded.
    pub fn succeeded(&self) -> usize {
        self.count(ItemStatus::Succeeded)
    }

    /// Items that failed or were canceled.
    pub fn failed(&self) -> usize {
        self.count(ItemStatus::Failed) + self.count(ItemStatus::Canceled)
    }

    /// Items not finished yet.
    pub fn pending(&self) -> usize {
        self.count(ItemStatus::Pending)
    }

    fn count(&self, status: ItemStatus) -> usize {
        self.items.iter().filter(|i| i.status == status).count()
    }

    /// The terminal state the job reaches once no item is pending: completed when every item
    /// succeeded, failed when none did, partial otherwise.
    pub fn outcome(&self) -> JobStatus {
        let ok = self.succeeded();
        if ok == self.items.len() {
            JobStatus::Completed
        } else if ok == 0 {
            JobStatus::Failed
        } else {
            JobStatus::Partial
        }
    }

    /// Whether `worker` holds the job's lease (expired or not: nobody else has claimed it).
    pub fn is_leased_by(&self, worker: &WorkerId) -> bool {
        self.status == JobStatus::Running
            && self.lease.as_ref().is_some_and(|l| &l.worker == worker)
    }

    /// `Ok` when `worker` holds the job's lease ([`Job::is_leased_by`]), `LeaseLost` otherwise:
    /// every report of a worker is checked with this first.
    pub fn check_lease(&self, worker: &WorkerId) -> Result<()> {
        if self.is_leased_by(worker) {
            Ok(())
        } else {
            Err(Error::LeaseLost)
        }
    }

    /// `worker` gives the job back (a runner shutting down): no lease, so any runner may claim
    /// it at once, and the attempt it was on does not count against the attempt limit, because
    /// the job did not fail. Items already finished stay finished and the hold stays open.
    /// `LeaseLost` unless `worker` holds the lease.
    pub fn hand_back(&self, worker: &WorkerId, at: Timestamp) -> Result<Transition> {
        self.check_lease(worker)?;
        let mut job = self.clone();
        job.lease = None;
        job.attempts = job.attempts.saturating_sub(1);
        job.updated_at = at;
        Ok(Transition {
            job,
            canceled: Vec::new(),
            close: None,
        })
    }

    /// `worker` completes the job once no item is pending: its status becomes
    /// [`Job::outcome`], the lease ends, and what is left of the hold goes back
    /// ([`Transition::close`]; `hold` is the job's hold as the store read it, `entry_id` the
    /// release entry's id). `LeaseLost` unless `worker` holds the lease; `InvalidState` while an
    /// item is pending.
    pub fn complete(
        &self,
        worker: &WorkerId,
        hold: Option<&Hold>,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Result<Transition> {
        self.check_lease(worker)?;
        if self.pending() > 0 {
            return Err(Error::InvalidState("the job still has pending items"));
        }
        let mut job = self.clone();
        job.status = job.outcome();
        job.finish(at);
        Ok(Transition {
            job,
            canceled: Vec::new(),
            close: self.close_request(hold, entry_id, at),
        })
    }

    /// Cancels the job (its organization's request; no lease needed): every pending item is
    /// canceled, what is left of the hold — those items' cost — goes back ([`Transition::close`];
    /// `hold` and `entry_id` as for [`Job::complete`]), and the job is `Canceled`. `Ok(None)`
    /// when it already was: nothing to write, the job answers as it is. `InvalidState` when it
    /// finished otherwise.
    pub fn cancel(
        &self,
        hold: Option<&Hold>,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Result<Option<Transition>> {
        if self.status == JobStatus::Canceled {
            return Ok(None);
        }
        if self.status.is_terminal() {
            return Err(Error::InvalidState("the job has already finished"));
        }
        let mut job = self.clone();
        let mut canceled = Vec::new();
        for item in job
            .items
            .iter_mut()
            .filter(|i| i.status == ItemStatus::Pending)
        {
            item.status = ItemStatus::Canceled;
            item.finished_at = Some(at);
            canceled.push(item.index);
        }
        job.status = JobStatus::Canceled;
        job.finish(at);
        Ok(Some(Transition {
            job,
            canceled,
            close: self.close_request(hold, entry_id, at),
        }))
    }

    /// Marks the job finished at `at`, its lease ended.
    fn finish(&mut self, at: Timestamp) {
        self.lease = None;
        self.finished_at = Some(at);
        self.updated_at = at;
    }

    /// The release closing the job's hold, if it has one and `hold` (as the store read it) is
    /// that hold and still open: everything left on it (`amount: None`), under
    /// [`FinishItem::close_key`], so it is released once whoever closes the job.
    fn close_request(
        &self,
        hold: Option<&Hold>,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Option<LedgerRequest> {
        let id = self.hold?;
        hold.filter(|h| h.id == id && h.closed_at.is_none())?;
        Some(LedgerRequest {
            entry_id,
            org: self.org,
            op: LedgerOp::Release {
                hold: id,
                amount: None,
            },
            idempotency_key: FinishItem::close_key(self.id),
            at,
        })
    }

    /// Whether a worker may claim the job at `now`.
    pub fn is_claimable(&self, now: Timestamp) -> bool {
        match self.status {
            JobStatus::Queued => true,
            JobStatus::Running => self.lease.as_ref().is_none_or(|l| l.expires_at <= now),
            _ => false,
        }
    }
}

/// What a store writes to move a job on, as [`Job::cancel`], [`Job::complete`] and
/// [`Job::hand_back`] decided it from the job the store loaded under its lock. The store applies
/// all of it in the same transaction — `close` first (the hold row is locked after the job row:
/// the lock order), then the `canceled` items, then the job row's state as `job` has it — and
/// answers with `job`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a transition changes nothing until a store writes it"]
pub struct Transition {
    /// The job as it is afterwards: status, lease, times, attempts and items.
    pub job: Job,
    /// The items this transition ends (by index), each pending before and `Canceled` at
    /// `job.updated_at` now. Their cost goes back with `close`. Empty unless canceling.
    pub canceled: Vec<u32>,
    /// The release closing the job's hold, giving back everything left on it; `None` for a
    /// free job, a hold already closed, and a hand-back (the hold stays with the job).
    pub close: Option<LedgerRequest>,
}

/// A job without its items, as a listing shows it: what it is, where it stands and how its
/// items ended, counted by the store (one query for a page, whatever the jobs' sizes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    /// The job.
    pub id: JobId,
    /// Its organization.
    pub org: OrgId,
    /// Bulk images or a scene render.
    pub kind: JobKind,
    /// Live or test.
    pub mode: KeyMode,
    /// Its state.
    pub status: JobStatus,
    /// Credits per item.
    pub unit_cost: Credits,
    /// How many items it has.
    pub items: u32,
    /// Items that succeeded (each paid once).
    pub succeeded: u32,
    /// Items that failed (each refunded).
    pub failed: u32,
    /// Items canceled before they finished (each refunded).
    pub canceled: u32,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it reached its terminal state.
    pub finished_at: Option<Timestamp>,
}

impl JobSummary {
    /// The summary of a whole job (its items counted here).
    pub fn of(job: &Job) -> Self {
        let count = |status: ItemStatus| u32::try_from(job.count(status)).unwrap_or(u32::MAX);
        JobSummary {
            id: job.id,
            org: job.org,
            kind: job.kind,
            mode: job.mode,
            status: job.status,
            unit_cost: job.unit_cost,
            items: u32::try_from(job.items.len()).unwrap_or(u32::MAX),
            succeeded: count(ItemStatus::Succeeded),
            failed: count(ItemStatus::Failed),
            canceled: count(ItemStatus::Canceled),
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
        }
    }

    /// Items not finished yet.
    pub fn pending(&self) -> u32 {
        self.items
            .saturating_sub(self.succeeded)
            .saturating_sub(self.failed)
            .saturating_sub(self.canceled)
    }
}

/// A job to enqueue, validated.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The id the caller chose.
    pub id: JobId,
    /// The organization.
    pub org: OrgId,
    /// The submitting key.
    pub key: Option<KeyId>,
    /// The kind.
    pub kind: JobKind,
    /// Live or test.
    pub mode: KeyMode,
    /// One input per item.
    pub inputs: Vec<String>,
    /// Credits per item.
    pub unit_cost: Credits,
    /// Retrying with this key returns the same job without a second reservation.
    pub idempotency_key: IdempotencyKey,
    /// The id of the hold entry (and hold) reserving `unit_cost × items`.
    pub hold_entry: EntryId,
    /// When.
    pub at: Timestamp,
}

impl NewJob {
    /// Checks the limits: 1..=[`JOB_ITEMS_MAX`] items, each non-empty and at most
    /// [`ITEM_INPUT_MAX_BYTES`].
    pub fn validate(&self) -> Result<()> {
        if self.inputs.is_empty() {
            return Err(Error::invalid("prompts", "at least one is required"));
        }
        if self.inputs.len() > JOB_ITEMS_MAX {
            return Err(Error::LimitExceeded {
                what: "prompts per job",
                max: JOB_ITEMS_MAX as u64,
            });
        }
        for input in &self.inputs {
            if input.trim().is_empty() {
                return Err(Error::invalid("prompts", "must not be empty"));
            }
            if input.len() > ITEM_INPUT_MAX_BYTES {
                return Err(Error::LimitExceeded {
                    what: "prompt length in bytes",
                    max: ITEM_INPUT_MAX_BYTES as u64,
                });
            }
        }
        self.total_cost().map(|_| ())
    }

    /// Credits to reserve: `unit_cost × items`.
    pub fn total_cost(&self) -> Result<Credits> {
        self.unit_cost.times(self.inputs.len() as u64)
    }

    /// The reserve that pays for the job — its total cost, one hold whose id is `hold_entry`,
    /// under the derived key `job:{id}:reserve` — or `None` for free work (no hold).
    pub fn reserve_request(&self) -> Result<Option<LedgerRequest>> {
        let amount = self.total_cost()?;
        if amount.get() == 0 {
            return Ok(None);
        }
        Ok(Some(LedgerRequest {
            entry_id: self.hold_entry,
            org: self.org,
            op: LedgerOp::Reserve {
                amount,
                job: Some(self.id),
            },
            // A UUID and a word: visible ASCII well under 255 bytes.
            idempotency_key: IdempotencyKey::trusted(format!("job:{}:reserve", self.id)),
            at: self.at,
        }))
    }

    /// Whether `job` is what this request would have created (same kind, inputs and price), so
    /// that a retry under the same idempotency key can return it.
    pub fn matches(&self, job: &Job) -> bool {
        job.kind == self.kind
            && job.unit_cost == self.unit_cost
            && job.items.len() == self.inputs.len()
            && job
                .items
                .iter()
                .zip(&self.inputs)
                .all(|(i, p)| &i.input == p)
    }

    /// The job as it is stored right after enqueueing.
    pub fn to_job(&self, hold: Option<crate::id::HoldId>) -> Job {
        Job {
            id: self.id,
            org: self.org,
            key: self.key,
            kind: self.kind,
            mode: self.mode,
            status: JobStatus::Queued,
            unit_cost: self.unit_cost,
            hold,
            idempotency_key: self.idempotency_key.clone(),
            items: self
                .inputs
                .iter()
                .enumerate()
                .map(|(i, input)| JobItem {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    input: input.clone(),
                    status: ItemStatus::Pending,
                    output: None,
                    error: None,
                    finished_at: None,
                })
                .collect(),
            created_at: self.at,
            updated_at: self.at,
            finished_at: None,
            lease: None,
            attempts: 0,
        }
    }
}

/// What enqueueing returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job.
    pub job: Job,
    /// Its hold, if it costs anything.
    pub hold: Option<Hold>,
    /// The organization's balance right after the reservation (on a replay: as it was then).
    pub balance: Credits,
    /// Whether this was a replay of an earlier submission with the same idempotency key.
    pub replayed: bool,
}

/// How one item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// It produced `output` (a media reference, at most [`ITEM_OUTPUT_MAX_BYTES`]).
    Succeeded {
        /// The reference.
        output: String,
    },
    /// It failed.
    Failed(ItemError),
}

/// A worker's report that one item finished.
#[derive(Debug, Clone)]
pub struct FinishItem {
    /// The job.
    pub job: JobId,
    /// The reporting worker (must hold the lease).
    pub worker: WorkerId,
    /// Which item.
    pub index: u32,
    /// How it ended.
    pub outcome: ItemOutcome,
    /// The id of the capture or release entry this writes.
    pub entry_id: EntryId,
    /// When.
    pub at: Timestamp,
}

impl FinishItem {
    /// Checks the output's size.
    pub fn validate(&self) -> Result<()> {
        if let ItemOutcome::Succeeded { output } = &self.outcome
            && (output.is_empty() || output.len() > ITEM_OUTPUT_MAX_BYTES)
        {
            return Err(Error::LimitExceeded {
                what: "item output reference length",
                max: ITEM_OUTPUT_MAX_BYTES as u64,
            });
        }
        Ok(())
    }

    /// Which item of `job` the report finishes: `Ok(None)` when that item already finished (a
    /// repeat, left as it is and never charged again), an `Invalid` error when the job has no
    /// such item, and the report's own limits checked otherwise. Every store calls this first.
    pub fn pending_index(&self, job: &Job) -> Result<Option<usize>> {
        let index = usize::try_from(self.index).unwrap_or(usize::MAX);
        let Some(item) = job.items.get(index) else {
            return Err(Error::invalid("item", "no such item in the job"));
        };
        if item.status != ItemStatus::Pending {
            return Ok(None);
        }
        self.validate()?;
        Ok(Some(index))
    }

    /// The ledger request that settles this item's cost from the job's hold — a capture when it
    /// succeeded, a release (refund) when it failed — or `None` for a free job.
    pub fn ledger_request(&self, job: &Job) -> Option<LedgerRequest> {
        let hold = job.hold?;
        let op = match self.outcome {
            ItemOutcome::Succeeded { .. } => LedgerOp::Capture {
                hold,
                amount: job.unit_cost,
            },
            ItemOutcome::Failed(_) => LedgerOp::Release {
                hold,
                amount: Some(job.unit_cost),
            },
        };
        Some(LedgerRequest {
            entry_id: self.entry_id,
            org: job.org,
            op,
            idempotency_key: FinishItem::ledger_key(job.id, self.index),
            at: self.at,
        })
    }

    /// Records the outcome on item `index` of `job` (as found by [`FinishItem::pending_index`]).
    pub fn apply_to(&self, job: &mut Job, index: usize) {
        if let Some(item) = job.items.get_mut(index) {
            match &self.outcome {
                ItemOutcome::Succeeded { output } => {
                    item.status = ItemStatus::Succeeded;
                    item.output = Some(output.clone());
                }
                ItemOutcome::Failed(error) => {
                    item.status = ItemStatus::Failed;
                    item.error = Some(error.clone());
                }
            }
            item.finished_at = Some(self.at);
        }
        job.updated_at = self.at;
    }

    /// The idempotency key of the ledger entry for this item: one per (job, item), so an item
    /// is never charged twice whoever reports it.
    pub fn ledger_key(job: JobId, index: u32) -> IdempotencyKey {
        // A UUID and a number: visible ASCII well under 255 bytes.
        IdempotencyKey::trusted(format!("job:{job}:item:{index}"))
    }

    /// The idempotency key of the entry that releases what is left of a job's hold.
    pub fn close_key(job: JobId) -> IdempotencyKey {
        IdempotencyKey::trusted(format!("job:{job}:close"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    fn new_job(inputs: Vec<String>, unit: u64) -> NewJob {
        let rng = SeededRandom::new(1);
        let at = Timestamp::from_unix_ms(1);
        NewJob {
            id: JobId::generate(at, &rng),
            org: OrgId::generate(at, &rng),
            key: None,
            kind: JobKind::Bulk,
            mode: KeyMode::Live,
            inputs,
            unit_cost: Credits::new(unit).unwrap_or_default(),
            idempotency_key: IdempotencyKey::trusted("k".into()),
            hold_entry: EntryId::generate(at, &rng),
            at,
        }
    }

    #[test]
    fn job_limits() {
        assert!(new_job(vec![], 1).validate().is_err());
        assert!(new_job(vec!["a".into(); 100], 1).validate().is_ok());
        assert!(new_job(vec!["a".into(); 101], 1).validate().is_err());
        assert!(new_job(vec!["  ".into()], 1).validate().is_err());
        assert!(
            new_job(vec!["x".repeat(ITEM_INPUT_MAX_BYTES + 1)], 1)
                .validate()
                .is_err()
        );
        assert_eq!(
            new_job(vec!["a".into(); 3], 2).total_cost().ok(),
            Credits::new(6).ok()
        );
    }

    #[test]
    fn outcome_follows_items() {
        let mut job = new_job(vec!["a".into(), "b".into()], 1).to_job(None);
        assert_eq!(job.pending(), 2);
        job.items[0].status = ItemStatus::Succeeded;
        job.items[1].status = ItemStatus::Failed;
        assert_eq!(job.outcome(), JobStatus::Partial);
        job.items[1].status = ItemStatus::Succeeded;
        assert_eq!(job.outcome(), JobStatus::Completed);
        job.items[0].status = ItemStatus::Failed;
        job.items[1].status = ItemStatus::Canceled;
        assert_eq!(job.outcome(), JobStatus::Failed);
    }

    const T0: i64 = 1_000;
    const T1: i64 = 2_000;

    fn worker(name: &str) -> WorkerId {
        WorkerId::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn credits(n: u64) -> Credits {
        Credits::new(n).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A job of three items at 2 credits each, paid by a hold of 6, as `new` enqueues it;
    /// running under `w1`'s lease after its second claim when `running`.
    fn paid_job(running: bool) -> (Job, Hold) {
        let new = new_job(vec!["a".into(), "b".into(), "c".into()], 2);
        let hold = Hold {
            id: crate::id::HoldId::from_uuid(new.hold_entry.as_uuid()),
            org: new.org,
            job: Some(new.id),
            amount: credits(6),
            captured: Credits::default(),
            released: Credits::default(),
            created_at: new.at,
            closed_at: None,
        };
        let mut job = new.to_job(Some(hold.id));
        if running {
            job.status = JobStatus::Running;
            job.attempts = 2;
            job.lease = Some(Lease {
                worker: worker("w1"),
                expires_at: Timestamp::from_unix_ms(T1 + 30_000),
            });
        }
        (job, hold)
    }

    fn entry() -> EntryId {
        EntryId::generate(Timestamp::from_unix_ms(T1), &SeededRandom::new(9))
    }

    /// The release that closes `job`'s hold: everything left, under the job's close key.
    fn close_of(job: &Job, hold: &Hold, entry_id: EntryId) -> LedgerRequest {
        LedgerRequest {
            entry_id,
            org: job.org,
            op: LedgerOp::Release {
                hold: hold.id,
                amount: None,
            },
            idempotency_key: FinishItem::close_key(job.id),
            at: Timestamp::from_unix_ms(T1),
        }
    }

    fn finish(job: &mut Job, index: usize, status: ItemStatus) {
        job.items[index].status = status;
        job.items[index].finished_at = Some(Timestamp::from_unix_ms(T0));
    }

    #[test]
    fn cancel_refunds_the_pending_items_and_closes_the_hold() {
        let at = Timestamp::from_unix_ms(T1);
        let e = entry();
        for running in [false, true] {
            let (mut job, hold) = paid_job(running);
            finish(&mut job, 1, ItemStatus::Succeeded);
            let t = job
                .cancel(Some(&hold), e, at)
                .unwrap_or_else(|err| panic!("{err}"))
                .unwrap_or_else(|| panic!("a running job cancels"));
            assert_eq!(t.canceled, vec![0, 2], "only the pending items");
            assert_eq!(t.close, Some(close_of(&job, &hold, e)));
            assert_eq!(t.job.status, JobStatus::Canceled);
            assert_eq!(t.job.lease, None);
            assert_eq!(t.job.finished_at, Some(at));
            assert_eq!(t.job.updated_at, at);
            assert_eq!(t.job.attempts, job.attempts, "a cancel is not an attempt");
            let statuses: Vec<ItemStatus> = t.job.items.iter().map(|i| i.status).collect();
            assert_eq!(
                statuses,
                [
                    ItemStatus::Canceled,
                    ItemStatus::Succeeded,
                    ItemStatus::Canceled
                ]
            );
            assert_eq!(t.job.items[0].finished_at, Some(at));
            assert_eq!(
                t.job.items[1].finished_at,
                Some(Timestamp::from_unix_ms(T0)),
                "a finished item stays as it finished"
            );
        }
    }

    #[test]
    fn cancel_of_a_finished_job() {
        let at = Timestamp::from_unix_ms(T1);
        let (mut job, hold) = paid_job(false);
        job.status = JobStatus::Canceled;
        assert_eq!(
            job.cancel(Some(&hold), entry(), at).ok(),
            Some(None),
            "already canceled: nothing to write"
        );
        for status in [JobStatus::Completed, JobStatus::Failed, JobStatus::Partial] {
            job.status = status;
            assert!(matches!(
                job.cancel(Some(&hold), entry(), at),
                Err(Error::InvalidState(_))
            ));
        }
    }

    #[test]
    fn the_close_releases_only_an_open_hold_of_the_job() {
        let at = Timestamp::from_unix_ms(T1);
        let (job, hold) = paid_job(false);
        let closed = Hold {
            closed_at: Some(Timestamp::from_unix_ms(T0)),
            ..hold.clone()
        };
        let other = Hold {
            id: crate::id::HoldId::generate(at, &SeededRandom::new(7)),
            ..hold.clone()
        };
        let close = |job: &Job, hold: Option<&Hold>| {
            job.cancel(hold, entry(), at)
                .ok()
                .flatten()
                .and_then(|t| t.close)
        };
        assert!(close(&job, Some(&hold)).is_some());
        assert_eq!(close(&job, Some(&closed)), None, "closed before");
        assert_eq!(close(&job, Some(&other)), None, "not the job's hold");
        assert_eq!(close(&job, None), None, "no hold row");
        let free = new_job(vec!["a".into()], 0).to_job(None);
        assert_eq!(close(&free, Some(&hold)), None, "a free job has no hold");
    }

    #[test]
    fn complete_ends_the_job_by_its_items() {
        use ItemStatus::{Canceled, Failed, Succeeded};
        let at = Timestamp::from_unix_ms(T1);
        let e = entry();
        let cases = [
            ([Succeeded, Succeeded, Succeeded], JobStatus::Completed),
            ([Succeeded, Failed, Succeeded], JobStatus::Partial),
            ([Failed, Failed, Canceled], JobStatus::Failed),
        ];
        for (items, status) in cases {
            let (mut job, hold) = paid_job(true);
            for (i, s) in items.into_iter().enumerate() {
                finish(&mut job, i, s);
            }
            let t = job
                .complete(&worker("w1"), Some(&hold), e, at)
                .unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(t.job.status, status, "{items:?}");
            assert_eq!(t.close, Some(close_of(&job, &hold, e)));
            assert!(t.canceled.is_empty());
            assert_eq!(t.job.lease, None);
            assert_eq!((t.job.finished_at, t.job.updated_at), (Some(at), at));
            assert_eq!(t.job.items, job.items, "completing touches no item");
        }
    }

    #[test]
    fn complete_needs_the_lease_and_no_pending_item() {
        let at = Timestamp::from_unix_ms(T1);
        let (mut job, hold) = paid_job(true);
        finish(&mut job, 0, ItemStatus::Succeeded);
        assert!(matches!(
            job.complete(&worker("w1"), Some(&hold), entry(), at),
            Err(Error::InvalidState(_))
        ));
        finish(&mut job, 1, ItemStatus::Succeeded);
        finish(&mut job, 2, ItemStatus::Succeeded);
        assert!(matches!(
            job.complete(&worker("w2"), Some(&hold), entry(), at),
            Err(Error::LeaseLost)
        ));
        let (queued, hold) = paid_job(false);
        assert!(matches!(
            queued.complete(&worker("w1"), Some(&hold), entry(), at),
            Err(Error::LeaseLost)
        ));
    }

    #[test]
    fn hand_back_frees_the_job_and_gives_back_the_attempt() {
        let at = Timestamp::from_unix_ms(T1);
        let (mut job, _) = paid_job(true);
        finish(&mut job, 0, ItemStatus::Succeeded);
        let t = job
            .hand_back(&worker("w1"), at)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(t.job.lease, None);
        assert_eq!(t.job.attempts, 1);
        assert_eq!(t.job.updated_at, at);
        assert_eq!(t.job.status, JobStatus::Running, "claimable at once");
        assert!(t.job.is_claimable(Timestamp::from_unix_ms(T1)));
        assert_eq!(t.job.finished_at, None);
        assert_eq!(t.job.items, job.items, "finished items stay finished");
        assert!(t.canceled.is_empty());
        assert_eq!(t.close, None, "the hold stays with the job");
        assert!(matches!(
            job.hand_back(&worker("w2"), at),
            Err(Error::LeaseLost)
        ));
        job.attempts = 0;
        let t = job
            .hand_back(&worker("w1"), at)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(t.job.attempts, 0, "never below zero");
    }

    #[test]
    fn the_reserve_pays_for_every_item_once() {
        let new = new_job(vec!["a".into(); 3], 2);
        let reserve = new
            .reserve_request()
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a paid job reserves"));
        assert_eq!(reserve.entry_id, new.hold_entry);
        assert_eq!(reserve.org, new.org);
        assert_eq!(
            reserve.op,
            LedgerOp::Reserve {
                amount: credits(6),
                job: Some(new.id),
            }
        );
        assert_eq!(
            reserve.idempotency_key.as_str(),
            format!("job:{}:reserve", new.id)
        );
        assert_eq!(reserve.at, new.at);
        assert_eq!(
            new_job(vec!["a".into()], 0).reserve_request().ok(),
            Some(None)
        );
    }

    #[test]
    fn item_errors_are_cut_at_char_boundaries() {
        let e = ItemError::new("x", &"é".repeat(1000));
        assert!(e.message.len() <= ITEM_ERROR_MAX_BYTES);
        assert!(e.message.chars().all(|c| c == 'é'));
    }
}
