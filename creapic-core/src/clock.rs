//! Time: the [`Timestamp`] type and the [`Clock`] trait every piece of core logic reads time from.
//!
//! Core never calls `SystemTime::now()` itself. Services take a `Clock`, so tests drive time with
//! a [`ManualClock`] and leases, retention and last-used flushing are deterministic. Timestamps are
//! whole milliseconds since the Unix epoch: what every backend stores losslessly as a 64-bit integer.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

/// A point in time, in milliseconds since 1970-01-01T00:00:00Z (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// The latest representable instant that still formats as RFC 3339 (9999-12-31T23:59:59.999Z).
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_unix_ms(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// This instant plus `d`, saturating at the end of representable time.
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// This instant minus `d`, saturating at the start of representable time.
    pub fn minus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(ms))
    }

    /// The time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let ms = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-25T16:39:23.123Z`.
    pub fn to_rfc3339(self) -> String {
        let clamped = self.0.clamp(0, MAX_RFC3339_MS);
        let nanos = i128::from(clamped) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(dt) => {
                // Written digit by digit into a fixed buffer: this runs for every timestamp of
                // every response, and `format!` costs several times as much.
                let mut out = *b"0000-00-00T00:00:00.000Z";
                let mut put = |at: usize, width: usize, value: u32| {
                    let mut v = value;
                    for i in (at..at + width).rev() {
                        // `v % 10` < 10: the cast cannot truncate.
                        out[i] = b'0' + (v % 10) as u8;
                        v /= 10;
                    }
                };
                // The clamp keeps the year in 1970..=9999.
                put(0, 4, u32::try_from(dt.year()).unwrap_or(0));
                put(5, 2, u32::from(u8::from(dt.month())));
                put(8, 2, u32::from(dt.day()));
                put(11, 2, u32::from(dt.hour()));
                put(14, 2, u32::from(dt.minute()));
                put(17, 2, u32::from(dt.second()));
                put(20, 3, u32::from(dt.millisecond()));
                // Only ASCII digits and separators were written.
                String::from_utf8(out.to_vec()).unwrap_or_default()
            }
            // Unreachable for the clamped range; keep a defined answer rather than a panic.
            Err(_) => String::from("1970-01-01T00:00:00.000Z"),
        }
    }

    /// Parses RFC 3339 (`2026-11-25T16:39:23Z`, with optional fraction and offset) or a plain
    /// date (`2026-11-25`, meaning midnight UTC).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.len() > 64 {
            return Err(Error::invalid("timestamp", "longer than 64 characters"));
        }
        let parsed = if text.len() == 10 {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(text, &format).map(|d| d.midnight().assume_utc())
        } else {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        };
        let dt = parsed.map_err(|e| Error::invalid("timestamp", e.to_string()))?;
        let ms = dt.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms)
            .map(Timestamp)
            .map_err(|_| Error::invalid("timestamp", "out of range"))
    }
}

impl std::fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that only moves when told to: for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now_ms: AtomicI64::new(start.0),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.now_ms.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        let t = Timestamp::from_unix_ms(1_764_088_763_123);
        assert_eq!(t.to_rfc3339(), "2025-11-25T16:39:23.123Z");
        assert_eq!(Timestamp::parse(&t.to_rfc3339()).ok(), Some(t));
        assert_eq!(
            Timestamp::parse("2025-11-25").ok(),
            Some(Timestamp::from_unix_ms(1_764_028_800_000))
        );
        assert_eq!(
            Timestamp::parse("2025-11-25T17:39:23.123+01:00").ok(),
            Some(t)
        );
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse(&"9".repeat(100)).is_err());
    }

    #[test]
    fn arithmetic_saturates_instead_of_overflowing() {
        let t = Timestamp::from_unix_ms(i64::MAX - 1);
        assert_eq!(t.plus(Duration::from_secs(10)).unix_ms(), i64::MAX);
        assert_eq!(Timestamp::EPOCH.since(t), Duration::ZERO);
        assert_eq!(
            Timestamp::from_unix_ms(i64::MIN + 1)
                .minus(Duration::from_secs(1))
                .unix_ms(),
            i64::MIN
        );
        // Out-of-range instants still format instead of panicking.
        assert_eq!(
            Timestamp::from_unix_ms(i64::MAX).to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
    }

    proptest::proptest! {
        /// The digit-by-digit formatter agrees with `time`'s own RFC 3339 output (truncated to
        /// milliseconds) and parses back to the same instant, over the whole formattable range.
        #[test]
        fn rfc3339_agrees_with_the_time_crate(ms in 0i64..=MAX_RFC3339_MS) {
            let t = Timestamp::from_unix_ms(ms);
            let text = t.to_rfc3339();
            let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let reference = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                dt.year(), u8::from(dt.month()), dt.day(),
                dt.hour(), dt.minute(), dt.second(), dt.millisecond()
            );
            proptest::prop_assert_eq!(&text, &reference);
            proptest::prop_assert_eq!(Timestamp::parse(&text).ok(), Some(t));
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_unix_ms(1_000));
        assert_eq!(clock.now().unix_ms(), 1_000);
        clock.advance(Duration::from_millis(500));
        assert_eq!(clock.now().unix_ms(), 1_500);
    }
}
