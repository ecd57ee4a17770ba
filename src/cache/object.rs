//! The stored cache object ([`CachedObject`]) and its versioned, checksummed binary encoding.
//!
//! # Record layout (version 1, all integers little-endian)
//!
//! ```text
//! header   0..4    magic  b"TRCO"
//!          4       version (1)
//!          5       flags (must be 0)
//!          6..8    status u16
//!          8..16   total_len u64   length of the whole record, trailer included
//!          16..20  meta_len u32    length of the meta section that follows the header
//!          20..24  meta_crc u32    CRC32 of bytes 0..20 ++ meta section
//! meta     4 x time (secs u64, nanos u32): request, response, fresh_until, stale_until
//!          key (u32 len + UTF-8), url (u32 len + UTF-8), tags (u32 count, each u32 len + UTF-8)
//! headers  u32 count, each: u16 name len + name, u32 value len + value (repeats kept in order)
//! body     u64 len + bytes
//! trailer  u32 CRC32 of everything before it
//! ```
//!
//! The header + meta prefix has its own CRC so the disk tier can rebuild its index
//! from the first few hundred bytes of each file ([`decode_meta`]); the trailer CRC
//! covers the whole record and is checked by [`CachedObject::decode`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cache::fields::{FieldSource, StoredFields};

pub use bytestring::ByteString;

/// Magic bytes at the start of every encoded record.
pub const MAGIC: [u8; 4] = *b"TRCO";
/// Current encoding version.
pub const VERSION: u8 = 1;
/// Length of the fixed record header.
pub const HEADER_LEN: usize = 24;
/// Records up to this size are copied out of their read buffer when made objects
/// ([`CachedObject::from_record`]).
pub const COPY_RECORD_MAX: usize = 256 * 1024;
/// Upper bound on the meta section (key, url, tags); longer records are rejected
/// on encode and decode so index rebuilds never read unbounded prefixes.
pub const MAX_META_LEN: usize = 1 << 20;
/// Fixed per-object memory counted by [`CachedObject::size`] beyond its bytes: the
/// `CachedObject` and its `Arc`, the memory tier's entry and index slot, the shared
/// body's reference count, and the allocator's headers and rounding (measured with
/// `scripts/perf/scale.sh --scenarios memory-per-object`: docs/perf-scale.md).
pub const OBJECT_OVERHEAD: usize = 448;

/// Why an encoded record was rejected. Decoding never panics; every variant means
/// "treat as a miss and drop the record".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is shorter than the fixed header + trailer, or a field runs past the end.
    #[error("record truncated")]
    Truncated,
    /// The magic bytes do not match [`MAGIC`].
    #[error("bad magic")]
    BadMagic,
    /// The version byte is not one this code understands.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The declared total length differs from the input length.
    #[error("length mismatch: header says {declared}, got {actual}")]
    LengthMismatch {
        /// Length written in the header.
        declared: u64,
        /// Length of the input.
        actual: u64,
    },
    /// A CRC32 (meta or whole-record) did not match.
    #[error("checksum mismatch")]
    Checksum,
    /// A field is well-framed but invalid (bad UTF-8, status, header, time, flags, trailing bytes).
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// Metadata of a stored object; identical in every tier.
///
/// On every stored object, so kept small (72 bytes; 136 with its times as `SystemTime`s
/// and its URL and tags inline): at 10^6 objects each byte is a megabyte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full cache key (primary key + "\n" + secondary/Vary key); identity in every tier.
    pub key: ByteString,
    /// The URL and the tags, for the few objects that have either ([`ObjectMeta::url`],
    /// [`ObjectMeta::tags`]).
    extra: Option<Box<MetaExtra>>,
    /// When the request that produced this response was sent upstream.
    request_time: Stamp,
    /// When the response was received.
    response_time: Stamp,
    /// End of freshness.
    fresh_until: Stamp,
    /// End of grace; after this the object is useless and may be dropped.
    stale_until: Stamp,
}

/// What few objects carry beside their key (boxed in [`ObjectMeta`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct MetaExtra {
    /// The URL purges match on when it is not the key's own (`key::url_of(key)`, e.g.
    /// `http://example.com/a/b?x=1`): `None` for every object torii stores, so the URL is
    /// not held twice.
    url: Option<Box<str>>,
    /// Surrogate keys from `Surrogate-Key` / `Cache-Tag`.
    tags: Vec<String>,
}

/// A wall-clock instant as an object keeps it: nanoseconds since the Unix epoch, 8 bytes
/// where a `SystemTime` takes 16. Instants before the epoch are the epoch; the range
/// ends in 2554.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(u64);

impl Stamp {
    fn of(t: SystemTime) -> Stamp {
        let nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Stamp(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }
}

impl ObjectMeta {
    /// The metadata of an object stored under `key` at these times, without a URL of its
    /// own or tags.
    pub fn new(
        key: impl Into<ByteString>,
        request_time: SystemTime,
        response_time: SystemTime,
        fresh_until: SystemTime,
        stale_until: SystemTime,
    ) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            extra: None,
            request_time: Stamp::of(request_time),
            response_time: Stamp::of(response_time),
            fresh_until: Stamp::of(fresh_until),
            stale_until: Stamp::of(stale_until),
        }
    }

    /// With every time `t` (a placeholder, or a test's).
    pub fn at(key: impl Into<ByteString>, t: SystemTime) -> ObjectMeta {
        ObjectMeta::new(key, t, t, t, t)
    }

    /// With `url` as its URL field ([`ObjectMeta::url_field`]).
    pub fn with_url(mut self, url: Option<Box<str>>) -> ObjectMeta {
        self.set_extra(|e| e.url = url);
        self
    }

    /// With these tags.
    pub fn with_tags(mut self, tags: Vec<String>) -> ObjectMeta {
        if !tags.is_empty() || self.extra.is_some() {
            self.set_extra(|e| e.tags = tags);
        }
        self
    }

    fn set_extra(&mut self, f: impl FnOnce(&mut MetaExtra)) {
        let mut extra = self.extra.take().map(|b| *b).unwrap_or_default();
        f(&mut extra);
        self.extra = (extra != MetaExtra::default()).then(|| Box::new(extra));
    }

    /// URL part of the primary key, e.g. `http://example.com/a/b?x=1`; prefix purges match on it.
    pub fn url(&self) -> &str {
        self.own_url()
            .unwrap_or_else(|| crate::cache::key::url_of(&self.key))
    }

    /// The URL when it is not the key's own.
    pub fn own_url(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.url.as_deref())
    }

    /// The `url` field for an object with `key` whose URL is `url`: `None` when it is the
    /// key's own.
    pub fn url_field(key: &str, url: &str) -> Option<Box<str>> {
        (crate::cache::key::url_of(key) != url).then(|| url.into())
    }

    /// Surrogate keys from `Surrogate-Key` / `Cache-Tag`.
    pub fn tags(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| &e.tags)
    }

    /// When the request that produced this response was sent upstream.
    pub fn request_time(&self) -> SystemTime {
        self.request_time.time()
    }

    /// When the response was received.
    pub fn response_time(&self) -> SystemTime {
        self.response_time.time()
    }

    /// End of freshness.
    pub fn fresh_until(&self) -> SystemTime {
        self.fresh_until.time()
    }

    /// End of grace; after this the object is useless and may be dropped.
    pub fn stale_until(&self) -> SystemTime {
        self.stale_until.time()
    }

    /// Sets when the request was sent upstream.
    pub fn set_request_time(&mut self, t: SystemTime) {
        self.request_time = Stamp::of(t);
    }

    /// Sets the end of freshness.
    pub fn set_fresh_until(&mut self, t: SystemTime) {
        self.fresh_until = Stamp::of(t);
    }

    /// Sets the end of grace.
    pub fn set_stale_until(&mut self, t: SystemTime) {
        self.stale_until = Stamp::of(t);
    }

    /// Sets the URL field ([`ObjectMeta::url_field`]).
    pub fn set_url(&mut self, url: Option<Box<str>>) {
        self.set_extra(|e| e.url = url);
    }

    /// Makes the object stale from `t` on, if it is fresh longer (a soft purge's copy).
    pub fn stale_from(&mut self, t: SystemTime) {
        self.fresh_until = self.fresh_until.min(Stamp::of(t));
    }

    /// True while `now` is before `fresh_until`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        Stamp::of(now) < self.fresh_until
    }

    /// True once `now` has reached `stale_until` (the object may be dropped).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        Stamp::of(now) >= self.stale_until
    }
}

/// A cached response; immutable once built and shared as `Arc<CachedObject>`.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedObject {
    /// Identity, tags and timing.
    pub meta: ObjectMeta,
    /// Response status.
    pub status: StatusCode,
    /// Response fields as stored (compact; `StoredFields::to_map` for a map).
    pub headers: StoredFields,
    /// Whole body; a hit clones this `Bytes` (no copy). For an object built by
    /// [`CachedObject::new`] or [`ObjectParts::into_object`], in one allocation with the
    /// key and the fields; with the key alone when `into_object` finds its fields to be
    /// the block the objects stored before it share ([`StoredFields::rebased`]).
    pub body: Bytes,
    /// The freshness computed for this object under one route policy (see
    /// [`ObjectMemo`]); not part of the object's value.
    pub memo: ObjectMemo,
}

/// A response on its way to becoming a [`CachedObject`]: everything but the body.
#[derive(Debug, Clone)]
pub struct ObjectParts {
    /// Identity, tags and timing.
    pub meta: ObjectMeta,
    /// Response status.
    pub status: StatusCode,
    /// Response fields as they will be stored.
    pub headers: PartsFields,
    /// The freshness the store computed and the policy it was computed for, kept as the
    /// object's ([`CachedObject::with_freshness`]).
    pub freshness: Option<(u64, crate::cache::policy::Freshness)>,
}

/// The fields of an object being filled: written as stored once, when the response
/// arrives (the usual case), or a map once a step rewrites them while the body streams
/// (compression's `Vary` and `Content-Encoding`: [`PartsFields::map_mut`]).
#[derive(Debug, Clone)]
pub enum PartsFields {
    /// As they will be stored.
    Lines(StoredFields),
    /// As a map, rewritten.
    Map(HeaderMap),
}

impl PartsFields {
    /// The fields as a map to rewrite (made from the lines the first time).
    pub fn map_mut(&mut self) -> &mut HeaderMap {
        if let PartsFields::Lines(lines) = self {
            *self = PartsFields::Map(lines.to_map());
        }
        match self {
            PartsFields::Map(map) => map,
            PartsFields::Lines(_) => unreachable!("made a map above"),
        }
    }
}

impl FieldSource for PartsFields {
    fn field(&self, name: &HeaderName) -> Option<&[u8]> {
        match self {
            PartsFields::Lines(lines) => lines.field(name),
            PartsFields::Map(map) => map.field(name),
        }
    }

    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        match self {
            PartsFields::Lines(lines) => lines.any_value(name, f),
            PartsFields::Map(map) => map.any_value(name, f),
        }
    }
}

impl ObjectParts {
    /// The object of these parts and `body` (given as its chunks, copied once).
    pub fn into_object(self, body: &[Bytes]) -> CachedObject {
        let (key, headers, body) = match &self.headers {
            PartsFields::Lines(lines) => lines.rebased(self.meta.key.as_bytes(), body),
            PartsFields::Map(map) => {
                StoredFields::with_key_and_body(self.meta.key.as_bytes(), map, body)
            }
        };
        CachedObject::assembled(self.meta, self.status, key, headers, body)
            .with_kept(self.freshness)
    }
}

impl CachedObject {
    /// The object of `meta`, `status`, the fields of `headers` and `body` (its chunks),
    /// with key, fields and body in one allocation (copied once).
    fn with_chunks(
        meta: ObjectMeta,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[impl AsRef<[u8]>],
    ) -> CachedObject {
        let (key, headers, body) =
            StoredFields::with_key_and_body(meta.key.as_bytes(), headers, body);
        CachedObject::assembled(meta, status, key, headers, body)
    }

    /// The object of `meta` and `status` with its key, fields and body (the key's bytes a
    /// copy of `meta.key`'s, in one allocation with the rest).
    fn assembled(
        mut meta: ObjectMeta,
        status: StatusCode,
        key: Bytes,
        headers: StoredFields,
        body: Bytes,
    ) -> CachedObject {
        // The key's bytes were a `str`: always UTF-8.
        if let Ok(key) = ByteString::try_from(key) {
            meta.key = key;
        }
        CachedObject {
            meta,
            status,
            headers,
            body,
            memo: ObjectMemo::default(),
        }
    }

    fn with_kept(self, freshness: Option<(u64, crate::cache::policy::Freshness)>) -> Self {
        match freshness {
            Some((id, f)) => self.with_freshness(id, f),
            None => self,
        }
    }
}

/// Values computed from an immutable object and kept beside it: its freshness, tagged
/// with what it was computed for (the first `(id, value)` set stays). Copies of the object start empty (a copy may differ,
/// e.g. a soft purge's stale copy), and it never counts in comparisons.
///
/// It is on every stored object, so it is kept small (96 bytes; 160 with a plain
/// `Freshness`, a `(usize, bool)` cell and a flag of its own): at 10^6 objects each byte
/// is a megabyte.
#[derive(Default)]
pub struct ObjectMemo(
    std::sync::OnceLock<(u64, PackedFreshness)>,
    /// The largest `Age` (seconds) sent for this object: a later one is never smaller.
    std::sync::atomic::AtomicU64,
    /// Two things in one word. Whether the object needs no coding work for any client
    /// under one route's compression settings, tagged by their address: `tag | inert`
    /// (an address of a value aligned to 4 has its two low bits clear), the tag 0 while
    /// unset (`proxy::compress::hit_as_is`). And [`RECODING`]: whether a hit is storing
    /// this (identity) object's encoded variant in its place (`Fill::recode`): one at
    /// a time.
    std::sync::atomic::AtomicUsize,
    /// The fields as a `HeaderMap`, once a hit needed one (`CachedObject::fields_map`).
    /// Boxed: 16 bytes on an object that never needs it, not a `HeaderMap`'s ~96.
    std::sync::OnceLock<Box<HeaderMap>>,
);

impl ObjectMemo {
    /// The value computed for `id`, computing (and keeping) it if none is kept yet.
    pub fn get_or(
        &self,
        id: u64,
        compute: impl FnOnce() -> crate::cache::policy::Freshness,
    ) -> crate::cache::policy::Freshness {
        match self.0.get() {
            Some((kept, f)) if *kept == id => f.unpack(),
            Some(_) => compute(),
            None => self
                .0
                .get_or_init(|| (id, PackedFreshness::pack(&compute())))
                .1
                .unpack(),
        }
    }

    /// The kept value and what it was computed for, if any.
    fn kept(&self) -> Option<(u64, crate::cache::policy::Freshness)> {
        self.0.get().map(|(id, f)| (*id, f.unpack()))
    }
}

/// A [`Freshness`](crate::cache::policy::Freshness) in 48 bytes instead of 88: its
/// durations and its store time as nanoseconds (exact for 584 years, saturating past
/// that; a store time before 1970 reads as 1970), its flags in one byte.
#[derive(Clone, Copy)]
struct PackedFreshness {
    lifetime: u64,
    age_at_store: u64,
    stored_at: u64,
    stale_while_revalidate: u64,
    stale_if_error: u64,
    flags: u8,
}

impl PackedFreshness {
    const MUST_REVALIDATE: u8 = 1;
    const NO_CACHE: u8 = 2;
    const IMMUTABLE: u8 = 4;

    fn pack(f: &crate::cache::policy::Freshness) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        PackedFreshness {
            lifetime: nanos(f.lifetime),
            age_at_store: nanos(f.age_at_store),
            stored_at: nanos(f.stored_at.duration_since(UNIX_EPOCH).unwrap_or_default()),
            stale_while_revalidate: nanos(f.stale_while_revalidate),
            stale_if_error: nanos(f.stale_if_error),
            flags: flag(f.must_revalidate, Self::MUST_REVALIDATE)
                | flag(f.no_cache, Self::NO_CACHE)
                | flag(f.immutable, Self::IMMUTABLE),
        }
    }

    fn unpack(&self) -> crate::cache::policy::Freshness {
        crate::cache::policy::Freshness {
            lifetime: Duration::from_nanos(self.lifetime),
            age_at_store: Duration::from_nanos(self.age_at_store),
            stored_at: UNIX_EPOCH + Duration::from_nanos(self.stored_at),
            stale_while_revalidate: Duration::from_nanos(self.stale_while_revalidate),
            stale_if_error: Duration::from_nanos(self.stale_if_error),
            must_revalidate: self.flags & Self::MUST_REVALIDATE != 0,
            no_cache: self.flags & Self::NO_CACHE != 0,
            immutable: self.flags & Self::IMMUTABLE != 0,
        }
    }
}

impl ObjectMemo {
    /// The value kept for `tag`, computing (and keeping, if none is kept yet) it.
    /// `tag` is the address of a value aligned to 4 (its two low bits clear, never 0).
    pub fn inert_or(&self, tag: usize, compute: impl FnOnce() -> bool) -> bool {
        use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
        debug_assert!(tag != 0 && tag & 3 == 0, "tag: an aligned address");
        let mut kept = self.2.load(Acquire);
        if kept & !3 != 0 {
            return if kept & !3 == tag {
                kept & INERT != 0
            } else {
                compute()
            };
        }
        let inert = compute();
        // The first value kept stays (as a OnceLock would keep it); the recoding bit
        // may change meanwhile.
        while kept & !3 == 0 {
            let new = kept | tag | if inert { INERT } else { 0 };
            match self.2.compare_exchange_weak(kept, new, Release, Relaxed) {
                Ok(_) => break,
                Err(now) => kept = now,
            }
        }
        inert
    }
}

/// [`ObjectMemo`]'s bit of the compression verdict: no coding work.
const INERT: usize = 1;
/// [`ObjectMemo`]'s bit of a re-encoding under way.
const RECODING: usize = 2;

impl ObjectMemo {
    /// Claims the re-encoding of this object for one hit; false if another hit has it.
    pub fn claim_recode(&self) -> bool {
        self.2
            .fetch_or(RECODING, std::sync::atomic::Ordering::AcqRel)
            & RECODING
            == 0
    }

    /// Gives a claim back (the re-encoding did not store anything).
    pub fn release_recode(&self) {
        self.2
            .fetch_and(!RECODING, std::sync::atomic::Ordering::Release);
    }
}

/// Bytes held by the field maps kept on objects (`CachedObject::fields_map`), process-wide.
static KEPT_MAPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The most [`KEPT_MAPS`] may hold; set from the memory tier's size.
static KEPT_MAPS_BUDGET: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Lets kept field maps hold up to `bytes` in all (the memory tier gives them 1/16 of
/// its size: memory the object weights do not count).
pub fn set_kept_maps_budget(bytes: usize) {
    KEPT_MAPS_BUDGET.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// Bytes held by kept field maps now.
pub fn kept_maps_bytes() -> usize {
    KEPT_MAPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// What a kept map costs: its box and tables (an entry, about 104 bytes, and its index
/// slot per field it has room for); its values share the object's block.
fn map_cost(map: &HeaderMap) -> usize {
    std::mem::size_of::<HeaderMap>() + map.capacity() * 112
}

impl Drop for ObjectMemo {
    fn drop(&mut self) {
        if let Some(map) = self.3.get() {
            KEPT_MAPS.fetch_sub(map_cost(map), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Clone for ObjectMemo {
    fn clone(&self) -> Self {
        // A copy (a soft purge's stale copy) is the same object to clients: its Age
        // goes on from where this one's is.
        let memo = ObjectMemo::default();
        memo.1.store(
            self.1.load(std::sync::atomic::Ordering::Relaxed),
            std::sync::atomic::Ordering::Relaxed,
        );
        memo
    }
}

impl PartialEq for ObjectMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for ObjectMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectMemo")
    }
}

impl CachedObject {
    /// The `Age` to send for this object, given its current age in seconds: never less
    /// than an `Age` already sent for it (a wall clock stepping back, or freshness
    /// computed under another policy, must not make it go backwards). One atomic
    /// operation, no allocation.
    pub fn age_to_send(&self, age_secs: u64) -> u64 {
        let sent = self
            .memo
            .1
            .fetch_max(age_secs, std::sync::atomic::Ordering::Relaxed);
        sent.max(age_secs)
    }

    /// The stored fields as a `HeaderMap` (`StoredFields::to_map`, values sharing the
    /// block), built by the first hit that answers from a map (HTTP/2, HEAD, a range, a
    /// 304) and kept for the next: parsing every name on each such hit cost an HTTP/2
    /// hit about 9k instructions (h2c hit, callgrind: 53.4k → 45.7k per request, with
    /// `proxy::cached::age`). Only objects hit that way pay for the map's memory, and all
    /// kept maps together stay within [`set_kept_maps_budget`] (past it a hit builds
    /// its own map, as before): the memory tier's weights do not count them.
    pub fn fields_map(&self) -> std::borrow::Cow<'_, HeaderMap> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(map) = self.memo.3.get() {
            return std::borrow::Cow::Borrowed(map);
        }
        let mut map = self.headers.to_map();
        // Room for what a hit adds (`Age`, `Via`, `X-Cache`, `X-Request-Id`, hyper's
        // `Content-Length`): a copy keeps the index table, so adding them does not
        // rehash every field (h2c hit: 45.7k → 44.2k instructions, 6.1 → 5.1 mallocs).
        map.reserve(6);
        let cost = map_cost(&map);
        let kept = KEPT_MAPS.fetch_add(cost, Relaxed);
        if kept + cost > KEPT_MAPS_BUDGET.load(Relaxed) {
            KEPT_MAPS.fetch_sub(cost, Relaxed);
            return std::borrow::Cow::Owned(map);
        }
        let mut ours = Some(map);
        let kept = self
            .memo
            .3
            .get_or_init(|| Box::new(ours.take().unwrap_or_default()));
        if ours.is_some() {
            // Another hit kept its map first: this one's cost was never held.
            KEPT_MAPS.fetch_sub(cost, Relaxed);
        }
        std::borrow::Cow::Borrowed(kept)
    }

    /// An object of `meta`, `status`, the fields of `headers` and `body`, with fields and
    /// body in one allocation (the body is copied once).
    pub fn new(meta: ObjectMeta, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        CachedObject::with_chunks(meta, status, headers, &[body])
    }

    /// The parts of this object (its fields as a map, its kept freshness), for a new
    /// object made from it.
    pub fn parts(&self) -> ObjectParts {
        ObjectParts {
            meta: self.meta.clone(),
            status: self.status,
            headers: PartsFields::Lines(self.headers.clone()),
            freshness: self.memo.kept(),
        }
    }

    /// Keeps `freshness`, computed for the policy `id`, as this object's (see
    /// [`ObjectMemo::get_or`]): what the store computed, so hits need not.
    pub fn with_freshness(self, id: u64, freshness: crate::cache::policy::Freshness) -> Self {
        let _ = self.memo.0.set((id, PackedFreshness::pack(&freshness)));
        self
    }

    /// The head of a fresh HTTP/1 hit, pre-encoded ([`hyper::RawFields`] lines): every
    /// stored field but the framing ones (hyper writes `Content-Length` from the body),
    /// before the answer's own `X-Cache` and `Via` (`hyper::RawFields::tail`). `None` when
    /// the object has no `Date` (hyper would add the current one, so such a hit goes the
    /// ordinary way).
    pub fn raw_fields(&self) -> Option<Bytes> {
        self.headers.raw()
    }

    /// Weight used by the byte-bounded tiers: what the object costs in memory. Its
    /// bytes (fields block, body, key, tags) and a fixed [`OBJECT_OVERHEAD`] for the
    /// object itself, its `Arc`, the memory tier's entry and allocator rounding. Never 0.
    pub fn size(&self) -> usize {
        let tags: usize = self.meta.tags().iter().map(|t| t.len() + 24).sum();
        OBJECT_OVERHEAD
            + self.headers.block_len()
            + self.body.len()
            + self.meta.key.len()
            + self.meta.own_url().map_or(0, str::len)
            + tags
    }

    /// A copy whose `fresh_until` is `min(fresh_until, now)`, i.e. stale from `now` on
    /// (used by soft purges). Body and header storage are shared, not copied.
    pub fn stale_copy(&self, now: SystemTime) -> CachedObject {
        let mut copy = self.clone();
        copy.meta.stale_from(now);
        copy
    }

    /// Encodes the object in the current record format (see the module docs).
    ///
    /// Times before the Unix epoch are stored as the epoch. Fields that do not fit
    /// their length prefix (a header value over 4 GiB, a meta section over
    /// [`MAX_META_LEN`]) cannot be represented: for such objects (see
    /// [`CachedObject::encodable`]) the returned record fails to decode; it never panics.
    pub fn encode(&self) -> Vec<u8> {
        let url = self.meta.url();
        let mut meta = Vec::with_capacity(64 + self.meta.key.len() + url.len());
        for t in [
            self.meta.request_time(),
            self.meta.response_time(),
            self.meta.fresh_until(),
            self.meta.stale_until(),
        ] {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
            meta.extend_from_slice(&d.as_secs().to_le_bytes());
            meta.extend_from_slice(&d.subsec_nanos().to_le_bytes());
        }
        put_str(&mut meta, &self.meta.key);
        put_str(&mut meta, url);
        put_u32(&mut meta, self.meta.tags().len());
        for tag in self.meta.tags() {
            put_str(&mut meta, tag);
        }

        let headers_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum();
        let total = HEADER_LEN + meta.len() + 4 + headers_len + 8 + self.body.len() + 4;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&self.status.as_u16().to_le_bytes());
        out.extend_from_slice(&(total as u64).to_le_bytes());
        put_u32(&mut out, meta.len());
        let mut h = crc32fast::Hasher::new();
        h.update(&out[..20]);
        h.update(&meta);
        out.extend_from_slice(&h.finalize().to_le_bytes());
        out.extend_from_slice(&meta);

        put_u32(&mut out, self.headers.len());
        for (n, value) in self.headers.iter() {
            out.extend_from_slice(&(n.len().min(u16::MAX as usize) as u16).to_le_bytes());
            out.extend_from_slice(n);
            put_u32(&mut out, value.len());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&(self.body.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), total);
        out
    }

    /// Whether [`encode`](Self::encode) can represent this object faithfully
    /// (meta section within [`MAX_META_LEN`], every header value under 4 GiB).
    pub fn encodable(&self) -> bool {
        let meta = 48
            + 8
            + self.meta.key.len()
            + self.meta.url().len()
            + 4
            + self.meta.tags().iter().map(|t| 4 + t.len()).sum::<usize>();
        meta <= MAX_META_LEN
            && self
                .headers
                .iter()
                .all(|(_, v)| v.len() < u32::MAX as usize)
    }

    /// Decodes a record, copying the body out of `buf` (into one allocation with the
    /// fields, as [`CachedObject::new`]).
    ///
    /// # Errors
    /// Any [`DecodeError`]: truncation, bad magic/version, length or CRC mismatch,
    /// invalid fields. Never panics and never allocates more than `buf.len()` worth.
    pub fn decode(buf: &[u8]) -> Result<CachedObject, DecodeError> {
        let (parts, body) = parse(buf)?;
        Ok(CachedObject::new(
            parts.meta,
            parts.status,
            &parts.headers,
            &buf[body],
        ))
    }

    /// A record read from a tier (disk, Redis) as an object in memory: one up to
    /// [`COPY_RECORD_MAX`] bytes is copied into one allocation with its fields (what
    /// [`size`](Self::size) accounts for); a larger one keeps `record` for its body.
    ///
    /// # Errors
    /// Same as [`decode`](Self::decode).
    pub fn from_record(record: Vec<u8>) -> Result<CachedObject, DecodeError> {
        if record.len() <= COPY_RECORD_MAX {
            CachedObject::decode(&record)
        } else {
            CachedObject::decode_bytes(Bytes::from(record))
        }
    }

    /// Like [`decode`](Self::decode) but the body is a zero-copy slice of `buf`.
    ///
    /// # Errors
    /// Same as [`decode`](Self::decode).
    pub fn decode_bytes(buf: Bytes) -> Result<CachedObject, DecodeError> {
        let (parts, body) = parse(&buf)?;
        Ok(parts.into_object(buf.slice(body)))
    }
}

/// What [`decode_meta`] returns: the meta section plus framing facts about the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// Decoded metadata.
    pub meta: ObjectMeta,
    /// Response status.
    pub status: StatusCode,
    /// Length of the whole record as declared in its header (already meta-CRC checked).
    pub total_len: u64,
}

/// From the first [`HEADER_LEN`] bytes of a record, the number of bytes
/// (header + meta section) that [`decode_meta`] needs.
///
/// # Errors
/// [`DecodeError::Truncated`], `BadMagic`, `UnsupportedVersion`, or `Invalid` when
/// the meta length exceeds [`MAX_META_LEN`].
pub fn meta_prefix_len(header: &[u8]) -> Result<usize, DecodeError> {
    let fixed = parse_fixed(header)?;
    Ok(HEADER_LEN + fixed.meta_len)
}

/// Decodes only the header and meta section of a record (verifying the meta CRC),
/// without touching headers or body. `prefix` may be the whole record or just its
/// first [`meta_prefix_len`] bytes.
///
/// # Errors
/// As for [`CachedObject::decode`], restricted to the prefix.
pub fn decode_meta(prefix: &[u8]) -> Result<RecordMeta, DecodeError> {
    let fixed = parse_fixed(prefix)?;
    let meta_end = HEADER_LEN + fixed.meta_len;
    let meta_bytes = prefix
        .get(HEADER_LEN..meta_end)
        .ok_or(DecodeError::Truncated)?;
    check_meta_crc(prefix, meta_bytes, fixed.meta_crc)?;
    let mut r = Reader::new(meta_bytes);
    let meta = read_meta(&mut r)?;
    if !r.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes in meta section"));
    }
    Ok(RecordMeta {
        meta,
        status: fixed.status,
        total_len: fixed.total_len,
    })
}

struct Fixed {
    status: StatusCode,
    total_len: u64,
    meta_len: usize,
    meta_crc: u32,
}

fn parse_fixed(buf: &[u8]) -> Result<Fixed, DecodeError> {
    let h = buf.get(..HEADER_LEN).ok_or(DecodeError::Truncated)?;
    if h[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if h[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(h[4]));
    }
    if h[5] != 0 {
        return Err(DecodeError::Invalid("flags"));
    }
    let mut r = Reader::new(&h[6..]);
    let status = r.u16()?;
    let total_len = r.u64()?;
    let meta_len = r.u32()? as usize;
    let meta_crc = r.u32()?;
    if meta_len > MAX_META_LEN {
        return Err(DecodeError::Invalid("meta section too long"));
    }
    let status = StatusCode::from_u16(status).map_err(|_| DecodeError::Invalid("status"))?;
    Ok(Fixed {
        status,
        total_len,
        meta_len,
        meta_crc,
    })
}

fn check_meta_crc(buf: &[u8], meta: &[u8], expected: u32) -> Result<(), DecodeError> {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..20]);
    h.update(meta);
    if h.finalize() != expected {
        return Err(DecodeError::Checksum);
    }
    Ok(())
}

struct Parts {
    meta: ObjectMeta,
    status: StatusCode,
    headers: HeaderMap,
}

impl Parts {
    fn into_object(self, body: Bytes) -> CachedObject {
        CachedObject {
            meta: self.meta,
            status: self.status,
            headers: StoredFields::from_map(&self.headers),
            body,
            memo: ObjectMemo::default(),
        }
    }
}

/// Validates the whole record and returns everything but the body, plus the body's range.
fn parse(buf: &[u8]) -> Result<(Parts, std::ops::Range<usize>), DecodeError> {
    if buf.len() < HEADER_LEN + 4 {
        return Err(DecodeError::Truncated);
    }
    let fixed = parse_fixed(buf)?;
    if fixed.total_len != buf.len() as u64 {
        return Err(DecodeError::LengthMismatch {
            declared: fixed.total_len,
            actual: buf.len() as u64,
        });
    }
    let (content, trailer) = buf.split_at(buf.len() - 4);
    let mut t = Reader::new(trailer);
    if crc32fast::hash(content) != t.u32()? {
        return Err(DecodeError::Checksum);
    }
    let meta_end = HEADER_LEN + fixed.meta_len;
    let meta_bytes = content
        .get(HEADER_LEN..meta_end)
        .ok_or(DecodeError::Truncated)?;
    check_meta_crc(content, meta_bytes, fixed.meta_crc)?;
    let mut r = Reader::new(meta_bytes);
    let meta = read_meta(&mut r)?;
    if !r.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes in meta section"));
    }

    let mut r = Reader::new(&content[meta_end..]);
    // Each header needs at least 6 bytes of framing: bound the count by the input.
    let count = r.count(6)?;
    let mut headers = HeaderMap::with_capacity(count);
    for _ in 0..count {
        let name_len = r.u16()? as usize;
        let name = HeaderName::from_bytes(r.take(name_len)?)
            .map_err(|_| DecodeError::Invalid("header name"))?;
        let value_len = r.u32()? as usize;
        let value = HeaderValue::from_bytes(r.take(value_len)?)
            .map_err(|_| DecodeError::Invalid("header value"))?;
        headers.append(name, value);
    }
    let body_len = usize::try_from(r.u64()?).map_err(|_| DecodeError::Truncated)?;
    let start = content.len() - r.remaining();
    r.take(body_len)?;
    if !r.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes after body"));
    }
    let parts = Parts {
        meta,
        status: fixed.status,
        headers,
    };
    Ok((parts, start..start + body_len))
}

fn read_meta(r: &mut Reader<'_>) -> Result<ObjectMeta, DecodeError> {
    let request_time = r.time()?;
    let response_time = r.time()?;
    let fresh_until = r.time()?;
    let stale_until = r.time()?;
    let key = r.string()?;
    let url = r.string()?;
    let url = ObjectMeta::url_field(&key, &url);
    let count = r.count(4)?;
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        tags.push(r.string()?);
    }
    Ok(
        ObjectMeta::new(key, request_time, response_time, fresh_until, stale_until)
            .with_url(url)
            .with_tags(tags),
    )
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n.min(u32::MAX as usize) as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Bounds-checked little-endian reader over a slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// An element count, rejected if `count * min_elem_len` exceeds what is left.
    fn count(&mut self, min_elem_len: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_elem_len) > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid("utf-8"))
    }

    fn time(&mut self) -> Result<SystemTime, DecodeError> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(DecodeError::Invalid("time nanos"));
        }
        UNIX_EPOCH
            .checked_add(Duration::new(secs, nanos))
            .ok_or(DecodeError::Invalid("time out of range"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A test object with `body_len` bytes of body.
    pub(crate) fn sample(key: &str, url: &str, tags: &[&str], body_len: usize) -> CachedObject {
        let now = SystemTime::now();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        headers.append(http::header::VARY, HeaderValue::from_static("accept"));
        headers.append(
            http::header::VARY,
            HeaderValue::from_static("accept-encoding"),
        );
        // Patterned small bodies (bit flips land on varied bytes); big ones stay cheap.
        let mut body = vec![0xA5u8; body_len];
        for (i, b) in body.iter_mut().take(4096).enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        CachedObject {
            meta: ObjectMeta::new(
                key,
                now - Duration::from_millis(5),
                now,
                now + Duration::from_secs(60),
                now + Duration::from_secs(3600),
            )
            .with_url(ObjectMeta::url_field(key, url))
            .with_tags(tags.iter().map(|t| t.to_string()).collect()),
            status: StatusCode::OK,
            headers: StoredFields::from_map(&headers),
            body: Bytes::from(body),
            memo: ObjectMemo::default(),
        }
    }

    #[test]
    fn an_object_weighs_its_bytes_and_holds_key_fields_and_body_in_one_allocation() {
        // An 8 KiB key (the longest URL a request may have) counts all its bytes.
        let key = format!("http://h/{}", "k".repeat(8 * 1024));
        let obj = sample(&key, &key, &[], 1024);
        let built = CachedObject::new(
            obj.meta.clone(),
            obj.status,
            &obj.headers.to_map(),
            &obj.body,
        );
        assert_eq!(
            built.size(),
            OBJECT_OVERHEAD + key.len() + built.headers.block_len() + 1024
        );
        assert_eq!(&*built.meta.key, key.as_str());
        assert_eq!(built.meta.url(), key.as_str());
        assert_eq!(built.headers, obj.headers);
        assert_eq!(built.body, obj.body);
        // One allocation: the key, then the fields' lines, then the body.
        let start = built.meta.key.as_ptr() as usize;
        let (first_name, _) = built.headers.iter().next().expect("fields");
        let lines = first_name.as_ptr() as usize;
        assert_eq!(lines, start + key.len());
        assert_eq!(
            built.body.as_ptr() as usize,
            start + key.len() + built.headers.block_len()
        );
    }

    #[test]
    fn round_trip() {
        let obj = sample(
            "GET http://a/x\naccept=gzip",
            "http://a/x",
            &["t1", "t2"],
            1000,
        );
        let enc = obj.encode();
        assert_eq!(CachedObject::decode(&enc).unwrap(), obj);
        assert_eq!(
            CachedObject::decode_bytes(Bytes::from(enc.clone())).unwrap(),
            obj
        );
        let rm = decode_meta(&enc[..meta_prefix_len(&enc).unwrap()]).unwrap();
        assert_eq!(rm.meta, obj.meta);
        assert_eq!(rm.total_len, enc.len() as u64);
        // Repeated header values survive in order.
        let dec = CachedObject::decode(&enc).unwrap();
        let vary: Vec<_> = dec.headers.get_all(http::header::VARY).collect();
        assert_eq!(vary, [&b"accept"[..], b"accept-encoding"]);
    }

    #[test]
    fn round_trip_empty_and_pre_epoch() {
        let mut obj = sample("", "", &[], 0);
        obj.headers = StoredFields::default();
        obj.status = StatusCode::NOT_FOUND;
        obj.meta.set_request_time(UNIX_EPOCH);
        let dec = CachedObject::decode(&obj.encode()).unwrap();
        assert_eq!(dec, obj);
        obj.meta
            .set_request_time(UNIX_EPOCH - Duration::from_secs(10));
        let dec = CachedObject::decode(&obj.encode()).unwrap();
        assert_eq!(dec.meta.request_time(), UNIX_EPOCH);
    }

    #[test]
    fn every_truncation_rejected() {
        let enc = sample("k", "http://a/", &["t"], 64).encode();
        for len in 0..enc.len() {
            assert!(CachedObject::decode(&enc[..len]).is_err(), "len {len}");
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert!(CachedObject::decode(&longer).is_err());
    }

    #[test]
    fn every_bit_flip_rejected() {
        let enc = sample("key", "http://a/b", &["x", "y"], 48).encode();
        for i in 0..enc.len() {
            for bit in 0..8 {
                let mut bad = enc.clone();
                bad[i] ^= 1 << bit;
                assert!(CachedObject::decode(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
        // The meta prefix alone also rejects flips inside it.
        let plen = meta_prefix_len(&enc).unwrap();
        for i in 0..plen {
            let mut bad = enc[..plen].to_vec();
            bad[i] ^= 0x10;
            assert!(decode_meta(&bad).is_err(), "meta byte {i}");
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let enc = sample("k", "u", &["t"], 32).encode();
        for _ in 0..20_000 {
            let mut buf = enc.clone();
            // Rewrite a random run of bytes, then fix up magic/version/length so
            // the parser goes past the cheap checks; CRC must still catch it.
            let start = rng.gen_range(0..buf.len());
            let end = (start + rng.gen_range(1..16)).min(buf.len());
            rng.fill(&mut buf[start..end]);
            buf[..4].copy_from_slice(&MAGIC);
            buf[4] = VERSION;
            let _ = CachedObject::decode(&buf);
            let _ = decode_meta(&buf);
            let len = rng.gen_range(0..64);
            let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = CachedObject::decode(&junk);
        }
    }

    #[test]
    fn lying_lengths_rejected_without_allocation() {
        // A header claiming a 4-billion-entry header map must be rejected by the
        // count bound, not by trying to allocate. Build such a record with valid CRCs.
        let obj = sample("k", "u", &[], 0);
        let mut enc = obj.encode();
        let plen = meta_prefix_len(&enc).unwrap();
        enc[plen..plen + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let n = enc.len();
        let crc = crc32fast::hash(&enc[..n - 4]);
        enc[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(CachedObject::decode(&enc), Err(DecodeError::Truncated));
    }
}
#[cfg(test)]
mod size_guard {
    use super::*;

    /// Every stored object carries these: at 10^6 objects each byte is a megabyte
    /// (docs/perf-scale.md, memory-per-object). A change that grows them should be a
    /// decision, not an accident.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_stored_object_stays_small() {
        assert!(std::mem::size_of::<ObjectMemo>() <= 96);
        assert!(std::mem::size_of::<ObjectMeta>() <= 72);
        assert!(std::mem::size_of::<CachedObject>() <= 248);
    }
}
