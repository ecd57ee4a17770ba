//! The validated, typed configuration: what the rest of torii reads. Built only by `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

/// A complete, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub limits: Limits,
    pub log: Log,
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
