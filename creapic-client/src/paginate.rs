//! Following `nextCursor`: [`Paginator`] turns any listing call into a sequence of pages, and
//! [`Paged`] is what a listing response must say for that (its items and its next cursor).
//!
//! Design decision: a paginator asks for one page at a time, only when the caller wants it
//! ([`Paginator::next_page`]); [`Paginator::collect`] gathers items up to a bound the caller
//! chooses (an error past it) and [`Paginator::take`] the first items only, so following a
//! cursor can never grow memory without limit. Each page is an
//! ordinary [`Call`], with the client's retries.

use creapic_core::wire::{
    AuditEventWire, AuditResponse, CreditsResponse, JobSummaryWire, LedgerEntryWire,
    ListJobsResponse, ListKeysResponse, ListMembersResponse, ListOrganizationsResponse, MemberWire,
    OrganizationMembership,
};

use crate::client::Call;
use crate::error::{Error, Result};

/// Builds the call for the page after a cursor (`None`: the first page).
type PageFn<'a, P> = Box<dyn Fn(Option<&str>) -> Call<'a, P> + Send + Sync + 'a>;

/// A listing response: a page of items and the cursor of the next page, if any.
pub trait Paged: Send + Sized {
    /// What the page lists.
    type Item;
    /// The cursor to ask for the next page with; `None` on the last page.
    fn next_cursor(&self) -> Option<&str>;
    /// The page's items, in the listing's order.
    fn into_items(self) -> Vec<Self::Item>;
}

/// The pages of one listing, fetched one at a time by following `nextCursor`.
///
/// ```no_run
/// # async fn run(client: creapic_client::Client) -> creapic_client::Result<()> {
/// let mut pages = client.credits().entries(100);
/// while let Some(page) = pages.next_page().await? {
///     for entry in &page.entries {
///         println!("{} {:?} {}", entry.created_at, entry.entry_type, entry.delta);
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Paginator<'a, P> {
    page: PageFn<'a, P>,
    cursor: Option<String>,
    done: bool,
}

impl<P> std::fmt::Debug for Paginator<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paginator")
            .field("cursor", &self.cursor)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'a, P: Paged + 'a> Paginator<'a, P> {
    /// A paginator whose pages are `page(cursor)`, starting with `page(None)`.
    pub(crate) fn new(page: impl Fn(Option<&str>) -> Call<'a, P> + Send + Sync + 'a) -> Self {
        Paginator {
            page: Box::new(page),
            cursor: None,
            done: false,
        }
    }

    /// Starts at `cursor` (a `nextCursor` kept from earlier) instead of the first page.
    pub(crate) fn starting_at(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    /// The next page, or `None` once the last page was returned.
    pub async fn next_page(&mut self) -> Result<Option<P>> {
        if self.done {
            return Ok(None);
        }
        let page = (self.page)(self.cursor.as_deref()).send().await?;
        match page.next_cursor() {
            // A server that answered the same cursor again would loop forever.
            Some(next) if Some(next) == self.cursor.as_deref() => {
                return Err(Error::Decode {
                    status: reqwest::StatusCode::OK,
                    request_id: None,
                    message: "the server answered the same nextCursor twice".into(),
                });
            }
            Some(next) => self.cursor = Some(next.to_owned()),
            None => self.done = true,
        }
        Ok(Some(page))
    }

    /// Every item of every page from here on, in order — or [`Error::InvalidArgument`] (and
    /// nothing) as soon as there would be more than `max_items`.
    pub async fn collect(mut self, max_items: usize) -> Result<Vec<P::Item>> {
        let mut items = Vec::new();
        while let Some(page) = self.next_page().await? {
            let page = page.into_items();
            if items.len() + page.len() > max_items {
                return Err(Error::InvalidArgument {
                    name: "max_items",
                    reason: format!("the listing has more than {max_items} items"),
                });
            }
            items.extend(page);
        }
        Ok(items)
    }

    /// The first `n` items from here on, in order: fetching stops as soon as it has them (a
    /// listing shorter than `n` gives all it has).
    pub async fn take(mut self, n: usize) -> Result<Vec<P::Item>> {
        let mut items = Vec::new();
        while items.len() < n {
            match self.next_page().await? {
                Some(page) => items.extend(page.into_items()),
                None => break,
            }
        }
        items.truncate(n);
        Ok(items)
    }
}

impl Paged for ListKeysResponse {
    type Item = creapic_core::wire::ApiKeyInfo;
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
    fn into_items(self) -> Vec<Self::Item> {
        self.keys
    }
}

impl Paged for AuditResponse {
    type Item = AuditEventWire;
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
    fn into_items(self) -> Vec<Self::Item> {
        self.events
    }
}

impl Paged for CreditsResponse {
    type Item = LedgerEntryWire;
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
    fn into_items(self) -> Vec<Self::Item> {
        self.entries
    }
}

impl Paged for ListJobsResponse {
    type Item = JobSummaryWire;
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
    fn into_items(self) -> Vec<Self::Item> {
        self.jobs
    }
}

impl Paged for ListOrganizationsResponse {
    type Item = OrganizationMembership;
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
    fn into_items(self) -> Vec<Self::Item> {
        self.organizations
    }
}

impl Paged for ListMembersResponse {
    type Item = MemberWire;
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
    fn into_items(self) -> Vec<Self::Item> {
        self.members
    }
}
