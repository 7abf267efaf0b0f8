//! `POST /api/public/images/generate`: one image, synchronously. Raw text becomes a JSON prompt
//! first; the tokens are held before the provider is called, captured when the image is stored,
//! and released — refunded — when the provider fails (502 with the provider's code).
//! `GET /api/public/images/{id}`: a generation of the key's organization, read back.
//!
//! This handler parses, checks the media quota, and answers; the paid generation itself — hold,
//! provider under the deadline, capture or refund, the record under the hold's id — is
//! [`PaidGenerator::generate`], run inside `idempotent::run` with the attempt's
//! [`AttemptKeys`]; its record becomes the answer through `views::generation` (the fresh
//! link). Handlers never call the ledger.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use creapic_core::Principal;
use creapic_core::generation::{AspectRatio, GenerationRecord, Quality};
use creapic_core::id::GenerationId;
use creapic_core::wire::{
    GenerateImageRequest, GenerateImageResponse, GenerationResponse, ImageSource,
};
use http::StatusCode;

use crate::Error;
use crate::generation::item::{ImageSpec, PromptSource};
use crate::generation::paid::{AttemptKeys, PaidGenerator, Resume};
use crate::http::extract::{Authorized, BoundedJson, need};
use crate::http::idempotent::{self, IdempotencyKeyHeader};
use crate::http::response::json;
use crate::http::service::AppState;

/// Checks a prompt source against the limits and turns it into the pipeline's form.
pub(crate) fn prompt_source(source: ImageSource, max_chars: usize) -> Result<PromptSource, Error> {
    let too_long = || {
        Error::Core(creapic_core::Error::LimitExceeded {
            what: "prompt length in characters",
            max: max_chars as u64,
        })
    };
    match source {
        ImageSource::Text { text } => {
            if text.trim().is_empty() {
                return Err(Error::Core(creapic_core::Error::invalid(
                    "source.text",
                    "must not be empty",
                )));
            }
            if crate::http::handlers::too_long(&text, max_chars) {
                return Err(too_long());
            }
            Ok(PromptSource::Text(text))
        }
        ImageSource::Prompt { prompt } => {
            let size = serde_json::to_string(&prompt)
                .map(|s| s.chars().count())
                .unwrap_or(usize::MAX);
            if size > max_chars + 2 {
                return Err(too_long());
            }
            match prompt {
                serde_json::Value::String(text) if !text.trim().is_empty() => {
                    Ok(PromptSource::Json(serde_json::Value::String(text)))
                }
                serde_json::Value::Object(map) if !map.is_empty() => {
                    Ok(PromptSource::Json(serde_json::Value::Object(map)))
                }
                _ => Err(Error::Core(creapic_core::Error::invalid(
                    "source.prompt",
                    "must be a non-empty string or JSON object",
                ))),
            }
        }
    }
}

/// Generates one image and answers with it.
#[utoipa::path(
    post,
    path = "/api/public/images/generate",
    operation_id = "generateImage",
    tag = "images",
    request_body = GenerateImageRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: a replay returns the first response and charges nothing")),
    responses(
        (status = 200, description = "Generated", body = GenerateImageResponse),
        (status = 400, description = "Invalid body", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing, malformed or unknown key", body = creapic_core::wire::ErrorBody),
        (status = 402, description = "Insufficient credits", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "The key lacks IMAGE_GENERATION", body = creapic_core::wire::ErrorBody),
        (status = 422, description = "Prompt too long, or Idempotency-Key reused with another body", body = creapic_core::wire::ErrorBody),
        (status = 429, description = "Rate limited", body = creapic_core::wire::ErrorBody),
        (status = 502, description = "The provider failed; the tokens were refunded", body = creapic_core::wire::ErrorBody),
        (status = 504, description = "The provider timed out; the tokens were refunded", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn generate(
    State(state): State<AppState>,
    who: Authorized<need::ImageGeneration>,
    idempotency: IdempotencyKeyHeader,
    BoundedJson(request, raw): BoundedJson<GenerateImageRequest>,
) -> Response {
    let principal = who.principal;
    // A refused body is answered as it is, like any error before the quota check.
    let spec = match image_spec(&state, &principal, request) {
        Ok(spec) => spec,
        Err(e) => return e.into_response(),
    };
    // An organization already at its media quota is told so before anything is paid or drawn.
    if let Err(e) = state.media().check_quota(principal.org, 1).await {
        return who.answer(e);
    }
    // A request with an `Idempotency-Key` can be resumed by its retry (see
    // `crate::generation::paid`).
    let resume = if idempotency.is_present() {
        Resume::Resumable
    } else {
        Resume::Once
    };
    let st = state.clone();
    let response = idempotent::run(
        &state,
        idempotency.request(principal.org, &raw),
        |ledger_key| async move {
            let keys = AttemptKeys::new(ledger_key);
            let config = st.config();
            let paid = PaidGenerator::new(st.core(), st.pipeline(), config.pricing, config.limits)
                .generate(&principal, &spec, &keys, resume)
                .await?;
            let (generation, image_url) = crate::http::views::generation(&st, &paid.record);
            let body = GenerateImageResponse {
                generation,
                image_url: image_url.unwrap_or_default(),
                tokens: paid.balance.get(),
            };
            crate::http::handlers::json_reply(StatusCode::OK, &body)
        },
    )
    .await;
    who.answer(response)
}

/// What the body asks for, checked against the caller and the limits.
fn image_spec(
    state: &AppState,
    principal: &Principal,
    request: GenerateImageRequest,
) -> Result<ImageSpec, Error> {
    let limits = state.config().limits;
    crate::http::handlers::same_organization(principal, request.organization_id.as_deref())?;
    Ok(ImageSpec {
        source: prompt_source(request.source, limits.prompt_max_chars)?,
        aspect_ratio: AspectRatio::from(request.aspect_ratio),
        quality: Quality::from(request.quality),
    })
}

/// The generation id in the path, or the 400 naming it.
fn generation_id_param(id: &str) -> Result<GenerationId, Error> {
    GenerationId::parse(id).map_err(|_| Error::InvalidParameter {
        name: "id",
        message: "must be a generation id (a UUID)".into(),
    })
}

/// A generation of the caller's organization by the id in a request (another organization's
/// and an unknown id are the same "not found").
pub(crate) async fn generation_by_id(
    state: &AppState,
    principal: &Principal,
    id: GenerationId,
) -> Result<GenerationRecord, Error> {
    state
        .core()
        .generation(principal, id)
        .await
        .map_err(Error::Core)
}

/// A generation of the key's organization (404 for any other organization's).
#[utoipa::path(
    get,
    path = "/api/public/images/{id}",
    operation_id = "getImage",
    tag = "images",
    params(("id" = String, Path, description = "The generation id (`generation.id`)")),
    responses(
        (status = 200, description = "The generation, with a fresh link to its image", body = GenerationResponse),
        (status = 400, description = "Malformed id", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing, malformed or unknown key", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "The key lacks IMAGE_GENERATION", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "No such generation in this organization", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: Authorized<need::ImageGeneration>,
) -> Response {
    let found = match generation_id_param(&id) {
        Ok(id) => generation_by_id(&state, &who.principal, id).await,
        Err(e) => Err(e),
    };
    who.answer(found.map(|record| {
        let (generation, image_url) = crate::http::views::generation(&state, &record);
        json(
            StatusCode::OK,
            &GenerationResponse {
                generation,
                image_url,
            },
        )
    }))
}
