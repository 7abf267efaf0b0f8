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
    let kit = [
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
        Kit::RateLimited {
            retry_after: Duration::from_secs(1),
        },
        Kit::ProviderFailed {
            provider: p,
            message: m(),
        },
        Kit::ProviderTimeout { provider: p },
        Kit::ProviderRateLimited {
            provider: p,
            retry_after: None,
        },
        Kit::ProviderBlocked {
            provider: p,
            reason: m(),
        },
        Kit::ProviderUnavailable {
            provider: p,
            message: m(),
        },
        Kit::ProviderInvalidResponse {
            provider: p,
            message: m(),
        },
        Kit::Media { message: m() },
        Kit::MediaLinkInvalid { reason: "expired" },
        Kit::WebhookFailed { message: m() },
        Kit::InvalidImage { message: m() },
        Kit::Internal { message: m() },
    ];
    let mut codes: Vec<String> = core.iter().map(|e| e.code().to_owned()).collect();
    codes.extend(kit.iter().map(|e| e.code().to_owned()));
    // The replay refusal of key creation (creapic_server_kit::http::idempotent).
    codes.push("already_processed".into());
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
