//! Job-completion webhooks, signed in the Standard Webhooks format and delivered with backoff.
//!
//! Each organization may register one endpoint (URL + `whsec_…` secret) through a
//! [`WebhookEndpoints`] directory the host provides. When the runner completes a job it enqueues
//! a `job.completed` event; a background sender posts it with the headers `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//! retrying failures with jittered exponential backoff up to a bounded number of attempts.
//!
//! The design decision that shapes it: **delivery is best-effort and never holds up a job.** The
//! job's state in the store is the truth (clients can always poll it); the webhook is a
//! notification on top. So events go through a bounded in-memory queue that drops (and logs) an
//! event rather than grow without limit, the message id is derived from the job (`msg_{job}`),
//! so that a receiver can deduplicate a redelivery, and a crash may lose an undelivered event.
//!
//! Endpoints are written by tenants, so two more rules hold. Deliveries reach public addresses
//! only unless the host allows more ([`WebhookConfig::destinations`], see [`destination`]): the
//! client's own resolver drops loopback, private, link-local and reserved addresses, so the
//! address connected to is the one checked (no DNS rebinding), and IP literals are checked
//! before the first attempt. And delivery is fair per tenant ([`fair`]): each organization has
//! its own lane of waiting events and at most [`WebhookConfig::org_concurrency_max`] deliveries
//! in flight, so one endpoint that never answers cannot take the shared slots.

pub mod destination;
mod fair;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use creapic_core::clock::{Clock, SystemClock};
use creapic_core::id::OrgId;
use creapic_core::job::Job;
use creapic_core::random::{OsRandom, RandomSource};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use self::destination::Destinations;
use crate::generation::Error;
use crate::generation::provider::transport;
use crate::generation::retry::RetryPolicy;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Largest webhook body, in bytes (a job summary is a few hundred).
pub const BODY_MAX_BYTES: usize = 16 * 1024;

/// A webhook signing secret (`whsec_` + base64 of 24 to 64 bytes). `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(Arc<SecretSlice<u8>>);

impl WebhookSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = |message: &str| Error::InvalidParameter {
            name: "webhook secret",
            message: message.into(),
        };
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| invalid("must start with whsec_"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| invalid("must be base64 after whsec_"))?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(invalid("must hold 24 to 64 bytes"));
        }
        Ok(WebhookSecret(Arc::new(SecretSlice::from(bytes))))
    }

    /// A fresh random secret of 32 bytes.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        OsRandom.fill(&mut bytes);
        WebhookSecret(Arc::new(SecretSlice::from(bytes)))
    }

    /// The secret as text, to show once to the organization that registers the endpoint.
    pub fn expose(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(self.0.expose_secret())
        )
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for a message: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag)
        )
    }

    /// Verifies a received message the way a receiver should: the timestamp within
    /// `tolerance` of `now` (Unix seconds), and one of the space-separated `v1,` signatures
    /// matching (in constant time).
    pub fn verify(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: i64,
        tolerance: Duration,
    ) -> Result<(), Error> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(Error::WebhookFailed {
                    message: format!("missing {name}"),
                })
        };
        let id = header("webhook-id")?;
        let timestamp: i64 =
            header("webhook-timestamp")?
                .parse()
                .map_err(|_| Error::WebhookFailed {
                    message: "bad webhook-timestamp".into(),
                })?;
        if now.abs_diff(timestamp) > tolerance.as_secs() {
            return Err(Error::WebhookFailed {
                message: "timestamp outside the tolerance".into(),
            });
        }
        let ok = header("webhook-signature")?
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .any(|tag| self.mac(id, timestamp, body).verify_slice(&tag).is_ok());
        if ok {
            Ok(())
        } else {
            Err(Error::WebhookFailed {
                message: "no matching signature".into(),
            })
        }
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Where an organization's events go.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// An `http` or `https` URL.
    pub url: url::Url,
    /// The signing secret.
    pub secret: WebhookSecret,
}

impl WebhookEndpoint {
    /// Checks the scheme (`http` or `https`) and that the URL has a host. Where it points is
    /// checked when events are delivered (and by [`WebhookEndpoint::check_destination`], which
    /// a host should call when a tenant registers the endpoint, to refuse it at once).
    pub fn new(url: &str, secret: WebhookSecret) -> Result<Self, Error> {
        let url = url::Url::parse(url).map_err(|e| Error::InvalidParameter {
            name: "webhook url",
            message: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::InvalidParameter {
                name: "webhook url",
                message: "must be an http or https URL with a host".into(),
            });
        }
        Ok(WebhookEndpoint { url, secret })
    }

    /// Refuses (400 `invalid_parameter`) a URL whose host is, or resolves only to, an address
    /// `destinations` does not allow.
    pub async fn check_destination(&self, destinations: Destinations) -> Result<(), Error> {
        destination::check(&self.url, destinations)
            .await
            .map_err(|e| Error::InvalidParameter {
                name: "webhook url",
                message: match e {
                    Error::WebhookFailed { message } => message,
                    other => other.to_string(),
                },
            })
    }
}

/// The directory of organizations' endpoints (a host may keep it in its database).
#[async_trait]
pub trait WebhookEndpoints: Send + Sync + std::fmt::Debug + 'static {
    /// The endpoint of `org`, if it registered one.
    async fn endpoint(&self, org: OrgId) -> Result<Option<WebhookEndpoint>, Error>;
}

/// An in-memory directory.
#[derive(Debug, Default)]
pub struct StaticEndpoints {
    map: RwLock<HashMap<OrgId, WebhookEndpoint>>,
}

impl StaticEndpoints {
    /// An empty directory.
    pub fn new() -> Self {
        StaticEndpoints::default()
    }

    /// Registers (or replaces) the endpoint of `org`.
    pub fn set(&self, org: OrgId, endpoint: WebhookEndpoint) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.insert(org, endpoint);
    }

    /// Removes the endpoint of `org`.
    pub fn remove(&self, org: OrgId) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.remove(&org);
    }
}

#[async_trait]
impl WebhookEndpoints for StaticEndpoints {
    async fn endpoint(&self, org: OrgId) -> Result<Option<WebhookEndpoint>, Error> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(&org).cloned())
    }
}

/// Delivery limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Events waiting for delivery; when full, new events are dropped (and logged).
    pub queue_max: usize,
    /// Events of one organization waiting for delivery; past it, its new events are dropped
    /// (and logged), so one tenant's burst cannot fill the shared queue.
    pub org_queue_max: usize,
    /// Deliveries in flight at once (so one slow receiver cannot hold up the others).
    pub concurrency_max: usize,
    /// Deliveries of one organization in flight at once: a receiver that never answers holds
    /// at most this many of the [`WebhookConfig::concurrency_max`] slots.
    pub org_concurrency_max: usize,
    /// Attempts and waits per event.
    pub retry: RetryPolicy,
    /// One attempt, connect to last byte.
    pub timeout: Duration,
    /// Which addresses deliveries may connect to: public ones only by default.
    pub destinations: Destinations,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            queue_max: 1024,
            org_queue_max: 128,
            concurrency_max: 8,
            org_concurrency_max: 2,
            destinations: Destinations::PublicOnly,
            retry: RetryPolicy {
                attempts_max: 6,
                delay_min: Duration::from_secs(1),
                delay_max: Duration::from_secs(60),
            },
            timeout: Duration::from_secs(10),
        }
    }
}

/// One event to deliver.
#[derive(Debug, Clone)]
pub struct Event {
    /// The organization whose endpoint receives it.
    pub org: OrgId,
    /// `webhook-id`: stable across redeliveries.
    pub id: String,
    /// The JSON body.
    pub body: bytes::Bytes,
}

impl Event {
    /// The `job.completed` event of a job in a terminal state.
    pub fn job_completed(job: &Job, at: creapic_core::clock::Timestamp) -> Self {
        let unit = job.unit_cost.get();
        let succeeded = job.succeeded() as u64;
        let failed = job.failed() as u64;
        let body = json!({
            "type": "job.completed",
            "timestamp": at.to_rfc3339(),
            "data": {
                "jobId": job.id.to_string(),
                "kind": job.kind.as_str(),
                "status": job.status.as_str(),
                "totalImages": job.items.len(),
                "succeeded": succeeded,
                "failed": failed,
                "creditsUsed": unit.saturating_mul(succeeded),
                "creditsRefunded": unit.saturating_mul(failed),
            },
        });
        Event {
            org: job.org,
            id: format!("msg_{}", job.id),
            body: bytes::Bytes::from(body.to_string()),
        }
    }
}

/// The background sender. Dropping it aborts deliveries in flight; [`WebhookSender::close`]
/// lets them finish first.
#[derive(Debug)]
pub struct WebhookSender {
    tx: Option<mpsc::Sender<Event>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A cheap handle to enqueue events.
#[derive(Debug, Clone)]
pub struct WebhookQueue {
    tx: mpsc::Sender<Event>,
}

impl WebhookQueue {
    /// Enqueues `event`; `false` (and a warning) when the queue is full or closed.
    pub fn enqueue(&self, event: Event) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "webhook queue full or closed; event dropped");
                false
            }
        }
    }
}

impl WebhookSender {
    /// Starts the sender on the current tokio runtime, reading endpoints from `endpoints` and
    /// time from the system clock.
    pub fn start(
        endpoints: Arc<dyn WebhookEndpoints>,
        config: WebhookConfig,
    ) -> Result<Self, Error> {
        WebhookSender::start_with_clock(endpoints, config, Arc::new(SystemClock))
    }

    /// [`WebhookSender::start`] with an injected clock (for `webhook-timestamp`).
    pub fn start_with_clock(
        endpoints: Arc<dyn WebhookEndpoints>,
        config: WebhookConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let settings = transport::HttpSettings {
            timeout: config.timeout,
            connect_timeout: config.timeout,
            response_max_bytes: 64 * 1024,
            ..transport::HttpSettings::default()
        };
        let client = client(&settings, config.destinations)?;
        let (tx, rx) = mpsc::channel(config.queue_max.max(1));
        let task = tokio::spawn(deliver_all(rx, endpoints, config, client, clock));
        Ok(WebhookSender {
            tx: Some(tx),
            task: Some(task),
        })
    }

    /// A handle to enqueue events.
    pub fn queue(&self) -> WebhookQueue {
        let tx = match &self.tx {
            Some(tx) => tx.clone(),
            // Closed: a queue whose receiver is gone refuses every event.
            None => mpsc::channel(1).0,
        };
        WebhookQueue { tx }
    }

    /// Stops accepting events and waits up to `grace` for queued deliveries; the rest are
    /// dropped. Other [`WebhookQueue`] handles must be dropped first for the queue to close.
    pub async fn close(mut self, grace: Duration) {
        drop(self.tx.take());
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for WebhookSender {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The delivery client: the shared transport's timeouts and no redirects, plus a resolver that
/// hands it only allowed addresses, and no proxy (a proxy would resolve names itself).
fn client(
    settings: &transport::HttpSettings,
    destinations: Destinations,
) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(destination::GuardedResolver { destinations }))
        .user_agent(concat!("creapic/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal {
            message: format!("webhook HTTP client: {e}"),
        })
}

/// The sender's loop: reads events into per-organization lanes while they have room, and keeps
/// up to `concurrency_max` deliveries in flight, handed out in turns ([`fair::FairQueue`]).
async fn deliver_all(
    mut rx: mpsc::Receiver<Event>,
    endpoints: Arc<dyn WebhookEndpoints>,
    config: WebhookConfig,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
) {
    let slots = config.concurrency_max.max(1);
    let mut lanes = fair::FairQueue::new(
        config.queue_max,
        config.org_queue_max,
        config.org_concurrency_max,
    );
    let mut in_flight = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, OrgId> = HashMap::new();
    let mut open = true;
    loop {
        while in_flight.len() < slots {
            let Some(event) = lanes.next() else {
                break;
            };
            let org = event.org;
            let (endpoints, client, clock) =
                (Arc::clone(&endpoints), client.clone(), Arc::clone(&clock));
            let task = in_flight.spawn(async move {
                if let Err(e) = deliver(&event, endpoints.as_ref(), &config, &client, &clock).await
                {
                    tracing::warn!(event = %event.id, error = %e, "webhook not delivered");
                }
            });
            running.insert(task.id(), org);
        }
        if !open && in_flight.is_empty() && lanes.is_empty() {
            break;
        }
        tokio::select! {
            received = rx.recv(), if open && !lanes.is_full() => match received {
                Some(event) => {
                    if let Err(why) = lanes.push(event) {
                        tracing::warn!(?why, "webhook lane full; event dropped");
                    }
                }
                None => open = false,
            },
            Some(finished) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                let id = match finished {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                if let Some(org) = running.remove(&id) {
                    lanes.done(org);
                }
            }
            else => break,
        }
    }
}

/// Delivers one event with retries; `Ok` also when the organization has no endpoint.
pub(crate) async fn deliver(
    event: &Event,
    endpoints: &dyn WebhookEndpoints,
    config: &WebhookConfig,
    client: &reqwest::Client,
    clock: &Arc<dyn Clock>,
) -> Result<(), Error> {
    let Some(endpoint) = endpoints.endpoint(event.org).await? else {
        return Ok(());
    };
    if event.body.len() > BODY_MAX_BYTES {
        return Err(Error::WebhookFailed {
            message: "event body exceeds the limit".into(),
        });
    }
    // Final, never retried: a refused destination stays refused. The client's resolver checks
    // again at every connection.
    destination::check(&endpoint.url, config.destinations).await?;
    config
        .retry
        .run("webhook", || async {
            let timestamp = clock.now().unix_ms().div_euclid(1000);
            let signature = endpoint.secret.sign(&event.id, timestamp, &event.body);
            let request = client
                .post(endpoint.url.clone())
                .header("content-type", "application/json")
                .header("webhook-id", &event.id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(event.body.clone());
            let reply = transport::send("webhook", request, 64 * 1024).await?;
            if reply.status.is_success() {
                Ok(())
            } else {
                // 5xx, 408 and 429 are transient (retried); other statuses are final.
                Err(if reply.status.as_u16() == 429 {
                    Error::ProviderRateLimited {
                        provider: "webhook",
                        retry_after: transport::retry_after_header(&reply.headers),
                    }
                } else {
                    transport::status_error("webhook", reply.status, "receiver refused")
                })
            }
        })
        .await
        .map_err(|e| match e {
            // The transport speaks of providers; say what failed here.
            Error::ProviderUnavailable { message, .. } | Error::ProviderFailed { message, .. } => {
                Error::WebhookFailed { message }
            }
            Error::ProviderTimeout { .. } => Error::WebhookFailed {
                message: "the receiver did not answer in time".into(),
            },
            Error::ProviderRateLimited { .. } => Error::WebhookFailed {
                message: "the receiver kept answering 429".into(),
            },
            other => other,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_sign_and_verify() {
        let secret = WebhookSecret::generate();
        let again = WebhookSecret::parse(&secret.expose()).unwrap();
        assert!(format!("{again:?}").contains("redacted"));
        let sig = secret.sign("msg_1", 1_700_000_000, b"{}");
        assert_eq!(sig, again.sign("msg_1", 1_700_000_000, b"{}"));
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        headers.insert("webhook-timestamp", "1700000000".parse().unwrap());
        headers.insert(
            "webhook-signature",
            format!("v1,bm9wZQ== {sig}").parse().unwrap(),
        );
        let tol = Duration::from_secs(300);
        assert!(again.verify(&headers, b"{}", 1_700_000_010, tol).is_ok());
        assert!(again.verify(&headers, b"{ }", 1_700_000_010, tol).is_err());
        assert!(again.verify(&headers, b"{}", 1_700_001_000, tol).is_err());
        assert!(
            WebhookSecret::generate()
                .verify(&headers, b"{}", 1_700_000_010, tol)
                .is_err()
        );
        // The Standard Webhooks reference vector.
        let reference = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            reference.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        for bad in ["whsec_", "nope", "whsec_!!!", "whsec_YWJj"] {
            assert!(WebhookSecret::parse(bad).is_err(), "{bad}");
        }
        assert!(WebhookEndpoint::new("ftp://x", WebhookSecret::generate()).is_err());
        assert!(WebhookEndpoint::new("https://hooks.example", WebhookSecret::generate()).is_ok());
    }
}
