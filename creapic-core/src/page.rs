//! Pagination: every listing is a bounded [`Page`] behind a cursor, never an unbounded `Vec`.

use crate::error::{Error, Result};

/// How many items a page may hold at most.
pub const PAGE_LIMIT_MAX: u32 = 1000;
/// How many items a page holds when the caller does not say.
pub const PAGE_LIMIT_DEFAULT: u32 = 50;

/// A validated page size: 1..=[`PAGE_LIMIT_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    /// Validates `n`.
    pub fn new(n: u32) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("limit", "must be at least 1"));
        }
        if n > PAGE_LIMIT_MAX {
            return Err(Error::LimitExceeded {
                what: "page size",
                max: u64::from(PAGE_LIMIT_MAX),
            });
        }
        Ok(PageLimit(n))
    }

    /// The largest page.
    pub const fn max() -> Self {
        PageLimit(PAGE_LIMIT_MAX)
    }

    /// The size as a number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The size as a `usize`.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        PageLimit(PAGE_LIMIT_DEFAULT)
    }
}

/// One page of a listing. `next` is the cursor to pass for the following page; `None` when this
/// is the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    /// The items, in listing order.
    pub items: Vec<T>,
    /// The cursor of the next page, if there is one.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// Builds a page from up to `limit + 1` items fetched in order: the extra item, if present,
    /// only proves that a next page exists and is dropped; `cursor` maps the last kept item to
    /// the next page's cursor.
    pub fn from_overfetch(mut items: Vec<T>, limit: PageLimit, cursor: impl Fn(&T) -> C) -> Self {
        let more = items.len() > limit.as_usize();
        items.truncate(limit.as_usize());
        let next = if more { items.last().map(cursor) } else { None };
        Page { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced() {
        assert!(PageLimit::new(0).is_err());
        assert!(PageLimit::new(1001).is_err());
        assert_eq!(PageLimit::new(1000).map(PageLimit::get).ok(), Some(1000));
    }

    #[test]
    fn overfetch_tells_whether_there_is_more() {
        let limit = PageLimit::new(2).expect("valid");
        let page = Page::from_overfetch(vec![1, 2, 3], limit, |x| *x);
        assert_eq!((page.items, page.next), (vec![1, 2], Some(2)));
        let page = Page::from_overfetch(vec![1, 2], limit, |x| *x);
        assert_eq!(page.next, None);
    }
}
