//! Time as a value.
//!
//! Nothing in Custody reads the system clock except the one adapter in `custody-app`; every
//! rule takes `now: Timestamp` and every service holds a [`Clock`]. Tests hold a
//! [`ManualClock`] and advance it, so a seven-day pickup window is tested in microseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch, UTC.
///
/// Milliseconds in an `i64` store identically in both database backends and cover ±292 million
/// years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// Milliseconds in a UTC day.
const DAY_MS: i64 = 86_400_000;

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// A timestamp from milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The UTC day it falls on, in days since the epoch: what a courier's code changes with.
    pub const fn utc_day(self) -> i64 {
        self.0.div_euclid(DAY_MS)
    }

    /// The start of UTC day `day` (days since the epoch).
    pub const fn utc_day_start(day: i64) -> Self {
        Self(day.saturating_mul(DAY_MS))
    }

    /// Whole seconds since the epoch (rounded down).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This time plus `d`, saturating at the end of representable time.
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(d)))
    }

    /// This time minus `d`, saturating at the start of representable time.
    #[must_use]
    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(d)))
    }

    /// How long after `earlier` this is; zero when it is not after.
    pub fn since(self, earlier: Self) -> Duration {
        let ms = self.0.saturating_sub(earlier.0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `n` days.
pub const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 60 * 60)
}

/// `n` hours.
pub const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 60 * 60)
}

/// `n` minutes.
pub const fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// Where services get the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A clock that moves only when told to: the test clock.
///
/// Clones share one time, so a test can hand a clone to the server and advance it from outside.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.as_millis())))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(duration_millis(d), Ordering::SeqCst);
    }

    /// Sets the clock to `t`, forwards or backwards (for clock-skew tests).
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::from_millis(i64::MAX - 5);
        assert_eq!(t.plus(days(1)), Timestamp::from_millis(i64::MAX));
        assert_eq!(Timestamp::from_millis(i64::MIN + 1).minus(days(1)).as_millis(), i64::MIN);
        assert_eq!(Timestamp::from_millis(10).since(Timestamp::from_millis(20)), Duration::ZERO);
        assert_eq!(Timestamp::from_millis(-1).as_secs(), -1);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let other = clock.clone();
        other.advance(minutes(2));
        assert_eq!(clock.now(), Timestamp::from_millis(121_000));
    }
}
