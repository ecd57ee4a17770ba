//! Hit-ratio comparison: `MemoryTier` (quick_cache, CLOCK-Pro/S3-FIFO style) against a
//! plain byte-bounded LRU of the same capacity, on Zipf-distributed key streams.
//!
//! Run: `cargo bench --bench hit_ratio` (plain `main`, prints a table; ~1 min on 2 cores).
//! Each miss inserts the object; the first 20 % of requests warm up and are not counted.
//! Capacity is a share of the working set's total bytes (sum of all distinct objects).
//! Sizes: "fixed" = 4 KiB bodies; "varied" = log-uniform 512 B .. 64 KiB per key.
//! "+30% 1-hit" mixes 30 % requests for never-repeated keys into the stream (a scan /
//! one-hit-wonder load as CDNs see) — the case LRU handles worst.
//!
//! Measured on the 2-core dev box (release build, quick_cache 0.7.0, 4 shards), hit ratio in %:
//!
//! ```text
//! workload                     keys    cap  memory-tier      lru    diff
//! zipf 0.9 fixed             100000     1%         46.0     34.2   +11.9
//! zipf 0.9 fixed             100000     5%         61.3     51.5    +9.8
//! zipf 0.9 fixed             100000    10%         68.5     60.5    +8.1
//! zipf 1.1 fixed             100000     1%         74.1     66.5    +7.6
//! zipf 1.1 fixed             100000     5%         84.2     79.3    +4.9
//! zipf 1.1 fixed             100000    10%         88.0     84.4    +3.6
//! zipf 0.9 varied            100000     1%         46.0     34.2   +11.8
//! zipf 0.9 varied            100000     5%         61.3     51.5    +9.8
//! zipf 0.9 varied            100000    10%         68.5     60.4    +8.1
//! zipf 0.9 +30% 1-hit        100000     1%         32.4     21.1   +11.3
//! zipf 0.9 +30% 1-hit        100000     5%         43.1     31.8   +11.3
//! zipf 0.9 +30% 1-hit        100000    10%         47.9     37.1   +10.8
//! zipf 0.9 fixed            1000000     1%         50.4     39.5   +10.9
//! zipf 0.9 fixed            1000000     5%         63.8     55.4    +8.4
//! zipf 0.9 fixed            1000000    10%         70.0     63.6    +6.3
//! zipf 1.1 fixed            1000000     1%         81.1     75.6    +5.5
//! zipf 1.1 fixed            1000000     5%         87.8     84.9    +2.9
//! zipf 1.1 fixed            1000000    10%         90.1     88.6    +1.5
//! ```
//!
//! "varied" matches "fixed": sizes are independent of popularity here, so the object
//! count held is the same on average.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use torii::cache::object::{CachedObject, ObjectMeta};
use torii::cache::tier::memory::{MemoryTier, MemoryTierOptions};

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Zipf(s) over ranks 0..n by inverse-CDF lookup.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Byte-bounded LRU: slab of nodes in an intrusive doubly linked list + hash map.
struct Lru {
    map: HashMap<u64, usize>,
    nodes: Vec<Node>,
    free: Vec<usize>,
    head: usize, // most recent
    tail: usize, // least recent
    bytes: u64,
    cap: u64,
}

struct Node {
    key: u64,
    size: u64,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

impl Lru {
    fn new(cap: u64) -> Self {
        Lru {
            map: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            cap,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.nodes[i].prev, self.nodes[i].next);
        if p == NIL {
            self.head = n
        } else {
            self.nodes[p].next = n
        }
        if n == NIL {
            self.tail = p
        } else {
            self.nodes[n].prev = p
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn get(&mut self, key: u64) -> bool {
        match self.map.get(&key) {
            Some(&i) => {
                self.unlink(i);
                self.push_front(i);
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, key: u64, size: u64) {
        if size > self.cap / 8 {
            return; // same admission limit as MemoryTier's default
        }
        while self.bytes + size > self.cap && self.tail != NIL {
            let t = self.tail;
            self.unlink(t);
            self.map.remove(&self.nodes[t].key);
            self.bytes -= self.nodes[t].size;
            self.free.push(t);
        }
        let node = Node {
            key,
            size,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.bytes += size;
    }
}

fn body_len(id: u64, varied: bool) -> usize {
    if !varied {
        return 4096;
    }
    // Deterministic log-uniform 512 B .. 64 KiB from a hash of the id.
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    let f = (h as f64) / ((1u64 << 53) as f64);
    (512.0 * 128f64.powf(f)) as usize
}

fn make_obj(id: u64, varied: bool) -> Arc<CachedObject> {
    let now = SystemTime::now();
    let key = format!("GET http://bench/{id}\n");
    Arc::new(CachedObject {
        meta: ObjectMeta::new(
            key,
            now,
            now,
            now + Duration::from_secs(3600),
            now + Duration::from_secs(7200),
        ),
        status: StatusCode::OK,
        headers: Default::default(),
        body: Bytes::from_static(&ZEROS[..body_len(id, varied)]),
        memo: Default::default(),
    })
}

struct Workload {
    name: &'static str,
    keys: usize,
    s: f64,
    varied: bool,
    one_hit_share: f64,
    requests: usize,
}

fn run(w: &Workload, pct: u64) -> (f64, f64) {
    let zipf = Zipf::new(w.keys, w.s);
    // Weight of every distinct object, measured the way the tier weighs it.
    let ws: u64 = (0..w.keys as u64)
        .map(|id| make_obj(id, w.varied).size() as u64)
        .sum();
    let cap = ws * pct / 100;
    let avg = ws / w.keys as u64;
    let tier = MemoryTier::with_options(
        cap,
        MemoryTierOptions {
            estimated_object_bytes: Some(avg),
            ..Default::default()
        },
    );
    let mut lru = Lru::new(cap);
    let mut rng = StdRng::seed_from_u64(42);
    let warmup = w.requests / 5;
    let (mut hits_t, mut hits_l, mut counted) = (0u64, 0u64, 0u64);
    let mut next_unique = w.keys as u64;
    for r in 0..w.requests {
        let id = if w.one_hit_share > 0.0 && rng.gen::<f64>() < w.one_hit_share {
            next_unique += 1;
            next_unique
        } else {
            zipf.sample(&mut rng) as u64
        };
        let key = format!("GET http://bench/{id}\n");
        let hit_t = tier.get(&key).is_some();
        let obj = if hit_t {
            None
        } else {
            Some(make_obj(id, w.varied))
        };
        let size = obj.as_ref().map_or(0, |o| o.size() as u64);
        if let Some(o) = obj {
            tier.insert(o);
        }
        let hit_l = lru.get(id);
        if !hit_l {
            let size = if size > 0 {
                size
            } else {
                make_obj(id, w.varied).size() as u64
            };
            lru.insert(id, size);
        }
        if r >= warmup {
            counted += 1;
            hits_t += u64::from(hit_t);
            hits_l += u64::from(hit_l);
        }
    }
    assert!(tier.weighted_bytes() <= cap + cap / 8);
    (
        100.0 * hits_t as f64 / counted as f64,
        100.0 * hits_l as f64 / counted as f64,
    )
}

fn main() {
    let w = |name, keys, s, varied, one_hit_share, requests| Workload {
        name,
        keys,
        s,
        varied,
        one_hit_share,
        requests,
    };
    // `cargo test --all-targets` runs this without `--bench`: a quick smoke run only.
    if !std::env::args().any(|a| a == "--bench") {
        let (t, l) = run(&w("smoke zipf 0.9", 10_000, 0.9, false, 0.0, 100_000), 10);
        println!("smoke run (cargo bench --bench hit_ratio for the table): memory tier {t:.1} %, lru {l:.1} %");
        return;
    }
    let workloads = [
        w("zipf 0.9 fixed", 100_000, 0.9, false, 0.0, 2_000_000),
        w("zipf 1.1 fixed", 100_000, 1.1, false, 0.0, 2_000_000),
        w("zipf 0.9 varied", 100_000, 0.9, true, 0.0, 2_000_000),
        w("zipf 0.9 +30% 1-hit", 100_000, 0.9, false, 0.3, 2_000_000),
        w("zipf 0.9 fixed", 1_000_000, 0.9, false, 0.0, 5_000_000),
        w("zipf 1.1 fixed", 1_000_000, 1.1, false, 0.0, 5_000_000),
    ];
    println!(
        "{:<24} {:>8} {:>6} {:>12} {:>8} {:>7}",
        "workload", "keys", "cap", "memory-tier", "lru", "diff"
    );
    for wl in &workloads {
        for pct in [1, 5, 10] {
            let (t, l) = run(wl, pct);
            println!(
                "{:<24} {:>8} {:>5}% {:>12.1} {:>8.1} {:>+7.1}",
                wl.name,
                wl.keys,
                pct,
                t,
                l,
                t - l
            );
        }
    }
}
