//! The HTTP connections of `creapic serve`: accepting them under a cap, reading each request
//! under deadlines, and closing them all by a deadline at shutdown.
//!
//! The design decision that shapes it: **no client decides how long it holds the server.**
//! `axum::serve` sets no header-read timeout, no body or request deadline and no connection cap,
//! and waits for every open connection at shutdown, so one client sending half a request line
//! kept a connection (and a shutdown) for as long as it liked. This accept loop serves the same
//! router over hyper's HTTP/1 connection with:
//!
//! - a cap on open connections (`max_connections`): at the cap the loop stops accepting, and new
//!   connections wait in the kernel's listen backlog until one closes;
//! - a header-read timeout (hyper's, which needs a timer): a connection that has not sent a
//!   complete request head within it is closed — also an idle keep-alive connection;
//! - a body deadline, counted from when the request head arrived: a body still incomplete then
//!   fails to read, and the kit answers 400;
//! - a request deadline over the whole response future, above the kit's own deadline for a
//!   synchronous generation, so it fires only if something is stuck past every bound of its
//!   own: 503 `request_timeout`;
//! - at shutdown: stop accepting, ask every connection to close after its current request, and
//!   after `drain` cut whatever is still open.
//!
//! The body deadline's timer is only armed when a body is not already there, so a small request
//! costs no timer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// How long the accept loop waits after an accept error (e.g. out of file descriptors) before
/// trying again, so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The limits every connection is served under.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to send a complete request head (and the longest a keep-alive connection idles).
    pub header_read_timeout: Duration,
    /// Time to send a request's body, from the end of its head.
    pub body_read_timeout: Duration,
    /// Time to produce the whole response head.
    pub request_timeout: Duration,
    /// At shutdown, time the open connections have to finish before they are cut.
    pub drain: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains (see the module
/// documentation). Returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing_tx, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays as small as what is open.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |request| handle(router.clone(), peer, limits, request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut closing = closing.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = async { let _ = closing.wait_for(|closing| *closing).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, "waiting for open connections to finish");
    }
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut = connections.len(),
            drain = ?limits.drain,
            "connections still open at the shutdown deadline; closing them"
        );
        connections.shutdown().await;
    }
}

/// One request: the peer address for the kit's audit context, the body under its deadline,
/// the whole under the request deadline.
async fn handle(
    router: Router,
    peer: SocketAddr,
    limits: ConnectionLimits,
    request: http::Request<Incoming>,
) -> Result<Response, std::convert::Infallible> {
    use tower::ServiceExt as _;
    let body_deadline = Instant::now() + limits.body_read_timeout;
    let mut request = request.map(|body| Body::new(DeadlineBody::new(body, body_deadline)));
    request.extensions_mut().insert(ConnectInfo(peer));
    match tokio::time::timeout(limits.request_timeout, router.oneshot(request)).await {
        Ok(response) => response,
        Err(_) => Ok(request_timeout(limits.request_timeout)),
    }
}

/// The answer when the request deadline passes: a JSON error body like the kit's, 503 with
/// `Retry-After` (the work was cut, not refused; a retry with the same `Idempotency-Key` is
/// answered from what the first attempt left).
fn request_timeout(limit: Duration) -> Response {
    let body = serde_json::json!({
        "error": format!("the request took longer than {} s", limit.as_secs()),
        "code": "request_timeout",
        "requestId": "",
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The body was not complete by its deadline.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body was not received in time")
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body that fails once its deadline passes. The timer is created the first time the
/// body is not ready, so bodies that arrive with their head never arm one.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: Instant) -> Self {
        DeadlineBody {
            inner,
            deadline,
            timer: None,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
