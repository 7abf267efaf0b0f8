//! Group commit for one organization's debits: concurrent requests on the same balance are
//! queued per organization and applied by one applier, many at a time, in one statement.
//!
//! Design decision: **a hot organization is served by batching, not by locking harder.** One
//! balance row is the one thing every debit of an organization must write; when N requests race
//! for it, the database runs them one after the other, each holding the row lock across its own
//! commit, and throughput falls as N grows. Here the first request of an organization runs alone
//! (no added latency when there is no contention); requests that arrive while it runs wait in the
//! organization's queue, and when it finishes one applier task takes everything that queued (up
//! to [`BATCH_MAX`]) and hands it to the backend's [`BatchApply::apply_batch`] as one unit — one
//! balance write and one multi-row insert of entries. No timer: a batch is whatever arrived while
//! the previous one committed, so the wait is never artificial.
//!
//! Bounds: a queue holds at most [`QUEUE_MAX`] waiters; past that a request skips the queue and is
//! applied on its own (always correct, only slower). The applier runs in its own task, so a caller
//! that goes away (a dropped HTTP request) never strands the others; a guard hands the queue to a
//! fresh applier if the one running is dropped or panics.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, Result, StoreErrorKind};
use crate::id::OrgId;
use crate::ledger::{LedgerReceipt, LedgerRequest};

/// Most requests in one batch (one statement).
pub(crate) const BATCH_MAX: usize = 256;
/// Most requests waiting for one organization; more go straight to the backend.
pub(crate) const QUEUE_MAX: usize = 4096;

/// What a backend does with requests: one alone, or a batch of one organization's requests.
pub(crate) trait BatchApply: Clone + Send + Sync + 'static {
    /// Applies one request exactly as the backend does without group commit.
    fn apply_one(
        &self,
        request: LedgerRequest,
    ) -> impl Future<Output = Result<LedgerReceipt>> + Send;

    /// Applies `requests` (all of `org`, in arrival order) and answers each, in order, as if they
    /// had been applied one after the other. `balance` is the applier's cached balance of `org`
    /// from its previous batch (the backend must verify it, never trust it) and is updated.
    fn apply_batch(
        &self,
        org: OrgId,
        requests: Vec<LedgerRequest>,
        balance: &mut Option<i64>,
    ) -> impl Future<Output = Vec<Result<LedgerReceipt>>> + Send;
}

/// One queued request and where its answer goes.
struct Waiter {
    request: LedgerRequest,
    answer: oneshot::Sender<Result<LedgerReceipt>>,
}

/// Where a request stands when it arrives.
enum Queued {
    /// Behind others of its organization: the answer comes on this channel.
    Waiting(oneshot::Receiver<Result<LedgerReceipt>>),
    /// The queue is full: applied on its own.
    Full,
    /// Its organization was idle: it runs now, alone.
    Idle,
}

/// The per-organization queues. An organization has an entry exactly while a request of it is
/// being applied; the entry holds the requests that arrived meanwhile.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queues: Mutex<HashMap<OrgId, VecDeque<Waiter>>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrgId, VecDeque<Waiter>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `request`: alone when its organization is idle, otherwise in the next batch.
    pub(crate) async fn submit<B: BatchApply>(
        self: &Arc<Self>,
        backend: &B,
        request: LedgerRequest,
    ) -> Result<LedgerReceipt> {
        let org = request.org;
        let queued = {
            let mut queues = self.lock();
            match queues.get_mut(&org) {
                Some(waiting) if waiting.len() < QUEUE_MAX => {
                    let (answer, answered) = oneshot::channel();
                    waiting.push_back(Waiter {
                        request: request.clone(),
                        answer,
                    });
                    Queued::Waiting(answered)
                }
                Some(_) => Queued::Full,
                None => {
                    queues.insert(org, VecDeque::new());
                    Queued::Idle
                }
            }
        };
        match queued {
            Queued::Waiting(answered) => answered.await.unwrap_or_else(|_| {
                Err(Error::store(
                    StoreErrorKind::Unavailable,
                    "group commit: the batch holding this request was abandoned",
                ))
            }),
            Queued::Full => backend.apply_one(request).await,
            Queued::Idle => {
                // This request runs alone; whatever queues meanwhile is handed to an applier
                // when `_turn` drops (after the await, or if this future is dropped).
                let _turn = Turn {
                    group: Arc::clone(self),
                    backend: backend.clone(),
                    org,
                    finished: false,
                };
                backend.apply_one(request).await
            }
        }
    }

    /// Takes the next batch of `org`, or removes its entry (the organization is idle) when nothing
    /// waits.
    fn next_batch(&self, org: OrgId) -> Vec<Waiter> {
        let mut queues = self.lock();
        match queues.get_mut(&org) {
            Some(waiting) if !waiting.is_empty() => {
                let n = waiting.len().min(BATCH_MAX);
                waiting.drain(..n).collect()
            }
            _ => {
                queues.remove(&org);
                Vec::new()
            }
        }
    }
}

/// The right to apply `org`'s requests. Dropping it hands what queued to a new applier task (or
/// marks the organization idle); the applier sets `finished` when it left the queue empty itself.
struct Turn<B: BatchApply> {
    group: Arc<GroupCommit>,
    backend: B,
    org: OrgId,
    finished: bool,
}

impl<B: BatchApply> Drop for Turn<B> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let pending = self
            .group
            .lock()
            .get(&self.org)
            .is_some_and(|w| !w.is_empty());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if pending => {
                runtime.spawn(drain(
                    Arc::clone(&self.group),
                    self.backend.clone(),
                    self.org,
                ));
            }
            // Nothing waits, or no runtime to run an applier on (the waiters' channels close
            // and they answer `Unavailable`): the organization is idle again.
            _ => {
                self.group.lock().remove(&self.org);
            }
        }
    }
}

/// The applier: batches until the organization's queue is empty.
async fn drain<B: BatchApply>(group: Arc<GroupCommit>, backend: B, org: OrgId) {
    let mut turn = Turn {
        group,
        backend,
        org,
        finished: false,
    };
    let mut balance = None;
    loop {
        let batch = turn.group.next_batch(org);
        if batch.is_empty() {
            turn.finished = true;
            return;
        }
        let (requests, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.request, w.answer)).unzip();
        let results = if requests.len() == 1 {
            balance = None;
            let mut one = requests;
            match one.pop() {
                Some(request) => vec![turn.backend.apply_one(request).await],
                None => Vec::new(),
            }
        } else {
            turn.backend.apply_batch(org, requests, &mut balance).await
        };
        for (answer, result) in answers.into_iter().zip(results) {
            // A caller that went away no longer needs its answer; its request stands.
            let _ = answer.send(result);
        }
    }
}

/// A copy of `e` for every request of a batch that failed as a whole.
pub(crate) fn replicate(e: &Error) -> Error {
    match e {
        Error::Store { kind, message } => Error::store(*kind, message.clone()),
        other => Error::store(StoreErrorKind::Other, other.to_string()),
    }
}
