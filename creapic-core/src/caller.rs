//! Who acts for which organization when work is submitted or paid for: [`Caller`], an API key
//! ([`Principal`]) or a signed-in member of the organization (the console's playground).
//!
//! The design decision: one type for both, so jobs and paid generations have a single path
//! whoever submits them, and a member is never dressed up as a key. What differs is written
//! once, here and in `Creapic::check_caller`: a key's organization and mode are its own and its
//! scopes are checked by each operation (exactly as before members could submit work); a
//! member's organization is the one they named, checked against their membership in the store
//! on every call (any role may use the playground; a person outside the organization is told it
//! does not exist), and their work always runs live — test mode is a property of keys.

use crate::auth::Principal;
use crate::id::{KeyId, OrgId, UserId};
use crate::key::KeyMode;

/// Who acts, for which organization. `Copy`, like [`Principal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A verified API key: its organization, its mode, its scopes.
    Key(Principal),
    /// A signed-in person acting for `org`; the core checks the membership on each call.
    Member {
        /// The person.
        user: UserId,
        /// The organization they act for (and that pays).
        org: OrgId,
    },
}

impl Caller {
    /// A signed-in person acting for `org` (not checked until the core is called).
    pub const fn member(user: UserId, org: OrgId) -> Self {
        Caller::Member { user, org }
    }

    /// The organization the caller acts for.
    pub const fn org(&self) -> OrgId {
        match self {
            Caller::Key(principal) => principal.org,
            Caller::Member { org, .. } => *org,
        }
    }

    /// The mode the caller's work runs in: the key's, and always live for a member.
    pub const fn mode(&self) -> KeyMode {
        match self {
            Caller::Key(principal) => principal.mode,
            Caller::Member { .. } => KeyMode::Live,
        }
    }

    /// The key, when a key is calling (what a job records as its submitter).
    pub const fn key(&self) -> Option<KeyId> {
        match self {
            Caller::Key(principal) => Some(principal.key),
            Caller::Member { .. } => None,
        }
    }
}

impl From<Principal> for Caller {
    fn from(principal: Principal) -> Self {
        Caller::Key(principal)
    }
}

impl From<&Principal> for Caller {
    fn from(principal: &Principal) -> Self {
        Caller::Key(*principal)
    }
}

impl From<&Caller> for Caller {
    fn from(caller: &Caller) -> Self {
        *caller
    }
}
