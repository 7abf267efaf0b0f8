//! A paid synchronous generation: hold → provider (under the deadline) → capture, or release —
//! refund — when the provider fails, then the generation recorded under its hold's id. This
//! module alone moves credits for a synchronous request and alone decides refunds; the HTTP
//! handler of `POST /api/public/images/generate` parses the body, calls
//! [`PaidGenerator::generate`] inside its idempotency lock, and turns the answer into a response.
//!
//! Whoever pays is a [`Caller`]: an API key (whose scope the route checked) or a member of the
//! organization acting through the console, whose membership the core checks before anything
//! is held ([`creapic_core::Creapic::check_caller`]). The flow needs only the caller's
//! organization (it pays) and mode (a member's work is live).
//!
//! It takes generation-side inputs only — the core, the [`Pipeline`], the [`Pricing`] and the
//! [`Limits`] — and answers with the [`GenerationRecord`] (not a wire view: the HTTP side mints
//! the link and the view) or an [`AttemptFailure`], so the flow is tested and reused without
//! HTTP.
//!
//! The design decision is that every ledger key of an attempt is derived from that attempt's one
//! ledger key ([`AttemptKeys`]: `{attempt}:hold`, `{attempt}:capture`, `{attempt}:refund`), so a
//! resumed attempt replays exactly the calls it already made and never a call of another
//! attempt.
//!
//! The provider is never called without an open hold of this attempt: a retry that resumes an
//! attempt whose hold was already released (its refund committed, its response lost) is sent
//! back to start a new attempt instead. The whole generation runs under
//! [`Limits::generation_deadline`] (below the stale-hold sweeper's age), and the caller keeps
//! its `Idempotency-Key` lock renewed while it runs, so neither a client's retry nor the sweeper
//! acts on a request still running, while a request that died gives its key back within the
//! plain lock.
//!
//! Every generation is recorded ([`GenerationRecord`]) under the id of the hold that pays for
//! it: completed after the capture commits, failed after the refund is confirmed. When the
//! record cannot be written after the capture: with an `Idempotency-Key` ([`Resume::Resumable`])
//! and a store that is unavailable, the attempt fails (503) *unsettled*, so the client's retry
//! resumes it — its reserve and capture replay, the record is written (idempotent on the id) and
//! the answer carries it: every id answered is readable. Without the header a retry could not
//! resume (it would pay again), and any other error is a bug a retry would not fix, so there the
//! failure is logged and the paid image is answered all the same, from the record as it would
//! have been written. A resumed attempt whose generation is already recorded answers from the
//! record without calling the provider again.

use creapic_core::generation::{GenerationOutcome, GenerationParams, GenerationRecord, Quality};
use creapic_core::id::GenerationId;
use creapic_core::ledger::Credits;
use creapic_core::{Caller, StoreErrorKind};

use crate::Core;
use crate::config::{Limits, Pricing};
use crate::generation::Error;
use crate::generation::item::{ImageSpec, PromptSource};
use crate::generation::pipeline::Pipeline;

/// The ledger keys of one attempt, all derived from the attempt's ledger key (the one the
/// caller's idempotency record names the attempt by): the only place such suffixes are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptKeys {
    attempt: String,
}

impl AttemptKeys {
    /// The keys of the attempt whose ledger key is `attempt`.
    pub fn new(attempt: impl Into<String>) -> Self {
        AttemptKeys {
            attempt: attempt.into(),
        }
    }

    /// The attempt's own ledger key.
    pub fn attempt(&self) -> &str {
        &self.attempt
    }

    /// The key of the reserve that holds the attempt's tokens.
    pub fn hold(&self) -> String {
        format!("{}:hold", self.attempt)
    }

    /// The key of the capture that pays for the attempt's work.
    pub fn capture(&self) -> String {
        format!("{}:capture", self.attempt)
    }

    /// The key of the release that refunds a failed attempt.
    pub fn refund(&self) -> String {
        format!("{}:refund", self.attempt)
    }
}

/// Whether a failed record write can be left to the client's retry (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The request carries an `Idempotency-Key`: its retry resumes this attempt.
    Resumable,
    /// No `Idempotency-Key`: a retry would be a new, paid attempt.
    Once,
}

/// A generation paid for and delivered.
#[derive(Debug)]
pub struct PaidGeneration {
    /// The generation as recorded (or, when the record could not be written and the attempt
    /// cannot be resumed, as it would have been recorded).
    pub record: GenerationRecord,
    /// The organization's balance after the capture.
    pub balance: Credits,
}

/// An attempt that failed, and whether anything of it may still be charged.
#[derive(Debug)]
pub struct AttemptFailure {
    error: Error,
    settled: bool,
}

impl AttemptFailure {
    /// A failure after which nothing of the attempt is charged (it never paid, or its hold was
    /// released and the release is confirmed): a retry is a new attempt.
    pub fn settled(error: Error) -> Self {
        AttemptFailure {
            error,
            settled: true,
        }
    }

    /// Whether nothing of the attempt is charged (see [`AttemptFailure::settled`]); when false,
    /// the outcome is unknown and a retry must resume the attempt (its charges replay).
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// What went wrong.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// What went wrong, and whether the attempt is settled.
    pub fn into_parts(self) -> (Error, bool) {
        (self.error, self.settled)
    }
}

impl From<Error> for AttemptFailure {
    /// A failure whose outcome is unknown: a retry resumes the attempt (its charges replay).
    fn from(error: Error) -> Self {
        AttemptFailure {
            error,
            settled: false,
        }
    }
}

/// What one image of `spec` costs.
pub fn price(pricing: &Pricing, spec: &ImageSpec) -> u64 {
    match spec.quality {
        Quality::Standard => pricing.image_standard,
        Quality::Hd => pricing.image_hd,
    }
}

/// What a paid synchronous generation needs: the core (ledger and records), the pipeline that
/// draws and stores the image, the prices and the limits (the deadline). Cheap to build per
/// request.
#[derive(Debug, Clone, Copy)]
pub struct PaidGenerator<'a> {
    core: &'a Core,
    pipeline: &'a Pipeline,
    pricing: Pricing,
    limits: Limits,
}

impl<'a> PaidGenerator<'a> {
    /// A generator over these parts.
    pub fn new(core: &'a Core, pipeline: &'a Pipeline, pricing: Pricing, limits: Limits) -> Self {
        PaidGenerator {
            core,
            pipeline,
            pricing,
            limits,
        }
    }

    /// Generates one image of `spec` for `caller`, paid from its organization's balance
    /// under the ledger keys of `keys` (see the module doc). A settled [`AttemptFailure`] means
    /// nothing of the attempt is charged; any other failure may have charged, and a retry
    /// resumes the attempt. A person who is not a member of the organization is refused
    /// (settled, `NotFound`) before anything is held.
    pub async fn generate(
        &self,
        caller: impl Into<Caller>,
        spec: &ImageSpec,
        keys: &AttemptKeys,
        resume: Resume,
    ) -> Result<PaidGeneration, AttemptFailure> {
        let caller = caller.into();
        let core = self.core;
        core.check_caller(&caller)
            .await
            .map_err(|e| AttemptFailure::settled(Error::Core(e)))?;
        let org = caller.org();
        let mode = caller.mode();
        let cost = price(&self.pricing, spec);
        let hold =
            crate::telemetry::ledger_timed("reserve", core.reserve(org, cost, None, &keys.hold()))
                .await
                .map_err(Error::Core)?;
        let Some(held) = hold.hold.as_ref() else {
            return Err(Error::Internal {
                message: "a reserve returned no hold".into(),
            }
            .into());
        };
        let hold_id = held.id;
        if hold.replayed && held.released.get() > 0 {
            // A resumed attempt whose refund already committed: calling the provider now would
            // be unpaid work. This attempt is over; the client's retry starts a new, paid one.
            return Err(AttemptFailure::settled(Error::Core(
                creapic_core::Error::IdempotencyInProgress,
            )));
        }
        let capture_key = keys.capture();
        if hold.replayed && held.captured.get() > 0 {
            // A resumed attempt that was paid for: if its generation is recorded, answer from
            // the record (the capture replays for the balance it left).
            let id = GenerationId::of_hold(hold_id);
            if let Ok(record) = core.generation(caller, id).await {
                let captured = crate::telemetry::ledger_timed(
                    "capture",
                    core.capture(org, hold_id, cost, &capture_key),
                )
                .await
                .map_err(Error::Core)?;
                return Ok(PaidGeneration {
                    record,
                    balance: captured.balance(),
                });
            }
        }
        let deadline = self
            .limits
            .generation_deadline(core.config().stale_hold_after);
        let provider = self.pipeline.provider_for(mode).name();
        let drawn = tokio::time::timeout(deadline, self.pipeline.generate(org, mode, spec))
            .await
            .unwrap_or(Err(Error::ProviderTimeout { provider }));
        let generated = match drawn {
            Ok(g) => g,
            Err(e) => {
                metrics::counter!("creapic_generations_total", "outcome" => "failed").increment(1);
                // Refund: the work failed. Only a confirmed refund makes the attempt settled (a
                // retry starts anew); otherwise a retry resumes it.
                return match crate::telemetry::ledger_timed(
                    "release",
                    core.release(org, hold_id, None, &keys.refund()),
                )
                .await
                {
                    Ok(_) => {
                        let params = params_of(spec, asked_prompt(&spec.source));
                        if let Err(record) = core
                            .record_failed_generation(org, hold_id, params, e.code())
                            .await
                        {
                            // The refund stands and the error is answered; only the record of
                            // the failure is missing.
                            tracing::warn!(error = %record, "could not record a failed generation");
                        }
                        Err(AttemptFailure::settled(e))
                    }
                    Err(release) => {
                        tracing::error!(error = %release, "could not refund a failed generation");
                        Err(AttemptFailure::from(e))
                    }
                };
            }
        };
        let captured = crate::telemetry::ledger_timed(
            "capture",
            core.capture(org, hold_id, cost, &capture_key),
        )
        .await
        .map_err(Error::Core)?;
        metrics::counter!("creapic_generations_total", "outcome" => "ok").increment(1);
        let media = generated.output.media.as_str().to_owned();
        let prompt = serde_json::to_string(&generated.prompt).unwrap_or_default();
        let tokens = Credits::new(cost).map_err(Error::Core)?;
        let params = params_of(spec, prompt);
        let recorded = core
            .record_completed_generation(org, hold_id, params.clone(), media.clone(), tokens)
            .await;
        let record = match recorded {
            Ok(record) => record,
            Err(
                e @ creapic_core::Error::Store {
                    kind: StoreErrorKind::Unavailable,
                    ..
                },
            ) if resume == Resume::Resumable => {
                // Paid, not recorded: fail unsettled so the client's retry resumes this attempt
                // (capture replays, the insert is idempotent) and gets a readable id.
                tracing::warn!(error = %e, "could not record a generation; the retry resumes it");
                return Err(AttemptFailure::from(Error::Core(e)));
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record a paid generation; answering it unrecorded");
                GenerationRecord {
                    id: GenerationId::of_hold(hold_id),
                    org,
                    prompt: params.prompt,
                    aspect_ratio: params.aspect_ratio,
                    quality: params.quality,
                    outcome: GenerationOutcome::Completed { media, tokens },
                    created_at: core.clock().now(),
                }
            }
        };
        Ok(PaidGeneration {
            record,
            balance: captured.balance(),
        })
    }
}

/// What a record keeps of the request.
fn params_of(spec: &ImageSpec, prompt: String) -> GenerationParams {
    GenerationParams {
        prompt,
        aspect_ratio: spec.aspect_ratio,
        quality: spec.quality,
    }
}

/// The prompt as it was asked, as JSON text: what a failed generation records (the composed
/// prompt may never have existed).
fn asked_prompt(source: &PromptSource) -> String {
    let value = match source {
        PromptSource::Text(text) => serde_json::Value::String(text.clone()),
        PromptSource::Json(value) => value.clone(),
    };
    serde_json::to_string(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_attempt_derives_from_its_ledger_key() {
        let keys = AttemptKeys::new("http:k:0190");
        assert_eq!(keys.attempt(), "http:k:0190");
        assert_eq!(keys.hold(), "http:k:0190:hold");
        assert_eq!(keys.capture(), "http:k:0190:capture");
        assert_eq!(keys.refund(), "http:k:0190:refund");
    }
}
