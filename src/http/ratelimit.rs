//! Password-login throttling per client: a token bucket per client network, so guessing
//! passwords is slow while a person or a test suite logging in now and then never notices.
//!
//! A client is its IPv4 address, or the /64 of its IPv6 address (one host's usual share, in
//! which it can pick addresses freely); behind a reverse proxy, the address [`super::client`]
//! resolves.

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

impl RateLimit {
    /// How long an unused bucket takes to fill up again: after that it equals a new one.
    fn refill_time(&self) -> Duration {
        self.per_attempt.saturating_mul(self.burst.max(1))
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Beyond this many clients seen in one refill period, the older half of the memory is
/// dropped early: memory stays bounded, at the price of a flood of addresses refilling
/// some buckets sooner.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<Generations>,
}

/// Buckets used in this period and in the one before. A bucket not touched for a whole
/// period is full, so dropping the older map at each turn forgets nothing that matters,
/// and no login ever scans the map.
#[derive(Debug)]
struct Generations {
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
    turned: Option<Instant>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        let empty = Generations { current: HashMap::new(), previous: HashMap::new(), turned: None };
        RateLimiter { limit, buckets: Mutex::new(empty) }
    }

    /// Takes one attempt for the client at `ip` at `now`; false when it has none left.
    pub fn try_acquire(&self, ip: IpAddr, now: Instant) -> bool {
        let key = client_key(ip);
        let burst = f64::from(self.limit.burst);
        let rate = 1.0 / self.limit.per_attempt.as_secs_f64().max(1e-9);
        let mut g = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let turned = *g.turned.get_or_insert(now);
        if now.saturating_duration_since(turned) >= self.limit.refill_time() || g.current.len() >= MAX_TRACKED {
            g.previous = std::mem::take(&mut g.current);
            g.turned = Some(now);
        }
        let fresh = Bucket { tokens: burst, at: now };
        let old = g.previous.remove(&key);
        let bucket = g.current.entry(key).or_insert(old.unwrap_or(fresh));
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

/// The bucket a client address counts against: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refill_per_address() {
        let limiter = RateLimiter::new(RateLimit { burst: 3, per_attempt: Duration::from_secs(1) });
        let (a, b) = (ip("127.0.0.1"), ip("::1"));
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

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        let limiter = RateLimiter::new(RateLimit { burst: 2, per_attempt: Duration::from_secs(3600) });
        let t0 = Instant::now();
        assert!(limiter.try_acquire(ip("2001:db8:1:2::1"), t0));
        assert!(limiter.try_acquire(ip("2001:db8:1:2:ffff:1:2:3"), t0));
        assert!(!limiter.try_acquire(ip("2001:db8:1:2:abcd::9"), t0), "same /64");
        assert!(limiter.try_acquire(ip("2001:db8:1:3::1"), t0), "the next /64 is another client");
        // An IPv4-mapped address is the IPv4 client.
        assert!(limiter.try_acquire(ip("192.0.2.7"), t0));
        assert!(limiter.try_acquire(ip("::ffff:192.0.2.7"), t0));
        assert!(!limiter.try_acquire(ip("192.0.2.7"), t0));
    }

    #[test]
    fn a_bucket_in_use_survives_the_turn_of_generations() {
        let limit = RateLimit { burst: 2, per_attempt: Duration::from_secs(10) };
        let limiter = RateLimiter::new(limit);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (a, b) = (ip("198.51.100.1"), ip("198.51.100.2"));
        assert!(limiter.try_acquire(b, at(0)));
        assert!(limiter.try_acquire(a, at(19)) && limiter.try_acquire(a, at(19)));
        assert!(limiter.try_acquire(b, at(20)), "the generations turn here");
        // a's empty bucket moved to the older generation, it is not forgotten.
        assert!(!limiter.try_acquire(a, at(21)));
        assert!(limiter.try_acquire(a, at(29)), "one earned back");
        assert!(limiter.try_acquire(b, at(40)), "another turn");
        assert!(limiter.try_acquire(a, at(41)), "1.2 earned since 29 s");
        assert!(!limiter.try_acquire(a, at(41)), "not a fresh bucket");
        // Two more turns without a: its (full) bucket is forgotten.
        assert!(limiter.try_acquire(b, at(200)));
        assert!(limiter.try_acquire(b, at(220)));
        let g = limiter.buckets.lock().unwrap();
        assert_eq!((g.current.len(), g.previous.len()), (1, 0), "a's full bucket forgotten");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let limiter = RateLimiter::new(RateLimit::default());
        let t0 = Instant::now();
        for n in 0..(3 * MAX_TRACKED as u32) {
            limiter.try_acquire(IpAddr::V4(n.into()), t0);
        }
        let g = limiter.buckets.lock().unwrap();
        assert!(g.current.len() + g.previous.len() <= 2 * MAX_TRACKED);
    }
}
