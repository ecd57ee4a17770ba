//! Range requests answered from a stored complete object (RFC 9110 §14), `If-Range`
//! (§13.1.5) and the preconditions a stored object can fail (`If-Match`,
//! `If-Unmodified-Since`: §13.1.1, §13.1.4, evaluated in the order of §13.2.2).
//!
//! Pure functions over header maps and bodies: the cache step (`proxy::cached`) decides
//! when they apply. A leaf module: it depends on nothing of torii's but the conditional
//! helpers of `policy`.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

/// At most this many ranges in one `Range` field; more and the field is ignored (the
/// whole 200), as RFC 9110 §14.2 allows against a denial of service.
pub const MAX_RANGES: usize = 100;

/// What a `Range` field asks of a representation of a given length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// Not a valid `bytes` range set (bad syntax, `bytes=5-1`, another unit), too many
    /// ranges, or ranges that add up to more than the object: ignored, the whole 200
    /// (RFC 9110 §14.2: a server MAY ignore `Range`).
    Ignore,
    /// Valid, but no range overlaps the representation: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// The satisfiable ranges, in the order asked, as inclusive `(first, last)` byte
    /// positions within the representation.
    Satisfiable(Vec<(u64, u64)>),
}

/// Parses a `Range` field (RFC 9110 §14.1.1, §14.2) against a representation of `len`
/// bytes.
pub fn parse(value: &[u8], len: u64) -> Ranges {
    let Ok(text) = std::str::from_utf8(value) else {
        return Ranges::Ignore;
    };
    let text = text.trim();
    let Some((unit, set)) = text.split_once('=') else {
        return Ranges::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranges::Ignore;
    }
    let mut out = Vec::new();
    let mut count = 0usize;
    let mut total: u64 = 0;
    for spec in set.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue; // `1#range-spec` allows empty list elements
        }
        count += 1;
        if count > MAX_RANGES {
            return Ranges::Ignore;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Ignore;
        };
        let (first, last) = (first.trim(), last.trim());
        let range = if first.is_empty() {
            // suffix-range: the last `n` bytes
            let Some(n) = digits(last) else {
                return Ranges::Ignore;
            };
            (n > 0 && len > 0).then(|| (len - n.min(len), len - 1))
        } else {
            let Some(first) = digits(first) else {
                return Ranges::Ignore;
            };
            let last = if last.is_empty() {
                None
            } else {
                match digits(last) {
                    Some(l) if l >= first => Some(l),
                    _ => return Ranges::Ignore, // `bytes=5-1` is invalid (§14.1.1)
                }
            };
            (first < len).then(|| (first, last.map_or(len - 1, |l| l.min(len - 1))))
        };
        if let Some((a, b)) = range {
            total = total.saturating_add(b - a + 1);
            out.push((a, b));
        }
    }
    if count == 0 {
        return Ranges::Ignore;
    }
    if out.is_empty() {
        return Ranges::Unsatisfiable;
    }
    if total > len {
        // Overlapping ranges asking for more than the object holds: the whole object is
        // the shorter answer (§14.2 lets a server ignore such a set).
        return Ranges::Ignore;
    }
    Ranges::Satisfiable(out)
}

/// A run of ASCII digits as a number; `None` for anything else or an overflow.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether `If-Range` lets the range apply to the stored representation (RFC 9110
/// §13.1.5): an entity-tag must match the stored `ETag` by the strong comparison (a weak
/// tag never does); a date must equal the stored `Last-Modified`, and that must be a strong
/// validator (at least a second before the stored `Date`). No `If-Range`: true.
pub fn if_range_matches(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(value) = req.get(header::IF_RANGE) else {
        return true;
    };
    let value = value.as_bytes().trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        if value.starts_with(b"W/") || value.len() < 2 || !value.ends_with(b"\"") {
            return false;
        }
        let Some(etag) = stored.get(header::ETAG) else {
            return false;
        };
        let etag = etag.as_bytes().trim_ascii();
        return !etag.starts_with(b"W/") && etag == value;
    }
    let date = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
    };
    let (Some(asked), Some(modified)) = (
        date(value),
        stored
            .get(header::LAST_MODIFIED)
            .and_then(|v| date(v.as_bytes())),
    ) else {
        return false;
    };
    let strong = stored
        .get(header::DATE)
        .and_then(|v| date(v.as_bytes()))
        .is_some_and(|d| d.duration_since(modified).is_ok_and(|s| s.as_secs() >= 1));
    strong && asked == modified
}

/// Whether `If-Match` / `If-Unmodified-Since` fail for the stored response (RFC 9110
/// §13.1.1, §13.1.4, in the order of §13.2.2 steps 1-2): a 412 instead of the object.
/// `If-Match` uses the strong comparison; `*` matches any stored representation.
/// `If-Unmodified-Since` counts only without `If-Match`, and only when valid.
pub fn precondition_failed(req: &HeaderMap, stored: &HeaderMap) -> bool {
    if req.contains_key(header::IF_MATCH) {
        let etag = stored
            .get(header::ETAG)
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|e| e.starts_with(b"\""));
        let matched = req.get_all(header::IF_MATCH).iter().any(|v| {
            v.as_bytes().split(|&b| b == b',').any(|m| {
                let m = m.trim_ascii();
                m == b"*" || etag.is_some_and(|e| !m.starts_with(b"W/") && m == e)
            })
        });
        return !matched;
    }
    let date = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
    };
    let Some(ius) = req.get(header::IF_UNMODIFIED_SINCE).and_then(date) else {
        return false;
    };
    stored
        .get(header::LAST_MODIFIED)
        .and_then(date)
        .is_some_and(|modified| modified > ius)
}

/// Whether the request carries anything this module answers (`Range`, `If-Match`,
/// `If-Unmodified-Since`): such a request doesn't take a stored object's pre-encoded head.
pub fn asks(req: &HeaderMap) -> bool {
    crate::header_scan::has_any(
        req,
        &[header::RANGE, header::IF_MATCH, header::IF_UNMODIFIED_SINCE],
    )
}

/// How a request's `Range` applies to a stored 200 of `len` bytes.
pub fn applicable(req: &HeaderMap, stored: &HeaderMap, len: u64) -> Ranges {
    let Some(value) = req.get(header::RANGE) else {
        return Ranges::Ignore;
    };
    if !if_range_matches(req, stored) {
        return Ranges::Ignore;
    }
    parse(value.as_bytes(), len)
}

/// A partial answer built from a complete representation: status, the fields to set
/// over the stored ones, and the body.
pub struct Partial {
    pub status: StatusCode,
    /// `Content-Range`, or the multipart `Content-Type`.
    pub fields: Vec<(header::HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The 206 (one range: `Content-Range`; several: `multipart/byteranges`, §14.6) or the
/// 416 (`Content-Range: bytes */len`) for `ranges` of `body`. `None` for `Ranges::Ignore`.
pub fn partial(
    ranges: &Ranges,
    body: &Bytes,
    content_type: Option<&HeaderValue>,
) -> Option<Partial> {
    let len = body.len() as u64;
    match ranges {
        Ranges::Ignore => None,
        Ranges::Unsatisfiable => Some(Partial {
            status: StatusCode::RANGE_NOT_SATISFIABLE,
            fields: vec![(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            )],
            body: Bytes::new(),
        }),
        Ranges::Satisfiable(list) if list.len() == 1 => {
            let (a, b) = list[0];
            Some(Partial {
                status: StatusCode::PARTIAL_CONTENT,
                fields: vec![(header::CONTENT_RANGE, content_range(a, b, len))],
                body: body.slice(a as usize..=b as usize),
            })
        }
        Ranges::Satisfiable(list) => {
            let boundary = boundary(body, list);
            let mut out = BytesMut::new();
            for &(a, b) in list {
                out.put_slice(b"\r\n--");
                out.put_slice(boundary.as_bytes());
                out.put_slice(b"\r\n");
                if let Some(ct) = content_type {
                    out.put_slice(b"content-type: ");
                    out.put_slice(ct.as_bytes());
                    out.put_slice(b"\r\n");
                }
                out.put_slice(b"content-range: ");
                out.put_slice(content_range(a, b, len).as_bytes());
                out.put_slice(b"\r\n\r\n");
                out.put_slice(&body[a as usize..=b as usize]);
            }
            out.put_slice(b"\r\n--");
            out.put_slice(boundary.as_bytes());
            out.put_slice(b"--\r\n");
            let ct = format!("multipart/byteranges; boundary={boundary}");
            Some(Partial {
                status: StatusCode::PARTIAL_CONTENT,
                fields: vec![(
                    header::CONTENT_TYPE,
                    HeaderValue::from_str(&ct).expect("ascii"),
                )],
                body: out.freeze(),
            })
        }
    }
}

fn content_range(a: u64, b: u64, len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).expect("ascii")
}

/// A boundary that occurs in none of the parts (§14.6: it must not appear in them).
fn boundary(body: &[u8], parts: &[(u64, u64)]) -> String {
    let mut seed = body.len() as u64 ^ 0x746f_7269_6962_6f75;
    loop {
        let candidate = format!("torii-{seed:016x}");
        let finder = memchr::memmem::Finder::new(candidate.as_bytes());
        if parts
            .iter()
            .all(|&(a, b)| finder.find(&body[a as usize..=b as usize]).is_none())
        {
            return candidate;
        }
        seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    }
}

/// Checks a 206 from the origin: its `Content-Range` (`bytes a-b/len` or `bytes a-b/*`)
/// must be well formed and, with a `Content-Length`, agree with it. A multipart 206 (no
/// `Content-Range`) passes. Returns the body length the range announces, when it does.
pub fn check_origin_206(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let Some(cr) = headers.get(header::CONTENT_RANGE) else {
        let multipart = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/byteranges")
            });
        return if multipart {
            Ok(None)
        } else {
            Err("206 without Content-Range")
        };
    };
    let bad = "malformed Content-Range in a 206";
    let text = cr.to_str().map_err(|_| bad)?.trim();
    let rest = text.strip_prefix("bytes ").ok_or(bad)?;
    let (span, complete) = rest.split_once('/').ok_or(bad)?;
    let (a, b) = span.split_once('-').ok_or(bad)?;
    let (a, b) = (digits(a.trim()).ok_or(bad)?, digits(b.trim()).ok_or(bad)?);
    if b < a {
        return Err(bad);
    }
    let complete = complete.trim();
    if complete != "*" && digits(complete).is_none_or(|l| b >= l) {
        return Err(bad);
    }
    let want = (b - a).checked_add(1).ok_or(bad)?;
    if let Some(cl) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        if digits(cl.trim()) != Some(want) {
            return Err("Content-Range disagrees with Content-Length");
        }
    }
    Ok(Some(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sat(v: &[(u64, u64)]) -> Ranges {
        Ranges::Satisfiable(v.to_vec())
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse(b"bytes=0-9", 100), sat(&[(0, 9)]));
        assert_eq!(parse(b"bytes=90-", 100), sat(&[(90, 99)]));
        assert_eq!(parse(b"bytes=-10", 100), sat(&[(90, 99)]));
        assert_eq!(parse(b"bytes=-1000", 100), sat(&[(0, 99)]));
        assert_eq!(parse(b"bytes=95-1000", 100), sat(&[(95, 99)]));
        assert_eq!(parse(b"Bytes = 1-2 ", 100), sat(&[(1, 2)]));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse(b"bytes=100-", 100), Ranges::Unsatisfiable);
        assert_eq!(parse(b"bytes=-0", 100), Ranges::Unsatisfiable);
        assert_eq!(parse(b"bytes=0-", 0), Ranges::Unsatisfiable);
        assert_eq!(parse(b"bytes=5-1", 100), Ranges::Ignore);
        assert_eq!(parse(b"bytes=a-b", 100), Ranges::Ignore);
        assert_eq!(parse(b"bytes=", 100), Ranges::Ignore);
        assert_eq!(parse(b"items=0-1", 100), Ranges::Ignore);
        assert_eq!(parse(b"bytes=0-1,", 100), sat(&[(0, 1)]));
        assert_eq!(parse(b"bytes=--1", 100), Ranges::Ignore);
        assert_eq!(
            parse(b"bytes=0-99999999999999999999999", 100),
            Ranges::Ignore
        );
        let many = format!("bytes={}", vec!["0-0"; 101].join(","));
        assert_eq!(parse(many.as_bytes(), 1000), Ranges::Ignore);
        assert_eq!(parse(b"bytes=0-60,40-99", 100), Ranges::Ignore);
        assert_eq!(parse(b"bytes=200-300,0-1", 100), sat(&[(0, 1)]));
        let max = u64::MAX;
        assert_eq!(
            parse(format!("bytes=0-{max}").as_bytes(), 100),
            sat(&[(0, 99)])
        );
        assert_eq!(
            parse(format!("bytes=-{max}").as_bytes(), 100),
            sat(&[(0, 99)])
        );
        assert_eq!(
            parse(format!("bytes={max}-").as_bytes(), 100),
            Ranges::Unsatisfiable
        );
        assert_eq!(
            parse(format!("bytes=0-{max},0-{max}").as_bytes(), max - 1),
            Ranges::Ignore
        );
    }

    #[test]
    fn if_range_is_strong() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static("\"v2\""));
        stored.insert(
            header::DATE,
            HeaderValue::from_static("Sat, 05 Dec 2026 10:00:10 GMT"),
        );
        stored.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Sat, 05 Dec 2026 10:00:00 GMT"),
        );
        let req = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_RANGE, HeaderValue::from_static(v));
            h
        };
        assert!(if_range_matches(&req("\"v2\""), &stored));
        assert!(!if_range_matches(&req("\"v1\""), &stored));
        assert!(!if_range_matches(&req("W/\"v2\""), &stored));
        assert!(if_range_matches(
            &req("Sat, 05 Dec 2026 10:00:00 GMT"),
            &stored
        ));
        assert!(!if_range_matches(
            &req("Sat, 05 Dec 2026 10:00:01 GMT"),
            &stored
        ));
        stored.insert(header::ETAG, HeaderValue::from_static("W/\"v2\""));
        assert!(!if_range_matches(&req("\"v2\""), &stored));
        assert!(if_range_matches(&HeaderMap::new(), &stored));
    }

    #[test]
    fn preconditions() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static("\"v2\""));
        stored.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Sat, 05 Dec 2026 10:00:00 GMT"),
        );
        let req = |n: header::HeaderName, v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(n, HeaderValue::from_static(v));
            h
        };
        assert!(!precondition_failed(
            &req(header::IF_MATCH, "\"v1\", \"v2\""),
            &stored
        ));
        assert!(!precondition_failed(&req(header::IF_MATCH, "*"), &stored));
        assert!(precondition_failed(
            &req(header::IF_MATCH, "\"v1\""),
            &stored
        ));
        assert!(precondition_failed(
            &req(header::IF_MATCH, "W/\"v2\""),
            &stored
        ));
        let ius = header::IF_UNMODIFIED_SINCE;
        assert!(precondition_failed(
            &req(ius.clone(), "Sat, 05 Dec 2026 09:00:00 GMT"),
            &stored
        ));
        assert!(!precondition_failed(
            &req(ius.clone(), "Sat, 05 Dec 2026 10:00:00 GMT"),
            &stored
        ));
        assert!(!precondition_failed(&req(ius, "not a date"), &stored));
    }

    #[test]
    fn origin_206_checked() {
        let h = |cr: &'static str, cl: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_RANGE, HeaderValue::from_static(cr));
            if let Some(cl) = cl {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(cl));
            }
            h
        };
        assert_eq!(
            check_origin_206(&h("bytes 0-9/100", Some("10"))),
            Ok(Some(10))
        );
        assert_eq!(check_origin_206(&h("bytes 0-9/*", None)), Ok(Some(10)));
        assert!(check_origin_206(&h("bytes 0-9/100", Some("11"))).is_err());
        assert!(check_origin_206(&h("bytes 0-100/100", None)).is_err());
        assert!(check_origin_206(&h("bytes 9-0/100", None)).is_err());
        assert!(check_origin_206(&HeaderMap::new()).is_err());
        assert!(check_origin_206(&h("bytes 0-18446744073709551615/*", None)).is_err());
        assert!(check_origin_206(&h("bytes 0-99999999999999999999/*", None)).is_err());
    }

    /// Splits a `multipart/byteranges` body into its parts' (Content-Range, bytes).
    fn parts(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
        let delim = format!("\r\n--{boundary}");
        let text = body;
        let mut out = Vec::new();
        let mut pos = 0;
        let find = |from: usize, pat: &[u8]| {
            text[from..]
                .windows(pat.len())
                .position(|w| w == pat)
                .map(|p| p + from)
        };
        pos = find(pos, delim.as_bytes()).unwrap() + delim.len();
        while &text[pos..pos + 2] != b"--" {
            let head_end = find(pos, b"\r\n\r\n").unwrap();
            let head = String::from_utf8_lossy(&text[pos..head_end]).to_string();
            let cr = head
                .lines()
                .find_map(|l| l.strip_prefix("content-range: "))
                .unwrap()
                .to_string();
            let range = cr
                .strip_prefix("bytes ")
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            let start = head_end + 4;
            let data = text[start..start + (b - a + 1)].to_vec();
            pos = start + data.len();
            assert_eq!(&text[pos..pos + delim.len()], delim.as_bytes());
            pos += delim.len();
            out.push((cr, data));
        }
        out
    }

    #[test]
    fn boundary_avoids_the_parts() {
        let plain = boundary(&[b'x'; 44], &[(0, 43)]);
        assert_eq!(plain.len(), 22);
        let body = format!("{plain}{plain}");
        let other = boundary(body.as_bytes(), &[(0, 20), (21, 43)]);
        assert_ne!(plain, other);
        assert!(!body.contains(&other));
        // Only the parts count: the boundary may occur elsewhere in the object.
        assert_eq!(boundary(body.as_bytes(), &[(1, 2)]), plain);
    }

    use proptest::prelude::*;

    fn spec() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..300, 0u64..300).prop_map(|(a, b)| format!("{a}-{b}")),
            (0u64..300).prop_map(|a| format!("{a}-")),
            (0u64..300).prop_map(|n| format!("-{n}")),
        ]
    }

    proptest! {
        /// Any range set over any object length: a 416, the whole object, or parts whose
        /// bytes are the same slices of the object; never more bytes than the object holds.
        #[test]
        fn any_ranges_answer_slices_or_416(
            len in 0usize..260,
            specs in proptest::collection::vec(spec(), 1..6),
        ) {
            let body = Bytes::from((0..len).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>());
            let value = format!("bytes={}", specs.join(","));
            let ranges = parse(value.as_bytes(), len as u64);
            match partial(&ranges, &body, Some(&HeaderValue::from_static("text/plain"))) {
                None => prop_assert_eq!(ranges, Ranges::Ignore),
                Some(p) if p.status == StatusCode::RANGE_NOT_SATISFIABLE => {
                    prop_assert!(p.body.is_empty());
                    prop_assert_eq!(p.fields[0].1.to_str().unwrap(), format!("bytes */{len}"));
                }
                Some(p) => {
                    prop_assert_eq!(p.status, StatusCode::PARTIAL_CONTENT);
                    let Ranges::Satisfiable(list) = &ranges else { unreachable!() };
                    let total: u64 = list.iter().map(|(a, b)| b - a + 1).sum();
                    prop_assert!(total <= len as u64);
                    if list.len() == 1 {
                        let (a, b) = list[0];
                        prop_assert_eq!(&p.body[..], &body[a as usize..=b as usize]);
                        prop_assert_eq!(
                            p.fields[0].1.to_str().unwrap(),
                            format!("bytes {a}-{b}/{len}")
                        );
                    } else {
                        let ct = p.fields[0].1.to_str().unwrap().to_string();
                        let boundary = ct.split("boundary=").nth(1).unwrap();
                        let got = parts(&p.body, boundary);
                        prop_assert_eq!(got.len(), list.len());
                        for ((cr, data), (a, b)) in got.iter().zip(list) {
                            prop_assert_eq!(cr, &format!("bytes {a}-{b}/{len}"));
                            prop_assert_eq!(&data[..], &body[*a as usize..=*b as usize]);
                        }
                    }
                }
            }
        }
    }
}
