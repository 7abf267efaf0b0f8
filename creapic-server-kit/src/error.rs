//! The one error type of `creapic-server-kit`, and the one table mapping error codes to HTTP.
//!
//! Core errors arrive wrapped in [`Error::Core`]; everything the kit adds (HTTP input problems,
//! rate limits, provider and media failures) is a variant here. [`Error::status`] is the only
//! place in the workspace that decides an HTTP status for an error code.

use std::time::Duration;

use creapic_core::StoreErrorKind;
use http::StatusCode;

/// Everything that can go wrong in the server kit.
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
    /// The key sent too many requests.
    #[error("rate limit exceeded")]
    RateLimited {
        /// When the next request will be accepted.
        retry_after: Duration,
    },
    /// The generation provider answered with an error.
    #[error("image provider {provider} failed: {message}")]
    ProviderFailed {
        /// Which provider.
        provider: &'static str,
        /// What it said (never contains credentials).
        message: String,
    },
    /// The generation provider did not answer in time.
    #[error("image provider {provider} timed out")]
    ProviderTimeout {
        /// Which provider.
        provider: &'static str,
    },
    /// The generation provider is rate limiting us (after our own retries).
    #[error("image provider {provider} is rate limited")]
    ProviderRateLimited {
        /// Which provider.
        provider: &'static str,
        /// How long it asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The provider refused the prompt (safety block) or returned no image.
    #[error("image provider {provider} returned no image: {reason}")]
    ProviderBlocked {
        /// Which provider.
        provider: &'static str,
        /// The provider's reason (e.g. `SAFETY`).
        reason: String,
    },
    /// The provider could not be reached or answered with a server error (5xx): worth retrying.
    #[error("image provider {provider} is unavailable: {message}")]
    ProviderUnavailable {
        /// Which provider.
        provider: &'static str,
        /// What happened (never contains credentials).
        message: String,
    },
    /// The provider's response could not be understood (malformed JSON, bad base64, too big).
    #[error("image provider {provider} sent an invalid response: {message}")]
    ProviderInvalidResponse {
        /// Which provider.
        provider: &'static str,
        /// What was wrong.
        message: String,
    },
    /// Media storage failed.
    #[error("media storage failed: {message}")]
    Media {
        /// What failed.
        message: String,
    },
    /// A signed media link is malformed, expired, or signed for another object or organization.
    #[error("media link is invalid: {reason}")]
    MediaLinkInvalid {
        /// Why (`expired`, `bad_signature`, `malformed`).
        reason: &'static str,
    },
    /// A webhook could not be delivered (after retries).
    #[error("webhook delivery failed: {message}")]
    WebhookFailed {
        /// What happened.
        message: String,
    },
    /// An image could not be decoded or rendered.
    #[error("invalid image: {message}")]
    InvalidImage {
        /// What was wrong.
        message: String,
    },
    /// A bug or an impossible state; logged, answered as a 500 with no details.
    #[error("internal error")]
    Internal {
        /// For the log only.
        message: String,
    },
}

impl Error {
    /// The stable snake_case code sent in error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Core(e) => e.code(),
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::InvalidJson { .. } => "invalid_json",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::InvalidParameter { .. } => "invalid_parameter",
            Error::RouteNotFound => "route_not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::NotSignedIn => "not_signed_in",
            Error::RateLimited { .. } => "rate_limited",
            Error::ProviderFailed { .. } => "provider_failed",
            Error::ProviderTimeout { .. } => "provider_timeout",
            Error::ProviderRateLimited { .. } => "provider_rate_limited",
            Error::ProviderBlocked { .. } => "provider_blocked",
            Error::ProviderInvalidResponse { .. } => "provider_invalid_response",
            Error::ProviderUnavailable { .. } => "provider_unavailable",
            Error::MediaLinkInvalid { .. } => "media_link_invalid",
            Error::WebhookFailed { .. } => "webhook_failed",
            Error::Media { .. } => "media_unavailable",
            Error::InvalidImage { .. } => "invalid_image",
            Error::Internal { .. } => "internal_error",
        }
    }

    /// The HTTP status for this error: the one code → status table of the workspace.
    pub fn status(&self) -> StatusCode {
        use creapic_core::Error as C;
        match self {
            Error::Core(e) => match e {
                C::MissingAuthorization | C::InvalidKeyFormat | C::InvalidKey => {
                    StatusCode::UNAUTHORIZED
                }
                C::TooManyAuthFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
                C::MissingScope(_) | C::WrongOrganization | C::Forbidden { .. } => {
                    StatusCode::FORBIDDEN
                }
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
            },
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::InvalidJson { .. } | Error::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::RouteNotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotSignedIn => StatusCode::UNAUTHORIZED,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::ProviderFailed { .. }
            | Error::ProviderBlocked { .. }
            | Error::ProviderInvalidResponse { .. }
            | Error::ProviderRateLimited { .. }
            | Error::ProviderUnavailable { .. } => StatusCode::BAD_GATEWAY,
            Error::MediaLinkInvalid { .. } => StatusCode::FORBIDDEN,
            Error::WebhookFailed { .. } => StatusCode::BAD_GATEWAY,
            Error::ProviderTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Media { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::InvalidImage { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long a client should wait before retrying, where that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after }
            | Error::Core(creapic_core::Error::TooManyAuthFailures { retry_after }) => {
                Some(*retry_after)
            }
            Error::ProviderRateLimited { retry_after, .. } => *retry_after,
            Error::Media { .. } => Some(Duration::from_secs(1)),
            Error::Core(creapic_core::Error::Store {
                kind: StoreErrorKind::Unavailable,
                ..
            }) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Whether the failure is the provider's (item failures are refunded).
    pub fn is_provider(&self) -> bool {
        matches!(
            self,
            Error::ProviderFailed { .. }
                | Error::ProviderTimeout { .. }
                | Error::ProviderRateLimited { .. }
                | Error::ProviderBlocked { .. }
                | Error::ProviderInvalidResponse { .. }
                | Error::ProviderUnavailable { .. }
        )
    }
}
