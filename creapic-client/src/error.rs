//! The client's one error type, [`Error`], and the server's stable error codes as [`ErrorCode`].
//!
//! Design decision: an answer from the server ([`Error::Api`]) is kept apart from everything
//! that went wrong before an answer existed (configuration, connecting, timing out, a broken
//! connection) and from answers that could not be read ([`Error::Decode`]), because callers
//! react differently to each: an API error is a fact about the request, the others are facts
//! about the network. API error codes are an enum with an [`ErrorCode::Unknown`] fallback, so a
//! code added to the server later is still an ordinary value here, never a decoding failure.

use std::time::Duration;

use reqwest::StatusCode;

use crate::wait::ExceededMaxWait;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when calling creapic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API key given to the builder or found in the environment does not have the shape
    /// `wi_live_`/`wi_test_` + 64 lowercase hex characters. Checked before any request.
    #[error(
        "Invalid API key format in {origin} (expected wi_live_ or wi_test_ followed by 64 lowercase hex characters)"
    )]
    InvalidApiKeyFormat {
        /// Where the key came from: an environment variable's name or `the builder`.
        origin: &'static str,
    },
    /// The client is misconfigured (bad base URL, missing API key, bad header, …).
    #[error("invalid client configuration: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An argument of a call is invalid; nothing was sent.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The server answered with an error status.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server could not be reached (DNS, refused connection, TLS handshake).
    #[error("could not connect to {host}: {}", chain(source))]
    Connect {
        /// The host (scheme, host and port) that was tried.
        host: String,
        /// The transport's description.
        #[source]
        source: reqwest::Error,
    },
    /// No complete answer arrived within the configured timeout.
    #[error("no answer within {timeout:?}")]
    Timeout {
        /// The per-attempt timeout that expired.
        timeout: Duration,
        /// The id this client sent in `x-request-id` for the last attempt; the server logs it if
        /// the request reached it.
        request_id: String,
    },
    /// The connection broke while sending the request or reading the answer.
    #[error("the connection failed: {}", chain(source))]
    Transport {
        /// The id this client sent in `x-request-id` for the last attempt.
        request_id: String,
        /// The transport's description.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered, but the body is not what the endpoint returns.
    #[error("could not read the answer (HTTP {status}, request {request_id:?}): {message}")]
    Decode {
        /// The answer's status.
        status: StatusCode,
        /// The answer's `x-request-id`.
        request_id: Option<String>,
        /// What did not parse (bounded in length).
        message: String,
    },
    /// The answer's body is larger than the configured limit; it was not read further.
    #[error("the answer exceeds {max_bytes} bytes")]
    ResponseTooLarge {
        /// The limit.
        max_bytes: usize,
    },
    /// A waiter gave up: the job was not finished within `max_wait`.
    #[error(transparent)]
    ExceededMaxWait(#[from] ExceededMaxWait),
}

impl Error {
    /// A stable snake_case code. For [`Error::Api`] it is the server's code (e.g.
    /// `insufficient_credits`); the client's own failures have their own codes (`connect`,
    /// `timeout`, `transport`, `decode`, …). A key rejected locally has the same code as the
    /// server gives the same mistake: `invalid_api_key_format`.
    pub fn code(&self) -> &str {
        match self {
            Error::InvalidApiKeyFormat { .. } => "invalid_api_key_format",
            Error::Config { .. } => "invalid_config",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::Api(e) => e.code.as_str(),
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::Transport { .. } => "transport",
            Error::Decode { .. } => "decode",
            Error::ResponseTooLarge { .. } => "response_too_large",
            Error::ExceededMaxWait(_) => "exceeded_max_wait",
        }
    }

    /// The API error, if the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The request id to quote to support: the server's (from the error body or the
    /// `x-request-id` header), or for failures without an answer the id this client sent.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api(e) => e.request_id.as_deref(),
            Error::Decode { request_id, .. } => request_id.as_deref(),
            Error::Timeout { request_id, .. } | Error::Transport { request_id, .. } => {
                Some(request_id)
            }
            _ => None,
        }
    }

    /// Whether the client's retry classifiers consider this failure transient (see
    /// [`crate::retry`]). The client has already retried it as often as its policy allows.
    pub fn is_retryable(&self) -> bool {
        crate::retry::classify(self).0.is_retry()
    }
}

/// An error and its causes, `outer: inner: innermost` (transport errors say little at the top:
/// "error sending request", with "Connection refused" three levels down).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    let mut depth = 0;
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
        depth += 1;
        if depth >= 8 {
            break;
        }
    }
    text
}

/// An error answer of the server: its status, stable code, message and request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code}, HTTP {status}, request {})", request_id.as_deref().unwrap_or("-"))]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code of the error body.
    pub code: ErrorCode,
    /// The human text, e.g. `Insufficient credits` (the documents' exact texts where they give
    /// one).
    pub message: String,
    /// The request id (body's `requestId`, else the `x-request-id` header).
    pub request_id: Option<String>,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An API error from its parts (for tests and for hosts that wrap the client).
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            request_id: None,
            retry_after: None,
        }
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// The stable error codes the server sends in `{"code": …}`.
        ///
        /// New codes may appear in later server versions: they arrive as [`ErrorCode::Unknown`]
        /// with the code's text, so matching code stays total without a client upgrade.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code this version of the client does not know (or an error answer without a
            /// creapic error body, e.g. a proxy's 502 page: then the text is empty).
            Unknown(String),
        }

        impl ErrorCode {
            /// Every code this client knows.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// Reads a code; never fails.
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => ErrorCode::$variant,)*
                    other => ErrorCode::Unknown(other.to_owned()),
                }
            }

            /// The code as the server spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                    ErrorCode::Unknown(text) => text,
                }
            }
        }
    };
}

error_codes! {
    /// 401: no `Authorization: Bearer …` and no `x-api-key`.
    MissingAuthorization => "missing_authorization",
    /// 401: the credential is not a well-formed key.
    InvalidApiKeyFormat => "invalid_api_key_format",
    /// 401: a well-formed key that is unknown, deleted or expired.
    InvalidApiKey => "invalid_api_key",
    /// 429: too many failed authentications from this address; keys this server has not
    /// verified recently are refused until `Retry-After` (retried automatically).
    TooManyAuthFailures => "too_many_auth_failures",
    /// 403: the key lacks the endpoint's scope.
    MissingScope => "missing_scope",
    /// 403: the key belongs to another organization.
    WrongOrganization => "wrong_organization",
    /// 403: the signed-in user is not an owner or admin.
    Forbidden => "forbidden",
    /// 402: the organization's balance cannot cover the call (nothing was debited).
    InsufficientCredits => "insufficient_credits",
    /// 404: no such resource in this organization.
    NotFound => "not_found",
    /// 400: an input failed validation.
    InvalidRequest => "invalid_request",
    /// 422: an input exceeds a documented limit.
    LimitExceeded => "limit_exceeded",
    /// 422: the `Idempotency-Key` was used before with a different body.
    IdempotencyConflict => "idempotency_conflict",
    /// 409: a request with the same `Idempotency-Key` is still running (retried automatically).
    IdempotencyInProgress => "idempotency_in_progress",
    /// 409: a worker lost its job lease.
    LeaseLost => "lease_lost",
    /// 409: not allowed in the resource's current state.
    InvalidState => "invalid_state",
    /// 409: the change would leave the organization without an owner.
    LastOwner => "last_owner",
    /// 409: the user is already a member of the organization.
    AlreadyMember => "already_member",
    /// 503: the store is unreachable right now.
    StoreUnavailable => "store_unavailable",
    /// 409: a store uniqueness conflict.
    StoreConflict => "store_conflict",
    /// 500: stored data is corrupt.
    StoreCorrupt => "store_corrupt",
    /// 500: another store failure.
    StoreError => "store_error",
    /// 413: the request body is too large.
    BodyTooLarge => "body_too_large",
    /// 400: the request body is not the JSON the endpoint expects.
    InvalidJson => "invalid_json",
    /// 415: the request was not `application/json`.
    UnsupportedMediaType => "unsupported_media_type",
    /// 400: a path or query parameter (or the `Idempotency-Key`) is malformed.
    InvalidParameter => "invalid_parameter",
    /// 404: no such route (check the base URL).
    RouteNotFound => "route_not_found",
    /// 405: the route exists with another method.
    MethodNotAllowed => "method_not_allowed",
    /// 401: a dashboard route was called without a signed-in user (see
    /// [`crate::config::DashboardAuth`]).
    NotSignedIn => "not_signed_in",
    /// 429: the key sent too many requests (retried automatically, honouring `Retry-After`).
    RateLimited => "rate_limited",
    /// 502: the image provider failed; the tokens were refunded.
    ProviderFailed => "provider_failed",
    /// 504: the image provider timed out; the tokens were refunded.
    ProviderTimeout => "provider_timeout",
    /// 502: the image provider is rate limiting the server.
    ProviderRateLimited => "provider_rate_limited",
    /// 502: the provider refused the prompt (never retried: the answer would be the same).
    ProviderBlocked => "provider_blocked",
    /// 502: the provider's answer could not be understood.
    ProviderInvalidResponse => "provider_invalid_response",
    /// 502: the provider is unreachable.
    ProviderUnavailable => "provider_unavailable",
    /// 403: a signed media link is expired or forged.
    MediaLinkInvalid => "media_link_invalid",
    /// 502: a webhook could not be delivered.
    WebhookFailed => "webhook_failed",
    /// 503: media storage is unavailable.
    MediaUnavailable => "media_unavailable",
    /// 422: an image could not be decoded.
    InvalidImage => "invalid_image",
    /// 500: a server bug; quote the request id.
    InternalError => "internal_error",
    /// 409: this `Idempotency-Key` already created something whose answer is shown only once
    /// (a new API key's plaintext).
    AlreadyProcessed => "already_processed",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_survive() {
        for code in ErrorCode::KNOWN {
            assert_eq!(&ErrorCode::parse(code.as_str()), code);
        }
        let later = ErrorCode::parse("quota_frozen");
        assert_eq!(later, ErrorCode::Unknown("quota_frozen".into()));
        assert_eq!(later.as_str(), "quota_frozen");
    }

    #[test]
    fn api_errors_show_code_status_and_request_id() {
        let mut e = ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            ErrorCode::InsufficientCredits,
            "Insufficient credits",
        );
        e.request_id = Some("r-1".into());
        let e = Error::from(e);
        assert_eq!(e.code(), "insufficient_credits");
        assert_eq!(e.request_id(), Some("r-1"));
        assert_eq!(
            e.to_string(),
            "Insufficient credits (insufficient_credits, HTTP 402 Payment Required, request r-1)"
        );
        assert!(!e.is_retryable());
    }
}
