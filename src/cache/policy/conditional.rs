//! Conditional requests and revalidation (RFC 9110 §13, RFC 9111 §3.2, §4.3).

use http::header::{self, HeaderMap, HeaderValue};

use super::{header_date, parse_date, trim_ows};
use crate::cache::fields::FieldSource;

/// One parsed entity-tag: weakness flag and opaque-tag (with quotes).
type EntityTag<'a> = (bool, &'a [u8]);

/// Parses `1#entity-tag`, leniently skipping empty members; `None` on bad syntax.
fn parse_etags(mut s: &[u8]) -> Option<Vec<EntityTag<'_>>> {
    let mut out = Vec::new();
    loop {
        while let [b' ' | b'\t' | b',', rest @ ..] = s {
            s = rest;
        }
        if s.is_empty() {
            return Some(out);
        }
        let weak = s.starts_with(b"W/");
        if weak {
            s = s.get(2..)?;
        }
        if s.first() != Some(&b'"') {
            return None;
        }
        let close = s.iter().skip(1).position(|&b| b == b'"')? + 1;
        out.push((weak, s.get(..=close)?));
        s = s.get(close + 1..)?;
        s = trim_ows(s);
        if !(s.is_empty() || s.starts_with(b",")) {
            return None;
        }
    }
}

fn stored_etag<F: FieldSource + ?Sized>(headers: &F) -> Option<EntityTag<'_>> {
    let tags = parse_etags(headers.field(&header::ETAG)?)?;
    match tags.as_slice() {
        [tag] => Some(*tag),
        _ => None,
    }
}

/// Whether the stored response lets the cache answer the client's conditional
/// request with 304 (RFC 9110 §13.1.2, §13.1.3, §13.2.2; RFC 9111 §4.3.2).
///
/// `If-None-Match` (all lines, `*` or a list, weak comparison) takes
/// precedence; otherwise `If-Modified-Since` is compared against the stored
/// `Last-Modified`, or `Date` when absent. Invalid fields mean "no match".
/// Callers apply this to GET/HEAD only.
pub fn not_modified(req_headers: &HeaderMap, stored_resp_headers: &impl FieldSource) -> bool {
    let inm: Vec<&HeaderValue> =
        crate::header_scan::all(req_headers, &header::IF_NONE_MATCH).collect();
    if !inm.is_empty() {
        if inm.iter().any(|v| trim_ows(v.as_bytes()) == b"*") {
            return true;
        }
        let Some((_, stored)) = stored_etag(stored_resp_headers) else {
            return false;
        };
        return inm
            .iter()
            .filter_map(|v| parse_etags(v.as_bytes()))
            .flatten()
            .any(|(_, opaque)| opaque == stored);
    }
    let Some(ims) = header_date(req_headers, &header::IF_MODIFIED_SINCE) else {
        return false;
    };
    header_date(stored_resp_headers, &header::LAST_MODIFIED)
        .or_else(|| header_date(stored_resp_headers, &header::DATE))
        .is_some_and(|modified| modified <= ims)
}

/// Conditional headers for revalidating a stored response (RFC 9111 §4.3.1):
/// `If-None-Match` from `ETag`, `If-Modified-Since` from `Last-Modified`.
/// Empty when the stored response has no validators.
pub fn validators_for(stored_resp_headers: &impl FieldSource) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(etag) = stored_resp_headers.field(&header::ETAG) {
        if let (Some(_), Ok(etag)) = (
            stored_etag(stored_resp_headers),
            HeaderValue::from_bytes(etag),
        ) {
            out.insert(header::IF_NONE_MATCH, etag);
        }
    }
    if let Some(lm) = stored_resp_headers.field_str(&header::LAST_MODIFIED) {
        if let (Some(_), Ok(lm)) = (super::parse_http_date(lm), HeaderValue::from_str(lm)) {
            out.insert(header::IF_MODIFIED_SINCE, lm);
        }
    }
    out
}

/// Whether a 304 answers for this stored response (RFC 9111 §4.3.4): its
/// `ETag`, if any, must match the stored one (weakly); otherwise its
/// `Last-Modified`, if any, must equal the stored one. No validators: true.
pub fn response_304_matches(
    stored_headers: &impl FieldSource,
    resp_304_headers: &HeaderMap,
) -> bool {
    if let Some(new) = resp_304_headers.get(header::ETAG) {
        let new = parse_etags(new.as_bytes());
        return match (new.as_deref(), stored_etag(stored_headers)) {
            (Some([(_, a)]), Some((_, b))) => *a == b,
            _ => false,
        };
    }
    match resp_304_headers.get(header::LAST_MODIFIED) {
        Some(new) => stored_headers
            .field_str(&header::LAST_MODIFIED)
            .map(super::parse_http_date)
            .is_some_and(|old| old.is_some() && old == parse_date(new)),
        None => true,
    }
}

/// Header fields never copied from a 304 into the stored response.
const NOT_MERGED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Updates stored headers from a 304 (RFC 9111 §3.2, §4.3.4): every field of
/// the 304 replaces the stored field of the same name, except hop-by-hop
/// fields, fields named in the 304's `Connection`, and `Content-Length`.
pub fn merge_304(stored_headers: &mut HeaderMap, resp_304_headers: &HeaderMap) {
    let connection_named: Vec<String> = resp_304_headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|n| String::from_utf8_lossy(trim_ows(n)).to_ascii_lowercase())
        .collect();
    for name in resp_304_headers.keys() {
        let n = name.as_str();
        if NOT_MERGED.contains(&n) || connection_named.iter().any(|c| c == n) {
            continue;
        }
        stored_headers.remove(name);
        for value in resp_304_headers.get_all(name) {
            stored_headers.append(name.clone(), value.clone());
        }
    }
}
