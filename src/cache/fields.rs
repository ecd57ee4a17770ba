//! A stored response's fields in one compact block ([`StoredFields`]), and the lookups the
//! cache and the hit path make on them ([`FieldSource`], also implemented for `HeaderMap`).
//!
//! An `http::HeaderMap` costs about 100 bytes per field plus its tables (a 1 KiB object
//! with six fields carried some 650 bytes of map). A stored object only needs its fields
//! looked up by name a few times and written out on a hit, so they are kept as the lines
//! of an HTTP/1 head, `name: value\r\n` with lowercase names, in one buffer shared with
//! the body (one allocation per object; `CachedObject::new`), or, when the objects stored
//! one after another have the same lines, one block they all share (`SharedBlocks`).
//! Lookups scan the lines: a stored response has few fields, and a scan of one buffer
//! costs less than hashing.
//!
//! # Block layout
//! ```text
//! [ sendable lines ][ held lines ]
//! ```
//! *sendable*: every field a hit sends as stored. *held*: the fields a hit never sends as
//! stored (framing, `Age`, `X-Cache`, `X-Request-ID`, torii's own targeted field). A
//! pre-encoded HTTP/1 head ([`StoredFields::raw`]: a hit's, or the miss that stores the
//! object) is the first part, one slice, no copy, followed by the answer's own `X-Cache`
//! and `Via` lines (`hyper::RawFields::tail`). Without a `Date` there is no pre-encoded
//! head (hyper would add the current one).

use bytes::Bytes;
use http::header::{AGE, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Fields looked up by name: a `HeaderMap`, or a stored object's [`StoredFields`].
pub trait FieldSource {
    /// The first value of `name`.
    fn field(&self, name: &HeaderName) -> Option<&[u8]>;

    /// Whether `f` holds for any value of `name` (in order; stops at the first).
    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&[u8]) -> bool) -> bool;

    /// Whether `name` has a value.
    fn has(&self, name: &HeaderName) -> bool {
        self.field(name).is_some()
    }

    /// The first value of `name` as a string, if it is visible ASCII (as
    /// `HeaderValue::to_str` reads it).
    fn field_str(&self, name: &HeaderName) -> Option<&str> {
        self.field(name).and_then(visible)
    }
}

/// A field value as a string, if it is visible ASCII (as `HeaderValue::to_str` reads it).
pub fn visible(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

impl FieldSource for HeaderMap {
    fn field(&self, name: &HeaderName) -> Option<&[u8]> {
        crate::header_scan::first(self, name).map(HeaderValue::as_bytes)
    }

    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        crate::header_scan::all(self, name).any(|v| f(v.as_bytes()))
    }
}

/// The name of torii's own targeted cache-control field (RFC 9213), spelled once here:
/// `policy::OWN_TARGETED_FIELD`.
pub const OWN_TARGETED: &str = "torii-cache-control";

/// Whether a hit never sends this stored field as it is (see the module docs).
fn held(name: &HeaderName) -> bool {
    [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, AGE].contains(name)
        || name.as_str() == "x-cache"
        // Each answer carries its own request's ID (`proxy::trace`).
        || name.as_str() == "x-request-id"
        || name.as_str() == OWN_TARGETED
}

/// A stored response's fields: the lines of one block (see the module docs).
#[derive(Clone, Default)]
pub struct StoredFields {
    block: Bytes,
    /// End of the sendable lines.
    sendable: u32,
    /// Whether the sendable lines hold a `Date` (then they are a pre-encoded head).
    dated: bool,
    /// Whether the fields hold [`VARIANTS_MARKER`] (known without a scan: every lookup
    /// asks).
    variants: bool,
    /// Whether the fields hold a `Content-Encoding` (known without a scan: the compression
    /// checks of hits ask, and the field is usually absent, which a scan reads to the end).
    encoded: bool,
}

/// The field that marks the object stored under a primary key as the list of its `Vary`
/// variants (`Cache::variants_index`), not a response.
pub const VARIANTS_MARKER: HeaderName = HeaderName::from_static("x-torii-variants");

/// Bytes the fields of `headers` that `keep` takes take as lines, and whether they carry a
/// `Date` and a `Content-Encoding`.
fn lines_len(headers: &HeaderMap, keep: &impl Fn(&HeaderName) -> bool) -> (usize, bool, bool) {
    let mut len = 0;
    let (mut dated, mut encoded) = (false, false);
    for (n, v) in headers.iter().filter(|(n, _)| keep(n)) {
        len += n.as_str().len() + v.len() + 4;
        dated |= n == DATE;
        encoded |= n == CONTENT_ENCODING;
    }
    (len, dated, encoded)
}

fn put_line(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Field blocks shared between the objects stored on one thread: an origin sends the same
/// fields with every response of a kind (`server`, `content-type`, `cache-control`, and
/// within a second the same `date`), and at a million 1 KiB objects their ~160 bytes each
/// are a tenth of the cache's memory.
///
/// The block of the last object stored is remembered (`seen`: a slice of that object, one
/// reference more; so until the next store on the thread, it keeps that one object's
/// allocation alive should the object be evicted). When the next object's block is the
/// same bytes, a copy of it in an allocation of its own becomes `shared`, and every object
/// after with that block holds it instead of a copy in its own allocation. Objects whose
/// blocks all differ (an `ETag` each) pay one comparison that fails early and keep their
/// blocks as before, with no allocation more. Weights
/// ([`CachedObject::size`](crate::cache::CachedObject::size)) still count the block in
/// every object: the tiers' sizes stay an upper bound of their memory.
struct SharedBlocks {
    seen: Bytes,
    shared: Bytes,
}

impl SharedBlocks {
    /// Blocks longer than this are not compared or shared: a long block usually carries
    /// fields of its object's own (cookies, long validators), so the comparison would
    /// mostly fail, after more bytes.
    const MAX: usize = 2048;

    /// The shared copy of `block`, if it is one the objects stored on this thread share
    /// (made shared by this call when it is the block the last object had); `None`
    /// otherwise: the object keeps its own copy, which [`Self::saw`] then remembers.
    fn share(block: &[u8]) -> Option<Bytes> {
        if block.is_empty() || block.len() > Self::MAX {
            return None;
        }
        Self::BLOCKS.with_borrow_mut(|blocks| {
            if blocks.shared == block {
                return Some(blocks.shared.clone());
            }
            if blocks.seen == block {
                blocks.shared = Bytes::copy_from_slice(block);
                blocks.seen = Bytes::new();
                return Some(blocks.shared.clone());
            }
            None
        })
    }

    /// Remembers the block just stored in an object of its own (its slice of the object).
    fn saw(block: &Bytes) {
        if !block.is_empty() && block.len() <= Self::MAX {
            Self::BLOCKS.with_borrow_mut(|blocks| blocks.seen = block.clone());
        }
    }

    thread_local! {
        static BLOCKS: std::cell::RefCell<SharedBlocks> = const {
            std::cell::RefCell::new(SharedBlocks { seen: Bytes::new(), shared: Bytes::new() })
        };
    }
}

/// One allocation of `key`, a block of `len` bytes (written by `write`, which returns the
/// fields but their block) and the body's chunks: the key, the fields and the body, each a
/// slice of it.
fn assemble(
    key: &[u8],
    len: usize,
    body: &[impl AsRef<[u8]>],
    write: impl FnOnce(&mut Vec<u8>) -> StoredFields,
) -> (Bytes, StoredFields, Bytes) {
    let body_len: usize = body.iter().map(|c| c.as_ref().len()).sum();
    let mut out = Vec::with_capacity(key.len() + len + body_len);
    out.extend_from_slice(key);
    let mut fields = write(&mut out);
    debug_assert_eq!(out.len(), key.len() + len);
    for chunk in body {
        out.extend_from_slice(chunk.as_ref());
    }
    let all = Bytes::from(out);
    let k = key.len();
    fields.block = all.slice(k..k + len);
    (all.slice(..k), fields, all.slice(k + len..))
}

impl StoredFields {
    /// The fields of `headers` followed by the body (given as its chunks), in one
    /// allocation: the fields and the body as slices of it.
    pub fn with_body(headers: &HeaderMap, body: &[impl AsRef<[u8]>]) -> (StoredFields, Bytes) {
        let (_, fields, body) = Self::with_key_and_body(b"", headers, body);
        (fields, body)
    }

    /// `key`, the fields of `headers` and the body (given as its chunks) in one
    /// allocation (a stored object's: a hit reads all three), each a slice of it.
    pub fn with_key_and_body(
        key: &[u8],
        headers: &HeaderMap,
        body: &[impl AsRef<[u8]>],
    ) -> (Bytes, StoredFields, Bytes) {
        let (len, dated, encoded) = lines_len(headers, &|_| true);
        let variants = headers.contains_key(&VARIANTS_MARKER);
        assemble(key, len, body, |out| {
            let sendable = Self::write(out, headers, &|_| true);
            StoredFields {
                block: Bytes::new(),
                sendable,
                dated,
                variants,
                encoded,
            }
        })
    }

    /// `key`, these fields and the body in one allocation, like [`Self::with_key_and_body`]
    /// (the block copied as it is); or `key` and the body, when the block is the one the
    /// last objects stored on this thread had too: then it is that block, shared (see
    /// `SharedBlocks`).
    pub fn rebased(&self, key: &[u8], body: &[impl AsRef<[u8]>]) -> (Bytes, StoredFields, Bytes) {
        if let Some(block) = SharedBlocks::share(&self.block) {
            let (key, mut fields, body) = assemble(key, 0, body, |_| StoredFields {
                block: Bytes::new(),
                ..*self
            });
            fields.block = block;
            return (key, fields, body);
        }
        let own = assemble(key, self.block.len(), body, |out| {
            out.extend_from_slice(&self.block);
            StoredFields {
                block: Bytes::new(),
                ..*self
            }
        });
        SharedBlocks::saw(&own.1.block);
        own
    }

    /// The fields of `headers` alone.
    pub fn from_map(headers: &HeaderMap) -> StoredFields {
        StoredFields::with_body(headers, &[] as &[&[u8]]).0
    }

    /// The fields of `headers` but those named in `except`, alone: what a response's
    /// fields are stored as, written once (a later [`Self::rebased`] copies them).
    pub fn from_map_except(headers: &HeaderMap, except: &[HeaderName]) -> StoredFields {
        let keep = |n: &HeaderName| !except.contains(n);
        let (len, dated, encoded) = lines_len(headers, &keep);
        let mut out = Vec::with_capacity(len);
        let sendable = Self::write(&mut out, headers, &keep);
        StoredFields {
            block: Bytes::from(out),
            sendable,
            dated,
            variants: keep(&VARIANTS_MARKER) && headers.contains_key(&VARIANTS_MARKER),
            encoded,
        }
    }

    /// Appends the block of the fields `keep` takes to `out`; returns the sendable length.
    fn write(out: &mut Vec<u8>, headers: &HeaderMap, keep: &impl Fn(&HeaderName) -> bool) -> u32 {
        let start = out.len();
        let mut held_any = false;
        for (name, value) in headers.iter().filter(|(n, _)| keep(n)) {
            if held(name) {
                held_any = true;
            } else {
                put_line(out, name, value);
            }
        }
        let sendable = (out.len() - start) as u32;
        if held_any {
            for (name, value) in headers.iter().filter(|(n, _)| keep(n) && held(n)) {
                put_line(out, name, value);
            }
        }
        sendable
    }

    /// The fields an HTTP/1 answer from this object sends as they are
    /// (`hyper::RawFields::lines`): every sendable field. `None` without a `Date`.
    pub fn raw(&self) -> Option<Bytes> {
        self.dated
            .then(|| self.block.slice(..self.sendable as usize))
    }

    /// Whether these are the fields of a `Vary` variants index ([`VARIANTS_MARKER`]).
    pub fn is_variants_index(&self) -> bool {
        self.variants
    }

    /// Whether the fields hold a `Content-Encoding` (without a scan).
    pub fn is_encoded(&self) -> bool {
        self.encoded
    }

    /// Bytes the block takes.
    pub fn block_len(&self) -> usize {
        self.block.len()
    }

    /// Every field, as `(name, value)`, sendable ones first, each name's values in order.
    pub fn iter(&self) -> Lines<'_> {
        Lines {
            block: &self.block,
            at: 0,
        }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The first value of `name` (e.g. `header::ETAG`).
    pub fn get(&self, name: impl AsRef<str>) -> Option<&[u8]> {
        Values::new(&self.block).next_of(name.as_ref().as_bytes())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(
        &'a self,
        name: impl AsRef<str> + 'a,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut values = Values::new(&self.block);
        std::iter::from_fn(move || values.next_of(name.as_ref().as_bytes()))
    }

    /// Whether `name` has a value.
    pub fn contains_key(&self, name: impl AsRef<str>) -> bool {
        self.get(name).is_some()
    }

    /// The fields as a `HeaderMap` (values share the block, names are parsed): for a
    /// response that is not sent as stored, or code written for a map.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.len());
        for (name, value) in self.iter() {
            // The offset of this value in the block, for a slice sharing it.
            let start = value.as_ptr() as usize - self.block.as_ptr() as usize;
            let Ok(name) = HeaderName::from_bytes(name) else {
                continue;
            };
            let bytes = self.block.slice(start..start + value.len());
            if let Ok(value) = HeaderValue::from_maybe_shared(bytes) {
                map.append(name, value);
            }
        }
        map
    }
}

impl FieldSource for StoredFields {
    fn field(&self, name: &HeaderName) -> Option<&[u8]> {
        if *name == CONTENT_ENCODING && !self.encoded {
            return None;
        }
        self.get(name)
    }

    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.get_all(name).any(f)
    }
}

impl PartialEq for StoredFields {
    /// Same fields in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for StoredFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

/// The values of one name in a [`StoredFields`] block, in order ([`Values::next_of`]).
/// Each line's name is compared in place (its length, then its bytes) and the rest of the
/// line skipped with one `memchr`. Splitting every line into name and value byte by byte,
/// as [`Lines`] does, cost ~490 instructions per lookup of a name a 160-byte block lacks,
/// the usual case: a first hit's compression check made two lookups, 977 instructions
/// per hit over 200,000 objects, ~400 this way (`scripts/perf/cachesim.sh`).
struct Values<'a> {
    block: &'a [u8],
    at: usize,
}

impl<'a> Values<'a> {
    fn new(block: &'a [u8]) -> Self {
        Values { block, at: 0 }
    }

    /// The next value of `name`.
    fn next_of(&mut self, name: &[u8]) -> Option<&'a [u8]> {
        let n = name.len();
        while let Some(rest) = self.block.get(self.at..) {
            // Lines are `name: value\r\n`, built from a HeaderMap: no CR or LF inside.
            let lf = memchr::memchr(b'\n', rest)?;
            self.at += lf + 1;
            if lf >= n + 3 && rest[n] == b':' && &rest[..n] == name {
                return Some(&rest[n + 2..lf - 1]);
            }
        }
        None
    }
}

/// The lines of a [`StoredFields`] block as `(name, value)`.
pub struct Lines<'a> {
    block: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.block.get(self.at..)?;
        // Built from a HeaderMap: names hold no ':', values no CR or LF.
        let colon = rest.iter().position(|&b| b == b':')?;
        let end = colon + rest[colon..].iter().position(|&b| b == b'\r')?;
        self.at += end + 2;
        Some((&rest[..colon], &rest[colon + 2..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, VARY};

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in fields {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn lookups_and_the_map_give_back_every_field_in_order_per_name() {
        let m = map(&[
            ("date", "Sat, 05 Dec 2026 16:49:33 GMT"),
            ("content-length", "5"),
            ("vary", "accept"),
            ("cache-control", "public, max-age=60"),
            ("vary", "cookie"),
            ("x-cache", "MISS"),
            ("x-custom", "a: b"),
        ]);
        let (f, body) = StoredFields::with_body(&m, &[&b"hel"[..], b"lo"]);
        assert_eq!(&body[..], b"hello");
        assert_eq!(f.get(&CACHE_CONTROL), Some(&b"public, max-age=60"[..]));
        assert_eq!(f.get(&ETAG), None);
        assert!(f.contains_key(&CONTENT_LENGTH));
        assert_eq!(
            f.get_all(&VARY).collect::<Vec<_>>(),
            [&b"accept"[..], b"cookie"]
        );
        assert_eq!(f.get("x-custom"), Some(&b"a: b"[..]));
        assert_eq!(f.len(), 7);
        let back = f.to_map();
        assert_eq!(back.len(), 7);
        for (name, value) in &m {
            assert!(back.get_all(name).iter().any(|v| v == value), "{name}");
        }
        assert_eq!(
            back.get_all(VARY).iter().collect::<Vec<_>>(),
            ["accept", "cookie"]
        );
        assert_eq!(f.get("x-cache"), Some(&b"MISS"[..]));
    }

    #[test]
    fn the_raw_head_is_the_sendable_fields() {
        let m = map(&[
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("date", "Sat, 05 Dec 2026 16:49:33 GMT"),
            ("age", "3"),
            ("x-request-id", "abc"),
        ]);
        let f = StoredFields::from_map(&m);
        let raw = f.raw().unwrap();
        assert_eq!(
            &raw[..],
            b"content-type: text/plain\r\ndate: Sat, 05 Dec 2026 16:49:33 GMT\r\n"
        );
        assert_eq!(f.get(&AGE), Some(&b"3"[..]));
        // No Date: no raw head.
        let f = StoredFields::from_map(&map(&[("content-type", "text/plain")]));
        assert!(f.raw().is_none());
        assert_eq!(f.get(&CONTENT_TYPE), Some(&b"text/plain"[..]));
        assert_eq!(f.block_len(), "content-type: text/plain\r\n".len());
    }

    #[test]
    fn objects_stored_with_the_same_fields_share_one_block() {
        // A value no other test on this thread stored (the blocks remembered are per thread).
        let fields = |etag: &str| {
            StoredFields::from_map(&map(&[
                ("content-type", "text/plain"),
                ("date", "Sun, 06 Dec 2026 03:37:19 GMT"),
                ("etag", etag),
                ("content-length", "3"),
            ]))
        };
        let same = fields("\"objects_stored_with_the_same_fields\"");
        let at = |f: &StoredFields| f.block.as_ptr();
        let (k1, first, b1) = same.rebased(b"k1", &[b"one"]);
        let (k2, second, b2) = same.rebased(b"k2", &[b"two"]);
        let (_, third, _) = same.rebased(b"k3", &[b"six"]);
        // The first keeps its copy in its own allocation; from the second on, one copy.
        assert_eq!(at(&first), k1[k1.len()..].as_ptr());
        assert_eq!(at(&second), at(&third));
        assert_ne!(at(&second), at(&first));
        // The second's allocation holds its key and body alone.
        assert_eq!(k2[k2.len()..].as_ptr(), b2.as_ptr());
        assert_eq!(
            (&k2[..], &b2[..], &b1[..]),
            (&b"k2"[..], &b"two"[..], &b"one"[..])
        );
        for f in [&first, &second, &third] {
            assert_eq!(f.block, same.block);
            assert_eq!(f.raw(), same.raw());
            assert_eq!(f.get(&CONTENT_LENGTH), Some(&b"3"[..]));
        }
        // Other fields (another ETag) are not the shared block: each object its own.
        let other = fields("\"another\"");
        let (_, a, _) = other.rebased(b"k4", &[b"one"]);
        assert_ne!(at(&a), at(&third));
        assert_eq!(a.get(&ETAG), Some(&b"\"another\""[..]));
    }

    #[test]
    fn fields_know_without_a_scan_whether_they_hold_a_content_encoding() {
        let plain = map(&[("content-type", "text/html"), ("etag", "\"a\"")]);
        let gzip = map(&[("content-type", "text/html"), ("content-encoding", "gzip")]);
        for (m, encoded) in [(&plain, false), (&gzip, true)] {
            for f in [
                StoredFields::from_map(m),
                StoredFields::from_map_except(m, &[ETAG]),
                StoredFields::from_map(m).rebased(b"k", &[b"body"]).1,
                StoredFields::with_key_and_body(b"k", m, &[b"body"]).1,
            ] {
                assert_eq!(f.is_encoded(), encoded);
                assert_eq!(f.field(&CONTENT_ENCODING), m.field(&CONTENT_ENCODING));
                assert_eq!(f.contains_key(CONTENT_ENCODING), encoded);
            }
        }
        // Not kept: not there.
        let f = StoredFields::from_map_except(&gzip, &[CONTENT_ENCODING]);
        assert!(!f.is_encoded());
        assert_eq!(f.field(&CONTENT_ENCODING), None);
    }

    #[test]
    fn empty_fields_and_a_header_map_source_agree() {
        let f = StoredFields::from_map(&HeaderMap::new());
        assert!(f.is_empty());
        assert!(f.raw().is_none());
        let m = map(&[
            ("cache-control", "no-transform"),
            ("cache-control", "public"),
        ]);
        let s = StoredFields::from_map(&m);
        for src in [&m as &dyn FieldSource, &s] {
            assert!(src.any_value(&CACHE_CONTROL, &mut |v| v == b"public"));
            assert_eq!(src.field_str(&CACHE_CONTROL), Some("no-transform"));
            assert!(!src.has(&ETAG));
        }
    }
}
