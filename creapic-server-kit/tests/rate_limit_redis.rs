//! The Redis-backed limiter shares one budget between replicas (feature `redis`; needs Redis on
//! `REDIS_URL`, default `redis://127.0.0.1:6379` — unreachable Redis fails the test).

#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use creapic_core::id::KeyId;
use creapic_server_kit::RateLimitConfig;
use creapic_server_kit::http::rate_limit::{RateLimiter, RedisLimiter};

#[tokio::test]
async fn two_replicas_share_one_budget() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = RateLimitConfig {
        per_second: 3,
        burst: 2,
    };
    let prefix = format!("creapic-test:{}", uuid::Uuid::now_v7().simple());
    let a = RedisLimiter::connect(&url, &prefix, config)
        .await
        .expect("Redis is required");
    let b = RedisLimiter::connect(&url, &prefix, config)
        .await
        .expect("Redis is required");
    let key = KeyId::from_uuid(uuid::Uuid::now_v7());
    // Align to the start of a window so all ten checks land in the same second.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_nanos(u64::from(
        1_000_000_000 - now.subsec_nanos(),
    )))
    .await;
    let mut allowed = 0;
    for i in 0..10 {
        let replica: &RedisLimiter = if i % 2 == 0 { &a } else { &b };
        if replica.check(key).await.allowed {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 5,
        "per_second + burst requests per window, across both replicas"
    );
    let refused = a.check(key).await;
    assert!(!refused.allowed && refused.reset <= std::time::Duration::from_secs(1));
    let other = KeyId::from_uuid(uuid::Uuid::now_v7());
    assert!(b.check(other).await.allowed, "budgets are per key");
}
