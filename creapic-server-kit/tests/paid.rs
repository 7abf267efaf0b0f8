//! The paid synchronous generation without HTTP: `generation::paid::PaidGenerator` over the
//! in-memory core and a pipeline, no router, no request. A success is captured once and
//! recorded under its hold's id; a failing provider is refunded, recorded as failed and
//! settled; an attempt resumed after it was recorded answers from the record without calling
//! the provider again. A member of the organization (the console's playground) pays the same
//! way, once per attempt; a person outside it is refused before anything is held.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use creapic_core::audit::{Actor, RequestContext};
use creapic_core::generation::{AspectRatio, GenerationOutcome, Quality};
use creapic_core::id::GenerationId;
use creapic_core::key::KeyMode;
use creapic_core::ledger::EntryKind;
use creapic_core::org::Role;
use creapic_core::page::PageLimit;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::memory::MemoryStore;
use creapic_core::{Caller, Creapic, KeySpec, Principal};
use creapic_server_kit::generation::Error;
use creapic_server_kit::generation::item::{ImageSpec, PromptSource};
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::paid::{AttemptKeys, PaidGenerator, Resume};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::prompt::RuleComposer;
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::provider::{GeneratedImage, ImageProvider, ImageRequest};
use creapic_server_kit::generation::retry::RetryPolicy;
use creapic_server_kit::{Core, Limits, Pricing};

/// The offline renderer, counting its calls; or a model that always fails.
#[derive(Debug, Default)]
struct Model {
    fails: bool,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ImageProvider for Model {
    fn name(&self) -> &'static str {
        "model"
    }

    async fn generate(&self, req: &ImageRequest) -> Result<GeneratedImage, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fails {
            return Err(Error::ProviderFailed {
                provider: "model",
                message: "upstream exploded".into(),
            });
        }
        OfflineRenderer::new().generate(req).await
    }
}

/// A core with one organization holding `credits`, a live key's principal, and a pipeline
/// drawing with `model`.
async fn setup(model: Arc<Model>, credits: u64) -> (Core, Pipeline, Principal) {
    let core: Core = Arc::new(Creapic::new(Arc::new(MemoryStore::new())));
    let ctx = RequestContext::default();
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org("Acme", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    core.grant(Actor::Operator, org.id, credits, "grant", &ctx)
        .await
        .unwrap();
    let spec = KeySpec {
        name: "live".into(),
        scopes: ScopeSet::new([Scope::ImageGeneration]).unwrap(),
        mode: KeyMode::Live,
        expires_at: None,
    };
    let key = core
        .create_key(Actor::Operator, org.id, spec, &ctx)
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.secret.expose());
    let principal = core
        .authenticate(Some(bearer.as_bytes()), None)
        .await
        .unwrap();
    let media = MediaStore::in_memory(SigningKey::generate());
    let pipeline =
        Pipeline::new(Arc::new(RuleComposer), model, media).with_retry(RetryPolicy::none());
    (core, pipeline, principal)
}

fn hd_image() -> ImageSpec {
    ImageSpec {
        source: PromptSource::Text("A lighthouse at dusk, watercolor".into()),
        aspect_ratio: AspectRatio::Landscape16x9,
        quality: Quality::Hd,
    }
}

#[tokio::test]
async fn a_generation_is_captured_once_and_recorded_under_its_hold() {
    let model = Arc::new(Model::default());
    let (core, pipeline, principal) = setup(model.clone(), 10).await;
    let paid = PaidGenerator::new(&core, &pipeline, Pricing::default(), Limits::default());
    let keys = AttemptKeys::new("req:one");
    let done = paid
        .generate(&principal, &hd_image(), &keys, Resume::Once)
        .await
        .unwrap();
    let hd = Pricing::default().image_hd;
    assert_eq!(done.balance.get(), 10 - hd);
    assert!(matches!(
        &done.record.outcome,
        GenerationOutcome::Completed { tokens, .. } if tokens.get() == hd
    ));
    let read = core.generation(&principal, done.record.id).await.unwrap();
    assert_eq!(read, done.record);

    // The same attempt resumed (its response lost): answered from the record, not drawn again,
    // and not charged again.
    let again = paid
        .generate(&principal, &hd_image(), &keys, Resume::Resumable)
        .await
        .unwrap();
    assert_eq!(again.record, done.record);
    assert_eq!(again.balance.get(), 10 - hd);
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);
    assert_eq!(core.balance(principal.org).await.unwrap().get(), 10 - hd);
}

#[tokio::test]
async fn a_failed_provider_is_refunded_recorded_and_settled() {
    let model = Arc::new(Model {
        fails: true,
        ..Model::default()
    });
    let (core, pipeline, principal) = setup(model, 10).await;
    let paid = PaidGenerator::new(&core, &pipeline, Pricing::default(), Limits::default());
    let failure = paid
        .generate(
            &principal,
            &hd_image(),
            &AttemptKeys::new("req:two"),
            Resume::Once,
        )
        .await
        .unwrap_err();
    assert!(failure.is_settled());
    assert_eq!(failure.error().code(), "provider_failed");
    assert_eq!(core.balance(principal.org).await.unwrap().get(), 10);
    let entries = core
        .entries(principal.org, None, PageLimit::max())
        .await
        .unwrap();
    let holds: Vec<_> = entries
        .items
        .iter()
        .filter(|e| e.kind == EntryKind::Hold)
        .filter_map(|e| e.hold)
        .collect();
    let [hold] = holds.as_slice() else {
        panic!("one hold: {holds:?}");
    };
    let record = core
        .generation(&principal, GenerationId::of_hold(*hold))
        .await
        .unwrap();
    assert_eq!(
        record.outcome,
        GenerationOutcome::Failed {
            code: "provider_failed".into()
        }
    );
}

#[tokio::test]
async fn without_credits_nothing_is_drawn_or_charged() {
    let model = Arc::new(Model::default());
    let (core, pipeline, principal) = setup(model.clone(), 1).await;
    let paid = PaidGenerator::new(&core, &pipeline, Pricing::default(), Limits::default());
    let failure = paid
        .generate(
            &principal,
            &hd_image(),
            &AttemptKeys::new("req:three"),
            Resume::Once,
        )
        .await
        .unwrap_err();
    assert_eq!(failure.error().code(), "insufficient_credits");
    assert_eq!(model.calls.load(Ordering::SeqCst), 0);
    assert_eq!(core.balance(principal.org).await.unwrap().get(), 1);
}

#[tokio::test]
async fn a_member_pays_once_per_attempt_and_an_outsider_is_refused_before_any_hold() {
    let model = Arc::new(Model::default());
    let (core, pipeline, principal) = setup(model.clone(), 10).await;
    let org = principal.org;
    let ctx = RequestContext::default();
    let member = core
        .add_member(
            Actor::Operator,
            org,
            "member@example.com",
            Role::Member,
            &ctx,
        )
        .await
        .unwrap();
    let paid = PaidGenerator::new(&core, &pipeline, Pricing::default(), Limits::default());
    let hd = Pricing::default().image_hd;

    // A resubmitted console form derives the same attempt keys: drawn once, charged once.
    let me = Caller::member(member.user.id, org);
    let keys = AttemptKeys::new("console:member:nonce-1");
    let done = paid
        .generate(me, &hd_image(), &keys, Resume::Resumable)
        .await
        .unwrap();
    let again = paid
        .generate(me, &hd_image(), &keys, Resume::Resumable)
        .await
        .unwrap();
    assert_eq!(again.record, done.record);
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);
    assert_eq!(core.balance(org).await.unwrap().get(), 10 - hd);
    assert_eq!(
        core.generation(me, done.record.id).await.unwrap(),
        done.record
    );

    // Somebody who is not a member: refused, settled, nothing held or drawn.
    let stranger = core.ensure_user("stranger@example.com").await.unwrap();
    let refused = paid
        .generate(
            Caller::member(stranger.id, org),
            &hd_image(),
            &AttemptKeys::new("console:stranger:nonce-1"),
            Resume::Resumable,
        )
        .await
        .unwrap_err();
    assert!(refused.is_settled());
    assert_eq!(refused.error().code(), "not_found");
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);
    assert_eq!(core.balance(org).await.unwrap().get(), 10 - hd);
    assert_eq!(core.held(org).await.unwrap().get(), 0);
}
