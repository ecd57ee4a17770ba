//! Memory per object of a compact object store, measured with the system allocator:
//!
//! - each object one allocation: `[count 8 B | header H B | key | body]`, the header's first
//!   8 bytes the key's hash (for the index to rehash);
//! - an index of one word per object (`hashbrown::HashTable<usize>`, as torii's own map
//!   would hold a pointer), grown by doubling as objects arrive;
//! - one queue entry per object (`VecDeque<usize>`: an S3-FIFO-style eviction order).
//!
//! Prints (PSS after − PSS before) / N less the prototype's own list of owners (16 B per
//! object, which a real store would not have), and that less body + key: the per-object
//! overhead issue 21 budgets at 100 B. Keys are the scale harness's (`127.0.0.1:19481/obj/
//! 00000042`, 28 B), bodies 1 KiB.
//!
//!   layout [N (default 1000000)] [H (default 48)]

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};

fn pss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").expect("/proc/self/smaps_rollup");
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("a Pss line")
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).map_or(default, |a| {
        a.parse().unwrap_or_else(|_| {
            eprintln!("usage: layout [N] [H]");
            std::process::exit(2)
        })
    })
}

fn main() {
    let n = arg(1, 1_000_000);
    let h = arg(2, 48).max(8);
    let state = std::hash::RandomState::new();
    let body = vec![b'x'; 1024];
    let mut owners: Vec<Box<[u8]>> = Vec::with_capacity(n);
    let before = pss_kib();
    let mut index: hashbrown::HashTable<usize> = hashbrown::HashTable::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut key_bytes = 0;
    let hash_of = |o: &[u8]| u64::from_le_bytes(o[8..16].try_into().expect("8 bytes"));
    for i in 0..n {
        let key = format!("127.0.0.1:19481/obj/{i:08}");
        key_bytes += key.len();
        let mut hasher = state.build_hasher();
        hasher.write(key.as_bytes());
        let hash = hasher.finish();
        let mut v = Vec::with_capacity(8 + h + key.len() + body.len());
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&hash.to_le_bytes());
        v.resize(8 + h, 0);
        v.extend_from_slice(key.as_bytes());
        v.extend_from_slice(&body);
        owners.push(v.into_boxed_slice());
        index.insert_unique(hash, i, |&j| hash_of(&owners[j]));
        queue.push_back(i);
    }
    let after = pss_kib();
    // Less the owners' list: a fat pointer per object, which only the prototype has.
    let per = (after - before) as f64 * 1024.0 / n as f64 - 16.0;
    let payload = (key_bytes + n * body.len()) as f64 / n as f64;
    println!(
        "N {n}, header {h} B: {per:.0} B per object, body + key {payload:.0} B, overhead {:.0} B \
         (of it the index {:.1} B, the queue {:.1} B)",
        per - payload,
        hashbrown_bytes(index.capacity()) / n as f64,
        queue.capacity() as f64 * 8.0 / n as f64,
    );
    std::hint::black_box((&index, &queue, &owners));
}

/// A hashbrown table's bytes for `capacity` (7/8 of its buckets, a power of two): one
/// word and one control byte per bucket.
fn hashbrown_bytes(capacity: usize) -> f64 {
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets as f64 * 9.0
}
