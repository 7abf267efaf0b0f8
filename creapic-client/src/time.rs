//! The clock and the sleep the client waits with, behind one trait, [`Time`].
//!
//! Design decision: every wait of the client (a retry's backoff, a `Retry-After`, a waiter's
//! poll delay) goes through [`Time`], so tests run them on tokio's paused clock or with a fake
//! that records the waits and returns at once — deterministic, and no test sleeps for real.
//! The default, [`TokioTime`], uses `tokio::time`, which already obeys `tokio::time::pause()`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

/// A sleep in progress.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the client reads the time and how it sleeps.
pub trait Time: Send + Sync + std::fmt::Debug + 'static {
    /// Now, on a monotonic clock.
    fn now(&self) -> Instant;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// `tokio::time`: real time, or tokio's paused clock in tests that pause it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTime;

impl Time for TokioTime {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}
