//! A fresh HTTP/2 GET hit's stored fields, HPACK-encoded once per object (`h2::ext::
//! PreEncoded`, vendor/h2 patch 01) instead of by the connection's encoder on every hit:
//! that encoder searched its dynamic table for, and Huffman-coded, each of the ~14 fields
//! of each response (about 9.5k instructions of a 38.8k h2c hit, callgrind).
//!
//! The block holds the stored fields but those a hit replaces (`Content-Length`, `Age`,
//! `X-Cache`, `X-Request-Id`) and torii's own targeted field, then the body's
//! `Content-Length` and the hit's `Via` and `X-Cache` (the response step adds neither to
//! a pre-encoded head, as for an HTTP/1 hit's raw lines; hyper adds no `Date` or
//! `Content-Length` to it: vendor/hyper patch 14). Only objects with a stored `Date` are
//! sent this way (`has_date`). The hit's `Age` follows as a second block, one per value
//! under [`KEPT_AGES`] seconds kept per thread (`age`; vendor/h2 patch 03); the response's
//! map holds only what the response step adds (`X-Request-Id`). The block rides on the
//! response's body (`RespBody::full_pre_encoded`) to `proxy::Handled`, which hands it to
//! the HTTP/2 stream (`hyper::ext::send_pre_encoded`, vendor/hyper patch 16): carried in
//! the response's extensions, it cost three allocations per hit. The literals never enter
//! the dynamic table, so one block serves every connection; the price is bytes on the
//! wire (about 200 per response for this object's fields where the table would send
//! ~15), as servers that do not index responses (HAProxy, nginx) pay.
//!
//! Blocks are kept per thread, for the last objects hit there: a direct-mapped table of
//! [`SLOTS`] slots, each holding a `Weak` to its object (whose address therefore cannot be
//! reused while the slot holds it) and the block. An object evicted from the cache keeps
//! only its `CachedObject` shell alive until its slot is taken (no key, fields or body).

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use h2::ext::PreEncoded;
use http::header::{self, HeaderMap, HeaderValue};

use crate::cache::object::CachedObject;
use crate::cache::policy::OWN_TARGETED_FIELD;
use crate::cache::status::{CacheStatus, X_CACHE};

/// Slots per thread (a power of two).
const SLOTS: usize = 256;

struct Slot {
    obj: Weak<CachedObject>,
    block: PreEncoded,
}

/// Ages (seconds) whose block is kept per thread; an older hit's `Age` goes in its map.
pub const KEPT_AGES: u64 = 1000;

thread_local! {
    static KEPT: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
    /// `Age` blocks by value, encoded by the first hit of each age on the thread.
    static AGES: RefCell<Vec<Option<PreEncoded>>> = const { RefCell::new(Vec::new()) };
}

/// The `Age: secs` block, `None` from [`KEPT_AGES`] seconds on.
pub fn age(secs: u64) -> Option<PreEncoded> {
    if secs >= KEPT_AGES {
        return None;
    }
    AGES.with_borrow_mut(|ages| {
        if ages.is_empty() {
            ages.resize_with(KEPT_AGES as usize, || None);
        }
        let kept = ages[secs as usize].get_or_insert_with(|| {
            PreEncoded::from_iter([(&header::AGE, &super::age::value(secs))])
        });
        Some(kept.clone())
    })
}

/// The pre-encoded block of `obj`'s fields (see the module's doc), kept for the next hit
/// on this thread. `fields` is the object's map (`CachedObject::fields_map`).
pub fn block(obj: &Arc<CachedObject>, fields: &HeaderMap) -> PreEncoded {
    let at = slot_of(obj);
    KEPT.with_borrow_mut(|kept| {
        if kept.is_empty() {
            kept.resize_with(SLOTS, || None);
        }
        match &kept[at] {
            Some(slot) if std::ptr::eq(slot.obj.as_ptr(), Arc::as_ptr(obj)) => slot.block.clone(),
            _ => {
                let block = encode(fields, obj.body.len());
                kept[at] = Some(Slot {
                    obj: Arc::downgrade(obj),
                    block: block.clone(),
                });
                block
            }
        }
    })
}

/// Whether a hit on an object of `fields` may be sent with its block: it has a `Date`
/// (hyper would add the current one to a response without, not to this one).
pub fn has_date(fields: &HeaderMap) -> bool {
    fields.contains_key(header::DATE)
}

/// Whether a hit never sends this stored field as it is: the hit has its own (`Age`,
/// `X-Cache`, `X-Request-Id`, the body's `Content-Length`), or no client gets it (torii's
/// targeted field); `PreEncoded` leaves out the connection-specific ones. The same list
/// as the HTTP/1 hit's raw lines hold back (`cache::fields`).
fn held(name: &http::HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::AGE,
        X_CACHE,
        OWN_TARGETED_FIELD,
    ]
    .contains(name)
        || name.as_str() == "x-request-id"
}

fn encode(fields: &HeaderMap, body_len: usize) -> PreEncoded {
    let hit = CacheStatus::Hit.header();
    let via = HeaderValue::from_static(super::super::VIA_TEXT);
    let len = HeaderValue::from(body_len);
    let own = fields.iter().filter(|(name, _)| !held(name));
    let added = [
        (&header::CONTENT_LENGTH, &len),
        (&header::VIA, &via),
        (&X_CACHE, &hit),
    ];
    PreEncoded::from_iter(own.chain(added))
}

/// The object's slot: its address, hashed (objects are 8-aligned and similar in size).
fn slot_of(obj: &Arc<CachedObject>) -> usize {
    let addr = Arc::as_ptr(obj) as usize as u64;
    (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::object::ObjectMeta;
    use std::time::SystemTime;

    fn object(etag: &str) -> Arc<CachedObject> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_str(etag).unwrap());
        headers.insert(
            header::DATE,
            HeaderValue::from_static("Sat, 05 Dec 2026 19:21:21 GMT"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        headers.insert(OWN_TARGETED_FIELD, HeaderValue::from_static("max-age=9"));
        let now = SystemTime::now();
        let meta = ObjectMeta::at("k", now);
        Arc::new(CachedObject::new(
            meta,
            http::StatusCode::OK,
            &headers,
            b"hi",
        ))
    }

    #[test]
    fn kept_per_object_and_never_mixed_up() {
        let (a, b) = (object("\"a\""), object("\"b\""));
        let first = block(&a, &a.fields_map());
        let again = block(&a, &a.fields_map());
        assert_eq!(first.as_bytes().as_ptr(), again.as_bytes().as_ptr(), "kept");
        let other = block(&b, &b.fields_map());
        assert_ne!(first.as_bytes(), other.as_bytes());
        // Freed and allocated again, an object at the same address is not the old one:
        // the slot's Weak keeps the old address taken.
        drop(a);
        let c = object("\"c\"");
        let c_block = block(&c, &c.fields_map());
        assert_eq!(c_block.as_bytes(), encode(&c.fields_map(), 2).as_bytes());
    }

    #[test]
    fn the_body_length_replaces_the_stored_one_and_the_own_field_stays_out() {
        let a = object("\"a\"");
        let map = a.fields_map();
        assert!(has_date(&map));
        let plain = encode(&map, 2);
        // etag first (static name 34): a literal without indexing, 0000 1111 + 19.
        let bytes = plain.as_bytes();
        assert_eq!(bytes[0], 0x0f, "etag first, a literal without indexing");
        assert_eq!(bytes[1], 34 - 15);
        // etag, date, then content-length, via, x-cache: the stored content-length and
        // the own field left out.
        let expected = ["etag", "date", "content-length", "via", "x-cache"]
            .iter()
            .map(|n| 32 + n.len())
            .sum::<usize>()
            + "\"a\"".len()
            + "Sat, 05 Dec 2026 19:21:21 GMT".len()
            + "2".len()
            + super::super::super::VIA_TEXT.len()
            + "HIT".len();
        assert_eq!(plain.list_size(), expected);
        let mut no_date = HeaderMap::new();
        no_date.insert(header::ETAG, HeaderValue::from_static("\"a\""));
        assert!(!has_date(&no_date));
    }

    #[test]
    fn ages_kept_below_the_limit_only() {
        let one = age(1).unwrap();
        assert_eq!(one.as_bytes().as_ptr(), age(1).unwrap().as_bytes().as_ptr());
        // age (static name 21), a literal without indexing: 0000 1111 + 6.
        assert_eq!(&one.as_bytes()[..2], &[0x0f, 21 - 15]);
        assert_eq!(one.list_size(), 32 + "age".len() + 1);
        assert!(age(KEPT_AGES - 1).is_some());
        assert!(age(KEPT_AGES).is_none());
    }

    #[test]
    fn blocks_followed_by_more_blocks_keep_every_field_in_order() {
        let (a, b, c) = (age(1).unwrap(), age(2).unwrap(), age(3).unwrap());
        let two = a.clone().followed_by(&b);
        // The second block rides along: the first is the same bytes.
        assert_eq!(two.as_bytes(), a.as_bytes());
        assert_eq!(two.list_size(), a.list_size() + b.list_size());
        // A third: all three copied into one block, in order.
        let three = two.followed_by(&c);
        let all = [a.as_bytes(), b.as_bytes(), c.as_bytes()].concat();
        assert_eq!(three.as_bytes(), &all[..]);
        assert_eq!(three.list_size(), 3 * a.list_size());
    }
}
