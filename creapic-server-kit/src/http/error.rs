//! The error of the HTTP tree, and the one table mapping error codes to HTTP statuses.
//!
//! Core errors arrive wrapped in [`Error::Core`], the generation tree's in
//! [`Error::Generation`]; what only HTTP can get wrong (bodies, parameters, routes, methods, the
//! signed-in user, the per-key rate) is a variant here. [`Error::status`] is the only place in
//! the workspace that decides an HTTP status for an error code — for the generation tree's
//! codes too, so that tree never names a status.

use std::time::Duration;

use creapic_core::StoreErrorKind;
use http::StatusCode;

use crate::generation::error::core_retry_after;

use crate::generation::Error as GenerationError;

/// Everything that can go wrong answering a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure of the core logic or the store.
    #[error(transparent)]
    Core(#[from] creapic_core::Error),
    /// The request body is larger than the limit.
    #[error("request body exceeds {max} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// The request body is not the JSON the endpoint expects.
    #[error("invalid JSON at {path}: {message}")]
    InvalidJson {
        /// Where in the document (e.g. `source.type`), `.` for the whole body.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The request did not declare `Content-Type: application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// A query string or path parameter is malformed.
    #[error("invalid {name}: {message}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The route does not exist.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A dashboard route was called without a signed-in user in the request extensions.
    #[error("a signed-in dashboard user is required")]
    NotSignedIn,
    /// A repeat of a request whose result held a secret shown once (a created key): the
    /// stored answer says it happened and never shows the secret again.
    #[error("this request was already processed; its result is shown only once")]
    AlreadyProcessed,
    /// A console form arrived without its session's CSRF token, or with another one.
    #[error("the form's security token is missing or out of date")]
    InvalidCsrfToken,
    /// Too much of a bounded resource is in use (the console's concurrent sign-ins); retrying
    /// a little later may succeed.
    #[error("the server is busy")]
    Overloaded {
        /// When to try again.
        retry_after: Duration,
    },
    /// The database's schema lacks migrations this build needs: the server is alive but not
    /// ready (a readiness probe keeps traffic away until a replica migrates it).
    #[error("the database lacks {pending} of this build's migrations")]
    MigrationsPending {
        /// How many are missing.
        pending: u32,
    },
    /// The key sent too many requests.
    #[error("rate limit exceeded")]
    RateLimited {
        /// When the next request will be accepted.
        retry_after: Duration,
    },
    /// The generation tree failed (providers, media, rendering, webhooks, their inputs).
    #[error(transparent)]
    Generation(#[from] GenerationError),
    /// A bug or an impossible state; logged, answered as a 500 with no details.
    #[error("internal error")]
    Internal {
        /// For the log only.
        message: String,
    },
}

/// When a probe of a replica whose database lacks migrations should look again.
pub const MIGRATIONS_RETRY_AFTER: Duration = Duration::from_secs(5);

impl Error {
    /// The stable snake_case code sent in error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Core(e) => e.code(),
            Error::Generation(e) => e.code(),
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::InvalidJson { .. } => "invalid_json",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::InvalidParameter { .. } => "invalid_parameter",
            Error::RouteNotFound => "route_not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::NotSignedIn => "not_signed_in",
            Error::AlreadyProcessed => "already_processed",
            Error::InvalidCsrfToken => "invalid_csrf_token",
            Error::Overloaded { .. } => "overloaded",
            Error::MigrationsPending { .. } => "migrations_pending",
            Error::RateLimited { .. } => "rate_limited",
            Error::Internal { .. } => "internal_error",
        }
    }

    /// The HTTP status for this error: the one code → status table of the workspace.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Core(e) => core_status(e),
            Error::Generation(e) => generation_status(e),
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::InvalidJson { .. } | Error::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::RouteNotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotSignedIn => StatusCode::UNAUTHORIZED,
            Error::AlreadyProcessed => StatusCode::CONFLICT,
            Error::InvalidCsrfToken => StatusCode::FORBIDDEN,
            Error::Overloaded { .. } | Error::MigrationsPending { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long a client should wait before retrying, where that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after } | Error::Overloaded { retry_after } => {
                Some(*retry_after)
            }
            Error::MigrationsPending { .. } => Some(MIGRATIONS_RETRY_AFTER),
            Error::Core(e) => core_retry_after(e),
            Error::Generation(e) => e.retry_after(),
            _ => None,
        }
    }

    /// Whether the failure is the provider's (item failures are refunded).
    pub fn is_provider(&self) -> bool {
        matches!(self, Error::Generation(e) if e.is_provider())
    }

    /// The core error inside, whichever tree passed it on.
    pub fn core(&self) -> Option<&creapic_core::Error> {
        match self {
            Error::Core(e) | Error::Generation(GenerationError::Core(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a bug or an impossible state (a 500 whose details only the log gets),
    /// whichever tree raised it.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Internal { .. } | Error::Generation(GenerationError::Internal { .. })
        )
    }
}

/// The status of a core error.
fn core_status(error: &creapic_core::Error) -> StatusCode {
    use creapic_core::Error as C;
    match error {
        C::MissingAuthorization | C::InvalidKeyFormat | C::InvalidKey | C::InvalidCredentials => {
            StatusCode::UNAUTHORIZED
        }
        C::TooManyAuthFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
        C::MissingScope(_) | C::WrongOrganization | C::Forbidden { .. } => StatusCode::FORBIDDEN,
        C::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
        C::NotFound { .. } => StatusCode::NOT_FOUND,
        C::Invalid { .. } => StatusCode::BAD_REQUEST,
        C::LimitExceeded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        C::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
        C::IdempotencyInProgress
        | C::LeaseLost
        | C::InvalidState(_)
        | C::LastOwner
        | C::AlreadyMember => StatusCode::CONFLICT,
        C::Store { kind, .. } => match kind {
            StoreErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            StoreErrorKind::Conflict => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of a generation error. Exhaustive on purpose (no `_` arm): a variant added to
/// the generation tree does not compile until it has a status here. Codes both trees use
/// (`invalid_json`, `invalid_parameter`, `body_too_large`, `internal_error`) get the same
/// status as their HTTP twins.
fn generation_status(error: &GenerationError) -> StatusCode {
    use GenerationError as G;
    match error {
        G::Core(e) => core_status(e),
        G::InvalidJson { .. } | G::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
        G::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        G::ProviderFailed { .. }
        | G::ProviderBlocked { .. }
        | G::ProviderInvalidResponse { .. }
        | G::ProviderRateLimited { .. }
        | G::ProviderUnavailable { .. } => StatusCode::BAD_GATEWAY,
        G::MediaLinkInvalid { .. } => StatusCode::FORBIDDEN,
        G::WebhookFailed { .. } => StatusCode::BAD_GATEWAY,
        G::ProviderTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        G::Media { .. } => StatusCode::SERVICE_UNAVAILABLE,
        G::InvalidImage { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        G::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error the kit answers with, its code, status and `Retry-After`: the table the split
    /// into two trees must not change (the HTTP tree's variants, the generation tree's wrapped,
    /// and core errors arriving through either tree).
    #[test]
    fn every_error_keeps_its_code_status_and_retry_after() {
        use GenerationError as G;
        use creapic_core::Error as C;
        let s = Duration::from_secs;
        let m = || "m".to_owned();
        let p = "offline";
        let unavailable = || C::store(StoreErrorKind::Unavailable, "down");
        let cases: Vec<(Error, &str, u16, Option<Duration>)> = vec![
            (Error::BodyTooLarge { max: 1 }, "body_too_large", 413, None),
            (
                Error::InvalidJson {
                    path: m(),
                    message: m(),
                },
                "invalid_json",
                400,
                None,
            ),
            (
                Error::UnsupportedMediaType,
                "unsupported_media_type",
                415,
                None,
            ),
            (
                Error::InvalidParameter {
                    name: "x",
                    message: m(),
                },
                "invalid_parameter",
                400,
                None,
            ),
            (Error::RouteNotFound, "route_not_found", 404, None),
            (Error::MethodNotAllowed, "method_not_allowed", 405, None),
            (Error::NotSignedIn, "not_signed_in", 401, None),
            (Error::AlreadyProcessed, "already_processed", 409, None),
            (Error::InvalidCsrfToken, "invalid_csrf_token", 403, None),
            (
                Error::MigrationsPending { pending: 2 },
                "migrations_pending",
                503,
                Some(s(5)),
            ),
            (
                Error::Overloaded { retry_after: s(1) },
                "overloaded",
                503,
                Some(s(1)),
            ),
            (
                C::InvalidCredentials.into(),
                "invalid_credentials",
                401,
                None,
            ),
            (
                Error::RateLimited { retry_after: s(3) },
                "rate_limited",
                429,
                Some(s(3)),
            ),
            (
                Error::Internal { message: m() },
                "internal_error",
                500,
                None,
            ),
            (C::InvalidKey.into(), "invalid_api_key", 401, None),
            (
                C::TooManyAuthFailures { retry_after: s(2) }.into(),
                "too_many_auth_failures",
                429,
                Some(s(2)),
            ),
            (
                C::LimitExceeded { what: "x", max: 1 }.into(),
                "limit_exceeded",
                422,
                None,
            ),
            (
                C::IdempotencyInProgress.into(),
                "idempotency_in_progress",
                409,
                None,
            ),
            (unavailable().into(), "store_unavailable", 503, Some(s(1))),
            (
                G::InvalidJson {
                    path: m(),
                    message: m(),
                }
                .into(),
                "invalid_json",
                400,
                None,
            ),
            (
                G::InvalidParameter {
                    name: "x",
                    message: m(),
                }
                .into(),
                "invalid_parameter",
                400,
                None,
            ),
            (
                G::BodyTooLarge { max: 1 }.into(),
                "body_too_large",
                413,
                None,
            ),
            (
                G::ProviderFailed {
                    provider: p,
                    message: m(),
                }
                .into(),
                "provider_failed",
                502,
                None,
            ),
            (
                G::ProviderTimeout { provider: p }.into(),
                "provider_timeout",
                504,
                None,
            ),
            (
                G::ProviderRateLimited {
                    provider: p,
                    retry_after: Some(s(45)),
                }
                .into(),
                "provider_rate_limited",
                502,
                Some(s(45)),
            ),
            (
                G::ProviderRateLimited {
                    provider: p,
                    retry_after: None,
                }
                .into(),
                "provider_rate_limited",
                502,
                None,
            ),
            (
                G::ProviderBlocked {
                    provider: p,
                    reason: m(),
                }
                .into(),
                "provider_blocked",
                502,
                None,
            ),
            (
                G::ProviderUnavailable {
                    provider: p,
                    message: m(),
                }
                .into(),
                "provider_unavailable",
                502,
                None,
            ),
            (
                G::ProviderInvalidResponse {
                    provider: p,
                    message: m(),
                }
                .into(),
                "provider_invalid_response",
                502,
                None,
            ),
            (
                G::Media { message: m() }.into(),
                "media_unavailable",
                503,
                Some(s(1)),
            ),
            (
                G::MediaLinkInvalid { reason: "expired" }.into(),
                "media_link_invalid",
                403,
                None,
            ),
            (
                G::WebhookFailed { message: m() }.into(),
                "webhook_failed",
                502,
                None,
            ),
            (
                G::InvalidImage { message: m() }.into(),
                "invalid_image",
                422,
                None,
            ),
            (
                G::Internal { message: m() }.into(),
                "internal_error",
                500,
                None,
            ),
            (
                G::Core(C::LimitExceeded { what: "x", max: 1 }).into(),
                "limit_exceeded",
                422,
                None,
            ),
            (
                G::Core(C::TooManyAuthFailures { retry_after: s(2) }).into(),
                "too_many_auth_failures",
                429,
                Some(s(2)),
            ),
            (
                G::Core(unavailable()).into(),
                "store_unavailable",
                503,
                Some(s(1)),
            ),
        ];
        for (error, code, status, retry_after) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.retry_after(), retry_after, "{error:?}");
        }
    }

    #[test]
    fn internals_and_core_errors_are_found_through_either_tree() {
        let wrapped = Error::from(GenerationError::Internal {
            message: "x".into(),
        });
        assert!(wrapped.is_internal());
        assert_eq!(wrapped.to_string(), "internal error");
        let core = Error::from(GenerationError::Core(creapic_core::Error::LeaseLost));
        assert!(matches!(core.core(), Some(creapic_core::Error::LeaseLost)));
        assert!(Error::from(GenerationError::ProviderTimeout { provider: "p" }).is_provider());
        assert!(!Error::RouteNotFound.is_provider());
    }
}
