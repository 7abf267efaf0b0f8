//! Where the host mounted the kit: the path prefix media links are built on.
//!
//! The kit answers image links (`imageUrl`, `url`) that the client downloads from the same
//! host. Mounted under a prefix — `Router::nest_service("/creapic", service)` — the kit sees
//! `/api/…` while clients call `/creapic/api/…`, so a link built from what the kit sees 404s.
//!
//! The rule, in order:
//! 1. `KitConfig::public_url`, when set, is the base of every link, as it is: the absolute URL
//!    (or path) at which the kit's routes are reachable, prefix included
//!    (`https://example.com/creapic`, or `/creapic`). Use it behind proxies that rewrite paths.
//! 2. Otherwise the request's mount prefix: the request's original path (axum's `OriginalUri`,
//!    which the host's axum `Router` records before `nest_service` strips the prefix) minus the
//!    path the kit saw, as a suffix. `/creapic/api/x` seen as `/api/x` gives `/creapic`.
//!    (`NestedPath` is not used: it names the pattern, `/{tenant}`, not the path taken. Nest the
//!    kit at a fixed path, though: axum hands a nested service the outer router's path
//!    parameters too, and the kit's own routes with parameters then fail to extract theirs.)
//! 3. Otherwise no prefix: links are `/api/media/…`, right for a kit served at the root.
//!
//! A prefix is kept only when it is a clean path: it starts with one `/` (never `//`, which a
//! browser reads as another host), holds no `\`, `?` or `#`, and is at most [`PREFIX_MAX`]
//! bytes; anything else is ignored (no prefix), so a request cannot point its links elsewhere.
//! Finding the prefix costs one extension lookup per request and allocates only when there is
//! one.

use std::sync::Arc;

/// The longest mount prefix kept, in bytes.
pub const PREFIX_MAX: usize = 256;

/// The prefix the host mounted the kit at, from the request's original URI (see the module
/// documentation), or `None` at the root.
pub(crate) fn prefix_of<B>(request: &http::Request<B>) -> Option<Arc<str>> {
    let original = request.extensions().get::<axum::extract::OriginalUri>()?;
    prefix(original.0.path(), request.uri().path()).map(Arc::from)
}

/// `original` without its suffix `seen`, if that is a clean, non-empty path prefix.
fn prefix<'a>(original: &'a str, seen: &str) -> Option<&'a str> {
    if original.len() == seen.len() {
        return None;
    }
    let head = original.strip_suffix(seen)?;
    // `nest_service("/creapic")` strips `/creapic` from `/creapic/` and leaves `/`: the head
    // is then `/creapic` (the seen path's own slash is not the prefix's).
    let head = head.strip_suffix('/').unwrap_or(head);
    let clean = head.starts_with('/')
        && !head.starts_with("//")
        && head.len() <= PREFIX_MAX
        && !head.contains(['\\', '?', '#']);
    clean.then_some(head)
}

#[cfg(test)]
mod tests {
    use super::prefix;

    #[test]
    fn the_prefix_is_what_the_host_stripped() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("/api/openapi", "/api/openapi", None),
            ("/creapic/api/openapi", "/api/openapi", Some("/creapic")),
            ("/a/b/api/media/x", "/api/media/x", Some("/a/b")),
            ("/acme/api/x", "/api/x", Some("/acme")),
            ("/creapic/", "/", Some("/creapic")),
            // Not a suffix: a host that rewrote the path some other way.
            ("/creapic/v2/x", "/api/x", None),
            // Never another host, never junk.
            ("//evil.example/api/x", "/api/x", None),
            ("/a\\b/api/x", "/api/x", None),
        ];
        for (original, seen, expected) in cases {
            assert_eq!(
                prefix(original, seen),
                *expected,
                "{original} seen as {seen}"
            );
        }
        let long = format!("/{}/api/x", "p".repeat(super::PREFIX_MAX));
        assert_eq!(prefix(&long, "/api/x"), None);
    }
}
