//! `client.credits()`: what the API key may read of its own organization's tokens —
//! `GET /api/public/credits` (balance, held tokens, the ledger page by page, with a
//! [`Paginator`] over every entry) and `GET /api/public/credits/usage` (per UTC day). Any valid
//! key of the organization may read them, whatever its scopes.

use creapic_core::wire::{CreditsResponse, UsageResponse};
use reqwest::Method;

use crate::client::{Auth, Call, Client};
use crate::paginate::Paginator;

/// Which page of ledger entries [`Credits::get`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditsPage {
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Entries per page, 1–1000 (server default 50).
    pub limit: Option<u32>,
}

/// Which days [`Credits::usage`] covers: `YYYY-MM-DD` (UTC), both included, at most 366 days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRange {
    /// The first day (default: 29 days before `to`).
    pub from: Option<String>,
    /// The last day (default: today).
    pub to: Option<String>,
}

/// The key's organization's tokens.
#[derive(Debug, Clone, Copy)]
pub struct Credits<'a> {
    client: &'a Client,
}

impl<'a> Credits<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Credits { client }
    }

    /// The balance, the tokens held for work in progress, and one page of ledger entries
    /// (oldest first). Check the balance before a batch of work: "make sure the account has
    /// tokens before invoking the API".
    pub fn get(&self, page: &CreditsPage) -> Call<'a, CreditsResponse> {
        let mut url = self.client.endpoint(&["api", "public", "credits"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(cursor) = &page.cursor {
                q.append_pair("cursor", cursor);
            }
            if let Some(limit) = page.limit {
                q.append_pair("limit", &limit.to_string());
            }
        }
        let spec = self.client.spec(Method::GET, url, Auth::ApiKey);
        self.client.json_call(Ok(spec))
    }

    /// Every ledger entry, page by page (`page_size` each, 1–1000), following `nextCursor`;
    /// each page also carries the balance and held tokens as of that page.
    pub fn entries(&self, page_size: u32) -> Paginator<'a, CreditsResponse> {
        let handle = *self;
        Paginator::new(move |cursor| {
            handle.get(&CreditsPage {
                cursor: cursor.map(str::to_owned),
                limit: Some(page_size),
            })
        })
    }

    /// Tokens spent, granted and released per UTC day, every day of the range.
    pub fn usage(&self, range: &UsageRange) -> Call<'a, UsageResponse> {
        let mut url = self.client.endpoint(&["api", "public", "credits", "usage"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(from) = &range.from {
                q.append_pair("from", from);
            }
            if let Some(to) = &range.to {
                q.append_pair("to", to);
            }
        }
        let spec = self.client.spec(Method::GET, url, Auth::ApiKey);
        self.client.json_call(Ok(spec))
    }
}
