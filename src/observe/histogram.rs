//! Sharded counters and log-linear latency histograms, cheap enough for the hit path.
//!
//! Each worker thread writes to its own cache-line-padded shard (no contention between
//! workers); readers sum the shards. Histogram buckets are log-linear: four per power of two
//! from 1 µs to about 68 s, so any percentile read from them is within 19 % of the truth.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

const SHARDS: usize = 4;
/// Sub-buckets per power of two.
const SUB: u32 = 4;
/// Smallest tracked exponent: 2^10 ns ≈ 1 µs (everything below lands in bucket 0).
const MIN_EXP: u32 = 10;
/// Largest tracked exponent: 2^36 ns ≈ 68 s (everything above lands in the last bucket).
const MAX_EXP: u32 = 36;
/// Number of buckets.
pub const BUCKETS: usize = ((MAX_EXP - MIN_EXP) * SUB) as usize + 1;

fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS);
    SHARD.with(|s| *s)
}

#[repr(align(64))]
#[derive(Default)]
struct PaddedU64(AtomicU64);

/// A monotonic counter, sharded per thread.
#[derive(Default)]
pub struct Counter {
    shards: [PaddedU64; SHARDS],
}

impl Counter {
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counter({})", self.get())
    }
}

#[repr(align(64))]
struct HistShard {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for HistShard {
    fn default() -> Self {
        HistShard {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// A latency histogram, sharded per thread.
#[derive(Default)]
pub struct Histogram {
    shards: [HistShard; SHARDS],
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(count {})", self.snapshot().count())
    }
}

/// The bucket a duration falls in.
pub fn bucket_of(d: Duration) -> usize {
    let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
    if ns < (1 << MIN_EXP) {
        return 0;
    }
    let exp = 63 - ns.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((ns >> (exp - 2)) & 3) as u32;
    ((exp - MIN_EXP) * SUB + sub) as usize + 1
}

/// The upper bound of a bucket, in seconds (`+Inf` for the last).
pub fn bucket_upper_seconds(i: usize) -> f64 {
    if i == 0 {
        return (1u64 << MIN_EXP) as f64 / 1e9;
    }
    if i >= BUCKETS - 1 {
        return f64::INFINITY;
    }
    let k = (i - 1) as u32;
    let exp = MIN_EXP + k / SUB;
    let sub = u64::from(k % SUB);
    (((4 + sub + 1) << (exp - 2)) as f64) / 1e9
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let shard = &self.shards[shard()];
        shard.buckets[bucket_of(d)].fetch_add(1, Relaxed);
        shard
            .sum_ns
            .fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    /// The counts so far, summed over shards.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            buckets: vec![0; BUCKETS],
            sum_ns: 0,
        };
        for shard in &self.shards {
            for (total, b) in s.buckets.iter_mut().zip(&shard.buckets) {
                *total += b.load(Relaxed);
            }
            s.sum_ns += shard.sum_ns.load(Relaxed);
        }
        s
    }
}

/// Bucket counts at one moment; subtract two to get a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub buckets: Vec<u64>,
    pub sum_ns: u64,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            buckets: vec![0; BUCKETS],
            sum_ns: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What happened since `earlier`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
        }
    }

    /// The `q` quantile (0..=1) in seconds: the upper bound of the bucket holding it
    /// (the last finite bound for the overflow bucket); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = bucket_upper_seconds(i);
                return Some(if upper.is_finite() {
                    upper
                } else {
                    bucket_upper_seconds(BUCKETS - 2)
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bounded() {
        let mut last = 0.0;
        for i in 0..BUCKETS - 1 {
            let up = bucket_upper_seconds(i);
            assert!(up > last, "bucket {i}");
            last = up;
        }
        for us in [
            0u64, 1, 5, 999, 1000, 1500, 10_000, 123_456, 1_000_000, 70_000_000,
        ] {
            let d = Duration::from_micros(us);
            let i = bucket_of(d);
            assert!(
                d.as_secs_f64() <= bucket_upper_seconds(i),
                "{us} µs in bucket {i}"
            );
            if i > 0 && i < BUCKETS - 1 {
                assert!(
                    d.as_secs_f64() > bucket_upper_seconds(i - 1),
                    "{us} µs above bucket {}",
                    i - 1
                );
                assert!(
                    bucket_upper_seconds(i) / d.as_secs_f64() < 1.26,
                    "{us} µs: bucket too wide"
                );
            }
        }
    }

    #[test]
    fn quantiles_and_windows() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p50 = s.quantile(0.5).unwrap();
        assert!((0.050..0.063).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99).unwrap();
        assert!((0.099..0.125).contains(&p99), "{p99}");
        h.record(Duration::from_secs(2));
        let window = h.snapshot().since(&s);
        assert_eq!(window.count(), 1);
        assert!(window.quantile(0.5).unwrap() >= 2.0);
        assert_eq!(Snapshot::empty().quantile(0.5), None);
    }

    #[test]
    fn counters_sum_shards() {
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(), 4000);
    }
}
