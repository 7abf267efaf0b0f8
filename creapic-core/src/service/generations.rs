//! Records of synchronous generations.
//!
//! A record's id is the id of the hold that paid for it, and it is written only once that hold is
//! settled as the record says (captured for a completed one, released whole for a failed one), so
//! every record is backed by the ledger; recording it again returns the stored record.

use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::generation::{GenerationOutcome, GenerationParams, GenerationRecord};
use crate::id::{GenerationId, HoldId, OrgId};
use crate::ledger::Credits;
use crate::store::Store;

use super::Creapic;

impl<S: Store + ?Sized> Creapic<S> {
    /// Records a synchronous generation whose hold `hold` captured `tokens`: its id is the
    /// hold's ([`GenerationId::of_hold`]), its time now. Idempotent: recording a generation
    /// already recorded (a resumed attempt) returns the stored record unchanged. The hold must
    /// be a synchronous hold (no job) of `org` that captured at least `tokens`.
    pub async fn record_completed_generation(
        &self,
        org: OrgId,
        hold: HoldId,
        params: GenerationParams,
        media: String,
        tokens: Credits,
    ) -> Result<GenerationRecord> {
        self.record_generation(
            org,
            hold,
            params,
            GenerationOutcome::Completed { media, tokens },
        )
        .await
    }

    /// Records a synchronous generation that failed with the error code `code` and whose hold
    /// `hold` was released whole (nothing charged). Idempotent like
    /// [`Creapic::record_completed_generation`].
    pub async fn record_failed_generation(
        &self,
        org: OrgId,
        hold: HoldId,
        params: GenerationParams,
        code: &str,
    ) -> Result<GenerationRecord> {
        let outcome = GenerationOutcome::Failed {
            code: code.to_owned(),
        };
        self.record_generation(org, hold, params, outcome).await
    }

    async fn record_generation(
        &self,
        org: OrgId,
        hold: HoldId,
        params: GenerationParams,
        outcome: GenerationOutcome,
    ) -> Result<GenerationRecord> {
        let record = GenerationRecord {
            id: GenerationId::of_hold(hold),
            org,
            prompt: params.prompt,
            aspect_ratio: params.aspect_ratio,
            quality: params.quality,
            outcome,
            created_at: self.now(),
        };
        record.validate()?;
        // The record names the hold that paid for it: check that it did (one primary-key read),
        // so a generation id is always a hold of its organization, settled as the record says.
        let paid = self
            .store
            .hold(org, hold)
            .await?
            .ok_or(Error::NotFound { resource: "hold" })?;
        let settled = match &record.outcome {
            GenerationOutcome::Completed { tokens, .. } => paid.captured >= *tokens,
            GenerationOutcome::Failed { .. } => {
                paid.captured == Credits::ZERO && paid.remaining() == 0
            }
        };
        if paid.job.is_some() || !settled {
            return Err(Error::InvalidState(
                "a generation is recorded only for its settled synchronous hold",
            ));
        }
        self.store.insert_generation(&record).await
    }

    /// A generation of the caller's organization; another organization's, or an unknown id,
    /// is "not found". No scope of a key is checked here (the route checks its own: reading
    /// one needs `IMAGE_GENERATION`, using one as a scene layer `SCENE_RENDER`); a person must
    /// be a member ([`Creapic::check_caller`]).
    pub async fn generation(
        &self,
        caller: impl Into<Caller>,
        id: GenerationId,
    ) -> Result<GenerationRecord> {
        let caller = caller.into();
        self.check_caller(&caller).await?;
        self.store
            .generation(caller.org(), id)
            .await?
            .ok_or(Error::NotFound {
                resource: "generation",
            })
    }
}
