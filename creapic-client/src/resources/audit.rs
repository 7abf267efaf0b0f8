//! `client.audit()`: an organization's audit log (`GET /api/audit`) as JSON pages or a CSV
//! export, for hosts that proxy the dashboard routes (sent with
//! [`crate::config::DashboardAuth`], never the API key).

use creapic_core::wire::AuditResponse;
use reqwest::Method;
use url::Url;

use crate::client::{Auth, Call, Client, Raw};
use crate::error::Result;

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events at or after this time (RFC 3339, or `YYYY-MM-DD`).
    pub since: Option<String>,
    /// Events before this time.
    pub until: Option<String>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Page size, 1–1000 (server default 50).
    pub limit: Option<u32>,
}

/// A page of the audit log as CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCsv {
    /// RFC 4180 CSV with a header row; cells a spreadsheet would run are neutralized.
    pub csv: String,
    /// Pass as `cursor` for the next page (the `x-next-cursor` header).
    pub next_cursor: Option<String>,
}

/// The audit log.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    client: &'a Client,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Audit { client }
    }

    fn url(&self, organization_id: &str, filter: &AuditFilter, csv: bool) -> Url {
        let mut url = self.client.endpoint(&["api", "audit"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("organizationId", organization_id);
            for (name, value) in [
                ("since", &filter.since),
                ("until", &filter.until),
                ("cursor", &filter.cursor),
            ] {
                if let Some(v) = value {
                    q.append_pair(name, v);
                }
            }
            if let Some(limit) = filter.limit {
                q.append_pair("limit", &limit.to_string());
            }
            if csv {
                q.append_pair("format", "csv");
            }
        }
        url
    }

    /// A page of events, oldest first.
    pub fn list(&self, organization_id: &str, filter: &AuditFilter) -> Call<'a, AuditResponse> {
        let url = self.url(organization_id, filter, false);
        let spec = self.client.spec(Method::GET, url, Auth::Dashboard);
        self.client.json_call(Ok(spec))
    }

    /// Every event matching `filter` from its cursor on, page by page, following `nextCursor`.
    pub fn pages(
        &self,
        organization_id: &str,
        filter: &AuditFilter,
    ) -> crate::paginate::Paginator<'a, AuditResponse> {
        let handle = *self;
        let org = organization_id.to_owned();
        let filter = filter.clone();
        crate::paginate::Paginator::new(move |cursor| {
            let mut page = filter.clone();
            if let Some(cursor) = cursor {
                page.cursor = Some(cursor.to_owned());
            }
            handle.list(&org, &page)
        })
    }

    /// A page of events as CSV.
    pub fn export_csv(&self, organization_id: &str, filter: &AuditFilter) -> Call<'a, AuditCsv> {
        let url = self.url(organization_id, filter, true);
        let spec = self.client.spec(Method::GET, url, Auth::Dashboard);
        self.client.call(Ok(spec), decode_csv)
    }
}

fn decode_csv(raw: Raw) -> Result<AuditCsv> {
    let next_cursor = raw
        .headers
        .get("x-next-cursor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if std::str::from_utf8(&raw.body).is_err() {
        return Err(raw.decode_error("the CSV export is not UTF-8"));
    }
    let csv = String::from_utf8_lossy(&raw.body).into_owned();
    Ok(AuditCsv { csv, next_cursor })
}
