//! Every metric torii exports: names (declared once here), the registry, the sliding windows
//! behind `/stats.json` percentiles, and the Prometheus text rendering of `/metrics`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::histogram::{bucket_upper_seconds, Counter, Histogram, Snapshot, BUCKETS};
use crate::cache::status::{CacheStatus, X_CACHE_VALUES};

// === names ===
pub const REQUESTS_TOTAL: &str = "torii_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "torii_request_duration_seconds";
pub const UPSTREAM_RESPONSE_SECONDS: &str = "torii_upstream_response_seconds";
pub const UPSTREAM_QUEUE_WAIT_SECONDS: &str = "torii_upstream_queue_wait_seconds";
pub const UPSTREAM_RETRIES_TOTAL: &str = "torii_upstream_retries_total";
pub const UPSTREAM_EJECTIONS_TOTAL: &str = "torii_upstream_ejections_total";
pub const UPSTREAM_PANIC: &str = "torii_upstream_panic";
pub const UPSTREAM_PANIC_REQUESTS_TOTAL: &str = "torii_upstream_panic_requests_total";
pub const REJECTIONS_TOTAL: &str = "torii_rejections_total";
pub const COMPRESSIONS_TOTAL: &str = "torii_compressions_total";
pub const CONNECTIONS_OPEN: &str = "torii_connections_open";
pub const CONNECTIONS_HIBERNATED: &str = "torii_connections_hibernated";
pub const CONNECTIONS_ACCEPTED_TOTAL: &str = "torii_connections_accepted_total";
pub const TLS_HANDSHAKES_TOTAL: &str = "torii_tls_handshakes_total";
pub const TLS_HANDSHAKE_ERRORS_TOTAL: &str = "torii_tls_handshake_errors_total";
pub const AUTH_FAILURES_TOTAL: &str = "torii_auth_failures_total";
pub const PROXY_PROTOCOL_REFUSED_TOTAL: &str = "torii_proxy_protocol_refused_total";
pub const REQUEST_HEADERS_DROPPED_TOTAL: &str = "torii_request_headers_dropped_total";
// ACME certificates (`listeners[].tls.acme`).
pub const TLS_CERTIFICATE_EXPIRY_SECONDS: &str = "torii_tls_certificate_expiry_seconds";
pub const ACME_RENEWAL_SECONDS: &str = "torii_acme_renewal_seconds";
pub const ACME_ORDERS_TOTAL: &str = "torii_acme_orders_total";
pub const ACME_ORDER_FAILURES_TOTAL: &str = "torii_acme_order_failures_total";
pub const HEADER_RULE_DROPS_TOTAL: &str = "torii_header_rule_drops_total";
/// Header rule values dropped because they held CR, LF or NUL (or were otherwise not a
/// valid field value) once their variables were filled in.
pub static HEADER_RULE_DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub const RECEIVED_BYTES_TOTAL: &str = "torii_received_bytes_total";
pub const SENT_BYTES_TOTAL: &str = "torii_sent_bytes_total";
pub const CACHE_HITS_TOTAL: &str = "torii_cache_hits_total";
pub const CACHE_MISSES_TOTAL: &str = "torii_cache_misses_total";
pub const CACHE_STALE_TOTAL: &str = "torii_cache_stale_total";
pub const CACHE_REVALIDATED_TOTAL: &str = "torii_cache_revalidated_total";
pub const CACHE_COALESCED_TOTAL: &str = "torii_cache_coalesced_total";
pub const CACHE_BYPASS_TOTAL: &str = "torii_cache_bypass_total";
pub const CACHE_STORES_TOTAL: &str = "torii_cache_stores_total";
pub const CACHE_PURGED_TOTAL: &str = "torii_cache_purged_total";
pub const CACHE_EVICTIONS_TOTAL: &str = "torii_cache_evictions_total";
pub const CACHE_OBJECTS: &str = "torii_cache_objects";
pub const CACHE_BYTES: &str = "torii_cache_bytes";
// The shared tier (Redis/Valkey), `[cache.shared]`.
pub const SHARED_HITS_TOTAL: &str = "torii_shared_hits_total";
pub const SHARED_MISSES_TOTAL: &str = "torii_shared_misses_total";
pub const SHARED_WRITES_TOTAL: &str = "torii_shared_writes_total";
pub const SHARED_TOO_LARGE_TOTAL: &str = "torii_shared_too_large_total";
pub const SHARED_ERRORS_TOTAL: &str = "torii_shared_errors_total";
pub const SHARED_CORRUPT_TOTAL: &str = "torii_shared_corrupt_total";
pub const SHARED_SKIPPED_TOTAL: &str = "torii_shared_skipped_total";
pub const SHARED_LEASES_TOTAL: &str = "torii_shared_leases_total";
pub const SHARED_LEASE_WAITS_TOTAL: &str = "torii_shared_lease_waits_total";
pub const SHARED_PURGES_TOTAL: &str = "torii_shared_purges_total";
pub const SHARED_PURGES_RECEIVED_TOTAL: &str = "torii_shared_purges_received_total";
pub const SHARED_BREAKER_STATE: &str = "torii_shared_breaker_state";

/// The `X-Cache` outcomes a request is counted under, plus `none` (not a proxied request).
pub const CACHE_OUTCOMES: [&str; 6] = [
    X_CACHE_VALUES[0],
    X_CACHE_VALUES[1],
    X_CACHE_VALUES[2],
    X_CACHE_VALUES[3],
    X_CACHE_VALUES[4],
    "none",
];
/// Status classes: `1xx` … `5xx`, and `other`.
pub const STATUS_CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];
/// Why torii refused work itself.
pub const REJECTION_REASONS: [&str; 3] = ["rate-limit", "queue-full", "queue-timeout"];
/// Why a request failed a route's `auth` (`torii_auth_failures_total{kind}`): no
/// credentials, wrong or malformed ones, refused without checking (the address is locked
/// out), refused by the forward-auth service, or the forward-auth service failed.
pub const AUTH_FAILURE_KINDS: [&str; 5] =
    ["missing", "invalid", "locked-out", "denied", "unavailable"];
/// Why a PROXY protocol header was refused (`listener::proxy_protocol::Refusal::index`;
/// `timeout`: not complete within `limits.header_timeout`).
pub const PROXY_REFUSED_REASONS: [&str; 3] = ["invalid", "timeout", "truncated"];
/// Why request header fields were dropped before routing.
pub const HEADER_DROP_REASONS: [&str; 1] = ["underscore"];
/// Index into `HEADER_DROP_REASONS`: a name holding `_`.
pub const HEADER_DROP_UNDERSCORE: usize = 0;
/// TLS versions handshakes are counted under, indexed by `config::TlsVersion as usize`.
pub const TLS_VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];

/// Index into `CACHE_OUTCOMES` of a cache decision (`none` for no decision).
pub fn cache_outcome(status: Option<CacheStatus>) -> usize {
    status.map_or(CACHE_OUTCOMES.len() - 1, CacheStatus::index)
}

fn status_class(status: StatusCode) -> usize {
    match status.as_u16() / 100 {
        c @ 1..=5 => c as usize,
        _ => 0,
    }
}

/// Metrics of one route (by label: host + path prefix).
#[derive(Debug)]
pub struct RouteMetrics {
    pub label: String,
    requests: Vec<Counter>,
    pub duration: Histogram,
    /// Requests refused by the route's `auth`, by `AUTH_FAILURE_KINDS`.
    pub auth_failures: [Counter; 5],
}

impl RouteMetrics {
    fn new(label: String) -> RouteMetrics {
        RouteMetrics {
            label,
            requests: (0..36).map(|_| Counter::default()).collect(),
            duration: Histogram::default(),
            auth_failures: Default::default(),
        }
    }

    /// Counts one finished request.
    pub fn record(&self, status: StatusCode, outcome: usize, duration: Duration) {
        self.requests[status_class(status) * 6 + outcome.min(5)].inc();
        self.duration.record(duration);
    }

    fn requests(&self, class: usize, outcome: usize) -> u64 {
        self.requests[class * 6 + outcome].get()
    }

    pub fn total(&self) -> u64 {
        self.requests.iter().map(Counter::get).sum()
    }

    pub fn by_outcome(&self, outcome: usize) -> u64 {
        (0..6).map(|class| self.requests(class, outcome)).sum()
    }
}

/// Metrics of one upstream group.
#[derive(Debug, Default)]
pub struct GroupMetrics {
    pub name: String,
    pub response: Histogram,
    pub queue_wait: Histogram,
    pub retries: Counter,
    pub ejections: Counter,
    /// Whether the group's last pick was in panic mode (no server in rotation).
    pub panic: std::sync::atomic::AtomicBool,
    /// Requests sent in panic mode.
    pub panic_requests: Counter,
}

/// Process-wide metrics; route and group metrics are kept by name across reloads.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_accepted: Counter,
    /// Finished downstream TLS handshakes, by `TLS_VERSIONS`.
    pub tls_handshakes: [Counter; 2],
    /// Failed or timed-out downstream TLS handshakes.
    pub tls_handshake_errors: Counter,
    /// Connections closed for their PROXY header, by `PROXY_REFUSED_REASONS`.
    pub proxy_protocol_refused: [Counter; 3],
    /// Request header fields dropped, by `HEADER_DROP_REASONS`.
    pub request_headers_dropped: [Counter; 1],
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub rejections: [Counter; 3],
    /// Bodies torii compressed, by `Coding::index` (`zstd`, `br`, `gzip`).
    pub compressions: [Counter; 3],
    pub acme: AcmeMetrics,
    routes: Mutex<HashMap<String, Arc<RouteMetrics>>>,
    groups: Mutex<HashMap<String, Arc<GroupMetrics>>>,
    windows: Mutex<VecDeque<Window>>,
}

/// ACME orders, and the certificates they keep (by domain).
#[derive(Debug, Default)]
pub struct AcmeMetrics {
    /// Orders started (each attempt, renewals included).
    pub orders: Counter,
    /// Orders that ended without a certificate.
    pub order_failures: Counter,
    /// By domain: the served certificate's expiry and the next planned order, Unix seconds.
    names: Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
}

impl AcmeMetrics {
    /// Records that `name` is served a certificate expiring at `expiry` (Unix seconds).
    pub fn set_expiry(&self, name: &str, expiry: u64) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.entry(name.to_string()).or_default().0 = expiry;
    }

    /// Records when `name` is next ordered (Unix seconds).
    pub fn set_renewal(&self, name: &str, at: u64) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.entry(name.to_string()).or_default().1 = at;
    }

    fn render(&self, out: &mut String) {
        counter(
            out,
            ACME_ORDERS_TOTAL,
            "ACME orders started (first orders and renewals).",
            self.orders.get(),
        );
        counter(
            out,
            ACME_ORDER_FAILURES_TOTAL,
            "ACME orders that ended without a certificate.",
            self.order_failures.get(),
        );
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        header(
            out,
            TLS_CERTIFICATE_EXPIRY_SECONDS,
            "gauge",
            "Expiry (Unix time) of the ACME certificate served for each name.",
        );
        for (name, (expiry, _)) in names.iter().filter(|(_, (e, _))| *e > 0) {
            let _ = writeln!(
                out,
                "{TLS_CERTIFICATE_EXPIRY_SECONDS}{{name=\"{}\"}} {expiry}",
                escape(name)
            );
        }
        header(
            out,
            ACME_RENEWAL_SECONDS,
            "gauge",
            "When (Unix time) each ACME name is next ordered: renewal, or retry after a failure.",
        );
        for (name, (_, at)) in names.iter().filter(|(_, (_, a))| *a > 0) {
            let _ = writeln!(
                out,
                "{ACME_RENEWAL_SECONDS}{{name=\"{}\"}} {at}",
                escape(name)
            );
        }
    }
}

/// Cumulative figures at one tick, for sliding windows.
#[derive(Debug, Clone)]
struct Window {
    at: Instant,
    requests: u64,
    hits: u64,
    misses: u64,
    all: Snapshot,
    routes: HashMap<String, Snapshot>,
    groups: HashMap<String, Snapshot>,
}

/// Figures over a recent window, for `/stats.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recent {
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub hit_ratio: Option<f64>,
    pub latency: Percentiles,
    pub routes: HashMap<String, Percentiles>,
    pub upstreams: HashMap<String, Percentiles>,
    /// Non-empty buckets of the total latency histogram: `[upper bound in seconds, count]`.
    pub histogram: Vec<(f64, u64)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p75: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub mean: Option<f64>,
}

impl Percentiles {
    pub fn of(s: &Snapshot) -> Percentiles {
        let count = s.count();
        Percentiles {
            count,
            p50: s.quantile(0.5),
            p75: s.quantile(0.75),
            p99: s.quantile(0.99),
            p999: s.quantile(0.999),
            mean: (count > 0).then(|| s.sum_ns as f64 / count as f64 / 1e9),
        }
    }
}

/// How many one-second windows are kept (a minute and a bit).
const WINDOW_TICKS: usize = 62;

impl Metrics {
    /// The metrics of the route labelled `label`, created on first use.
    pub fn route(&self, label: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().expect("poisoned");
        routes
            .entry(label.to_string())
            .or_insert_with(|| Arc::new(RouteMetrics::new(label.to_string())))
            .clone()
    }

    /// The metrics of the upstream group `name`, created on first use.
    pub fn group(&self, name: &str) -> Arc<GroupMetrics> {
        let mut groups = self.groups.lock().expect("poisoned");
        groups
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(GroupMetrics {
                    name: name.to_string(),
                    ..Default::default()
                })
            })
            .clone()
    }

    pub fn routes(&self) -> Vec<Arc<RouteMetrics>> {
        let mut v: Vec<_> = self
            .routes
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.label.cmp(&b.label));
        v
    }

    pub fn groups(&self) -> Vec<Arc<GroupMetrics>> {
        let mut v: Vec<_> = self
            .groups
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn current(&self) -> Window {
        let routes = self.routes();
        let mut all = Snapshot::empty();
        let mut route_snaps = HashMap::new();
        for r in &routes {
            let s = r.duration.snapshot();
            for (a, b) in all.buckets.iter_mut().zip(&s.buckets) {
                *a += b;
            }
            all.sum_ns += s.sum_ns;
            route_snaps.insert(r.label.clone(), s);
        }
        Window {
            at: Instant::now(),
            requests: routes.iter().map(|r| r.total()).sum(),
            hits: routes
                .iter()
                .map(|r| r.by_outcome(0) + r.by_outcome(2) + r.by_outcome(3))
                .sum(),
            misses: routes.iter().map(|r| r.by_outcome(1)).sum(),
            all,
            routes: route_snaps,
            groups: self
                .groups()
                .iter()
                .map(|g| (g.name.clone(), g.response.snapshot()))
                .collect(),
        }
    }

    /// Records a window boundary; call about once a second.
    pub fn tick(&self) {
        let now = self.current();
        let mut windows = self.windows.lock().expect("poisoned");
        windows.push_back(now);
        while windows.len() > WINDOW_TICKS {
            windows.pop_front();
        }
    }

    /// Figures over (about) the last `span`, from the ticks kept.
    pub fn recent(&self, span: Duration) -> Recent {
        let now = self.current();
        let windows = self.windows.lock().expect("poisoned");
        let earlier = windows
            .iter()
            .find(|w| now.at.duration_since(w.at) <= span + Duration::from_millis(500))
            .cloned()
            .unwrap_or_else(|| Window {
                at: now.at,
                requests: 0,
                hits: 0,
                misses: 0,
                all: Snapshot::empty(),
                routes: HashMap::new(),
                groups: HashMap::new(),
            });
        drop(windows);
        let seconds = now.at.duration_since(earlier.at).as_secs_f64();
        let requests = now.requests.saturating_sub(earlier.requests);
        let hits = now.hits.saturating_sub(earlier.hits);
        let misses = now.misses.saturating_sub(earlier.misses);
        let all = now.all.since(&earlier.all);
        let diff = |now: &HashMap<String, Snapshot>, then: &HashMap<String, Snapshot>| {
            now.iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        Percentiles::of(&then.get(k).map_or_else(|| s.clone(), |t| s.since(t))),
                    )
                })
                .collect()
        };
        Recent {
            seconds,
            requests,
            requests_per_second: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
            latency: Percentiles::of(&all),
            routes: diff(&now.routes, &earlier.routes),
            upstreams: diff(&now.groups, &earlier.groups),
            histogram: all
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (bucket_upper_seconds(i), *c))
                .collect(),
        }
    }

    /// Renders everything torii tracks itself in the Prometheus text format (0.0.4).
    /// `extra` is appended (gauges owned elsewhere: connections, cache tiers, upstreams).
    pub fn render(&self, out: &mut String) {
        let routes = self.routes();
        header(
            out,
            REQUESTS_TOTAL,
            "counter",
            "Requests by route, status class and cache outcome.",
        );
        for r in &routes {
            for (class, class_name) in STATUS_CLASSES.iter().enumerate() {
                for (outcome, outcome_name) in CACHE_OUTCOMES.iter().enumerate() {
                    let n = r.requests(class, outcome);
                    if n > 0 {
                        let _ = writeln!(out, "{REQUESTS_TOTAL}{{route=\"{}\",status=\"{class_name}\",cache=\"{outcome_name}\"}} {n}", escape(&r.label));
                    }
                }
            }
        }
        header(
            out,
            REQUEST_DURATION_SECONDS,
            "histogram",
            "Time from request head to the end of the response body, by route.",
        );
        for r in &routes {
            histogram(
                out,
                REQUEST_DURATION_SECONDS,
                &format!("route=\"{}\"", escape(&r.label)),
                &r.duration.snapshot(),
            );
        }
        let groups = self.groups();
        header(
            out,
            UPSTREAM_RESPONSE_SECONDS,
            "histogram",
            "Time from sending a request upstream to its response head, by upstream group.",
        );
        for g in &groups {
            histogram(
                out,
                UPSTREAM_RESPONSE_SECONDS,
                &format!("upstream=\"{}\"", escape(&g.name)),
                &g.response.snapshot(),
            );
        }
        header(
            out,
            UPSTREAM_QUEUE_WAIT_SECONDS,
            "histogram",
            "Time requests waited for a free upstream connection slot, by upstream group.",
        );
        for g in &groups {
            histogram(
                out,
                UPSTREAM_QUEUE_WAIT_SECONDS,
                &format!("upstream=\"{}\"", escape(&g.name)),
                &g.queue_wait.snapshot(),
            );
        }
        header(
            out,
            UPSTREAM_RETRIES_TOTAL,
            "counter",
            "Requests retried on another server, by upstream group.",
        );
        for g in &groups {
            let _ = writeln!(
                out,
                "{UPSTREAM_RETRIES_TOTAL}{{upstream=\"{}\"}} {}",
                escape(&g.name),
                g.retries.get()
            );
        }
        header(
            out,
            UPSTREAM_EJECTIONS_TOTAL,
            "counter",
            "Servers ejected by the circuit breaker, by upstream group.",
        );
        for g in &groups {
            let _ = writeln!(
                out,
                "{UPSTREAM_EJECTIONS_TOTAL}{{upstream=\"{}\"}} {}",
                escape(&g.name),
                g.ejections.get()
            );
        }
        header(
            out,
            UPSTREAM_PANIC,
            "gauge",
            "1 while the group is in panic mode (no server in rotation: requests go to every server that passes its active checks), by upstream group.",
        );
        for g in &groups {
            let _ = writeln!(
                out,
                "{UPSTREAM_PANIC}{{upstream=\"{}\"}} {}",
                escape(&g.name),
                u8::from(g.panic.load(std::sync::atomic::Ordering::Relaxed))
            );
        }
        header(
            out,
            UPSTREAM_PANIC_REQUESTS_TOTAL,
            "counter",
            "Requests sent in panic mode, by upstream group.",
        );
        for g in &groups {
            let _ = writeln!(
                out,
                "{UPSTREAM_PANIC_REQUESTS_TOTAL}{{upstream=\"{}\"}} {}",
                escape(&g.name),
                g.panic_requests.get()
            );
        }
        header(
            out,
            REJECTIONS_TOTAL,
            "counter",
            "Requests torii refused itself, by reason.",
        );
        for (i, reason) in REJECTION_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{REJECTIONS_TOTAL}{{reason=\"{reason}\"}} {}",
                self.rejections[i].get()
            );
        }
        header(
            out,
            AUTH_FAILURES_TOTAL,
            "counter",
            "Requests refused by a route's auth, by route and kind.",
        );
        for r in &routes {
            for (i, kind) in AUTH_FAILURE_KINDS.iter().enumerate() {
                let n = r.auth_failures[i].get();
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "{AUTH_FAILURES_TOTAL}{{route=\"{}\",kind=\"{kind}\"}} {n}",
                        escape(&r.label)
                    );
                }
            }
        }
        header(
            out,
            COMPRESSIONS_TOTAL,
            "counter",
            "Response bodies torii compressed, by coding.",
        );
        for coding in crate::config::Coding::ALL {
            let _ = writeln!(
                out,
                "{COMPRESSIONS_TOTAL}{{coding=\"{}\"}} {}",
                coding.token(),
                self.compressions[coding.index()].get()
            );
        }
        counter(
            out,
            CONNECTIONS_ACCEPTED_TOTAL,
            "Downstream connections accepted.",
            self.connections_accepted.get(),
        );
        header(
            out,
            TLS_HANDSHAKES_TOTAL,
            "counter",
            "Downstream TLS handshakes completed, by protocol version.",
        );
        for (i, version) in TLS_VERSIONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{TLS_HANDSHAKES_TOTAL}{{version=\"{version}\"}} {}",
                self.tls_handshakes[i].get()
            );
        }
        counter(
            out,
            TLS_HANDSHAKE_ERRORS_TOTAL,
            "Downstream TLS handshakes that failed or timed out.",
            self.tls_handshake_errors.get(),
        );
        header(
            out,
            PROXY_PROTOCOL_REFUSED_TOTAL,
            "counter",
            "Connections closed because their PROXY protocol header was refused, by reason.",
        );
        for (i, reason) in PROXY_REFUSED_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{PROXY_PROTOCOL_REFUSED_TOTAL}{{reason=\"{reason}\"}} {}",
                self.proxy_protocol_refused[i].get()
            );
        }
        header(
            out,
            REQUEST_HEADERS_DROPPED_TOTAL,
            "counter",
            "Request header fields dropped before routing, by reason.",
        );
        for (i, reason) in HEADER_DROP_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{REQUEST_HEADERS_DROPPED_TOTAL}{{reason=\"{reason}\"}} {}",
                self.request_headers_dropped[i].get()
            );
        }
        self.acme.render(out);
        counter(
            out,
            HEADER_RULE_DROPS_TOTAL,
            "Header rule values dropped: invalid (CR, LF, NUL) after their variables were filled in.",
            HEADER_RULE_DROPS.load(std::sync::atomic::Ordering::Relaxed),
        );
        counter(
            out,
            RECEIVED_BYTES_TOTAL,
            "Bytes received from downstream clients.",
            self.received_bytes.get(),
        );
        counter(
            out,
            SENT_BYTES_TOTAL,
            "Bytes sent to downstream clients.",
            self.sent_bytes.get(),
        );
    }
}

pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn histogram(out: &mut String, name: &str, labels: &str, s: &Snapshot) {
    let mut cumulative = 0;
    for i in 0..BUCKETS {
        cumulative += s.buckets[i];
        let le = bucket_upper_seconds(i);
        if le.is_finite() {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le:e}\"}} {cumulative}");
        }
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The label of a route: its host pattern (or `*`) and path prefix.
pub fn route_label(route: &crate::config::Route) -> String {
    let host = match &route.host {
        crate::config::HostMatch::Any => "*".to_string(),
        crate::config::HostMatch::Exact(h) => h.clone(),
        crate::config::HostMatch::Wildcard(s) => format!("*{s}"),
    };
    format!("{host}{}", route.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_and_histograms() {
        let m = Metrics::default();
        let r = m.route("*/");
        r.record(
            StatusCode::OK,
            cache_outcome(Some(CacheStatus::Hit)),
            Duration::from_millis(3),
        );
        r.record(
            StatusCode::BAD_GATEWAY,
            cache_outcome(None),
            Duration::from_millis(30),
        );
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("torii_requests_total{route=\"*/\",status=\"2xx\",cache=\"HIT\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("torii_requests_total{route=\"*/\",status=\"5xx\",cache=\"none\"} 1\n")
        );
        assert!(out.contains("torii_request_duration_seconds_bucket{route=\"*/\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("torii_request_duration_seconds_count{route=\"*/\"} 2\n"));
        m.tick();
        let recent = m.recent(Duration::from_secs(60));
        assert_eq!(recent.requests, 0, "the tick was after both requests");
        r.record(StatusCode::OK, 1, Duration::from_millis(1));
        let recent = m.recent(Duration::from_secs(60));
        assert_eq!(recent.requests, 1);
        assert_eq!(recent.hit_ratio, Some(0.0));
    }
}
