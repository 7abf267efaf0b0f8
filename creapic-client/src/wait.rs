//! Waiters: poll a job or a scene render until it is finished, with exponential delays and
//! jitter between polls, a progress callback, and a typed [`ExceededMaxWait`] when it is not
//! finished in time.
//!
//! Design decision (the AWS SDK's waiters): a waiter is an operation (one poll) plus an
//! acceptor that reads each answer as *done* or *pending with this progress*, bounded by
//! [`WaitOptions`] — `min_delay`, `max_delay` and `max_wait`. Every sleep goes through the
//! client's [`Time`], so a test runs a ten-minute wait on a paused clock in microseconds. An
//! error from a poll (after the client's own retries) ends the wait: the waiter never turns a
//! 401 or a 404 into "still pending".

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::time::Time;

/// The bounds of a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    /// Give up after this long (the last poll happens at this deadline at the latest).
    pub max_wait: Duration,
    /// The first delay between two polls, and the least.
    pub min_delay: Duration,
    /// The longest delay between two polls.
    pub max_delay: Duration,
}

impl Default for WaitOptions {
    /// 15 minutes at most, polling after 1 s, then 2 s, 4 s, … up to every 20 s.
    fn default() -> Self {
        WaitOptions {
            max_wait: Duration::from_secs(15 * 60),
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl WaitOptions {
    /// Options with this `max_wait` and the default delays.
    pub fn max_wait(max_wait: Duration) -> Self {
        WaitOptions {
            max_wait,
            ..WaitOptions::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let reason = if self.min_delay.is_zero() {
            "min_delay must be greater than zero"
        } else if self.max_delay < self.min_delay {
            "max_delay must be at least min_delay"
        } else if self.max_wait.is_zero() {
            "max_wait must be greater than zero"
        } else {
            return Ok(());
        };
        Err(Error::InvalidArgument {
            name: "WaitOptions",
            reason: reason.into(),
        })
    }

    /// The delay before poll number `attempt + 1`: `min_delay · 2^(attempt-1)` capped at
    /// `max_delay`, jittered to a random point between `min_delay` and that value.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .min_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let spread = u64::try_from((ceiling - self.min_delay).as_nanos()).unwrap_or(u64::MAX);
        self.min_delay + Duration::from_nanos(rand::random_range(0..=spread))
    }
}

/// How far a job is: `completed` (and `failed`) of `total` items. A scene render is one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Items finished successfully.
    pub completed: u32,
    /// Items failed or canceled (their credits were refunded).
    pub failed: u32,
    /// Items in the job.
    pub total: u32,
}

/// A waiter gave up: the job was still pending when `max_wait` ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("still not finished after {elapsed:?} and {attempts} polls (max_wait {max_wait:?})")]
pub struct ExceededMaxWait {
    /// The bound that ran out.
    pub max_wait: Duration,
    /// How long the waiter waited.
    pub elapsed: Duration,
    /// How many polls it made.
    pub attempts: u32,
}

/// What an acceptor reads in one poll's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Finished (in whatever final state): stop and return the answer.
    Done(Progress),
    /// Not finished yet.
    Pending(Progress),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type PollFn<'a, T> = Box<dyn FnMut() -> BoxFuture<'a, Result<T>> + Send + 'a>;
type ProgressFn<'a> = Box<dyn FnMut(Progress) + Send + 'a>;

/// A wait in preparation: set a progress callback, then `.await` it.
///
/// ```no_run
/// # async fn run(client: creapic_client::Client) -> creapic_client::Result<()> {
/// use creapic_client::WaitOptions;
/// let job = client.playground().create(["A lighthouse at dawn"]).await?;
/// let done = client
///     .playground()
///     .wait_for_job(&job.job_id, WaitOptions::default())
///     .on_progress(|p| eprintln!("{}/{} images", p.completed + p.failed, p.total))
///     .await?;
/// println!("{:?}: {} generated", done.status, done.completed_images);
/// # Ok(()) }
/// ```
#[must_use = "a waiter does nothing until it is awaited"]
pub struct Wait<'a, T> {
    time: &'a dyn Time,
    options: WaitOptions,
    poll: PollFn<'a, T>,
    accept: fn(&T) -> Acceptance,
    on_progress: Option<ProgressFn<'a>>,
}

impl<T> std::fmt::Debug for Wait<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a, T: Send + 'a> Wait<'a, T> {
    /// A waiter that calls `poll` until `accept` says [`Acceptance::Done`].
    pub fn new<F, Fut>(
        time: &'a dyn Time,
        options: WaitOptions,
        mut poll: F,
        accept: fn(&T) -> Acceptance,
    ) -> Self
    where
        F: FnMut() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T>> + Send + 'a,
    {
        Wait {
            time,
            options,
            poll: Box::new(move || Box::pin(poll())),
            accept,
            on_progress: None,
        }
    }

    /// Calls `f` with the progress after every poll, including the last.
    pub fn on_progress(mut self, f: impl FnMut(Progress) + Send + 'a) -> Self {
        self.on_progress = Some(Box::new(f));
        self
    }

    async fn run(mut self) -> Result<T> {
        self.options.validate()?;
        let started = self.time.now();
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            let answer = (self.poll)().await?;
            let (done, progress) = match (self.accept)(&answer) {
                Acceptance::Done(p) => (true, p),
                Acceptance::Pending(p) => (false, p),
            };
            if let Some(f) = self.on_progress.as_mut() {
                f(progress);
            }
            if done {
                return Ok(answer);
            }
            let elapsed = self.time.now().saturating_duration_since(started);
            let remaining = self.options.max_wait.saturating_sub(elapsed);
            if remaining < self.options.min_delay {
                return Err(Error::ExceededMaxWait(ExceededMaxWait {
                    max_wait: self.options.max_wait,
                    elapsed,
                    attempts,
                }));
            }
            let delay = self.options.delay(attempts).min(remaining);
            tracing::trace!(attempts, ?delay, "waiting before the next poll");
            self.time.sleep(delay).await;
        }
    }
}

impl<'a, T: Send + 'a> IntoFuture for Wait<'a, T> {
    type Output = Result<T>;
    type IntoFuture = BoxFuture<'a, Result<T>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::TokioTime;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn accept(n: &u32) -> Acceptance {
        let p = Progress {
            completed: *n,
            failed: 0,
            total: 5,
        };
        if *n >= 5 {
            Acceptance::Done(p)
        } else {
            Acceptance::Pending(p)
        }
    }

    fn counter(calls: &Arc<AtomicU32>) -> impl FnMut() -> BoxFuture<'static, Result<u32>> {
        let calls = Arc::clone(calls);
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move { Ok(n) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn polls_with_growing_delays_until_done_and_reports_progress() {
        let calls = Arc::new(AtomicU32::new(0));
        let options = WaitOptions {
            max_wait: Duration::from_secs(600),
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
        };
        let mut seen = Vec::new();
        let start = tokio::time::Instant::now();
        let got = Wait::new(&TokioTime, options, counter(&calls), accept)
            .on_progress(|p| seen.push(p.completed))
            .await;
        assert_eq!(got.ok(), Some(5));
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
        // Four delays, each within [min_delay, min(min·2^(n-1), max_delay)].
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(4), "{waited:?}");
        assert!(waited <= Duration::from_secs(1 + 2 + 4 + 4), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_max_wait_with_a_typed_error() {
        let calls = Arc::new(AtomicU32::new(0));
        let never = |_: &u32| Acceptance::Pending(Progress::default());
        let options = WaitOptions {
            max_wait: Duration::from_secs(30),
            min_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(8),
        };
        let start = tokio::time::Instant::now();
        let err = Wait::new(&TokioTime, options, counter(&calls), never)
            .await
            .err();
        let Some(Error::ExceededMaxWait(e)) = err else {
            panic!("expected ExceededMaxWait, got {err:?}");
        };
        assert_eq!(e.max_wait, options.max_wait);
        assert!(e.elapsed <= options.max_wait, "never waits past max_wait");
        assert!(e.elapsed + options.min_delay > options.max_wait);
        assert_eq!(e.attempts, calls.load(Ordering::SeqCst));
        assert!(e.attempts >= 30 / 8 && e.attempts <= 30 / 2 + 1, "{e:?}");
        assert_eq!(start.elapsed(), e.elapsed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_error_ends_the_wait_and_bad_options_are_refused() {
        let poll = || async {
            Err::<u32, _>(Error::InvalidArgument {
                name: "x",
                reason: "boom".into(),
            })
        };
        let err = Wait::new(&TokioTime, WaitOptions::default(), poll, accept).await;
        assert_eq!(
            err.err().map(|e| e.code().to_owned()).as_deref(),
            Some("invalid_argument")
        );
        for bad in [
            WaitOptions {
                min_delay: Duration::ZERO,
                ..WaitOptions::default()
            },
            WaitOptions {
                max_delay: Duration::from_millis(1),
                ..WaitOptions::default()
            },
            WaitOptions::max_wait(Duration::ZERO),
        ] {
            let calls = Arc::new(AtomicU32::new(0));
            let r = Wait::new(&TokioTime, bad, counter(&calls), accept).await;
            assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{bad:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing polled");
        }
    }
}
