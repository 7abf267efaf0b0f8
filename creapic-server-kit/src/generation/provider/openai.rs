//! OpenAI-compatible image generation: `POST {base}/v1/images/generations` with `model`,
//! `prompt`, `size`, `quality`, reading `data[0].b64_json`. The base URL is configurable, so the
//! same adapter serves OpenAI and self-hosted servers that speak its API.
//!
//! The design decision that shapes it: **aspect ratios are mapped onto the sizes the model
//! accepts, chosen by a [`SizeTable`]**, because each model family accepts a different fixed set
//! (gpt-image: 1024², 1536×1024, 1024×1536; dall-e-3: 1024², 1792×1024, 1024×1792) and most
//! self-hosted servers accept any `WxH`. The returned image's real size is read from its bytes
//! and reported as is; it is never resized behind the caller's back. Images are only accepted
//! inline (`b64_json`): following a returned URL would let the upstream make us fetch anything.

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use creapic_core::generation::{AspectRatio, Quality};
use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::{self, HttpSettings};
use super::{GeneratedImage, ImageProvider, ImageRequest, prompt_text};
use crate::generation::Error;

const PROVIDER: &str = "openai";

/// The public OpenAI API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com";
/// The default model.
pub const DEFAULT_MODEL: &str = "gpt-image-1";

/// Which sizes (and quality words) the model accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeTable {
    /// gpt-image models: `1024x1024`, `1536x1024`, `1024x1536`; quality `medium`/`high`.
    GptImage,
    /// dall-e-3: `1024x1024`, `1792x1024`, `1024x1792`; quality `standard`/`hd`;
    /// `response_format: b64_json`.
    DallE3,
    /// Any `WxH` (self-hosted servers): the exact size of the aspect ratio at the quality's long
    /// side; quality `standard`/`hd`; `response_format: b64_json`.
    Exact,
}

impl SizeTable {
    /// The table a model name implies (`gpt-image*`, `dall-e-3*`, anything else exact).
    pub fn for_model(model: &str) -> Self {
        if model.starts_with("gpt-image") {
            SizeTable::GptImage
        } else if model.starts_with("dall-e-3") {
            SizeTable::DallE3
        } else {
            SizeTable::Exact
        }
    }

    /// Parses `gpt-image`, `dall-e-3` or `exact`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "gpt-image" => Some(SizeTable::GptImage),
            "dall-e-3" => Some(SizeTable::DallE3),
            "exact" => Some(SizeTable::Exact),
            _ => None,
        }
    }

    /// The `size` parameter for `aspect` at `quality`: square, landscape or portrait for the
    /// fixed tables (a ratio within 10 % of square counts as square), exact otherwise.
    pub fn size(self, aspect: AspectRatio, quality: Quality) -> String {
        let (w, h) = aspect.ratio();
        let r = w as f32 / h as f32;
        let shape = if r > 1.1 {
            1
        } else if r < 0.9 {
            -1
        } else {
            0
        };
        match (self, shape) {
            (SizeTable::GptImage | SizeTable::DallE3, 0) => "1024x1024".into(),
            (SizeTable::GptImage, 1) => "1536x1024".into(),
            (SizeTable::GptImage, _) => "1024x1536".into(),
            (SizeTable::DallE3, 1) => "1792x1024".into(),
            (SizeTable::DallE3, _) => "1024x1792".into(),
            (SizeTable::Exact, _) => {
                let (w, h) = aspect.size(quality.long_side());
                format!("{w}x{h}")
            }
        }
    }

    fn quality(self, quality: Quality) -> &'static str {
        match (self, quality) {
            (SizeTable::GptImage, Quality::Standard) => "medium",
            (SizeTable::GptImage, Quality::Hd) => "high",
            (_, q) => q.as_str(),
        }
    }
}

/// How to reach an OpenAI-compatible images API.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL without a trailing slash and without `/v1`.
    pub base_url: String,
    /// The model.
    pub model: String,
    /// The API key (from `OPENAI_API_KEY`); `None` for servers that need none.
    pub api_key: Option<SecretString>,
    /// Which sizes the model accepts.
    pub sizes: SizeTable,
    /// Timeouts and limits.
    pub http: HttpSettings,
}

impl OpenAiConfig {
    /// OpenAI with the default model and `api_key`.
    pub fn new(api_key: Option<SecretString>) -> Self {
        OpenAiConfig {
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            api_key,
            sizes: SizeTable::for_model(DEFAULT_MODEL),
            http: HttpSettings::default(),
        }
    }

    /// `OPENAI_API_KEY` (required unless `OPENAI_BASE_URL` is set), `OPENAI_BASE_URL`,
    /// `OPENAI_IMAGE_MODEL`, `OPENAI_IMAGE_SIZES` (`gpt-image`, `dall-e-3`, `exact`).
    pub fn from_env() -> Result<Self, Error> {
        let key = std::env::var("OPENAI_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(SecretString::from);
        let base = std::env::var("OPENAI_BASE_URL").ok();
        if key.is_none() && base.is_none() {
            return Err(Error::InvalidParameter {
                name: "OPENAI_API_KEY",
                message: "must be set to use the openai provider".into(),
            });
        }
        let mut config = OpenAiConfig::new(key);
        if let Some(base) = base {
            config.base_url = base;
        }
        if let Ok(model) = std::env::var("OPENAI_IMAGE_MODEL") {
            config.sizes = SizeTable::for_model(&model);
            config.model = model;
        }
        if let Ok(table) = std::env::var("OPENAI_IMAGE_SIZES") {
            config.sizes = SizeTable::parse(&table).ok_or(Error::InvalidParameter {
                name: "OPENAI_IMAGE_SIZES",
                message: "expected gpt-image, dall-e-3 or exact".into(),
            })?;
        }
        Ok(config)
    }
}

#[derive(Debug, Deserialize)]
struct ImagesResponse {
    #[serde(default)]
    data: Vec<ImageData>,
}

#[derive(Debug, Deserialize)]
struct ImageData {
    b64_json: Option<String>,
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
    code: Option<Value>,
}

/// Codes with which OpenAI refuses a prompt on policy grounds.
const BLOCKED_CODES: &[&str] = &["content_policy_violation", "moderation_blocked"];

/// An OpenAI-compatible images API.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    http: reqwest::Client,
    config: OpenAiConfig,
}

impl OpenAiProvider {
    /// A provider for `config`.
    pub fn new(config: OpenAiConfig) -> Result<Self, Error> {
        Ok(OpenAiProvider {
            http: transport::client(&config.http)?,
            config,
        })
    }

    fn request_body(&self, req: &ImageRequest) -> Result<Value, Error> {
        let sizes = self.config.sizes;
        let mut body = json!({
            "model": self.config.model,
            "prompt": prompt_text(&req.prompt)?,
            "n": 1,
            "size": sizes.size(req.aspect_ratio, req.quality),
            "quality": sizes.quality(req.quality),
        });
        if sizes != SizeTable::GptImage {
            body["response_format"] = json!("b64_json");
        }
        Ok(body)
    }

    async fn once(&self, body: &Value) -> Result<GeneratedImage, Error> {
        let url = format!(
            "{}/v1/images/generations",
            self.config.base_url.trim_end_matches('/')
        );
        let mut request = self.http.post(url).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let reply = transport::send(PROVIDER, request, self.config.http.response_max_bytes).await?;
        if !reply.status.is_success() {
            return Err(error_from(reply.status, &reply.headers, &reply.body));
        }
        let parsed: ImagesResponse =
            serde_json::from_slice(&reply.body).map_err(|e| Error::ProviderInvalidResponse {
                provider: PROVIDER,
                message: format!("malformed JSON: {e}"),
            })?;
        let b64 = parsed
            .data
            .first()
            .and_then(|d| d.b64_json.as_deref())
            .ok_or(Error::ProviderInvalidResponse {
                provider: PROVIDER,
                message: "no data[0].b64_json in the response".into(),
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| Error::ProviderInvalidResponse {
                provider: PROVIDER,
                message: format!("b64_json is not base64: {e}"),
            })?;
        GeneratedImage::from_bytes(Bytes::from(bytes)).map_err(|e| Error::ProviderInvalidResponse {
            provider: PROVIDER,
            message: e.to_string(),
        })
    }
}

fn error_from(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Error {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Error::ProviderRateLimited {
            provider: PROVIDER,
            retry_after: transport::retry_after_header(headers),
        };
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    if let Some(code) = parsed
        .as_ref()
        .and_then(|b| b.error.code.as_ref())
        .and_then(Value::as_str)
        && BLOCKED_CODES.contains(&code)
    {
        return Error::ProviderBlocked {
            provider: PROVIDER,
            reason: code.to_owned(),
        };
    }
    let message = parsed
        .map(|b| b.error.message)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    transport::status_error(PROVIDER, status, &message)
}

#[async_trait]
impl ImageProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn generate(&self, req: &ImageRequest) -> Result<GeneratedImage, Error> {
        let body = self.request_body(req)?;
        transport::retry_rate_limited(&self.config.http, || self.once(&body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_ratios_map_to_accepted_sizes() {
        use AspectRatio as A;
        let g = SizeTable::GptImage;
        assert_eq!(g.size(A::Square, Quality::Standard), "1024x1024");
        assert_eq!(g.size(A::Landscape16x9, Quality::Hd), "1536x1024");
        assert_eq!(g.size(A::Portrait4x5, Quality::Hd), "1024x1536");
        assert_eq!(g.size(A::Landscape5x4, Quality::Hd), "1536x1024");
        let d = SizeTable::DallE3;
        assert_eq!(d.size(A::Ultrawide21x9, Quality::Hd), "1792x1024");
        assert_eq!(d.size(A::Portrait9x16, Quality::Hd), "1024x1792");
        assert_eq!(
            SizeTable::Exact.size(A::Landscape16x9, Quality::Standard),
            "1024x576"
        );
        assert_eq!(SizeTable::for_model("dall-e-3"), SizeTable::DallE3);
        assert_eq!(SizeTable::for_model("sdxl-turbo"), SizeTable::Exact);
        assert_eq!(g.quality(Quality::Hd), "high");
        assert_eq!(d.quality(Quality::Hd), "hd");
    }
}
