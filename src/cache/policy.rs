//! RFC 9111 shared-cache policy as pure functions: storability, freshness, age, reuse, conditional requests, revalidation, invalidation and Vary matching.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

mod conditional;
mod date;
mod invalidation;
mod normalise;
#[cfg(test)]
mod props;
mod targeted;
#[cfg(test)]
mod tests;

pub use conditional::{merge_304, not_modified, response_304_matches, validators_for};
pub use date::parse_http_date;
pub use invalidation::invalidated_uris;
pub use normalise::{accept_encoding, pick_listed, VaryNormalise, CODINGS};
pub use targeted::{default_targeted_fields, response_cache_control, targeted, OWN_TARGETED_FIELD};

/// Largest delta-seconds value represented (RFC 9111 §1.2.2): bigger values saturate to 2^31 s.
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

// ---------------------------------------------------------------------------
// Cache-Control parsing
// ---------------------------------------------------------------------------

/// How far a `no-cache` or `private` directive reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldScope {
    /// Bare directive (or an empty field list): applies to the whole response.
    All,
    /// Qualified directive: applies to the listed header field names (lowercased).
    Fields(Vec<String>),
}

/// The request `max-stale` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// Bare `max-stale`: any amount of staleness is acceptable.
    Any,
    /// `max-stale=N`: at most N seconds of staleness (an invalid N reads as 0).
    Limit(Duration),
}

/// Cache directives parsed from every `Cache-Control` field line of a message.
///
/// Parsing is lenient and never fails: names are case-insensitive, unknown
/// directives are ignored, arguments may be tokens or quoted strings, and for
/// duplicated directives the first occurrence wins (RFC 9111 §4.2.1).
/// Invalid `max-age`/`s-maxage` arguments read as 0 (the response is stale);
/// invalid `min-fresh`, `max-stale`, `stale-while-revalidate` and
/// `stale-if-error` arguments read as 0 (no allowance). Values above 2^31
/// saturate to 2^31 seconds (§1.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age=N`.
    pub max_age: Option<Duration>,
    /// `s-maxage=N` (response only).
    pub s_maxage: Option<Duration>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` or `no-cache="field, ..."`.
    pub no_cache: Option<FieldScope>,
    /// `private` or `private="field, ..."` (response only).
    pub private: Option<FieldScope>,
    /// `public` (response only).
    pub public: bool,
    /// `must-revalidate` (response only).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (response only).
    pub proxy_revalidate: bool,
    /// `max-stale` or `max-stale=N` (request only).
    pub max_stale: Option<MaxStale>,
    /// `min-fresh=N` (request only).
    pub min_fresh: Option<Duration>,
    /// `only-if-cached` (request only).
    pub only_if_cached: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `stale-while-revalidate=N` (RFC 5861).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error=N` (RFC 5861).
    pub stale_if_error: Option<Duration>,
    /// `must-understand` (response only).
    pub must_understand: bool,
}

impl CacheControl {
    /// Parses all `Cache-Control` field lines of `headers`, in order.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            cc.merge_bytes(value.as_bytes());
        }
        cc
    }

    /// Parses one field value; arbitrary bytes are accepted.
    pub fn parse(bytes: &[u8]) -> Self {
        let mut cc = Self::default();
        cc.merge_bytes(bytes);
        cc
    }

    fn merge_bytes(&mut self, bytes: &[u8]) {
        for (name, value) in Directives::new(bytes) {
            self.apply(&name, value.as_deref());
        }
    }

    pub(crate) fn apply(&mut self, name: &[u8], value: Option<&[u8]>) {
        let delta_or_zero = || value.and_then(parse_delta).unwrap_or(Duration::ZERO);
        match name {
            b"max-age" if self.max_age.is_none() => self.max_age = Some(delta_or_zero()),
            b"s-maxage" if self.s_maxage.is_none() => self.s_maxage = Some(delta_or_zero()),
            b"min-fresh" if self.min_fresh.is_none() => self.min_fresh = Some(delta_or_zero()),
            b"stale-while-revalidate" if self.stale_while_revalidate.is_none() => {
                self.stale_while_revalidate = Some(delta_or_zero())
            }
            b"stale-if-error" if self.stale_if_error.is_none() => {
                self.stale_if_error = Some(delta_or_zero())
            }
            b"max-stale" if self.max_stale.is_none() => {
                self.max_stale = Some(match value {
                    None => MaxStale::Any,
                    Some(v) => MaxStale::Limit(parse_delta(v).unwrap_or(Duration::ZERO)),
                })
            }
            b"no-cache" if self.no_cache.is_none() => self.no_cache = Some(field_scope(value)),
            b"private" if self.private.is_none() => self.private = Some(field_scope(value)),
            b"no-store" => self.no_store = true,
            b"public" => self.public = true,
            b"must-revalidate" => self.must_revalidate = true,
            b"proxy-revalidate" => self.proxy_revalidate = true,
            b"only-if-cached" => self.only_if_cached = true,
            b"immutable" => self.immutable = true,
            b"no-transform" => self.no_transform = true,
            b"must-understand" => self.must_understand = true,
            _ => {}
        }
    }
}

/// Serialises the understood directives in a canonical order, `, `-separated.
impl fmt::Display for CacheControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let secs = |name: &str, d: Option<Duration>| d.map(|d| format!("{name}={}", d.as_secs()));
        let scope = |name: &str, s: &Option<FieldScope>| match s {
            None => None,
            Some(FieldScope::All) => Some(name.to_string()),
            Some(FieldScope::Fields(fields)) => {
                let list = fields.join(", ").replace('\\', "\\\\").replace('"', "\\\"");
                Some(format!("{name}=\"{list}\""))
            }
        };
        let flag = |name: &str, on: bool| on.then(|| name.to_string());
        let all = [
            secs("max-age", self.max_age),
            secs("s-maxage", self.s_maxage),
            flag("no-store", self.no_store),
            scope("no-cache", &self.no_cache),
            scope("private", &self.private),
            flag("public", self.public),
            flag("must-revalidate", self.must_revalidate),
            flag("proxy-revalidate", self.proxy_revalidate),
            self.max_stale.map(|m| match m {
                MaxStale::Any => "max-stale".to_string(),
                MaxStale::Limit(d) => format!("max-stale={}", d.as_secs()),
            }),
            secs("min-fresh", self.min_fresh),
            flag("only-if-cached", self.only_if_cached),
            flag("immutable", self.immutable),
            flag("no-transform", self.no_transform),
            secs("stale-while-revalidate", self.stale_while_revalidate),
            secs("stale-if-error", self.stale_if_error),
            flag("must-understand", self.must_understand),
        ];
        parts.extend(all.into_iter().flatten());
        f.write_str(&parts.join(", "))
    }
}

/// Iterator over `(lowercased name, unquoted argument)` pairs of a directive list.
struct Directives<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Directives<'a> {
    fn new(s: &'a [u8]) -> Self {
        Self { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Reads up to (not including) the next `,`, or `=` too when `at_eq`.
    fn take_until(&mut self, at_eq: bool) -> &'a [u8] {
        let start = self.pos;
        let rest = self.s.get(start..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == b',' || (at_eq && b == b'='))
            .unwrap_or(rest.len());
        self.pos = start + len;
        trim_ows(&rest[..len])
    }

    fn quoted(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.pos += 1; // opening quote
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.pos += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        // Ignore junk between the closing quote and the next comma.
        self.take_until(false);
        out
    }
}

impl<'a> Iterator for Directives<'a> {
    /// Borrowed from the field when it can be (a lowercase name, an unquoted value): a
    /// response's directives are parsed on every store without an allocation.
    type Item = (Cow<'a, [u8]>, Option<Cow<'a, [u8]>>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
                self.pos += 1;
            }
            self.peek()?;
            let raw = self.take_until(true);
            let name = if raw.iter().any(u8::is_ascii_uppercase) {
                Cow::Owned(raw.to_ascii_lowercase())
            } else {
                Cow::Borrowed(raw)
            };
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b'"') {
                    Some(Cow::Owned(self.quoted()))
                } else {
                    Some(Cow::Borrowed(self.take_until(false)))
                }
            } else {
                None
            };
            if !name.is_empty() {
                return Some((name, value));
            }
        }
    }
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Parses delta-seconds (`1*DIGIT`), saturating at 2^31; `None` if invalid.
fn parse_delta(bytes: &[u8]) -> Option<Duration> {
    let bytes = trim_ows(bytes);
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for b in bytes {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if n >= DELTA_SECONDS_MAX {
            return Some(Duration::from_secs(DELTA_SECONDS_MAX));
        }
    }
    Some(Duration::from_secs(n))
}

fn field_scope(value: Option<&[u8]>) -> FieldScope {
    let Some(v) = value else {
        return FieldScope::All;
    };
    let fields: Vec<String> = v
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).to_ascii_lowercase())
        .collect();
    if fields.is_empty() {
        FieldScope::All
    } else {
        FieldScope::Fields(fields)
    }
}

/// Request directives, with `Pragma: no-cache` read as `no-cache` when the
/// request has no `Cache-Control` field at all (RFC 9111 §5.4).
pub fn request_cache_control(req_headers: &HeaderMap) -> CacheControl {
    // One pass over the request's few fields (most have neither): cheaper than lookups.
    let mut cc = CacheControl::default();
    let (mut has_cc, mut pragma_no_cache) = (false, false);
    for (name, value) in req_headers {
        if name == header::CACHE_CONTROL {
            has_cc = true;
            cc.merge_bytes(value.as_bytes());
        } else if name == header::PRAGMA && !pragma_no_cache {
            pragma_no_cache = Directives::new(value.as_bytes()).any(|(n, _)| *n == *b"no-cache");
        }
    }
    if !has_cc && pragma_no_cache {
        cc.no_cache = Some(FieldScope::All);
    }
    cc
}

/// Request directives as a route with `client_directives = "ignore"` reads them
/// (origin shielding, as Varnish does by default): `no-cache` (and `Pragma:
/// no-cache`), `max-age` and `min-fresh` no longer bypass a fresh object;
/// `only-if-cached`, `no-store`, `max-stale` and `stale-if-error` still count.
pub fn shielded(mut cc: CacheControl) -> CacheControl {
    cc.no_cache = None;
    cc.max_age = None;
    cc.min_fresh = None;
    cc
}

// ---------------------------------------------------------------------------
// Storage (RFC 9111 §3)
// ---------------------------------------------------------------------------

/// Operator overrides for storing responses.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Ignore response `private` when storing and response `no-cache` when
    /// reusing (default `false`: both honoured).
    pub ignore_no_cache_private: bool,
    /// Store responses carrying `Set-Cookie` (default `false`).
    pub allow_set_cookie: bool,
    /// Lifetime for responses with neither explicit nor heuristic freshness;
    /// also makes such responses storable (default `None`).
    pub default_ttl: Option<Duration>,
    /// Lifetime overriding every other rule (default `None`).
    pub forced_ttl: Option<Duration>,
    /// Fraction of `Date - Last-Modified` used as heuristic lifetime (default 0.1).
    pub heuristic_fraction: f64,
    /// Cap on the heuristic lifetime (default 1 day).
    pub max_heuristic: Duration,
    /// Targeted cache-control fields (RFC 9213), in precedence order (default
    /// `CDN-Cache-Control`): the first valid one replaces `Cache-Control` and `Expires`.
    pub targeted_fields: Vec<HeaderName>,
    /// Lifetimes for responses of these statuses without explicit freshness (negative
    /// caching; default none). The narrowest matching range wins.
    pub status_ttl: Vec<StatusTtl>,
}

/// A lifetime for the statuses `from..=to` (`"404"` or `"5xx"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusTtl {
    pub from: u16,
    pub to: u16,
    pub ttl: Duration,
}

impl StoreOptions {
    /// The `status_ttl` lifetime for `status`: the narrowest matching range's.
    pub fn status_ttl(&self, status: StatusCode) -> Option<Duration> {
        let code = status.as_u16();
        self.status_ttl
            .iter()
            .filter(|t| (t.from..=t.to).contains(&code))
            .min_by_key(|t| t.to - t.from)
            .map(|t| t.ttl)
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            ignore_no_cache_private: false,
            allow_set_cookie: false,
            default_ttl: None,
            forced_ttl: None,
            heuristic_fraction: 0.1,
            max_heuristic: Duration::from_secs(86_400),
            targeted_fields: default_targeted_fields(),
            status_ttl: Vec::new(),
        }
    }
}

/// Why a response may not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoStoreReason {
    /// Request method is not GET.
    Method,
    /// Status is not final, is 206/304, or is not understood under `must-understand`.
    Status,
    /// `no-store` on the request or response.
    NoStore,
    /// Response `private`.
    Private,
    /// Request carried `Authorization` and the response did not allow sharing.
    Authorization,
    /// Response carries `Set-Cookie`.
    SetCookie,
    /// Response has `Vary: *`.
    VaryStar,
    /// No explicit or heuristic freshness and no default TTL.
    NoFreshness,
}

impl NoStoreReason {
    /// Stable lowercase name, suitable for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
            Self::NoFreshness => "no-freshness",
        }
    }
}

impl fmt::Display for NoStoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statuses heuristically cacheable by default (RFC 9110 §15.1).
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses whose caching requirements this policy implements, which is what
/// `must-understand` asks about (RFC 9111 §5.2.2.3). 206 is excluded: range
/// responses are not combined or stored.
pub fn status_understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 451 | 501
    )
}

/// Whether a shared cache may store this response (RFC 9111 §3).
///
/// Only GET responses are stored (HEAD may be answered from them); 1xx, 206
/// and 304 are never stored. The response's directives come from
/// [`response_cache_control`] (a targeted field replaces `Cache-Control` and
/// `Expires`, RFC 9213). Qualified `private="…"` and `no-cache="…"` do not
/// prevent storing: the listed fields are left out of the stored response
/// ([`unshared_fields`]), `Set-Cookie` included. Any status with explicit
/// freshness, or a `status_ttl`, is storable. See [`NoStoreReason`] for the
/// checks, in order.
pub fn storable(
    req_method: &Method,
    req_headers: &HeaderMap,
    resp_status: StatusCode,
    resp_headers: &HeaderMap,
    opts: &StoreOptions,
) -> Result<(), NoStoreReason> {
    let req_cc = CacheControl::from_headers(req_headers);
    ResponseDirectives::parse(resp_status, resp_headers, opts).storable(
        req_method,
        &req_cc,
        req_headers,
        opts,
    )
}

/// Whether a response carries explicit freshness (`max-age`, `s-maxage`, or
/// `Expires`, from a targeted field when one is valid) or the route gives its
/// status a `status_ttl`: what lets a response of any status, 5xx included, be
/// stored and reused (RFC 9111 §3, §4.2.1).
pub fn has_explicit_freshness(
    status: StatusCode,
    resp_headers: &HeaderMap,
    opts: &StoreOptions,
) -> bool {
    ResponseDirectives::parse(status, resp_headers, opts).has_explicit_freshness(opts)
}

/// A response's caching directives, parsed once ([`response_cache_control`]): every
/// decision about storing it and its freshness is taken from this one value, so a
/// stored miss parses its `Cache-Control` once, not once per question.
#[derive(Debug)]
pub struct ResponseDirectives<'a> {
    /// The response's status.
    pub status: StatusCode,
    /// The response's fields.
    pub headers: &'a HeaderMap,
    /// Its directives: the targeted field's when one is valid, else `Cache-Control`'s.
    pub cc: CacheControl,
    /// Whether `cc` came from a targeted field (then `Expires` is ignored).
    pub targeted: bool,
}

impl<'a> ResponseDirectives<'a> {
    /// Parses the directives of a response with `status` and `headers`.
    pub fn parse(status: StatusCode, headers: &'a HeaderMap, opts: &StoreOptions) -> Self {
        let (cc, targeted) = response_cache_control(headers, opts);
        Self {
            status,
            headers,
            cc,
            targeted,
        }
    }

    /// [`storable`], with the request's directives already parsed (only its `no-store`
    /// counts here).
    pub fn storable(
        &self,
        req_method: &Method,
        req_cc: &CacheControl,
        req_headers: &HeaderMap,
        opts: &StoreOptions,
    ) -> Result<(), NoStoreReason> {
        if req_method != Method::GET {
            return Err(NoStoreReason::Method);
        }
        let (cc, resp_headers) = (&self.cc, self.headers);
        let status = self.status.as_u16();
        if status < 200 || status == 206 || status == 304 {
            return Err(NoStoreReason::Status);
        }
        let understood = status_understood(self.status);
        if cc.must_understand && !understood {
            return Err(NoStoreReason::Status);
        }
        // §5.2.2.3: must-understand with an understood status overrides no-store.
        if req_cc.no_store || (cc.no_store && !(cc.must_understand && understood)) {
            return Err(NoStoreReason::NoStore);
        }
        if cc.private == Some(FieldScope::All) && !opts.ignore_no_cache_private {
            return Err(NoStoreReason::Private);
        }
        if req_headers.contains_key(header::AUTHORIZATION)
            && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
        {
            return Err(NoStoreReason::Authorization);
        }
        if resp_headers.contains_key(header::SET_COOKIE)
            && !opts.allow_set_cookie
            && !unshared(cc, opts).contains(&header::SET_COOKIE)
        {
            return Err(NoStoreReason::SetCookie);
        }
        if list_contains(resp_headers, &header::VARY, "*") {
            return Err(NoStoreReason::VaryStar);
        }
        let has_freshness = cc.max_age.is_some()
            || cc.s_maxage.is_some()
            || (!self.targeted && resp_headers.contains_key(header::EXPIRES))
            || cc.public
            || opts.status_ttl(self.status).is_some()
            || is_heuristically_cacheable(self.status)
            || opts.default_ttl.is_some()
            || opts.forced_ttl.is_some();
        if !has_freshness {
            return Err(NoStoreReason::NoFreshness);
        }
        Ok(())
    }

    /// [`has_explicit_freshness`].
    pub fn has_explicit_freshness(&self, opts: &StoreOptions) -> bool {
        self.cc.max_age.is_some()
            || self.cc.s_maxage.is_some()
            || (!self.targeted && self.headers.contains_key(header::EXPIRES))
            || opts.status_ttl(self.status).is_some()
    }

    /// [`unshared_fields`].
    pub fn unshared_fields(&self, opts: &StoreOptions) -> Vec<HeaderName> {
        unshared(&self.cc, opts)
    }

    /// [`freshness_lifetime`].
    pub fn lifetime(&self, opts: &StoreOptions, now: SystemTime) -> Duration {
        self.lifetime_from(
            opts,
            header_date(self.headers, &header::DATE).unwrap_or(now),
        )
    }

    /// [`Self::lifetime`], given the response's `Date` (or the response time without one).
    fn lifetime_from(&self, opts: &StoreOptions, date: SystemTime) -> Duration {
        if let Some(ttl) = opts.forced_ttl {
            return ttl;
        }
        explicit_lifetime(&self.cc, self.targeted, self.headers, date)
            .or_else(|| opts.status_ttl(self.status))
            .or_else(|| heuristic_lifetime(self.status, self.headers, opts, date))
            .or(opts.default_ttl)
            .unwrap_or(Duration::ZERO)
    }

    /// [`Freshness::from_response`].
    pub fn freshness(
        &self,
        opts: &StoreOptions,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Freshness {
        let cc = &self.cc;
        let explicit_revalidate = cc.must_revalidate || cc.proxy_revalidate;
        let window = |d: Option<Duration>| {
            if explicit_revalidate {
                Duration::ZERO
            } else {
                d.unwrap_or(Duration::ZERO)
            }
        };
        // `Date` is read once for both.
        let date = header_date(self.headers, &header::DATE);
        Freshness {
            lifetime: self.lifetime_from(opts, date.unwrap_or(response_time)),
            age_at_store: initial_age_from(date, self.headers, request_time, response_time),
            stored_at: response_time,
            stale_while_revalidate: window(cc.stale_while_revalidate),
            stale_if_error: window(cc.stale_if_error),
            must_revalidate: explicit_revalidate || cc.s_maxage.is_some(),
            no_cache: cc.no_cache == Some(FieldScope::All) && !opts.ignore_no_cache_private,
            immutable: cc.immutable,
        }
    }
}

/// Fields a qualified `private="…"` or `no-cache="…"` keeps out of the stored
/// response (RFC 9111 §5.2.2.4, §5.2.2.7): a shared cache stores the rest. Empty
/// when `ignore_no_cache_private`.
pub fn unshared_fields(resp_headers: &HeaderMap, opts: &StoreOptions) -> Vec<HeaderName> {
    ResponseDirectives::parse(StatusCode::OK, resp_headers, opts).unshared_fields(opts)
}

fn unshared(cc: &CacheControl, opts: &StoreOptions) -> Vec<HeaderName> {
    if opts.ignore_no_cache_private {
        return Vec::new();
    }
    let mut out = Vec::new();
    for scope in [&cc.no_cache, &cc.private] {
        if let Some(FieldScope::Fields(fields)) = scope {
            out.extend(
                fields
                    .iter()
                    .filter_map(|f| HeaderName::from_bytes(f.as_bytes()).ok()),
            );
        }
    }
    out
}

fn list_contains(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|m| trim_ows(m).eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn header_date<F: crate::cache::fields::FieldSource + ?Sized>(
    headers: &F,
    name: &HeaderName,
) -> Option<SystemTime> {
    parse_http_date(headers.field_str(name)?)
}

fn parse_date(value: &HeaderValue) -> Option<SystemTime> {
    parse_http_date(value.to_str().ok()?)
}

// ---------------------------------------------------------------------------
// Freshness and age (RFC 9111 §4.2)
// ---------------------------------------------------------------------------

/// Freshness lifetime of a response (RFC 9111 §4.2.1), in this order:
/// `opts.forced_ttl`; `s-maxage`; `max-age` (from a targeted field when one is
/// valid, RFC 9213); `Expires - Date` (not with a targeted field; an `Expires`
/// in none of the three HTTP-date formats, or in the past, gives 0);
/// `opts.status_ttl` for the status; heuristic `heuristic_fraction * (Date -
/// Last-Modified)` capped at `max_heuristic`, only for heuristically cacheable
/// statuses (RFC 9110 §15.1, RFC 9111 §4.2.2); `opts.default_ttl`; else 0.
/// A missing or invalid `Date` is taken as `now` (the response time).
pub fn freshness_lifetime(
    status: StatusCode,
    resp_headers: &HeaderMap,
    opts: &StoreOptions,
    now: SystemTime,
) -> Duration {
    if let Some(ttl) = opts.forced_ttl {
        return ttl;
    }
    ResponseDirectives::parse(status, resp_headers, opts).lifetime(opts, now)
}

fn explicit_lifetime(
    cc: &CacheControl,
    targeted: bool,
    headers: &HeaderMap,
    date: SystemTime,
) -> Option<Duration> {
    if let Some(d) = cc.s_maxage.or(cc.max_age) {
        return Some(d);
    }
    if targeted {
        return None;
    }
    let expires = headers.get(header::EXPIRES)?;
    Some(
        parse_date(expires)
            .and_then(|exp| exp.duration_since(date).ok())
            .unwrap_or(Duration::ZERO),
    )
}

fn heuristic_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    opts: &StoreOptions,
    date: SystemTime,
) -> Option<Duration> {
    if !is_heuristically_cacheable(status) {
        return None;
    }
    let last_modified = header_date(headers, &header::LAST_MODIFIED)?;
    let since = date.duration_since(last_modified).ok()?;
    let fraction = if opts.heuristic_fraction.is_finite() && opts.heuristic_fraction > 0.0 {
        opts.heuristic_fraction
    } else {
        0.0
    };
    let secs = (since.as_secs_f64() * fraction).min(opts.max_heuristic.as_secs_f64());
    Some(Duration::try_from_secs_f64(secs).unwrap_or(opts.max_heuristic))
}

/// Parses the `Age` field: first list member, delta-seconds; invalid is
/// ignored (RFC 9111 §5.1).
fn age_value(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .next()
                .and_then(parse_delta)
        })
        .unwrap_or(Duration::ZERO)
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// Age of the response when it was received: `corrected_initial_age` of
/// RFC 9111 §4.2.3. A missing `Date` means an apparent age of 0.
pub fn initial_age(
    resp_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let date = header_date(resp_headers, &header::DATE);
    initial_age_from(date, resp_headers, request_time, response_time)
}

/// [`initial_age`], given the response's `Date` field (parsed).
fn initial_age_from(
    date: Option<SystemTime>,
    resp_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent_age = since(response_time, date.unwrap_or(response_time));
    let response_delay = since(response_time, request_time);
    let corrected_age_value = age_value(resp_headers).saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// Current age of a stored response (RFC 9111 §4.2.3):
/// `corrected_initial_age + (now - response_time)`, all saturating.
pub fn current_age(
    resp_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    initial_age(resp_headers, request_time, response_time).saturating_add(since(now, response_time))
}

/// Everything the cache needs to remember about a stored response's freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime ([`freshness_lifetime`]).
    pub lifetime: Duration,
    /// Age when stored (`corrected_initial_age`).
    pub age_at_store: Duration,
    /// When the response was received (`response_time`).
    pub stored_at: SystemTime,
    /// Window after expiry for serving stale while revalidating (0: none).
    pub stale_while_revalidate: Duration,
    /// Window after expiry for serving stale when the origin fails (0: none).
    pub stale_if_error: Duration,
    /// Stale responses must not be served without validation on a client's
    /// `max-stale` (`must-revalidate`, `proxy-revalidate` or `s-maxage`).
    pub must_revalidate: bool,
    /// Every reuse needs successful validation (bare response `no-cache`, unless
    /// `ignore_no_cache_private`; a qualified one only keeps its fields out of
    /// the stored response).
    pub no_cache: bool,
    /// Response `immutable` (informational).
    pub immutable: bool,
}

impl Freshness {
    /// Builds the freshness record of a response received at `response_time`
    /// for a request sent at `request_time`.
    ///
    /// The `stale-while-revalidate`/`stale-if-error` windows are zeroed by an
    /// explicit `must-revalidate` or `proxy-revalidate`, but are kept beside
    /// `s-maxage` (the origin granted them explicitly; this is the common
    /// `s-maxage=N, stale-while-revalidate=M` CDN idiom).
    pub fn from_response(
        status: StatusCode,
        resp_headers: &HeaderMap,
        opts: &StoreOptions,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Self {
        ResponseDirectives::parse(status, resp_headers, opts).freshness(
            opts,
            request_time,
            response_time,
        )
    }

    /// Current age (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.age_at_store.saturating_add(since(now, self.stored_at))
    }

    /// `lifetime > age` (RFC 9111 §4.2). Ignores `no_cache`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime > self.age(now)
    }

    /// Freshness left (0 when stale).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.lifetime.saturating_sub(self.age(now))
    }

    /// How long past its lifetime the response is (0 when fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }

    /// Stale but inside the response's `stale-while-revalidate` window.
    pub fn in_stale_while_revalidate(&self, now: SystemTime) -> bool {
        !self.no_cache && !self.is_fresh(now) && self.staleness(now) < self.stale_while_revalidate
    }

    /// Whether a stale copy may answer when the origin errored or was
    /// unreachable (RFC 5861 §4): inside the larger of the response's and the
    /// request's `stale-if-error` windows, never under `must-revalidate`,
    /// `proxy-revalidate` or `no-cache`; the request's window is ignored under
    /// `s-maxage`. Fresh responses qualify unless `no-cache`.
    pub fn can_serve_stale_on_error(&self, req_cc: &CacheControl, now: SystemTime) -> bool {
        if self.no_cache {
            return false;
        }
        if self.is_fresh(now) {
            return true;
        }
        let mut window = self.stale_if_error;
        if !self.must_revalidate {
            window = window.max(req_cc.stale_if_error.unwrap_or(Duration::ZERO));
        }
        self.staleness(now) < window
    }

    /// Time after `stored_at` during which the entry can be served without
    /// reaching the origin in some case (fresh, stale-while-revalidate or
    /// stale-if-error); a hint for eviction. Entries with validators remain
    /// useful for revalidation beyond this.
    pub fn retention(&self) -> Duration {
        self.lifetime
            .saturating_sub(self.age_at_store)
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error))
    }
}

/// What to do with a stored response for an incoming request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reuse {
    /// Serve the stored response without contacting the origin.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it: serve as-is.
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve now and revalidate in the background.
    StaleWhileRevalidate,
    /// Forward a conditional request ([`validators_for`]) before serving.
    Revalidate,
    /// `only-if-cached` and nothing usable: answer 504 Gateway Timeout.
    OnlyIfCachedMiss,
}

impl Reuse {
    /// Stable lowercase name, suitable for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::StaleAccepted => "stale",
            Self::StaleWhileRevalidate => "stale-while-revalidate",
            Self::Revalidate => "revalidate",
            Self::OnlyIfCachedMiss => "only-if-cached-miss",
        }
    }

    /// True when the stored response is sent to the client right away.
    pub fn serves_stored(self) -> bool {
        matches!(
            self,
            Self::Fresh | Self::StaleAccepted | Self::StaleWhileRevalidate
        )
    }
}

impl fmt::Display for Reuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides how a stored response may satisfy a request (RFC 9111 §4, §4.2.4,
/// §5.2.1), given the request directives from [`request_cache_control`].
///
/// Request `no-cache` and response `no-cache` force revalidation; request
/// `max-age` caps the acceptable age and `min-fresh` demands remaining
/// freshness; `max-stale` accepts stale responses unless the response requires
/// revalidation; `stale-while-revalidate` applies only when the request's own
/// `max-age`/`min-fresh` are met. Under `only-if-cached`, anything needing the
/// origin becomes [`Reuse::OnlyIfCachedMiss`]. With no stored response at all,
/// callers answer `only-if-cached` requests with 504 themselves.
pub fn request_decision(req_cc: &CacheControl, entry: &Freshness, now: SystemTime) -> Reuse {
    let decision = reuse_ignoring_only_if_cached(req_cc, entry, now);
    if req_cc.only_if_cached && decision == Reuse::Revalidate {
        Reuse::OnlyIfCachedMiss
    } else {
        decision
    }
}

fn reuse_ignoring_only_if_cached(
    req_cc: &CacheControl,
    entry: &Freshness,
    now: SystemTime,
) -> Reuse {
    if req_cc.no_cache.is_some() || entry.no_cache {
        return Reuse::Revalidate;
    }
    let age = entry.age(now);
    let lifetime = match req_cc.max_age {
        Some(max_age) => entry.lifetime.min(max_age),
        None => entry.lifetime,
    };
    let min_fresh = req_cc.min_fresh.unwrap_or(Duration::ZERO);
    if lifetime > age.saturating_add(min_fresh) {
        return Reuse::Fresh;
    }
    let staleness = age.saturating_sub(lifetime);
    let accepts_stale = match req_cc.max_stale {
        Some(MaxStale::Any) => true,
        Some(MaxStale::Limit(limit)) => staleness <= limit,
        None => false,
    };
    if accepts_stale && !entry.must_revalidate {
        return Reuse::StaleAccepted;
    }
    let request_satisfied =
        req_cc.max_age.is_none_or(|max_age| age <= max_age) && min_fresh.is_zero();
    if request_satisfied && entry.in_stale_while_revalidate(now) {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Revalidate
}

// ---------------------------------------------------------------------------
// Vary (RFC 9111 §4.1)
// ---------------------------------------------------------------------------

/// Secondary cache key from the stored response's `Vary` field lines and a
/// request (RFC 9111 §4.1). `None` when `Vary` contains `*` (never matches).
///
/// Names are lowercased, sorted and deduplicated; each becomes a line
/// `name=value` (all field lines joined by `,`, members trimmed) or just
/// `name` when the request lacks the field. Bytes outside visible ASCII and
/// `%` are percent-encoded, so distinct values never collide. No `Vary`
/// gives `Some("")`. Fields `norm` normalises (`Accept-Encoding` always, to one
/// coding; listed ones to one listed value) become `name=normalised value`.
pub fn secondary_key(
    vary: impl IntoIterator<Item = impl AsRef<[u8]>>,
    req_headers: &HeaderMap,
    norm: &VaryNormalise,
) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for value in vary {
        for member in value.as_ref().split(|&b| b == b',') {
            let member = trim_ows(member);
            if member == b"*" {
                return None;
            }
            if !member.is_empty() {
                names.push(String::from_utf8_lossy(member).to_ascii_lowercase());
            }
        }
    }
    names.sort();
    names.dedup();
    let lines: Vec<String> = names
        .iter()
        .map(|name| {
            if let Some(value) = norm.value(name, req_headers) {
                return format!("{}={}", escape(name.as_bytes()), escape(value.as_bytes()));
            }
            let values: Vec<&[u8]> = req_headers
                .get_all(name.as_str())
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .map(trim_ows)
                .collect();
            if values.is_empty() {
                escape(name.as_bytes())
            } else {
                format!(
                    "{}={}",
                    escape(name.as_bytes()),
                    escape(&values.join(&b","[..]))
                )
            }
        })
        .collect();
    Some(lines.join("\n"))
}

/// Percent-encodes `%`, controls, space and non-ASCII bytes.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
