//! The service a host mounts: [`ServiceBuilder`] → [`CreapicService`], one
//! `tower::Service<http::Request<B>>` whose error is `Infallible` (every failure is a response).
//!
//! Internally the routes are an axum `Router`; hosts do not need axum to mount it (any
//! `tower`/`hyper` host works, see `examples/`). [`AppState`] is what every handler receives: the
//! core service, configuration, rate limiter, media storage and generation pipeline, the cache of
//! finished jobs' status bodies, and the expiry of the media links minted now ([`LinkWindow`]),
//! shared behind one `Arc`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use creapic_core::clock::Timestamp;
use creapic_core::id::OrgId;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::Core;
use crate::config::{Limits, Pricing, RateLimitConfig, TrustedProxies};
use crate::generation::item::ItemOutput;
use crate::generation::media::{MediaKey, MediaStore};
use crate::generation::pipeline::Pipeline;
use crate::http::rate_limit::{InProcessLimiter, RateLimiter};

/// Settings of the kit.
#[derive(Debug, Clone)]
pub struct KitConfig {
    /// Prices.
    pub pricing: Pricing,
    /// Input limits.
    pub limits: Limits,
    /// Per-key rate limit (for the default in-process limiter).
    pub rate_limit: RateLimitConfig,
    /// The base media links are built on: the absolute URL (or the path) at which the kit's
    /// routes are reachable, mount prefix included (e.g. `https://api.example.com/creapic`, or
    /// `/creapic`). Without it, links are relative to the host and follow the prefix the kit is
    /// mounted at (`/creapic/api/media/…` under `Router::nest_service("/creapic", …)`, found from
    /// axum's `OriginalUri`; `/api/media/…` at the root). See [`crate::http::mount`] for the rule.
    pub public_url: Option<String>,
    /// How many proxies in front of the kit may name the client in `X-Forwarded-For` (audit
    /// events' IP). Default: none, the peer address is used.
    pub trust_forwarded_for: TrustedProxies,
    /// Serve `GET /metrics` on the kit's own router (needs [`ServiceBuilder::metrics`]). Off by
    /// default: the kit's routes face integrators, and metrics name routes, codes and volumes
    /// they have no business reading. Hosts serve [`crate::http::routes::metrics_router`] on a
    /// private address instead, or switch this on behind their own access control.
    pub metrics_route: bool,
    /// Serve the API reference page, `GET /api/docs`, and the viewer it loads (see
    /// [`crate::http::reference`]). On by default: it shows nothing `GET /api/openapi` does not
    /// already publish, and its viewer ships inside the crate (no CDN). Switch it off to keep
    /// HTML off the API's origin.
    pub reference_page: bool,
    /// Serve the web console under `/console` (see [`crate::http::console`]): people sign in
    /// with the kit's sessions, or arrive signed in by the host's login layer
    /// ([`crate::http::auth::DashboardUser`]). On by default; its routes are pages, not part of
    /// the OpenAPI document.
    pub console: bool,
}

impl Default for KitConfig {
    fn default() -> Self {
        KitConfig {
            pricing: Pricing::default(),
            limits: Limits::default(),
            rate_limit: RateLimitConfig::default(),
            public_url: None,
            trust_forwarded_for: TrustedProxies::default(),
            metrics_route: false,
            reference_page: true,
            console: true,
        }
    }
}

struct Inner {
    core: Core,
    config: KitConfig,
    limiter: Arc<dyn RateLimiter>,
    pipeline: Pipeline,
    metrics: Option<PrometheusHandle>,
    job_notify: Arc<tokio::sync::Notify>,
    finished_status: crate::http::finished_status::FinishedStatus,
    console: crate::http::console::Console,
}

/// When the media links minted now expire: `now + media_url_ttl`, rounded down to a step of
/// a tenth of the TTL (at least 1 s, at most 60 s). Every link minted within one step is the
/// same URL — clients and CDNs can cache the image by URL, and a finished job's status body can
/// be served from [`crate::http::finished_status`] for the whole step. A link lives between 90 % of
/// the TTL (and at least TTL − 60 s) and the full TTL, never longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkWindow {
    /// The time the links are minted at.
    pub now: Timestamp,
    /// When they expire.
    pub until: Timestamp,
}

impl LinkWindow {
    /// The window for links minted at `now` with a time to live of `ttl`.
    pub fn at(now: Timestamp, ttl: Duration) -> Self {
        let step_ms = i64::try_from((ttl / 10).as_millis())
            .unwrap_or(i64::MAX)
            .clamp(1_000, 60_000);
        let exact = now.plus(ttl).unix_ms();
        let until = Timestamp::from_unix_ms(exact - exact.rem_euclid(step_ms));
        // A TTL under a second cannot be rounded: keep it exact.
        let until = if until <= now {
            Timestamp::from_unix_ms(exact)
        } else {
            until
        };
        LinkWindow { now, until }
    }
}

/// What every handler receives. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The core service.
    pub fn core(&self) -> &Core {
        &self.0.core
    }

    /// The configuration.
    pub fn config(&self) -> &KitConfig {
        &self.0.config
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.0.limiter
    }

    /// Media storage.
    pub fn media(&self) -> &MediaStore {
        self.0.pipeline.media()
    }

    /// The generation pipeline (composer, providers, media).
    pub fn pipeline(&self) -> &Pipeline {
        &self.0.pipeline
    }

    /// The Prometheus handle, if the host enabled `/metrics`.
    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.0.metrics.as_ref()
    }

    /// Wakes job runners waiting for work (a job was just queued).
    pub fn notify_job(&self) {
        self.0.job_notify.notify_one();
    }

    /// The notification runners wait on.
    pub fn job_notify(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.0.job_notify)
    }

    /// The expiry of the media links minted now (see [`LinkWindow`]).
    pub fn link_window(&self) -> LinkWindow {
        LinkWindow::at(
            self.0.core.clock().now(),
            self.0.config.limits.media_url_ttl,
        )
    }

    /// Serialized status bodies of finished jobs (see [`crate::http::finished_status`]).
    pub fn finished_status(&self) -> &crate::http::finished_status::FinishedStatus {
        &self.0.finished_status
    }

    /// The console's sign-in permits and budgets (see [`crate::http::console`]).
    pub fn console(&self) -> &crate::http::console::Console {
        &self.0.console
    }

    /// A signed, expiring URL for an object of `org`.
    pub fn media_link(&self, org: OrgId, key: &MediaKey) -> Option<String> {
        self.media_link_in(self.link_window(), org, key)
    }

    /// The mount prefix the current request's links follow (see [`crate::http::mount`]): `None`
    /// when [`KitConfig::public_url`] is set (it is then the base of every link) or the kit is
    /// served at the root.
    pub fn link_mount(&self) -> Option<Arc<str>> {
        if self.0.config.public_url.is_some() {
            None
        } else {
            crate::http::request_id::mount()
        }
    }

    /// A signed URL for an object of `org`, expiring at the end of `window`, on the base the
    /// rule of [`crate::http::mount`] gives: `public_url`, else the request's mount prefix, else
    /// none.
    pub fn media_link_in(&self, window: LinkWindow, org: OrgId, key: &MediaKey) -> Option<String> {
        let link = self.media().sign(org, key, window.now, window.until).ok()?;
        let mount = self.link_mount();
        let base = self
            .0
            .config
            .public_url
            .as_deref()
            .or(mount.as_deref())
            .unwrap_or("");
        Some(link.url(&format!("{}/api/media", base.trim_end_matches('/'))))
    }

    /// The image URL of a finished job item's output, or `None` if it is not an image output.
    pub fn output_url(&self, org: OrgId, output: &str) -> Option<String> {
        self.output_url_in(self.link_window(), org, output)
    }

    /// [`AppState::output_url`] with links expiring at the end of `window`.
    pub fn output_url_in(&self, window: LinkWindow, org: OrgId, output: &str) -> Option<String> {
        let output = ItemOutput::parse(output).ok()?;
        self.media_link_in(window, org, &output.media)
    }
}

/// Builds a [`CreapicService`].
pub struct ServiceBuilder {
    core: Core,
    pipeline: Pipeline,
    config: KitConfig,
    limiter: Option<Arc<dyn RateLimiter>>,
    metrics: Option<PrometheusHandle>,
    job_notify: Option<Arc<tokio::sync::Notify>>,
}

impl ServiceBuilder {
    /// A builder over the core service and the generation pipeline (which holds media storage;
    /// `Pipeline::offline(media)` is the embedded default).
    pub fn new(core: Core, pipeline: Pipeline) -> Self {
        ServiceBuilder {
            core,
            pipeline,
            config: KitConfig::default(),
            limiter: None,
            metrics: None,
            job_notify: None,
        }
    }

    /// The configuration.
    pub fn config(mut self, config: KitConfig) -> Self {
        self.config = config;
        self
    }

    /// A rate limiter (default: in process, from `config.rate_limit`).
    pub fn rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Measure requests into this Prometheus handle (per-route counts and latencies); it is
    /// served on the kit's router only with [`KitConfig::metrics_route`].
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Share a wake-up signal with job runners in this process.
    pub fn job_notify(mut self, notify: Arc<tokio::sync::Notify>) -> Self {
        self.job_notify = Some(notify);
        self
    }

    /// The shared state (for hosts adding their own routes around the kit's).
    pub fn state(self) -> AppState {
        let limiter = self
            .limiter
            .unwrap_or_else(|| Arc::new(InProcessLimiter::new(self.config.rate_limit)));
        let csrf_key = self
            .pipeline
            .media()
            .derived_key(crate::http::console::csrf::HOST_KEY_PURPOSE);
        AppState(Arc::new(Inner {
            core: self.core,
            config: self.config,
            limiter,
            pipeline: self.pipeline,
            metrics: self.metrics,
            job_notify: self.job_notify.unwrap_or_default(),
            finished_status: crate::http::finished_status::FinishedStatus::default(),
            console: crate::http::console::Console::new(csrf_key),
        }))
    }

    /// The service.
    pub fn build(self) -> CreapicService {
        CreapicService::new(self.state())
    }
}

/// Every creapic endpoint as one `tower::Service`. Its error type is `Infallible`: failures are
/// JSON error responses, never dropped connections.
#[derive(Clone)]
pub struct CreapicService {
    router: Router,
    state: AppState,
}

impl std::fmt::Debug for CreapicService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreapicService").finish_non_exhaustive()
    }
}

impl CreapicService {
    /// The service over `state`.
    pub fn new(state: AppState) -> Self {
        CreapicService {
            router: crate::http::routes::router(state.clone()),
            state,
        }
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The routes as an axum `Router`, for hosts that compose axum routers.
    pub fn into_router(self) -> Router {
        self.router
    }
}

impl<B> tower::Service<http::Request<B>> for CreapicService
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <Router as tower::Service<http::Request<Body>>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let request = request.map(Body::new);
        <Router as tower::Service<http::Request<Body>>>::call(&mut self.router, request)
    }
}

/// Compile-time proof of the promise hosts rely on: the service never fails.
#[allow(dead_code)]
fn _infallible() {
    fn check<S: tower::Service<http::Request<Body>, Error = Infallible>>() {}
    check::<CreapicService>();
}
