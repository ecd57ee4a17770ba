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
    /// Request IDs and trace context (`server.trust_request_id`, `[tracing]`).
    pub identity: Identity,
}

/// How requests are identified: `X-Request-Id` and W3C Trace Context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Identity {
    /// Keep a client's `X-Request-Id` (when well-formed) instead of a new one. Default off.
    pub trust_request_id: bool,
    /// Handle `traceparent` (`tracing.enabled`). Default off (opt in: a new trace on every request costs a pass ~2k instructions and an allocation).
    pub trace_context: bool,
    /// The share of new traces marked sampled (`tracing.sample`). Default 0.
    pub sample: f64,
}

impl Default for Identity {
    fn default() -> Identity {
        Identity {
            trust_request_id: false,
            trace_context: false,
            sample: 0.0,
        }
    }
}

/// How torii listens and runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Proxy listeners: the plain ones of `server.listen` first, then `[[listeners]]` in
    /// file order. Default: plain HTTP on `127.0.0.1:8080`.
    pub listeners: Vec<Listener>,
    /// Admin listener; `None` when `admin = "off"`. Default: `127.0.0.1:9901`.
    pub admin: Option<SocketAddr>,
    /// Worker count. Default: one per core.
    pub workers: usize,
    /// Worker layout. Default: thread-per-core.
    pub runtime: RuntimeKind,
    /// How long SIGTERM waits for in-flight requests. Default: 30 s.
    pub drain_timeout: Duration,
    /// Where `torii run` writes its PID (atomically), rewritten by the new process of a
    /// SIGUSR2 upgrade once it is ready, removed on a clean exit. Default: none.
    pub pid_file: Option<std::path::PathBuf>,
    /// How long a SIGUSR2 upgrade waits for the new process to be ready before it kills
    /// it and keeps serving. Default: 30 s.
    pub upgrade_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `Forwarded: for=` name the client. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// torii's own log on stderr (`server.log_format`; `TORII_LOG_FORMAT` overrides it).
    /// Read at start only. Default: text.
    pub log_format: ProcessLogFormat,
}

/// How torii's own log (stderr) is written: text (coloured only on a terminal) or one
/// JSON object per line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProcessLogFormat {
    #[default]
    Text,
    Json,
}

impl ProcessLogFormat {
    /// `"text"` or `"json"`.
    pub fn parse(text: &str) -> Option<ProcessLogFormat> {
        match text {
            "text" => Some(ProcessLogFormat::Text),
            "json" => Some(ProcessLogFormat::Json),
            _ => None,
        }
    }
}

impl Server {
    /// Every listener address, in order.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }
}

/// One proxy listener: its address and what it speaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// TLS termination; `None` speaks plain HTTP/1.1 and h2c (by preface).
    pub tls: Option<Arc<Tls>>,
    /// `Some(port)`: answer every request with `308` to `https://HOST[:port]/path?query`
    /// (the port left out when 443), like nginx's `return 308 https://$host$request_uri`.
    pub redirect_https: Option<u16>,
    /// Whether connections start with a PROXY protocol header. Default: off.
    pub proxy_protocol: ProxyProtocol,
}

/// `listeners[].proxy_protocol`: which PROXY protocol header versions a listener reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    #[default]
    Off,
    V1,
    V2,
    Any,
}

/// `routes[].access`: which client addresses a route serves. Deny wins; an empty allow
/// list allows everyone not denied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// `client_cert = "required"`: only connections whose client certificate verified.
    /// Default false.
    pub client_cert: bool,
}

impl Listener {
    /// A plain HTTP listener.
    pub fn plain(addr: SocketAddr) -> Listener {
        Listener {
            addr,
            tls: None,
            redirect_https: None,
            proxy_protocol: ProxyProtocol::Off,
        }
    }

    /// `"http"` or `"https"`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// TLS settings of a listener (`[listeners.tls]`), certificates already read and checked.
/// The handshake offers ALPN `h2` and `http/1.1`, and resumes sessions (tickets and a
/// session cache).
#[derive(Debug, Clone)]
pub struct Tls {
    /// Served when the client sends no SNI name, or a name no entry of `certs` has.
    /// `None` (only with `acme`): such a handshake fails.
    pub default_cert: Option<TlsCert>,
    /// Chosen by SNI: an exact name first, then the wildcard `*.rest` of the name.
    pub certs: Vec<TlsCert>,
    /// Oldest protocol version accepted. Default TLS 1.2.
    pub min_version: TlsVersion,
    /// Client certificates (mutual TLS), when `client_ca` is set. Default: none asked for.
    pub client_auth: Option<ClientAuth>,
    /// Certificates ordered from an ACME directory; chosen by SNI before `certs`.
    pub acme: Option<Acme>,
}

/// `listeners[].tls.acme`: what to order from an ACME (RFC 8555) directory, and where the
/// account key, certificate chain and private key are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// Lowercased DNS names of the one certificate ordered (the first names the files).
    pub domains: Vec<String>,
    /// Contact of the account (`mailto:`). Default: none.
    pub email: Option<String>,
    /// The directory URL (https). Default: Let's Encrypt's production directory.
    pub directory: String,
    pub challenge: AcmeChallenge,
    /// Where the account and certificates are stored (0700 directory, 0600 files).
    pub storage: PathBuf,
    /// Trusted roots for the directory's HTTPS certificate (`ca`); `None`: the system's.
    pub ca: Option<PathBuf>,
    /// Renew when this much of the certificate's life is left. `None` (default): at two
    /// thirds of its lifetime.
    pub renew_before: Option<Duration>,
    /// First wait after a failed order; doubles each failure (with jitter) up to 6 h.
    /// Default 1 min.
    pub retry_backoff: Duration,
}

/// `acme.challenge`: how the directory validates that torii answers for a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `http-01`: `/.well-known/acme-challenge/TOKEN` on a plain listener (port 80).
    Http01,
    /// `tls-alpn-01` (default): a handshake with ALPN `acme-tls/1` on the TLS listener.
    TlsAlpn01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        self.default_cert == other.default_cert
            && self.certs == other.certs
            && self.min_version == other.min_version
            && self.client_auth == other.client_auth
            && self.acme == other.acme
    }
}

/// `listeners[].tls.client_ca` and `client_auth`: which client certificates a TLS listener
/// asks for and verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The CA certificates client certificates must chain to.
    pub ca: CaBundle,
    pub mode: ClientAuthMode,
}

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// No verified certificate, no handshake (the default with `client_ca`).
    Required,
    /// A client may present none; one it presents must verify. Routes decide
    /// (`access = { client_cert = "required" }`).
    Optional,
}

/// One certificate chain with its private key, as read from PEM files.
#[derive(Debug, Clone)]
pub struct TlsCert {
    pub cert_path: PathBuf,
    /// Lowercased DNS names it is chosen for (`*.example.com` for a wildcard): the
    /// configured `names`, else the certificate's subject alternative names.
    pub names: Vec<String>,
    /// The chain (leaf first) and signing key, ready for rustls.
    pub key: Arc<rustls::sign::CertifiedKey>,
    /// The leaf's expiry.
    pub not_after: std::time::SystemTime,
}

impl PartialEq for TlsCert {
    fn eq(&self, other: &TlsCert) -> bool {
        self.names == other.names && self.key.cert == other.key.cert
    }
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// As OpenSSL and nginx's `$ssl_protocol` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
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
    /// Longest pause while a client sends a request body (between two reads, like nginx's
    /// `client_body_timeout`). Default 30 s; 408 and the connection closed beyond.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests. Default 60 s.
    pub idle_timeout: Duration,
    /// Most open downstream connections over all workers. Default 10 000.
    pub max_connections: usize,
    /// Most open downstream connections from one client IP; 0 means no per-IP cap (the
    /// default, since many clients can share one NAT address). Beyond it, new connections
    /// from that IP are closed at once.
    pub max_connections_per_ip: usize,
    /// Most concurrent HTTP/2 streams (requests in flight) on one connection. Default 128.
    /// With HTTP/1.1 a connection has one request in flight at a time, so torii never has
    /// more than `max_connections` × `max_streams` requests in flight.
    pub max_streams: usize,
    /// Keep request header fields whose names hold `_`. Default off: they are dropped
    /// (as nginx does), since CGI/WSGI origins read `X_Forwarded_For` as `X-Forwarded-For`.
    pub underscores_in_headers: bool,
    /// The rate limit of every route without its own (`limits.rate_limit`): one set of
    /// buckets shared by those routes. Default none.
    pub rate_limit: Option<RateLimit>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body: 1 << 30,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_streams: 128,
            underscores_in_headers: false,
            rate_limit: None,
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
    pub servers: Vec<ServerSpec>,
    /// Default 5 s; a timeout answers 504.
    pub connect_timeout: Duration,
    /// Time from sending the request to the response head, per try (504 beyond), and the
    /// longest wait for each read of the response body (the client's response is cut
    /// beyond, like nginx's `proxy_read_timeout`). Default 60 s.
    pub response_timeout: Duration,
    /// Idle keep-alive connections kept per server. Default 64.
    pub pool_max_idle: usize,
    /// How long an idle pooled connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// How a server is chosen. Default `P2c`.
    pub balance: Balance,
    /// Active health checks; `None` (the default) checks nothing actively.
    pub health: Option<HealthCheck>,
    /// Passive health: when to eject a failing server, and for how long.
    pub breaker: BreakerSettings,
    /// Extra tries on other servers for a request that may be retried. Default 2.
    pub retries: u32,
    /// Retries allowed as a fraction of requests (plus a reserve of 10). Default 0.2.
    pub retry_budget: f64,
    /// Bound on the whole exchange over every try (queue wait included); `None` (the
    /// default) bounds each try only, by `connect_timeout` and `response_timeout`.
    pub timeout: Option<Duration>,
    /// Requests that may wait when every server is at its `max_conns`. Default 1024;
    /// beyond it 503 at once.
    pub queue_size: usize,
    /// Longest wait in that queue. Default 5 s; 503 beyond.
    pub queue_timeout: Duration,
    /// How requests are sent to the servers. Default HTTP/1.1.
    pub protocol: UpstreamProtocol,
    /// How `https://` servers are verified.
    pub tls: UpstreamTls,
    /// A PROXY protocol header written first on every new connection, naming the client
    /// (`send_proxy_protocol`). Connections are then not reused. Default: none.
    pub send_proxy_protocol: Option<SendProxyProtocol>,
}

/// `upstreams.<name>.send_proxy_protocol`: the PROXY protocol version torii writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxyProtocol {
    /// The text header (`PROXY TCP4 …`).
    V1,
    /// The binary header.
    V2,
}

/// The protocol of an upstream group (`protocol = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over keep-alive connections (ALPN `http/1.1` to `https://` servers).
    H1,
    /// HTTP/2 over TLS (ALPN `h2`), requests multiplexed on one connection per server.
    H2,
    /// HTTP/2 over cleartext TCP with prior knowledge (gRPC servers without TLS).
    H2c,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::H1 => "h1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
        }
    }

    pub fn is_h2(self) -> bool {
        self != UpstreamProtocol::H1
    }
}

/// Verification of `https://` upstream servers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// Trusted roots from `tls_ca` (a PEM file); `None`: the system's roots.
    pub ca: Option<CaBundle>,
    /// SNI name and the name the certificate must carry; `None`: the server's host.
    pub server_name: Option<String>,
    /// `tls_insecure_skip_verify = true`: accept any certificate. For self-signed test
    /// servers only; the connection is encrypted but not authenticated.
    pub insecure_skip_verify: bool,
}

/// CA certificates read from a PEM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// One server of a group, with its weight and connection cap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSpec {
    pub addr: ServerAddr,
    /// Share of traffic relative to the other servers. 1..=1000, default 1.
    pub weight: u32,
    /// Most requests in flight to this server at once; 0 (the default) means no cap.
    pub max_conns: usize,
}

impl fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

/// Load-balancing policy of a group (`balance = …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Power of two random choices on in-flight requests per weight (the default).
    P2c,
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// Fewest in-flight requests per weight.
    LeastOutstanding,
    /// Weighted rendezvous hashing on a key: a key stays on one server while it is up.
    Hash(HashKey),
}

impl Balance {
    pub fn as_str(&self) -> &'static str {
        match self {
            Balance::P2c => "p2c",
            Balance::RoundRobin => "round-robin",
            Balance::LeastOutstanding => "least-outstanding",
            Balance::Hash(_) => "hash",
        }
    }
}

/// What a `hash` group hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
    /// Path and query.
    Uri,
}

/// Active health check of every server of a group (`health = { … }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and query) requested with GET. Default `/`.
    pub path: String,
    /// Time between checks of one server. Default 5 s.
    pub interval: Duration,
    /// Time a check may take. Default 2 s.
    pub timeout: Duration,
    /// Statuses that count as healthy, inclusive. Default 200..=399.
    pub expect: (u16, u16),
    /// Consecutive passes that bring a down server back. Default 2.
    pub rise: u32,
    /// Consecutive failures that take a server down. Default 3.
    pub fall: u32,
}

/// Passive health (circuit breaker) of each server (`breaker = { … }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures (connect errors, timeouts, broken exchanges, 5xx) that eject a
    /// server; 0 never ejects. Default 5.
    pub failures: u32,
    /// First ejection period; it doubles while the server keeps failing its probe.
    /// Default 5 s.
    pub ejection: Duration,
    /// Longest ejection period. Default 2 min.
    pub max_ejection: Duration,
    /// The largest share of a group's servers (percent, 0–100) the breaker may eject at
    /// once; an ejection beyond it is not made. With the default 50, a one-server group is
    /// never ejected and a two-server group keeps one. Default 50.
    pub max_ejection_percent: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(120),
            max_ejection_percent: 50,
        }
    }
}

/// Per-route rate limit (`[routes.rate_limit]`): a token bucket per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second per key.
    pub rps: f64,
    /// Requests a key may make at once above the sustained rate. Default: `rps`, at least 1.
    pub burst: u32,
    pub key: RateKey,
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    /// The value of this request header (requests without it share one bucket).
    Header(http::HeaderName),
}

/// One upstream server: `http://host:port` or `https://host:port` (no path).
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
    /// Requests per second per client (or header value); 429 beyond.
    pub rate_limit: Option<RateLimit>,
    /// Header rules and path rewrite (`[defaults]` merged in); `None` when there are none.
    pub rules: Option<Arc<super::rules::RouteRules>>,
    /// Allow/deny by client address; `None`: everyone (and no cost).
    pub access: Option<Arc<Access>>,
    /// Basic or forward auth (the route's own, else `[defaults]`'s); `None`: no auth.
    pub auth: Option<Arc<super::auth::Auth>>,
    /// `[routes.limits]`: this route's body limits, over `[limits]`'s.
    pub limits: RouteLimits,
}

/// `routes[].limits`: body limits of one route, each overriding `[limits]`'s when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteLimits {
    /// Largest request body in bytes (413 beyond).
    pub max_body: Option<u64>,
    /// Longest pause while a client sends a request body (408 beyond).
    pub body_timeout: Option<Duration>,
}

impl RouteLimits {
    /// The route's `max_body`, else the server's.
    pub fn max_body(&self, server: &Limits) -> u64 {
        self.max_body.unwrap_or(server.max_body)
    }

    /// The route's `body_timeout`, else the server's.
    pub fn body_timeout(&self, server: &Limits) -> Duration {
        self.body_timeout.unwrap_or(server.body_timeout)
    }
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
        /// `None`: torii never compresses or decodes this route's responses.
        compress: Option<Arc<super::Compress>>,
    },
    Respond {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Redirect {
        status: StatusCode,
        to: String,
        /// Append the request's path and query to `to` (without `regex`).
        keep_path: bool,
        /// Matched against the raw path; `to` is expanded with its captures (`$1`).
        regex: Option<regex::bytes::Regex>,
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
    /// Optional shared tier on Redis/Valkey (`[cache.shared]`); `None` by default.
    pub shared: Option<SharedSettings>,
}

/// Where the shared tier lives: one Redis/Valkey server, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://[user:password@]host:port[/db]` or `unix:///path/redis.sock`.
    Single(String),
    /// `redis+cluster://host:port[,host:port…]` or several comma-separated `redis://` URLs:
    /// each a seed node; the rest of the cluster is discovered from them.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Parses a `redis = "…"` value: a single URL, `redis+cluster://h1:p1,h2:p2`, or
    /// comma-separated URLs (a cluster). Checks syntax only; nothing is connected.
    ///
    /// # Errors
    /// A message naming the part that is not a Redis URL.
    pub fn parse(text: &str) -> Result<RedisTarget, String> {
        use redis::IntoConnectionInfo as _;
        let text = text.trim();
        let check = |url: &str| -> Result<String, String> {
            url.into_connection_info()
                .map(|_| url.to_string())
                .map_err(|e| {
                    let url = redact(url);
                    format!("{url:?} is not a Redis URL: {e}")
                })
        };
        if let Some(rest) = text.strip_prefix("redis+cluster://") {
            let nodes = rest
                .split(',')
                .map(|n| check(&format!("redis://{}", n.trim())))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(RedisTarget::Cluster(nodes));
        }
        if text.contains(',') {
            let nodes = text
                .split(',')
                .map(|n| {
                    let n = n.trim();
                    if n.contains("://") {
                        check(n)
                    } else {
                        check(&format!("redis://{n}"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(RedisTarget::Cluster(nodes));
        }
        check(text).map(RedisTarget::Single)
    }

    /// Whether the URLs are `rediss://` (TLS); a target is all TLS or all plain.
    pub fn is_tls(&self) -> bool {
        self.urls().iter().all(|u| u.starts_with("rediss://"))
    }

    /// The node URLs: one for a single server, the seeds of a cluster.
    pub fn urls(&self) -> &[String] {
        match self {
            RedisTarget::Single(u) => std::slice::from_ref(u),
            RedisTarget::Cluster(nodes) => nodes,
        }
    }
}

/// A Redis URL without its password, for logs: `redis://user:***@host:6379`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// The shared tier's settings (`[cache.shared]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSettings {
    pub redis: RedisTarget,
    /// Bound on every Redis call on the request path (lookups, leases). Default 100 ms; a
    /// slower answer counts as a miss and as a failure for the breaker.
    pub timeout: Duration,
    /// Larger objects stay in the local tiers only. Default 1 MiB.
    pub max_object_size: u64,
    /// How long a node holds the cluster-wide fetch lease for a key (`SET NX PX`), and the
    /// longest other nodes wait on it before going to the origin themselves. Default 5 s;
    /// 0 turns cluster-wide coalescing off.
    pub lease: Duration,
    /// Prefix of every Redis key and of the purge channel, so several clusters can share one
    /// Redis. Default `torii:`.
    pub prefix: String,
    /// Consecutive failed calls that open the breaker (local-only until it recovers).
    /// Default 3.
    pub breaker_failures: u32,
    /// First time the breaker stays open before one probe call; doubles while probes fail,
    /// up to 30 s. Default 1 s.
    pub breaker_retry: Duration,
    /// TLS settings for `rediss://` URLs (`cache.shared.tls`); `None`: the system's roots,
    /// no client certificate.
    pub tls: Option<RedisTls>,
}

/// `cache.shared.tls`: the files as read (PEM), checked by `torii check`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// CA certificates (PEM) Redis's certificate must chain to, instead of the system's.
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM), for `tls-auth-clients yes`.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key never reaches a log.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl SharedSettings {
    /// Settings with every default, for `redis`.
    pub fn new(redis: RedisTarget) -> SharedSettings {
        SharedSettings {
            redis,
            timeout: Duration::from_millis(100),
            max_object_size: 1 << 20,
            lease: Duration::from_secs(5),
            prefix: "torii:".into(),
            breaker_failures: 3,
            breaker_retry: Duration::from_secs(1),
            tls: None,
        }
    }
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
            shared: None,
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
    /// A range request that misses fetches the whole object when it is at most this large
    /// (then stores it and answers the range from it); a larger one has its range
    /// forwarded as it is, unstored. Default 16 MiB; 0 always forwards the range.
    pub range_fill_max: u64,
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
    /// `client_directives = "ignore"` (origin shielding): a request's `no-cache`,
    /// `max-age`, `min-fresh` and `Pragma: no-cache` do not bypass a fresh object.
    /// Default `false` ("honour", RFC 9111 §5.2.1).
    pub ignore_client_directives: bool,
    /// `vary_normalise`: selecting request fields mapped to listed values (and
    /// `Accept-Encoding`, always normalised to one coding).
    pub vary: crate::cache::policy::VaryNormalise,
    /// A digest of the settings a stored object's freshness depends on (`store`, with its
    /// targeted fields and status TTLs, `grace`, `stale_if_error`): equal settings, equal id. A hit reuses the freshness computed for
    /// an object under the same id instead of parsing its headers again.
    pub freshness_id: u64,
}

impl CachePolicy {
    /// Sets `freshness_id` from the settings; call after changing any of them.
    pub fn with_freshness_id(mut self) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", self.store).hash(&mut h);
        self.grace.hash(&mut h);
        self.stale_if_error.hash(&mut h);
        self.freshness_id = h.finish();
        self
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        let policy = CachePolicy {
            store: Default::default(),
            key: Default::default(),
            max_object_size: 64 << 20,
            range_fill_max: 16 << 20,
            grace: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
            keep: Duration::from_secs(3600),
            hit_for_miss: Duration::from_secs(30),
            refresh_ahead: true,
            ignore_client_directives: false,
            vary: Default::default(),
            freshness_id: 0,
        };
        policy.with_freshness_id()
    }
}
