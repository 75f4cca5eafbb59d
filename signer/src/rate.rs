//! Rate limits: token buckets, one per connection and one for the whole signer. A signature
//! takes one token from each; a bucket refills at `rate` tokens a second up to `burst`. An
//! empty bucket refuses at once ([`crate::Refusal::RateLimited`]) rather than queueing, so a
//! compromised client learns nothing by waiting and cannot pile up work.

use std::time::Instant;

/// A rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Tokens per second.
    pub rate: f64,
    /// Bucket size.
    pub burst: f64,
}

/// One token bucket.
#[derive(Debug)]
pub struct Bucket {
    limit: Limit,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: Limit) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.rate).min(self.limit.burst);
        self.at = now;
    }

    /// Whether a token is there (without taking it).
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes a token; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        if !self.ready(now) {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::new(Limit {
            rate: 10.0,
            burst: 3.0,
        });
        let t0 = b.at;
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 0.1 s later: one more token, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // Long idle: refilled to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(t2)));
        assert!(!b.take(t2));
    }
}
