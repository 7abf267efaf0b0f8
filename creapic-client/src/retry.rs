//! When the client retries a call and how long it waits first: [`RetryPolicy`] (bounded
//! exponential backoff with jitter, `Retry-After` honoured up to a bound) and the named
//! [`CLASSIFIERS`] that decide, in priority order, whether a failure is worth retrying.
//!
//! Design decision: retrying is safe for *every* call this client makes, because reads and
//! deletes are idempotent on the server and every POST carries an `Idempotency-Key` that stays
//! the same across retries (see [`crate::Client`]). So the classifiers only ask "could a retry
//! succeed?" — a broken connection, a timeout, 429, 502/503/504, or a duplicate still in
//! flight — never "could a retry charge twice?". The decision is a small table of named rules
//! (the AWS SDK's classifier habit) rather than ad-hoc `if`s, so a log line can say which rule
//! retried and a test can check each one.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::{Error, ErrorCode};

/// HTTP statuses retried whatever their body says: throttling and gateway failures.
pub const RETRYABLE_STATUSES: [StatusCode; 4] = [
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

/// Error codes never retried even under a retryable status: the answer would be the same.
pub const PERMANENT_CODES: [ErrorCode; 1] = [ErrorCode::ProviderBlocked];

/// What a classifier says about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// This classifier has no opinion; ask the next one.
    NoActionIndicated,
    /// Retry, for this reason.
    RetryIndicated(RetryKind),
    /// Do not retry, whatever later classifiers would say.
    RetryForbidden,
}

impl RetryAction {
    /// Whether the action is to retry.
    pub fn is_retry(self) -> bool {
        matches!(self, RetryAction::RetryIndicated(_))
    }
}

/// Why a failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// The connection failed or timed out.
    Transport,
    /// The server asked us to slow down (429).
    Throttled,
    /// A gateway or the server is temporarily unavailable (502, 503, 504).
    Unavailable,
    /// The same `Idempotency-Key` is still being processed (409 `idempotency_in_progress`):
    /// the retry will get the first request's stored answer.
    InProgress,
}

/// A named retry rule.
#[derive(Debug, Clone, Copy)]
pub struct Classifier {
    /// Its name, as logged when it decides.
    pub name: &'static str,
    /// The rule.
    pub classify: fn(&Error) -> RetryAction,
}

/// The rules, highest priority first; the first that indicates an action decides.
pub const CLASSIFIERS: &[Classifier] = &[
    Classifier {
        name: "permanent_code",
        classify: permanent_code,
    },
    Classifier {
        name: "transport",
        classify: transport,
    },
    Classifier {
        name: "retryable_status",
        classify: retryable_status,
    },
    Classifier {
        name: "idempotency_in_progress",
        classify: idempotency_in_progress,
    },
];

fn permanent_code(e: &Error) -> RetryAction {
    match e.api() {
        Some(api) if PERMANENT_CODES.contains(&api.code) => RetryAction::RetryForbidden,
        _ => RetryAction::NoActionIndicated,
    }
}

fn transport(e: &Error) -> RetryAction {
    match e {
        Error::Connect { .. } | Error::Timeout { .. } | Error::Transport { .. } => {
            RetryAction::RetryIndicated(RetryKind::Transport)
        }
        _ => RetryAction::NoActionIndicated,
    }
}

fn retryable_status(e: &Error) -> RetryAction {
    match e.api() {
        Some(api) if api.status == StatusCode::TOO_MANY_REQUESTS => {
            RetryAction::RetryIndicated(RetryKind::Throttled)
        }
        Some(api) if RETRYABLE_STATUSES.contains(&api.status) => {
            RetryAction::RetryIndicated(RetryKind::Unavailable)
        }
        _ => RetryAction::NoActionIndicated,
    }
}

fn idempotency_in_progress(e: &Error) -> RetryAction {
    match e.api() {
        Some(api) if api.code == ErrorCode::IdempotencyInProgress => {
            RetryAction::RetryIndicated(RetryKind::InProgress)
        }
        _ => RetryAction::NoActionIndicated,
    }
}

/// Runs the classifiers in order; returns the decision and the name of the rule that made it
/// (`"default"` when none had an opinion: no retry).
pub fn classify(e: &Error) -> (RetryAction, &'static str) {
    for c in CLASSIFIERS {
        match (c.classify)(e) {
            RetryAction::NoActionIndicated => continue,
            action => return (action, c.name),
        }
    }
    (RetryAction::NoActionIndicated, "default")
}

/// How often and how patiently the client retries. Every field is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_retry_after: Duration,
    jitter: bool,
}

/// The most retries a policy may allow: past it a failing call would wait for hours.
pub const MAX_RETRIES_LIMIT: u32 = 10;

impl Default for RetryPolicy {
    /// 3 retries; backoff 250 ms doubling to at most 8 s, with jitter; `Retry-After` honoured up
    /// to 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The default policy.
    pub fn new() -> Self {
        RetryPolicy::default()
    }

    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy::default().max_retries(0)
    }

    /// Retries after the first attempt (at most [`MAX_RETRIES_LIMIT`]).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n.min(MAX_RETRIES_LIMIT);
        self
    }

    /// The first backoff; each later one doubles, up to `max_backoff`.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// The longest backoff between two attempts.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// The longest `Retry-After` the client waits for; a server asking for more gets its error
    /// returned at once (with [`crate::ApiError::retry_after`] set) instead of a long sleep.
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// Randomize backoffs (on by default; off makes delays exact, for tests).
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The configured number of retries.
    pub fn retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait before retry number `retry` (1 for the first retry), or `None` if the server's
    /// `retry_after` exceeds `max_retry_after`. A `Retry-After` is waited for exactly: the
    /// server said when it will accept the request, and coming back earlier only costs another
    /// refusal. Otherwise the backoff is `initial · 2^(retry-1)` capped at `max_backoff`, with
    /// "equal jitter" (a random point in its upper half) so clients refused together do not
    /// come back together.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(wait) = retry_after {
            return (wait <= self.max_retry_after).then_some(wait);
        }
        let exp = retry.saturating_sub(1).min(31);
        let backoff = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        if !self.jitter || backoff.is_zero() {
            return Some(backoff);
        }
        let half = backoff / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        Some(half + Duration::from_nanos(rand::random_range(0..=spread)))
    }
}

/// Reads `Retry-After`: delay-seconds, or an HTTP date (relative to the system clock; a date in
/// the past means "now"). Unparseable values are ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()?;
    let now = time::OffsetDateTime::now_utc();
    Some(Duration::try_from(date - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use reqwest::header::HeaderValue;

    fn api(status: u16, code: &str) -> Error {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
        Error::Api(ApiError::new(status, ErrorCode::parse(code), "x"))
    }

    #[test]
    fn classifiers_decide_in_priority_order() {
        let timeout = Error::Timeout {
            timeout: Duration::from_secs(1),
            request_id: "r".into(),
        };
        let cases: Vec<(Error, bool, &str)> = vec![
            (timeout, true, "transport"),
            (api(429, "rate_limited"), true, "retryable_status"),
            (api(502, "provider_failed"), true, "retryable_status"),
            (api(502, "provider_blocked"), false, "permanent_code"),
            (api(503, ""), true, "retryable_status"),
            (api(504, "provider_timeout"), true, "retryable_status"),
            (
                api(409, "idempotency_in_progress"),
                true,
                "idempotency_in_progress",
            ),
            (api(409, "already_processed"), false, "default"),
            (api(500, "internal_error"), false, "default"),
            (api(402, "insufficient_credits"), false, "default"),
            (api(401, "invalid_api_key"), false, "default"),
            (
                Error::Decode {
                    status: StatusCode::OK,
                    request_id: None,
                    message: "x".into(),
                },
                false,
                "default",
            ),
        ];
        for (error, retry, rule) in cases {
            let (action, name) = classify(&error);
            assert_eq!((action.is_retry(), name), (retry, rule), "{error}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_stays_in_the_upper_half() {
        let exact = RetryPolicy::new()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(500))
            .jitter(false);
        let got: Vec<_> = (1..=5).map(|r| exact.delay(r, None)).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(got, vec![ms(100), ms(200), ms(400), ms(500), ms(500)]);
        let jittered = exact.jitter(true);
        for retry in 1..=5 {
            for _ in 0..50 {
                let d = jittered.delay(retry, None).unwrap_or_default();
                let full = exact.delay(retry, None).unwrap_or_default();
                assert!(d >= full / 2 && d <= full, "{d:?} vs {full:?}");
            }
        }
        assert_eq!(
            exact.delay(40, None),
            ms(500),
            "no overflow on many retries"
        );
    }

    #[test]
    fn retry_after_is_waited_exactly_within_its_bound() {
        let p = RetryPolicy::new().max_retry_after(Duration::from_secs(5));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(6))), None);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date is now");
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        assert_eq!(
            RetryPolicy::new().max_retries(99).retries(),
            MAX_RETRIES_LIMIT
        );
    }
}
