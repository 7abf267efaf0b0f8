//! `POST /api/public/organizations/create`: an API key with `ORGANIZATION_WRITE` creates an
//! organization owned by the user who created the key.

use axum::extract::State;
use axum::response::Response;
use creapic_core::wire::{CreateOrganizationRequest, CreateOrganizationResponse};
use http::StatusCode;

use crate::Error;
use crate::http::extract::{AuditContext, Authorized, BoundedJson, need};
use crate::http::idempotent::{self, IdempotencyKeyHeader};
use crate::http::service::AppState;
use crate::http::views;

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
pub async fn create(
    State(state): State<AppState>,
    who: Authorized<need::OrganizationWrite>,
    idempotency: IdempotencyKeyHeader,
    AuditContext(ctx): AuditContext,
    BoundedJson(request, raw): BoundedJson<CreateOrganizationRequest>,
) -> Response {
    let principal = who.principal;
    let core = state.core().clone();
    let response = idempotent::run(
        &state,
        idempotency.request(principal.org, &raw),
        |_ledger_key| async move {
            let org = core
                .create_org_with_key(&principal, &request.name, &ctx)
                .await
                .map_err(Error::Core)?;
            let body = CreateOrganizationResponse {
                organization: views::organization(&org),
                role: "owner".into(),
            };
            crate::http::handlers::json_reply(StatusCode::CREATED, &body)
        },
    )
    .await;
    who.answer(response)
}
