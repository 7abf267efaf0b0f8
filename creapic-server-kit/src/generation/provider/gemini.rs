//! Gemini: `POST {base}/v1beta/models/{model}:generateContent`, authenticated with
//! `x-goog-api-key`, for images (`responseModalities: ["IMAGE"]`) and for prompt composition
//! (JSON output with a response schema, used by `prompt::GeminiComposer`).
//!
//! The design decision that shapes it: **"no image" is an answer, not a parse error.** Gemini
//! answers a refused prompt with HTTP 200 and either `promptFeedback.blockReason` or a candidate
//! whose `finishReason` says why it stopped; both become [`Error::ProviderBlocked`] with that
//! reason, so the runner fails (and refunds) the item instead of retrying a prompt that will be
//! refused again. `429 RESOURCE_EXHAUSTED` carrying `RetryInfo.retryDelay` is waited out here,
//! within [`HttpSettings`]' bounds.

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::{self, HttpSettings};
use super::{GeneratedImage, ImageProvider, ImageRequest, prompt_text};
use crate::generation::Error;

const PROVIDER: &str = "gemini";

/// The public Gemini API.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// The default image model.
pub const DEFAULT_IMAGE_MODEL: &str = "gemini-2.5-flash-image";
/// The default text model for prompt composition.
pub const DEFAULT_TEXT_MODEL: &str = "gemini-2.5-flash";

/// How to reach Gemini.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
    /// Base URL without a trailing slash (tests point it at a mock server).
    pub base_url: String,
    /// The image model.
    pub image_model: String,
    /// The text model used by `prompt::GeminiComposer`.
    pub text_model: String,
    /// The API key (from `GEMINI_API_KEY`).
    pub api_key: SecretString,
    /// Send `imageConfig.imageSize` (`1K` standard, `2K` hd): for models that accept it
    /// (e.g. `gemini-3-pro-image-preview`); `gemini-2.5-flash-image` does not.
    pub send_image_size: bool,
    /// Timeouts and limits.
    pub http: HttpSettings,
}

impl GeminiConfig {
    /// The defaults with `api_key`.
    pub fn new(api_key: SecretString) -> Self {
        GeminiConfig {
            base_url: DEFAULT_BASE_URL.into(),
            image_model: DEFAULT_IMAGE_MODEL.into(),
            text_model: DEFAULT_TEXT_MODEL.into(),
            api_key,
            send_image_size: false,
            http: HttpSettings::default(),
        }
    }

    /// `GEMINI_API_KEY` (required), `GEMINI_BASE_URL`, `GEMINI_IMAGE_MODEL`,
    /// `GEMINI_TEXT_MODEL` (optional).
    pub fn from_env() -> Result<Self, Error> {
        let key = std::env::var("GEMINI_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or(Error::InvalidParameter {
                name: "GEMINI_API_KEY",
                message: "must be set to use the gemini provider".into(),
            })?;
        let mut config = GeminiConfig::new(SecretString::from(key));
        if let Ok(url) = std::env::var("GEMINI_BASE_URL") {
            config.base_url = url;
        }
        if let Ok(model) = std::env::var("GEMINI_IMAGE_MODEL") {
            config.image_model = model;
        }
        if let Ok(model) = std::env::var("GEMINI_TEXT_MODEL") {
            config.text_model = model;
        }
        Ok(config)
    }
}

/// A `generateContent` client shared by the image provider and the prompt composer.
#[derive(Debug, Clone)]
pub(crate) struct GeminiClient {
    http: reqwest::Client,
    config: GeminiConfig,
}

/// The parts of a `generateContent` response creapic reads.
#[derive(Debug, Deserialize)]
pub(crate) struct GenerateResponse {
    #[serde(default)]
    pub(crate) candidates: Vec<Candidate>,
    #[serde(rename = "promptFeedback", alias = "prompt_feedback", default)]
    pub(crate) prompt_feedback: Option<PromptFeedback>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PromptFeedback {
    #[serde(rename = "blockReason", alias = "block_reason")]
    pub(crate) block_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Candidate {
    pub(crate) content: Option<Content>,
    #[serde(rename = "finishReason", alias = "finish_reason")]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Content {
    #[serde(default)]
    pub(crate) parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Part {
    pub(crate) text: Option<String>,
    #[serde(rename = "inlineData", alias = "inline_data")]
    pub(crate) inline_data: Option<InlineData>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InlineData {
    pub(crate) data: String,
}

impl GenerateResponse {
    /// `ProviderBlocked` when the prompt itself was blocked.
    pub(crate) fn check_prompt_feedback(&self) -> Result<(), Error> {
        match self
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
        {
            Some(reason) if self.candidates.is_empty() || reason != "BLOCK_REASON_UNSPECIFIED" => {
                Err(Error::ProviderBlocked {
                    provider: PROVIDER,
                    reason: transport::excerpt(reason).to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The first candidate's parts, or `ProviderBlocked` with its finish reason.
    pub(crate) fn parts(&self) -> impl Iterator<Item = &Part> {
        self.candidates
            .iter()
            .take(1)
            .filter_map(|c| c.content.as_ref())
            .flat_map(|c| c.parts.iter())
    }

    fn no_output(&self, what: &str) -> Error {
        let reason = self
            .candidates
            .first()
            .and_then(|c| c.finish_reason.clone())
            .filter(|r| r != "STOP")
            .unwrap_or_else(|| format!("NO_{what}"));
        Error::ProviderBlocked {
            provider: PROVIDER,
            reason,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<Value>,
}

impl GeminiClient {
    pub(crate) fn new(config: GeminiConfig) -> Result<Self, Error> {
        Ok(GeminiClient {
            http: transport::client(&config.http)?,
            config,
        })
    }

    pub(crate) fn config(&self) -> &GeminiConfig {
        &self.config
    }

    /// One `generateContent` call on `model`, with rate-limit waits.
    pub(crate) async fn generate_content(
        &self,
        model: &str,
        body: &Value,
    ) -> Result<GenerateResponse, Error> {
        transport::retry_rate_limited(&self.config.http, || self.once(model, body)).await
    }

    async fn once(&self, model: &str, body: &Value) -> Result<GenerateResponse, Error> {
        let url = format!(
            "{}/v1beta/models/{}:generateContent",
            self.config.base_url.trim_end_matches('/'),
            model
        );
        let request = self
            .http
            .post(url)
            .header("x-goog-api-key", self.config.api_key.expose_secret())
            .json(body);
        let reply = transport::send(PROVIDER, request, self.config.http.response_max_bytes).await?;
        if !reply.status.is_success() {
            return Err(error_from(reply.status, &reply.body));
        }
        serde_json::from_slice(&reply.body).map_err(|e| Error::ProviderInvalidResponse {
            provider: PROVIDER,
            message: format!("malformed JSON: {e}"),
        })
    }
}

/// The typed error for a non-success reply; 429 carries `RetryInfo.retryDelay` when present.
fn error_from(status: StatusCode, body: &[u8]) -> Error {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .map(|b| b.error.message.clone())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = parsed.as_ref().and_then(|b| {
            b.error.details.iter().find_map(|d| {
                let is_retry_info = d
                    .get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"));
                d.get("retryDelay")
                    .and_then(Value::as_str)
                    .filter(|_| is_retry_info)
                    .and_then(transport::parse_proto_duration)
            })
        });
        return Error::ProviderRateLimited {
            provider: PROVIDER,
            retry_after,
        };
    }
    transport::status_error(PROVIDER, status, &message)
}

/// Gemini image generation.
#[derive(Debug, Clone)]
pub struct GeminiProvider {
    client: GeminiClient,
}

impl GeminiProvider {
    /// A provider for `config`.
    pub fn new(config: GeminiConfig) -> Result<Self, Error> {
        Ok(GeminiProvider {
            client: GeminiClient::new(config)?,
        })
    }

    fn request_body(&self, req: &ImageRequest) -> Result<Value, Error> {
        let mut image_config = json!({ "aspectRatio": req.aspect_ratio.as_str() });
        if self.client.config().send_image_size {
            image_config["imageSize"] = json!(match req.quality {
                creapic_core::generation::Quality::Standard => "1K",
                creapic_core::generation::Quality::Hd => "2K",
            });
        }
        Ok(json!({
            "contents": [{ "role": "user", "parts": [{ "text": prompt_text(&req.prompt)? }] }],
            "generationConfig": {
                "responseModalities": ["IMAGE"],
                "imageConfig": image_config,
            },
        }))
    }
}

#[async_trait]
impl ImageProvider for GeminiProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn generate(&self, req: &ImageRequest) -> Result<GeneratedImage, Error> {
        let body = self.request_body(req)?;
        let model = self.client.config().image_model.clone();
        let response = self.client.generate_content(&model, &body).await?;
        response.check_prompt_feedback()?;
        let data = response
            .parts()
            .find_map(|p| p.inline_data.as_ref())
            .ok_or_else(|| response.no_output("IMAGE"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.data.trim())
            .map_err(|e| Error::ProviderInvalidResponse {
                provider: PROVIDER,
                message: format!("inline data is not base64: {e}"),
            })?;
        GeneratedImage::from_bytes(Bytes::from(bytes)).map_err(|e| Error::ProviderInvalidResponse {
            provider: PROVIDER,
            message: e.to_string(),
        })
    }
}

/// The text of the first candidate, or `ProviderBlocked` (used by the composer).
pub(crate) fn first_text(response: &GenerateResponse) -> Result<String, Error> {
    response.check_prompt_feedback()?;
    let text: String = response.parts().filter_map(|p| p.text.as_deref()).collect();
    if text.trim().is_empty() {
        return Err(response.no_output("TEXT"));
    }
    Ok(text)
}
