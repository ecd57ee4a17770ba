//! The memory tier: a byte-bounded concurrent cache of `Arc<CachedObject>` (quick_cache's
//! CLOCK-Pro/S3-FIFO-style policy) with a tag index for surrogate-key purges.
//!
//! # Policy
//! quick_cache keeps a small "cold" probation queue, a "hot" queue (97 % of the
//! weight) and ghost keys of recently evicted cold entries. A new key enters cold and
//! is only promoted if hit again before it is evicted, so one-hit wonders and scans
//! cannot flush the hot set as they do under LRU (see `benches/hit_ratio.rs`).
//!
//! # Concurrency and consistency
//! The cache is sharded (each shard a RwLock; hits take the read lock and flip a
//! reference bit). The tag index is a separate set of `Mutex<HashMap<tag, keys>>`
//! shards. Lock order is always cache shard -> tag shard (the eviction hook runs under
//! the cache shard lock); nothing takes a cache lock while holding a tag lock.
//! A key is added to the tag index *after* it is inserted into the cache and removed
//! after it left the cache, re-checking the cache afterwards, so the index never
//! misses a resident (key, tag); it may briefly hold dangling keys, which purges
//! verify against the object's own tags before removing anything.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use quick_cache::sync::{Cache, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use smallvec::SmallVec;

use crate::cache::clock::Clock;
use crate::cache::object::CachedObject;
use crate::cache::UrlMatch;

/// Number of tag-index shards.
const TAG_SHARDS: usize = 16;

/// Tuning knobs for [`MemoryTier::with_options`]; `Default` gives the documented defaults.
#[derive(Debug, Clone, Default)]
pub struct MemoryTierOptions {
    /// Largest object (by [`CachedObject::size`]) admitted. Default: `max_bytes / 8`.
    /// Always clamped to 90 % of one cache shard's capacity.
    pub max_object_bytes: Option<u64>,
    /// Expected average object size, used to size the maps and the ghost queue.
    /// Default: 16 KiB.
    pub estimated_object_bytes: Option<u64>,
    /// Number of cache shards (rounded to a power of two). Default: 4 x cores, lowered
    /// until each shard holds at least two objects of the maximum size.
    pub shards: Option<usize>,
    /// The wall clock expiry is judged by (the cache's, which tests advance).
    pub clock: Clock,
}

/// Counters kept by the tier (hits and misses are counted by the caller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Objects accepted by [`MemoryTier::insert`].
    pub inserts: u64,
    /// Objects refused by [`MemoryTier::insert`] for being larger than the object limit.
    pub rejected: u64,
    /// Objects evicted by the policy to make room (not removals or purges).
    pub evictions: u64,
    /// Objects removed by `remove`, purges, or because they were found expired.
    pub removals: u64,
}

#[derive(Clone)]
struct Slot {
    obj: Arc<CachedObject>,
    weight: u64,
}

#[derive(Clone)]
struct SlotWeighter;

impl Weighter<u64, Slot> for SlotWeighter {
    fn weight(&self, _key: &u64, slot: &Slot) -> u64 {
        slot.weight
    }
}

struct Shared {
    tags: TagIndex,
    inserts: AtomicU64,
    rejected: AtomicU64,
    evictions: AtomicU64,
    removals: AtomicU64,
}

/// Eviction listener: counts, unindexes tags, and defers dropping the object until
/// the shard lock is released (the request state is dropped after the lock).
#[derive(Clone)]
struct Hooks(Arc<Shared>);

impl Lifecycle<u64, Slot> for Hooks {
    /// The objects one insert evicted: usually one, held inline (no allocation).
    type RequestState = SmallVec<[Slot; 1]>;

    fn on_evict(&self, state: &mut SmallVec<[Slot; 1]>, _hash: u64, slot: Slot) {
        self.0.evictions.fetch_add(1, Relaxed);
        self.0
            .tags
            .remove(&slot.obj.meta.key, slot.obj.meta.tags().iter());
        state.push(slot);
    }
}

/// One tag-index shard: tag -> keys carrying it.
type TagShard = HashMap<String, HashSet<String>>;

/// Sharded tag -> keys index.
struct TagIndex {
    shards: Box<[Mutex<TagShard>]>,
    hasher: RandomState,
}

impl TagIndex {
    fn new() -> Self {
        TagIndex {
            shards: (0..TAG_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, tag: &str) -> MutexGuard<'_, TagShard> {
        let i = self.hasher.hash_one(tag) as usize % self.shards.len();
        // A poisoned shard only means another thread panicked mid-update of a set;
        // the index tolerates dangling or missing-then-rechecked entries, so go on.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add<'a>(&self, key: &str, tags: impl IntoIterator<Item = &'a String>) {
        for tag in tags {
            let mut shard = self.shard(tag);
            match shard.get_mut(tag.as_str()) {
                Some(keys) => {
                    if !keys.contains(key) {
                        keys.insert(key.to_owned());
                    }
                }
                None => {
                    shard.insert(tag.clone(), HashSet::from([key.to_owned()]));
                }
            }
        }
    }

    fn remove<'a>(&self, key: &str, tags: impl IntoIterator<Item = &'a String>) {
        for tag in tags {
            let mut shard = self.shard(tag);
            if let Some(keys) = shard.get_mut(tag.as_str()) {
                keys.remove(key);
                if keys.is_empty() {
                    shard.remove(tag.as_str());
                }
            }
        }
    }

    fn keys(&self, tag: &str) -> Vec<String> {
        self.shard(tag)
            .get(tag)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Hashes of cache keys: a keyed 64-bit hash of the key's bytes (so no client can choose
/// keys that collide), which the cache's own tables then use as it is.
#[derive(Clone)]
struct KeyHashes(DefaultHashBuilder);

impl KeyHashes {
    fn of(&self, key: &str) -> u64 {
        self.0.hash_one(key)
    }
}

impl BuildHasher for KeyHashes {
    type Hasher = PassThrough;

    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// Hashes a `u64` to itself (it already is a hash); anything else by folding its bytes.
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The in-memory tier. Bounded by the summed [`CachedObject::size`] of its entries;
/// all methods are synchronous and never block on I/O.
pub struct MemoryTier {
    /// Entries by [`KeyHashes::of`] their key: the key itself is held once, in the
    /// object, and compared on every lookup (two keys with one hash are two misses).
    cache: Cache<u64, Slot, SlotWeighter, KeyHashes, Hooks>,
    hashes: KeyHashes,
    shared: Arc<Shared>,
    max_bytes: u64,
    max_object_bytes: u64,
    clock: Clock,
}

impl fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTier")
            .field("len", &self.len())
            .field("weighted_bytes", &self.weighted_bytes())
            .field("max_bytes", &self.max_bytes)
            .field("max_object_bytes", &self.max_object_bytes)
            .finish()
    }
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` of objects, with default options
    /// (objects over `max_bytes / 8` are rejected).
    pub fn new(max_bytes: u64) -> Self {
        Self::with_options(max_bytes, MemoryTierOptions::default())
    }

    /// A tier holding at most `max_bytes` of objects; see [`MemoryTierOptions`].
    pub fn with_options(max_bytes: u64, opts: MemoryTierOptions) -> Self {
        let max_bytes = max_bytes.max(1);
        // HTTP/2 hits keep a field map on the objects they read: 1/16 more, at most.
        crate::cache::object::set_kept_maps_budget(
            usize::try_from(max_bytes / 16).unwrap_or(usize::MAX),
        );
        let max_object = opts.max_object_bytes.unwrap_or(max_bytes / 8).max(1);
        let avg = opts.estimated_object_bytes.unwrap_or(16 * 1024).max(1);
        let est_items = usize::try_from((max_bytes / avg).max(32)).unwrap_or(usize::MAX);
        let mut shards = opts
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) * 4)
            .max(1)
            .next_power_of_two();
        if opts.shards.is_none() {
            while shards > 1 && max_bytes / shards as u64 / 2 < max_object {
                shards /= 2;
            }
        }
        // quick_cache refuses items above ~97 % of a shard's capacity: stay below it.
        let shard_cap = max_bytes.div_ceil(shards as u64);
        let max_object_bytes = max_object.min(shard_cap / 10 * 9).max(1);
        let options = OptionsBuilder::new()
            .weight_capacity(max_bytes)
            .estimated_items_capacity(est_items)
            .shards(shards)
            .build()
            .unwrap_or_else(|_| unreachable!("weight and item capacity are set"));
        let shared = Arc::new(Shared {
            tags: TagIndex::new(),
            inserts: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            removals: AtomicU64::new(0),
        });
        let hashes = KeyHashes(DefaultHashBuilder::default());
        let cache =
            Cache::with_options(options, SlotWeighter, hashes.clone(), Hooks(shared.clone()));
        MemoryTier {
            cache,
            hashes,
            shared,
            max_bytes,
            max_object_bytes,
            clock: opts.clock,
        }
    }

    /// The object stored under `key`, unless absent or past its `stale_until`
    /// (an expired object is removed and counted as a removal).
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        let slot = self.cache.get(&self.hashes.of(key))?;
        if slot.obj.meta.key != key {
            return None;
        }
        if slot.obj.meta.is_expired(self.clock.now()) {
            self.remove_where(key, |o| o.meta.is_expired(self.clock.now()));
            return None;
        }
        Some(slot.obj)
    }

    /// Stores `obj` under `obj.meta.key`, replacing any previous object.
    ///
    /// Returns `false` when `obj.size()` exceeds
    /// [`max_object_bytes`](Self::max_object_bytes): nothing is stored and an older
    /// object under the same key is removed (the new response supersedes it).
    pub fn insert(&self, obj: Arc<CachedObject>) -> bool {
        let weight = obj.size() as u64;
        if weight > self.max_object_bytes {
            self.shared.rejected.fetch_add(1, Relaxed);
            self.remove(&obj.meta.key);
            return false;
        }
        let key = &obj.meta.key;
        let hash = self.hashes.of(key);
        let old = self.cache.peek(&hash);
        self.cache.insert(
            hash,
            Slot {
                obj: obj.clone(),
                weight,
            },
        );
        self.shared.tags.add(key, obj.meta.tags());
        if let Some(old) = old.as_ref().filter(|old| old.obj.meta.key != *key) {
            // Another key with the same hash, replaced: it is gone.
            self.unindex(&old.obj.meta.key, old.obj.meta.tags());
        } else if let Some(old) = old {
            let gone: Vec<&String> = old
                .obj
                .meta
                .tags()
                .iter()
                .filter(|t| !obj.meta.tags().contains(t))
                .collect();
            if !gone.is_empty() {
                self.unindex(key, gone);
            }
        }
        self.shared.inserts.fetch_add(1, Relaxed);
        true
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&self, key: &str) -> bool {
        self.remove_where(key, |_| true)
    }

    /// Removes every object whose `meta.url` starts with `url_prefix`
    /// (e.g. `"http://example.com/a/"`); returns how many.
    ///
    /// Scans all entries (O(n), cloning each key); purges are rare, so no URL trie is kept.
    pub fn purge_prefix(&self, url_prefix: &str) -> usize {
        self.purge_urls(&UrlMatch::Prefix(url_prefix.to_owned()))
    }

    /// Removes every object whose URL `m` matches; returns how many (scans every entry).
    pub fn purge_urls(&self, m: &UrlMatch) -> usize {
        let matches = |o: &CachedObject| m.matches(o.meta.url());
        self.matching_keys(matches)
            .into_iter()
            .filter(|k| self.remove_where(k, matches))
            .count()
    }

    /// Removes every object tagged `tag`; returns how many. Uses the tag index
    /// (cost proportional to the number of tagged keys, no full scan).
    pub fn purge_tag(&self, tag: &str) -> usize {
        let has_tag = |o: &CachedObject| o.meta.tags().iter().any(|t| t == tag);
        let mut n = 0;
        for key in self.shared.tags.keys(tag) {
            if self.remove_where(&key, has_tag) {
                n += 1;
            } else {
                // Dangling index entry (object gone or retagged): drop it, re-checked.
                let tag = tag.to_owned();
                self.unindex(&key, [&tag]);
            }
        }
        n
    }

    /// Soft purge of one key: replaces a fresh object by a copy with
    /// `fresh_until = now`, so it is served only as stale (grace) and revalidated.
    /// Returns whether an object was marked (already-stale objects are left alone).
    pub fn soft_purge_key(&self, key: &str, now: SystemTime) -> bool {
        self.soft_purge_where(key, now, |_| true)
    }

    /// Soft purge of every object whose URL starts with `url_prefix`; O(n) scan.
    /// Returns how many were marked.
    pub fn soft_purge_prefix(&self, url_prefix: &str, now: SystemTime) -> usize {
        self.soft_purge_urls(&UrlMatch::Prefix(url_prefix.to_owned()), now)
    }

    /// Soft purge of every object whose URL `m` matches. Returns how many were marked.
    pub fn soft_purge_urls(&self, m: &UrlMatch, now: SystemTime) -> usize {
        let matches = |o: &CachedObject| m.matches(o.meta.url());
        self.matching_keys(matches)
            .into_iter()
            .filter(|k| self.soft_purge_where(k, now, matches))
            .count()
    }

    /// Soft purge of every object tagged `tag` (via the tag index). Returns how many were marked.
    pub fn soft_purge_tag(&self, tag: &str, now: SystemTime) -> usize {
        let has_tag = |o: &CachedObject| o.meta.tags().iter().any(|t| t == tag);
        self.shared
            .tags
            .keys(tag)
            .into_iter()
            .filter(|k| self.soft_purge_where(k, now, has_tag))
            .count()
    }

    /// Number of resident objects.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when no object is resident.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Sum of [`CachedObject::size`] over resident objects; stays within `max_bytes`
    /// (plus rounding of at most one byte per shard).
    pub fn weighted_bytes(&self) -> u64 {
        self.cache.weight()
    }

    /// The configured byte bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Largest object [`insert`](Self::insert) accepts.
    pub fn max_object_bytes(&self) -> u64 {
        self.max_object_bytes
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            inserts: self.shared.inserts.load(Relaxed),
            rejected: self.shared.rejected.load(Relaxed),
            evictions: self.shared.evictions.load(Relaxed),
            removals: self.shared.removals.load(Relaxed),
        }
    }

    fn matching_keys(&self, pred: impl Fn(&CachedObject) -> bool) -> Vec<String> {
        self.cache
            .iter()
            .filter(|(_, slot)| pred(&slot.obj))
            .map(|(_, slot)| slot.obj.meta.key.to_string())
            .collect()
    }

    /// Removes `key` if its object satisfies `pred` (checked under the shard lock).
    fn remove_where(&self, key: &str, pred: impl FnOnce(&CachedObject) -> bool) -> bool {
        let hash = self.hashes.of(key);
        match self
            .cache
            .remove_if(&hash, |slot| slot.obj.meta.key == key && pred(&slot.obj))
        {
            Some((_, slot)) => {
                self.shared.removals.fetch_add(1, Relaxed);
                self.unindex(key, slot.obj.meta.tags());
                true
            }
            None => false,
        }
    }

    /// Removes `key` from `tags` in the index, then re-adds the tags the currently
    /// resident object (if a concurrent insert put one back) still carries.
    fn unindex<'a>(&self, key: &str, tags: impl IntoIterator<Item = &'a String> + Clone) {
        self.shared.tags.remove(key, tags.clone());
        let current = self.cache.peek(&self.hashes.of(key));
        if let Some(current) = current.filter(|c| c.obj.meta.key == key) {
            let back: Vec<&String> = tags
                .into_iter()
                .filter(|t| current.obj.meta.tags().contains(t))
                .collect();
            self.shared.tags.add(key, back);
        }
    }

    fn soft_purge_where(
        &self,
        key: &str,
        now: SystemTime,
        pred: impl FnOnce(&CachedObject) -> bool,
    ) -> bool {
        let hash = self.hashes.of(key);
        let result = self.cache.entry(&hash, Some(Duration::ZERO), |_, slot| {
            if slot.obj.meta.key == key && slot.obj.meta.fresh_until() > now && pred(&slot.obj) {
                slot.obj = Arc::new(slot.obj.stale_copy(now));
                EntryAction::Retain(true)
            } else {
                EntryAction::Retain(false)
            }
        });
        matches!(result, EntryResult::Retained(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::object::tests::sample;

    fn obj(key: &str, url: &str, tags: &[&str], body: usize) -> Arc<CachedObject> {
        Arc::new(sample(key, url, tags, body))
    }

    #[test]
    fn insert_get_remove() {
        let m = MemoryTier::new(1 << 20);
        assert!(m.insert(obj("k1", "http://a/1", &["t"], 100)));
        let got = m.get("k1").unwrap();
        assert_eq!(got.body.len(), 100);
        assert!(m.get("nope").is_none());
        assert_eq!(m.len(), 1);
        assert_eq!(m.weighted_bytes(), got.size() as u64);
        assert!(m.remove("k1"));
        assert!(!m.remove("k1"));
        assert!(m.get("k1").is_none());
        assert_eq!(m.purge_tag("t"), 0);
        assert_eq!(m.stats().inserts, 1);
    }

    #[test]
    fn oversized_rejected() {
        let m = MemoryTier::new(80_000);
        assert_eq!(m.max_object_bytes(), 10_000);
        assert!(m.insert(obj("big", "u", &[], 1_000)));
        assert!(!m.insert(obj("big", "u", &[], 20_000)));
        assert!(m.get("big").is_none(), "superseded object removed");
        assert_eq!(m.stats().rejected, 1);
    }

    #[test]
    fn expired_objects_dropped_on_get() {
        let m = MemoryTier::new(1 << 20);
        let mut o = sample("k", "u", &["t"], 10);
        o.meta
            .set_stale_until(SystemTime::now() - Duration::from_secs(1));
        m.insert(Arc::new(o));
        assert!(m.get("k").is_none());
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn byte_bound_holds_under_distinct_large_objects() {
        let max = 4 << 20;
        let m = MemoryTier::new(max);
        let mut largest = 0;
        for i in 0..2_000 {
            let body = 10_000 + (i * 7919) % 400_000;
            let o = obj(&format!("k{i}"), "http://a/", &["all"], body);
            largest = largest.max(o.size() as u64);
            m.insert(o);
            assert!(m.weighted_bytes() <= max + largest, "at {i}");
        }
        let s = m.stats();
        assert!(s.evictions > 0);
        assert_eq!(s.inserts - s.evictions, m.len() as u64);
        // The eviction hook cleaned the tag index: only resident keys remain.
        assert_eq!(m.shared.tags.keys("all").len(), m.len());
        assert_eq!(
            m.purge_tag("all"),
            m.stats().inserts as usize - s.evictions as usize
        );
        assert_eq!(m.len(), 0);
        assert_eq!(m.weighted_bytes(), 0);
    }

    #[test]
    fn purge_by_prefix_and_tag() {
        let m = MemoryTier::new(1 << 20);
        m.insert(obj("a1", "http://h/a/1", &["x", "y"], 10));
        m.insert(obj("a2", "http://h/a/2?q", &["y"], 10));
        m.insert(obj("b1", "http://h/b/1", &["x"], 10));
        m.insert(obj("o1", "http://other/a/1", &[], 10));
        assert_eq!(m.purge_prefix("http://h/a/"), 2);
        assert!(m.get("a1").is_none() && m.get("a2").is_none());
        assert!(m.get("b1").is_some() && m.get("o1").is_some());
        assert_eq!(m.purge_tag("y"), 0);
        assert_eq!(m.purge_tag("x"), 1);
        assert!(m.get("b1").is_none());
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn retag_on_replace_updates_index() {
        let m = MemoryTier::new(1 << 20);
        m.insert(obj("k", "u", &["old", "both"], 10));
        m.insert(obj("k", "u", &["new", "both"], 10));
        assert!(m.shared.tags.keys("old").is_empty());
        assert_eq!(m.purge_tag("old"), 0);
        assert!(m.get("k").is_some());
        assert_eq!(m.purge_tag("both"), 1);
        assert!(m.shared.tags.keys("new").is_empty());
    }

    #[test]
    fn soft_purge_marks_stale() {
        let m = MemoryTier::new(1 << 20);
        m.insert(obj("a", "http://h/a", &["t"], 10));
        m.insert(obj("b", "http://h/b", &["t"], 10));
        m.insert(obj("c", "http://z/c", &[], 10));
        let now = SystemTime::now();
        assert!(m.soft_purge_key("a", now));
        assert!(!m.soft_purge_key("a", now), "already stale");
        assert!(!m.soft_purge_key("missing", now));
        let a = m.get("a").unwrap();
        assert!(!a.meta.is_fresh(now) && !a.meta.is_expired(now));
        assert_eq!(m.soft_purge_tag("t", now), 1); // only b was still fresh
        assert!(!m.get("b").unwrap().meta.is_fresh(now));
        assert_eq!(m.soft_purge_prefix("http://z/", now), 1);
        assert!(!m.get("c").unwrap().meta.is_fresh(now));
        assert_eq!(m.len(), 3);
        // Tags survive a soft purge.
        assert_eq!(m.purge_tag("t"), 2);
    }

    #[test]
    fn concurrent_use_keeps_index_consistent() {
        let m = Arc::new(MemoryTier::new(256 * 1024));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let k = format!("k{}", (i * 7 + t) % 300);
                        match i % 5 {
                            0 => {
                                m.remove(&k);
                            }
                            1 => {
                                m.get(&k);
                            }
                            _ => {
                                m.insert(obj(&k, "http://h/", &["all", &k], 1_000 + i % 3_000));
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let resident = m.len();
        assert_eq!(m.purge_tag("all"), resident);
        assert_eq!(m.len(), 0);
    }
}
