//! Request-header normalisation for `Vary` (RFC 9111 §4.1 lets a cache normalise the
//! selecting header fields): `Accept-Encoding` becomes the one coding torii keeps a
//! variant for, and configured lists (`vary_normalise`) map a field to one listed value.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::trim_ows;

/// The codings a variant is kept for, in the order ties are broken.
pub const CODINGS: [&str; 4] = ["br", "zstd", "gzip", "identity"];

/// Per-route lists of values a selecting request field is mapped to
/// (`routes[].cache.vary_normalise`). The first value of a list is the fallback.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VaryNormalise {
    pub lists: Vec<(HeaderName, Vec<String>)>,
    /// The route compresses (`routes[].compress`): `Accept-Encoding` normalises to
    /// `identity` for every request, so the origin is asked for identity and one stored
    /// object serves every client (torii encodes or decodes it per client).
    pub identity_upstream: bool,
}

impl VaryNormalise {
    /// The list configured for `name` (lowercase), if any.
    pub fn list(&self, name: &str) -> Option<&[String]> {
        self.lists
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, l)| l.as_slice())
    }

    /// The normalised value of the selecting field `name` (lowercase) in a request,
    /// when torii normalises it: always for `accept-encoding`, and for listed fields.
    pub fn value<'a>(&'a self, name: &str, req_headers: &HeaderMap) -> Option<&'a str> {
        if name == "accept-encoding" {
            if self.identity_upstream {
                return Some("identity");
            }
            return Some(accept_encoding(req_headers));
        }
        let list = self.list(name)?;
        Some(pick_listed(name, list, req_headers))
    }

    /// Rewrites the request sent to the origin so that the response matches the variant
    /// it will be stored as: `Accept-Encoding` is the chosen coding, listed fields the
    /// chosen value.
    pub fn rewrite_request(&self, headers: &mut HeaderMap) {
        let coding = if self.identity_upstream {
            "identity"
        } else {
            accept_encoding(headers)
        };
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(coding));
        for (name, list) in &self.lists {
            let chosen = pick_listed(name.as_str(), list, headers);
            if let Ok(v) = HeaderValue::from_str(chosen) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

/// `(member, q)` for every member of every line of `name`; members with an invalid
/// weight are left out, a missing weight is 1.
fn weighted<'h>(req_headers: &'h HeaderMap, name: &str) -> Vec<(&'h [u8], f32)> {
    let mut out = Vec::new();
    for line in req_headers.get_all(name) {
        for member in line.as_bytes().split(|&b| b == b',') {
            let mut params = member.split(|&b| b == b';');
            let value = trim_ows(params.next().unwrap_or_default());
            if value.is_empty() {
                continue;
            }
            let mut q = Some(1.0f32);
            for p in params {
                let p = trim_ows(p);
                if let Some(w) = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q=")) {
                    q = std::str::from_utf8(w)
                        .ok()
                        .and_then(|w| w.trim().parse::<f32>().ok())
                        .filter(|w| (0.0..=1.0).contains(w));
                }
            }
            if let Some(q) = q {
                out.push((value, q));
            }
        }
    }
    out
}

/// The one coding of [`CODINGS`] a request's `Accept-Encoding` is normalised to: the
/// acceptable one with the highest weight (RFC 9110 §12.5.3), ties broken in the order
/// of [`CODINGS`]. `x-gzip` counts as `gzip`; `*` weighs the codings not named;
/// `identity` is acceptable unless excluded. No field, or nothing acceptable: `identity`.
pub fn accept_encoding(req_headers: &HeaderMap) -> &'static str {
    let members = weighted(req_headers, "accept-encoding");
    if members.is_empty() {
        return "identity";
    }
    let star = members.iter().find(|(m, _)| *m == b"*").map(|&(_, q)| q);
    let weight = |coding: &str| {
        let named = members.iter().find(|(m, _)| {
            m.eq_ignore_ascii_case(coding.as_bytes())
                || (coding == "gzip" && m.eq_ignore_ascii_case(b"x-gzip"))
        });
        match (named, star) {
            (Some(&(_, q)), _) => q,
            (None, Some(q)) => q,
            (None, None) if coding == "identity" => 1.0,
            (None, None) => 0.0,
        }
    };
    let mut best = ("identity", 0.0f32);
    for coding in CODINGS {
        let q = weight(coding);
        if q > best.1 {
            best = (coding, q);
        }
    }
    best.0
}

/// The listed value a request's field `name` maps to: the acceptable member with the
/// highest weight that matches a listed value (for `accept-language`, a language range
/// matches a listed tag it is a prefix of, or that is a prefix of it: `en-GB` and `en`
/// both pick `en`, `de` picks `de-CH`, RFC 4647 §3.3.1; for other fields, equal ignoring
/// case), else the first listed value. `*` picks the first listed value.
pub fn pick_listed<'a>(name: &str, list: &'a [String], req_headers: &HeaderMap) -> &'a str {
    let Some(first) = list.first() else {
        return "";
    };
    let mut members = weighted(req_headers, name);
    // Highest weight first; equal weights keep the client's order.
    members.sort_by(|a, b| b.1.total_cmp(&a.1));
    let language = name == "accept-language";
    for (member, q) in members {
        if q <= 0.0 {
            break;
        }
        if member == b"*" {
            return first;
        }
        let Ok(range) = std::str::from_utf8(member) else {
            continue;
        };
        let found = list.iter().find(|l| {
            l.eq_ignore_ascii_case(range)
                || (language && (prefix_tag(l, range) || prefix_tag(range, l)))
        });
        if let Some(l) = found {
            return l;
        }
    }
    first
}

/// `prefix` is `tag` or a leading subtag sequence of it (`en` of `en-GB`), ignoring case.
fn prefix_tag(tag: &str, prefix: &str) -> bool {
    tag.len() > prefix.len()
        && tag.as_bytes()[prefix.len()] == b'-'
        && tag[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &'static str, v: &'static str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_static(v));
        m
    }

    #[test]
    fn accept_encoding_browser_values_share_one_coding() {
        for v in [
            "gzip, deflate, br",
            "br, gzip, deflate",
            "gzip,deflate,br",
            "gzip, deflate, br, zstd",
            "deflate, gzip;q=1.0, br",
        ] {
            let got = accept_encoding(&req("accept-encoding", v));
            assert!(got == "br" || got == "zstd", "{v:?}: {got}");
        }
        assert_eq!(
            accept_encoding(&req("accept-encoding", "gzip, deflate, br")),
            accept_encoding(&req("accept-encoding", "br,gzip , deflate"))
        );
    }

    #[test]
    fn accept_encoding_q_values_and_star() {
        let ae = |v| accept_encoding(&req("accept-encoding", v));
        assert_eq!(ae("gzip;q=1, br;q=0.5"), "gzip");
        assert_eq!(ae("x-gzip"), "gzip");
        assert_eq!(ae("deflate"), "identity");
        assert_eq!(ae("br;q=0, gzip;q=0"), "identity");
        assert_eq!(ae("*"), "br");
        assert_eq!(ae("gzip;q=0.2, *;q=0"), "gzip");
        assert_eq!(ae("identity;q=0, *;q=0"), "identity");
        assert_eq!(ae("gzip;q=bogus"), "identity");
        assert_eq!(accept_encoding(&HeaderMap::new()), "identity");
    }

    #[test]
    fn accept_language_maps_to_a_listed_language_or_the_first() {
        let list: Vec<String> = ["en", "de", "fr"].map(String::from).to_vec();
        let al = |v| pick_listed("accept-language", &list, &req("accept-language", v));
        assert_eq!(al("de-DE,de;q=0.9,en;q=0.8"), "de");
        assert_eq!(al("fr-CA, fr;q=0.9"), "fr");
        assert_eq!(al("es, en;q=0.5"), "en");
        assert_eq!(al("es"), "en");
        assert_eq!(al("ja;q=1, fr;q=0.1"), "fr");
        assert_eq!(al("*"), "en");
        assert_eq!(al("de;q=0.5, fr;q=0.9"), "fr");
        assert_eq!(
            pick_listed("accept-language", &list, &HeaderMap::new()),
            "en"
        );
    }

    #[test]
    fn rewrite_sets_the_chosen_values() {
        let norm = VaryNormalise {
            lists: vec![(
                HeaderName::from_static("accept-language"),
                vec!["en".into(), "de".into()],
            )],
            identity_upstream: false,
        };
        let mut h = req("accept-encoding", "gzip, deflate");
        h.insert("accept-language", HeaderValue::from_static("de-AT"));
        norm.rewrite_request(&mut h);
        assert_eq!(h["accept-encoding"], "gzip");
        assert_eq!(h["accept-language"], "de");
    }
}
