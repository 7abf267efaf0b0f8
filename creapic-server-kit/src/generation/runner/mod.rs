//! The durable job runner: claims bulk-image jobs and scene renders from the store under a
//! lease, runs their items through the [`Pipeline`], and reports each item to core, which
//! captures or refunds its credits.
//!
//! The design decision that shapes it: **the store is the only memory.** A runner holds nothing
//! that matters between two calls to core: which items are done, what they cost and who holds a
//! job all live in the store, and every report is checked against the lease there. So a runner
//! may crash (or be dropped) at any instant: its leases lapse, another runner claims the jobs
//! and runs only the items still pending, and core's per-item ledger key guarantees that no item
//! is ever charged twice. What a crash can cost is a repeated generation, never a repeated charge.
//!
//! Lifecycle: [`Runner::start`] spawns the claim loop and returns a [`RunnerHandle`].
//! [`RunnerHandle::shutdown`] stops claiming and starting items, lets the items already
//! generating finish for a grace period, and hands every job back (`Creapic::release_lease`: no
//! lease, claimable by another runner at once, the attempt not counted) as soon as its in-flight
//! items are reported, or when the grace period ends, whichever is first. Dropping the handle is
//! a crash: every task is aborted and nothing is handed back, which is safe for the reason
//! above, only slower to recover (a lease's length).
//!
//! The handle is owned, never shared: a host that wakes the runner when a job is submitted
//! gives it the kit's signal ([`Runner::wake_on`]) instead of keeping a clone of the handle in a
//! task, so the handle can always be shut down.
//!
//! Limits: at most `jobs_max` leased jobs (`org_jobs_max` of one organization), `concurrency_max`
//! generations in flight, and `org_concurrency_max` per organization; transient failures are retried under the pipeline's
//! [`crate::generation::retry::RetryPolicy`]; a job claimed more than `job_claims_max` times (a job
//! that keeps crashing its runners) has its pending items failed and refunded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use creapic_core::Creapic;
use creapic_core::id::{JobId, OrgId};
use creapic_core::job::WorkerId;
use creapic_core::random::{OsRandom, RandomSource};
use creapic_core::store::Store;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::generation::Error;
use crate::generation::pipeline::Pipeline;
use crate::generation::retry::RetryPolicy;
use crate::generation::webhook::{WebhookConfig, WebhookEndpoints, WebhookQueue, WebhookSender};

mod job;
mod limits;

/// How a runner behaves.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// This runner's worker id; by default `runner-{pid}-{random}`.
    pub worker_id: Option<String>,
    /// The lease asked for at claim and at every heartbeat (at most core's `lease_max`).
    pub lease: Duration,
    /// How often a leased job's lease is renewed (well under `lease`).
    pub heartbeat: Duration,
    /// How long the claim loop sleeps when the queue is empty (a [`RunnerHandle::wake`] cuts it
    /// short).
    pub poll_interval: Duration,
    /// Most jobs leased at once.
    pub jobs_max: usize,
    /// Most jobs of one organization leased at once. The store hands out jobs organization by
    /// organization (fewest running first); a claim that would go past this is handed back at
    /// once, so an organization with a long queue never holds every job slot and a newcomer's
    /// job is claimed as soon as it is submitted. Two keep an organization's generations busy
    /// while one of its jobs finishes its last items.
    pub org_jobs_max: usize,
    /// Most generations in flight at once.
    pub concurrency_max: usize,
    /// Most generations in flight for one organization.
    pub org_concurrency_max: usize,
    /// A job claimed more often than this has its pending items failed (refunded).
    pub job_claims_max: u32,
    /// Retries of the runner's own calls to the store (reports, completion).
    pub store_retry: RetryPolicy,
    /// How long [`RunnerHandle::shutdown`] waits for handed-back jobs to stop before aborting.
    pub hand_back_max: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            worker_id: None,
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(20),
            poll_interval: Duration::from_millis(500),
            jobs_max: 4,
            org_jobs_max: 2,
            concurrency_max: 4,
            org_concurrency_max: 2,
            job_claims_max: 5,
            store_retry: RetryPolicy::default(),
            hand_back_max: Duration::from_secs(10),
        }
    }
}

/// Where the runner is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Claiming and running.
    Running,
    /// Not claiming and not starting items; finishing the items in flight, then handing back.
    Draining,
    /// Stopping what it holds and handing the leases back.
    HandBack,
}

/// Counters a runner keeps (for shutdown reports, metrics and tests).
#[derive(Debug, Default)]
struct Counters {
    completed: AtomicU64,
    handed_back: AtomicU64,
    abandoned: AtomicU64,
}

/// What a runner did, as of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunnerStats {
    /// Jobs it brought to a terminal state.
    pub completed: u64,
    /// Jobs it handed back at shutdown.
    pub handed_back: u64,
    /// Jobs it gave up because its lease was lost (canceled, or claimed by another runner).
    pub abandoned: u64,
}

/// State shared by the claim loop and job tasks.
struct Context<S: Store + ?Sized> {
    core: Arc<Creapic<S>>,
    pipeline: Pipeline,
    config: RunnerConfig,
    worker: WorkerId,
    limits: limits::Limits,
    phase: watch::Receiver<Phase>,
    webhooks: Option<WebhookQueue>,
    counters: Arc<Counters>,
    /// The host's "a job was queued" signal, besides the handle's own.
    wake_on: Option<Arc<Notify>>,
}

/// The job runner, before it starts.
pub struct Runner<S: Store + ?Sized> {
    core: Arc<Creapic<S>>,
    pipeline: Pipeline,
    config: RunnerConfig,
    webhooks: Option<(Arc<dyn WebhookEndpoints>, WebhookConfig)>,
    wake_on: Option<Arc<Notify>>,
}

impl<S: Store + ?Sized> std::fmt::Debug for Runner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store + ?Sized> Runner<S> {
    /// A runner over `core` that generates with `pipeline`.
    pub fn new(core: Arc<Creapic<S>>, pipeline: Pipeline, config: RunnerConfig) -> Self {
        Runner {
            core,
            pipeline,
            config,
            webhooks: None,
            wake_on: None,
        }
    }

    /// Also looks for work whenever `signal` is notified — the kit's job signal
    /// (`AppState::job_notify`, `ServiceBuilder::job_notify`), so a submitted job starts at once.
    pub fn wake_on(mut self, signal: Arc<Notify>) -> Self {
        self.wake_on = Some(signal);
        self
    }

    /// Sends a signed `job.completed` webhook to organizations that registered an endpoint.
    pub fn with_webhooks(
        mut self,
        endpoints: Arc<dyn WebhookEndpoints>,
        config: WebhookConfig,
    ) -> Self {
        self.webhooks = Some((endpoints, config));
        self
    }

    /// Starts claiming on the current tokio runtime.
    pub fn start(self) -> Result<RunnerHandle, Error> {
        let worker = match &self.config.worker_id {
            Some(id) => WorkerId::new(id)?,
            None => {
                let mut tag = [0u8; 4];
                OsRandom.fill(&mut tag);
                WorkerId::new(&format!(
                    "runner-{}-{}",
                    std::process::id(),
                    hex::encode(tag)
                ))?
            }
        };
        if self.config.heartbeat >= self.config.lease {
            return Err(Error::InvalidParameter {
                name: "heartbeat",
                message: "must be shorter than the lease".into(),
            });
        }
        let sender = match self.webhooks {
            Some((endpoints, config)) => Some(WebhookSender::start_with_clock(
                endpoints,
                config,
                Arc::clone(self.core.clock()),
            )?),
            None => None,
        };
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let counters = Arc::new(Counters::default());
        let wake = Arc::new(Notify::new());
        let ctx = Arc::new(Context {
            limits: limits::Limits::new(
                self.config.concurrency_max,
                self.config.org_concurrency_max,
            ),
            core: self.core,
            pipeline: self.pipeline,
            worker: worker.clone(),
            phase: phase_rx,
            webhooks: sender.as_ref().map(WebhookSender::queue),
            counters: Arc::clone(&counters),
            config: self.config,
            wake_on: self.wake_on,
        });
        let hand_back_max = ctx.config.hand_back_max;
        let claimer = tokio::spawn(claim_loop(ctx, Arc::clone(&wake)));
        Ok(RunnerHandle {
            worker,
            phase: phase_tx,
            wake,
            counters,
            hand_back_max,
            claimer: Some(claimer),
            webhooks: sender,
        })
    }
}

/// A running runner. Dropping it aborts everything (a crash; see the module documentation);
/// call [`RunnerHandle::shutdown`] to stop gracefully.
#[derive(Debug)]
pub struct RunnerHandle {
    worker: WorkerId,
    phase: watch::Sender<Phase>,
    wake: Arc<Notify>,
    counters: Arc<Counters>,
    hand_back_max: Duration,
    claimer: Option<tokio::task::JoinHandle<()>>,
    webhooks: Option<WebhookSender>,
}

impl RunnerHandle {
    /// This runner's worker id.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// Tells the claim loop to look for work now (call it after submitting a job).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What the runner did so far.
    pub fn stats(&self) -> RunnerStats {
        RunnerStats {
            completed: self.counters.completed.load(Ordering::Relaxed),
            handed_back: self.counters.handed_back.load(Ordering::Relaxed),
            abandoned: self.counters.abandoned.load(Ordering::Relaxed),
        }
    }

    /// Stops claiming and starting items; waits up to `grace` for the items in flight to finish
    /// (each job is handed back as soon as its in-flight items are reported), then stops what
    /// is still running and hands it back (waiting at most `hand_back_max` for that), and
    /// flushes webhooks for what remains of the grace period. Returns what the runner did.
    pub async fn shutdown(mut self, grace: Duration) -> RunnerStats {
        let started = tokio::time::Instant::now();
        self.phase.send_replace(Phase::Draining);
        self.wake.notify_one();
        if let Some(mut claimer) = self.claimer.take()
            && tokio::time::timeout(grace, &mut claimer).await.is_err()
        {
            self.phase.send_replace(Phase::HandBack);
            // The job tasks read the phase and hand their leases back; the claim loop ends
            // when they have. Bounded: abort whatever is still running after that.
            if tokio::time::timeout(self.hand_back_max, &mut claimer)
                .await
                .is_err()
            {
                claimer.abort();
            }
        }
        if let Some(sender) = self.webhooks.take() {
            let left = grace
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(100));
            sender.close(left).await;
        }
        self.stats()
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        // A crash, by design: abort the claim loop (whose JoinSet aborts every job task).
        if let Some(claimer) = self.claimer.take() {
            claimer.abort();
        }
    }
}

async fn claim_loop<S: Store + ?Sized>(ctx: Arc<Context<S>>, wake: Arc<Notify>) {
    let slots = Arc::new(Semaphore::new(ctx.config.jobs_max.max(1)));
    let mut jobs = JoinSet::new();
    let mut phase = ctx.phase.clone();
    let mut store_failures: u32 = 0;
    // The jobs this runner is running and their organizations, by task (at most `jobs_max`).
    let mut active: HashMap<tokio::task::Id, (JobId, OrgId)> = HashMap::new();
    while *phase.borrow() == Phase::Running {
        while let Some(done) = jobs.try_join_next_with_id() {
            let task = match done {
                Ok((task, ())) => task,
                Err(e) => e.id(),
            };
            active.remove(&task);
        }
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            changed = phase.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        let idle = match ctx.core.claim_job(&ctx.worker, ctx.config.lease).await {
            Ok(Some(job)) if active.values().any(|(id, _)| *id == job.id) => {
                // Our own lease lapsed (a stall longer than the lease) and we claimed the job
                // again: the task already running it carries on under the fresh lease.
                tracing::warn!(job = %job.id, "re-claimed a job this runner is running");
                store_failures = 0;
                None
            }
            Ok(Some(job))
                if active.values().filter(|(_, org)| *org == job.org).count()
                    >= ctx.config.org_jobs_max.max(1) =>
            {
                // The organization with the fewest jobs running is one this runner already
                // serves in full: every other organization's work is running too. Hand the job
                // back (the attempt is not counted) and wait for a job to end or a new one.
                store_failures = 0;
                if let Err(e) = ctx.core.release_lease(job.id, &ctx.worker).await {
                    // The lease lapses on its own; nothing is charged meanwhile.
                    tracing::warn!(job = %job.id, error = %e, "handing back a job failed");
                }
                Some(ctx.config.poll_interval)
            }
            Ok(Some(job)) => {
                store_failures = 0;
                let id = job.id;
                let org = job.org;
                let ctx = Arc::clone(&ctx);
                let task = jobs.spawn(async move {
                    let _slot = slot;
                    job::run(ctx, job).await;
                });
                active.insert(task.id(), (id, org));
                None
            }
            Ok(None) => Some(ctx.config.poll_interval),
            Err(e) => {
                store_failures = store_failures.saturating_add(1);
                tracing::warn!(error = %e, "claiming a job failed");
                // Back off up to 32 poll intervals while the store is failing.
                Some(ctx.config.poll_interval * 2u32.pow(store_failures.min(5)))
            }
        };
        if let Some(wait) = idle {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
                () = woken_by_host(ctx.wake_on.as_deref()) => {}
                changed = phase.changed() => if changed.is_err() { break },
            }
        }
    }
    // Draining or handing back: the job tasks watch the phase themselves.
    while jobs.join_next().await.is_some() {}
}

async fn woken_by_host(signal: Option<&Notify>) {
    match signal {
        Some(signal) => signal.notified().await,
        None => std::future::pending().await,
    }
}
