//! The client knows every error code the server can send: each variant of the core's and the
//! server kit's error enums is built here and its code must parse to a known [`ErrorCode`].
//! A code added on the server without the client learning it fails this test (clients of older
//! versions still cope: they see [`ErrorCode::Unknown`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use creapic_client::ErrorCode;
use creapic_core::StoreErrorKind;
use creapic_core::scope::Scope;
use creapic_server_kit::Error as Kit;
use creapic_server_kit::generation::Error as Gen;

#[test]
fn every_server_error_code_is_known_to_the_client() {
    use creapic_core::Error as C;
    let core = [
        C::MissingAuthorization,
        C::InvalidKeyFormat,
        C::InvalidKey,
        C::TooManyAuthFailures {
            retry_after: Duration::from_secs(1),
        },
        C::MissingScope(Scope::SceneRender),
        C::WrongOrganization,
        C::Forbidden { action: "x" },
        C::InsufficientCredits {
            needed: 1,
            available: 0,
        },
        C::NotFound { resource: "job" },
        C::invalid("name", "empty"),
        C::LimitExceeded { what: "x", max: 1 },
        C::IdempotencyConflict,
        C::IdempotencyInProgress,
        C::LeaseLost,
        C::InvalidState("x"),
        C::LastOwner,
        C::AlreadyMember,
        C::store(StoreErrorKind::Unavailable, "down"),
        C::store(StoreErrorKind::Conflict, "dup"),
        C::store(StoreErrorKind::Corrupt, "bad"),
        C::store(StoreErrorKind::Other, "?"),
    ];
    let p = "offline";
    let m = || "m".to_owned();
    let http = [
        Kit::BodyTooLarge { max: 1 },
        Kit::InvalidJson {
            path: ".".into(),
            message: m(),
        },
        Kit::UnsupportedMediaType,
        Kit::InvalidParameter {
            name: "x",
            message: m(),
        },
        Kit::RouteNotFound,
        Kit::MethodNotAllowed,
        Kit::NotSignedIn,
        Kit::AlreadyProcessed,
        Kit::RateLimited {
            retry_after: Duration::from_secs(1),
        },
        Kit::Internal { message: m() },
    ];
    let generation = [
        Gen::InvalidJson {
            path: ".".into(),
            message: m(),
        },
        Gen::InvalidParameter {
            name: "x",
            message: m(),
        },
        Gen::BodyTooLarge { max: 1 },
        Gen::ProviderFailed {
            provider: p,
            message: m(),
        },
        Gen::ProviderTimeout { provider: p },
        Gen::ProviderRateLimited {
            provider: p,
            retry_after: None,
        },
        Gen::ProviderBlocked {
            provider: p,
            reason: m(),
        },
        Gen::ProviderUnavailable {
            provider: p,
            message: m(),
        },
        Gen::ProviderInvalidResponse {
            provider: p,
            message: m(),
        },
        Gen::Media { message: m() },
        Gen::MediaLinkInvalid { reason: "expired" },
        Gen::WebhookFailed { message: m() },
        Gen::InvalidImage { message: m() },
        Gen::Internal { message: m() },
    ];
    let mut codes: Vec<String> = core.iter().map(|e| e.code().to_owned()).collect();
    codes.extend(http.iter().map(|e| e.code().to_owned()));
    // The generation tree's errors reach the wire wrapped in the HTTP error: check them so.
    codes.extend(generation.map(|e| Kit::from(e).code().to_owned()));
    // A few codes are raised by both trees (`invalid_json`, `invalid_parameter`,
    // `body_too_large`, `internal_error`): count each code once.
    codes.sort();
    codes.dedup();
    for code in &codes {
        let parsed = ErrorCode::parse(code);
        assert!(
            !matches!(parsed, ErrorCode::Unknown(_)),
            "the client does not know the server's code {code:?}"
        );
        assert_eq!(parsed.as_str(), code);
    }
    assert_eq!(
        ErrorCode::KNOWN.len(),
        codes.len(),
        "the client knows a code the server never sends"
    );
}
