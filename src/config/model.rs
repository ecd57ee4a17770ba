//! The validated, typed configuration: what the rest of torii reads. Built only by `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

/// A complete, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub limits: Limits,
    pub log: Log,
    pub cache: CacheSettings,
    pub upstreams: BTreeMap<UpstreamName, Upstream>,
    pub routes: Vec<Route>,
}

/// How torii listens and runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Proxy listeners. Default: `127.0.0.1:8080`.
    pub listen: Vec<SocketAddr>,
    /// Admin listener; `None` when `admin = "off"`. Default: `127.0.0.1:9901`.
    pub admin: Option<SocketAddr>,
    /// Worker count. Default: one per core.
    pub workers: usize,
    /// Worker layout. Default: thread-per-core.
    pub runtime: RuntimeKind,
    /// How long SIGTERM waits for in-flight requests. Default: 30 s.
    pub drain_timeout: Duration,
}

/// Worker layout: see the README's measurement of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// One current-thread runtime per worker, each with its own SO_REUSEPORT listener.
    ThreadPerCore,
    /// One tokio multi-thread (work-stealing) runtime with `workers` threads.
    WorkStealing,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::ThreadPerCore => "thread-per-core",
            RuntimeKind::WorkStealing => "work-stealing",
        }
    }
}

/// Downstream limits; every one has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request head (request line + headers) in bytes. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most request header fields. Default 100.
    pub max_headers: usize,
    /// Largest request body in bytes (413 beyond). Default 1 GiB.
    pub max_body: u64,
    /// Time a client has to send a whole request head once it started. Default 10 s.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests. Default 60 s.
    pub idle_timeout: Duration,
    /// Most open downstream connections over all workers. Default 10 000.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body: 1 << 30,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// Access log settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub access: AccessTarget,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccessTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// The Apache/nginx combined format plus upstream address and times.
    Combined,
    /// One JSON object per line.
    Json,
}

/// The name of an upstream group, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UpstreamName(pub String);

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group of upstream servers that a route proxies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub servers: Vec<ServerAddr>,
    /// Default 5 s; a timeout answers 504.
    pub connect_timeout: Duration,
    /// Time from sending the request to the response head. Default 60 s; 504 beyond.
    pub response_timeout: Duration,
    /// Idle keep-alive connections kept per server. Default 64.
    pub pool_max_idle: usize,
    /// How long an idle pooled connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
}

/// One upstream server: `http://host:port` (the scheme and authority; no path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Index of a route in `Config::routes`, stable for one config generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId(pub usize);

/// A route: where matching requests go.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: RouteId,
    pub host: HostMatch,
    /// Path prefix; `/` matches everything.
    pub path: String,
    pub action: Action,
}

/// What a route matches on the Host header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// An exact, lowercased name without port.
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches any name ending in it.
    Wildcard(String),
}

/// What a route does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    Proxy {
        upstream: UpstreamName,
        /// `None`: pass the downstream Host; `Some`: send this Host upstream.
        host_header: Option<HeaderValue>,
        /// `None`: this route does not cache (X-Cache: BYPASS).
        cache: Option<Arc<CachePolicy>>,
    },
    Respond {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Redirect {
        status: StatusCode,
        to: String,
        /// Append the request's path and query to `to`.
        keep_path: bool,
    },
}

/// Process-wide cache settings (`[cache]`).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Memory tier size in bytes; 0 turns caching off everywhere. Default 256 MiB.
    pub memory: u64,
    /// Optional disk tier.
    pub disk: Option<DiskSettings>,
    /// Who may send `PURGE` to the proxy port. Default: loopback only.
    pub purge_allow: Vec<IpNet>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            memory: 256 << 20,
            disk: None,
            purge_allow: vec![
                IpNet::new([127, 0, 0, 0].into(), 8),
                IpNet::new(std::net::Ipv6Addr::LOCALHOST.into(), 128),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiskSettings {
    pub path: PathBuf,
    /// Bound in bytes.
    pub size: u64,
}

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> IpNet {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        IpNet {
            addr,
            prefix: prefix.min(max),
        }
    }

    /// Parses `10.0.0.0/8`, `::1`, `192.168.1.5`.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = text.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Per-route cache behaviour (`[routes.cache]`).
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// RFC 9111 overrides: default/forced TTL, honouring no-cache/private, Set-Cookie.
    pub store: crate::cache::policy::StoreOptions,
    pub key: crate::cache::key::KeySpec,
    /// Larger responses pass through unstored. Default 64 MiB.
    pub max_object_size: u64,
    /// Minimum stale-while-revalidate window ("grace"). Default 10 s.
    pub grace: Duration,
    /// Minimum stale-if-error window. Default 5 min.
    pub stale_if_error: Duration,
    /// Extra time a stale entry with validators is kept for revalidation. Default 1 h.
    pub keep: Duration,
    /// How long an uncacheable answer makes its key skip coalescing. Default 30 s.
    pub hit_for_miss: Duration,
    /// Refresh hot entries in the background shortly before they expire. Default on.
    pub refresh_ahead: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            store: Default::default(),
            key: Default::default(),
            max_object_size: 64 << 20,
            grace: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
            keep: Duration::from_secs(3600),
            hit_for_miss: Duration::from_secs(30),
            refresh_ahead: true,
        }
    }
}
