//! The route handlers, one module per resource. Each handler authenticates, validates, calls
//! `creapic_core` (and the generation pipeline), and answers with a wire type from
//! `creapic_core::wire`; every failure is an [`Error`](crate::Error) turned into a response.

pub mod audit;
pub mod images;
pub mod keys;
pub mod media;
pub mod organizations;
pub mod playground;
pub mod scenes;
pub mod system;

use std::net::{IpAddr, SocketAddr};

use creapic_core::audit::RequestContext;
use http::{HeaderMap, request::Parts};

/// The request's client address and user agent, for audit events. The peer address comes from
/// `axum::extract::ConnectInfo<SocketAddr>` when the host provides it; `X-Forwarded-For` is read
/// only when the kit is configured to trust a proxy.
pub fn request_context(parts: &Parts, trust_forwarded_for: bool) -> RequestContext {
    let forwarded = trust_forwarded_for
        .then(|| forwarded_for(&parts.headers))
        .flatten();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ua = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    RequestContext::new(forwarded.or(peer), ua)
}

fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get("x-forwarded-for")?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Counts characters of `text` up to `max + 1` (bounded work on hostile input).
pub fn too_long(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().nth(max).is_some()
}
