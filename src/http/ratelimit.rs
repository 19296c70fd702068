//! Password-login throttling per client address: a token bucket per IP, so guessing
//! passwords is slow while a person or a test suite logging in now and then never notices.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts a client may make at once, and how fast it earns new ones.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    pub burst: u32,
    pub per_attempt: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { burst: 30, per_attempt: Duration::from_millis(500) }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Beyond this many tracked addresses, full buckets are forgotten (they equal a new one).
const MAX_TRACKED: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter { limit, buckets: Mutex::default() }
    }

    /// Takes one attempt for `ip` at `now`; false when it has none left.
    pub fn try_acquire(&self, ip: IpAddr, now: Instant) -> bool {
        let burst = f64::from(self.limit.burst);
        let rate = 1.0 / self.limit.per_attempt.as_secs_f64().max(1e-9);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > MAX_TRACKED {
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket { tokens: burst, at: now });
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_address() {
        let limiter = RateLimiter::new(RateLimit { burst: 3, per_attempt: Duration::from_secs(1) });
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.try_acquire(a, t0)));
        assert!(!limiter.try_acquire(a, t0), "burst used up");
        assert!(limiter.try_acquire(b, t0), "another address has its own bucket");
        assert!(!limiter.try_acquire(a, t0 + Duration::from_millis(900)));
        assert!(limiter.try_acquire(a, t0 + Duration::from_millis(1900)), "one earned back");
        assert!(!limiter.try_acquire(a, t0 + Duration::from_millis(1900)));
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| limiter.try_acquire(a, later)), "full again, never above burst");
        assert!(!limiter.try_acquire(a, later));
    }
}
