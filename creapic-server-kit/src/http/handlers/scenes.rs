//! `POST /api/public/scenes/render` and `GET /api/public/scenes/render/{id}`: scene composition
//! tasks. Layer images given inline are decoded and checked first but written nowhere until the
//! render's tokens are reserved (the job is submitted): only then are they staged as uploads of
//! this request, so a refused render (402, a limit) leaves nothing in storage. If staging fails,
//! the job is canceled (its hold released) and the request answers 503. The queued job holds
//! only references; tokens are captured on success and released on failure by the job runner,
//! which deletes the uploads when the render is done.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use creapic_core::id::GenerationId;
use creapic_core::job::{ItemStatus, Job, JobKind};
use creapic_core::ledger::Credits;
use creapic_core::wire::{ItemErrorWire, LayerSource, Render, RenderResponse, SceneRenderRequest};
use creapic_core::{JobSpec, generation::Quality};
use http::StatusCode;

use crate::Error;
use crate::generation::Error as GenerationError;
use crate::generation::item::PromptSource;
use crate::generation::media::{MediaKey, MediaType, UploadId};
use crate::generation::scene::{Layer, SceneSpec};
use crate::http::extract::{Authorized, BoundedJson, need};
use crate::http::handlers::job_of_kind;
use crate::http::idempotent::{self, IdempotencyKeyHeader};
use crate::http::response::json;
use crate::http::service::AppState;

/// The render view of a scene job.
pub fn render_view(state: &AppState, job: &Job) -> Render {
    let spec = job
        .items
        .first()
        .and_then(|i| SceneSpec::parse(&i.input).ok());
    let (aspect, quality) = spec
        .as_ref()
        .map_or((Default::default(), Default::default()), |s| {
            (s.aspect_ratio, s.quality)
        });
    let item = job.items.first();
    let (used, _) = crate::http::views::job_credits(job);
    Render {
        id: job.id.to_string(),
        status: job.status.into(),
        aspect_ratio: aspect.into(),
        quality: quality.into(),
        tokens_reserved: job.unit_cost.get() * job.items.len() as u64,
        tokens_used: used,
        image_url: item
            .filter(|i| i.status == ItemStatus::Succeeded)
            .and_then(|i| i.output.as_deref())
            .and_then(|o| state.output_url(job.org, o)),
        error: item.and_then(|i| i.error.as_ref()).map(|e| ItemErrorWire {
            code: e.code.clone(),
            message: e.message.clone(),
        }),
        created_at: job.created_at.to_rfc3339(),
        completed_at: job.finished_at.map(|t| t.to_rfc3339()),
    }
}

/// Accepts a scene render task.
#[utoipa::path(
    post,
    path = "/api/public/scenes/render",
    operation_id = "renderScene",
    tag = "scenes",
    request_body = SceneRenderRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses(
        (status = 202, description = "Accepted; poll GET /api/public/scenes/render/{id}", body = RenderResponse),
        (status = 400, description = "Invalid body (bad base64, bad geometry)", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing, malformed or unknown key", body = creapic_core::wire::ErrorBody),
        (status = 402, description = "Insufficient credits", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "The key lacks SCENE_RENDER", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "A layer names a generation this organization does not have (or one that failed)", body = creapic_core::wire::ErrorBody),
        (status = 413, description = "Body larger than 1 MiB", body = creapic_core::wire::ErrorBody),
        (status = 422, description = "A limit was exceeded or a layer is not an image", body = creapic_core::wire::ErrorBody),
        (status = 429, description = "Rate limited", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn render(
    State(state): State<AppState>,
    who: Authorized<need::SceneRender>,
    idempotency: IdempotencyKeyHeader,
    BoundedJson(request, raw): BoundedJson<SceneRenderRequest>,
) -> Response {
    let principal = who.principal;
    // A refused body is answered as it is, like any error before the idempotent run.
    let (mut spec, inline) = match scene_spec(&state, &principal, request).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let pricing = state.config().pricing;
    let cost = match spec.quality {
        Quality::Standard => pricing.scene_standard,
        Quality::Hd => pricing.scene_hd,
    };
    let st = state.clone();
    let response = idempotent::run(
        &state,
        idempotency.request(principal.org, &raw),
        |ledger_key| async move {
            // The staging area is this attempt's: a resumed attempt rewrites the same objects.
            let upload = UploadId::for_request(&ledger_key);
            for (i, _, _) in &inline {
                if let Some(layer) = spec.layers.get_mut(*i) {
                    layer.upload = Some(upload.clone());
                }
            }
            let job = JobSpec {
                kind: JobKind::Scene,
                inputs: vec![spec.to_input()?],
                unit_cost: Credits::new(cost).map_err(Error::Core)?,
            };
            // Credits first: nothing is written to storage for a render that is not paid for.
            let queued = crate::telemetry::ledger_timed(
                "submit_job",
                st.core().submit_job(&principal, job, &ledger_key),
            )
            .await
            .map_err(Error::Core)?;
            for (_, bytes, kind) in inline {
                if let Err(e) = st
                    .media()
                    .put_upload(principal.org, &upload, bytes, kind)
                    .await
                {
                    return Err(
                        abandon_render(&st, &principal, queued.job.id, &upload, e.into()).await,
                    );
                }
            }
            st.notify_job();
            metrics::counter!("creapic_jobs_submitted_total", "kind" => "scene").increment(1);
            let body = RenderResponse {
                render: render_view(&st, &queued.job),
            };
            crate::http::handlers::json_reply(StatusCode::ACCEPTED, &body)
        },
    )
    .await;
    who.answer(response)
}

/// Inline layers to stage once the render is paid for: (layer index, bytes, type).
type InlineLayers = Vec<(usize, bytes::Bytes, MediaType)>;

/// What the body asks for, checked against the caller, the limits and the media quota: the
/// scene, and its inline layers decoded but stored nowhere yet.
async fn scene_spec(
    state: &AppState,
    principal: &creapic_core::Principal,
    request: SceneRenderRequest,
) -> Result<(SceneSpec, InlineLayers), Error> {
    let limits = state.config().limits;
    crate::http::handlers::same_organization(principal, request.organization_id.as_deref())?;
    if request.layers.len() > limits.scene_layers_max {
        return Err(Error::Core(creapic_core::Error::LimitExceeded {
            what: "layers per scene",
            max: limits.scene_layers_max as u64,
        }));
    }
    let background = match crate::http::handlers::images::prompt_source(
        request.background,
        limits.prompt_max_chars,
    )? {
        PromptSource::Text(text) => serde_json::Value::String(text),
        PromptSource::Json(value) => value,
    };
    let mut layers = Vec::with_capacity(request.layers.len());
    let mut inline = InlineLayers::new();
    for (i, layer) in request.layers.iter().enumerate() {
        let media = match &layer.source {
            LayerSource::Generation { id } => {
                let key = layer_media(state, principal, i, id).await?;
                // Only this organization's media: another organization's id is not found.
                state.media().get(principal.org, &key).await?;
                key
            }
            LayerSource::Base64 { data } => {
                if data.len() > limits.layer_max_bytes / 3 * 4 + 4 {
                    return Err(Error::Core(creapic_core::Error::LimitExceeded {
                        what: "layer image bytes",
                        max: limits.layer_max_bytes as u64,
                    }));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim_end_matches('=').as_bytes())
                    .or_else(|_| {
                        base64::engine::general_purpose::STANDARD_NO_PAD
                            .decode(data.trim_end_matches('=').as_bytes())
                    })
                    .map_err(|_| Error::InvalidJson {
                        path: format!("layers[{i}].source.data"),
                        message: "not base64".into(),
                    })?;
                let kind = MediaType::sniff_image(&bytes).ok_or_else(|| {
                    GenerationError::InvalidImage {
                        message: format!("layer {i} is not a PNG, JPEG or WebP image"),
                    }
                })?;
                crate::generation::render::probe(&bytes)?;
                let key = MediaKey::of(&bytes, kind);
                inline.push((i, bytes::Bytes::from(bytes), kind));
                key
            }
        };
        layers.push(Layer {
            media,
            upload: None,
            x: layer.x,
            y: layer.y,
            scale: layer.scale,
            opacity: layer.opacity,
        });
    }
    let spec = SceneSpec {
        background,
        layers,
        aspect_ratio: request.aspect_ratio.into(),
        quality: request.quality.into(),
    };
    spec.validate()?;
    let incoming = inline.iter().map(|(_, b, _)| b.len() as u64).sum();
    state.media().check_quota(principal.org, incoming).await?;
    Ok((spec, inline))
}

/// The media object a generation layer names: a generation id (its record, of this
/// organization, completed) or, as before generation records, the media object's name.
async fn layer_media(
    state: &AppState,
    principal: &creapic_core::Principal,
    index: usize,
    id: &str,
) -> Result<MediaKey, Error> {
    let malformed = || Error::InvalidJson {
        path: format!("layers[{index}].source.id"),
        message: "not a generation id".into(),
    };
    let Ok(generation) = GenerationId::parse(id) else {
        return MediaKey::parse(id).map_err(|_| malformed());
    };
    let record =
        crate::http::handlers::images::generation_by_id(state, principal, generation).await?;
    // A failed generation has no image: as good as none.
    record
        .outcome
        .media()
        .and_then(|m| MediaKey::parse(m).ok())
        .ok_or(Error::Core(creapic_core::Error::NotFound {
            resource: "generation",
        }))
}

/// Staging a paid render's layers failed: cancel its job (the hold is released), delete what
/// was staged, and answer with the storage error — a settled failure when the cancel worked,
/// so the client's retry is a new attempt.
async fn abandon_render(
    state: &AppState,
    principal: &creapic_core::Principal,
    job: creapic_core::id::JobId,
    upload: &UploadId,
    error: Error,
) -> crate::http::idempotent::Failure {
    let _ = state.media().delete_uploads(principal.org, upload).await;
    match state.core().cancel_job(principal, job).await {
        Ok(_) => crate::http::idempotent::Failure::settled(error),
        Err(cancel) => {
            tracing::error!(error = %cancel, "could not cancel a render whose layers were not stored");
            error.into()
        }
    }
}

/// A render of the key's organization (404 for any other organization's).
#[utoipa::path(
    get,
    path = "/api/public/scenes/render/{id}",
    operation_id = "getSceneRender",
    tag = "scenes",
    params(("id" = String, Path, description = "The render id")),
    responses(
        (status = 200, description = "The render", body = RenderResponse),
        (status = 400, description = "Malformed id", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing, malformed or unknown key", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "The key lacks SCENE_RENDER", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "No such render in this organization", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: Authorized<need::SceneRender>,
) -> Response {
    let found = job_of_kind(&state, &who.principal, &id, JobKind::Scene, "id", "render").await;
    who.answer(found.map(|job| {
        json(
            StatusCode::OK,
            &RenderResponse {
                render: render_view(&state, &job),
            },
        )
    }))
}
