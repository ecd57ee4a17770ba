//! The HTTP cache: keys, the RFC 9111 policy, stored objects in memory, disk and shared
//! (Redis) tiers, request coalescing (in this process, and across nodes with a lease in the
//! shared tier), background refresh and purge (broadcast to every node).
//!
//! `Cache` is the runtime half; `policy` decides (pure), `key` names, `tier` stores,
//! `cluster` (more `impl Cache`) shares lookups, fetches and purges with the other nodes.
//! `proxy::cached` drives a request through it.

pub mod clock;
mod cluster;
pub mod fields;
pub mod fill;
pub mod key;
pub mod object;
pub mod policy;
pub mod range;
pub mod status;
pub mod tier;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use clock::Clock;

use http::{header, HeaderMap, HeaderValue};
use tokio::sync::watch;
use tokio::time::Instant;

pub use status::CacheStatus;

use object::{CachedObject, ObjectMeta, ObjectParts};
/// The hasher of the maps keyed by cache keys: foldhash, seeded per process (quick_cache's,
/// which the memory tier uses too); SipHash cost a miss ~100 instructions a lookup.
type FastHash = quick_cache::DefaultHashBuilder;
use tier::disk::{DiskTier, DiskTierOptions};
use tier::memory::{MemoryTier, MemoryTierOptions};
use tier::shared::{SharedTier, Target};

/// Marks the small object stored under a primary key whose response had `Vary`: it holds
/// the `Vary` field, and each variant is stored under `variant_key(primary, secondary)`.
use fields::{FieldSource, VARIANTS_MARKER};

/// Which URLs a purge reaches. The scheme is part of a key (http and https copies are
/// stored apart), but not of what a purge means: an `http://` or `https://` URL or prefix
/// reaches the copies of both schemes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlMatch {
    /// This canonical URL exactly (all its variants, both schemes).
    Exact(String),
    /// Every URL starting with this (scheme://host/…, both schemes).
    Prefix(String),
    /// Every URL, on any host, whose path starts with this (`/static/`).
    PathPrefix(String),
}

impl UrlMatch {
    pub fn matches(&self, url: &str) -> bool {
        match self {
            UrlMatch::Exact(u) => {
                url == u
                    || matches!((without_scheme(url), without_scheme(u)), (Some(a), Some(b)) if a == b)
            }
            UrlMatch::Prefix(p) => {
                url.starts_with(p.as_str())
                    || matches!((without_scheme(url), without_scheme(p)), (Some(a), Some(b)) if a.starts_with(b))
            }
            UrlMatch::PathPrefix(p) => url_path(url).starts_with(p.as_str()),
        }
    }
}

/// `host/path?q` of an `http://` or `https://` URL.
fn without_scheme(url: &str) -> Option<&str> {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
}

/// The path (and query) of `scheme://host/path?q`, or the input when it is already a path.
fn url_path(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

/// The key a variant of `primary` is stored under.
pub fn variant_key(primary: &str, secondary: &str) -> String {
    format!("{primary}\n\u{1}vary\n{secondary}")
}

/// Counters for the metrics work to come; all monotonic.
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub revalidated: AtomicU64,
    pub coalesced: AtomicU64,
    pub bypass: AtomicU64,
    pub stores: AtomicU64,
    pub refreshes: AtomicU64,
    pub purged: AtomicU64,
}

/// What a purge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub memory: usize,
    pub disk: usize,
    /// Objects deleted from the shared tier.
    pub shared: usize,
}

/// What a purge through [`Cache::purge`] did and how far it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub purged: Purged,
    /// `cluster` when the shared tier removed it and every node was told; `local` otherwise.
    pub scope: &'static str,
    /// Why a purge with a shared tier configured reached only this node.
    pub warning: Option<String>,
}

/// What the cluster-wide fetch lease says to this node's leader for a key.
#[derive(Debug)]
pub enum LeaseOutcome {
    /// Go to the origin: this node holds the lease, or the shared tier cannot say (off,
    /// down, or the holder took longer than the lease).
    Fetch,
    /// Another node fetched it meanwhile: serve this (already filled into the local tiers).
    Found(Arc<CachedObject>),
}

/// The primary key of a cache key (the key itself unless it is a `Vary` variant).
pub fn primary_of(key: &str) -> &str {
    key.split_once("\n\u{1}vary\n").map_or(key, |(p, _)| p)
}

/// The state of one coalesced fetch, as its followers see it.
#[derive(Debug, Clone)]
pub enum FlightState {
    Pending,
    /// The leader stored this object: serve it.
    Stored(Arc<CachedObject>),
    /// The leader's response was not stored: fetch yourself.
    NotStored,
}

/// Where a request stands in coalescing.
pub enum Join {
    /// First for this key: fetch, and finish the guard (or drop it on failure).
    Leader(FlightGuard),
    /// Someone is fetching: wait for its result.
    Follower(watch::Receiver<FlightState>),
    /// Recently uncacheable (hit-for-miss): go to the origin, don't queue.
    Pass,
}

/// The cache of one torii process; shared by all workers and config generations with the
/// same `[cache]` settings.
pub struct Cache {
    memory: MemoryTier,
    disk: Option<DiskTier>,
    /// Fetches under way, by the hash of their key ([`Cache::flight_id`]): the channel to
    /// their followers, made by the first follower (most misses have none, and pay for no
    /// channel). Keyed by hash, a miss allocates no copy of its key here; two keys of the
    /// same 64-bit hash would only make one wait for the other's fetch, then fetch itself.
    flights: Mutex<HashMap<u64, Option<watch::Sender<FlightState>>, FastHash>>,
    flights_hash: FastHash,
    /// Keys whose last response was uncacheable, until the given instant (Varnish's
    /// hit-for-miss): they skip coalescing so requests don't queue behind each other.
    uncacheable: Mutex<HashMap<String, Instant, FastHash>>,
    refreshing: Mutex<HashSet<String>>,
    /// Counts purges and invalidations, so a disk write that ran across one can tell.
    /// Changed, and checked by finished disk writes, only under `purge_lock`.
    purge_epoch: AtomicU64,
    /// Makes "bump the epoch, purge memory, unindex disk" one step for the disk writes
    /// that check the epoch when they finish.
    purge_lock: Mutex<()>,
    /// The shared tier, when `[cache.shared]` is configured.
    shared: Option<Arc<SharedTier>>,
    /// Primary keys whose cluster-wide fetch lease this node holds; given back after the
    /// object is written to the shared tier, or when the fetch ends without storing.
    leases: Mutex<HashSet<String>>,
    /// The wall clock every freshness decision of this cache reads; tests advance it.
    clock: Clock,
    pub stats: Stats,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("objects", &self.memory.len())
            .finish()
    }
}

impl Cache {
    /// A cache with a memory tier of `memory_bytes` and optionally a disk tier. Must be
    /// called inside a tokio runtime when `disk` is set (its index loads in the background).
    ///
    /// # Errors
    /// When the disk directory cannot be created.
    pub fn new(memory_bytes: u64, disk: Option<(&std::path::Path, u64)>) -> std::io::Result<Cache> {
        let clock = Clock::default();
        let disk = match disk {
            Some((dir, size)) => Some(DiskTier::open_with_options(
                dir,
                size,
                DiskTierOptions {
                    clock: clock.clone(),
                    ..DiskTierOptions::default()
                },
            )?),
            None => None,
        };
        Ok(Cache {
            memory: MemoryTier::with_options(
                memory_bytes,
                MemoryTierOptions {
                    clock: clock.clone(),
                    ..MemoryTierOptions::default()
                },
            ),
            disk,
            flights: Mutex::default(),
            flights_hash: FastHash::default(),
            uncacheable: Mutex::default(),
            refreshing: Mutex::default(),
            purge_epoch: AtomicU64::new(0),
            purge_lock: Mutex::default(),
            shared: None,
            leases: Mutex::default(),
            clock,
            stats: Stats::default(),
        })
    }

    /// The wall clock of this cache (shared with its tiers).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The current time by this cache's clock: what freshness is judged against.
    #[inline]
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Adds the shared tier below memory and disk.
    pub fn with_shared(mut self, shared: Arc<SharedTier>) -> Cache {
        self.shared = Some(shared);
        self
    }

    pub fn shared(&self) -> Option<&Arc<SharedTier>> {
        self.shared.as_ref()
    }

    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_ref()
    }

    /// The stored response for `primary` that matches the request's `Vary`-selected
    /// headers, from memory, else disk (which then fills memory), else the shared tier
    /// (which then fills memory and disk). No side effects on miss.
    pub async fn lookup(
        self: &Arc<Self>,
        primary: &str,
        req_headers: &HeaderMap,
        norm: &policy::VaryNormalise,
    ) -> Option<Arc<CachedObject>> {
        let first = self.get(primary).await?;
        if !first.headers.is_variants_index() {
            return Some(first);
        }
        let secondary =
            policy::secondary_key(first.headers.get_all(header::VARY), req_headers, norm)?;
        self.get(&variant_key(primary, &secondary)).await
    }

    /// Like [`lookup`](Self::lookup), in the memory tier only: the synchronous first look
    /// of a cache hit.
    pub fn lookup_memory(
        &self,
        primary: &str,
        req_headers: &HeaderMap,
        norm: &policy::VaryNormalise,
    ) -> Option<Arc<CachedObject>> {
        let first = self.memory.get(primary)?;
        if !first.headers.is_variants_index() {
            return Some(first);
        }
        let secondary =
            policy::secondary_key(first.headers.get_all(header::VARY), req_headers, norm)?;
        self.memory.get(&variant_key(primary, &secondary))
    }

    async fn get(self: &Arc<Self>, key: &str) -> Option<Arc<CachedObject>> {
        if let Some(obj) = self.memory.get(key) {
            return Some(obj);
        }
        if let Some(disk) = &self.disk {
            if let Some(obj) = disk.get(key).await {
                let obj = Arc::new(obj);
                self.memory.insert(obj.clone());
                return Some(obj);
            }
        }
        self.get_shared(key).await
    }

    /// Stores `obj` in every tier (the disk and shared writes run in the background and
    /// never delay the caller). When the object is a `Vary` variant, `index` is the marker
    /// stored under its primary key. The cluster-wide lease of the key, when this node
    /// holds it, is given back once the shared write is done, so that nodes waiting on it
    /// find the object.
    pub fn store(self: &Arc<Self>, obj: Arc<CachedObject>, index: Option<CachedObject>) {
        self.stats.stores.fetch_add(1, Relaxed);
        let epoch = self.purge_epoch.load(SeqCst);
        let index = index.map(Arc::new);
        if let Some(index) = &index {
            self.put(index.clone());
        }
        let Some(shared) = self.shared.clone() else {
            self.put(obj);
            return;
        };
        self.put(obj.clone());
        let batch: Vec<_> = index.into_iter().chain([obj.clone()]).collect();
        let primary = primary_of(&obj.meta.key).to_string();
        let release = self.leases.lock().expect("poisoned").remove(&primary);
        let cache = self.clone();
        tokio::spawn(async move {
            for o in &batch {
                if cache.purged_since(o, epoch) {
                    break;
                }
                if let Err(e) = shared.write(o, cache.now()).await {
                    tracing::debug!("shared tier write failed: {e}");
                    break;
                }
                // A purge that ran while the write was on its way may have found nothing
                // to delete in Redis yet: take back what was written.
                if cache.purged_since(o, epoch) {
                    let _ = shared.delete(&o.meta.key).await;
                    break;
                }
            }
            if release {
                let _ = shared.release_lease(&primary).await;
            }
        });
    }

    /// Whether a purge since `epoch` may have removed `obj` (memory no longer holds it).
    fn purged_since(&self, obj: &Arc<CachedObject>, epoch: u64) -> bool {
        let _purges = self.purge_lock.lock().expect("poisoned");
        self.purge_epoch.load(SeqCst) != epoch
            && !self
                .memory
                .get(&obj.meta.key)
                .is_some_and(|m| Arc::ptr_eq(&m, obj))
    }

    fn put(self: &Arc<Self>, obj: Arc<CachedObject>) {
        // Read before the object becomes visible: a purge that can reach it bumps it later.
        let epoch = self.purge_epoch.load(SeqCst);
        self.memory.insert(obj.clone());
        if let Some(disk) = &self.disk {
            let write = disk.insert(obj.clone());
            let cache = self.clone();
            tokio::spawn(async move {
                match write.await {
                    Err(e) => tracing::debug!("disk tier write failed: {e}"),
                    Ok(true) => cache.after_disk_write(&obj, epoch),
                    Ok(false) => {}
                }
            });
        }
    }

    /// A purge that ran while `obj`'s file was written found nothing on disk to remove (it
    /// was not indexed yet): keep the file only if memory still holds this very object,
    /// i.e. no purge took it.
    fn after_disk_write(&self, obj: &Arc<CachedObject>, epoch: u64) {
        let _purges = self.purge_lock.lock().expect("poisoned");
        if self.purge_epoch.load(SeqCst) == epoch {
            return;
        }
        let kept = self
            .memory
            .get(&obj.meta.key)
            .is_some_and(|m| Arc::ptr_eq(&m, obj));
        if let (false, Some(disk)) = (kept, &self.disk) {
            disk.remove_detached(&obj.meta.key);
        }
    }

    /// The marker object stored under `primary` for a response with `Vary`.
    pub fn variants_index(primary: &str, variant: &ObjectParts) -> CachedObject {
        let mut headers = HeaderMap::new();
        variant.headers.any_value(&header::VARY, &mut |v| {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.append(header::VARY, v);
            }
            false
        });
        headers.insert(VARIANTS_MARKER, HeaderValue::from_static("1"));
        let mut meta = variant.meta.clone();
        meta.key = primary.into();
        meta.set_url(ObjectMeta::url_field(primary, variant.meta.url()));
        CachedObject::new(meta, http::StatusCode::OK, &headers, &[])
    }

    /// Purges what `m` matches from every tier; `soft` marks entries stale instead (served
    /// only within grace, revalidated first otherwise).
    pub async fn purge_urls(&self, m: &UrlMatch, soft: bool) -> Purged {
        let (memory, deletion) = {
            let _purges = self.purge_lock.lock().expect("poisoned");
            self.purge_epoch.fetch_add(1, SeqCst);
            let memory = if soft {
                self.memory.soft_purge_urls(m, self.clock.now())
            } else {
                self.memory.purge_urls(m)
            };
            // Soft purge has no disk form: disk copies are dropped, memory keeps the stale copy.
            (memory, self.disk.as_ref().map(|d| d.unindex_urls(m)))
        };
        let disk = match deletion {
            Some(d) => d.run().await,
            None => 0,
        };
        self.stats.purged.fetch_add((memory + disk) as u64, Relaxed);
        Purged {
            memory,
            disk,
            shared: 0,
        }
    }

    /// Invalidation after an unsafe request: removes what `m` matches from memory and from
    /// the disk index before returning (disk files are deleted in the background), so the
    /// next request cannot be answered from the old copy. With a shared tier, the entry is
    /// also deleted there and every node is told, in the background.
    pub fn invalidate(self: &Arc<Self>, m: &UrlMatch) -> Purged {
        if self.shared.is_some() {
            let (cache, target) = (self.clone(), Target::Urls(m.clone()));
            // The local tiers are purged now, below, and once more in here after Redis.
            tokio::spawn(async move { cache.purge_everywhere(&target, false, false).await });
        }
        let (memory, deletion) = {
            let _purges = self.purge_lock.lock().expect("poisoned");
            self.purge_epoch.fetch_add(1, SeqCst);
            (
                self.memory.purge_urls(m),
                self.disk.as_ref().map(|d| d.unindex_urls(m)),
            )
        };
        let disk = deletion.map_or(0, |d| d.detach());
        self.stats.purged.fetch_add((memory + disk) as u64, Relaxed);
        Purged {
            memory,
            disk,
            shared: 0,
        }
    }

    /// Purges every object tagged `tag` (from `Surrogate-Key` / `Cache-Tag`).
    pub async fn purge_tag(&self, tag: &str, soft: bool) -> Purged {
        let (memory, deletion) = {
            let _purges = self.purge_lock.lock().expect("poisoned");
            self.purge_epoch.fetch_add(1, SeqCst);
            let memory = if soft {
                self.memory.soft_purge_tag(tag, self.clock.now())
            } else {
                self.memory.purge_tag(tag)
            };
            (memory, self.disk.as_ref().map(|d| d.unindex_tag(tag)))
        };
        let disk = match deletion {
            Some(d) => d.run().await,
            None => 0,
        };
        self.stats.purged.fetch_add((memory + disk) as u64, Relaxed);
        Purged {
            memory,
            disk,
            shared: 0,
        }
    }

    /// Joins the fetch for `key`: the first caller leads, later ones follow.
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        {
            let mut uncacheable = self.uncacheable.lock().expect("poisoned");
            if let Some(until) = uncacheable.get(key) {
                if *until > Instant::now() {
                    return Join::Pass;
                }
                uncacheable.remove(key);
            }
        }
        let id = self.flight_id(key);
        let mut flights = self.flights.lock().expect("poisoned");
        match flights.entry(id) {
            Entry::Occupied(mut slot) => {
                let tx = slot
                    .get_mut()
                    .get_or_insert_with(|| watch::channel(FlightState::Pending).0);
                Join::Follower(tx.subscribe())
            }
            Entry::Vacant(slot) => {
                slot.insert(None);
                Join::Leader(FlightGuard {
                    cache: self.clone(),
                    key: key.to_string(),
                    id,
                    live: true,
                })
            }
        }
    }

    /// The key of `key`'s flight in `flights`.
    fn flight_id(&self, key: &str) -> u64 {
        self.flights_hash.hash_one(key)
    }

    /// Whether `key` answered something uncacheable within its `hit_for_miss` window: such
    /// a request goes straight to the origin (Varnish's hit-for-pass).
    pub fn passes(&self, key: &str) -> bool {
        let uncacheable = self.uncacheable.lock().expect("poisoned");
        uncacheable
            .get(key)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Remembers that `key` answered something uncacheable, for `ttl`.
    pub fn mark_uncacheable(&self, key: &str, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut map = self.uncacheable.lock().expect("poisoned");
        if map.len() >= 100_000 {
            let now = Instant::now();
            map.retain(|_, until| *until > now);
            if map.len() >= 100_000 {
                map.clear();
            }
        }
        map.insert(key.to_string(), Instant::now() + ttl);
    }

    /// Claims the one background refresh of `key`; `None` when one is already running.
    pub fn start_refresh(self: &Arc<Self>, key: &str) -> Option<RefreshGuard> {
        let mut refreshing = self.refreshing.lock().expect("poisoned");
        if !refreshing.insert(key.to_string()) {
            return None;
        }
        self.stats.refreshes.fetch_add(1, Relaxed);
        Some(RefreshGuard {
            cache: self.clone(),
            key: key.to_string(),
        })
    }
}

/// The leader's side of a coalesced fetch. Dropping it unfinished tells followers to
/// fetch themselves (the leader failed, or its response was not stored).
pub struct FlightGuard {
    cache: Arc<Cache>,
    key: String,
    /// `key`'s [`Cache::flight_id`].
    id: u64,
    /// Not ended yet.
    live: bool,
}

impl FlightGuard {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Publishes the outcome to the followers and ends the flight.
    pub fn finish(mut self, state: FlightState) {
        self.end(state);
    }

    fn end(&mut self, state: FlightState) {
        if std::mem::take(&mut self.live) {
            let followed = self
                .cache
                .flights
                .lock()
                .expect("poisoned")
                .remove(&self.id)
                .flatten();
            // Gone from the map, the flight takes no new follower: those it has get the
            // outcome (or, with the sender dropped unsent, fetch themselves).
            if let Some(tx) = followed {
                tx.send_replace(state);
            }
            // Stored: `store` took the lease and gives it back after its shared write.
            // Otherwise other nodes should stop waiting and fetch themselves.
            self.cache.release_lease(&self.key);
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.end(FlightState::NotStored);
    }
}

/// Held while a background refresh of one key runs.
pub struct RefreshGuard {
    cache: Arc<Cache>,
    key: String,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.cache
            .refreshing
            .lock()
            .expect("poisoned")
            .remove(&self.key);
    }
}

/// Waits for a coalesced fetch, at most `timeout`; `None` means fetch yourself.
pub async fn follow(
    mut rx: watch::Receiver<FlightState>,
    timeout: Duration,
) -> Option<Arc<CachedObject>> {
    let waited =
        tokio::time::timeout(timeout, rx.wait_for(|s| !matches!(s, FlightState::Pending))).await;
    match waited {
        Ok(Ok(state)) => match &*state {
            FlightState::Stored(obj) => Some(obj.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_matches() {
        assert!(UrlMatch::Exact("http://a/x".into()).matches("http://a/x"));
        assert!(!UrlMatch::Exact("http://a/x".into()).matches("http://a/xy"));
        assert!(UrlMatch::Prefix("http://a/x".into()).matches("http://a/xy"));
        assert!(UrlMatch::PathPrefix("/static/".into()).matches("http://b:81/static/app.js"));
        assert!(!UrlMatch::PathPrefix("/static/".into()).matches("http://b/other/static/"));
        assert_eq!(url_path("http://h"), "/");
        // Both schemes' copies, never another host's.
        assert!(UrlMatch::Exact("http://a/x".into()).matches("https://a/x"));
        assert!(UrlMatch::Exact("https://a/x".into()).matches("http://a/x"));
        assert!(!UrlMatch::Exact("http://a/x".into()).matches("https://b/x"));
        assert!(UrlMatch::Prefix("http://a/x".into()).matches("https://a/xy"));
        assert!(!UrlMatch::Prefix("https://a/x".into()).matches("http://b/x"));
    }

    #[tokio::test]
    async fn coalescing_one_leader() {
        let cache = Arc::new(Cache::new(1 << 20, None).unwrap());
        let Join::Leader(guard) = cache.join("k") else {
            panic!("first is leader")
        };
        let Join::Follower(rx) = cache.join("k") else {
            panic!("second follows")
        };
        drop(guard);
        assert!(
            follow(rx, Duration::from_secs(1)).await.is_none(),
            "a dropped leader releases followers"
        );
        assert!(matches!(cache.join("k"), Join::Leader(_)));
        cache.mark_uncacheable("u", Duration::from_secs(30));
        assert!(matches!(cache.join("u"), Join::Pass));
    }
}
