//! [`Pages`]: a listing followed page by page through its `nextCursor`.
//!
//! The design decision: an async iterator of pages (`next().await`), not a `Stream`, so the
//! client needs no stream crate, and every walk is bounded — [`Pages::collect`] stops at a
//! number of items the caller names, and a server that answered the same cursor twice ends the
//! walk instead of looping on it.

use serde::de::DeserializeOwned;

use crate::client::Call;
use crate::error::Result;

/// A listing answer: its items and the cursor of the next page.
pub trait Listing: DeserializeOwned + Send {
    /// What the listing lists.
    type Item: Send;
    /// The items and the next page's cursor (`None` on the last page).
    fn into_page(self) -> (Vec<Self::Item>, Option<String>);
}

impl Listing for creapic_core::wire::ListOrganizationsResponse {
    type Item = creapic_core::wire::OrganizationMembership;
    fn into_page(self) -> (Vec<Self::Item>, Option<String>) {
        (self.organizations, self.next_cursor)
    }
}

impl Listing for creapic_core::wire::ListMembersResponse {
    type Item = creapic_core::wire::MemberWire;
    fn into_page(self) -> (Vec<Self::Item>, Option<String>) {
        (self.members, self.next_cursor)
    }
}

type MakeCall<'a, L> = Box<dyn Fn(Option<&str>) -> Call<'a, L> + Send + Sync + 'a>;

/// The pages of a listing, fetched one at a time as they are asked for (each fetch is one call,
/// with the client's retries). Built by `pages()` on the listing's handle.
pub struct Pages<'a, L: Listing> {
    make: MakeCall<'a, L>,
    cursor: Option<String>,
    done: bool,
}

impl<L: Listing> std::fmt::Debug for Pages<'_, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("cursor", &self.cursor)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'a, L: Listing + 'a> Pages<'a, L> {
    /// Pages from `first` (a cursor, or `None` for the first page), each call built by `make`.
    pub(crate) fn new(
        first: Option<String>,
        make: impl Fn(Option<&str>) -> Call<'a, L> + Send + Sync + 'a,
    ) -> Self {
        Pages {
            make: Box::new(make),
            cursor: first,
            done: false,
        }
    }

    /// The next page's items; `None` after the last page (or after an error, which is returned
    /// once).
    pub async fn next(&mut self) -> Option<Result<Vec<L::Item>>> {
        if self.done {
            return None;
        }
        match (self.make)(self.cursor.as_deref()).send().await {
            Ok(page) => {
                let (items, next) = page.into_page();
                // A cursor that does not move would repeat the page forever.
                self.done = next.is_none() || next == self.cursor;
                self.cursor = next;
                Some(Ok(items))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// Every item, page after page, up to `max_items` (fetching stops once it has them; a
    /// longer listing is cut there — pass a bound you are ready to hold in memory).
    pub async fn collect(mut self, max_items: usize) -> Result<Vec<L::Item>> {
        let mut all = Vec::new();
        while all.len() < max_items {
            match self.next().await {
                Some(items) => all.extend(items?),
                None => break,
            }
        }
        all.truncate(max_items);
        Ok(all)
    }
}
