//! Resource handles: one small borrowed type per API resource, as `client.images()`,
//! `client.playground()`, … return them. Each method builds a [`crate::Call`] or
//! [`crate::PostCall`] from the wire types of `creapic_core::wire` — the same types the server
//! kit serves, compiled into both crates so the two cannot drift.
//!
//! Design decision: handles hold only `&Client` and build calls synchronously; nothing is sent
//! until a call is awaited. Path parameters are percent-encoded segments, never spliced text,
//! so an id cannot change the route it is sent to.

mod audit;
mod credits;
mod images;
mod keys;
mod media;
mod organizations;
mod playground;
mod scenes;

pub use audit::{Audit, AuditCsv, AuditFilter};
pub use credits::{Credits, CreditsPage, UsageRange};
pub use images::Images;
pub use keys::{CreatedKey, Keys, ListKeys};
pub use media::{Media, MediaFile};
pub use organizations::{ListMembers, ListOrganizations, ListPage, Members, Organizations};
pub use playground::Playground;
pub use scenes::Scenes;

use crate::error::{Error, Result};

/// Longest id accepted in a path (server ids are 36-character UUIDs).
const PATH_ID_MAX_LEN: usize = 128;

/// Checks an id used as a path segment: not empty, bounded, not a dot segment (which URL
/// normalization would drop, silently changing the route).
fn path_id(name: &'static str, id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "must not be empty"
    } else if id.len() > PATH_ID_MAX_LEN {
        "is too long to be an id"
    } else if id == "." || id == ".." {
        "is not an id"
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument {
        name,
        reason: reason.into(),
    })
}
