//! [`Client`] and one API exchange: building the request, sending it with retries, reading the
//! answer within a size bound, and turning it into a typed value or a typed [`Error`].
//!
//! Design decision: a call is a value ([`Call`], [`PostCall`]) built synchronously and sent
//! when awaited. A POST's `Idempotency-Key` is chosen when the value is built — generated, or
//! given with [`PostCall::idempotency_key`] — and the retry loop only ever resends that same
//! value, so a retried generation or bulk job is answered from the server's stored response
//! instead of being run and charged again. Each attempt carries a fresh `x-request-id`, so the
//! server's log names every attempt and a failure without an answer still has an id to quote.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use creapic_core::key::ApiKeySecret;
use creapic_core::wire::ErrorBody;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::config::ClientBuilder;
use crate::error::{ApiError, Error, ErrorCode, Result};
use crate::resources::{Audit, Credits, Images, Keys, Media, Organizations, Playground, Scenes};
use crate::retry::{self, RetryPolicy};
use crate::time::Time;

/// The request header that makes a POST safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The request id header (sent per attempt; echoed by the server).
pub const REQUEST_ID: &str = "x-request-id";
/// Longest `Idempotency-Key` the server accepts.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 200;

/// A creapic API client. Cheap to clone (one `Arc`); share one per process so connections are
/// pooled.
///
/// ```no_run
/// # async fn run() -> creapic_client::Result<()> {
/// use creapic_client::Client;
/// use creapic_client::wire::{GenerateImageRequest, ImageSource};
/// let client = Client::from_env()?;
/// let image = client
///     .images()
///     .generate(GenerateImageRequest {
///         source: ImageSource::Text { text: "Citrus mocktails on a summer table".into() },
///         aspect_ratio: Default::default(),
///         quality: Default::default(),
///         organization_id: None,
///     })
///     .await?;
/// println!("{} ({} tokens left)", image.image_url, image.tokens);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What a client holds; built by [`ClientBuilder::build`].
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) api_key: Option<ApiKeySecret>,
    pub(crate) dashboard: Option<(HeaderName, HeaderValue)>,
    pub(crate) headers: HeaderMap,
    pub(crate) user_agent: HeaderValue,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) time: Arc<dyn Time>,
    pub(crate) response_max_bytes: usize,
    pub(crate) media_max_bytes: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("Client")
            .field("base_url", &i.base.as_str())
            .field("api_key", &i.api_key)
            .field("dashboard_auth", &i.dashboard.as_ref().map(|(n, _)| n))
            .field("default_headers", &i.headers.keys().collect::<Vec<_>>())
            .field("timeout", &i.timeout)
            .field("retry", &i.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder; see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client configured from the environment: the API key from `AI_MEDIA_MAKER_API_KEY`
    /// (else `CREAPIC_API_KEY`) and the base URL from `CREAPIC_BASE_URL` (else
    /// [`crate::config::DEFAULT_BASE_URL`]). Fails, before any request, if no key is set or the
    /// key is malformed.
    pub fn from_env() -> Result<Client> {
        let client = ClientBuilder::new().env().build()?;
        if !client.has_api_key() {
            return Err(Error::Config {
                message: format!(
                    "no API key: set {} (or {}) to a wi_live_… or wi_test_… key",
                    crate::config::API_KEY_ENV,
                    crate::config::API_KEY_ENV_FALLBACK
                ),
            });
        }
        Ok(client)
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Client {
            inner: Arc::new(inner),
        }
    }

    /// The base URL calls are made against.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Whether an API key is configured (without one, public calls are answered
    /// `missing_authorization`).
    pub fn has_api_key(&self) -> bool {
        self.inner.api_key.is_some()
    }

    /// `POST /api/public/images/generate`.
    pub fn images(&self) -> Images<'_> {
        Images::new(self)
    }

    /// `POST /api/public/scenes/render`, `GET /api/public/scenes/render/{id}`, and the render
    /// waiter.
    pub fn scenes(&self) -> Scenes<'_> {
        Scenes::new(self)
    }

    /// `POST /api/public/organizations/create`.
    pub fn organizations(&self) -> Organizations<'_> {
        Organizations::new(self)
    }

    /// The key's organization's tokens: balance, held tokens, ledger and usage per day
    /// (`/api/public/credits`).
    pub fn credits(&self) -> Credits<'_> {
        Credits::new(self)
    }

    /// `POST /api/playground/images`, `GET /api/playground/images/{jobId}`, and the job waiter.
    pub fn playground(&self) -> Playground<'_> {
        Playground::new(self)
    }

    /// The dashboard's key management (`/api/keys`), for hosts that proxy it; authenticated with
    /// [`crate::config::DashboardAuth`], never the API key.
    pub fn keys(&self) -> Keys<'_> {
        Keys::new(self)
    }

    /// The dashboard's audit log (`/api/audit`), for hosts that proxy it.
    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self)
    }

    /// Downloads of generated images through their signed links.
    pub fn media(&self) -> Media<'_> {
        Media::new(self)
    }

    pub(crate) fn time(&self) -> &dyn Time {
        &*self.inner.time
    }

    /// The URL of an API path given as segments (each percent-encoded).
    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A call answered with JSON.
    pub(crate) fn json_call<'a, T: DeserializeOwned + Send + 'a>(
        &'a self,
        spec: Result<RequestSpec>,
    ) -> Call<'a, T> {
        Call {
            client: self,
            spec,
            decode: decode_json::<T>,
            _out: PhantomData,
        }
    }

    /// A call answered by `decode`.
    pub(crate) fn call<'a, T: Send + 'a>(
        &'a self,
        spec: Result<RequestSpec>,
        decode: fn(Raw) -> Result<T>,
    ) -> Call<'a, T> {
        Call {
            client: self,
            spec,
            decode,
            _out: PhantomData,
        }
    }

    /// A POST of `body` (JSON) with a fresh `Idempotency-Key`, answered with JSON.
    pub(crate) fn post<'a, B: serde::Serialize, T: DeserializeOwned + Send + 'a>(
        &'a self,
        url: Url,
        auth: Auth,
        body: &B,
    ) -> PostCall<'a, T> {
        self.post_with(url, auth, body, decode_json::<T>)
    }

    /// A POST of `body` (JSON) with a fresh `Idempotency-Key`, answered by `decode`.
    pub(crate) fn post_with<'a, B: serde::Serialize, T: Send + 'a>(
        &'a self,
        url: Url,
        auth: Auth,
        body: &B,
        decode: fn(Raw) -> Result<T>,
    ) -> PostCall<'a, T> {
        let spec = serde_json::to_vec(body)
            .map_err(|e| Error::InvalidArgument {
                name: "body",
                reason: e.to_string(),
            })
            .map(|bytes| RequestSpec {
                method: Method::POST,
                url,
                auth,
                body: Some(bytes),
                idempotency_key: Some(new_idempotency_key()),
                max_bytes: self.inner.response_max_bytes,
            });
        PostCall {
            call: self.call(spec, decode),
        }
    }

    /// A PATCH of `body`, or a DELETE without one, with a fresh `Idempotency-Key` like a POST
    /// (the server replays the first answer to a retry), answered with JSON.
    pub(crate) fn idempotent<'a, B: serde::Serialize, T: DeserializeOwned + Send + 'a>(
        &'a self,
        method: Method,
        url: Result<Url>,
        auth: Auth,
        body: Option<&B>,
    ) -> PostCall<'a, T> {
        let spec = url.and_then(|url| {
            let bytes =
                body.map(serde_json::to_vec)
                    .transpose()
                    .map_err(|e| Error::InvalidArgument {
                        name: "body",
                        reason: e.to_string(),
                    })?;
            Ok(RequestSpec {
                method,
                url,
                auth,
                body: bytes,
                idempotency_key: Some(new_idempotency_key()),
                max_bytes: self.inner.response_max_bytes,
            })
        });
        PostCall {
            call: self.call(spec, decode_json::<T>),
        }
    }

    /// A GET or DELETE without a body.
    pub(crate) fn spec(&self, method: Method, url: Url, auth: Auth) -> RequestSpec {
        RequestSpec {
            method,
            url,
            auth,
            body: None,
            idempotency_key: None,
            max_bytes: self.inner.response_max_bytes,
        }
    }

    pub(crate) fn media_max_bytes(&self) -> usize {
        self.inner.media_max_bytes
    }

    /// Sends `spec`, retrying under the policy; returns the first successful answer or the last
    /// failure.
    pub(crate) async fn execute(&self, spec: &RequestSpec) -> Result<Raw> {
        let policy = self.inner.retry;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let error = match self.attempt(spec).await {
                Ok(mut raw) => {
                    raw.attempts = attempt;
                    return Ok(raw);
                }
                Err(e) => e,
            };
            let (action, rule) = retry::classify(&error);
            if !action.is_retry() || attempt > policy.retries() {
                return Err(error);
            }
            let retry_after = error.api().and_then(|a| a.retry_after);
            let Some(delay) = policy.delay(attempt, retry_after) else {
                tracing::debug!(
                    code = error.code(),
                    ?retry_after,
                    "Retry-After beyond the bound"
                );
                return Err(error);
            };
            tracing::debug!(
                method = %spec.method,
                path = spec.url.path(),
                attempt,
                rule,
                code = error.code(),
                request_id = error.request_id(),
                ?delay,
                "retrying"
            );
            self.inner.time.sleep(delay).await;
        }
    }

    async fn attempt(&self, spec: &RequestSpec) -> Result<Raw> {
        let inner = &self.inner;
        let request_id = uuid::Uuid::now_v7().simple().to_string();
        // Default headers (a proxy's secrets, say) go only to the configured server, never to
        // another host a signed media link points to.
        let same_origin = spec.url.origin() == inner.base.origin();
        let mut headers = if same_origin {
            inner.headers.clone()
        } else {
            HeaderMap::new()
        };
        headers.insert(header::USER_AGENT, inner.user_agent.clone());
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID, v);
        }
        match spec.auth {
            Auth::ApiKey => {
                if let Some(key) = &inner.api_key {
                    let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                        .map_err(|_| Error::InvalidApiKeyFormat {
                            origin: "the builder",
                        })?;
                    v.set_sensitive(true);
                    headers.insert(header::AUTHORIZATION, v);
                }
            }
            Auth::Dashboard => {
                if let Some((name, value)) = &inner.dashboard {
                    headers.insert(name.clone(), value.clone());
                }
            }
            Auth::None => {}
        }
        if let Some(key) = &spec.idempotency_key {
            let v = HeaderValue::from_str(key).map_err(|_| Error::InvalidArgument {
                name: "idempotency_key",
                reason: "must be visible ASCII".into(),
            })?;
            headers.insert(IDEMPOTENCY_KEY, v);
        }
        let accept = match spec.auth {
            Auth::None => HeaderValue::from_static("*/*"),
            _ => HeaderValue::from_static("application/json"),
        };
        headers.insert(header::ACCEPT, accept);
        let mut request = inner
            .http
            .request(spec.method.clone(), spec.url.clone())
            .timeout(inner.timeout);
        if let Some(body) = &spec.body {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            request = request.body(body.clone());
        }
        let response = request
            .headers(headers)
            .send()
            .await
            .map_err(|e| self.transport_error(e, &spec.url, request_id.clone()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_bounded(response, spec.max_bytes)
            .await
            .map_err(|e| match e {
                Read::TooLarge => Error::ResponseTooLarge {
                    max_bytes: spec.max_bytes,
                },
                Read::Transport(e) => self.transport_error(e, &spec.url, request_id.clone()),
            })?;
        if status.is_success() {
            return Ok(Raw {
                status,
                headers,
                body,
                attempts: 1,
            });
        }
        Err(Error::Api(api_error(status, &headers, &body)))
    }

    fn transport_error(&self, e: reqwest::Error, url: &Url, request_id: String) -> Error {
        if e.is_timeout() {
            Error::Timeout {
                timeout: self.inner.timeout,
                request_id,
            }
        } else if e.is_connect() {
            Error::Connect {
                host: url.origin().ascii_serialization(),
                source: e.without_url(),
            }
        } else {
            Error::Transport {
                request_id,
                source: e.without_url(),
            }
        }
    }
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `Authorization: Bearer <api key>` (public and playground routes).
    ApiKey,
    /// The configured [`crate::config::DashboardAuth`] (dashboard routes).
    Dashboard,
    /// Nothing (signed media links carry their own authorization).
    None,
}

/// One request, as the retry loop resends it.
#[derive(Debug)]
pub(crate) struct RequestSpec {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) auth: Auth,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) max_bytes: usize,
}

/// A successful answer, read in full.
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) attempts: u32,
}

impl Raw {
    pub(crate) fn request_id(&self) -> Option<String> {
        header_text(&self.headers, REQUEST_ID)
    }

    fn meta(&self, idempotency_key: Option<String>) -> ResponseMeta {
        ResponseMeta {
            status: self.status,
            request_id: self.request_id(),
            replayed: header_text(&self.headers, IDEMPOTENT_REPLAYED).as_deref() == Some("true"),
            rate_limit: RateLimit::from_headers(&self.headers),
            attempts: self.attempts,
            idempotency_key,
        }
    }

    /// A decode error for this answer.
    pub(crate) fn decode_error(&self, message: impl std::fmt::Display) -> Error {
        let mut message = message.to_string();
        truncate(&mut message, 300);
        Error::Decode {
            status: self.status,
            request_id: self.request_id(),
            message,
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

pub(crate) fn decode_json<T: DeserializeOwned>(raw: Raw) -> Result<T> {
    serde_json::from_slice(&raw.body).map_err(|e| raw.decode_error(e))
}

fn api_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let header_id = header_text(headers, REQUEST_ID);
    let retry_after = retry::retry_after(headers);
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ApiError {
            status,
            code: ErrorCode::parse(&b.code),
            message: b.error,
            request_id: Some(b.request_id).filter(|s| !s.is_empty()).or(header_id),
            retry_after,
        },
        Err(_) => ApiError {
            status,
            code: ErrorCode::Unknown(String::new()),
            message: format!("HTTP {status} without a creapic error body"),
            request_id: header_id,
            retry_after,
        },
    }
}

enum Read {
    TooLarge,
    Transport(reqwest::Error),
}

async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, Read> {
    let declared = response.content_length().unwrap_or(0);
    if declared > max as u64 {
        return Err(Read::TooLarge);
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(max));
    while let Some(chunk) = response.chunk().await.map_err(Read::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(Read::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A fresh `Idempotency-Key`: `creapic-rs-` and a UUID v7 (unique, time-ordered for logs).
fn new_idempotency_key() -> String {
    format!("creapic-rs-{}", uuid::Uuid::now_v7().simple())
}

fn check_idempotency_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_MAX_LEN
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            name: "idempotency_key",
            reason: format!("must be 1–{IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters"),
        })
    }
}

/// The `RateLimit-*` headers of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// `RateLimit-Limit`: the burst size.
    pub limit: u32,
    /// `RateLimit-Remaining`: requests left right now.
    pub remaining: u32,
    /// `RateLimit-Reset`: when the budget refills.
    pub reset: Duration,
}

impl RateLimit {
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let number = |name: &str| header_text(headers, name)?.trim().parse::<u64>().ok();
        Some(RateLimit {
            limit: u32::try_from(number("ratelimit-limit")?).unwrap_or(u32::MAX),
            remaining: u32::try_from(number("ratelimit-remaining")?).unwrap_or(u32::MAX),
            reset: Duration::from_secs(number("ratelimit-reset")?),
        })
    }
}

/// What the answer said besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseMeta {
    /// The status.
    pub status: StatusCode,
    /// The server's `x-request-id` (quote it to support).
    pub request_id: Option<String>,
    /// `Idempotent-Replayed: true`: this is the stored answer of an earlier identical request,
    /// which was charged then and not again now.
    pub replayed: bool,
    /// The key's rate-limit budget, on public routes.
    pub rate_limit: Option<RateLimit>,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
    /// The `Idempotency-Key` sent (POST only).
    pub idempotency_key: Option<String>,
}

/// A typed answer with its metadata; from [`Call::send_with_meta`].
#[derive(Debug, Clone)]
pub struct Response<T> {
    /// The body.
    pub body: T,
    /// Status, request id, replay flag, rate limit, attempts.
    pub meta: ResponseMeta,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A GET or DELETE, sent when awaited (or with [`Call::send_with_meta`]).
#[must_use = "a call does nothing until it is awaited"]
pub struct Call<'a, T> {
    client: &'a Client,
    spec: Result<RequestSpec>,
    decode: fn(Raw) -> Result<T>,
    _out: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Call<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Call");
        if let Ok(spec) = &self.spec {
            d.field("method", &spec.method)
                .field("path", &spec.url.path());
        }
        d.finish_non_exhaustive()
    }
}

impl<'a, T: Send + 'a> Call<'a, T> {
    /// Sends the call and returns the body.
    pub async fn send(self) -> Result<T> {
        self.send_with_meta().await.map(|r| r.body)
    }

    /// Sends the call and returns the body with the answer's metadata.
    pub async fn send_with_meta(self) -> Result<Response<T>> {
        let spec = self.spec?;
        let raw = self.client.execute(&spec).await?;
        let meta = raw.meta(spec.idempotency_key);
        let body = (self.decode)(raw)?;
        Ok(Response { body, meta })
    }
}

impl<'a, T: Send + 'a> IntoFuture for Call<'a, T> {
    type Output = Result<T>;
    type IntoFuture = BoxFuture<'a, Result<T>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A POST, sent when awaited. It carries an `Idempotency-Key` — generated when the call is
/// built, or set with [`PostCall::idempotency_key`] — that every retry repeats, so the server
/// runs (and charges) it at most once.
#[must_use = "a call does nothing until it is awaited"]
pub struct PostCall<'a, T> {
    call: Call<'a, T>,
}

impl<T> PostCall<'_, T> {
    /// The `Idempotency-Key` this call will send (keep it to resend the same call later).
    pub fn key(&self) -> Option<&str> {
        self.call
            .spec
            .as_ref()
            .ok()
            .and_then(|s| s.idempotency_key.as_deref())
    }
}

impl<T> std::fmt::Debug for PostCall<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostCall")
            .field("call", &self.call)
            .field("idempotency_key", &self.key())
            .finish()
    }
}

impl<'a, T: Send + 'a> PostCall<'a, T> {
    /// Use this `Idempotency-Key` (1–200 visible ASCII characters) instead of a generated one —
    /// e.g. your own order id, so that even a retry from a restarted process is not charged
    /// again. The same key with a different body is answered `idempotency_conflict`.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        if let Ok(spec) = &mut self.call.spec {
            match check_idempotency_key(&key) {
                Ok(()) => spec.idempotency_key = Some(key),
                Err(e) => self.call.spec = Err(e),
            }
        }
        self
    }

    /// Sends the call and returns the body.
    pub async fn send(self) -> Result<T> {
        self.call.send().await
    }

    /// Sends the call and returns the body with the answer's metadata (e.g.
    /// [`ResponseMeta::replayed`]).
    pub async fn send_with_meta(self) -> Result<Response<T>> {
        self.call.send_with_meta().await
    }
}

impl<'a, T: Send + 'a> IntoFuture for PostCall<'a, T> {
    type Output = Result<T>;
    type IntoFuture = BoxFuture<'a, Result<T>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.call.send())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_fresh_and_overrides_are_checked() {
        let a = new_idempotency_key();
        let b = new_idempotency_key();
        assert_ne!(a, b);
        assert!(check_idempotency_key(&a).is_ok());
        assert!(check_idempotency_key("order-42").is_ok());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key(&"k".repeat(201)).is_err());
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_segments() {
        let client = Client::builder()
            .base_url("http://127.0.0.1:1/prefix/")
            .build()
            .expect("client");
        assert_eq!(
            client
                .endpoint(&["api", "playground", "images", "a/b?c"])
                .as_str(),
            "http://127.0.0.1:1/prefix/api/playground/images/a%2Fb%3Fc"
        );
        let bare = Client::builder()
            .base_url("http://127.0.0.1:1")
            .build()
            .expect("client");
        assert_eq!(
            bare.endpoint(&["api", "keys"]).as_str(),
            "http://127.0.0.1:1/api/keys"
        );
    }

    #[test]
    fn error_answers_without_a_creapic_body_keep_status_and_header_id() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        let e = api_error(StatusCode::SERVICE_UNAVAILABLE, &h, b"<html>busy</html>");
        assert_eq!(e.code, ErrorCode::Unknown(String::new()));
        assert_eq!(e.request_id.as_deref(), Some("abc"));
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        let body = br#"{"error":"Invalid API key","code":"invalid_api_key","requestId":"r9"}"#;
        let e = api_error(StatusCode::UNAUTHORIZED, &h, body);
        assert_eq!(
            (e.code, e.message.as_str(), e.request_id.as_deref()),
            (ErrorCode::InvalidApiKey, "Invalid API key", Some("r9"))
        );
        let mut long = "é".repeat(400);
        truncate(&mut long, 301);
        assert!(long.len() <= 304 && long.ends_with('…'));
    }
}
