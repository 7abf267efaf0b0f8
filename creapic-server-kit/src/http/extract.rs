//! The kit's axum extractors: what a public handler takes instead of the raw request, so that it
//! reads "who, what, call, reply". Each rejects with the kit's [`Error`] (which is its own
//! response), or cannot fail.
//!
//! - [`Authorized<N>`]: the API key's principal, checked for what the route needs
//!   ([`need`]: a scope, or any key), and its rate decision; [`Authorized::answer`] stamps the
//!   `RateLimit-*` headers on the reply. 401/403/429 otherwise.
//! - [`BoundedJson<T>`]: the body, size-limited, JSON with path-naming errors
//!   ([`crate::http::body::read_json`]), with its raw bytes kept for the idempotency fingerprint.
//!   400/413/415 otherwise.
//! - [`IdempotencyKeyHeader`]: what `idempotent::run` needs of the request (the
//!   `Idempotency-Key` header, method and path); never rejects — a malformed header is answered
//!   by `idempotent::run`, after the body is checked, as before.
//! - [`ApiQuery<T>`]: the query string (400 naming `query`), and [`AuditContext`]: the audited
//!   client address and user agent.
//! - [`SignedIn`]: the dashboard user the host's login layer vouches for (401 `not_signed_in`),
//!   the caller of the dashboard routes, taken before their bodies like a key.
//!
//! The design decision is ordering by type: axum runs every `FromRequestParts` extractor, in
//! argument order, before the one `FromRequest` extractor that consumes the body. So with
//! [`Authorized`] among the parts and [`BoundedJson`] last, a request is authenticated before
//! its body is read — an unauthenticated request with a bad body is a 401, not a 400.
//!
//! ```
//! use axum::extract::State;
//! use axum::response::Response;
//! use creapic_server_kit::AppState;
//! use creapic_server_kit::http::extract::{Authorized, BoundedJson, need};
//!
//! async fn handler(
//!     State(state): State<AppState>,
//!     who: Authorized<need::ImageGeneration>, // 401/403/429 before the body is read
//!     BoundedJson(body, _raw): BoundedJson<serde_json::Value>, // 400/413/415
//! ) -> Response {
//!     let _ = (&state, &body);
//!     who.answer(http::StatusCode::NO_CONTENT)
//! }
//! # let _: axum::routing::MethodRouter<AppState> = axum::routing::post(handler);
//! ```

use std::convert::Infallible;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use creapic_core::Principal;
use creapic_core::audit::RequestContext;
use creapic_core::id::UserId;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::http::auth::KeyNeed;
use crate::http::error::Error;
use crate::http::idempotent::IdempotencyKeyHeader;
use crate::http::rate_limit::RateDecision;
use crate::http::service::AppState;

/// What a route asks of an API key, as a type: the parameter of [`Authorized`].
pub trait KeyRequirement: Send + Sync + 'static {
    /// The need checked by [`crate::http::auth::authorize`].
    const NEED: KeyNeed;
}

/// The [`KeyRequirement`]s of the kit's routes.
pub mod need {
    use creapic_core::scope::Scope;

    use super::KeyRequirement;
    use crate::http::auth::KeyNeed;

    /// A key with `IMAGE_GENERATION`.
    #[derive(Debug)]
    pub enum ImageGeneration {}
    /// A key with `SCENE_RENDER`.
    #[derive(Debug)]
    pub enum SceneRender {}
    /// A key with `ORGANIZATION_WRITE`.
    #[derive(Debug)]
    pub enum OrganizationWrite {}
    /// Any valid key of the organization (finer checks, if any, are the core's).
    #[derive(Debug)]
    pub enum AnyKey {}

    impl KeyRequirement for ImageGeneration {
        const NEED: KeyNeed = KeyNeed::Scope(Scope::ImageGeneration);
    }
    impl KeyRequirement for SceneRender {
        const NEED: KeyNeed = KeyNeed::Scope(Scope::SceneRender);
    }
    impl KeyRequirement for OrganizationWrite {
        const NEED: KeyNeed = KeyNeed::Scope(Scope::OrganizationWrite);
    }
    impl KeyRequirement for AnyKey {
        const NEED: KeyNeed = KeyNeed::AnyKey;
    }
}

/// The caller of an API-key route: its key verified ([`crate::http::auth::authorize`]), what the
/// route needs of it checked, and the per-key rate limit passed. Rejects with 401, 403 or 429.
#[derive(Debug)]
pub struct Authorized<N> {
    /// Who is calling.
    pub principal: Principal,
    rate: RateDecision,
    need: PhantomData<fn() -> N>,
}

impl<N> Authorized<N> {
    /// The reply, stamped with the key's `RateLimit-*` headers: how every answer after a
    /// successful authorization leaves.
    pub fn answer(&self, reply: impl IntoResponse) -> Response {
        let mut response = reply.into_response();
        self.rate.apply(response.headers_mut());
        response
    }
}

impl<N: KeyRequirement> FromRequestParts<AppState> for Authorized<N> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let (principal, rate) =
            crate::http::auth::authorize(state, &parts.headers, N::NEED).await?;
        Ok(Authorized {
            principal,
            rate,
            need: PhantomData,
        })
    }
}

/// A JSON body read under `Limits::body_max_bytes` (see [`crate::http::body::read_json`]): the
/// value and the raw bytes, which the idempotency fingerprint covers. Rejects with 400, 413 or 415.
#[derive(Debug)]
pub struct BoundedJson<T>(pub T, pub Bytes);

impl<T: DeserializeOwned> FromRequest<AppState> for BoundedJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Error> {
        let (parts, body) = request.into_parts();
        let max = state.config().limits.body_max_bytes;
        let (value, raw) = crate::http::body::read_json(&parts.headers, body, max).await?;
        Ok(BoundedJson(value, raw))
    }
}

/// The query string, parsed (400 naming `query` otherwise). Take it as
/// `Result<ApiQuery<T>, Error>` after [`Authorized`] to answer a bad query with the key's rate
/// headers, as every answer after authorization.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        crate::http::handlers::keys::query(parts).map(ApiQuery)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(IdempotencyKeyHeader::from_parts(parts))
    }
}

/// The request's client address and user agent for audit events
/// ([`crate::http::handlers::request_context`]). Never rejects.
#[derive(Debug)]
pub struct AuditContext(pub RequestContext);

impl FromRequestParts<AppState> for AuditContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        Ok(AuditContext(crate::http::handlers::request_context(
            parts,
            state.config().trust_forwarded_for,
        )))
    }
}

/// The person signed in to the host's dashboard ([`crate::http::auth::DashboardUser`] in the
/// request extensions); 401 `not_signed_in` otherwise. Whether that person may act on an
/// organization is the core's check, made by the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedIn(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        crate::http::auth::dashboard_user(&parts.extensions).map(SignedIn)
    }
}
