//! `GET /api/public/credits` and `GET /api/public/credits/usage`: what an integrator's key may
//! read of its own organization's tokens — "make sure the account has tokens before invoking
//! the API" — the balance, the tokens held for work in progress, the ledger page by page, and
//! usage per UTC day (what a console charts). Any valid key of the organization may read them;
//! nothing here changes state.

use axum::extract::State;
use axum::response::Response;
use creapic_core::clock::Timestamp;
use creapic_core::ledger::DAY_MS;
use creapic_core::wire::{CreditsResponse, UsageResponse};
use http::StatusCode;
use serde::Deserialize;

use crate::Error;
use crate::http::extract::{ApiQuery, Authorized, need};
use crate::http::handlers::keys::limit;
use crate::http::response::json;
use crate::http::service::AppState;
use crate::http::views;

/// How many days `GET /api/public/credits/usage` covers when `from` is not given: the 30 days
/// that end with `to`.
pub const USAGE_DEFAULT_DAYS: i64 = 30;

/// Query of `GET /api/public/credits`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreditsQuery {
    /// The `nextCursor` of the previous page of entries.
    pub cursor: Option<String>,
    /// Entries per page, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Query of `GET /api/public/credits/usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The first day, `YYYY-MM-DD` (UTC; default: 29 days before `to`).
    pub from: Option<String>,
    /// The last day, included, `YYYY-MM-DD` (UTC; default: today). At most 366 days in all.
    pub to: Option<String>,
}

/// The key's organization's balance, held tokens and one page of its ledger.
#[utoipa::path(
    get,
    path = "/api/public/credits",
    operation_id = "getCredits",
    tag = "credits",
    params(CreditsQuery),
    responses(
        (status = 200, description = "Balance, held tokens and ledger entries, oldest first", body = CreditsResponse),
        (status = 400, description = "Bad query (cursor, limit)", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing or invalid key", body = creapic_core::wire::ErrorBody),
        (status = 429, description = "Rate limited", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    who: Authorized<need::AnyKey>,
    // Answered after the key is checked: a bad query of an unauthenticated caller is a 401.
    q: Result<ApiQuery<CreditsQuery>, Error>,
) -> Response {
    let result = async {
        let ApiQuery(q) = q?;
        let after = crate::http::handlers::cursor(q.cursor.as_deref(), str::parse::<u64>)?;
        let limit = limit(q.limit)?;
        let core = state.core();
        let org = who.principal.org;
        let balance = core.balance(org).await.map_err(Error::Core)?;
        let held = core.held(org).await.map_err(Error::Core)?;
        let page = core.entries(org, after, limit).await.map_err(Error::Core)?;
        let body = CreditsResponse {
            organization_id: org.to_string(),
            balance: balance.get(),
            held: held.get(),
            entries: page.items.iter().map(views::ledger_entry).collect(),
            next_cursor: page.next.map(|seq| seq.to_string()),
        };
        Ok::<_, Error>(json(StatusCode::OK, &body))
    }
    .await;
    who.answer(result)
}

/// The key's organization's token usage per UTC day: every day of the range, oldest first.
#[utoipa::path(
    get,
    path = "/api/public/credits/usage",
    operation_id = "getCreditUsage",
    tag = "credits",
    params(UsageQuery),
    responses(
        (status = 200, description = "Usage per day", body = UsageResponse),
        (status = 400, description = "Bad query (a date that is not YYYY-MM-DD, `to` before `from`)", body = creapic_core::wire::ErrorBody),
        (status = 401, description = "Missing or invalid key", body = creapic_core::wire::ErrorBody),
        (status = 422, description = "More than 366 days", body = creapic_core::wire::ErrorBody),
        (status = 429, description = "Rate limited", body = creapic_core::wire::ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn usage(
    State(state): State<AppState>,
    who: Authorized<need::AnyKey>,
    // Answered after the key is checked: a bad query of an unauthenticated caller is a 401.
    q: Result<ApiQuery<UsageQuery>, Error>,
) -> Response {
    let result = async {
        let ApiQuery(q) = q?;
        let core = state.core();
        let to = match q.to.as_deref() {
            Some(text) => date(text, "to")?,
            None => core.clock().now(),
        };
        let from = match q.from.as_deref() {
            Some(text) => date(text, "from")?,
            None => Timestamp::from_unix_ms(
                to.unix_ms()
                    .saturating_sub((USAGE_DEFAULT_DAYS - 1).saturating_mul(DAY_MS)),
            ),
        };
        let (range, days) = core
            .usage(who.principal.org, from, to)
            .await
            .map_err(|e| match e {
                // The range's own errors name the query parameters.
                creapic_core::Error::Invalid { reason, .. } => Error::InvalidParameter {
                    name: "to",
                    message: reason,
                },
                other => Error::Core(other),
            })?;
        let last = Timestamp::from_unix_ms(range.end().unix_ms() - DAY_MS);
        let body = UsageResponse {
            organization_id: who.principal.org.to_string(),
            from: views::date(range.start()),
            to: views::date(last),
            spent: days.iter().map(|d| d.spent.get()).sum(),
            days: days.iter().map(views::daily_usage).collect(),
        };
        Ok::<_, Error>(json(StatusCode::OK, &body))
    }
    .await;
    who.answer(result)
}

/// A day parameter: `YYYY-MM-DD` only (a time of day would suggest a precision usage does not
/// have).
fn date(text: &str, name: &'static str) -> Result<Timestamp, Error> {
    let bad = |message: String| Error::InvalidParameter { name, message };
    if text.len() != 10 {
        return Err(bad("must be a date, YYYY-MM-DD".into()));
    }
    Timestamp::parse(text).map_err(|e| bad(e.to_string()))
}
