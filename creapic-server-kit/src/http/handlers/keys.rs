//! The dashboard's "API keys block": list, create (plaintext shown once) and delete keys of an
//! organization. Called by a signed-in person (a
//! [`DashboardUser`](crate::http::auth::DashboardUser) in the request extensions), never by an API
//! key; only owners and admins may manage keys.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use creapic_core::KeySpec;
use creapic_core::audit::Actor;
use creapic_core::clock::Timestamp;
use creapic_core::id::{KeyId, OrgId};
use creapic_core::page::PageLimit;
use creapic_core::scope::ScopeSet;
use creapic_core::store::KeyQuery;
use creapic_core::wire::{
    CreateKeyRequest, CreateKeyResponse, DeleteKeyResponse, ListKeysResponse,
};
use http::StatusCode;
use serde::Deserialize;

use crate::Error;
use crate::http::extract::{ApiQuery, AuditContext, BoundedJson, SignedIn};
use crate::http::idempotent::{self, IdempotencyKeyHeader, Replay};
use crate::http::response::json;
use crate::http::service::AppState;
use crate::http::views;

/// Query of `GET /api/keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListKeysQuery {
    /// The organization.
    pub organization_id: String,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–1000 (default 50).
    pub limit: Option<u32>,
    /// Include deleted keys (default false).
    pub include_deleted: Option<bool>,
}

/// Query of `DELETE /api/keys/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeleteKeyQuery {
    /// The organization that owns the key.
    pub organization_id: String,
}

pub(crate) fn org_param(text: &str) -> Result<OrgId, Error> {
    OrgId::parse(text).map_err(|_| Error::InvalidParameter {
        name: "organizationId",
        message: "must be an organization id (a UUID)".into(),
    })
}

pub(crate) fn query<T: serde::de::DeserializeOwned>(
    parts: &http::request::Parts,
) -> Result<T, Error> {
    Query::<T>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|e| Error::InvalidParameter {
            name: "query",
            message: e.body_text(),
        })
}

pub(crate) fn limit(n: Option<u32>) -> Result<PageLimit, Error> {
    n.map_or(Ok(PageLimit::default()), PageLimit::new)
        .map_err(Error::Core)
}

/// Lists an organization's keys (never their secrets).
#[utoipa::path(
    get,
    path = "/api/keys",
    operation_id = "listKeys",
    tag = "keys",
    params(ListKeysQuery),
    responses(
        (status = 200, description = "The keys, oldest first", body = ListKeysResponse),
        (status = 400, description = "Bad query", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "No signed-in dashboard user", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "Not an owner or admin", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "Not a member of this organization", body = creapic_core::wire::ErrorBody),
    ),
    security(("dashboard" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    ApiQuery(q): ApiQuery<ListKeysQuery>,
) -> Response {
    let result = async {
        let org = org_param(&q.organization_id)?;
        let after = crate::http::handlers::cursor(q.cursor.as_deref(), KeyId::parse)?;
        let kq = KeyQuery {
            include_deleted: q.include_deleted.unwrap_or(false),
            after,
            limit: limit(q.limit)?,
        };
        let page = state
            .core()
            .list_keys(Actor::User(user), org, &kq)
            .await
            .map_err(Error::Core)?;
        let body = ListKeysResponse {
            keys: page.items.iter().map(views::api_key).collect(),
            next_cursor: page.next.map(|k| k.to_string()),
        };
        Ok(json(StatusCode::OK, &body))
    }
    .await;
    result.unwrap_or_else(Error::into_response)
}

/// Creates a key. The response is the only time its plaintext exists; a replay of the same
/// `Idempotency-Key` answers 409 instead of showing it again.
#[utoipa::path(
    post,
    path = "/api/keys",
    operation_id = "createKey",
    tag = "keys",
    request_body = CreateKeyRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses(
        (status = 201, description = "Created; copy `key` now", body = CreateKeyResponse),
        (status = 400, description = "Invalid body", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "No signed-in dashboard user", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "Not an owner or admin", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "Not a member of this organization", body = creapic_core::wire::ErrorBody),
        (status = 409, description = "Already created under this Idempotency-Key", body = creapic_core::wire::ErrorBody),
        (status = 422, description = "A limit was exceeded (name length, keys per organization)", body = creapic_core::wire::ErrorBody),
    ),
    security(("dashboard" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    idempotency: IdempotencyKeyHeader,
    AuditContext(ctx): AuditContext,
    BoundedJson(request, raw): BoundedJson<CreateKeyRequest>,
) -> Response {
    let prepared = (|| {
        let org = org_param(&request.organization_id)?;
        let scopes =
            ScopeSet::new(request.scopes.iter().map(|s| (*s).into())).map_err(Error::Core)?;
        let expires_at = request
            .expires_at
            .as_deref()
            .map(Timestamp::parse)
            .transpose()
            .map_err(Error::Core)?;
        let spec = KeySpec {
            name: request.name,
            scopes,
            mode: request.mode.into(),
            expires_at,
        };
        Ok::<_, Error>((org, spec))
    })();
    let (org, spec) = match prepared {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let core = state.core().clone();
    // Authorize before the idempotency record is opened: an outsider's request for another
    // organization must leave nothing that its members' requests could collide with.
    if let Err(e) = core.authorize_key_management(Actor::User(user), org).await {
        return Error::Core(e).into_response();
    }
    let caller = format!("user:{user}");
    let request = idempotency
        .request(org, &raw)
        .caller(&caller)
        .replay(Replay::Refuse);
    idempotent::run(&state, request, |_ledger_key| async move {
        let created = core
            .create_key(Actor::User(user), org, spec, &ctx)
            .await
            .map_err(Error::Core)?;
        let body = CreateKeyResponse {
            key: created.secret.expose().to_owned(),
            api_key: views::api_key(&created.key),
        };
        crate::http::handlers::json_reply(StatusCode::CREATED, &body)
    })
    .await
}

/// Deletes a key: immediately, idempotently and for good (the record stays for audit).
#[utoipa::path(
    delete,
    path = "/api/keys/{id}",
    operation_id = "deleteKey",
    tag = "keys",
    params(("id" = String, Path, description = "The key id"), DeleteKeyQuery),
    responses(
        (status = 200, description = "Deleted (or already deleted)", body = DeleteKeyResponse),
        (status = 400, description = "Malformed id", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "No signed-in dashboard user", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "Not an owner or admin", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "No such key in this organization", body = creapic_core::wire::ErrorBody),
    ),
    security(("dashboard" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SignedIn(user): SignedIn,
    ApiQuery(q): ApiQuery<DeleteKeyQuery>,
    AuditContext(ctx): AuditContext,
) -> Response {
    let result = async {
        let org = org_param(&q.organization_id)?;
        let id = KeyId::parse(&id).map_err(|_| Error::InvalidParameter {
            name: "id",
            message: "must be a key id (a UUID)".into(),
        })?;
        let key = state
            .core()
            .delete_key(Actor::User(user), org, id, &ctx)
            .await
            .map_err(Error::Core)?;
        Ok(json(
            StatusCode::OK,
            &DeleteKeyResponse {
                api_key: views::api_key(&key),
            },
        ))
    }
    .await;
    result.unwrap_or_else(Error::into_response)
}
