//! `POST /api/playground/images`, `GET /api/playground/images` (the listing),
//! `GET /api/playground/images/{jobId}` and
//! `POST /api/playground/images/{jobId}/cancel`: bulk image jobs, as the 001 document specifies
//! them — 1 credit per image, all or nothing, then polling; canceling releases what is left. A
//! finished job's status body is served from [`crate::http::finished_status`].

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use creapic_core::JobSpec;
use creapic_core::job::JobKind;
use creapic_core::ledger::Credits;
use creapic_core::wire::{
    BulkImagesRequest, BulkImagesResponse, JobStatusResponse, ListJobsResponse,
};
use http::StatusCode;

use crate::Error;
use crate::http::extract::{ApiQuery, Authorized, BoundedJson, need};
use crate::http::handlers::keys::limit;
use crate::http::handlers::{job_by_id, job_id_param};
use crate::http::idempotent::{self, IdempotencyKeyHeader};
use crate::http::response::{bytes_response, json};
use crate::http::service::AppState;
use crate::http::views;

/// Starts a bulk image job: reserves 1 credit per prompt (all or nothing) and queues the job.
#[utoipa::path(
    post,
    path = "/api/playground/images",
    operation_id = "submitImageJob",
    tag = "playground",
    request_body = BulkImagesRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: a replay returns the first response and charges nothing")),
    responses(
        (status = 202, description = "Accepted; poll the job", body = BulkImagesResponse),
        (status = 400, description = "Invalid body (no prompts, empty prompt, bad JSON)", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing or invalid Authorization header / Invalid API key format / Invalid API key", body = creapic_core::wire::ErrorBody),
        (status = 402, description = "Insufficient credits (nothing was debited)", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "The key lacks IMAGE_GENERATION", body = creapic_core::wire::ErrorBody),
        (status = 409, description = "The same Idempotency-Key is in flight", body = creapic_core::wire::ErrorBody),
        (status = 413, description = "Body larger than 1 MiB", body = creapic_core::wire::ErrorBody),
        (status = 422, description = "Too many prompts, a prompt too long, or an Idempotency-Key reused with another body", body = creapic_core::wire::ErrorBody),
        (status = 429, description = "Rate limited", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    who: Authorized<need::ImageGeneration>,
    idempotency: IdempotencyKeyHeader,
    BoundedJson(request, raw): BoundedJson<BulkImagesRequest>,
) -> Response {
    let principal = who.principal;
    if let Err(e) = check_prompts(&state, &principal, &request) {
        return e.into_response();
    }
    let unit = state.config().pricing.bulk_image;
    let core = state.core().clone();
    let runner = state.clone();
    let response = idempotent::run(
        &state,
        idempotency.request(principal.org, &raw),
        |ledger_key| async move {
            let spec = JobSpec {
                kind: JobKind::Bulk,
                inputs: request.prompts,
                unit_cost: Credits::new(unit).map_err(Error::Core)?,
            };
            let queued = crate::telemetry::ledger_timed(
                "submit_job",
                core.submit_job(&principal, spec, &ledger_key),
            )
            .await
            .map_err(Error::Core)?;
            runner.notify_job();
            metrics::counter!("creapic_jobs_submitted_total", "kind" => "bulk").increment(1);
            let total = queued.job.items.len();
            let body = BulkImagesResponse {
                job_id: queued.job.id.to_string(),
                total_images: u32::try_from(total).unwrap_or(u32::MAX),
                credits_used: queued.hold.as_ref().map_or(0, |h| h.amount.get()),
                credits: queued.balance.get(),
            };
            crate::http::handlers::json_reply(StatusCode::ACCEPTED, &body)
        },
    )
    .await;
    who.answer(response)
}

/// The body's organization and prompts checked against the caller and the limits.
fn check_prompts(
    state: &AppState,
    principal: &creapic_core::Principal,
    request: &BulkImagesRequest,
) -> Result<(), Error> {
    let limits = state.config().limits;
    crate::http::handlers::same_organization(principal, request.organization_id.as_deref())?;
    if request.prompts.len() > limits.prompts_max {
        return Err(Error::Core(creapic_core::Error::LimitExceeded {
            what: "prompts per job",
            max: limits.prompts_max as u64,
        }));
    }
    if request
        .prompts
        .iter()
        .any(|p| crate::http::handlers::too_long(p, limits.prompt_max_chars))
    {
        return Err(Error::Core(creapic_core::Error::LimitExceeded {
            what: "prompt length in characters",
            max: limits.prompt_max_chars as u64,
        }));
    }
    Ok(())
}

/// Query of `GET /api/playground/images`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Jobs per page, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The key's organization's bulk jobs and scene renders, oldest first, without prompts or
/// images (poll one by its id for those).
#[utoipa::path(
    get,
    path = "/api/playground/images",
    operation_id = "listImageJobs",
    tag = "playground",
    params(ListJobsQuery),
    responses(
        (status = 200, description = "Jobs and renders, oldest first", body = ListJobsResponse),
        (status = 400, description = "Bad query (cursor, limit)", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing or invalid key", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "The key has neither IMAGE_GENERATION nor SCENE_RENDER", body = creapic_core::wire::ErrorBody),
        (status = 429, description = "Rate limited", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    // The scope check is the core's (either of two scopes).
    who: Authorized<need::AnyKey>,
    // Answered after the key is checked: a bad query of an unauthenticated caller is a 401.
    q: Result<ApiQuery<ListJobsQuery>, Error>,
) -> Response {
    let result = async {
        let ApiQuery(q) = q?;
        let after =
            crate::http::handlers::cursor(q.cursor.as_deref(), creapic_core::id::JobId::parse)?;
        let page = state
            .core()
            .list_jobs(&who.principal, after, limit(q.limit)?)
            .await
            .map_err(Error::Core)?;
        let body = ListJobsResponse {
            jobs: page.items.iter().map(views::job_summary).collect(),
            next_cursor: page.next.map(|id| id.to_string()),
        };
        Ok::<_, Error>(json(StatusCode::OK, &body))
    }
    .await;
    who.answer(result)
}

/// The status of a bulk job of the key's organization (404 for any other organization's job).
#[utoipa::path(
    get,
    path = "/api/playground/images/{jobId}",
    operation_id = "getImageJob",
    tag = "playground",
    params(("jobId" = String, Path, description = "The job id returned by POST /api/playground/images")),
    responses(
        (status = 200, description = "The job", body = JobStatusResponse),
        (status = 400, description = "Malformed job id", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing or invalid key", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "The key lacks IMAGE_GENERATION", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "No such job in this organization", body = creapic_core::wire::ErrorBody),
        (status = 429, description = "Rate limited", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn status(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    who: Authorized<need::ImageGeneration>,
) -> Response {
    who.answer(job_status(&state, &who.principal, &job_id).await)
}

/// The status body of a bulk job, from the cache of finished ones when it is there.
async fn job_status(
    state: &AppState,
    principal: &creapic_core::Principal,
    job_id: &str,
) -> Result<Response, Error> {
    let id = job_id_param(job_id, "jobId", "job")?;
    // A finished job's body is the same for every poll within one link window.
    let window = state.link_window();
    let mount = state.link_mount();
    if let Some(body) =
        state
            .finished_status()
            .get(principal.org, id, window.until, mount.as_deref())
    {
        return Ok(bytes_response(StatusCode::OK, body));
    }
    let job = job_by_id(state, principal, id, JobKind::Bulk, "job").await?;
    let view = views::job_status(&job, &|output| {
        state.output_url_in(window, principal.org, output)
    });
    let body = serde_json::to_vec(&view)
        .map(Bytes::from)
        .map_err(|e| Error::Internal {
            message: format!("serializing a response: {e}"),
        })?;
    if job.status.is_terminal() {
        state
            .finished_status()
            .put(principal.org, id, window.until, mount, body.clone());
    }
    Ok(bytes_response(StatusCode::OK, body))
}

/// Cancels a bulk job of the key's organization: items not yet started are never started and
/// their credits are released in the same step; finished images stay (and stay paid). Canceling
/// a canceled job answers it again; a job that already finished is 409.
#[utoipa::path(
    post,
    path = "/api/playground/images/{jobId}/cancel",
    operation_id = "cancelImageJob",
    tag = "playground",
    params(
        ("jobId" = String, Path, description = "The job id returned by POST /api/playground/images"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe (canceling is idempotent anyway)"),
    ),
    responses(
        (status = 200, description = "The job, canceled (or as it finished, if it did)", body = JobStatusResponse),
        (status = 404, description = "No such job in this organization", body = creapic_core::wire::ErrorBody),
        (status = 409, description = "The job already finished", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    who: Authorized<need::ImageGeneration>,
    idempotency: IdempotencyKeyHeader,
) -> Response {
    let principal = who.principal;
    let id = match job_id_param(&job_id, "jobId", "job") {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let st = state.clone();
    let response = idempotent::run(
        &state,
        idempotency.request(principal.org, b""),
        |_ledger_key| async move {
            // Only bulk jobs here: a render id is "not found" on this route.
            job_by_id(&st, &principal, id, JobKind::Bulk, "job").await?;
            let job = st
                .core()
                .cancel_job(&principal, id)
                .await
                .map_err(Error::Core)?;
            let window = st.link_window();
            let view = views::job_status(&job, &|output| {
                st.output_url_in(window, principal.org, output)
            });
            crate::http::handlers::json_reply(StatusCode::OK, &view)
        },
    )
    .await;
    who.answer(response)
}
