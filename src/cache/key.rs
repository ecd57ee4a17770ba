//! Canonical cache keys: a normalised URL line followed by optional header, cookie and method components.

use http::header::{self, HeaderMap, HeaderName};

/// What goes into a primary cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Include scheme and host (default `true`); when `false` the URL part is
    /// just the normalised path and query.
    pub include_host: bool,
    /// Include the query string (default `true`).
    pub include_query: bool,
    /// Query parameters to drop, by exact (normalised) name or `prefix*`,
    /// e.g. `"utm_*"` (default empty).
    pub drop_query_params: Vec<String>,
    /// Sort query parameters by name, then value (default `true`).
    pub sort_query: bool,
    /// Request headers whose values become part of the key (default empty).
    pub headers: Vec<HeaderName>,
    /// Cookie names (case-sensitive) whose values become part of the key (default empty).
    pub cookies: Vec<String>,
}

impl Default for KeySpec {
    fn default() -> Self {
        Self {
            include_host: true,
            include_query: true,
            drop_query_params: Vec::new(),
            sort_query: true,
            headers: Vec::new(),
            cookies: Vec::new(),
        }
    }
}

/// Builds the primary cache key.
///
/// The first line is [`canonical_url`]; then, each on its own `\n`-prefixed
/// line: `h:name=value` for every configured header (sorted by name; all field
/// lines joined by `,`; just `h:name` when absent), `c:name=value` for every
/// configured cookie (sorted; first occurrence; just `c:name` when absent),
/// and `m:other` when the method is neither GET nor HEAD (GET and HEAD share
/// entries). Values are percent-encoded outside visible ASCII, so the key
/// never contains raw control characters or newlines besides separators.
pub fn primary_key(
    spec: &KeySpec,
    method_is_head_or_get: bool,
    scheme: &str,
    host: &str,
    path_and_query: &str,
    req_headers: &HeaderMap,
) -> String {
    // Room for the `\nh:` lines that may follow the URL: one allocation for the whole key.
    let mut key = String::with_capacity(host.len() + path_and_query.len() + 48);
    push_primary_key(
        &mut key,
        spec,
        method_is_head_or_get,
        scheme,
        host,
        path_and_query,
        req_headers,
    );
    key
}

/// [`primary_key`], appended to `key` (a buffer the caller reuses).
pub fn push_primary_key(
    key: &mut String,
    spec: &KeySpec,
    method_is_head_or_get: bool,
    scheme: &str,
    host: &str,
    path_and_query: &str,
    req_headers: &HeaderMap,
) {
    push_canonical_url(key, spec, scheme, host, path_and_query);

    let mut names: Vec<&HeaderName> = spec.headers.iter().collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    for name in names {
        key.push_str("\nh:");
        key.push_str(name.as_str());
        let values: Vec<&[u8]> = req_headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if !values.is_empty() {
            key.push('=');
            key.push_str(&escape(&values.join(&b","[..])));
        }
    }

    let mut cookies: Vec<&str> = spec.cookies.iter().map(String::as_str).collect();
    cookies.sort_unstable();
    cookies.dedup();
    for name in cookies {
        key.push_str("\nc:");
        key.push_str(&escape(name.as_bytes()));
        if let Some(value) = cookie_value(req_headers, name) {
            key.push('=');
            key.push_str(&escape(value));
        }
    }

    if !method_is_head_or_get {
        key.push_str("\nm:other");
    }
}

/// A canonical URL (or URL prefix) under both schemes, `http://…` then `https://…`, for
/// purges and invalidations that must reach the copies of both. Anything else (a
/// path-only URL of a `host = false` key) is returned alone.
pub fn both_schemes(url: &str) -> Vec<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) => vec![format!("http://{rest}"), format!("https://{rest}")],
        None => vec![url.to_string()],
    }
}

/// The URL part (first line) of a key built by [`primary_key`]; used for
/// prefix purges.
pub fn url_of(key: &str) -> &str {
    key.split('\n').next().unwrap_or_default()
}

/// The normalised URL that starts a primary key: `scheme://host/path?query`
/// (or `/path?query` without `include_host`).
///
/// Scheme and host are lowercased (bytes invalid in an authority are
/// percent-encoded), trailing dots and a default or empty port
/// are removed; in the path and each query name/value, `%xx` escapes of
/// unreserved characters are decoded and other escapes uppercased; bytes that
/// are never valid in a URI (controls, space, non-ASCII) are percent-encoded;
/// a fragment is dropped; an empty path becomes `/`. Dropped parameters and
/// empty `&&` members are removed, then parameters are stably sorted by name
/// and value when `sort_query`; an empty query loses its `?`.
pub fn canonical_url(spec: &KeySpec, scheme: &str, host: &str, path_and_query: &str) -> String {
    let mut url = String::with_capacity(host.len() + path_and_query.len() + 16);
    push_canonical_url(&mut url, spec, scheme, host, path_and_query);
    url
}

/// [`canonical_url`], appended to `url`.
fn push_canonical_url(
    url: &mut String,
    spec: &KeySpec,
    scheme: &str,
    host: &str,
    path_and_query: &str,
) {
    // One pass for both: the path ends at the first `?` or `#`, the query at a `#`.
    let (path, query) = match path_and_query.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) if path_and_query.as_bytes()[i] == b'?' => {
            let rest = &path_and_query[i + 1..];
            (
                &path_and_query[..i],
                Some(rest.split('#').next().unwrap_or_default()),
            )
        }
        Some(i) => (&path_and_query[..i], None),
        None => (path_and_query, None),
    };
    if spec.include_host {
        push_scheme_and_host(url, scheme, host);
    }
    if path.is_empty() {
        url.push('/');
    } else {
        if !path.starts_with('/') {
            url.push('/');
        }
        push_normalized_percent(url, path);
    }

    if let (true, Some(query)) = (spec.include_query, query) {
        let mut params: Vec<(String, Option<String>)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (normalize_percent(n), Some(normalize_percent(v))),
                None => (normalize_percent(p), None),
            })
            .filter(|(name, _)| !is_dropped(&spec.drop_query_params, name))
            .collect();
        if spec.sort_query {
            params.sort();
        }
        for (i, (name, value)) in params.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(name);
            if let Some(value) = value {
                url.push('=');
                url.push_str(value);
            }
        }
    }
}

fn is_dropped(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

/// The scheme and host a thread last normalised, with the result: a thread's requests
/// mostly name the same few hosts, and comparing two short strings is a fraction of
/// normalising them again (callgrind: about 500 instructions a request).
struct HostMemo {
    scheme: String,
    host: String,
    normalised: String,
}

thread_local! {
    static HOST_MEMO: std::cell::RefCell<HostMemo> = const {
        std::cell::RefCell::new(HostMemo {
            scheme: String::new(),
            host: String::new(),
            normalised: String::new(),
        })
    };
}

/// Hosts longer than this are normalised without the memo, so it never holds much.
const HOST_MEMO_MAX: usize = 255;

/// Appends `scheme://host`, both normalised: [`push_escaped_host`] and
/// [`push_normalized_host`], remembered per thread ([`HostMemo`]).
fn push_scheme_and_host(url: &mut String, scheme: &str, host: &str) {
    if host.len() > HOST_MEMO_MAX || scheme.len() > HOST_MEMO_MAX {
        return push_scheme_and_host_now(url, scheme, host);
    }
    HOST_MEMO.with_borrow_mut(|memo| {
        if memo.host != host || memo.scheme != scheme {
            memo.normalised.clear();
            push_scheme_and_host_now(&mut memo.normalised, scheme, host);
            memo.scheme.clear();
            memo.scheme.push_str(scheme);
            memo.host.clear();
            memo.host.push_str(host);
        }
        url.push_str(&memo.normalised);
    });
}

fn push_scheme_and_host_now(url: &mut String, scheme: &str, host: &str) {
    push_escaped_host(url, scheme);
    url.push_str("://");
    push_normalized_host(url, scheme, host);
}

/// Appends `host` lowercased, without trailing dots or a default port (for `scheme`), its
/// bytes escaped as by [`push_escaped_host`].
fn push_normalized_host(out: &mut String, scheme: &str, host: &str) {
    let host = host.trim();
    // Split off a port, taking care of IPv6 literals like `[::1]:8080`.
    let (name, port) = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], &host[i + 1..]),
        _ => (host, ""),
    };
    let name = name.trim_end_matches('.');
    let default_port = (scheme.eq_ignore_ascii_case("http") && port == "80")
        || (scheme.eq_ignore_ascii_case("https") && port == "443");
    push_escaped_host(out, name);
    if !port.is_empty() && !default_port {
        out.push(':');
        push_escaped_host(out, port);
    }
}

/// Appends `s` lowercased, with the bytes not allowed in a URI authority (RFC 3986 §3.2)
/// percent-encoded, keeping `%` so the result is stable under re-normalisation.
fn push_escaped_host(out: &mut String, s: &str) {
    push_runs(out, s, &HOST_KEPT, |out, b| {
        let lower = b.to_ascii_lowercase();
        match HOST_KEPT[usize::from(lower)] {
            true => out.push(char::from(lower)),
            false => push_hex(out, b),
        }
    });
}

/// Appends `s` to `out`: runs of the bytes `kept` marks are copied whole, every other
/// byte goes through `other`. Keys are mostly plain ASCII, so most go out in one copy.
fn push_runs(
    out: &mut String,
    s: &str,
    kept: &[bool; 256],
    mut other: impl FnMut(&mut String, u8),
) {
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if kept[usize::from(b)] {
            continue;
        }
        push_run(out, s, run, i);
        other(out, b);
        run = i + 1;
    }
    push_run(out, s, run, s.len());
}

/// Appends `s[from..to]`, a run of bytes a table keeps (or nothing). A run is ASCII (the
/// tables keep ASCII only), so both its ends are char boundaries: the byte after an ASCII
/// byte never continues a UTF-8 sequence. An empty run may start inside one: skipped.
fn push_run(out: &mut String, s: &str, from: usize, to: usize) {
    if from < to {
        out.push_str(&s[from..to]);
    }
}

/// The bytes an authority keeps as they are: lowercase letters, digits, and
/// `-._~!$&'()*+,;=:[]%`.
static HOST_KEPT: [bool; 256] = table(b"abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:[]%");

/// The bytes a path or query keeps as they are: visible ASCII but `%`.
static PATH_KEPT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b'!';
    while b <= b'~' {
        t[b as usize] = b != b'%';
        b += 1;
    }
    t
};

const fn table(kept: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < kept.len() {
        t[kept[i] as usize] = true;
        i += 1;
    }
    t
}

/// Appends `%XX` for `b` (uppercase hex).
fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

/// Decodes `%xx` of unreserved characters, uppercases other escapes and
/// percent-encodes bytes that cannot appear in a URI. Malformed `%` is kept.
fn normalize_percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_normalized_percent(&mut out, s);
    out
}

/// [`normalize_percent`], appended to `out`.
fn push_normalized_percent(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if PATH_KEPT[usize::from(b)] {
            i += 1;
            continue;
        }
        push_run(out, s, run, i);
        let hex = match (b, bytes.get(i + 1..i + 3)) {
            (b'%', Some(&[hi, lo])) => char::from(hi)
                .to_digit(16)
                .zip(char::from(lo).to_digit(16))
                .and_then(|(hi, lo)| u8::try_from(hi * 16 + lo).ok()),
            _ => None,
        };
        match hex {
            Some(decoded)
                if decoded.is_ascii_alphanumeric()
                    || matches!(decoded, b'-' | b'.' | b'_' | b'~') =>
            {
                out.push(char::from(decoded));
                i += 3;
            }
            Some(decoded) => {
                push_hex(out, decoded);
                i += 3;
            }
            None if b == b'%' => {
                out.push('%');
                i += 1;
            }
            None => {
                push_hex(out, b);
                i += 1;
            }
        }
        run = i;
    }
    push_run(out, s, run, s.len());
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (n, v) = pair.split_at(eq);
            (trim(n) == name.as_bytes()).then(|| trim(v.get(1..).unwrap_or_default()))
        })
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Percent-encodes `%`, controls, space and non-ASCII bytes.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            push_hex(&mut out, b);
        }
    }
    out
}

#[cfg(test)]
mod tests;
