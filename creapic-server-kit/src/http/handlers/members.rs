//! The dashboard's organizations and members: `GET /api/organizations` (the signed-in user's
//! organizations with their role), and an organization's members — listed by any member,
//! added (`POST`), re-roled (`PATCH`) and removed (`DELETE`) by owners and admins.
//!
//! Called by a signed-in person ([`DashboardUser`](crate::http::auth::DashboardUser)), never by an
//! API key. The design decision: the handlers only parse, authorize and call the core; who may do
//! what to whom (`Role::may_change_member`) and the last-owner rule live in creapic-core, and
//! the store enforces the last one atomically. Changes go through [`idempotent::run`],
//! namespaced per user like key creation, and the caller is authorized before its record
//! exists, so an outsider leaves nothing behind in another organization.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use creapic_core::audit::{Actor, RequestContext};
use creapic_core::id::{OrgId, UserId};
use creapic_core::wire::{
    AddMemberRequest, ListMembersResponse, ListOrganizationsResponse, MemberResponse,
    OrganizationMembership, SetMemberRoleRequest,
};
use http::StatusCode;
use serde::Deserialize;

use crate::Core;
use crate::Error;
use crate::http::extract::{ApiQuery, AuditContext, BoundedJson, SignedIn};
use crate::http::handlers::keys::{limit, org_param};
use crate::http::idempotent::{self, IdempotencyKeyHeader};
use crate::http::response::json;
use crate::http::service::AppState;
use crate::http::views;

/// Query of the two listings.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–1000 (default 50).
    pub limit: Option<u32>,
}

fn user_param(text: &str) -> Result<UserId, Error> {
    UserId::parse(text).map_err(|_| Error::InvalidParameter {
        name: "userId",
        message: "must be a user id (a UUID)".into(),
    })
}

/// The signed-in user's organizations, with their role in each.
#[utoipa::path(
    get,
    path = "/api/organizations",
    operation_id = "listOrganizations",
    tag = "members",
    params(PageQuery),
    responses(
        (status = 200, description = "The organizations, oldest first", body = ListOrganizationsResponse),
        (status = 400, description = "Bad query", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "No signed-in dashboard user", body = creapic_core::wire::ErrorBody),
    ),
    security(("dashboard" = []))
)]
pub async fn list_organizations(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Response {
    let result = async {
        let after = crate::http::handlers::cursor(q.cursor.as_deref(), OrgId::parse)?;
        let page = state
            .core()
            .organizations_of(user, after, limit(q.limit)?)
            .await
            .map_err(Error::Core)?;
        let body = ListOrganizationsResponse {
            organizations: page
                .items
                .iter()
                .map(|(org, role)| OrganizationMembership {
                    organization: views::organization(org),
                    role: (*role).into(),
                })
                .collect(),
            next_cursor: page.next.map(|o| o.to_string()),
        };
        Ok(json(StatusCode::OK, &body))
    }
    .await;
    result.unwrap_or_else(Error::into_response)
}

/// An organization's members. Any member may read them.
#[utoipa::path(
    get,
    path = "/api/organizations/{organizationId}/members",
    operation_id = "listMembers",
    tag = "members",
    params(("organizationId" = String, Path, description = "The organization"), PageQuery),
    responses(
        (status = 200, description = "The members, by user id", body = ListMembersResponse),
        (status = 400, description = "Malformed id or bad query", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "No signed-in dashboard user", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "Not a member of this organization", body = creapic_core::wire::ErrorBody),
    ),
    security(("dashboard" = []))
)]
pub async fn list_members(
    State(state): State<AppState>,
    Path(org): Path<String>,
    SignedIn(user): SignedIn,
    // Answered after the organization parameter, as it always was.
    q: Result<ApiQuery<PageQuery>, Error>,
) -> Response {
    let result = async {
        let org = org_param(&org)?;
        let ApiQuery(q) = q?;
        let after = crate::http::handlers::cursor(q.cursor.as_deref(), UserId::parse)?;
        let page = state
            .core()
            .members(Actor::User(user), org, after, limit(q.limit)?)
            .await
            .map_err(Error::Core)?;
        let body = ListMembersResponse {
            members: page.items.iter().map(views::member).collect(),
            next_cursor: page.next.map(|u| u.to_string()),
        };
        Ok(json(StatusCode::OK, &body))
    }
    .await;
    result.unwrap_or_else(Error::into_response)
}

/// Adds a person by e-mail (created if new). Owners add any role, admins `member` only.
#[utoipa::path(
    post,
    path = "/api/organizations/{organizationId}/members",
    operation_id = "addMember",
    tag = "members",
    request_body = AddMemberRequest,
    params(
        ("organizationId" = String, Path, description = "The organization"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe"),
    ),
    responses(
        (status = 201, description = "Added", body = MemberResponse),
        (status = 400, description = "Malformed id or invalid body", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "No signed-in dashboard user", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "Not an owner or admin, or an admin adding an owner or admin", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "Not a member of this organization", body = creapic_core::wire::ErrorBody),
        (status = 409, description = "Already a member (`already_member`), or the same Idempotency-Key in flight", body = creapic_core::wire::ErrorBody),
    ),
    security(("dashboard" = []))
)]
pub async fn add(
    State(state): State<AppState>,
    Path(org): Path<String>,
    SignedIn(user): SignedIn,
    idempotency: IdempotencyKeyHeader,
    AuditContext(ctx): AuditContext,
    // Answered after the organization parameter, as it always was.
    body: Result<BoundedJson<AddMemberRequest>, Error>,
) -> Response {
    let prepared = (|| {
        let org = org_param(&org)?;
        let BoundedJson(request, raw) = body?;
        Ok::<_, Error>((org, request, raw))
    })();
    let (org, request, raw) = match prepared {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    change(
        &state,
        idempotency,
        ctx,
        user,
        org,
        &raw,
        move |core: Core, ctx: RequestContext| async move {
            let member = core
                .add_member(
                    Actor::User(user),
                    org,
                    &request.email,
                    request.role.into(),
                    &ctx,
                )
                .await?;
            crate::http::handlers::json_reply(
                StatusCode::CREATED,
                &MemberResponse {
                    member: views::member(&member),
                },
            )
        },
    )
    .await
}

/// Changes a member's role. Owners set any role; admins touch plain members only and only to
/// `member`; the last owner cannot be demoted (409 `last_owner`).
#[utoipa::path(
    patch,
    path = "/api/organizations/{organizationId}/members/{userId}",
    operation_id = "setMemberRole",
    tag = "members",
    request_body = SetMemberRoleRequest,
    params(
        ("organizationId" = String, Path, description = "The organization"),
        ("userId" = String, Path, description = "The member's user id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe"),
    ),
    responses(
        (status = 200, description = "The member with their new role", body = MemberResponse),
        (status = 400, description = "Malformed id or invalid body", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "No signed-in dashboard user", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "Not allowed to change this member", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "No such member in this organization", body = creapic_core::wire::ErrorBody),
        (status = 409, description = "The last owner (`last_owner`), a role changed meanwhile (`invalid_state`), or the same Idempotency-Key in flight", body = creapic_core::wire::ErrorBody),
    ),
    security(("dashboard" = []))
)]
pub async fn set_role(
    State(state): State<AppState>,
    Path((org, member)): Path<(String, String)>,
    SignedIn(user): SignedIn,
    idempotency: IdempotencyKeyHeader,
    AuditContext(ctx): AuditContext,
    // Answered after the path parameters, as it always was.
    body: Result<BoundedJson<SetMemberRoleRequest>, Error>,
) -> Response {
    let prepared = (|| {
        let org = org_param(&org)?;
        let member = user_param(&member)?;
        let BoundedJson(request, raw) = body?;
        Ok::<_, Error>((org, member, request, raw))
    })();
    let (org, member, request, raw) = match prepared {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    change(
        &state,
        idempotency,
        ctx,
        user,
        org,
        &raw,
        move |core: Core, ctx: RequestContext| async move {
            let member = core
                .change_role(Actor::User(user), org, member, request.role.into(), &ctx)
                .await?;
            crate::http::handlers::json_reply(
                StatusCode::OK,
                &MemberResponse {
                    member: views::member(&member),
                },
            )
        },
    )
    .await
}

/// Removes a member (the user and the keys they created stay). Owners remove anyone, admins
/// plain members only; the last owner cannot be removed (409 `last_owner`).
#[utoipa::path(
    delete,
    path = "/api/organizations/{organizationId}/members/{userId}",
    operation_id = "removeMember",
    tag = "members",
    params(
        ("organizationId" = String, Path, description = "The organization"),
        ("userId" = String, Path, description = "The member's user id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: a repeat answers the first removal"),
    ),
    responses(
        (status = 200, description = "Removed; the member as they were", body = MemberResponse),
        (status = 400, description = "Malformed id", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "No signed-in dashboard user", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "Not allowed to remove this member", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "No such member in this organization", body = creapic_core::wire::ErrorBody),
        (status = 409, description = "The last owner (`last_owner`), a role changed meanwhile (`invalid_state`), or the same Idempotency-Key in flight", body = creapic_core::wire::ErrorBody),
    ),
    security(("dashboard" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    Path((org, member)): Path<(String, String)>,
    SignedIn(user): SignedIn,
    idempotency: IdempotencyKeyHeader,
    AuditContext(ctx): AuditContext,
) -> Response {
    let prepared = (|| Ok::<_, Error>((org_param(&org)?, user_param(&member)?)))();
    let (org, member) = match prepared {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    change(
        &state,
        idempotency,
        ctx,
        user,
        org,
        &[],
        move |core: Core, ctx: RequestContext| async move {
            let removed = core
                .remove_member(Actor::User(user), org, member, &ctx)
                .await?;
            crate::http::handlers::json_reply(
                StatusCode::OK,
                &MemberResponse {
                    member: views::member(&removed),
                },
            )
        },
    )
    .await
}

/// The common tail of the three changes: the caller authorized as an owner or admin of `org`
/// (before any idempotency record exists), then `work` run under the request's
/// `Idempotency-Key`, namespaced per user, with the request's audited context.
async fn change<F, Fut>(
    state: &AppState,
    idempotency: IdempotencyKeyHeader,
    ctx: RequestContext,
    user: UserId,
    org: OrgId,
    raw: &[u8],
    work: F,
) -> Response
where
    F: FnOnce(Core, RequestContext) -> Fut,
    Fut: Future<Output = Result<(StatusCode, Vec<u8>), idempotent::Failure>>,
{
    let core = state.core().clone();
    if let Err(e) = core
        .authorize_member_management(Actor::User(user), org)
        .await
    {
        return Error::Core(e).into_response();
    }
    let caller = format!("user:{user}");
    let request = idempotency.request(org, raw).caller(&caller);
    idempotent::run(state, request, |_ledger_key| work(core, ctx)).await
}
