//! The error of the generation tree: everything that can go wrong making, storing, compositing
//! or announcing an image, with its stable code.
//!
//! The design decision: this type knows codes, not statuses. Which HTTP status a code is
//! answered with is decided once, by the HTTP side's error, which wraps this one; so the
//! generation tree can be used — and tested — without HTTP. Four codes also exist on the HTTP
//! side (`invalid_json`, `invalid_parameter`, `body_too_large`, `internal_error`): both trees
//! check their own input, and a code means the same thing whichever tree raised it.
//!
//! A runner records a failed item under [`Error::code`], and a failed synchronous generation is
//! recorded under it too, so these codes are stored data as well as wire data: never rename one.

use std::time::Duration;

use creapic_core::StoreErrorKind;

/// Everything that can go wrong in the generation tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure of the core logic or the store.
    #[error(transparent)]
    Core(#[from] creapic_core::Error),
    /// A generation input (a prompt, an item's or a scene's JSON) is not what it must be.
    #[error("invalid JSON at {path}: {message}")]
    InvalidJson {
        /// Where in the document (e.g. `layers[0].x`), `.` for the whole document.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A setting or an identifier is malformed (a media key, a webhook secret, a provider's
    /// environment, a runner period).
    #[error("invalid {name}: {message}")]
    InvalidParameter {
        /// The setting or identifier.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Bytes handed to media storage exceed the size of one object. The text (and code) are
    /// those of an over-limit request body: the bytes always arrived in one.
    #[error("request body exceeds {max} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        max: usize,
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
    /// A bug or an impossible state; logged, never shown in detail.
    #[error("internal error")]
    Internal {
        /// For the log only.
        message: String,
    },
}

impl Error {
    /// The stable snake_case code: sent in error bodies and stored with failed items and
    /// failed generations.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Core(e) => e.code(),
            Error::InvalidJson { .. } => "invalid_json",
            Error::InvalidParameter { .. } => "invalid_parameter",
            Error::BodyTooLarge { .. } => "body_too_large",
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

    /// How long to wait before trying again, where that is known: what a rate-limiting
    /// provider asked for, a second for media storage or a store that is unavailable.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Core(e) => core_retry_after(e),
            Error::ProviderRateLimited { retry_after, .. } => *retry_after,
            Error::Media { .. } => Some(Duration::from_secs(1)),
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

/// How long a core error says to wait: the failed-authentication budget's refill, or a second
/// for a store that is unavailable. Shared with the HTTP error, so both trees agree.
pub(crate) fn core_retry_after(error: &creapic_core::Error) -> Option<Duration> {
    match error {
        creapic_core::Error::TooManyAuthFailures { retry_after } => Some(*retry_after),
        creapic_core::Error::Store {
            kind: StoreErrorKind::Unavailable,
            ..
        } => Some(Duration::from_secs(1)),
        _ => None,
    }
}
