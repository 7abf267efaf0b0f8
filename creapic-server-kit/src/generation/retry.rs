//! Which failures are worth another attempt, and how long to wait before it.
//!
//! The design decision that shapes it: **the classifier is one small named function over typed
//! errors** ([`is_transient`]), not string matching, and every retry loop is bounded in attempts
//! and in each wait ([`RetryPolicy`]). A blocked prompt, a bad request or a bad key fails at
//! once (trying again would be refused again, and the item is refunded); timeouts, 5xx, rate
//! limits and storage hiccups are retried with jittered exponential backoff, honouring a
//! provider's own `retry_after` up to the policy's longest wait.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use creapic_core::StoreErrorKind;

use crate::generation::Error;

/// Bounded retries with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (at least 1).
    pub attempts_max: u32,
    /// The first wait.
    pub delay_min: Duration,
    /// The longest wait (also caps a provider's `retry_after`).
    pub delay_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 3,
            delay_min: Duration::from_millis(500),
            delay_max: Duration::from_secs(10),
        }
    }
}

/// Whether another attempt may succeed: provider timeouts, rate limits, unavailability (5xx,
/// connection failures), media storage failures, and an unavailable store.
pub fn is_transient(e: &Error) -> bool {
    matches!(
        e,
        Error::ProviderTimeout { .. }
            | Error::ProviderRateLimited { .. }
            | Error::ProviderUnavailable { .. }
            | Error::Media { .. }
            | Error::Core(creapic_core::Error::Store {
                kind: StoreErrorKind::Unavailable,
                ..
            })
    )
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> Self {
        RetryPolicy {
            attempts_max: 1,
            ..RetryPolicy::default()
        }
    }

    /// Runs `attempt` until it succeeds, fails with a non-transient error, or the attempts are
    /// used up; returns the last error.
    pub async fn run<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let retries = self.attempts_max.max(1).saturating_sub(1) as usize;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.delay_min)
            .with_max_delay(self.delay_max)
            .with_max_times(retries)
            .with_jitter();
        let cap = self.delay_max;
        (|| attempt())
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(is_transient)
            .adjust(|e, next| {
                next.map(|d| match e.retry_after() {
                    Some(asked) => d.max(asked.min(cap)),
                    None => d,
                })
            })
            .notify(
                |e, wait| tracing::info!(what, error = %e, ?wait, "transient failure; retrying"),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts_max: attempts,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_a_bounded_number_of_times() {
        let calls = AtomicU32::new(0);
        let r: Result<(), Error> = fast(3)
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::ProviderTimeout { provider: "p" })
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), Error> = fast(3)
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::ProviderBlocked {
                    provider: "p",
                    reason: "SAFETY".into(),
                })
            })
            .await;
        assert_eq!(r.unwrap_err().code(), "provider_blocked");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "blocked prompts are final");

        calls.store(0, Ordering::SeqCst);
        let r = fast(3)
            .run("t", || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(Error::ProviderUnavailable {
                        provider: "p",
                        message: "503".into(),
                    })
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(RetryPolicy::none().attempts_max, 1);
    }
}
