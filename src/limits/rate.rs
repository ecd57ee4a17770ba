//! Per-route rate limits: a token bucket per client IP or header value.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::Request;
use tokio::time::Instant;

use crate::config::{RateKey, RateLimit};
use crate::error::ProxyError;
use crate::upstream::balance::hash64;

/// Buckets are spread over shards so workers rarely contend on one lock.
const SHARDS: usize = 16;
/// A shard holding more buckets than this drops the full (idle) ones.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one route's `rate_limit`. Kept across reloads that leave the route's
/// rate limit unchanged.
#[derive(Debug)]
pub struct RateLimiter {
    pub config: RateLimit,
    /// A std Mutex: held only to update one bucket, never across an await.
    shards: Vec<Mutex<HashMap<Vec<u8>, Bucket>>>,
}

impl RateLimiter {
    pub fn new(config: RateLimit) -> RateLimiter {
        RateLimiter {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes a token for `req` from `client`.
    ///
    /// # Errors
    /// `RateLimited` with the time until the next token when the bucket is empty.
    pub fn check<B>(&self, req: &Request<B>, client: IpAddr) -> Result<(), ProxyError> {
        let key: Vec<u8> = match &self.config.key {
            RateKey::ClientIp => client.to_canonical().to_string().into_bytes(),
            RateKey::Header(name) => req
                .headers()
                .get(name)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
        };
        self.take(key, Instant::now())
            .map_err(|retry_after| ProxyError::RateLimited { retry_after })
    }

    /// Takes a token from `key`'s bucket at `now`; `Err(wait)` when it is empty.
    pub fn take(&self, key: Vec<u8>, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.config.burst);
        let rps = self.config.rps;
        let shard = &self.shards[hash64(&key) as usize % SHARDS];
        let mut buckets = shard.lock().expect("poisoned");
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| b.tokens + (now - b.at).as_secs_f64() * rps < burst);
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + (now - b.at).as_secs_f64() * rps).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rps))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let rl = RateLimiter::new(RateLimit {
            rps: 2.0,
            burst: 3,
            key: RateKey::ClientIp,
        });
        let t = Instant::now();
        let k = || b"a".to_vec();
        for _ in 0..3 {
            assert!(rl.take(k(), t).is_ok());
        }
        let wait = rl.take(k(), t).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(rl.take(b"b".to_vec(), t).is_ok(), "keys are separate");
        // Half a second later, exactly one more token.
        let t = t + Duration::from_millis(500);
        assert!(rl.take(k(), t).is_ok());
        assert!(rl.take(k(), t).is_err());
        // A long pause refills to the burst, no more.
        let t = t + Duration::from_secs(60);
        let allowed = (0..10).filter(|_| rl.take(k(), t).is_ok()).count();
        assert_eq!(allowed, 3);
    }
}
