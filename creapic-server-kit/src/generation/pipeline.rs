//! The generation pipeline: prompt → provider → media, for one image or one scene.
//!
//! Both the job runner and any synchronous HTTP handler call [`Pipeline`]; neither talks to a
//! provider or to storage directly. The design decision that shapes it: **the key's mode picks
//! the provider, here and nowhere else.** Test-mode work (`wi_test_` keys) always uses the rule
//! composer and the offline renderer, whatever is configured for live keys, so test keys never
//! cost provider money and never depend on an account. Transient failures of the provider and
//! of storage are retried here under one [`RetryPolicy`]; the pipeline returns either a stored
//! result or a typed error that the caller turns into a failed (refunded) item.

use std::sync::Arc;

use bytes::Bytes;
use creapic_core::generation::{AspectRatio, Quality};
use creapic_core::id::OrgId;
use creapic_core::key::KeyMode;
use serde_json::Value;

use crate::generation::Error;
use crate::generation::item::{ImageSpec, ItemOutput, PromptSource};
use crate::generation::media::{MediaStore, MediaType};
use crate::generation::prompt::{self, PromptComposer, RuleComposer};
use crate::generation::provider::offline::OfflineRenderer;
use crate::generation::provider::{GeneratedImage, ImageProvider, ImageRequest, ProviderConfig};
use crate::generation::render::composite::{self, Placement};
use crate::generation::retry::RetryPolicy;
use crate::generation::scene::SceneSpec;

/// Longest a render waits for an upload its request has not finished staging.
pub const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What one generation produced and where it is stored.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The JSON prompt that was sent (`generation.prompt`).
    pub prompt: Value,
    /// The stored image and prompt.
    pub output: ItemOutput,
}

/// Composer, providers and media storage, wired together.
#[derive(Debug, Clone)]
pub struct Pipeline {
    composer: Arc<dyn PromptComposer>,
    live: Arc<dyn ImageProvider>,
    offline: Arc<dyn ImageProvider>,
    media: MediaStore,
    retry: RetryPolicy,
}

impl Pipeline {
    /// Live keys use `composer` and `live`; test keys the rules and the offline renderer.
    pub fn new(
        composer: Arc<dyn PromptComposer>,
        live: Arc<dyn ImageProvider>,
        media: MediaStore,
    ) -> Self {
        Pipeline {
            composer,
            live,
            offline: Arc::new(OfflineRenderer::default()),
            media,
            retry: RetryPolicy::default(),
        }
    }

    /// The pipeline a [`ProviderConfig`] describes (see [`ProviderConfig::from_env`]).
    pub fn from_config(config: &ProviderConfig, media: MediaStore) -> Result<Self, Error> {
        Ok(Pipeline::new(config.composer()?, config.build()?, media))
    }

    /// Everything offline: the rule composer and the offline renderer for every key.
    pub fn offline(media: MediaStore) -> Self {
        Pipeline::new(
            Arc::new(RuleComposer),
            Arc::new(OfflineRenderer::default()),
            media,
        )
    }

    /// Uses `renderer` for test keys (and for live keys when live is the offline renderer
    /// too; set that with [`Pipeline::new`]).
    pub fn with_offline_renderer(mut self, renderer: OfflineRenderer) -> Self {
        if self.live.name() == "offline" {
            self.live = Arc::new(renderer);
        }
        self.offline = Arc::new(renderer);
        self
    }

    /// The retry policy for provider and storage calls.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The media store.
    pub fn media(&self) -> &MediaStore {
        &self.media
    }

    /// The provider for a key mode.
    pub fn provider_for(&self, mode: KeyMode) -> &Arc<dyn ImageProvider> {
        match mode {
            KeyMode::Live => &self.live,
            KeyMode::Test => &self.offline,
        }
    }

    /// The JSON prompt for a source: composed from text (by the configured composer for live
    /// keys, by the rules for test keys) or a ready-made one normalized.
    pub async fn prompt_for(
        &self,
        mode: KeyMode,
        source: &PromptSource,
        aspect: AspectRatio,
        quality: Quality,
    ) -> Result<Value, Error> {
        match source {
            PromptSource::Json(value) => prompt::normalize(value.clone(), aspect, quality),
            PromptSource::Text(text) => {
                let composed = match mode {
                    KeyMode::Live => {
                        self.retry
                            .run("compose", || self.composer.compose(text, aspect, quality))
                            .await?
                    }
                    KeyMode::Test => RuleComposer.compose(text, aspect, quality).await?,
                };
                Ok(composed.to_value())
            }
        }
    }

    /// Draws with the mode's provider, retrying transient failures. A provider that panics is a
    /// failed provider (502 `provider_failed`, not retried): the panic is caught here so that
    /// whoever holds credits for this image (a request's hold, a job item) releases them
    /// instead of unwinding past the release.
    ///
    /// The call's time, retries included and whatever its outcome, goes to
    /// `creapic_generation_duration_seconds{provider}` ([`crate::telemetry::GENERATION_DURATION`]).
    async fn draw(&self, mode: KeyMode, req: &ImageRequest) -> Result<GeneratedImage, Error> {
        let provider = self.provider_for(mode);
        let attempts =
            std::panic::AssertUnwindSafe(self.retry.run("generate", || provider.generate(req)));
        let started = std::time::Instant::now();
        let drawn = futures::FutureExt::catch_unwind(attempts).await;
        metrics::histogram!(crate::telemetry::GENERATION_DURATION, "provider" => provider.name())
            .record(started.elapsed().as_secs_f64());
        drawn.unwrap_or_else(|_| {
            Err(Error::ProviderFailed {
                provider: provider.name(),
                message: "the provider panicked".into(),
            })
        })
    }

    async fn store(
        &self,
        org: OrgId,
        mode: KeyMode,
        prompt: Value,
        image: Bytes,
        media_type: MediaType,
        (width, height): (u32, u32),
    ) -> Result<Generated, Error> {
        let prompt_bytes =
            Bytes::from(serde_json::to_vec(&prompt).map_err(|e| Error::Internal {
                message: e.to_string(),
            })?);
        let media = self
            .retry
            .run("store image", || {
                self.media.put(org, image.clone(), media_type)
            })
            .await?;
        let prompt_key = self
            .retry
            .run("store prompt", || {
                self.media.put(org, prompt_bytes.clone(), MediaType::Json)
            })
            .await?;
        Ok(Generated {
            prompt,
            output: ItemOutput {
                media,
                prompt: prompt_key,
                content_type: media_type.mime().to_owned(),
                width,
                height,
                provider: self.provider_for(mode).name().to_owned(),
            },
        })
    }

    /// Generates and stores one image for `org`.
    pub async fn generate(
        &self,
        org: OrgId,
        mode: KeyMode,
        spec: &ImageSpec,
    ) -> Result<Generated, Error> {
        let prompt = self
            .prompt_for(mode, &spec.source, spec.aspect_ratio, spec.quality)
            .await?;
        let req = ImageRequest {
            prompt,
            aspect_ratio: spec.aspect_ratio,
            quality: spec.quality,
        };
        let image = self.draw(mode, &req).await?;
        self.store(
            org,
            mode,
            req.prompt,
            image.bytes,
            image.media_type,
            (image.width, image.height),
        )
        .await
    }

    /// Renders one scene for `org`: the provider draws the background, the layers (read from
    /// `org`'s media and the render's uploads only) are composited locally, and the result is
    /// stored as PNG. The render's uploads are deleted afterwards, whatever the outcome: the
    /// item is final either way (a crash before this point leaves them to the sweep).
    pub async fn render_scene(
        &self,
        org: OrgId,
        mode: KeyMode,
        spec: &SceneSpec,
    ) -> Result<Generated, Error> {
        let rendered = self.render_scene_once(org, mode, spec).await;
        let uploads: std::collections::BTreeSet<_> = spec
            .layers
            .iter()
            .filter_map(|l| l.upload.as_ref())
            .collect();
        for upload in uploads {
            if let Err(e) = self.media.delete_uploads(org, upload).await {
                tracing::warn!(error = %e, "could not delete a render's uploads; the sweep will");
            }
        }
        rendered
    }

    /// A layer's image: media of `org`, or an upload of the render's request. An upload may
    /// not be written yet when a runner picks the job up the moment it is submitted (the
    /// request stages uploads right after the submit), so "not found" is waited out for a
    /// bounded time ([`UPLOAD_WAIT`]) before it fails the item.
    async fn layer_image(
        &self,
        org: OrgId,
        layer: &crate::generation::scene::Layer,
    ) -> Result<crate::generation::media::Media, Error> {
        let Some(upload) = &layer.upload else {
            return self
                .retry
                .run("read layer", || self.media.get(org, &layer.media))
                .await;
        };
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(50);
        loop {
            let read = self.media.get_upload(org, upload, &layer.media).await;
            let worth_waiting = match &read {
                Err(Error::Core(creapic_core::Error::NotFound { .. })) => true,
                Err(e) => crate::generation::retry::is_transient(e),
                Ok(_) => false,
            };
            if !worth_waiting || started.elapsed() >= UPLOAD_WAIT {
                return read;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(1));
        }
    }

    async fn render_scene_once(
        &self,
        org: OrgId,
        mode: KeyMode,
        spec: &SceneSpec,
    ) -> Result<Generated, Error> {
        spec.validate()?;
        let source = match &spec.background {
            Value::String(text) => PromptSource::Text(text.clone()),
            other => PromptSource::Json(other.clone()),
        };
        let prompt = self
            .prompt_for(mode, &source, spec.aspect_ratio, spec.quality)
            .await?;
        let req = ImageRequest {
            prompt,
            aspect_ratio: spec.aspect_ratio,
            quality: spec.quality,
        };
        // The layers first, and their pixel budget from their headers on the canvas the spec
        // asks for: a scene over it fails before the provider is paid to draw its background.
        // (The compositor checks again on the background actually drawn.)
        let mut placements = Vec::with_capacity(spec.layers.len());
        let mut sizes = Vec::with_capacity(spec.layers.len());
        for layer in &spec.layers {
            let media = self.layer_image(org, layer).await?;
            let (_, w, h) = crate::generation::render::probe(&media.bytes)?;
            sizes.push(((w, h), layer.scale));
            placements.push(Placement {
                image: media.bytes,
                x: layer.x,
                y: layer.y,
                scale: layer.scale,
                opacity: layer.opacity,
            });
        }
        let (canvas_width, _) = spec.aspect_ratio.size(spec.quality.long_side());
        if composite::layer_pixels(canvas_width, sizes) > composite::SCENE_PIXELS_MAX {
            return Err(composite::over_budget());
        }
        let background = self.draw(mode, &req).await?;
        let composed = tokio::task::spawn_blocking(move || {
            composite::composite(&background.bytes, &placements)
        })
        .await
        .map_err(|e| Error::Internal {
            message: format!("compositor task: {e}"),
        })??;
        self.store(
            org,
            mode,
            req.prompt,
            Bytes::from(composed.png),
            MediaType::Png,
            (composed.width, composed.height),
        )
        .await
    }
}
