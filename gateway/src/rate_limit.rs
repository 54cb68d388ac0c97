//! A per-client token bucket for the login endpoints (start, callback, hand-off, begin,
//! logout): each one costs the identity provider, the API server or a signature, and a flood of
//! forged callbacks must not be free.
//!
//! A client is its address as the gateway already determines it ([`crate::http::client_ip`]:
//! the peer, or what a configured trusted proxy says), grouped like the connection limit (an
//! IPv4 address, an IPv6 /64). Memory is bounded: at most `clients` buckets are kept; a full
//! bucket is the same as none and is dropped first, then the least recently used.
//! Time is passed in, never read here.

use portcullis_runtime::server::client_key;
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How fast each client may call the login endpoints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
    /// Most clients remembered at once.
    pub clients: usize,
}

/// The login endpoints' limiter.
pub struct RateLimit {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens after refilling until `now`, capped at the burst.
    fn refilled(self, rate: &Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst))
    }
}

impl RateLimit {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `client`'s bucket; when it is empty, how long until it holds one.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = client_key(client);
        let rate = &self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= rate.clients {
            make_room(&mut buckets, rate, now);
        }
        let fresh = Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        };
        let bucket = buckets.entry(key).or_insert(fresh);
        let tokens = bucket.refilled(rate, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            return Ok(());
        }
        *bucket = Bucket { tokens, at: now };
        let wait = (1.0 - tokens) / rate.per_second;
        Err(Duration::from_secs_f64(wait.clamp(0.0, 86_400.0)))
    }
}

/// Frees room for a new client: drops every bucket that has refilled (as good as absent), and
/// when that is not enough, the least recently used quarter.
fn make_room(buckets: &mut HashMap<IpAddr, Bucket>, rate: &Rate, now: Instant) {
    let burst = f64::from(rate.burst);
    buckets.retain(|_, bucket| bucket.refilled(rate, now) < burst);
    if buckets.len() < rate.clients {
        return;
    }
    let mut by_age: Vec<(Instant, IpAddr)> = buckets.iter().map(|(k, b)| (b.at, *k)).collect();
    let evict = (rate.clients / 4).max(1).min(by_age.len());
    by_age.select_nth_unstable_by_key(evict - 1, |(at, _)| *at);
    for (_, key) in &by_age[..evict] {
        buckets.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn limit(per_second: f64, burst: u32, clients: usize) -> RateLimit {
        RateLimit::new(Rate {
            per_second,
            burst,
            clients,
        })
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_the_time_to_wait() {
        let limit = limit(2.0, 3, 100);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(limit.take(ip("192.0.2.1"), t).is_ok());
        }
        let wait = limit.take(ip("192.0.2.1"), t).expect_err("limited");
        assert_eq!(wait, Duration::from_millis(500));
        // Another client is unaffected.
        assert!(limit.take(ip("192.0.2.2"), t).is_ok());
    }

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_the_burst() {
        let limit = limit(1.0, 2, 100);
        let t = Instant::now();
        assert!(limit.take(ip("192.0.2.1"), t).is_ok());
        assert!(limit.take(ip("192.0.2.1"), t).is_ok());
        assert!(limit.take(ip("192.0.2.1"), t).is_err());
        let later = t + Duration::from_secs(1);
        assert!(limit.take(ip("192.0.2.1"), later).is_ok());
        assert!(limit.take(ip("192.0.2.1"), later).is_err());
        // A long pause refills to the burst, never beyond.
        let much_later = later + Duration::from_secs(3600);
        assert!(limit.take(ip("192.0.2.1"), much_later).is_ok());
        assert!(limit.take(ip("192.0.2.1"), much_later).is_ok());
        assert!(limit.take(ip("192.0.2.1"), much_later).is_err());
    }

    #[test]
    fn refused_requests_do_not_push_the_wait_further() {
        let limit = limit(1.0, 1, 100);
        let t = Instant::now();
        assert!(limit.take(ip("192.0.2.1"), t).is_ok());
        for _ in 0..100 {
            assert!(limit.take(ip("192.0.2.1"), t).is_err());
        }
        assert!(
            limit
                .take(ip("192.0.2.1"), t + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let limit = limit(1.0, 1, 100);
        let t = Instant::now();
        assert!(limit.take(ip("2001:db8:1:2::1"), t).is_ok());
        assert!(limit.take(ip("2001:db8:1:2::ffff"), t).is_err());
        assert!(limit.take(ip("2001:db8:1:3::1"), t).is_ok());
    }

    #[test]
    fn memory_stays_bounded_and_active_clients_are_kept_longest() {
        let limit = limit(1.0, 1, 64);
        let t = Instant::now();
        let active = ip("198.51.100.1");
        assert!(limit.take(active, t).is_ok());
        for i in 0..10_000u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let now = t + Duration::from_micros(u64::from(i));
            let _ = limit.take(client, now);
            if i % 8 == 0 {
                // The active client keeps being refused: its bucket is never dropped.
                assert!(limit.take(active, now).is_err(), "at {i}");
            }
            assert!(limit.buckets.lock().expect("lock").len() <= 64);
        }
    }
}
