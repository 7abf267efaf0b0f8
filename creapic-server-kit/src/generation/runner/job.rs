//! Running one leased job: heartbeat, items, completion — and letting go when the lease is lost
//! or the runner hands the job back.
//!
//! The design decision that shapes it: **every exit path is safe to take at any await point.**
//! Item futures are only ever dropped (never half-reported): an item is either reported to core
//! in one atomic call or not at all, and an unreported item stays pending for whoever holds the
//! lease next. So losing the lease, a shutdown hand-back and an abort all reduce to "stop
//! polling", and no path needs cleanup beyond optionally shortening the lease.

use std::sync::Arc;

use creapic_core::job::{ItemError, ItemOutcome, ItemStatus, Job, JobKind};
use creapic_core::store::Store;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{Context, Phase};
use crate::generation::Error;
use crate::generation::item::ImageSpec;
use crate::generation::scene::SceneSpec;
use crate::generation::webhook::Event;

/// Why a job task stopped before completing the job.
#[derive(Debug)]
enum Stop {
    /// Core says another worker holds the lease, or the job was canceled.
    LeaseLost,
    /// The runner is shutting down.
    HandBack,
    /// A store call kept failing; the lease will lapse and another runner resumes.
    Store(Error),
}

/// Whether core refused because this worker no longer holds the job (another runner claimed
/// it, or it was canceled, which also ends the lease).
fn is_lease_lost(e: &Error) -> bool {
    matches!(e, Error::Core(core) if is_lease_lost_core(core))
}

fn is_lease_lost_core(e: &creapic_core::Error) -> bool {
    matches!(
        e,
        creapic_core::Error::LeaseLost | creapic_core::Error::NotFound { .. }
    )
}

/// Runs `job` to completion, or until its lease is lost or the runner hands it back.
pub(super) async fn run<S: Store + ?Sized>(ctx: Arc<Context<S>>, job: Job) {
    let id = job.id;
    let outcome = tokio::select! {
        biased;
        stop = hand_back_requested(&ctx) => Err(stop),
        stop = heartbeat(&ctx, &job) => Err(stop),
        done = work(&ctx, &job) => done,
    };
    match outcome {
        Ok(()) => {}
        Err(Stop::HandBack) => {
            // Without a lease the job is claimable by the next runner at once.
            let result = ctx.core.release_lease(id, &ctx.worker).await;
            if let Err(e) = result {
                tracing::info!(job = %id, error = %e, "hand-back: lease already gone");
            }
            ctx.counters
                .handed_back
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(Stop::LeaseLost) => {
            tracing::info!(job = %id, "lease lost (canceled or taken over); letting go");
            ctx.counters
                .abandoned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(Stop::Store(e)) => {
            tracing::warn!(job = %id, error = %e, "store keeps failing; the lease will lapse");
            ctx.counters
                .abandoned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

async fn hand_back_requested<S: Store + ?Sized>(ctx: &Context<S>) -> Stop {
    let mut phase = ctx.phase.clone();
    loop {
        if *phase.borrow_and_update() == Phase::HandBack {
            return Stop::HandBack;
        }
        if phase.changed().await.is_err() {
            // The handle was dropped: a crash by contract, whose abort is on its way to this
            // task. Handing the lease back here would race it and make a crash look graceful.
            std::future::pending::<()>().await;
        }
    }
}

async fn heartbeat<S: Store + ?Sized>(ctx: &Context<S>, job: &Job) -> Stop {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(ctx.config.heartbeat).await;
        match ctx
            .core
            .renew_lease(job.id, &ctx.worker, ctx.config.lease)
            .await
        {
            Ok(_) => failures = 0,
            Err(e) if is_lease_lost_core(&e) => return Stop::LeaseLost,
            Err(e) => {
                failures += 1;
                tracing::warn!(job = %job.id, error = %e, "lease renewal failed");
                // Past the lease there is nothing left to protect.
                if ctx.config.heartbeat * failures >= ctx.config.lease {
                    return Stop::Store(Error::Core(e));
                }
            }
        }
    }
}

async fn work<S: Store + ?Sized>(ctx: &Context<S>, job: &Job) -> Result<(), Stop> {
    if job.attempts > ctx.config.job_claims_max {
        for item in job.items.iter().filter(|i| i.status == ItemStatus::Pending) {
            let error = ItemError::new(
                "job_attempts_exceeded",
                "the job was claimed too many times without finishing",
            );
            report(ctx, job, item.index, ItemOutcome::Failed(error)).await?;
        }
    } else {
        let mut items: FuturesUnordered<_> = job
            .items
            .iter()
            .filter(|i| i.status == ItemStatus::Pending)
            .map(|item| run_item(ctx, job, item.index, &item.input))
            .collect();
        let mut not_started = false;
        while let Some(result) = items.next().await {
            not_started |= result? == Ran::NotStarted;
        }
        if not_started {
            // Draining: what is done is reported; the rest belongs to the next runner.
            return Err(Stop::HandBack);
        }
    }
    let done = ctx
        .config
        .store_retry
        .run("complete job", || async {
            crate::telemetry::ledger_timed(
                "complete_job",
                ctx.core.complete_job(job.id, &ctx.worker),
            )
            .await
            .map_err(Error::Core)
        })
        .await;
    match done {
        Ok(finished) => {
            ctx.counters
                .completed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(queue) = &ctx.webhooks {
                queue.enqueue(Event::job_completed(&finished, ctx.core.clock().now()));
            }
            Ok(())
        }
        Err(e) if is_lease_lost(&e) => Err(Stop::LeaseLost),
        Err(e) => Err(Stop::Store(e)),
    }
}

/// What became of one item of a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// Generated (or failed) and reported to core.
    Reported,
    /// The runner began draining before the item got a permit: not started, still pending.
    NotStarted,
}

/// Resolves once the runner stops starting new work (draining or handing back). Never resolves
/// if the handle was dropped: that is a crash, whose abort is on its way.
async fn draining<S: Store + ?Sized>(ctx: &Context<S>) {
    let mut phase = ctx.phase.clone();
    if phase.wait_for(|p| *p != Phase::Running).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn run_item<S: Store + ?Sized>(
    ctx: &Context<S>,
    job: &Job,
    index: u32,
    input: &str,
) -> Result<Ran, Stop> {
    let generated = {
        // An item that has not got its permit when draining begins is not started.
        let permit = tokio::select! {
            biased;
            () = draining(ctx) => return Ok(Ran::NotStarted),
            permit = ctx.limits.acquire(job.org) => permit,
        };
        let Some(_permit) = permit else {
            return Err(Stop::HandBack);
        };
        match job.kind {
            JobKind::Bulk => match ImageSpec::parse(input) {
                Ok(spec) => ctx.pipeline.generate(job.org, job.mode, &spec).await,
                Err(e) => Err(e),
            },
            JobKind::Scene => match SceneSpec::parse(input) {
                Ok(spec) => ctx.pipeline.render_scene(job.org, job.mode, &spec).await,
                Err(e) => Err(e),
            },
        }
    };
    let outcome = match generated.and_then(|g| g.output.to_output()) {
        Ok(output) => ItemOutcome::Succeeded { output },
        Err(e) => {
            tracing::info!(job = %job.id, index, error = %e, "item failed; its credits are released");
            ItemOutcome::Failed(ItemError::new(e.code(), &e.to_string()))
        }
    };
    report(ctx, job, index, outcome).await?;
    Ok(Ran::Reported)
}

/// Reports an item, retrying transient store failures.
async fn report<S: Store + ?Sized>(
    ctx: &Context<S>,
    job: &Job,
    index: u32,
    outcome: ItemOutcome,
) -> Result<(), Stop> {
    let result = ctx
        .config
        .store_retry
        .run("report item", || async {
            crate::telemetry::ledger_timed(
                "finish_item",
                ctx.core
                    .finish_item(job.id, &ctx.worker, index, outcome.clone()),
            )
            .await
            .map_err(Error::Core)
        })
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_lease_lost(&e) => Err(Stop::LeaseLost),
        Err(e) => Err(Stop::Store(e)),
    }
}
