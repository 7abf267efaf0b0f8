//! The one error type of `creapic-core`.
//!
//! Every failure a caller can see is a variant of [`Error`], and every variant has a stable
//! snake_case [`Error::code`] that crosses the wire unchanged. The HTTP status for each code is
//! decided in exactly one place, the server kit's error module: core knows nothing about HTTP.
//! Store backends report their own failures through [`Error::Store`] with a [`StoreErrorKind`], so
//! callers branch on a kind rather than on backend strings (the sqlx habit).

use crate::scope::Scope;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in creapic-core.
///
/// The `Display` text of the three authentication variants is exactly the text of the product
/// document's error table; clients may show it to people as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No `Authorization: Bearer …` and no `x-api-key` header, or an `Authorization` header that
    /// is not a Bearer credential.
    #[error("Missing or invalid Authorization header")]
    MissingAuthorization,
    /// A credential was sent but does not have the shape `wi_live_`/`wi_test_` + 64 lowercase hex.
    #[error("Invalid API key format")]
    InvalidKeyFormat,
    /// A well-formed key that is unknown, deleted or expired.
    #[error("Invalid API key")]
    InvalidKey,
    /// Too many failed authentications from the client's address: its well-formed keys are
    /// not looked up until `retry_after` has passed (warm keys still pass).
    #[error("too many failed authentications from this address")]
    TooManyAuthFailures {
        /// How long until the address may try a key the cache does not know again.
        retry_after: std::time::Duration,
    },
    /// A console sign-in with an unknown e-mail or a wrong password (never distinguished).
    #[error("wrong e-mail or password")]
    InvalidCredentials,
    /// The key is valid but does not hold the scope the operation needs.
    #[error("API key is missing the {0} scope")]
    MissingScope(Scope),
    /// The key (or user) is valid but belongs to another organization than the resource.
    #[error("API key does not belong to this organization")]
    WrongOrganization,
    /// The acting user lacks the organization role the operation needs (owner or admin).
    #[error("only an owner or admin of the organization may {action}")]
    Forbidden {
        /// What was attempted, e.g. `create keys`.
        action: &'static str,
    },
    /// The organization's balance cannot cover the operation.
    #[error("Insufficient credits")]
    InsufficientCredits {
        /// Credits the operation needed.
        needed: u64,
        /// Credits available when it was refused.
        available: u64,
    },
    /// The resource does not exist, or exists in another organization (never distinguished, so
    /// that one organization cannot probe for another's ids).
    #[error("{resource} not found")]
    NotFound {
        /// Which kind of resource, e.g. `job`.
        resource: &'static str,
    },
    /// An input failed validation.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, e.g. `name`.
        field: &'static str,
        /// Why, for people.
        reason: String,
    },
    /// An input exceeds one of the documented limits.
    #[error("{what} exceeds the limit of {max}")]
    LimitExceeded {
        /// What was too large, e.g. `prompts per job`.
        what: &'static str,
        /// The limit.
        max: u64,
    },
    /// The same idempotency key was used earlier for a different operation or parameters.
    #[error("idempotency key was already used with different parameters")]
    IdempotencyConflict,
    /// An earlier request with the same idempotency key is still being processed.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyInProgress,
    /// A worker acted on a job whose lease it no longer holds.
    #[error("the job lease is no longer held by this worker")]
    LeaseLost,
    /// The change would leave an organization without an owner (demoting or removing its last
    /// owner): refused for everyone, the operator too.
    #[error("an organization must keep at least one owner; make someone else an owner first")]
    LastOwner,
    /// The user is already a member of the organization (change their role instead).
    #[error("the user is already a member of this organization")]
    AlreadyMember,
    /// The operation is not allowed in the resource's current state (e.g. capturing a closed hold).
    #[error("{0}")]
    InvalidState(&'static str),
    /// A store backend failed.
    #[error("store error ({kind:?}): {message}")]
    Store {
        /// What kind of failure, for branching and for the HTTP status.
        kind: StoreErrorKind,
        /// The backend's description (never contains secrets: stores see digests only).
        message: String,
    },
}

/// The kind of a store failure, independent of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend cannot be reached right now; retrying later may succeed.
    Unavailable,
    /// A uniqueness constraint was violated by an insert the caller chose the id for.
    Conflict,
    /// Data in the store does not decode into a valid domain value.
    Corrupt,
    /// Anything else.
    Other,
}

impl Error {
    /// The stable snake_case code of this error. It never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingAuthorization => "missing_authorization",
            Error::InvalidKeyFormat => "invalid_api_key_format",
            Error::InvalidKey => "invalid_api_key",
            Error::TooManyAuthFailures { .. } => "too_many_auth_failures",
            Error::InvalidCredentials => "invalid_credentials",
            Error::MissingScope(_) => "missing_scope",
            Error::WrongOrganization => "wrong_organization",
            Error::Forbidden { .. } => "forbidden",
            Error::InsufficientCredits { .. } => "insufficient_credits",
            Error::NotFound { .. } => "not_found",
            Error::Invalid { .. } => "invalid_request",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::IdempotencyConflict => "idempotency_conflict",
            Error::IdempotencyInProgress => "idempotency_in_progress",
            Error::LeaseLost => "lease_lost",
            Error::InvalidState(_) => "invalid_state",
            Error::LastOwner => "last_owner",
            Error::AlreadyMember => "already_member",
            Error::Store { kind, .. } => match kind {
                StoreErrorKind::Unavailable => "store_unavailable",
                StoreErrorKind::Conflict => "store_conflict",
                StoreErrorKind::Corrupt => "store_corrupt",
                StoreErrorKind::Other => "store_error",
            },
        }
    }

    /// Shorthand for an [`Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Shorthand for an [`Error::Store`].
    pub fn store(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Error::Store {
            kind,
            message: message.into(),
        }
    }

    /// Whether the error is an authentication failure (HTTP 401 on the wire).
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            Error::MissingAuthorization | Error::InvalidKeyFormat | Error::InvalidKey
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_texts_match_the_product_document() {
        assert_eq!(
            Error::MissingAuthorization.to_string(),
            "Missing or invalid Authorization header"
        );
        assert_eq!(
            Error::InvalidKeyFormat.to_string(),
            "Invalid API key format"
        );
        assert_eq!(Error::InvalidKey.to_string(), "Invalid API key");
        let short = Error::InsufficientCredits {
            needed: 2,
            available: 1,
        };
        assert_eq!(short.to_string(), "Insufficient credits");
    }

    #[test]
    fn codes_are_distinct_snake_case() {
        let all = [
            Error::MissingAuthorization,
            Error::InvalidKeyFormat,
            Error::InvalidKey,
            Error::InvalidCredentials,
            Error::TooManyAuthFailures {
                retry_after: std::time::Duration::from_secs(1),
            },
            Error::MissingScope(Scope::SceneRender),
            Error::WrongOrganization,
            Error::Forbidden { action: "x" },
            Error::InsufficientCredits {
                needed: 1,
                available: 0,
            },
            Error::NotFound { resource: "job" },
            Error::invalid("name", "empty"),
            Error::LimitExceeded { what: "x", max: 1 },
            Error::IdempotencyConflict,
            Error::IdempotencyInProgress,
            Error::LeaseLost,
            Error::InvalidState("x"),
            Error::LastOwner,
            Error::AlreadyMember,
            Error::store(StoreErrorKind::Unavailable, "down"),
            Error::store(StoreErrorKind::Conflict, "dup"),
            Error::store(StoreErrorKind::Corrupt, "bad"),
            Error::store(StoreErrorKind::Other, "?"),
        ];
        let mut codes: Vec<_> = all.iter().map(Error::code).collect();
        for code in &codes {
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
        codes.sort_unstable();
        let before = codes.len();
        codes.dedup();
        assert_eq!(before, codes.len(), "codes must be unique");
    }
}
