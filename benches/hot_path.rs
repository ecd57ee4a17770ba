//! Micro-benchmarks of the functions on every cached request: router lookup, cache key,
//! Cache-Control parsing and the freshness decision, a memory-tier lookup, and metric
//! recording. Plain `main` (no harness): `cargo bench --bench hot_path`.
//!
//! Last run (2-vCPU EPYC VM shared with two compiling jobs, release, ns per call):
//!   router lookup (6 routes)               108
//!   primary key (host + sorted query)      519
//!   Cache-Control parse + decision        1115
//!   memory tier get (hit)                   72
//!   histogram record                       6.6
//!   counter add                            3.5
//!   upstream response head parse + map     729 (this round, same VM: the one figure from that run)
//! Request IDs and trace context (issue 18; dev profile at opt-level 2, not the release
//! LTO build, same shared VM): request ID + new trace 116, request ID + incoming
//! traceparent 244, ID + traceparent onto the upstream request 223; a hit pays the first
//! or second (~0.4-0.9 % of a hit), a proxied request one of them plus the third.
//! Dropping underscore header names (issue 19), when there are none: `underscore scan (10
//! fields, none)` 455 ns against router lookup 594 ns in one debug-profile run (`cargo test
//! --bench hot_path -- --bench`, torii unoptimised, shared VM); scaled by the router's
//! release figure, about 80 ns per request, ~0.3 % of a hit. Not measured in release.
//! A hit costs ~28 µs of server CPU in ../shared/bench hit-1k, so metric recording (two
//! counter adds and one histogram record per request, ~15 ns) is below 0.1 % of it; the
//! key build and the freshness re-parse (~1.6 µs together) are the first targets.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use torii::cache::object::{CachedObject, ObjectMeta};
use torii::cache::policy::{self, Freshness, StoreOptions};
use torii::cache::tier::memory::MemoryTier;
use torii::cache::{key, key::KeySpec};
use torii::config::{Action, HostMatch, Route, RouteId};
use torii::observe::histogram::{Counter, Histogram};
use torii::route::Router;

fn bench(name: &str, iters: u64, mut f: impl FnMut()) {
    // `cargo test --all-targets` runs this without `--bench`: a few iterations only.
    let iters = if std::env::args().any(|a| a == "--bench") {
        iters
    } else {
        1_000
    };
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{name:<40} {ns:>8.1} ns/call");
}

fn main() {
    let route = |id, host, path: &str| Route {
        auth: None,
        id: RouteId(id),
        host,
        path: path.into(),
        action: Action::Redirect {
            status: StatusCode::FOUND,
            to: "/".into(),
            keep_path: false,
            regex: None,
        },
        rate_limit: None,
        rules: None,
        access: None,
        limits: Default::default(),
    };
    let router = Router::new(&[
        route(0, HostMatch::Any, "/"),
        route(1, HostMatch::Any, "/api"),
        route(2, HostMatch::Wildcard(".example.com".into()), "/"),
        route(3, HostMatch::Exact("www.example.com".into()), "/"),
        route(4, HostMatch::Exact("www.example.com".into()), "/static/"),
        route(5, HostMatch::Exact("api.example.com".into()), "/v1"),
    ]);
    // What a typical browser request carries: the underscore scan's common case.
    let mut browser = HeaderMap::new();
    for (name, value) in [
        ("host", "www.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://www.example.com/"),
        ("cookie", "session=abc"),
        ("sec-fetch-mode", "navigate"),
        ("upgrade-insecure-requests", "1"),
        ("connection", "keep-alive"),
    ] {
        browser.insert(name, HeaderValue::from_static(value));
    }
    bench("underscore scan (10 fields, none)", 2_000_000, || {
        black_box(torii::limits::drop_underscore_headers(black_box(
            &mut browser,
        )));
    });
    bench("router lookup (6 routes)", 2_000_000, || {
        black_box(router.lookup(
            black_box(Some("www.example.com")),
            black_box("/static/app.js"),
        ));
    });

    let spec = KeySpec::default();
    let headers = HeaderMap::new();
    bench("primary key (host + sorted query)", 1_000_000, || {
        black_box(key::primary_key(
            &spec,
            true,
            "http",
            black_box("www.example.com"),
            black_box("/p/a?b=2&a=1"),
            &headers,
        ));
    });

    let mut resp = HeaderMap::new();
    resp.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp.insert(
        "date",
        HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())).unwrap(),
    );
    let opts = StoreOptions::default();
    let now = SystemTime::now();
    let req_cc = policy::request_cache_control(&headers);
    bench("Cache-Control parse + decision", 1_000_000, || {
        let f = Freshness::from_response(StatusCode::OK, black_box(&resp), &opts, now, now);
        black_box(policy::request_decision(&req_cc, &f, now));
    });

    let tier = MemoryTier::new(64 << 20);
    let obj = CachedObject {
        meta: ObjectMeta::new(
            "http://www.example.com/1k",
            now,
            now,
            now + Duration::from_secs(3600),
            now + Duration::from_secs(7200),
        ),
        status: StatusCode::OK,
        headers: torii::cache::fields::StoredFields::from_map(&resp),
        body: Bytes::from(vec![b'x'; 1024]),
        memo: Default::default(),
    };
    bench("freshness, memoized on the object (hit)", 2_000_000, || {
        let f = black_box(&obj).memo.get_or(1, || {
            Freshness::from_response(StatusCode::OK, &resp, &opts, now, now)
        });
        black_box(policy::request_decision(&req_cc, &f, now));
    });
    tier.insert(Arc::new(obj));
    bench("memory tier get (hit)", 2_000_000, || {
        black_box(tier.get(black_box("http://www.example.com/1k")));
    });

    let h = Histogram::default();
    bench("histogram record", 10_000_000, || {
        h.record(black_box(Duration::from_micros(123)))
    });
    let c = Counter::default();
    bench("counter add", 10_000_000, || c.add(black_box(1)));

    // Every request: its ID and trace (`proxy::trace`), default settings.
    let identity = torii::config::Identity::default();
    let plain = HeaderMap::new();
    bench("request ID + new trace", 1_000_000, || {
        black_box(torii::proxy::trace::Ids::new(black_box(&plain), &identity));
    });
    let mut traced = HeaderMap::new();
    traced.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    bench("request ID + incoming traceparent", 1_000_000, || {
        black_box(torii::proxy::trace::Ids::new(black_box(&traced), &identity));
    });
    let ids = torii::proxy::trace::Ids::new(&traced, &identity);
    let mut upstream = HeaderMap::with_capacity(8);
    bench("ID + traceparent onto upstream request", 1_000_000, || {
        ids.to_upstream(black_box(&mut upstream));
    });

    // What nginx answers for a 1 KiB static file (the bench's pass-1k), with its body.
    let mut answer =
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 05:00:00 GMT\r\n\
        Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n\
        Last-Modified: Wed, 02 Dec 2026 04:59:00 GMT\r\nConnection: keep-alive\r\n\
        ETag: \"6929a0e4-400\"\r\nCache-Control: no-store\r\nAccept-Ranges: bytes\r\n\r\n"
            .to_vec();
    answer.extend(std::iter::repeat_n(b'x', 1024));
    let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
    bench(
        "upstream response head parse (nginx, 10 fields)",
        1_000_000,
        || {
            buf.clear();
            buf.extend_from_slice(&answer);
            let parsed = torii::upstream::h1::parse_head(black_box(&mut buf), None);
            black_box(parsed.ok().flatten().map(|p| p.head().headers().len()));
        },
    );
}
