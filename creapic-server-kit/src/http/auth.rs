//! Who is calling: API-key principals for the public routes, dashboard users for key management.
//!
//! API keys come from `Authorization: Bearer …` or `x-api-key` and are verified by
//! `creapic_core`'s authenticator (warm verifications touch no store; failed ones are limited
//! per client address). Dashboard routes are
//! called by a person signed in to the host's own application: the host's login layer inserts a
//! [`DashboardUser`] into the request extensions, and the kit checks that user's role in the
//! organization. The JSON dashboard routes never authenticate people themselves; the web
//! console ([`crate::http::console`]) takes the same [`DashboardUser`] when the host gives one,
//! and otherwise signs people in with the core's sessions.

use creapic_core::id::UserId;
use creapic_core::{Principal, scope::Scope};
use http::HeaderMap;

use crate::http::error::Error;
use crate::http::service::AppState;

/// A person signed in to the host's dashboard. Insert it into the request extensions (e.g. from
/// your session middleware) before the request reaches the kit:
///
/// ```
/// # use creapic_server_kit::http::auth::DashboardUser;
/// # use creapic_core::id::UserId;
/// # fn user_id_from_session() -> UserId { UserId::from_uuid(uuid::Uuid::nil()) }
/// let mut request = http::Request::new(axum::body::Body::empty());
/// request.extensions_mut().insert(DashboardUser(user_id_from_session()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashboardUser(pub UserId);

/// Verifies the request's API key. A lookup that is not a warm hit is charged to the client's
/// address — the entry of `X-Forwarded-For` the trusted proxies vouch for, else the peer the
/// request-id layer recorded — and refused with 429 `too_many_auth_failures` (and
/// `Retry-After`) once that address has failed too often (see
/// `creapic_core::auth::Authenticator::authenticate_from`). A host that gives neither
/// [`crate::PeerAddr`] nor `ConnectInfo` and trusts no proxy gives no address: then only the
/// memory of refused keys protects the store.
pub async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, Error> {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let x_api_key = headers.get("x-api-key").map(|v| v.as_bytes());
    let client = crate::http::handlers::forwarded_for(headers, state.config().trust_forwarded_for)
        .or_else(crate::http::request_id::peer);
    let principal = state
        .core()
        .authenticate_from(authorization, x_api_key, client)
        .await?;
    let span = tracing::Span::current();
    span.record("key", principal.prefix.as_str());
    span.record("org", tracing::field::display(principal.org));
    Ok(principal)
}

/// What a route asks of an API key beyond being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNeed {
    /// A key with this scope.
    Scope(Scope),
    /// Any valid key of the organization (reads of the organization's own account, such as its
    /// credits); finer checks, if any, are the core's.
    AnyKey,
}

impl From<Scope> for KeyNeed {
    fn from(scope: Scope) -> Self {
        KeyNeed::Scope(scope)
    }
}

/// Verifies the request's API key and checks what the route needs of it (a scope, or nothing
/// more), then the per-key rate limit.
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    need: impl Into<KeyNeed>,
) -> Result<(Principal, crate::http::rate_limit::RateDecision), Error> {
    let principal = principal(state, headers).await?;
    if let KeyNeed::Scope(scope) = need.into() {
        principal.require(scope)?;
    }
    let decision = state.rate_limiter().check(principal.key).await;
    if !decision.allowed {
        return Err(Error::RateLimited {
            retry_after: decision.reset,
        });
    }
    Ok((principal, decision))
}

/// The signed-in dashboard user, or [`Error::NotSignedIn`].
pub fn dashboard_user(extensions: &http::Extensions) -> Result<UserId, Error> {
    extensions
        .get::<DashboardUser>()
        .map(|u| u.0)
        .ok_or(Error::NotSignedIn)
}
