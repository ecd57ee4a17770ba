//! The disk tier: one checksummed file per object under a directory, bounded in bytes,
//! crash-safe, and found again after a restart.
//!
//! # Layout
//! `DIR/objects/HH/HASH` where `HASH` is the 32-hex-digit FNV-1a-128 of the cache key
//! and `HH` its first two digits (256 shard directories). Files are written to
//! `DIR/tmp/` and atomically renamed into place (with optional `fsync` of the file and
//! its directory), so a crash leaves either the old record, the new one, or a stray
//! temp file (removed at the next open). Every read verifies the record's CRC and that
//! the stored key equals the requested one (hash collisions miss, they never mix up
//! objects); corrupt files are deleted.
//!
//! # Index and startup
//! An in-memory index (hash -> size, url, tags, stale_until, last access) answers
//! misses without I/O and drives eviction and purges. [`DiskTier::open`] returns at
//! once and rebuilds the index in a `spawn_blocking` task that reads only each file's
//! header + meta prefix (meta CRC checked, length checked against the file size).
//! While that scan runs, index misses fall through to reading the file directly, and
//! purges are remembered and applied to files the scan indexes later.
//!
//! # Eviction policy
//! When the indexed bytes exceed `max_bytes`, entries past `stale_until` are swept
//! first (at most once a minute, it is a full index scan), then least-recently-used
//! entries (last insert or hit; a restart uses file mtimes) are dropped until usage is
//! at 95 % of `max_bytes`. Expired entries are also deleted whenever a lookup meets them.
//!
//! One directory must be used by one `DiskTier` (one process) at a time.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::cache::clock::Clock;
use crate::cache::object::{self, CachedObject, DecodeError, HEADER_LEN};
use crate::cache::UrlMatch;

/// Records up to this size are read on the request's thread when the page cache holds
/// them ([`read_cached`]).
const INLINE_READ_MAX: usize = object::COPY_RECORD_MAX;

/// The file at `path`, indexed as `len` bytes, if that is at most [`INLINE_READ_MAX`]
/// and the page cache holds all of it: `preadv2` with `RWF_NOWAIT` reads without waiting
/// for the disk and fails (EAGAIN) instead. `None` otherwise (or when the file is not
/// `len` bytes long: replaced meanwhile): the caller reads on the blocking pool.
fn read_cached(path: &Path, len: u64) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok()?;
    if len == 0 || len > INLINE_READ_MAX {
        return None;
    }
    let file = File::open(path).ok()?;
    // One byte more than indexed: a longer file is not this record.
    let mut data = vec![0u8; len + 1];
    let read = rustix::io::preadv2(
        &file,
        &mut [io::IoSliceMut::new(&mut data)],
        0,
        rustix::io::ReadWriteFlags::NOWAIT,
    )
    .ok()?;
    data.truncate(len);
    (read == len).then_some(data)
}

/// Usage is brought down to this share of `max_bytes` when eviction runs.
const LOW_WATERMARK_PERCENT: u64 = 95;
/// Minimum interval between full sweeps of expired entries during eviction.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Errors from [`DiskTier::insert`] and [`DiskTier::open`].
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The encoded object is larger than the tier's object limit.
    #[error("object of {size} bytes exceeds the disk tier's {max}-byte object limit")]
    TooLarge {
        /// Encoded size.
        size: u64,
        /// The limit ([`DiskTier::max_object_bytes`]).
        max: u64,
    },
    /// The object cannot be represented by the record format (meta or a header too long).
    #[error("object cannot be encoded")]
    Unencodable,
    /// File-system error.
    #[error("disk tier I/O: {0}")]
    Io(#[from] io::Error),
    /// The blocking task doing the I/O panicked or was cancelled.
    #[error("disk tier task failed: {0}")]
    Task(String),
}

/// Options for [`DiskTier::open_with_options`]; `Default` gives the documented defaults.
#[derive(Debug, Clone, Default)]
pub struct DiskTierOptions {
    /// Largest encoded object stored. Default: `max_bytes / 8`.
    pub max_object_bytes: Option<u64>,
    /// `fsync` each file and its directory before/after the rename. Default: off (a
    /// crash may then lose recent objects, but never yields a corrupt hit).
    pub fsync: bool,
    /// The wall clock expiry is judged by (the cache's, which tests advance).
    pub clock: Clock,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    url: String,
    tags: Vec<String>,
    stale_until: SystemTime,
    access: u64,
    generation: u64,
}

enum Purge {
    Key(u128),
    Urls(UrlMatch),
    Tag(String),
}

#[derive(Default)]
struct Index {
    map: HashMap<u128, Entry>,
    /// (last access in ms since the epoch, hash): LRU order.
    lru: BTreeSet<(u64, u128)>,
    bytes: u64,
    scanning: bool,
    /// Purges issued while the startup scan runs, applied to what it indexes later.
    pending: Vec<Purge>,
    last_sweep: Option<Instant>,
    next_generation: u64,
}

impl Index {
    fn insert(&mut self, hash: u128, mut entry: Entry) -> u64 {
        self.remove(hash);
        self.next_generation += 1;
        entry.generation = self.next_generation;
        self.bytes += entry.size;
        self.lru.insert((entry.access, hash));
        self.map.insert(hash, entry);
        self.next_generation
    }

    fn remove(&mut self, hash: u128) -> Option<Entry> {
        let e = self.map.remove(&hash)?;
        self.bytes -= e.size;
        self.lru.remove(&(e.access, hash));
        Some(e)
    }

    fn touch(&mut self, hash: u128, now: u64) -> Option<u64> {
        let e = self.map.get_mut(&hash)?;
        self.lru.remove(&(e.access, hash));
        e.access = now;
        self.lru.insert((now, hash));
        Some(e.generation)
    }

    /// Removes the entries `pred` selects; returns their hashes.
    fn remove_where(&mut self, pred: impl Fn(&Entry) -> bool) -> Vec<u128> {
        let hashes: Vec<u128> = self
            .map
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(h, _)| *h)
            .collect();
        for h in &hashes {
            self.remove(*h);
        }
        hashes
    }

    /// Brings usage under the low watermark; returns the evicted hashes.
    fn evict(&mut self, max_bytes: u64, now: SystemTime) -> Vec<u128> {
        if self.bytes <= max_bytes {
            return Vec::new();
        }
        let mut victims = Vec::new();
        if self
            .last_sweep
            .is_none_or(|t| t.elapsed() >= SWEEP_INTERVAL)
        {
            self.last_sweep = Some(Instant::now());
            victims = self.remove_where(|e| now >= e.stale_until);
        }
        let target = max_bytes / 100 * LOW_WATERMARK_PERCENT;
        while self.bytes > target {
            let Some(&(_, hash)) = self.lru.first() else {
                break;
            };
            self.remove(hash);
            victims.push(hash);
        }
        victims
    }

    fn purged(&self, hash: u128, url: &str, tags: &[String]) -> bool {
        self.pending.iter().any(|p| match p {
            Purge::Key(h) => *h == hash,
            Purge::Urls(m) => m.matches(url),
            Purge::Tag(tag) => tags.contains(tag),
        })
    }
}

struct Inner {
    objects: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
    max_object_bytes: u64,
    fsync: bool,
    index: Mutex<Index>,
    ready: watch::Sender<bool>,
    tmp_seq: AtomicU64,
    clock: Clock,
}

/// The persistent disk tier. Cheap to clone (shared state); all I/O runs on Tokio's
/// blocking pool, so it must be used inside a Tokio runtime.
#[derive(Clone)]
pub struct DiskTier {
    inner: Arc<Inner>,
}

impl fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskTier")
            .field("dir", &self.inner.objects.parent())
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .field("max_bytes", &self.inner.max_bytes)
            .finish()
    }
}

impl DiskTier {
    /// Opens (creating if needed) a tier in `dir` holding at most `max_bytes`, with
    /// default options. Returns at once; the index is rebuilt in the background.
    ///
    /// # Errors
    /// The directories cannot be created, or no Tokio runtime is current.
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64) -> io::Result<DiskTier> {
        Self::open_with_options(dir, max_bytes, DiskTierOptions::default())
    }

    /// Like [`open`](Self::open) with explicit [`DiskTierOptions`].
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub fn open_with_options(
        dir: impl AsRef<Path>,
        max_bytes: u64,
        opts: DiskTierOptions,
    ) -> io::Result<DiskTier> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let dir = dir.as_ref();
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&objects)?;
        fs::create_dir_all(&tmp)?;
        let (ready, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            objects,
            tmp,
            max_bytes,
            max_object_bytes: opts.max_object_bytes.unwrap_or(max_bytes / 8),
            fsync: opts.fsync,
            index: Mutex::new(Index {
                scanning: true,
                ..Index::default()
            }),
            ready,
            tmp_seq: AtomicU64::new(0),
            clock: opts.clock,
        });
        let weak = Arc::downgrade(&inner);
        runtime.spawn_blocking(move || scan(weak));
        Ok(DiskTier { inner })
    }

    /// Waits until the startup scan has finished (lookups work before that too).
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        // Err only if the sender is dropped, which cannot happen while `self` lives.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Whether the startup scan has finished.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Reads the object stored under `key`. `None` on a miss, on a hash collision
    /// with another key, or when the file is corrupt (then deleted) or past its
    /// `stale_until` (then deleted). I/O errors are logged and reported as misses.
    pub async fn get(&self, key: &str) -> Option<CachedObject> {
        let hash = key_hash(key);
        let (generation, size) = {
            let mut index = self.inner.lock();
            match index.map.get(&hash) {
                Some(e) if self.inner.clock.now() >= e.stale_until => {
                    index.remove(hash);
                    drop(index);
                    self.delete_in_background(vec![hash]);
                    return None;
                }
                Some(e) => {
                    let size = e.size;
                    (index.touch(hash, now_ms()), size)
                }
                None if index.scanning => (None, 0),
                None => return None,
            }
        };
        // A record the page cache holds is read here, with no hop to the blocking pool
        // (a hop costs more than the read): most hits on a warm disk tier. Not while
        // the startup scan runs (that path updates the index).
        if generation.is_some() {
            if let Some(data) = read_cached(&self.inner.path_for(hash), size) {
                return self.inner.accept(data, hash, key, generation);
            }
        }
        let inner = self.inner.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || inner.read(hash, &key, generation))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "disk tier read task failed");
                None
            })
    }

    /// Writes `obj` (replacing any object under the same key). The returned future
    /// owns everything it needs, so the caller may `tokio::spawn` it and forget it.
    ///
    /// Resolves to `Ok(true)` when stored, `Ok(false)` when skipped because the object
    /// is already past `stale_until`.
    ///
    /// # Errors
    /// [`DiskError::TooLarge`] above [`max_object_bytes`](Self::max_object_bytes),
    /// [`DiskError::Unencodable`], or I/O / task errors.
    pub fn insert(
        &self,
        obj: Arc<CachedObject>,
    ) -> impl std::future::Future<Output = Result<bool, DiskError>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            tokio::task::spawn_blocking(move || inner.write(&obj))
                .await
                .map_err(|e| DiskError::Task(e.to_string()))?
        }
    }

    /// Deletes the object stored under `key`; returns whether one was indexed or on disk.
    pub async fn remove(&self, key: &str) -> bool {
        let hash = key_hash(key);
        let indexed = {
            let mut index = self.inner.lock();
            if index.scanning {
                index.pending.push(Purge::Key(hash));
            }
            index.remove(hash).is_some()
        };
        let inner = self.inner.clone();
        let deleted = tokio::task::spawn_blocking(move || inner.delete(hash))
            .await
            .unwrap_or(false);
        indexed || deleted
    }

    /// Deletes every object whose URL starts with `url_prefix`; returns how many.
    /// Scans the in-memory index (no directory walk). During the startup scan, files
    /// not indexed yet are deleted as the scan reaches them (not counted here).
    pub async fn purge_prefix(&self, url_prefix: &str) -> usize {
        self.purge_urls(&UrlMatch::Prefix(url_prefix.to_owned()))
            .await
    }

    /// Deletes every object whose URL `m` matches; returns how many. Same scan rules as
    /// [`purge_prefix`](Self::purge_prefix).
    pub async fn purge_urls(&self, m: &UrlMatch) -> usize {
        self.unindex_urls(m).run().await
    }

    /// The synchronous half of [`purge_urls`](Self::purge_urls): the objects leave the
    /// index (no lookup finds them any more) before it returns; the returned
    /// [`Deletion`] deletes their files.
    pub fn unindex_urls(&self, m: &UrlMatch) -> Deletion {
        let hashes = {
            let mut index = self.inner.lock();
            if index.scanning {
                index.pending.push(Purge::Urls(m.clone()));
            }
            index.remove_where(|e| m.matches(&e.url))
        };
        Deletion {
            inner: self.inner.clone(),
            hashes,
        }
    }

    /// Deletes every object tagged `tag`; returns how many. Same scan rules as
    /// [`purge_prefix`](Self::purge_prefix).
    pub async fn purge_tag(&self, tag: &str) -> usize {
        self.unindex_tag(tag).run().await
    }

    /// The synchronous half of [`purge_tag`](Self::purge_tag), as for
    /// [`unindex_urls`](Self::unindex_urls).
    pub fn unindex_tag(&self, tag: &str) -> Deletion {
        let hashes = {
            let mut index = self.inner.lock();
            if index.scanning {
                index.pending.push(Purge::Tag(tag.to_owned()));
            }
            index.remove_where(|e| e.tags.iter().any(|t| t == tag))
        };
        Deletion {
            inner: self.inner.clone(),
            hashes,
        }
    }

    /// Removes `key` from the index now and deletes its file in the background.
    pub fn remove_detached(&self, key: &str) {
        let hash = key_hash(key);
        {
            let mut index = self.inner.lock();
            if index.scanning {
                index.pending.push(Purge::Key(hash));
            }
            index.remove(hash);
        }
        self.delete_in_background(vec![hash]);
    }

    /// Deletes every indexed object past its `stale_until`; returns how many.
    pub async fn sweep_expired(&self) -> usize {
        let now = self.inner.clock.now();
        let hashes = self.inner.lock().remove_where(|e| now >= e.stale_until);
        self.delete_now(hashes).await
    }

    /// Number of indexed objects (lower than the file count while the scan runs).
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// True when no object is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Summed size in bytes of the indexed files.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    /// The configured byte bound.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Largest encoded object [`insert`](Self::insert) stores.
    pub fn max_object_bytes(&self) -> u64 {
        self.inner.max_object_bytes
    }

    async fn delete_now(&self, hashes: Vec<u128>) -> usize {
        let n = hashes.len();
        if n > 0 {
            let inner = self.inner.clone();
            let _ = tokio::task::spawn_blocking(move || inner.delete_all(&hashes)).await;
        }
        n
    }

    fn delete_in_background(&self, hashes: Vec<u128>) {
        let inner = self.inner.clone();
        drop(tokio::task::spawn_blocking(move || {
            inner.delete_all(&hashes)
        }));
    }
}

/// Files of objects already removed from the index, to delete.
#[must_use = "run() deletes the files"]
pub struct Deletion {
    inner: Arc<Inner>,
    hashes: Vec<u128>,
}

impl Deletion {
    /// How many objects left the index.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Deletes the files; returns how many objects were purged.
    pub async fn run(self) -> usize {
        let n = self.hashes.len();
        if n > 0 {
            let Deletion { inner, hashes } = self;
            let _ = tokio::task::spawn_blocking(move || inner.delete_all(&hashes)).await;
        }
        n
    }

    /// Deletes the files in the background; returns how many objects were purged.
    pub fn detach(self) -> usize {
        let n = self.hashes.len();
        if n > 0 {
            let Deletion { inner, hashes } = self;
            drop(tokio::task::spawn_blocking(move || {
                inner.delete_all(&hashes)
            }));
        }
        n
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index stays structurally valid even if a holder panicked.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_for(&self, hash: u128) -> PathBuf {
        let name = format!("{hash:032x}");
        self.objects.join(&name[..2]).join(name)
    }

    fn delete(&self, hash: u128) -> bool {
        match fs::remove_file(self.path_for(hash)) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(error = %e, "disk tier: cannot delete object file");
                false
            }
        }
    }

    fn delete_all(&self, hashes: &[u128]) {
        for &h in hashes {
            self.delete(h);
        }
    }

    /// Forgets `hash` if the index still holds the entry `generation` saw (or, with
    /// no generation, whatever it holds), and deletes the file when `delete` is set.
    fn drop_entry(&self, hash: u128, generation: Option<u64>, delete: bool) {
        let mut index = self.lock();
        let current = index.map.get(&hash).map(|e| e.generation);
        if current.is_some() && current == generation {
            index.remove(hash);
        } else if current.is_some() {
            return; // a newer insert replaced it: leave its file alone
        }
        drop(index);
        if delete {
            self.delete(hash);
        }
    }

    fn read(&self, hash: u128, key: &str, generation: Option<u64>) -> Option<CachedObject> {
        let path = self.path_for(hash);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, path = %path.display(), "disk tier read failed");
                }
                self.drop_entry(hash, generation, false);
                return None;
            }
        };
        self.accept(data, hash, key, generation)
    }

    /// The object of the record `data` read for `key`, if it is one (a corrupt or expired
    /// record is dropped).
    fn accept(
        &self,
        data: Vec<u8>,
        hash: u128,
        key: &str,
        generation: Option<u64>,
    ) -> Option<CachedObject> {
        let path = self.path_for(hash);
        let obj = match CachedObject::from_record(data) {
            Ok(obj) => obj,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "disk tier: corrupt object deleted");
                self.drop_entry(hash, generation, true);
                return None;
            }
        };
        if obj.meta.key != key {
            return None; // hash collision: the file belongs to another key
        }
        if obj.meta.is_expired(self.clock.now()) {
            self.drop_entry(hash, generation, true);
            return None;
        }
        if generation.is_none() {
            // Direct read during the startup scan: honour purges issued meanwhile,
            // and index the file so the scan need not.
            let mut index = self.lock();
            if index.purged(hash, obj.meta.url(), obj.meta.tags()) {
                drop(index);
                self.delete(hash);
                return None;
            }
            if !index.scanning && !index.map.contains_key(&hash) {
                // The scan ended while we read: it has seen this file and either indexed
                // it or dropped it (purged meanwhile; its pending purges are gone now).
                return None;
            }
            if !index.map.contains_key(&hash) {
                let size = fs::metadata(&path).map_or(0, |m| m.len());
                index.insert(hash, entry_for(&obj.meta, size, now_ms()));
            }
        }
        Some(obj)
    }

    /// Stores `obj`; when it cannot be stored, removes the older object under its key
    /// (the new response supersedes it).
    fn write(&self, obj: &CachedObject) -> Result<bool, DiskError> {
        let hash = key_hash(&obj.meta.key);
        let result = self.try_write(hash, obj);
        if !matches!(result, Ok(true)) {
            self.lock().remove(hash);
            self.delete(hash);
        }
        result
    }

    fn try_write(&self, hash: u128, obj: &CachedObject) -> Result<bool, DiskError> {
        if obj.meta.is_expired(self.clock.now()) {
            return Ok(false);
        }
        if obj.body.len() as u64 > self.max_object_bytes {
            return Err(DiskError::TooLarge {
                size: obj.body.len() as u64,
                max: self.max_object_bytes,
            });
        }
        if !obj.encodable() {
            return Err(DiskError::Unencodable);
        }
        let record = obj.encode();
        let size = record.len() as u64;
        if size > self.max_object_bytes {
            return Err(DiskError::TooLarge {
                size,
                max: self.max_object_bytes,
            });
        }
        let path = self.path_for(hash);
        let seq = self.tmp_seq.fetch_add(1, Relaxed);
        let tmp = self.tmp.join(format!("{hash:032x}.{seq}.tmp"));
        if let Err(e) = self.write_file(&tmp, &path, &record) {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        let victims = {
            let mut index = self.lock();
            index.insert(hash, entry_for(&obj.meta, size, now_ms()));
            index.evict(self.max_bytes, self.clock.now())
        };
        self.delete_all(&victims);
        Ok(true)
    }

    fn write_file(&self, tmp: &Path, path: &Path, record: &[u8]) -> io::Result<()> {
        let mut f = File::create(tmp)?;
        f.write_all(record)?;
        if self.fsync {
            f.sync_all()?;
        }
        drop(f);
        let dir = path.parent().unwrap_or(&self.objects);
        fs::create_dir_all(dir)?;
        fs::rename(tmp, path)?;
        if self.fsync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn entry_for(meta: &object::ObjectMeta, size: u64, access: u64) -> Entry {
    Entry {
        size,
        url: meta.url().to_owned(),
        tags: meta.tags().to_vec(),
        stale_until: meta.stale_until(),
        access,
        generation: 0,
    }
}

/// Why a file was not indexed by the scan.
#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
    #[error("record does not belong under this file name")]
    Misplaced,
}

/// Reads header + meta of one file and checks it against the file name and size.
fn read_meta_file(path: &Path, hash: u128) -> Result<(object::RecordMeta, u64, u64), ScanError> {
    let mut f = File::open(path)?;
    let md = f.metadata()?;
    let mtime = md.modified().map_or(0, system_ms);
    let mut prefix = vec![0u8; HEADER_LEN];
    if md.len() < HEADER_LEN as u64 {
        return Err(DecodeError::Truncated.into());
    }
    f.read_exact(&mut prefix)?;
    let want = object::meta_prefix_len(&prefix)?;
    if want as u64 > md.len() {
        return Err(DecodeError::Truncated.into());
    }
    prefix.resize(want, 0);
    f.read_exact(&mut prefix[HEADER_LEN..])?;
    let rm = object::decode_meta(&prefix)?;
    if rm.total_len != md.len() {
        return Err(DecodeError::LengthMismatch {
            declared: rm.total_len,
            actual: md.len(),
        }
        .into());
    }
    if key_hash(&rm.meta.key) != hash {
        return Err(ScanError::Misplaced);
    }
    Ok((rm, md.len(), mtime))
}

/// The startup scan: clears temp files, indexes every valid object file, deletes
/// corrupt, misplaced and expired ones, then evicts down to the bound. Stops early
/// if the tier is dropped.
fn scan(weak: Weak<Inner>) {
    let Some((objects, tmp)) = weak.upgrade().map(|i| (i.objects.clone(), i.tmp.clone())) else {
        return;
    };
    if let Ok(entries) = fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    let shards: Vec<PathBuf> = match fs::read_dir(&objects) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "disk tier: cannot list object directory");
            Vec::new()
        }
    };
    let mut indexed = 0usize;
    let mut dropped = 0usize;
    for shard in shards {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let Ok(files) = fs::read_dir(&shard) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let name = file.file_name();
            let Some(hash) = name
                .to_str()
                .filter(|n| n.len() == 32)
                .and_then(|n| u128::from_str_radix(n, 16).ok())
            else {
                continue; // not ours
            };
            match read_meta_file(&path, hash) {
                Ok((rm, size, mtime)) => {
                    if rm.meta.is_expired(inner.clock.now()) {
                        let _ = fs::remove_file(&path);
                        dropped += 1;
                        continue;
                    }
                    let mut index = inner.lock();
                    if index.map.contains_key(&hash) {
                        continue; // inserted or read since open: newer than what we saw
                    }
                    if index.purged(hash, rm.meta.url(), rm.meta.tags()) {
                        drop(index);
                        let _ = fs::remove_file(&path);
                        dropped += 1;
                        continue;
                    }
                    index.insert(hash, entry_for(&rm.meta, size, mtime));
                    indexed += 1;
                }
                Err(ScanError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(ScanError::Io(e)) => {
                    tracing::warn!(error = %e, path = %path.display(), "disk tier scan: read failed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "disk tier scan: dropping file");
                    let _ = fs::remove_file(&path);
                    dropped += 1;
                }
            }
        }
    }
    let Some(inner) = weak.upgrade() else {
        return;
    };
    let victims = {
        let mut index = inner.lock();
        index.scanning = false;
        index.pending.clear();
        index.evict(inner.max_bytes, inner.clock.now())
    };
    inner.delete_all(&victims);
    tracing::info!(
        indexed,
        dropped,
        evicted = victims.len(),
        "disk tier index rebuilt"
    );
    inner.ready.send_replace(true);
}

/// FNV-1a 128-bit hash of the key: stable across processes and Rust versions.
fn key_hash(key: &str) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    key.bytes()
        .fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_ms() -> u64 {
    system_ms(SystemTime::now())
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
