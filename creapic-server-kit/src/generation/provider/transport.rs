//! The HTTP exchange every remote adapter (and the webhook sender) shares: a client with
//! timeouts and no redirects, a response body read under a byte limit, and the mapping of
//! transport failures and statuses onto typed errors.
//!
//! The design decision that shapes it: **a response is never trusted to be small.** The body is
//! read chunk by chunk and abandoned as soon as it passes the limit (a lying or missing
//! `Content-Length` changes nothing), so a misbehaving upstream costs at most the limit in memory.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};

use crate::generation::Error;

/// Timeouts, limits and rate-limit patience of one remote adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// The whole request, from connecting to the last byte of the body.
    pub timeout: Duration,
    /// Establishing the connection.
    pub connect_timeout: Duration,
    /// Largest response body read, in bytes; bigger is `ProviderInvalidResponse`.
    pub response_max_bytes: usize,
    /// How many times a rate-limited request (429) is retried after the delay the provider asked
    /// for. 0 disables it.
    pub rate_limit_retries_max: u32,
    /// Longest delay the adapter waits out itself; a longer one is returned to the caller as
    /// `ProviderRateLimited { retry_after }`.
    pub retry_delay_max: Duration,
    /// The wait when a 429 names no delay.
    pub retry_delay_default: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            // Base64 of a 4K PNG plus JSON framing stays well below this.
            response_max_bytes: 48 * 1024 * 1024,
            rate_limit_retries_max: 2,
            retry_delay_max: Duration::from_secs(30),
            retry_delay_default: Duration::from_secs(2),
        }
    }
}

/// A client with `settings`' timeouts that follows no redirects (an adapter talks to one
/// configured base URL and must never be bounced elsewhere with its API key).
#[cfg_attr(not(any(feature = "gemini", feature = "openai")), allow(dead_code))]
pub(crate) fn client(settings: &HttpSettings) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("creapic/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal {
            message: format!("HTTP client: {e}"),
        })
}

/// A response read in full (within the limit).
#[derive(Debug)]
#[cfg_attr(not(any(feature = "gemini", feature = "openai")), allow(dead_code))]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

fn transport_error(provider: &'static str, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::ProviderTimeout { provider }
    } else {
        // Never include the URL: self-hosted endpoints may carry credentials in it.
        let what = if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "the response body was cut off"
        } else {
            "request failed"
        };
        Error::ProviderUnavailable {
            provider,
            message: what.into(),
        }
    }
}

/// Sends `request` and reads the whole body, up to `max_bytes`.
pub(crate) async fn send(
    provider: &'static str,
    request: reqwest::RequestBuilder,
    max_bytes: usize,
) -> Result<Reply, Error> {
    let mut response = request
        .send()
        .await
        .map_err(|e| transport_error(provider, &e))?;
    let too_big = || Error::ProviderInvalidResponse {
        provider,
        message: format!("response exceeds {max_bytes} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(too_big());
    }
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(provider, &e))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        headers,
        body: body.freeze(),
    })
}

/// The error for a non-success status other than 429: 5xx and 408 are transient, the rest
/// (bad request, bad key, not found) are not. `detail` is the provider's own message.
pub(crate) fn status_error(provider: &'static str, status: StatusCode, detail: &str) -> Error {
    let message = format!("HTTP {}: {}", status.as_u16(), excerpt(detail));
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::GATEWAY_TIMEOUT {
        Error::ProviderTimeout { provider }
    } else if status.is_server_error() {
        Error::ProviderUnavailable { provider, message }
    } else {
        Error::ProviderFailed { provider, message }
    }
}

/// At most 300 bytes of `text`, cut at a character boundary.
pub(crate) fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Parses a protobuf JSON duration (`"12s"`, `"0.5s"`), bounded to a day.
#[cfg_attr(not(feature = "gemini"), allow(dead_code))]
pub(crate) fn parse_proto_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Parses `Retry-After` (seconds) or `retry-after-ms`, bounded to a day.
pub(crate) fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms.min(86_400_000)));
    }
    let secs = text("retry-after")?.trim().parse::<f64>().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Runs `attempt` again while it fails with `ProviderRateLimited` whose delay (or the default)
/// is at most `settings.retry_delay_max`, waiting that delay, at most
/// `settings.rate_limit_retries_max` times.
#[cfg_attr(not(any(feature = "gemini", feature = "openai")), allow(dead_code))]
pub(crate) async fn retry_rate_limited<T, F, Fut>(
    settings: &HttpSettings,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    use backon::{ConstantBuilder, Retryable};
    let backoff = ConstantBuilder::default()
        .with_delay(settings.retry_delay_default)
        .with_max_times(settings.rate_limit_retries_max as usize);
    let max = settings.retry_delay_max;
    let default = settings.retry_delay_default;
    (|| attempt())
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| match e {
            Error::ProviderRateLimited { retry_after, .. } => retry_after.unwrap_or(default) <= max,
            _ => false,
        })
        .adjust(|e, next| {
            next.map(|d| match e {
                Error::ProviderRateLimited {
                    retry_after: Some(wait),
                    ..
                } => *wait,
                _ => d,
            })
        })
        .notify(|e, wait| tracing::info!(error = %e, ?wait, "rate limited; waiting as asked"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_within_bounds() {
        assert_eq!(parse_proto_duration("12s"), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_proto_duration("0.25s"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_proto_duration("12"), None);
        assert_eq!(parse_proto_duration("-1s"), None);
        assert_eq!(parse_proto_duration("1e9s"), None);
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after_header(&h), Some(Duration::from_millis(150)));
    }

    #[test]
    fn statuses_are_classified() {
        let code = |s: u16| status_error("p", StatusCode::from_u16(s).unwrap(), "x").code();
        assert_eq!(code(500), "provider_unavailable");
        assert_eq!(code(503), "provider_unavailable");
        assert_eq!(code(504), "provider_timeout");
        assert_eq!(code(400), "provider_failed");
        assert_eq!(code(401), "provider_failed");
        assert_eq!(excerpt(&"é".repeat(400)).len(), 300);
    }
}
