//! The background work the kit's guarantees depend on, with one owner: [`Upkeep`].
//!
//! Several promises of creapic are kept by a task, not by a request: last-used times lag use by
//! a bounded time only if someone flushes them (`Creapic::flush_usage`), audit events and
//! idempotency records go after their retention (and ended console sessions) only if someone
//! purges them, no synchronous
//! request's hold stays open only if someone sweeps abandoned ones
//! (`Creapic::release_stale_holds`), staged scene layers a crash left behind go only if someone
//! sweeps them (`MediaStore::sweep_uploads`), bulk jobs and scene renders run only if a job
//! [`Runner`] claims them, and the Prometheus recorder's memory stays bounded only if its upkeep
//! runs. A host that mounts the service and starts nothing silently loses all of them.
//!
//! Design decision: **the library starts the tasks, the host makes one call.** A host mounts the
//! [`CreapicService`](crate::CreapicService) and calls [`Upkeep::for_service`]`(state).start()`;
//! it gets every task `creapic serve` runs, with the same periods ([`UpkeepConfig`]'s defaults
//! are the binary's), the runner woken by the service's job signal and the metrics upkeep run
//! for the service's recorder. The returned [`UpkeepHandle`] owns the tasks: dropping it aborts
//! them all (like dropping a [`RunnerHandle`]: a crash, safe because the store is the only
//! memory), and [`UpkeepHandle::shutdown`] stops them gracefully — the runner hands its jobs
//! back after letting the generations in flight finish within the grace, the periodic tasks
//! finish the round they are in (within the grace, else they are aborted), and a final forced
//! last-used flush writes what is still in memory. Every task is joined before `shutdown`
//! returns: none outlives the handle.
//!
//! Running the periodic tasks on several replicas at once is safe: each is idempotent in the
//! store (the sweep releases a hold under one key, purges delete what is past a cutoff).

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::Core;
use crate::generation::pipeline::Pipeline;
use crate::generation::runner::{Runner, RunnerConfig, RunnerHandle, RunnerStats};
use crate::generation::webhook::{WebhookConfig, WebhookEndpoints};
use crate::http::error::Error;
use crate::http::service::AppState;

/// Default [`UpkeepConfig::usage_flush_period`]: 5 s. Each key is still written at most once
/// per `AuthConfig::usage_flush_interval` (60 s); this only bounds the lag beyond that.
pub const USAGE_FLUSH_PERIOD: Duration = Duration::from_secs(5);
/// Default [`UpkeepConfig::purge_period`]: 1 h (retentions are counted in days).
pub const PURGE_PERIOD: Duration = Duration::from_secs(60 * 60);
/// Default [`UpkeepConfig::stale_hold_period`]: 1 min (a hold is stale after 15 min).
pub const STALE_HOLD_PERIOD: Duration = Duration::from_secs(60);
/// Default [`UpkeepConfig::upload_sweep_period`]: 1 h.
pub const UPLOAD_SWEEP_PERIOD: Duration = Duration::from_secs(60 * 60);
/// Default [`UpkeepConfig::upload_max_age`]: 24 h.
pub const UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Default [`UpkeepConfig::metrics_upkeep_period`]: 5 s.
pub const METRICS_UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// The periods of the background tasks. Every period must be more than zero. Each task runs
/// once at start, then every period; a round that overruns its period delays the next one
/// (rounds never pile up).
#[derive(Debug, Clone)]
pub struct UpkeepConfig {
    /// How often coalesced last-used times are written (`Creapic::flush_usage`). A key's
    /// `last_used_at` lags its use by at most the core's `usage_flush_interval` plus this.
    pub usage_flush_period: Duration,
    /// How often audit events past `CoreConfig::audit_retention` (90 days) and idempotency
    /// records past `CoreConfig::idempotency_retention` are purged, and console sessions that
    /// ended (`Creapic::purge_sessions`) deleted.
    pub purge_period: Duration,
    /// How often the holds of abandoned synchronous requests (older than
    /// `CoreConfig::stale_hold_after`) are released (`Creapic::release_stale_holds`, at most
    /// `STALE_HOLDS_PER_SWEEP` per round).
    pub stale_hold_period: Duration,
    /// How often staged scene layers older than [`UpkeepConfig::upload_max_age`] are deleted
    /// (`MediaStore::sweep_uploads`).
    pub upload_sweep_period: Duration,
    /// Age past which a staged scene layer is a crash's leftover (a render deletes its own when
    /// it is done; a job still queued this long fails its render, refunded).
    pub upload_max_age: Duration,
    /// How often the Prometheus recorder folds histogram samples in, and the queued jobs are
    /// counted into `creapic_jobs_queued` (only when the service measures requests:
    /// [`crate::ServiceBuilder::metrics`] or [`Upkeep::metrics`]).
    pub metrics_upkeep_period: Duration,
    /// The job runner's settings; `None` runs no runner in this process (then another process
    /// must, or bulk jobs and scene renders stay queued).
    pub runner: Option<RunnerConfig>,
}

impl Default for UpkeepConfig {
    fn default() -> Self {
        UpkeepConfig {
            usage_flush_period: USAGE_FLUSH_PERIOD,
            purge_period: PURGE_PERIOD,
            stale_hold_period: STALE_HOLD_PERIOD,
            upload_sweep_period: UPLOAD_SWEEP_PERIOD,
            upload_max_age: UPLOAD_MAX_AGE,
            metrics_upkeep_period: METRICS_UPKEEP_PERIOD,
            runner: Some(RunnerConfig::default()),
        }
    }
}

impl UpkeepConfig {
    fn check(&self) -> Result<(), Error> {
        let periods = [
            ("usage_flush_period", self.usage_flush_period),
            ("purge_period", self.purge_period),
            ("stale_hold_period", self.stale_hold_period),
            ("upload_sweep_period", self.upload_sweep_period),
            ("metrics_upkeep_period", self.metrics_upkeep_period),
        ];
        for (name, period) in periods {
            if period.is_zero() {
                return Err(Error::InvalidParameter {
                    name,
                    message: "must be more than zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// The background work of one process, before it starts.
pub struct Upkeep {
    core: Core,
    pipeline: Pipeline,
    config: UpkeepConfig,
    wake_on: Option<Arc<Notify>>,
    metrics: Option<PrometheusHandle>,
    webhooks: Option<(Arc<dyn WebhookEndpoints>, WebhookConfig)>,
}

impl std::fmt::Debug for Upkeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upkeep")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Upkeep {
    /// The upkeep of a mounted service: its core, its pipeline (and media storage), its job
    /// signal (the runner starts a submitted job at once) and its metrics recorder, if any.
    /// This is how a host gets every guarantee `creapic serve` gets:
    ///
    /// ```no_run
    /// # async fn host(service: creapic_server_kit::CreapicService) -> Result<(), creapic_server_kit::Error> {
    /// use creapic_server_kit::upkeep::Upkeep;
    /// let upkeep = Upkeep::for_service(service.state()).start()?;
    /// // … serve `service` until the host stops …
    /// upkeep.shutdown(std::time::Duration::from_secs(20)).await;
    /// # Ok(()) }
    /// ```
    pub fn for_service(state: &AppState) -> Self {
        let mut upkeep = Upkeep::new(Arc::clone(state.core()), state.pipeline().clone())
            .wake_on(state.job_notify());
        upkeep.metrics = state.metrics().cloned();
        upkeep
    }

    /// The upkeep of a process that serves no HTTP (a worker): a core and a pipeline.
    pub fn new(core: Core, pipeline: Pipeline) -> Self {
        Upkeep {
            core,
            pipeline,
            config: UpkeepConfig::default(),
            wake_on: None,
            metrics: None,
            webhooks: None,
        }
    }

    /// The periods and the runner's settings (default: [`UpkeepConfig::default`]).
    pub fn config(mut self, config: UpkeepConfig) -> Self {
        self.config = config;
        self
    }

    /// Wakes the runner whenever `signal` is notified (set by [`Upkeep::for_service`]).
    pub fn wake_on(mut self, signal: Arc<Notify>) -> Self {
        self.wake_on = Some(signal);
        self
    }

    /// Runs this recorder's upkeep (set by [`Upkeep::for_service`] when the service measures).
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The runner sends signed `job.completed` webhooks (see [`Runner::with_webhooks`]).
    pub fn webhooks(mut self, endpoints: Arc<dyn WebhookEndpoints>, config: WebhookConfig) -> Self {
        self.webhooks = Some((endpoints, config));
        self
    }

    /// Starts every task on the current tokio runtime. Fails on a zero period or an invalid
    /// runner configuration, before anything is started.
    pub fn start(self) -> Result<UpkeepHandle, Error> {
        self.config.check()?;
        let config = self.config;
        let runner = match config.runner.clone() {
            Some(runner_config) => {
                let mut runner =
                    Runner::new(Arc::clone(&self.core), self.pipeline.clone(), runner_config);
                if let Some(signal) = self.wake_on {
                    runner = runner.wake_on(signal);
                }
                if let Some((endpoints, webhooks)) = self.webhooks {
                    runner = runner.with_webhooks(endpoints, webhooks);
                }
                Some(runner.start()?)
            }
            None => None,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        {
            let core = Arc::clone(&self.core);
            tasks.spawn(every(config.usage_flush_period, stop_rx.clone(), move || {
                let core = Arc::clone(&core);
                async move {
                    if let Err(e) = core.flush_usage(false).await {
                        tracing::warn!(error = %e, "last-used flush failed; retrying next period");
                    }
                }
            }));
        }
        {
            let core = Arc::clone(&self.core);
            tasks.spawn(every(config.purge_period, stop_rx.clone(), move || {
                let core = Arc::clone(&core);
                async move {
                    let audit = core.purge_audit().await;
                    let requests = core.purge_requests().await;
                    let sessions = core.purge_sessions().await;
                    match (audit, requests, sessions) {
                        (Ok(a), Ok(r), Ok(s)) => tracing::info!(
                            audit = a,
                            idempotency = r,
                            sessions = s,
                            "purged expired records"
                        ),
                        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                            tracing::warn!(error = %e, "purge failed")
                        }
                    }
                }
            }));
        }
        {
            let core = Arc::clone(&self.core);
            tasks.spawn(every(
                config.stale_hold_period,
                stop_rx.clone(),
                move || {
                    let core = Arc::clone(&core);
                    async move {
                        match core.release_stale_holds().await {
                            Ok(0) => {}
                            Ok(n) => {
                                tracing::warn!(
                                    holds = n,
                                    "released the holds of abandoned requests"
                                )
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "releasing abandoned holds failed")
                            }
                        }
                    }
                },
            ));
        }
        {
            let core = Arc::clone(&self.core);
            let media = self.pipeline.media().clone();
            let max_age = config.upload_max_age;
            tasks.spawn(every(
                config.upload_sweep_period,
                stop_rx.clone(),
                move || {
                    let cutoff = core.clock().now().minus(max_age);
                    let media = media.clone();
                    async move {
                        match media.sweep_uploads(cutoff).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(uploads = n, "swept stale scene uploads"),
                            Err(e) => tracing::warn!(error = %e, "sweeping scene uploads failed"),
                        }
                    }
                },
            ));
        }
        if let Some(handle) = self.metrics {
            if runner.is_some() {
                // Listed from the start (at 0), not only once a first generation ran.
                metrics::gauge!(crate::telemetry::RUNNER_SLOTS_IN_USE).increment(0.0);
            }
            let core = Arc::clone(&self.core);
            let queued_max =
                creapic_core::page::PageLimit::new(crate::telemetry::JOBS_QUEUED_COUNT_MAX)
                    .unwrap_or_else(|_| creapic_core::page::PageLimit::max());
            tasks.spawn(every(
                config.metrics_upkeep_period,
                stop_rx.clone(),
                move || {
                    handle.run_upkeep();
                    let core = Arc::clone(&core);
                    async move {
                        // One bounded count per period, whichever replica runs it.
                        match core.queued_jobs(queued_max).await {
                            Ok(n) => metrics::gauge!(crate::telemetry::JOBS_QUEUED).set(
                                u32::try_from(n).map_or(
                                    f64::from(crate::telemetry::JOBS_QUEUED_COUNT_MAX),
                                    f64::from,
                                ),
                            ),
                            Err(e) => tracing::warn!(error = %e, "counting queued jobs failed"),
                        }
                    }
                },
            ));
        }
        Ok(UpkeepHandle {
            core: self.core,
            runner,
            runner_stats: None,
            stop: stop_tx,
            tasks,
        })
    }
}

/// Runs `round` now and then every `period` until `stop` turns true (or its sender is gone).
/// A round in progress is finished before the task ends.
async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = async move {
        // An error means the handle is gone: stop as well.
        let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
    };
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => return,
            _ = tick.tick() => round().await,
        }
    }
}

/// What [`UpkeepHandle::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpkeepReport {
    /// What the runner did over its life, if this process ran one.
    pub runner: Option<RunnerStats>,
    /// Periodic tasks that stopped at the end of their round.
    pub tasks_stopped: usize,
    /// Periodic tasks whose round outlasted the grace and were aborted.
    pub tasks_aborted: usize,
    /// Keys whose last-used time the final flush wrote; `None` if it failed (logged).
    pub final_flush: Option<usize>,
}

/// The running background work. Dropping it aborts every task (a crash, see the module
/// documentation); call [`UpkeepHandle::shutdown`] to stop gracefully.
#[derive(Debug)]
pub struct UpkeepHandle {
    core: Core,
    runner: Option<RunnerHandle>,
    runner_stats: Option<RunnerStats>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl UpkeepHandle {
    /// Wakes the runner (it also wakes on the service's job signal by itself).
    pub fn wake(&self) {
        if let Some(runner) = &self.runner {
            runner.wake();
        }
    }

    /// What the runner did so far, if this process runs one.
    pub fn runner_stats(&self) -> Option<RunnerStats> {
        self.runner
            .as_ref()
            .map(RunnerHandle::stats)
            .or(self.runner_stats)
    }

    /// Stops the runner only: no new job item starts, the items in flight get `grace` to
    /// finish, every job is handed back (see [`RunnerHandle::shutdown`]). The periodic tasks
    /// keep running, so a host can stop jobs while its connections drain and shut the rest down
    /// after them (the final last-used flush then sees the last requests). Logs
    /// `job runner stopped` with what it did. Calling it again does nothing.
    pub async fn stop_runner(&mut self, grace: Duration) -> Option<RunnerStats> {
        if let Some(runner) = self.runner.take() {
            let stats = runner.shutdown(grace).await;
            tracing::info!(
                completed = stats.completed,
                handed_back = stats.handed_back,
                abandoned = stats.abandoned,
                "job runner stopped"
            );
            self.runner_stats = Some(stats);
        }
        self.runner_stats
    }

    /// Stops everything: the runner as [`UpkeepHandle::stop_runner`] does (if it still runs),
    /// then the periodic tasks (each finishes its round within what is left of `grace`, else it
    /// is aborted), then a final forced last-used flush. Every task has ended when this returns.
    pub async fn shutdown(mut self, grace: Duration) -> UpkeepReport {
        let started = tokio::time::Instant::now();
        let runner = self.stop_runner(grace).await;
        self.stop.send_replace(true);
        let mut tasks_stopped = 0;
        let left = grace.saturating_sub(started.elapsed());
        let joined = tokio::time::timeout(left, async {
            while let Some(done) = self.tasks.join_next().await {
                if done.is_ok() {
                    tasks_stopped += 1;
                }
            }
        })
        .await;
        let mut tasks_aborted = 0;
        if joined.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {
                tasks_aborted += 1;
            }
        }
        let final_flush = match self.core.flush_usage(true).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "final last-used flush failed");
                None
            }
        };
        UpkeepReport {
            runner,
            tasks_stopped,
            tasks_aborted,
            final_flush,
        }
    }
}
