//! Request ids: every request gets one, every response carries it in `x-request-id`, and every
//! error body repeats it, so a client can quote it to support.
//!
//! The id lives in a task-local for the duration of the request, so an error turned into a
//! response deep inside a handler finds it without threading it through every signature. The
//! peer's address rides along ([`peer`]): API-key authentication charges failed lookups to it;
//! so does the prefix the host mounted the kit at ([`crate::http::mount`]), which media links
//! follow. A client-supplied `x-request-id` is kept when it is short visible ASCII (≤ 64 bytes);
//! anything else is replaced, so logs never carry attacker-sized or control-character ids.
//!
//! Design decision: **a hand-written layer, not `axum::middleware::from_fn`.** This runs on
//! every request, and `from_fn` clones the inner service and boxes a future per request; here
//! the id is an inline `Copy` value (no allocation), the future is a plain struct, and the
//! request span (request id, method, path; then the route template from
//! [`crate::http::measure`], the key prefix and organization from [`crate::http::auth`]; then
//! status and latency) wraps the inner call and every poll of its future.
//!
//! The access log: when the response is ready, one event at info (`target:
//! creapic_server_kit::http::request_id`, message `finished`) inside the span, so the log line
//! carries every field above — successful requests included. It holds no header, query or
//! body: never a key, a password, a session or CSRF token (the key *prefix* is not a secret).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use tokio::task::futures::TaskLocalFuture;
use tracing::instrument::{Instrument as _, Instrumented};

/// The header name.
pub const HEADER: &str = "x-request-id";

/// The longest id kept from a client (and the buffer every id lives in).
const MAX_LEN: usize = 64;

/// A request id: up to 64 bytes of `[A-Za-z0-9._-]`, stored inline.
#[derive(Clone, Copy)]
pub struct RequestId {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl RequestId {
    /// The id a client sent, when it is 1..=64 bytes of `[A-Za-z0-9._-]`.
    fn from_client(value: &HeaderValue) -> Option<RequestId> {
        let given = value.as_bytes();
        let ok = !given.is_empty()
            && given.len() <= MAX_LEN
            && given
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return None;
        }
        let mut bytes = [0u8; MAX_LEN];
        bytes[..given.len()].copy_from_slice(given);
        Some(RequestId {
            bytes,
            len: u8::try_from(given.len()).ok()?,
        })
    }

    /// A fresh id: a UUID v7 from the wall clock and the thread-local CSPRNG (no system call per
    /// request, unlike asking the OS for randomness each time), as 32 hex characters.
    fn generate() -> RequestId {
        use rand::Rng as _;
        let mut random = [0u8; 10];
        rand::rng().fill_bytes(&mut random);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        let mut bytes = [0u8; MAX_LEN];
        let text = uuid::Builder::from_unix_timestamp_millis(ms, &random)
            .into_uuid()
            .simple()
            .encode_lower(&mut bytes)
            .len();
        RequestId {
            bytes,
            // 32 characters: fits.
            len: u8::try_from(text).unwrap_or(0),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked or hex-encoded), so this never fails.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the task-local holds for one request: its id, the peer's address (the host's
/// [`crate::PeerAddr`] or axum's `ConnectInfo<SocketAddr>`, see [`crate::http::peer`]), which
/// API-key authentication charges failed lookups to, and the mount prefix media links are built on
/// (`None` at the root: no allocation).
#[derive(Clone)]
struct Current {
    id: RequestId,
    peer: Option<std::net::IpAddr>,
    mount: Option<std::sync::Arc<str>>,
}

tokio::task_local! {
    static REQUEST_ID: Current;
}

/// The current request's id (empty outside a request).
pub fn current() -> String {
    REQUEST_ID
        .try_with(|c| c.id.as_str().to_owned())
        .unwrap_or_default()
}

/// The current request's peer address, if the host provided one ([`crate::PeerAddr`] or
/// `ConnectInfo<SocketAddr>`).
pub fn peer() -> Option<std::net::IpAddr> {
    REQUEST_ID.try_with(|c| c.peer).ok().flatten()
}

/// The current request's mount prefix (see [`crate::http::mount`]): `None` at the root or outside a
/// request.
pub fn mount() -> Option<std::sync::Arc<str>> {
    REQUEST_ID.try_with(|c| c.mount.clone()).ok().flatten()
}

/// The layer [`routes`](crate::http::routes) puts around the whole router.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds { inner }
    }
}

/// Assigns the id, runs the request inside it and its span, stamps the response.
#[derive(Clone, Debug)]
pub struct RequestIds<S> {
    inner: S,
}

impl<S> tower::Service<Request> for RequestIds<S>
where
    S: tower::Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let id = request
            .headers()
            .get(HEADER)
            .and_then(RequestId::from_client)
            .unwrap_or_else(RequestId::generate);
        let span = tracing::info_span!(
            "request",
            request_id = %id.as_str(),
            method = %request.method().as_str(),
            path = %request.uri().path(),
            route = tracing::field::Empty,
            key = tracing::field::Empty,
            org = tracing::field::Empty,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let header = HeaderValue::from_str(id.as_str()).ok();
        let current = Current {
            id,
            peer: crate::http::peer::peer_ip(request.extensions()),
            mount: crate::http::mount::prefix_of(&request),
        };
        // Routing and the handler's first steps may run inside `call`: give them the id too.
        let inner = {
            let _entered = span.enter();
            REQUEST_ID.sync_scope(current.clone(), || self.inner.call(request))
        };
        RequestIdFuture {
            inner: REQUEST_ID.scope(current, inner).instrument(span),
            header,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestIds`].
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: Instrumented<TaskLocalFuture<Current, F>>,
        header: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F, R> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<R, Infallible>>,
    R: IntoResponse,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Poll::Ready(result) = this.inner.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        let Ok(response) = result;
        let mut response = response.into_response();
        let span = this.inner.as_ref().get_ref().span();
        span.record("status", response.status().as_u16());
        span.record("latency_ms", this.started.elapsed().as_secs_f64() * 1000.0);
        // The access log line, with the span's fields.
        span.in_scope(|| tracing::info!("finished"));
        if let Some(h) = this.header.take() {
            response.headers_mut().insert(HEADER, h);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        let kept = RequestId::from_client(&HeaderValue::from_static("abc-123_x.y"));
        assert_eq!(kept.as_ref().map(RequestId::as_str), Some("abc-123_x.y"));
        assert!(RequestId::from_client(&HeaderValue::from_static("has space")).is_none());
        let long = HeaderValue::from_str(&"a".repeat(65)).expect("header");
        assert!(RequestId::from_client(&long).is_none());
        let longest = HeaderValue::from_str(&"a".repeat(64)).expect("header");
        assert_eq!(
            RequestId::from_client(&longest).map(|id| id.as_str().len()),
            Some(64)
        );
    }

    #[test]
    fn generated_ids_are_32_hex_characters_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
    }
}
