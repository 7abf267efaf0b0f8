//! `POST /api/public/organizations/create`: an API key with `ORGANIZATION_WRITE` creates an
//! organization owned by the user who created the key.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use creapic_core::scope::Scope;
use creapic_core::wire::{CreateOrganizationRequest, CreateOrganizationResponse};
use http::StatusCode;

use crate::body::read_json;
use crate::idempotent::{self, Replay};
use crate::service::AppState;
use crate::{Error, views};

/// Creates an organization; the key's creator becomes its owner.
#[utoipa::path(
    post,
    path = "/api/public/organizations/create",
    operation_id = "createOrganization",
    tag = "organizations",
    request_body = CreateOrganizationRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses(
        (status = 201, description = "Created", body = CreateOrganizationResponse),
        (status = 400, description = "Invalid body", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing, malformed or unknown key", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "The key lacks ORGANIZATION_WRITE", body = creapic_core::wire::ErrorBody),
        (status = 422, description = "The key's creator already owns the most organizations allowed, or the Idempotency-Key was used with another body", body = creapic_core::wire::ErrorBody),
        (status = 429, description = "Rate limited", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn create(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let (principal, rate) =
        match crate::auth::authorize(&state, &parts.headers, Scope::OrganizationWrite).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
    let limits = state.config().limits;
    let (request, raw): (CreateOrganizationRequest, _) =
        match read_json(&parts.headers, body, limits.body_max_bytes).await {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        };
    let ctx = crate::handlers::request_context(&parts, state.config().trust_forwarded_for);
    let core = state.core().clone();
    let mut response = idempotent::run(
        &state,
        principal.org,
        None,
        &parts.headers,
        "POST",
        parts.uri.path(),
        &raw,
        Replay::Body,
        state.config().limits.idempotency_lock,
        |_ledger_key| async move {
            let org = core
                .create_org_with_key(&principal, &request.name, &ctx)
                .await
                .map_err(Error::Core)?;
            let body = CreateOrganizationResponse {
                organization: views::organization(&org),
                role: "owner".into(),
            };
            crate::handlers::json_reply(StatusCode::CREATED, &body)
        },
    )
    .await;
    rate.apply(response.headers_mut());
    response
}
