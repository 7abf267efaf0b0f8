//! The wire types: every JSON request and response body of the HTTP API, defined once.
//!
//! Both the server kit (which serves them) and the client (which sends and reads them) compile
//! this module, so the two cannot drift; the OpenAPI document at `GET /api/openapi` is derived
//! from these types with utoipa (their `ToSchema` derives are compiled only with the `openapi`
//! feature, which the server kit turns on: a client gets serde alone). Field names are camelCase
//! as the product documents show.
//! Enumerations have their own wire types here (with exactly the documents' spellings) and
//! convert to and from the domain types, which stay free of serde.
//!
//! Enabled by the `wire` feature.

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::generation::{AspectRatio, Quality};
use crate::job::{ItemStatus, JobKind, JobStatus};
use crate::key::KeyMode;
use crate::ledger::EntryKind;
use crate::org::Role;
use crate::scope::Scope;

/// Longest prompt (raw text or serialized JSON prompt), in characters.
pub const PROMPT_MAX_CHARS: usize = 4000;
/// Most layers in a scene.
pub const SCENE_LAYERS_MAX: usize = 16;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The human text, e.g. `Invalid API key` (exactly the documents' texts where they give one).
    pub error: String,
    /// The stable snake_case code, e.g. `invalid_api_key`. New codes may appear in later
    /// versions; clients must tolerate unknown ones.
    pub code: String,
    /// The request id, also sent as the `x-request-id` header; quote it to support.
    pub request_id: String,
}

/// An image aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum AspectRatioWire {
    /// 1:1
    #[default]
    #[serde(rename = "1:1")]
    Square,
    /// 2:3
    #[serde(rename = "2:3")]
    R2x3,
    /// 3:2
    #[serde(rename = "3:2")]
    R3x2,
    /// 3:4
    #[serde(rename = "3:4")]
    R3x4,
    /// 4:3
    #[serde(rename = "4:3")]
    R4x3,
    /// 4:5
    #[serde(rename = "4:5")]
    R4x5,
    /// 5:4
    #[serde(rename = "5:4")]
    R5x4,
    /// 9:16
    #[serde(rename = "9:16")]
    R9x16,
    /// 16:9
    #[serde(rename = "16:9")]
    R16x9,
    /// 21:9
    #[serde(rename = "21:9")]
    R21x9,
}

impl From<AspectRatioWire> for AspectRatio {
    fn from(w: AspectRatioWire) -> Self {
        match w {
            AspectRatioWire::Square => AspectRatio::Square,
            AspectRatioWire::R2x3 => AspectRatio::Portrait2x3,
            AspectRatioWire::R3x2 => AspectRatio::Landscape3x2,
            AspectRatioWire::R3x4 => AspectRatio::Portrait3x4,
            AspectRatioWire::R4x3 => AspectRatio::Landscape4x3,
            AspectRatioWire::R4x5 => AspectRatio::Portrait4x5,
            AspectRatioWire::R5x4 => AspectRatio::Landscape5x4,
            AspectRatioWire::R9x16 => AspectRatio::Portrait9x16,
            AspectRatioWire::R16x9 => AspectRatio::Landscape16x9,
            AspectRatioWire::R21x9 => AspectRatio::Ultrawide21x9,
        }
    }
}

impl From<AspectRatio> for AspectRatioWire {
    fn from(d: AspectRatio) -> Self {
        match d {
            AspectRatio::Square => AspectRatioWire::Square,
            AspectRatio::Portrait2x3 => AspectRatioWire::R2x3,
            AspectRatio::Landscape3x2 => AspectRatioWire::R3x2,
            AspectRatio::Portrait3x4 => AspectRatioWire::R3x4,
            AspectRatio::Landscape4x3 => AspectRatioWire::R4x3,
            AspectRatio::Portrait4x5 => AspectRatioWire::R4x5,
            AspectRatio::Landscape5x4 => AspectRatioWire::R5x4,
            AspectRatio::Portrait9x16 => AspectRatioWire::R9x16,
            AspectRatio::Landscape16x9 => AspectRatioWire::R16x9,
            AspectRatio::Ultrawide21x9 => AspectRatioWire::R21x9,
        }
    }
}

/// Rendering quality; `hd` costs more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum QualityWire {
    /// Standard quality (the default).
    #[default]
    Standard,
    /// High definition.
    Hd,
}

impl From<QualityWire> for Quality {
    fn from(w: QualityWire) -> Self {
        match w {
            QualityWire::Standard => Quality::Standard,
            QualityWire::Hd => Quality::Hd,
        }
    }
}

impl From<Quality> for QualityWire {
    fn from(d: Quality) -> Self {
        match d {
            Quality::Standard => QualityWire::Standard,
            Quality::Hd => QualityWire::Hd,
        }
    }
}

/// A key scope, spelled exactly as the public API document does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScopeWire {
    /// `POST /api/public/images/generate` and `POST /api/playground/images`.
    ImageGeneration,
    /// `POST /api/public/scenes/render`.
    SceneRender,
    /// `POST /api/public/organizations/create`.
    OrganizationWrite,
}

impl From<ScopeWire> for Scope {
    fn from(w: ScopeWire) -> Self {
        match w {
            ScopeWire::ImageGeneration => Scope::ImageGeneration,
            ScopeWire::SceneRender => Scope::SceneRender,
            ScopeWire::OrganizationWrite => Scope::OrganizationWrite,
        }
    }
}

impl From<Scope> for ScopeWire {
    fn from(d: Scope) -> Self {
        match d {
            Scope::ImageGeneration => ScopeWire::ImageGeneration,
            Scope::SceneRender => ScopeWire::SceneRender,
            Scope::OrganizationWrite => ScopeWire::OrganizationWrite,
        }
    }
}

/// Live keys use the configured provider; test keys always the offline renderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyModeWire {
    /// `wi_live_…`
    #[default]
    Live,
    /// `wi_test_…`
    Test,
}

impl From<KeyModeWire> for KeyMode {
    fn from(w: KeyModeWire) -> Self {
        match w {
            KeyModeWire::Live => KeyMode::Live,
            KeyModeWire::Test => KeyMode::Test,
        }
    }
}

impl From<KeyMode> for KeyModeWire {
    fn from(d: KeyMode) -> Self {
        match d {
            KeyMode::Live => KeyModeWire::Live,
            KeyMode::Test => KeyModeWire::Test,
        }
    }
}

/// A job's (or render's) state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatusWire {
    /// Waiting for a worker.
    Queued,
    /// Being worked on.
    Running,
    /// Every image succeeded.
    Completed,
    /// No image succeeded.
    Failed,
    /// Some images succeeded, some failed (failed ones were refunded).
    Partial,
    /// Canceled; unfinished images were refunded.
    Canceled,
}

impl JobStatusWire {
    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatusWire::Queued | JobStatusWire::Running)
    }
}

impl From<JobStatus> for JobStatusWire {
    fn from(d: JobStatus) -> Self {
        match d {
            JobStatus::Queued => JobStatusWire::Queued,
            JobStatus::Running => JobStatusWire::Running,
            JobStatus::Completed => JobStatusWire::Completed,
            JobStatus::Failed => JobStatusWire::Failed,
            JobStatus::Partial => JobStatusWire::Partial,
            JobStatus::Canceled => JobStatusWire::Canceled,
        }
    }
}

/// One image's state within a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ItemStatusWire {
    /// Not finished yet.
    Pending,
    /// Generated.
    Succeeded,
    /// Failed (refunded).
    Failed,
    /// Canceled (refunded).
    Canceled,
}

impl From<ItemStatus> for ItemStatusWire {
    fn from(d: ItemStatus) -> Self {
        match d {
            ItemStatus::Pending => ItemStatusWire::Pending,
            ItemStatus::Succeeded => ItemStatusWire::Succeeded,
            ItemStatus::Failed => ItemStatusWire::Failed,
            ItemStatus::Canceled => ItemStatusWire::Canceled,
        }
    }
}

/// The schema of a ready prompt: a non-empty string (sent to the provider verbatim) or a JSON
/// object (a JSON prompt; `aspectRatio` and `quality` are set from the request).
#[cfg(feature = "openapi")]
fn ready_prompt_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .description(Some("A prompt sent to the provider as written")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("A JSON prompt (subject, setting, style, …)")),
        )
        .build();
    Schema::OneOf(one_of)
}

/// Where an image's prompt comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ImageSource {
    /// Raw text, turned into a JSON prompt before the provider is called.
    Text {
        /// The text (1–4000 characters).
        text: String,
    },
    /// A ready-to-use prompt: a string or a JSON object, sent as is.
    Prompt {
        /// The prompt.
        #[cfg_attr(feature = "openapi", schema(schema_with = ready_prompt_schema))]
        prompt: serde_json::Value,
    },
}

/// `POST /api/public/images/generate`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateImageRequest {
    /// The prompt's source.
    pub source: ImageSource,
    /// Aspect ratio (default 1:1).
    #[serde(default)]
    pub aspect_ratio: AspectRatioWire,
    /// Quality (default standard).
    #[serde(default)]
    pub quality: QualityWire,
    /// Optional: the key's organization. The organization always comes from the key; when this
    /// is sent it must name that organization (403 `wrong_organization` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    /// Its id (a UUID, unique per paid generation; a replay under the same `Idempotency-Key`
    /// answers with the same id). Read it back with `GET /api/public/images/{id}`; log it to
    /// ease support.
    pub id: String,
    /// `completed`, or `failed` (read back: the tokens were refunded).
    pub status: JobStatusWire,
    /// The prompt the provider received: the JSON prompt, or a ready prompt given as text (for a
    /// failed generation, the prompt as it was asked).
    #[cfg_attr(feature = "openapi", schema(schema_with = ready_prompt_schema))]
    pub prompt: serde_json::Value,
    /// The aspect ratio.
    pub aspect_ratio: AspectRatioWire,
    /// The quality.
    pub quality: QualityWire,
    /// Tokens debited (0 for a failed generation).
    pub tokens_used: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Why it failed: the error's code (only for a failed generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// Response of `POST /api/public/images/generate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GenerateImageResponse {
    /// The generation.
    pub generation: Generation,
    /// Where to fetch the image (an expiring signed URL).
    pub image_url: String,
    /// The organization's token balance left.
    pub tokens: u64,
}

/// Response of `GET /api/public/images/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GenerationResponse {
    /// The generation.
    pub generation: Generation,
    /// Where to fetch the image (an expiring signed URL, minted now); absent for a failed
    /// generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

/// A layer of a scene: an image placed over the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SceneLayer {
    /// The layer's image.
    pub source: LayerSource,
    /// The layer's left edge as a fraction of the scene's width (0 = left, 1 = right; -1 to 2).
    pub x: f32,
    /// The layer's top edge as a fraction of the scene's height (0 = top, 1 = bottom; -1 to 2).
    pub y: f32,
    /// Width of the layer relative to the scene's width, 0.01 to 4.
    #[serde(default = "one")]
    pub scale: f32,
    /// Opacity, 0 to 1 (default 1).
    #[serde(default = "one")]
    pub opacity: f32,
}

fn one() -> f32 {
    1.0
}

/// Where a layer's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LayerSource {
    /// An image the organization generated before (its generation id).
    Generation {
        /// The generation id (`generation.id` of a completed generation), or the image's media
        /// object name (its content hash, the generation id answered before generation records).
        id: String,
    },
    /// A PNG or JPEG given inline, base64-encoded.
    Base64 {
        /// The base64 data (standard alphabet, padding optional).
        data: String,
    },
}

/// `POST /api/public/scenes/render`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SceneRenderRequest {
    /// The background's prompt.
    pub background: ImageSource,
    /// Layers, bottom to top (0–16).
    #[serde(default)]
    pub layers: Vec<SceneLayer>,
    /// Aspect ratio (default 1:1).
    #[serde(default)]
    pub aspect_ratio: AspectRatioWire,
    /// Quality (default standard).
    #[serde(default)]
    pub quality: QualityWire,
    /// Optional: the key's organization. The organization always comes from the key; when this
    /// is sent it must name that organization (403 `wrong_organization` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

/// A scene render task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Render {
    /// Its id; poll `GET /api/public/scenes/render/{id}`.
    pub id: String,
    /// Its state.
    pub status: JobStatusWire,
    /// The aspect ratio.
    pub aspect_ratio: AspectRatioWire,
    /// The quality.
    pub quality: QualityWire,
    /// Tokens reserved when accepted (captured on success, released on failure).
    pub tokens_reserved: u64,
    /// Tokens charged so far.
    pub tokens_used: u64,
    /// The image, once completed (an expiring signed URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemErrorWire>,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// Response of `POST /api/public/scenes/render` (202) and `GET /api/public/scenes/render/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RenderResponse {
    /// The render.
    pub render: Render,
}

/// Why an image failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ItemErrorWire {
    /// Stable code, e.g. `provider_timeout`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// `POST /api/public/organizations/create`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrganizationRequest {
    /// The name (1–100 characters).
    pub name: String,
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrganizationWire {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// Response of `POST /api/public/organizations/create` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateOrganizationResponse {
    /// The new organization.
    pub organization: OrganizationWire,
    /// The role of the key's creator in it: `owner`.
    pub role: String,
}

/// `POST /api/playground/images`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkImagesRequest {
    /// 1–100 prompts, each 1–4000 characters.
    pub prompts: Vec<String>,
    /// Optional: the key's organization. The organization always comes from the key; when this
    /// is sent it must name that organization (403 `wrong_organization` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

/// Response of `POST /api/playground/images` (202), exactly as the 001 document shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BulkImagesResponse {
    /// Job id to poll for status.
    pub job_id: String,
    /// Number of images being generated.
    pub total_images: u32,
    /// Credits deducted.
    pub credits_used: u64,
    /// Remaining credits.
    pub credits: u64,
}

/// One image of a bulk job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobImage {
    /// Position in the request's `prompts`.
    pub index: u32,
    /// The prompt.
    pub prompt: String,
    /// Its state.
    pub status: ItemStatusWire,
    /// The image, once generated (an expiring signed URL).
    pub url: Option<String>,
    /// Why it failed.
    pub error: Option<ItemErrorWire>,
}

/// Response of `GET /api/playground/images/{jobId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobStatusResponse {
    /// The job id.
    pub job_id: String,
    /// The job's state.
    pub status: JobStatusWire,
    /// Images requested.
    pub total_images: u32,
    /// Images generated.
    pub completed_images: u32,
    /// Images failed or canceled.
    pub failed_images: u32,
    /// Credits charged for generated images.
    pub credits_used: u64,
    /// Credits returned for failed or canceled images.
    pub credits_refunded: u64,
    /// Every image, in request order.
    pub images: Vec<JobImage>,
    /// When the job was accepted (RFC 3339).
    pub created_at: String,
    /// When it finished (RFC 3339).
    pub completed_at: Option<String>,
}

/// `POST /api/keys` (dashboard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The organization the key acts for.
    pub organization_id: String,
    /// A descriptive name (1–64 characters), e.g. `Production`.
    pub name: String,
    /// At least one scope.
    pub scopes: Vec<ScopeWire>,
    /// `live` (default) or `test`.
    #[serde(default)]
    pub mode: KeyModeWire,
    /// When the key stops working (RFC 3339), if ever.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// An API key as listed: never its secret or digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    /// Its id.
    pub id: String,
    /// Its organization.
    pub organization_id: String,
    /// Its name.
    pub name: String,
    /// The first 12 characters of the key.
    pub prefix: String,
    /// Its scopes.
    pub scopes: Vec<ScopeWire>,
    /// Live or test.
    pub mode: KeyModeWire,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The user who created it.
    pub created_by: String,
    /// When it was last used (RFC 3339; accurate to about a minute).
    pub last_used_at: Option<String>,
    /// When it expires (RFC 3339).
    pub expires_at: Option<String>,
    /// When it was deleted (RFC 3339).
    pub deleted_at: Option<String>,
}

/// Response of `POST /api/keys` (201): the only response that ever contains the key. Its
/// `Debug` shows the prefix only, and dropping it zeroizes the plaintext (take it out with
/// `std::mem::take` to keep it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyResponse {
    /// The plaintext key. Copy it now: it is never shown again.
    pub key: String,
    /// The key's record.
    pub api_key: ApiKeyInfo,
}

impl std::fmt::Debug for CreateKeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateKeyResponse")
            .field("key", &"[redacted]")
            .field("api_key", &self.api_key)
            .finish()
    }
}

impl Drop for CreateKeyResponse {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// Response of `GET /api/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ListKeysResponse {
    /// The keys, oldest first.
    pub keys: Vec<ApiKeyInfo>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

/// Response of `DELETE /api/keys/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeleteKeyResponse {
    /// The deleted key's record (`deletedAt` set).
    pub api_key: ApiKeyInfo,
}

/// A member's role in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RoleWire {
    /// Full control; an organization always has at least one.
    Owner,
    /// Manages keys and plain members.
    Admin,
    /// Uses the organization's resources.
    Member,
}

impl From<RoleWire> for Role {
    fn from(w: RoleWire) -> Self {
        match w {
            RoleWire::Owner => Role::Owner,
            RoleWire::Admin => Role::Admin,
            RoleWire::Member => Role::Member,
        }
    }
}

impl From<Role> for RoleWire {
    fn from(d: Role) -> Self {
        match d {
            Role::Owner => RoleWire::Owner,
            Role::Admin => RoleWire::Admin,
            Role::Member => RoleWire::Member,
        }
    }
}

/// An organization the signed-in user belongs to, with their role in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrganizationMembership {
    /// The organization.
    pub organization: OrganizationWire,
    /// The user's role in it.
    pub role: RoleWire,
}

/// Response of `GET /api/organizations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ListOrganizationsResponse {
    /// The organizations, oldest first.
    pub organizations: Vec<OrganizationMembership>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

/// A member of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MemberWire {
    /// The user's id.
    pub user_id: String,
    /// Their e-mail address (normalized: trimmed, lowercase).
    pub email: String,
    /// Their role.
    pub role: RoleWire,
    /// When they joined (RFC 3339); absent for memberships older than join times.
    pub joined_at: Option<String>,
}

/// Response of `GET /api/organizations/{organizationId}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ListMembersResponse {
    /// The members, by user id.
    pub members: Vec<MemberWire>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

/// `POST /api/organizations/{organizationId}/members`: the user is created if the e-mail is new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The person's e-mail address.
    pub email: String,
    /// Their role (an admin may add `member` only).
    pub role: RoleWire,
}

/// `PATCH /api/organizations/{organizationId}/members/{userId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetMemberRoleRequest {
    /// The new role.
    pub role: RoleWire,
}

/// Response of adding, re-roling or removing a member: the member as they are now (or were,
/// for a removal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MemberResponse {
    /// The member.
    pub member: MemberWire,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditEventWire {
    /// Its id.
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// What, e.g. `key.created`.
    pub action: String,
    /// Who: `user:<id>`, `key:<id>`, `operator` or `system`.
    pub actor: String,
    /// From which IP address.
    pub ip: Option<String>,
    /// With which user agent.
    pub user_agent: Option<String>,
    /// The key concerned.
    pub key_id: Option<String>,
    /// Its prefix.
    pub key_prefix: Option<String>,
    /// Details, e.g. `amount=100`.
    pub detail: Option<String>,
}

/// Response of `GET /api/audit?format=json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditResponse {
    /// Events, oldest first.
    pub events: Vec<AuditEventWire>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

/// What a ledger entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LedgerEntryTypeWire {
    /// Tokens added.
    Grant,
    /// Tokens removed for good.
    Debit,
    /// Tokens set aside for work not finished yet.
    Hold,
    /// Held tokens made final: the work was delivered (the balance does not change).
    Capture,
    /// Held tokens returned: failed or canceled work, or a reservation left over.
    Release,
}

impl From<EntryKind> for LedgerEntryTypeWire {
    fn from(k: EntryKind) -> Self {
        match k {
            EntryKind::Grant => LedgerEntryTypeWire::Grant,
            EntryKind::Debit => LedgerEntryTypeWire::Debit,
            EntryKind::Hold => LedgerEntryTypeWire::Hold,
            EntryKind::Capture => LedgerEntryTypeWire::Capture,
            EntryKind::Release => LedgerEntryTypeWire::Release,
        }
    }
}

/// One line of an organization's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryWire {
    /// The entry's id.
    pub id: String,
    /// What it did.
    #[serde(rename = "type")]
    pub entry_type: LedgerEntryTypeWire,
    /// How many tokens it moved (for a capture: the tokens made final).
    pub amount: u64,
    /// The signed change of the balance (0 for a capture).
    pub delta: i64,
    /// The balance right after it.
    pub balance_after: u64,
    /// The bulk job or scene render it paid for or refunded (poll it by this id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The synchronous image generation it paid for or refunded (read it with
    /// `GET /api/public/images/{id}`; its id is the id of the hold that paid for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    /// The hold it belongs to, for hold, capture and release entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    /// When (RFC 3339).
    pub created_at: String,
}

/// Response of `GET /api/public/credits`: the key's organization's tokens and one page of its
/// ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreditsResponse {
    /// The organization (the key's).
    pub organization_id: String,
    /// Tokens available to spend now.
    pub balance: u64,
    /// Tokens set aside for work queued or running (not part of `balance`; what the work does
    /// not use comes back to it).
    pub held: u64,
    /// Ledger entries, oldest first.
    pub entries: Vec<LedgerEntryWire>,
    /// Pass as `cursor` to get the next page of entries.
    pub next_cursor: Option<String>,
}

/// One UTC day of an organization's token usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DailyUsageWire {
    /// The day (`YYYY-MM-DD`, UTC).
    pub date: String,
    /// Tokens spent: delivered work (captures) and debits.
    pub spent: u64,
    /// Tokens added.
    pub granted: u64,
    /// Tokens returned from holds (refunds, canceled work, reservations left over).
    pub released: u64,
}

/// Response of `GET /api/public/credits/usage`: every day of the range, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UsageResponse {
    /// The organization (the key's).
    pub organization_id: String,
    /// The first day (`YYYY-MM-DD`, UTC).
    pub from: String,
    /// The last day, included (`YYYY-MM-DD`, UTC).
    pub to: String,
    /// Tokens spent over the range.
    pub spent: u64,
    /// One entry per day of the range, days without activity as zeros.
    pub days: Vec<DailyUsageWire>,
}

/// What a job makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobKindWire {
    /// A bulk image job (`POST /api/playground/images`; poll `GET /api/playground/images/{jobId}`).
    Bulk,
    /// A scene render (`POST /api/public/scenes/render`; poll
    /// `GET /api/public/scenes/render/{id}`).
    Scene,
}

impl From<JobKind> for JobKindWire {
    fn from(k: JobKind) -> Self {
        match k {
            JobKind::Bulk => JobKindWire::Bulk,
            JobKind::Scene => JobKindWire::Scene,
        }
    }
}

/// A bulk job or scene render as a listing shows it: no prompts, no images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobSummaryWire {
    /// The job's (or render's) id.
    pub job_id: String,
    /// What it makes.
    pub kind: JobKindWire,
    /// Its state.
    pub status: JobStatusWire,
    /// Images requested (1 for a render).
    pub total_images: u32,
    /// Images generated.
    pub completed_images: u32,
    /// Images failed.
    pub failed_images: u32,
    /// Images canceled before they were made.
    pub canceled_images: u32,
    /// Tokens per image.
    pub tokens_per_image: u64,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
    /// When it finished (RFC 3339).
    pub completed_at: Option<String>,
}

/// Response of `GET /api/playground/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ListJobsResponse {
    /// Bulk jobs and renders, oldest first.
    pub jobs: Vec<JobSummaryWire>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_response_never_debugs_its_plaintext() {
        let secret = format!("wi_live_{}", "ab".repeat(32));
        let response = CreateKeyResponse {
            key: secret.clone(),
            api_key: ApiKeyInfo {
                id: "id".into(),
                organization_id: "org".into(),
                name: "CI".into(),
                prefix: secret[..12].to_owned(),
                scopes: vec![],
                mode: KeyModeWire::Live,
                created_at: "now".into(),
                created_by: "me".into(),
                last_used_at: None,
                expires_at: None,
                deleted_at: None,
            },
        };
        let debug = format!("{response:?} {response:#?}");
        assert!(!debug.contains(&secret[12..]), "{debug}");
        assert!(debug.contains("[redacted]"));
        // The wire form still carries it: this is the one response that shows it.
        assert!(
            serde_json::to_string(&response)
                .unwrap_or_default()
                .contains(&secret)
        );
    }

    #[test]
    fn the_documents_examples_parse() {
        let body = r#"{
            "source": {"type": "text", "text": "Article about citrus mocktails with summer ingredients"},
            "aspectRatio": "4:5",
            "quality": "hd"
        }"#;
        let req: GenerateImageRequest = serde_json::from_str(body).expect("000 example");
        assert_eq!(req.aspect_ratio, AspectRatioWire::R4x5);
        assert_eq!(req.quality, QualityWire::Hd);
        let bulk: BulkImagesRequest = serde_json::from_str(
            r#"{"prompts": ["A beautiful sunset over the ocean", "A futuristic cityscape"]}"#,
        )
        .expect("001 example");
        assert_eq!(bulk.prompts.len(), 2);
        let resp = BulkImagesResponse {
            job_id: "uuid".into(),
            total_images: 2,
            credits_used: 2,
            credits: 4,
        };
        assert_eq!(
            serde_json::to_string(&resp).expect("json"),
            r#"{"jobId":"uuid","totalImages":2,"creditsUsed":2,"credits":4}"#
        );
    }

    #[test]
    fn enumerations_use_the_documents_spellings() {
        let s = serde_json::to_string(&[
            ScopeWire::ImageGeneration,
            ScopeWire::SceneRender,
            ScopeWire::OrganizationWrite,
        ]);
        assert_eq!(
            s.ok().as_deref(),
            Some(r#"["IMAGE_GENERATION","SCENE_RENDER","ORGANIZATION_WRITE"]"#)
        );
        for r in AspectRatio::ALL {
            let w = AspectRatioWire::from(r);
            assert_eq!(
                serde_json::to_string(&w).ok(),
                Some(format!("\"{}\"", r.as_str()))
            );
            assert_eq!(AspectRatio::from(w), r);
        }
        assert!(
            serde_json::from_str::<GenerateImageRequest>(
                r#"{"source":{"type":"text","text":"x"},"aspectRatio":"1:2"}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<GenerateImageRequest>(
                r#"{"source":{"type":"text","text":"x"},"bogus":1}"#
            )
            .is_err()
        );
    }
}
