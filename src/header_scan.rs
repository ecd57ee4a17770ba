//! Lookups in a small header map by one pass over its fields instead of by hash.
//!
//! A request usually carries a handful of fields and none of those the request path asks
//! about (`Range`, `If-Match`, `Upgrade`, `Transfer-Encoding`…). A `HeaderMap` lookup
//! hashes the name and probes its table, about 110 instructions each (callgrind), and an
//! HTTP/1 hit asked a dozen; comparing a few names (a standard name is one byte) costs a
//! fraction of that. Maps larger than [`SCAN_MAX`] are looked up by hash as before.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Maps with more values than this are looked up by hash.
pub const SCAN_MAX: usize = 8;

/// Whether `map` has a field `name`.
pub fn has(map: &HeaderMap, name: &HeaderName) -> bool {
    if map.len() <= SCAN_MAX {
        map.keys().any(|k| k == name)
    } else {
        map.contains_key(name)
    }
}

/// Whether `map` has a field of any of `names`.
pub fn has_any(map: &HeaderMap, names: &[HeaderName]) -> bool {
    if map.len() <= SCAN_MAX {
        map.keys().any(|k| names.contains(k))
    } else {
        names.iter().any(|n| map.contains_key(n))
    }
}

/// The first value of the field `name` (`HeaderMap::get`).
pub fn first<'a>(map: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if map.len() <= SCAN_MAX {
        map.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    } else {
        map.get(name)
    }
}

/// Every value of the field `name`, in order (`HeaderMap::get_all`).
pub fn all<'a>(map: &'a HeaderMap, name: &'a HeaderName) -> All<'a> {
    if map.len() <= SCAN_MAX {
        All::Scan(map.iter(), name)
    } else {
        All::Hash(map.get_all(name).into_iter())
    }
}

/// The values [`all`] yields.
pub enum All<'a> {
    /// The map's fields, filtered by name.
    Scan(http::header::Iter<'a, HeaderValue>, &'a HeaderName),
    /// The map's own lookup.
    Hash(http::header::ValueIter<'a, HeaderValue>),
}

impl<'a> Iterator for All<'a> {
    type Item = &'a HeaderValue;

    fn next(&mut self) -> Option<&'a HeaderValue> {
        match self {
            All::Scan(iter, name) => iter.find(|(k, _)| k == name).map(|(_, v)| v),
            All::Hash(iter) => iter.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn map(n: usize) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.append(header::HOST, HeaderValue::from_static("a"));
        m.append(header::ACCEPT, HeaderValue::from_static("x"));
        m.append(header::ACCEPT, HeaderValue::from_static("y"));
        m.append(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        for i in 0..n {
            m.append(
                HeaderName::from_bytes(format!("x-f{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("z"),
            );
        }
        m.append(header::ACCEPT, HeaderValue::from_static("w"));
        m
    }

    #[test]
    fn small_and_large_maps_answer_as_the_map_does() {
        for n in [0, SCAN_MAX, 3 * SCAN_MAX] {
            let m = map(n);
            assert_eq!(m.len() <= SCAN_MAX, n == 0);
            for name in [header::HOST, header::ACCEPT, header::RANGE, header::UPGRADE] {
                assert_eq!(has(&m, &name), m.contains_key(&name), "{name}");
                assert_eq!(first(&m, &name), m.get(&name), "{name}");
                let scanned: Vec<_> = all(&m, &name).collect();
                let hashed: Vec<_> = m.get_all(&name).iter().collect();
                assert_eq!(scanned, hashed, "{name}");
            }
            assert!(has_any(&m, &[header::UPGRADE, header::RANGE]));
            assert!(!has_any(&m, &[header::UPGRADE, header::IF_MATCH]));
            let custom = HeaderName::from_static("x-f0");
            assert_eq!(has(&m, &custom), n > 0);
        }
    }
}
