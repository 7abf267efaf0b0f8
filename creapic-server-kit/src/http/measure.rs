//! The per-route layer: it records the route's template into the request span (so the access
//! log line of [`crate::http::request_id`] names `/api/keys/{id}`, not the raw path, and logs
//! aggregate), and, when the host gave the kit a Prometheus handle, the request metrics
//! `creapic_http_requests_total{route,method,status}` and
//! `creapic_http_request_duration_seconds{route,method}` (buckets:
//! [`crate::telemetry::HTTP_REQUEST_BUCKETS`]). `routes` puts it on each route, the console's
//! included.
//!
//! Design decision: **handles, not labels, per request.** Each route's layer is built with its
//! template (a `&'static str`, never the raw path, so ids cannot explode the label set) and keeps
//! the metric handles it has registered: a request looks its (method, status) handle up in a
//! fixed table and increments it — no label strings allocated, no key hashed, no registry lock.
//! A handle is registered on first use (so `/metrics` lists only what happened), with the
//! recorder installed at that moment, as the `metrics` macros would. Statuses outside the table
//! fall back to the macros. One layer does both jobs because each layer on a route boxes its
//! future once more per request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use metrics::{Counter, Histogram};

/// Methods with a slot of their own; anything else is `OTHER`.
const METHODS: [&str; 6] = ["GET", "POST", "DELETE", "PUT", "HEAD", "OTHER"];

/// Statuses with a pre-registrable handle (everything the kit answers, and a few more).
const STATUSES: [u16; 22] = [
    200, 201, 202, 204, 301, 302, 304, 400, 401, 402, 403, 404, 405, 409, 413, 415, 422, 429, 500,
    502, 503, 504,
];

fn method_slot(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::DELETE => 2,
        http::Method::PUT => 3,
        http::Method::HEAD => 4,
        _ => 5,
    }
}

/// The handles of one route.
struct RouteMetrics {
    route: &'static str,
    durations: [OnceLock<Histogram>; METHODS.len()],
    counts: [[OnceLock<Counter>; STATUSES.len()]; METHODS.len()],
}

impl RouteMetrics {
    fn record(&self, method: usize, status: http::StatusCode, elapsed: f64) {
        let route = self.route;
        let m = METHODS[method];
        match STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(slot) => self.counts[method][slot]
                .get_or_init(|| {
                    metrics::counter!("creapic_http_requests_total", "route" => route, "method" => m, "status" => status.as_str().to_owned())
                })
                .increment(1),
            None => metrics::counter!("creapic_http_requests_total", "route" => route, "method" => m, "status" => status.as_str().to_owned())
                .increment(1),
        }
        self.durations[method]
            .get_or_init(|| {
                metrics::histogram!(crate::telemetry::HTTP_REQUEST_DURATION, "route" => route, "method" => m)
            })
            .record(elapsed);
    }
}

/// The layer for one route template.
#[derive(Clone)]
pub struct MeasureLayer {
    route: &'static str,
    metrics: Option<Arc<RouteMetrics>>,
}

impl MeasureLayer {
    /// Names and measures the route registered under `route` (its template, e.g.
    /// `/api/keys/{id}`).
    pub fn new(route: &'static str) -> Self {
        MeasureLayer {
            route,
            metrics: Some(Arc::new(RouteMetrics {
                route,
                durations: Default::default(),
                counts: Default::default(),
            })),
        }
    }

    /// Only names the route in the request span (metrics are off).
    pub fn name_only(route: &'static str) -> Self {
        MeasureLayer {
            route,
            metrics: None,
        }
    }
}

impl<S> tower::Layer<S> for MeasureLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            route: self.route,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MeasureLayer`] wraps a route's handlers in.
#[derive(Clone)]
pub struct Measure<S> {
    inner: S,
    route: &'static str,
    metrics: Option<Arc<RouteMetrics>>,
}

impl<S> tower::Service<Request> for Measure<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MeasureFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = method_slot(request.method());
        // The request span is current here (the request-id layer instruments the router's
        // future, which calls this): a `&'static str`, recorded without allocating.
        tracing::Span::current().record("route", tracing::field::display(self.route));
        MeasureFuture {
            inner: self.inner.call(request),
            metrics: self.metrics.clone(),
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Measure`].
    pub struct MeasureFuture<F> {
        #[pin]
        inner: F,
        metrics: Option<Arc<RouteMetrics>>,
        method: usize,
        started: Instant,
    }
}

impl<F> Future for MeasureFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => return Poll::Pending,
        };
        if let (Ok(r), Some(metrics)) = (&response, this.metrics.as_ref()) {
            metrics.record(
                *this.method,
                r.status(),
                this.started.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(response)
    }
}
