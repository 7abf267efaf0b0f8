//! The credits page (`GET /console/credits?org=…`, any member of the organization): the
//! balance, the credits held for work in progress, usage per UTC day over the last
//! [`USAGE_DAYS`] days as a server-drawn bar chart ([`super::chart`]) with a table as its text
//! alternative, and the ledger page by page.
//!
//! Design decision: the ledger is shown **oldest first**, in the core's order
//! (`Creapic::entries` pages by the ledger's sequence with an `after` cursor), like a bank
//! statement read from the top; a "Next page" link carries the cursor and "First page" goes
//! back to the start. Newest first would need a second, backwards cursor in every store for a
//! page that reads the same either way; the chart above it already shows what happened lately.
//!
//! Nothing here changes state: the page reads the balance, then the held credits (in that
//! order, as `Creapic::held` asks), the usage and one page of entries.

use std::time::Duration;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use creapic_core::ledger::{EntryKind, LedgerEntry};
use creapic_core::page::PageLimit;
use http::StatusCode;
use serde::Deserialize;

use crate::http::console::chart::{self, Chart};
use crate::http::console::frame::{self, Frame, OrgFrame, Section};
use crate::http::console::page::{self, When};
use crate::http::console::session::Viewer;
use crate::http::error::Error;
use crate::http::service::AppState;

/// Ledger entries on one page (a "Next page" link follows).
pub const LEDGER_ROWS_PER_PAGE: u32 = 50;
/// Days the usage chart covers, today included.
pub const USAGE_DAYS: u64 = 30;

/// Query of `GET /console/credits`.
#[derive(Debug, Default, Deserialize)]
pub struct CreditsQuery {
    /// The organization (default: the person's first).
    pub org: Option<String>,
    /// The sequence number of the last entry of the previous page.
    pub after: Option<String>,
}

struct EntryRow {
    when: When,
    kind: &'static str,
    amount: String,
    balance_after: u64,
    purpose: String,
}

/// The credits page.
#[derive(Template)]
#[template(path = "console/credits.html")]
struct CreditsPage {
    frame: Frame,
    org: OrgFrame,
    balance: u64,
    held: u64,
    chart: Chart,
    usage_days: u64,
    entries: Vec<EntryRow>,
    next_page: Option<String>,
    first_page: Option<String>,
}

/// `GET /console/credits?org=…&after=…`: the page.
pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<CreditsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page::error(&viewer.base, &page::bad_query());
    };
    let after = match page::after(
        query.after.as_deref(),
        str::parse::<u64>,
        "a ledger position",
    ) {
        Ok(after) => after,
        Err(e) => return page::error(&viewer.base, &e),
    };
    // Any member may read the organization's credits: `load_org` has checked membership.
    let org = match frame::load_org(&state, &viewer, query.org.as_deref(), Section::Credits).await {
        Ok(org) => org,
        Err(answer) => return answer,
    };
    let loaded = async {
        let core = state.core();
        let balance = core.balance(org.org).await?;
        let held = core.held(org.org).await?;
        let now = core.clock().now();
        let from = now.minus(Duration::from_secs((USAGE_DAYS - 1) * 24 * 60 * 60));
        let (_, days) = core.usage(org.org, from, now).await?;
        let limit = PageLimit::new(LEDGER_ROWS_PER_PAGE)?;
        let entries = core.entries(org.org, after, limit).await?;
        Ok::<_, creapic_core::Error>((balance, held, days, entries))
    }
    .await;
    let (balance, held, days, entries) = match loaded {
        Ok(found) => found,
        Err(e) => return page::error(&viewer.base, &Error::Core(e)),
    };
    let base = viewer.base.as_str();
    let next_page = entries
        .next
        .map(|seq| format!("{base}/credits?org={}&after={seq}", org.id));
    let first_page = after.map(|_| format!("{base}/credits?org={}", org.id));
    page::render(
        StatusCode::OK,
        &CreditsPage {
            frame: Frame::of(&viewer),
            org,
            balance: balance.get(),
            held: held.get(),
            chart: chart::usage(&days),
            usage_days: USAGE_DAYS,
            entries: entries.items.iter().map(row).collect(),
            next_page,
            first_page,
        },
    )
}

fn row(e: &LedgerEntry) -> EntryRow {
    let amount = match e.kind {
        // A capture moves nothing: it makes part of a hold final.
        EntryKind::Capture => format!("0 ({} final)", e.amount),
        _ if e.delta > 0 => format!("+{}", e.delta),
        _ if e.delta < 0 => format!("−{}", e.delta.unsigned_abs()),
        _ => "0".to_owned(),
    };
    // A job's entries name the job; others the request that made them (its idempotency key,
    // e.g. the operator's grant or a single generation's derived key).
    let purpose = match e.job {
        Some(job) => format!("job {job}"),
        None => format!("request {}", e.idempotency_key),
    };
    EntryRow {
        when: When::of(e.created_at),
        kind: e.kind.as_str(),
        amount,
        balance_after: e.balance_after.get(),
        purpose,
    }
}
