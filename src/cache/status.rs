//! The cache step's decision for one request, as a value: `CacheStatus`.
//!
//! The cache step decides it, the exchange record carries it, and the response step
//! writes `X-Cache` from it once; metrics and the access log read the same value. Nothing
//! parses it back from header bytes. A leaf module: it depends on nothing of torii's.

use http::{HeaderName, HeaderValue};

/// The response field that says the decision.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What the cache did for a request, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh stored response answered.
    Hit,
    /// The origin answered (and the response may have been stored).
    Miss(Miss),
    /// A stale stored response answered.
    Stale(Stale),
    /// The stored response was revalidated with the origin (a 304) and answered.
    Revalidated,
    /// The cache was not asked: the route does not cache or the request can't be cached.
    Bypass(Bypass),
    /// Hit-for-pass: the key answered something uncacheable lately, so the request went
    /// straight to the origin (`X-Cache: MISS`).
    Pass,
}

/// Why a cacheable request went to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Nothing usable was stored under the key.
    Absent,
    /// A stored response had expired and the origin sent a new one.
    Expired,
    /// A stored response was fresh but the request asked for the origin (`no-cache`,
    /// `max-age=0`, `Pragma: no-cache`).
    ClientRefresh,
}

/// Why a stale response answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Within `stale-while-revalidate` or the route's grace; a background refresh runs.
    WhileRevalidate,
    /// The origin failed and `stale-if-error` allowed the stored copy.
    IfError,
    /// The client accepts it (`max-stale`).
    Accepted,
    /// Another node fetched it meanwhile and its copy is past fresh.
    Shared,
}

/// Why the cache was not asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// The route does not cache (or torii runs without a cache).
    Off,
    /// Not a GET or HEAD (unsafe methods still invalidate what they change).
    Method,
    /// A protocol upgrade (WebSocket).
    Upgrade,
    /// A GET or HEAD with a request body: passed to the origin, never stored.
    Body,
}

/// Every `X-Cache` value, in the order metrics index them (`CacheStatus::index`).
pub const X_CACHE_VALUES: [&str; 5] = ["HIT", "MISS", "STALE", "REVALIDATED", "BYPASS"];

impl CacheStatus {
    /// The `X-Cache` value.
    pub fn as_str(self) -> &'static str {
        X_CACHE_VALUES[self.index()]
    }

    /// The `X-Cache` value as a header value.
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// Index of the `X-Cache` value in [`X_CACHE_VALUES`].
    pub fn index(self) -> usize {
        match self {
            CacheStatus::Hit => 0,
            CacheStatus::Miss(_) | CacheStatus::Pass => 1,
            CacheStatus::Stale(_) => 2,
            CacheStatus::Revalidated => 3,
            CacheStatus::Bypass(_) => 4,
        }
    }

    /// The outcome and its reason, for the access log: `hit`, `miss`, `miss-expired`,
    /// `stale-if-error`, `bypass-method`, `pass`, …
    pub fn reason(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss(Miss::Absent) => "miss",
            CacheStatus::Miss(Miss::Expired) => "miss-expired",
            CacheStatus::Miss(Miss::ClientRefresh) => "miss-client-refresh",
            CacheStatus::Stale(Stale::WhileRevalidate) => "stale-while-revalidate",
            CacheStatus::Stale(Stale::IfError) => "stale-if-error",
            CacheStatus::Stale(Stale::Accepted) => "stale-max-stale",
            CacheStatus::Stale(Stale::Shared) => "stale-shared",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Bypass(Bypass::Off) => "bypass-off",
            CacheStatus::Bypass(Bypass::Method) => "bypass-method",
            CacheStatus::Bypass(Bypass::Upgrade) => "bypass-upgrade",
            CacheStatus::Bypass(Bypass::Body) => "bypass-body",
            CacheStatus::Pass => "pass",
        }
    }

    /// Whether the answer came from the store, without the origin answering this request.
    pub fn from_store(self) -> bool {
        matches!(self, CacheStatus::Hit | CacheStatus::Stale(_))
    }

    /// The lines a pre-encoded HTTP/1 head ends with (`hyper::RawFields`): this
    /// `X-Cache`, then the `Via` every response gets. The one place these bytes are spelled.
    pub fn raw_lines(self) -> &'static [u8] {
        const LINES: [&[u8]; 5] = [
            b"x-cache: HIT\r\nvia: 1.1 torii\r\n",
            b"x-cache: MISS\r\nvia: 1.1 torii\r\n",
            b"x-cache: STALE\r\nvia: 1.1 torii\r\n",
            b"x-cache: REVALIDATED\r\nvia: 1.1 torii\r\n",
            b"x-cache: BYPASS\r\nvia: 1.1 torii\r\n",
        ];
        LINES[self.index()]
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_lines_spell_the_x_cache_value_then_via() {
        for status in [
            CacheStatus::Hit,
            CacheStatus::Miss(Miss::Expired),
            CacheStatus::Pass,
            CacheStatus::Stale(Stale::IfError),
            CacheStatus::Revalidated,
            CacheStatus::Bypass(Bypass::Method),
        ] {
            let want = format!("x-cache: {}\r\nvia: 1.1 torii\r\n", status.as_str());
            assert_eq!(status.raw_lines(), want.as_bytes());
        }
        assert_eq!(CacheStatus::Pass.as_str(), "MISS");
        assert_eq!(CacheStatus::Pass.reason(), "pass");
    }
}
