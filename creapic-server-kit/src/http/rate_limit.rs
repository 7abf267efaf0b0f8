//! Per-key rate limits, behind one trait: [`InProcessLimiter`] (governor, GCRA) for one
//! process, and `RedisLimiter` (feature `redis`) for several replicas sharing a budget.
//!
//! A refusal becomes a 429 with `Retry-After`; every authorized response carries
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`. A limiter that cannot reach
//! its backend lets the request through (fail open) and logs it: the limiter protects capacity,
//! while credits — which it does not guard — are protected by the ledger.

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use creapic_core::id::KeyId;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter as Governor};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::RateLimitConfig;

/// The answer of a limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The burst size (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests left right now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// When a request will be accepted again (refusals) or the budget refills.
    pub reset: Duration,
}

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// 0–9 as header values, without an allocation (resets are mostly 1 s).
static DIGITS: [HeaderValue; 10] = [
    HeaderValue::from_static("0"),
    HeaderValue::from_static("1"),
    HeaderValue::from_static("2"),
    HeaderValue::from_static("3"),
    HeaderValue::from_static("4"),
    HeaderValue::from_static("5"),
    HeaderValue::from_static("6"),
    HeaderValue::from_static("7"),
    HeaderValue::from_static("8"),
    HeaderValue::from_static("9"),
];

fn number(n: u64) -> HeaderValue {
    match usize::try_from(n).ok().and_then(|i| DIGITS.get(i)) {
        Some(digit) => digit.clone(),
        None => HeaderValue::from(n),
    }
}

impl RateDecision {
    /// Writes the RateLimit headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let secs = self.reset.as_secs() + u64::from(self.reset.subsec_nanos() > 0);
        headers.insert(LIMIT, number(u64::from(self.limit)));
        headers.insert(REMAINING, number(u64::from(self.remaining)));
        headers.insert(RESET, number(secs));
    }
}

/// Decides whether a key may send another request now.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` and answers.
    async fn check(&self, key: KeyId) -> RateDecision;
}

type Keyed = Governor<
    KeyId,
    governor::state::keyed::DefaultKeyedStateStore<KeyId>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// An in-process GCRA limiter (governor), one budget per key.
pub struct InProcessLimiter {
    limiter: Keyed,
    config: RateLimitConfig,
    /// Requests seen; every 4096th checks the table's size (which locks every shard).
    checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for InProcessLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl InProcessLimiter {
    /// A limiter allowing `per_second` sustained and `burst` at once, per key.
    pub fn new(config: RateLimitConfig) -> Self {
        let per_second = NonZeroU32::new(config.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        InProcessLimiter {
            limiter: Governor::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            config,
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn check(&self, key: KeyId) -> RateDecision {
        let limit = self.config.burst.max(1);
        // Forget keys idle long enough to have a full budget again (bounds memory).
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(4096) && self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&key) {
            Ok(snapshot) => RateDecision {
                allowed: true,
                limit,
                remaining: snapshot.remaining_burst_capacity(),
                reset: Duration::from_secs(1),
            },
            Err(not_until) => RateDecision {
                allowed: false,
                limit,
                remaining: 0,
                reset: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }
}

#[cfg(feature = "redis")]
pub use self::redis_limiter::RedisLimiter;

#[cfg(feature = "redis")]
mod redis_limiter {
    //! A fixed-window counter in Redis shared by every replica: `INCR` + `PEXPIRE` in one
    //! atomic pipeline per request, keyed by key id and window number.

    use super::{RateDecision, RateLimitConfig, RateLimiter};
    use async_trait::async_trait;
    use creapic_core::id::KeyId;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A limiter whose budget several replicas share through Redis.
    pub struct RedisLimiter {
        conn: redis::aio::ConnectionManager,
        config: RateLimitConfig,
        prefix: String,
    }

    impl std::fmt::Debug for RedisLimiter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisLimiter")
                .field("config", &self.config)
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    impl RedisLimiter {
        /// Connects to `url` (`redis://127.0.0.1:6379`). Keys are namespaced by `prefix`.
        pub async fn connect(
            url: &str,
            prefix: &str,
            config: RateLimitConfig,
        ) -> Result<Self, crate::Error> {
            let client = redis::Client::open(url).map_err(|e| crate::Error::Internal {
                message: format!("redis url: {e}"),
            })?;
            let conn = redis::aio::ConnectionManager::new(client)
                .await
                .map_err(|e| crate::Error::Internal {
                    message: format!("redis connect: {e}"),
                })?;
            Ok(RedisLimiter {
                conn,
                config,
                prefix: prefix.to_owned(),
            })
        }
    }

    #[async_trait]
    impl RateLimiter for RedisLimiter {
        async fn check(&self, key: KeyId) -> RateDecision {
            // A one-second window admitting `per_second + burst` requests.
            let limit = self.config.per_second.max(1) + self.config.burst;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let window = now.as_secs();
            let reset = Duration::from_secs(1)
                .saturating_sub(Duration::from_nanos(u64::from(now.subsec_nanos())));
            let name = format!("{}:{}:{}", self.prefix, key, window);
            let mut conn = self.conn.clone();
            let counted: Result<(u64,), redis::RedisError> = redis::pipe()
                .atomic()
                .incr(&name, 1u64)
                .pexpire(&name, 2000)
                .ignore()
                .query_async(&mut conn)
                .await;
            match counted {
                Ok((n,)) => RateDecision {
                    allowed: n <= u64::from(limit),
                    limit,
                    remaining: u32::try_from(u64::from(limit).saturating_sub(n)).unwrap_or(0),
                    reset,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unreachable; allowing the request");
                    RateDecision {
                        allowed: true,
                        limit,
                        remaining: limit,
                        reset,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_past_its_burst_is_refused_with_a_wait_and_others_are_not() {
        let limiter = InProcessLimiter::new(RateLimitConfig {
            per_second: 1,
            burst: 3,
        });
        let rng = creapic_core::random::SeededRandom::new(1);
        let now = creapic_core::clock::Timestamp::from_unix_ms(1);
        let (a, b) = (KeyId::generate(now, &rng), KeyId::generate(now, &rng));
        for left in (0..3).rev() {
            let d = limiter.check(a).await;
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let refused = limiter.check(a).await;
        assert!(!refused.allowed);
        assert!(refused.reset > Duration::ZERO && refused.reset <= Duration::from_secs(1));
        assert!(limiter.check(b).await.allowed, "budgets are per key");
    }
}
