//! Rate limits against a hostile guest: a token bucket for the demands of one session, and a
//! limiter that keeps a flood of bad descriptors from flooding the log.

use std::time::{Duration, Instant};

/// Most demands a session may make in a burst.
pub const DEMAND_BURST: u32 = 1024;
/// Demands per second a session may keep up after its burst.
pub const DEMAND_RATE_PER_SEC: u32 = 2048;

/// A token bucket: up to `capacity` events at once, refilled at `per_sec` events per second.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(capacity: u32, per_sec: u32) -> Self {
        Self {
            capacity: f64::from(capacity),
            per_sec: f64::from(per_sec),
            tokens: f64::from(capacity),
            last: Instant::now(),
        }
    }

    /// The bucket for one guest session's demands.
    pub(crate) fn for_demands() -> Self {
        Self::new(DEMAND_BURST, DEMAND_RATE_PER_SEC)
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub(crate) fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token now.
    pub(crate) fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }
}

/// At most one log line per `interval`; the lines in between are counted and the next line
/// says how many were suppressed.
#[derive(Debug, Clone)]
pub(crate) struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// One line per second.
    pub(crate) fn per_second() -> Self {
        Self {
            interval: Duration::from_secs(1),
            last: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the number of lines suppressed
    /// since the last one, or `None` (this one is suppressed and counted).
    pub(crate) fn allow_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// [`Self::allow_at`] now.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(4, 10);
        b.last = t0;
        assert_eq!((0..10).filter(|_| b.take_at(t0)).count(), 4);
        // 100 ms refill one token at 10/s.
        assert!(b.take_at(t0 + Duration::from_millis(100)));
        assert!(!b.take_at(t0 + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take_at(later)).count(), 4);
        // A clock that goes backwards adds nothing.
        assert!(!b.take_at(t0));
    }

    #[test]
    fn the_log_limiter_lets_one_line_a_second_through_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = LogLimiter::per_second();
        assert_eq!(l.allow_at(t0), Some(0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(l.allow_at(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(l.allow_at(t0 + Duration::from_millis(1000)), Some(4));
        assert_eq!(l.allow_at(t0 + Duration::from_millis(1001)), None);
        assert_eq!(l.allow_at(t0 + Duration::from_secs(5)), Some(1));
    }
}
