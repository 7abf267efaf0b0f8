//! `GET /api/audit`: an organization's audit log for compliance requests, as JSON pages or a
//! CSV export. Dashboard route: owners and admins only.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use creapic_core::audit::{Actor, AuditAction, AuditQuery};
use creapic_core::clock::Timestamp;
use creapic_core::wire::{AuditEventWire, AuditResponse};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::Error;
use crate::http::extract::{ApiQuery, SignedIn};
use crate::http::handlers::keys::{limit, org_param};
use crate::http::response::json;
use crate::http::service::AppState;
use crate::http::views;

/// Query of `GET /api/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// The organization.
    pub organization_id: String,
    /// Events at or after this time (RFC 3339 or YYYY-MM-DD).
    pub since: Option<String>,
    /// Events before this time.
    pub until: Option<String>,
    /// Only events of this action, e.g. `key.created`.
    pub action: Option<String>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–1000 (default 50).
    pub limit: Option<u32>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// Reads an organization's audit log.
#[utoipa::path(
    get,
    path = "/api/audit",
    operation_id = "listAuditEvents",
    tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "Events, oldest first (JSON, or text/csv with format=csv)", body = AuditResponse),
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
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Response {
    let result = async {
        let org = org_param(&p.organization_id)?;
        let time = |v: &Option<String>, name: &'static str| {
            v.as_deref()
                .map(Timestamp::parse)
                .transpose()
                .map_err(|e| Error::InvalidParameter {
                    name,
                    message: e.to_string(),
                })
        };
        let after = crate::http::handlers::cursor(p.cursor.as_deref(), str::parse::<u64>)?;
        let csv = match p.format.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(_) => {
                return Err(Error::InvalidParameter {
                    name: "format",
                    message: "expected json or csv".into(),
                });
            }
        };
        let q = AuditQuery {
            org,
            since: time(&p.since, "since")?,
            until: time(&p.until, "until")?,
            action: p
                .action
                .as_deref()
                .map(AuditAction::parse)
                .transpose()
                .map_err(|_| Error::InvalidParameter {
                    name: "action",
                    message: "is not an audit action".into(),
                })?,
            after,
            limit: limit(p.limit)?,
        };
        let page = state
            .core()
            .audit(Actor::User(user), &q)
            .await
            .map_err(Error::Core)?;
        let events: Vec<AuditEventWire> = page
            .items
            .iter()
            .map(|r| views::audit_event(&r.event))
            .collect();
        let next_cursor = page.next.map(|n| n.to_string());
        if csv {
            let mut response = (StatusCode::OK, to_csv(&events)).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            if let Some(next) = next_cursor.and_then(|n| HeaderValue::from_str(&n).ok()) {
                response.headers_mut().insert("x-next-cursor", next);
            }
            return Ok(response);
        }
        Ok(json(
            StatusCode::OK,
            &AuditResponse {
                events,
                next_cursor,
            },
        ))
    }
    .await;
    result.unwrap_or_else(Error::into_response)
}

/// RFC 4180 CSV, with cells that a spreadsheet would run as formulas neutralized.
pub fn to_csv(events: &[AuditEventWire]) -> String {
    let mut out = String::from("id,at,action,actor,ip,user_agent,key_id,key_prefix,detail\r\n");
    for e in events {
        let cells = [
            Some(e.id.as_str()),
            Some(e.at.as_str()),
            Some(e.action.as_str()),
            Some(e.actor.as_str()),
            e.ip.as_deref(),
            e.user_agent.as_deref(),
            e.key_id.as_deref(),
            e.key_prefix.as_deref(),
            e.detail.as_deref(),
        ];
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&cell_text(cell.unwrap_or("")));
        }
        out.push_str("\r\n");
    }
    out
}

fn cell_text(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_neutralizes_cells() {
        let e = AuditEventWire {
            id: "1".into(),
            at: "t".into(),
            action: "key.created".into(),
            actor: "operator".into(),
            ip: Some("127.0.0.1".into()),
            user_agent: Some("a, \"b\"".into()),
            key_id: None,
            key_prefix: None,
            detail: Some("=cmd()".into()),
        };
        let csv = to_csv(&[e]);
        assert!(csv.contains("\"a, \"\"b\"\"\""), "{csv}");
        assert!(csv.contains(",'=cmd()\r\n"), "{csv}");
    }
}
