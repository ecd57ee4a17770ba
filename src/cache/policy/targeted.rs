//! Targeted cache control (RFC 9213): `CDN-Cache-Control` and other fields aimed at one
//! class of caches, which replace `Cache-Control` and `Expires` for the caches they target.

use http::header::{HeaderMap, HeaderName};

use super::{trim_ows, CacheControl, StoreOptions};

/// torii's own targeted field: honoured like `CDN-Cache-Control` when listed in
/// `cache.targeted_fields`, and never forwarded to clients.
pub const OWN_TARGETED_FIELD: HeaderName =
    HeaderName::from_static(crate::cache::fields::OWN_TARGETED);

/// The default target list (RFC 9213 §3: `CDN-Cache-Control` targets every CDN cache).
pub fn default_targeted_fields() -> Vec<HeaderName> {
    vec![HeaderName::from_static("cdn-cache-control")]
}

/// The directives that govern storing and freshness of a response, and whether they came
/// from a targeted field (RFC 9213 §2.1): the first field of `opts.targeted_fields`, in
/// list order, whose value is a valid, non-empty Structured Fields Dictionary (RFC 8941
/// §3.2) replaces `Cache-Control` (and `Expires`, which the caller then ignores). An
/// invalid targeted field is ignored as a whole. Without a usable one, `Cache-Control`.
pub fn response_cache_control(headers: &HeaderMap, opts: &StoreOptions) -> (CacheControl, bool) {
    for name in &opts.targeted_fields {
        if let Some(cc) = targeted(headers, name) {
            return (cc, true);
        }
    }
    (CacheControl::from_headers(headers), false)
}

/// The directives of the targeted field `name`, all its field lines combined, when it is
/// present, valid and not empty.
pub fn targeted(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut members = Vec::new();
    for line in lines {
        members.extend(parse_dictionary(line.as_bytes())?);
    }
    if members.is_empty() {
        return None;
    }
    let mut cc = CacheControl::default();
    // RFC 8941 §3.2: a repeated key's last value wins (CacheControl keeps the first).
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in members.iter().rev() {
        if seen.contains(&key.as_str()) {
            continue;
        }
        seen.push(key);
        match value {
            SfValue::Bool(false) => {}
            SfValue::Bool(true) => cc.apply(key.as_bytes(), None),
            SfValue::Bare(v) => cc.apply(key.as_bytes(), Some(v)),
        }
    }
    Some(cc)
}

/// A member value, as much of RFC 8941 as cache directives use.
#[derive(Debug, PartialEq)]
enum SfValue {
    /// `?1` or a bare key.
    Bool(bool),
    /// An integer, decimal, token or (unquoted) string.
    Bare(Vec<u8>),
}

/// Parses a Structured Fields Dictionary (RFC 8941 §4.2.2), parameters dropped.
/// `None` when the text is not one.
fn parse_dictionary(input: &[u8]) -> Option<Vec<(String, SfValue)>> {
    let mut s = trim_ows(input);
    let mut out = Vec::new();
    while !s.is_empty() {
        let (key, rest) = parse_key(s)?;
        s = rest;
        let value = if let [b'=', rest @ ..] = s {
            let (v, rest) = parse_bare_item(rest)?;
            s = rest;
            v
        } else {
            SfValue::Bool(true)
        };
        s = skip_parameters(s)?;
        out.push((key, value));
        s = trim_ows(s);
        if s.is_empty() {
            break;
        }
        let [b',', rest @ ..] = s else {
            return None;
        };
        s = trim_ows(rest);
        if s.is_empty() {
            return None; // trailing comma
        }
    }
    Some(out)
}

fn parse_key(s: &[u8]) -> Option<(String, &[u8])> {
    let first = *s.first()?;
    if !(first.is_ascii_lowercase() || first == b'*') {
        return None;
    }
    let end = s
        .iter()
        .position(|&b| {
            !(b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'_' | b'-' | b'.' | b'*'))
        })
        .unwrap_or(s.len());
    let key = String::from_utf8_lossy(&s[..end]).into_owned();
    Some((key, &s[end..]))
}

fn parse_bare_item(s: &[u8]) -> Option<(SfValue, &[u8])> {
    match *s.first()? {
        b'?' => match s.get(1)? {
            b'0' => Some((SfValue::Bool(false), &s[2..])),
            b'1' => Some((SfValue::Bool(true), &s[2..])),
            _ => None,
        },
        b'"' => {
            let mut out = Vec::new();
            let mut i = 1;
            loop {
                let b = *s.get(i)?;
                i += 1;
                match b {
                    b'"' => break,
                    b'\\' => {
                        let next = *s.get(i)?;
                        if !matches!(next, b'"' | b'\\') {
                            return None;
                        }
                        out.push(next);
                        i += 1;
                    }
                    0x20..=0x7e => out.push(b),
                    _ => return None,
                }
            }
            Some((SfValue::Bare(out), &s[i..]))
        }
        b'-' | b'0'..=b'9' => {
            let end = s
                .iter()
                .skip(1)
                .position(|&b| !(b.is_ascii_digit() || b == b'.'))
                .map_or(s.len(), |p| p + 1);
            let num = &s[..end];
            let digits = num.iter().filter(|b| b.is_ascii_digit()).count();
            let dots = num.iter().filter(|&&b| b == b'.').count();
            if digits == 0 || dots > 1 || num.ends_with(b".") || (dots == 0 && digits > 15) {
                return None;
            }
            Some((SfValue::Bare(num.to_vec()), &s[end..]))
        }
        b if b.is_ascii_alphabetic() || b == b'*' => {
            let end = s
                .iter()
                .position(|&b| !b.is_ascii_graphic() || b"\"(),;<=>?@[\\]{}".contains(&b))
                .unwrap_or(s.len());
            Some((SfValue::Bare(s[..end].to_vec()), &s[end..]))
        }
        _ => None,
    }
}

/// Skips `;key[=value]` parameters.
fn skip_parameters(mut s: &[u8]) -> Option<&[u8]> {
    while let [b';', rest @ ..] = s {
        let rest = trim_ows(rest);
        let (_, rest) = parse_key(rest)?;
        s = rest;
        if let [b'=', rest @ ..] = s {
            let (_, rest) = parse_bare_item(rest)?;
            s = rest;
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn rfc9213_cdn_cache_control_replaces_cache_control() {
        let opts = StoreOptions::default();
        let h = headers(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
        ]);
        let (cc, targeted) = response_cache_control(&h, &opts);
        assert!(targeted);
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(Duration::from_secs(60)));
        let h = headers(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "no-store"),
        ]);
        let (cc, targeted) = response_cache_control(&h, &opts);
        assert!(targeted && cc.no_store && cc.max_age.is_none());
    }

    #[test]
    fn rfc9213_invalid_or_empty_field_is_ignored_as_a_whole() {
        let opts = StoreOptions::default();
        for bad in [
            "Max-Age=60",
            "max-age=60,",
            "max-age=60 no-store",
            "max-age=\"60",
            "max-age=?2",
            "",
            "max-age=(1 2)",
        ] {
            let mut h = headers(&[("cache-control", "max-age=5")]);
            h.insert("cdn-cache-control", HeaderValue::from_str(bad).unwrap());
            let (cc, targeted) = response_cache_control(&h, &opts);
            assert!(!targeted, "{bad:?} must be ignored");
            assert_eq!(cc.max_age, Some(Duration::from_secs(5)), "{bad:?}");
        }
    }

    #[test]
    fn rfc9213_precedence_follows_the_list_and_skips_invalid() {
        let opts = StoreOptions {
            targeted_fields: vec![
                OWN_TARGETED_FIELD,
                HeaderName::from_static("cdn-cache-control"),
            ],
            ..StoreOptions::default()
        };
        let h = headers(&[
            ("torii-cache-control", "max-age=10"),
            ("cdn-cache-control", "max-age=20"),
        ]);
        assert_eq!(
            response_cache_control(&h, &opts).0.max_age,
            Some(Duration::from_secs(10))
        );
        let h = headers(&[
            ("torii-cache-control", "MAX-AGE"),
            ("cdn-cache-control", "max-age=20"),
        ]);
        assert_eq!(
            response_cache_control(&h, &opts).0.max_age,
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn rfc8941_values_booleans_parameters_and_strings() {
        let h = headers(&[(
            "cdn-cache-control",
            "max-age=30;x=1, no-store=?0, must-revalidate=?1, no-cache=\"set-cookie\", stale-if-error=5",
        )]);
        let cc = targeted(&h, &HeaderName::from_static("cdn-cache-control")).unwrap();
        assert_eq!(cc.max_age, Some(Duration::from_secs(30)));
        assert!(!cc.no_store && cc.must_revalidate);
        assert_eq!(
            cc.no_cache,
            Some(super::super::FieldScope::Fields(vec!["set-cookie".into()]))
        );
        assert_eq!(cc.stale_if_error, Some(Duration::from_secs(5)));
        // Several field lines are one dictionary; a repeated key's last value wins.
        let h = headers(&[
            ("cdn-cache-control", "max-age=30"),
            ("cdn-cache-control", "max-age=40"),
        ]);
        let cc = targeted(&h, &HeaderName::from_static("cdn-cache-control")).unwrap();
        assert_eq!(cc.max_age, Some(Duration::from_secs(40)));
    }
}
