//! The config file as written: serde mirrors of the TOML, every field optional, spans kept.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file. Unknown keys anywhere are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `include = ["conf.d/*.toml"]`: more files of upstreams, routes and listeners
    /// (`config::include`); taken out when they are merged.
    pub include: Option<Spanned<Vec<Spanned<String>>>>,
    pub server: Option<ServerSection>,
    pub limits: Option<LimitsSection>,
    pub log: Option<LogSection>,
    pub cache: Option<CacheSection>,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, UpstreamSection>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSection>>,
    /// `[[listeners]]`: listeners with their own settings (TLS, redirect to https), in
    /// addition to the plain ones in `server.listen`.
    #[serde(default)]
    pub listeners: Vec<Spanned<ListenerSection>>,
    /// `[defaults]`: settings every route inherits (header rules, compression).
    pub defaults: Option<DefaultsSection>,
    /// `[tracing]`: W3C Trace Context.
    pub tracing: Option<TracingSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    pub enabled: Option<bool>,
    pub sample: Option<Spanned<f64>>,
}

/// `[defaults]`: header rules applied on every route, before the route's own, and the
/// compression every proxy route starts from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSection {
    pub headers: Option<HeadersSection>,
    pub compress: Option<Spanned<CompressSection>>,
    /// Auth for every route without its own `auth`.
    pub auth: Option<Spanned<AuthSection>>,
}

/// `headers = { request = {…}, response = {…} }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersSection {
    pub request: Option<HeaderRulesSection>,
    pub response: Option<HeaderRulesSection>,
}

/// Field name to value template, each with its span.
pub type HeaderValues = BTreeMap<Spanned<String>, Spanned<String>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesSection {
    pub remove: Option<Vec<Spanned<String>>>,
    pub set: Option<HeaderValues>,
    pub add: Option<HeaderValues>,
    pub set_if_absent: Option<HeaderValues>,
}

/// `rewrite = { strip_prefix = "/api" }`, `{ prefix = "/v2" }` or `{ regex, to }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteSection {
    pub strip_prefix: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    pub to: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub addr: Option<Spanned<String>>,
    pub tls: Option<Spanned<TlsSection>>,
    pub redirect_https: Option<Spanned<bool>>,
    pub https_port: Option<Spanned<i64>>,
    pub proxy_protocol: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub min_version: Option<Spanned<String>>,
    pub certs: Option<Vec<Spanned<TlsCertSection>>>,
    /// PEM CA certificate(s) that client certificates must chain to (mutual TLS).
    pub client_ca: Option<Spanned<String>>,
    /// `"required"` (default with `client_ca`) or `"optional"`.
    pub client_auth: Option<Spanned<String>>,
    pub acme: Option<Spanned<AcmeSection>>,
}

/// `listeners[].tls.acme`: certificates ordered from an ACME (RFC 8555) directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    pub domains: Option<Vec<Spanned<String>>>,
    pub email: Option<Spanned<String>>,
    pub directory: Option<Spanned<String>>,
    pub challenge: Option<Spanned<String>>,
    pub storage: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub renew_before: Option<Spanned<String>>,
    pub retry_backoff: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertSection {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub names: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub admin: Option<Spanned<String>>,
    pub workers: Option<Spanned<i64>>,
    pub runtime: Option<Spanned<String>>,
    pub drain_timeout: Option<Spanned<String>>,
    pub pid_file: Option<Spanned<String>>,
    pub upgrade_timeout: Option<Spanned<String>>,
    pub trust_request_id: Option<Spanned<bool>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub log_format: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_header_bytes: Option<Spanned<String>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_body: Option<Spanned<String>>,
    pub header_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_ip: Option<Spanned<i64>>,
    pub max_streams: Option<Spanned<i64>>,
    pub underscores_in_headers: Option<Spanned<bool>>,
    /// The rate limit of every route without its own `rate_limit` (one set of buckets,
    /// shared by those routes).
    pub rate_limit: Option<Spanned<RateLimitSection>>,
}

/// `routes[].limits`: this route's own `max_body` and `body_timeout`, over `[limits]`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimitsSection {
    pub max_body: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub access: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Each entry is `"host:port"` or `{ addr = "host:port", weight = 3, max_conns = 100 }`;
    /// kept as a raw value so `validate` can point at the exact bad entry.
    pub servers: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub response_timeout: Option<Spanned<String>>,
    pub pool_max_idle: Option<Spanned<i64>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub balance: Option<Spanned<String>>,
    pub hash_key: Option<Spanned<String>>,
    pub health: Option<Spanned<HealthSection>>,
    pub breaker: Option<Spanned<BreakerSection>>,
    pub retries: Option<Spanned<i64>>,
    pub retry_budget: Option<Spanned<f64>>,
    pub timeout: Option<Spanned<String>>,
    pub queue_size: Option<Spanned<i64>>,
    pub queue_timeout: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    pub send_proxy_protocol: Option<Spanned<String>>,
    pub tls_ca: Option<Spanned<String>>,
    pub tls_server_name: Option<Spanned<String>>,
    pub tls_insecure_skip_verify: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    pub failures: Option<Spanned<i64>>,
    pub ejection: Option<Spanned<String>>,
    pub max_ejection: Option<Spanned<String>>,
    pub max_ejection_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    pub rps: Option<Spanned<f64>>,
    pub burst: Option<Spanned<i64>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub host_header: Option<Spanned<String>>,
    pub respond: Option<Spanned<RespondSection>>,
    pub redirect: Option<Spanned<RedirectSection>>,
    pub cache: Option<Spanned<RouteCacheSection>>,
    pub compress: Option<Spanned<CompressSection>>,
    pub rate_limit: Option<Spanned<RateLimitSection>>,
    pub headers: Option<HeadersSection>,
    pub rewrite: Option<Spanned<RewriteSection>>,
    pub access: Option<Spanned<AccessSection>>,
    pub auth: Option<Spanned<AuthSection>>,
    pub limits: Option<Spanned<RouteLimitsSection>>,
}

/// `auth = { basic = {…} }` or `auth = { forward = {…} }` (exclusive).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `off = true`: no auth on this route, whatever `[defaults]` says.
    pub off: Option<bool>,
    pub basic: Option<Spanned<BasicAuthSection>>,
    pub forward: Option<Spanned<ForwardAuthSection>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSection {
    pub realm: Option<Spanned<String>>,
    pub users_file: Option<Spanned<String>>,
    pub forward_authorization: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthSection {
    pub upstream: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub copy_headers: Option<Vec<Spanned<String>>>,
    pub cache: Option<Spanned<String>>,
}

/// `routes[].access = { allow = [...], deny = [...] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    pub allow: Option<Vec<Spanned<String>>>,
    pub deny: Option<Vec<Spanned<String>>>,
    /// `"required"`: only clients that presented a verified certificate (mutual TLS).
    pub client_cert: Option<Spanned<String>>,
}

/// `routes[].compress`: on by default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressSection {
    pub enabled: Option<bool>,
    pub codings: Option<Spanned<Vec<Spanned<String>>>>,
    pub min_size: Option<Spanned<String>>,
    pub types: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondSection {
    pub status: Option<Spanned<i64>>,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSection {
    pub to: Option<Spanned<String>>,
    pub status: Option<Spanned<i64>>,
    pub keep_path: Option<bool>,
    pub regex: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub memory: Option<Spanned<String>>,
    pub disk: Option<Spanned<DiskSection>>,
    pub purge_allow: Option<Vec<Spanned<String>>>,
    pub shared: Option<Spanned<SharedSection>>,
    /// Targeted cache-control fields (RFC 9213), in precedence order.
    pub targeted_fields: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[cache.shared]`: the Redis/Valkey tier shared by a cluster of torii nodes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSection {
    pub redis: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub max_object_size: Option<Spanned<String>>,
    pub lease: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub breaker_failures: Option<Spanned<i64>>,
    pub breaker_retry: Option<Spanned<String>>,
    /// `tls = { ca, cert, key, server_name }` for `rediss://` URLs.
    pub tls: Option<Spanned<RedisTlsSection>>,
}

/// `[cache.shared.tls]`: how torii verifies Redis and proves who it is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsSection {
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSection {
    pub path: Option<Spanned<String>>,
    pub size: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheSection {
    pub enabled: Option<bool>,
    pub default_ttl: Option<Spanned<String>>,
    pub forced_ttl: Option<Spanned<String>>,
    pub ignore_no_cache: Option<bool>,
    pub allow_set_cookie: Option<bool>,
    pub max_object_size: Option<Spanned<String>>,
    pub range_fill_max: Option<Spanned<String>>,
    pub grace: Option<Spanned<String>>,
    pub stale_if_error: Option<Spanned<String>>,
    pub keep: Option<Spanned<String>>,
    pub hit_for_miss: Option<Spanned<String>>,
    pub refresh_ahead: Option<bool>,
    pub key: Option<KeySection>,
    /// `"honour"` (default) or `"ignore"` (origin shielding).
    pub client_directives: Option<Spanned<String>>,
    /// `{ "404" = "1m", "5xx" = "5s" }`: lifetimes by status, for responses without
    /// explicit freshness.
    pub status_ttl: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    /// `{ "Accept-Language" = ["en", "de"] }`: the values a selecting field maps to.
    pub vary_normalise: Option<Spanned<VaryLists>>,
}

/// `vary_normalise`: a field name and the values it maps to, each with its span.
pub type VaryLists = BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub host: Option<bool>,
    pub query: Option<Spanned<String>>,
    pub drop_params: Option<Vec<String>>,
    pub headers: Option<Vec<Spanned<String>>>,
    pub cookies: Option<Vec<String>>,
}
