//! Invalidation after unsafe requests (RFC 9111 §4.4).

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

/// Target URIs to invalidate after an unsafe request (RFC 9111 §4.4).
///
/// Any method other than GET, HEAD, OPTIONS and TRACE is unsafe. With a 2xx
/// or 3xx status, returns the request target plus `Location` and
/// `Content-Location` when they resolve (RFC 3986 §5.2, fragments dropped) to
/// the same scheme and authority (host case-insensitive, default ports
/// ignored). URIs are `scheme://authority/path?query`, deduplicated and not
/// otherwise normalised: pass them through the key builder before matching.
pub fn invalidated_uris(
    method: &Method,
    status: StatusCode,
    scheme: &str,
    authority: &str,
    path_and_query: &str,
    resp_headers: &HeaderMap,
) -> Vec<String> {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
    if safe.contains(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let scheme = scheme.to_ascii_lowercase();
    let base_path = strip_fragment(path_and_query);
    let base_path = if base_path.starts_with('/') {
        base_path.to_string()
    } else {
        format!("/{base_path}")
    };
    let mut out = vec![format!("{scheme}://{authority}{base_path}")];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(reference) = resp_headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some((s, a, p)) = resolve(&scheme, authority, &base_path, reference.trim()) {
            if s == scheme && same_authority(&scheme, &a, authority) {
                let uri = format!("{s}://{a}{p}");
                if !out.contains(&uri) {
                    out.push(uri);
                }
            }
        }
    }
    out
}

fn strip_fragment(s: &str) -> &str {
    s.split('#').next().unwrap_or_default()
}

fn split_query(s: &str) -> (&str, &str) {
    match s.find('?') {
        Some(i) => s.split_at(i),
        None => (s, ""),
    }
}

/// Resolves `reference` against `scheme://authority` + `base` (RFC 3986 §5.2.2).
/// Returns `(scheme, authority, path+query)`; `None` for non-hierarchical URIs.
fn resolve(
    scheme: &str,
    authority: &str,
    base: &str,
    reference: &str,
) -> Option<(String, String, String)> {
    let r = strip_fragment(reference);
    let has_scheme = r.find(':').is_some_and(|i| {
        let s = &r[..i];
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    let (t_scheme, rest) = if has_scheme {
        let (s, rest) = r.split_once(':')?;
        (s.to_ascii_lowercase(), rest)
    } else {
        (scheme.to_string(), r)
    };
    if let Some(net) = rest.strip_prefix("//") {
        let end = net.find(['/', '?']).unwrap_or(net.len());
        let (auth, pq) = net.split_at(end);
        let (path, query) = split_query(pq);
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            remove_dot_segments(path)
        };
        return Some((t_scheme, auth.to_string(), format!("{path}{query}")));
    }
    if has_scheme {
        return None; // e.g. `mailto:`; no authority to compare
    }
    let (base_path, base_query) = split_query(base);
    let (path, query) = split_query(rest);
    let pq = if path.is_empty() {
        let query = if query.is_empty() { base_query } else { query };
        format!("{base_path}{query}")
    } else if path.starts_with('/') {
        format!("{}{query}", remove_dot_segments(path))
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{query}", remove_dot_segments(&format!("{dir}{path}")))
    };
    Some((t_scheme, authority.to_string(), pq))
}

/// RFC 3986 §5.2.4 for absolute paths.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    result
}

fn same_authority(scheme: &str, a: &str, b: &str) -> bool {
    let norm = |auth: &str| {
        let auth = auth
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (host, port) = match auth.rfind(':') {
            Some(i) if !auth[i..].contains(']') => {
                (auth[..i].to_string(), auth[i + 1..].to_string())
            }
            _ => (auth.clone(), String::new()),
        };
        let default = matches!((scheme, port.as_str()), ("http", "80") | ("https", "443"));
        if port.is_empty() || default {
            host
        } else {
            format!("{host}:{port}")
        }
    };
    norm(a) == norm(b)
}
