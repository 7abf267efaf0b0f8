//! `POST /api/public/images/generate`: one image, synchronously. Raw text becomes a JSON prompt
//! first; the tokens are held before the provider is called, captured when the image is stored,
//! and released — refunded — when the provider fails (502 with the provider's code).
//! `GET /api/public/images/{id}`: a generation of the key's organization, read back.
//!
//! The provider is never called without an open hold of this attempt: a retry that resumes an
//! attempt whose hold was already released (its refund committed, its response lost) is sent
//! back to start a new attempt instead. The whole generation runs under
//! [`Limits::generation_deadline`](crate::config::Limits::generation_deadline) (below the
//! stale-hold sweeper's age), and its `Idempotency-Key` lock is renewed while it runs
//! (`idempotent::run`), so neither a client's retry nor the sweeper acts on a request still
//! running, while a request that died gives its key back within the plain lock.
//!
//! Every generation is recorded ([`creapic_core::generation::GenerationRecord`]) under the id of
//! the hold that pays for it: completed after the capture commits, failed after the refund is
//! confirmed. The design decision is what happens when the record cannot be written after the
//! capture: with an `Idempotency-Key` and a store that is unavailable, the request fails (503)
//! *unsettled*, so the client's retry resumes the attempt — its reserve and capture replay, the
//! record is written (idempotent on the id) and the answer carries it: every id answered is
//! readable. Without the header a retry could not resume (it would pay again), and any other
//! error is a bug a retry would not fix, so there the failure is logged and the paid image is
//! answered all the same. A resumed attempt whose generation is already recorded answers from
//! the record without calling the provider again.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use creapic_core::generation::{
    AspectRatio, GenerationOutcome, GenerationParams, GenerationRecord, Quality,
};
use creapic_core::id::GenerationId;
use creapic_core::ledger::Credits;
use creapic_core::scope::Scope;
use creapic_core::wire::{
    GenerateImageRequest, GenerateImageResponse, Generation, GenerationResponse, ImageSource,
    JobStatusWire,
};
use creapic_core::{Principal, StoreErrorKind};
use http::StatusCode;

use crate::Error;
use crate::body::read_json;
use crate::handlers::with_key;
use crate::idempotent::{self, Failure, Replay};
use crate::item::{ImageSpec, PromptSource};
use crate::media::MediaKey;
use crate::response::json;
use crate::service::AppState;

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
            if crate::handlers::too_long(&text, max_chars) {
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
pub async fn generate(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let (principal, rate) =
        match crate::auth::authorize(&state, &parts.headers, Scope::ImageGeneration).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
    let limits = state.config().limits;
    let prepared = async {
        let (request, raw): (GenerateImageRequest, _) =
            read_json(&parts.headers, body, limits.body_max_bytes).await?;
        crate::handlers::same_organization(&principal, request.organization_id.as_deref())?;
        let source = prompt_source(request.source, limits.prompt_max_chars)?;
        let aspect = AspectRatio::from(request.aspect_ratio);
        let quality = Quality::from(request.quality);
        Ok::<_, Error>((
            ImageSpec {
                source,
                aspect_ratio: aspect,
                quality,
            },
            raw,
        ))
    }
    .await;
    let (spec, raw) = match prepared {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    // An organization already at its media quota is told so before anything is paid or drawn.
    if let Err(e) = state.media().check_quota(principal.org, 1).await {
        let mut response = e.into_response();
        rate.apply(response.headers_mut());
        return response;
    }
    let pricing = state.config().pricing;
    let cost = match spec.quality {
        Quality::Standard => pricing.image_standard,
        Quality::Hd => pricing.image_hd,
    };
    // A request with an `Idempotency-Key` can be resumed by its retry (see the module doc).
    let resumable = parts.headers.contains_key(idempotent::HEADER);
    let st = state.clone();
    let mut response = idempotent::run(
        &state,
        principal.org,
        None,
        &parts.headers,
        "POST",
        parts.uri.path(),
        &raw,
        Replay::Body,
        limits.idempotency_lock,
        |ledger_key| async move {
            let core = st.core();
            let org = principal.org;
            let hold = core
                .reserve(org, cost, None, &format!("{ledger_key}:hold"))
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
                // A resumed attempt whose refund already committed: calling the provider now
                // would be unpaid work. This attempt is over; the client's retry starts a new,
                // paid one.
                return Err(Failure::settled(Error::Core(
                    creapic_core::Error::IdempotencyInProgress,
                )));
            }
            let capture_key = format!("{ledger_key}:capture");
            if hold.replayed && held.captured.get() > 0 {
                // A resumed attempt that was paid for: if its generation is recorded, answer
                // from the record (the capture replays for the balance it left).
                let id = GenerationId::of_hold(hold_id);
                if let Ok(record) = core.generation(&principal, id).await {
                    let captured = core
                        .capture(org, hold_id, cost, &capture_key)
                        .await
                        .map_err(Error::Core)?;
                    let (generation, image_url) = view(&st, &record);
                    let body = GenerateImageResponse {
                        generation,
                        image_url: image_url.unwrap_or_default(),
                        tokens: captured.balance().get(),
                    };
                    return crate::handlers::json_reply(StatusCode::OK, &body);
                }
            }
            let deadline = limits.generation_deadline(core.config().stale_hold_after);
            let provider = st.pipeline().provider_for(principal.mode).name();
            let drawn = tokio::time::timeout(
                deadline,
                st.pipeline().generate(org, principal.mode, &spec),
            )
            .await
            .unwrap_or(Err(Error::ProviderTimeout { provider }));
            let generated = match drawn {
                Ok(g) => g,
                Err(e) => {
                    metrics::counter!("creapic_generations_total", "outcome" => "failed")
                        .increment(1);
                    // Refund: the work failed. Only a confirmed refund makes the attempt
                    // settled (a retry starts anew); otherwise a retry resumes it.
                    return match core
                        .release(org, hold_id, None, &format!("{ledger_key}:refund"))
                        .await
                    {
                        Ok(_) => {
                            let params = params_of(&spec, asked_prompt(&spec.source));
                            if let Err(record) = core
                                .record_failed_generation(org, hold_id, params, e.code())
                                .await
                            {
                                // The refund stands and the error is answered; only the
                                // record of the failure is missing.
                                tracing::warn!(error = %record, "could not record a failed generation");
                            }
                            Err(Failure::settled(e))
                        }
                        Err(release) => {
                            tracing::error!(error = %release, "could not refund a failed generation");
                            Err(Failure::from(e))
                        }
                    };
                }
            };
            let captured = core
                .capture(org, hold_id, cost, &capture_key)
                .await
                .map_err(Error::Core)?;
            metrics::counter!("creapic_generations_total", "outcome" => "ok").increment(1);
            let media = generated.output.media.clone();
            let prompt = serde_json::to_string(&generated.prompt).unwrap_or_default();
            let tokens = Credits::new(cost).map_err(Error::Core)?;
            let recorded = core
                .record_completed_generation(
                    org,
                    hold_id,
                    params_of(&spec, prompt),
                    media.as_str().to_owned(),
                    tokens,
                )
                .await;
            let generation = match recorded {
                Ok(record) => view(&st, &record).0,
                Err(e @ creapic_core::Error::Store { kind: StoreErrorKind::Unavailable, .. })
                    if resumable =>
                {
                    // Paid, not recorded: fail unsettled so the client's retry resumes this
                    // attempt (capture replays, the insert is idempotent) and gets a readable id.
                    tracing::warn!(error = %e, "could not record a generation; the retry resumes it");
                    return Err(Failure::from(Error::Core(e)));
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not record a paid generation; answering it unrecorded");
                    Generation {
                        id: GenerationId::of_hold(hold_id).to_string(),
                        status: JobStatusWire::Completed,
                        prompt: generated.prompt,
                        aspect_ratio: spec.aspect_ratio.into(),
                        quality: spec.quality.into(),
                        tokens_used: cost,
                        created_at: core.clock().now().to_rfc3339(),
                        error_code: None,
                    }
                }
            };
            let body = GenerateImageResponse {
                generation,
                image_url: st.media_link(org, &media).unwrap_or_default(),
                tokens: captured.balance().get(),
            };
            crate::handlers::json_reply(StatusCode::OK, &body)
        },
    )
    .await;
    rate.apply(response.headers_mut());
    response
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

/// The wire view of a record, and a fresh signed link to its image (none for a failed one).
fn view(state: &AppState, record: &GenerationRecord) -> (Generation, Option<String>) {
    let prompt = serde_json::from_str(&record.prompt)
        .unwrap_or_else(|_| serde_json::Value::String(record.prompt.clone()));
    let status = match record.outcome {
        GenerationOutcome::Completed { .. } => JobStatusWire::Completed,
        GenerationOutcome::Failed { .. } => JobStatusWire::Failed,
    };
    let image_url = record
        .outcome
        .media()
        .and_then(|m| MediaKey::parse(m).ok())
        .and_then(|m| state.media_link(record.org, &m));
    let generation = Generation {
        id: record.id.to_string(),
        status,
        prompt,
        aspect_ratio: record.aspect_ratio.into(),
        quality: record.quality.into(),
        tokens_used: record.outcome.tokens().get(),
        created_at: record.created_at.to_rfc3339(),
        error_code: record.outcome.error_code().map(str::to_owned),
    };
    (generation, image_url)
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
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let st = state.clone();
    with_key(
        &state,
        &parts.headers,
        Scope::ImageGeneration,
        |principal| async move {
            let found = match generation_id_param(&id) {
                Ok(id) => generation_by_id(&st, &principal, id).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(record) => {
                    let (generation, image_url) = view(&st, &record);
                    json(
                        StatusCode::OK,
                        &GenerationResponse {
                            generation,
                            image_url,
                        },
                    )
                }
                Err(e) => e.into_response(),
            }
        },
    )
    .await
}
