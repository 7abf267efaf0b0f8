//! `POST /api/public/images/generate`: one image, synchronously. Raw text becomes a JSON prompt
//! first; the tokens are held before the provider is called, captured when the image is stored,
//! and released — refunded — when the provider fails (502 with the provider's code).
//!
//! The provider is never called without an open hold of this attempt: a retry that resumes an
//! attempt whose hold was already released (its refund committed, its response lost) is sent
//! back to start a new attempt instead. The whole generation runs under
//! [`Limits::generation_deadline`](crate::config::Limits::generation_deadline) (below the
//! stale-hold sweeper's age), and its `Idempotency-Key` lock is renewed while it runs
//! (`idempotent::run`), so neither a client's retry nor the sweeper acts on a request still
//! running, while a request that died gives its key back within the plain lock.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use creapic_core::generation::{AspectRatio, Quality};
use creapic_core::scope::Scope;
use creapic_core::wire::{
    GenerateImageRequest, GenerateImageResponse, Generation, ImageSource, JobStatusWire,
};
use http::StatusCode;

use crate::Error;
use crate::body::read_json;
use crate::idempotent::{self, Failure, Replay};
use crate::item::{ImageSpec, PromptSource};
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
                        Ok(_) => Err(Failure::settled(e)),
                        Err(release) => {
                            tracing::error!(error = %release, "could not refund a failed generation");
                            Err(Failure::from(e))
                        }
                    };
                }
            };
            let captured = core
                .capture(org, hold_id, cost, &format!("{ledger_key}:capture"))
                .await
                .map_err(Error::Core)?;
            metrics::counter!("creapic_generations_total", "outcome" => "ok").increment(1);
            let media = generated.output.media.clone();
            let body = GenerateImageResponse {
                generation: Generation {
                    id: media.as_str().to_owned(),
                    status: JobStatusWire::Completed,
                    prompt: generated.prompt,
                    aspect_ratio: spec.aspect_ratio.into(),
                    quality: spec.quality.into(),
                    tokens_used: cost,
                    created_at: core.clock().now().to_rfc3339(),
                },
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
