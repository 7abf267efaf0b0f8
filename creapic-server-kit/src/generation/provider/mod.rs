//! Image generation providers: one trait, [`ImageProvider`], and its adapters.
//!
//! - [`offline::OfflineRenderer`]: no network, a deterministic image drawn from the JSON prompt.
//!   Always compiled: it is the embedded default and what `wi_test_` keys always use.
//! - `gemini::GeminiProvider` (feature `gemini`): Gemini's `generateContent` with image output.
//! - `openai::OpenAiProvider` (feature `openai`): `POST /v1/images/generations` on OpenAI or any
//!   self-hosted server that speaks the same API.
//!
//! The design decision that shapes it: **a provider turns one JSON prompt into one encoded image
//! and classifies every failure into a typed [`Error`]**; it knows nothing about jobs, credits or
//! storage. Retrying is split on purpose: an adapter only waits out a rate limit whose delay the
//! provider itself announced (Gemini's `RetryInfo.retryDelay`, OpenAI's `Retry-After`), because
//! only the adapter can read it; every other transient failure (timeouts, 5xx) goes back to the
//! job runner, which retries with its own bounded backoff and decides when an item has failed.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use creapic_core::generation::{AspectRatio, Quality};
use serde_json::Value;

use crate::generation::Error;
use crate::generation::media::MediaType;

#[cfg(feature = "gemini")]
pub mod gemini;
pub mod offline;
#[cfg(feature = "openai")]
pub mod openai;
pub(crate) mod transport;

pub use transport::HttpSettings;

/// Longest prompt text sent to a remote model, in bytes (the JSON prompt, serialized).
pub const PROMPT_TEXT_MAX_BYTES: usize = 16 * 1024;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    /// The JSON prompt (see `prompt::JsonPrompt`); any JSON object is accepted.
    pub prompt: Value,
    /// The requested aspect ratio.
    pub aspect_ratio: AspectRatio,
    /// The requested quality.
    pub quality: Quality,
}

/// An encoded image a provider returned, checked to decode to a sane size.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// The encoded image.
    pub bytes: Bytes,
    /// PNG, JPEG or WebP.
    pub media_type: MediaType,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl GeneratedImage {
    /// Checks `bytes` are an image of a supported format and size, and records what they are.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, Error> {
        let (media_type, width, height) = crate::generation::render::probe(&bytes)?;
        Ok(GeneratedImage {
            bytes,
            media_type,
            width,
            height,
        })
    }

    /// The MIME type, e.g. `image/png`.
    pub fn content_type(&self) -> &'static str {
        self.media_type.mime()
    }
}

/// Something that turns a JSON prompt into an image.
///
/// Implementations must be cancel-safe (the runner drops the future on shutdown or when a job's
/// lease is lost) and must bound their own time and memory.
#[async_trait]
pub trait ImageProvider: Send + Sync + std::fmt::Debug + 'static {
    /// A short stable name (`offline`, `gemini`, `openai`) for logs and item outputs.
    fn name(&self) -> &'static str;

    /// Generates one image.
    async fn generate(&self, req: &ImageRequest) -> Result<GeneratedImage, Error>;
}

/// Compile-time proof that providers stay object-safe: hosts hold `Arc<dyn ImageProvider>`.
#[allow(dead_code)]
fn _object_safe(_: &dyn ImageProvider) {}

/// The text a remote model receives for a JSON prompt: a one-line instruction and the JSON.
pub fn prompt_text(prompt: &Value) -> Result<String, Error> {
    // A ready prompt given as text is sent exactly as the caller wrote it.
    if let Value::String(text) = prompt {
        if text.len() > PROMPT_TEXT_MAX_BYTES {
            return Err(Error::InvalidJson {
                path: "prompt".into(),
                message: format!("the prompt exceeds {PROMPT_TEXT_MAX_BYTES} bytes"),
            });
        }
        return Ok(text.clone());
    }
    let json = serde_json::to_string(prompt).map_err(|e| Error::Internal {
        message: e.to_string(),
    })?;
    let text = format!(
        "Generate one image that follows this JSON description. Respect every field; \
         never render the text of `negative`.\n{json}"
    );
    if text.len() > PROMPT_TEXT_MAX_BYTES {
        return Err(Error::InvalidJson {
            path: "prompt".into(),
            message: format!("the JSON prompt exceeds {PROMPT_TEXT_MAX_BYTES} bytes"),
        });
    }
    Ok(text)
}

/// Which provider serves live keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ProviderConfig {
    /// The offline renderer (the default).
    Offline(offline::OfflineRenderer),
    /// Gemini.
    #[cfg(feature = "gemini")]
    Gemini(gemini::GeminiConfig),
    /// An OpenAI-compatible images API.
    #[cfg(feature = "openai")]
    OpenAi(openai::OpenAiConfig),
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig::Offline(offline::OfflineRenderer::default())
    }
}

impl ProviderConfig {
    /// From the environment: `CREAPIC_PROVIDER` = `offline` (the default), `gemini` (needs
    /// `GEMINI_API_KEY`; `GEMINI_BASE_URL`, `GEMINI_IMAGE_MODEL` optional) or `openai` (needs
    /// `OPENAI_API_KEY` unless `OPENAI_BASE_URL` points at a server without keys;
    /// `OPENAI_IMAGE_MODEL`, `OPENAI_IMAGE_SIZES` optional). The provider is never chosen from
    /// which keys happen to be set: an explicit choice, or offline.
    pub fn from_env() -> Result<Self, Error> {
        let choice = std::env::var("CREAPIC_PROVIDER").unwrap_or_default();
        match choice.trim() {
            "" | "offline" => Ok(ProviderConfig::default()),
            #[cfg(feature = "gemini")]
            "gemini" => Ok(ProviderConfig::Gemini(gemini::GeminiConfig::from_env()?)),
            #[cfg(feature = "openai")]
            "openai" => Ok(ProviderConfig::OpenAi(openai::OpenAiConfig::from_env()?)),
            other => Err(Error::InvalidParameter {
                name: "CREAPIC_PROVIDER",
                message: format!(
                    "unknown or not compiled in: {other:?} (features gemini/openai enable those)"
                ),
            }),
        }
    }

    /// The prompt composer that goes with it: Gemini's text model when Gemini is configured,
    /// the deterministic rules otherwise.
    pub fn composer(&self) -> Result<Arc<dyn crate::generation::prompt::PromptComposer>, Error> {
        Ok(match self {
            #[cfg(feature = "gemini")]
            ProviderConfig::Gemini(c) => {
                Arc::new(crate::generation::prompt::GeminiComposer::new(c.clone())?)
            }
            _ => Arc::new(crate::generation::prompt::RuleComposer),
        })
    }

    /// The provider.
    pub fn build(&self) -> Result<Arc<dyn ImageProvider>, Error> {
        Ok(match self {
            ProviderConfig::Offline(r) => Arc::new(*r),
            #[cfg(feature = "gemini")]
            ProviderConfig::Gemini(c) => Arc::new(gemini::GeminiProvider::new(c.clone())?),
            #[cfg(feature = "openai")]
            ProviderConfig::OpenAi(c) => Arc::new(openai::OpenAiProvider::new(c.clone())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_offline() {
        let config = ProviderConfig::default();
        assert_eq!(config.build().unwrap().name(), "offline");
        assert_eq!(config.composer().unwrap().name(), "rules");
    }

    #[test]
    fn prompt_text_is_bounded() {
        let ok = prompt_text(&serde_json::json!({"subject": "a lemon"})).unwrap();
        assert!(ok.contains(r#"{"subject":"a lemon"}"#));
        let big = serde_json::json!({"subject": "x".repeat(PROMPT_TEXT_MAX_BYTES)});
        assert!(prompt_text(&big).is_err());
    }
}
