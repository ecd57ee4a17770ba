//! Turns the file as written into a typed `Config`, collecting every problem on the way.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use toml::Spanned;

use super::file::{self, FileConfig};
use super::model::*;
use super::units::{parse_duration, parse_size};
use super::Problem;

mod range;
mod tls;
use tls::{listener, upstream_protocol};

/// Collects problems while the config is converted; each problem keeps its span.
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn report(&mut self, span: Range<usize>, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            span: Some(span),
            path: path.into(),
            message: message.into(),
            hint: None,
        });
    }

    fn hint(&mut self, hint: impl Into<String>) {
        if let Some(last) = self.problems.last_mut() {
            last.hint = Some(hint.into());
        }
    }

    fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        path: &str,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(why) => {
                self.report(value.span(), path, why);
                self.hint("durations look like \"250ms\", \"5s\", \"1m30s\"");
                default
            }
        }
    }

    fn size(&mut self, value: &Option<Spanned<String>>, path: &str, default: u64) -> u64 {
        let Some(value) = value else { return default };
        match parse_size(value.get_ref()) {
            Ok(s) => s,
            Err(why) => {
                self.report(value.span(), path, why);
                self.hint("sizes look like \"64KiB\", \"512MB\", \"1GiB\"");
                default
            }
        }
    }

    fn count(
        &mut self,
        value: &Option<Spanned<i64>>,
        path: &str,
        range: Range<i64>,
        default: usize,
    ) -> usize {
        let Some(value) = value else { return default };
        let n = *value.get_ref();
        if range.contains(&n) {
            n as usize
        } else {
            self.report(value.span(), path, format!("{n} is out of range"));
            self.hint(format!(
                "use a number from {} to {}",
                range.start,
                range.end - 1
            ));
            default
        }
    }

    fn socket_addr(&mut self, value: &Spanned<String>, path: &str) -> Option<SocketAddr> {
        let text = value.get_ref().trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(addr);
        }
        if let Some(port) = text.strip_prefix(':') {
            if let Ok(port) = port.parse::<u16>() {
                return Some(SocketAddr::from(([0, 0, 0, 0], port)));
            }
        }
        self.report(
            value.span(),
            path,
            format!("{text:?} is not an IP:port address"),
        );
        if text.parse::<std::net::IpAddr>().is_ok() {
            self.hint(format!("add a port: \"{text}:8080\""));
        } else {
            self.hint(
                "e.g. \"127.0.0.1:8080\", \"[::1]:8080\" or \":8080\" for all IPv4 addresses",
            );
        }
        None
    }
}

/// Validates a parsed file. Returns every problem found, not only the first. Relative
/// certificate paths are read from the current directory.
pub fn validate(file: FileConfig) -> Result<Config, Vec<Problem>> {
    validate_in(file, None)
}

/// Like `validate`, with relative paths of certificates, keys and CA files taken from
/// `base` (the config file's directory), as nginx does with its prefix.
pub fn validate_in(file: FileConfig, base: Option<&Path>) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    let server_section = file.server.unwrap_or_default();
    let listen_given = server_section.listen.is_some();
    let mut server = server(&mut c, server_section, !file.listeners.is_empty());
    if !file.listeners.is_empty() {
        // `[[listeners]]` alone: no default plain listener on 127.0.0.1:8080.
        if !listen_given {
            server.listeners.clear();
        }
        for (i, section) in file.listeners.iter().enumerate() {
            if let Some(l) = listener(&mut c, section, &format!("listeners[{i}]"), base) {
                server.listeners.push(l);
            }
        }
    }
    let limits = limits(&mut c, file.limits.unwrap_or_default());
    let log = log(&mut c, file.log.unwrap_or_default());
    let cache = cache_settings(&mut c, file.cache.unwrap_or_default());

    let mut upstreams = BTreeMap::new();
    for (name, section) in &file.upstreams {
        let path = format!("upstreams.{}", name.get_ref());
        // Kept even when invalid, so routes naming it don't add a second, misleading error.
        let upstream = upstream(&mut c, section, &path, name.span(), base);
        upstreams.insert(UpstreamName(name.get_ref().clone()), upstream);
    }

    let mut routes = Vec::new();
    for (index, section) in file.routes.iter().enumerate() {
        let path = format!("routes[{index}]");
        if let Some(route) = route(
            &mut c,
            section,
            &path,
            RouteId(index),
            &upstreams,
            cache.memory > 0,
        ) {
            routes.push(route);
        }
    }
    if routes.is_empty() && c.problems.is_empty() {
        c.problems.push(Problem {
            span: None,
            path: "routes".into(),
            message: "no routes: torii would answer 404 to everything".into(),
            hint: Some("add [[routes]] with path = \"/\" and upstream = \"<name>\"".into()),
        });
    }

    if c.problems.is_empty() {
        Ok(Config {
            server,
            limits,
            log,
            cache,
            upstreams,
            routes,
        })
    } else {
        Err(c.problems)
    }
}

fn server(c: &mut Checker, s: file::ServerSection, more_listeners: bool) -> Server {
    let mut listeners = Vec::new();
    match &s.listen {
        Some(list) if list.get_ref().is_empty() && more_listeners => {}
        Some(list) if list.get_ref().is_empty() => {
            c.report(list.span(), "server.listen", "no listen addresses");
            c.hint("e.g. listen = [\"0.0.0.0:8080\"]");
        }
        Some(list) => {
            for (i, addr) in list.get_ref().iter().enumerate() {
                if let Some(addr) = c.socket_addr(addr, &format!("server.listen[{i}]")) {
                    listeners.push(Listener::plain(addr));
                }
            }
        }
        None => listeners.push(Listener::plain(SocketAddr::from(([127, 0, 0, 1], 8080)))),
    }
    let admin = match &s.admin {
        Some(v) if v.get_ref() == "off" => None,
        Some(v) => c.socket_addr(v, "server.admin"),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match &s.workers {
        Some(w) if *w.get_ref() == 0 => cores,
        w => c.count(w, "server.workers", 0..1025, cores),
    };
    let runtime = match &s.runtime {
        None => RuntimeKind::ThreadPerCore,
        Some(v) => match v.get_ref().as_str() {
            "thread-per-core" => RuntimeKind::ThreadPerCore,
            "work-stealing" => RuntimeKind::WorkStealing,
            other => {
                c.report(
                    v.span(),
                    "server.runtime",
                    format!("unknown runtime {other:?}"),
                );
                c.hint("use \"thread-per-core\" or \"work-stealing\"");
                RuntimeKind::ThreadPerCore
            }
        },
    };
    let drain_timeout = c.duration(
        &s.drain_timeout,
        "server.drain_timeout",
        Duration::from_secs(30),
    );
    Server {
        listeners,
        admin,
        workers,
        runtime,
        drain_timeout,
    }
}

fn limits(c: &mut Checker, s: file::LimitsSection) -> Limits {
    let d = Limits::default();
    let max_header_bytes = c.size(
        &s.max_header_bytes,
        "limits.max_header_bytes",
        d.max_header_bytes as u64,
    );
    // hyper needs room for at least one read buffer; below 8 KiB it would refuse to start.
    let max_header_bytes = if let Some(v) = &s.max_header_bytes {
        if !(8192..=(16 << 20)).contains(&max_header_bytes) {
            c.report(
                v.span(),
                "limits.max_header_bytes",
                format!("{} bytes is out of range", max_header_bytes),
            );
            c.hint("use a size from 8KiB to 16MiB");
        }
        max_header_bytes as usize
    } else {
        d.max_header_bytes
    };
    Limits {
        max_header_bytes,
        max_headers: c.count(
            &s.max_headers,
            "limits.max_headers",
            1..10_001,
            d.max_headers,
        ),
        max_body: c.size(&s.max_body, "limits.max_body", d.max_body),
        header_timeout: c.duration(&s.header_timeout, "limits.header_timeout", d.header_timeout),
        body_timeout: c.duration(&s.body_timeout, "limits.body_timeout", d.body_timeout),
        idle_timeout: c.duration(&s.idle_timeout, "limits.idle_timeout", d.idle_timeout),
        max_connections: c.count(
            &s.max_connections,
            "limits.max_connections",
            1..10_000_001,
            d.max_connections,
        ),
        max_streams: c.count(
            &s.max_streams,
            "limits.max_streams",
            1..10_001,
            d.max_streams,
        ),
        max_connections_per_ip: c.count(
            &s.max_connections_per_ip,
            "limits.max_connections_per_ip",
            0..10_000_001,
            d.max_connections_per_ip,
        ),
    }
}

fn log(c: &mut Checker, s: file::LogSection) -> Log {
    let access = match &s.access {
        None => AccessTarget::Stdout,
        Some(v) => match v.get_ref().as_str() {
            "off" => AccessTarget::Off,
            "stdout" | "-" => AccessTarget::Stdout,
            "" => {
                c.report(v.span(), "log.access", "empty path");
                c.hint("use \"off\", \"stdout\" or a file path");
                AccessTarget::Off
            }
            path => AccessTarget::File(PathBuf::from(path)),
        },
    };
    let format = match &s.format {
        None => LogFormat::Combined,
        Some(v) => match v.get_ref().as_str() {
            "combined" => LogFormat::Combined,
            "json" => LogFormat::Json,
            other => {
                c.report(v.span(), "log.format", format!("unknown format {other:?}"));
                c.hint("use \"combined\" or \"json\"");
                LogFormat::Combined
            }
        },
    };
    Log { access, format }
}

/// Parses an upstream server as `host:port`, `http://host:port`, `https://host[:port]` or
/// `http://host` (port 80, or 443 for https).
pub fn parse_server_addr(text: &str) -> Result<ServerAddr, String> {
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| format!("{text:?} is not host:port or http://host:port"))?;
    let scheme = uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP);
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(format!(
            "scheme {scheme:?} is not supported (use http:// or https://)"
        ));
    }
    if uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty())
    {
        return Err(format!(
            "{text:?} has a path; upstream servers are scheme://host:port only"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.host().is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?}: user info is not allowed in upstream addresses"
        ));
    }
    let authority = if authority.port().is_none() {
        let port = if scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        format!("{}:{port}", authority.host())
            .parse()
            .map_err(|_| format!("{text:?} is not a valid address"))?
    } else {
        authority
    };
    Ok(ServerAddr { scheme, authority })
}

fn upstream(
    c: &mut Checker,
    s: &file::UpstreamSection,
    path: &str,
    name_span: Range<usize>,
    base: Option<&Path>,
) -> Upstream {
    let mut servers = Vec::new();
    match &s.servers {
        None => {
            c.report(name_span, path, "no servers");
            c.hint("add servers = [\"127.0.0.1:3000\"]");
        }
        Some(list) if list.get_ref().is_empty() => {
            c.report(list.span(), format!("{path}.servers"), "no servers");
            c.hint("add servers = [\"127.0.0.1:3000\"]");
        }
        Some(list) => {
            for (i, entry) in list.get_ref().iter().enumerate() {
                let entry_path = format!("{path}.servers[{i}]");
                if let Some(spec) = server_spec(c, entry, &entry_path) {
                    if servers.iter().any(|s: &ServerSpec| s.addr == spec.addr) {
                        c.report(
                            entry.span(),
                            entry_path,
                            format!("{} is listed twice", spec.addr),
                        );
                        c.hint("list each server once; use weight = N to give it more traffic");
                    } else {
                        servers.push(spec);
                    }
                }
            }
        }
    }
    let balance = balance(c, s, path);
    let (protocol, tls) = upstream_protocol(c, s, &servers, path, base);
    let health = s.health.as_ref().map(|h| health(c, h.get_ref(), path));
    let d = BreakerSettings::default();
    let breaker = match &s.breaker {
        None => d,
        Some(b) => {
            let b = b.get_ref();
            let p = |k: &str| format!("{path}.breaker.{k}");
            let settings = BreakerSettings {
                failures: c.count(
                    &b.failures,
                    &p("failures"),
                    0..1_000_001,
                    d.failures as usize,
                ) as u32,
                ejection: c.duration(&b.ejection, &p("ejection"), d.ejection),
                max_ejection: c.duration(&b.max_ejection, &p("max_ejection"), d.max_ejection),
                max_ejection_percent: c.count(
                    &b.max_ejection_percent,
                    &p("max_ejection_percent"),
                    0..101,
                    d.max_ejection_percent as usize,
                ) as u32,
            };
            if let (Some(v), true) = (&b.max_ejection, settings.max_ejection < settings.ejection) {
                c.report(v.span(), p("max_ejection"), "shorter than breaker.ejection");
                c.hint("max_ejection bounds the growing back-off; make it at least ejection");
            }
            settings
        }
    };
    let retry_budget = match &s.retry_budget {
        None => 0.2,
        Some(v) if (0.0..=1.0).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            c.report(
                v.span(),
                format!("{path}.retry_budget"),
                format!("{} is not a fraction from 0 to 1", v.get_ref()),
            );
            c.hint("e.g. retry_budget = 0.2: retries add at most 20% to the requests sent");
            0.2
        }
    };
    let timeout = s
        .timeout
        .as_ref()
        .map(|_| c.duration(&s.timeout, &format!("{path}.timeout"), Duration::ZERO))
        .filter(|d| !d.is_zero());
    Upstream {
        servers,
        connect_timeout: c.duration(
            &s.connect_timeout,
            &format!("{path}.connect_timeout"),
            Duration::from_secs(5),
        ),
        response_timeout: c.duration(
            &s.response_timeout,
            &format!("{path}.response_timeout"),
            Duration::from_secs(60),
        ),
        pool_max_idle: c.count(
            &s.pool_max_idle,
            &format!("{path}.pool_max_idle"),
            0..100_001,
            64,
        ),
        pool_idle_timeout: c.duration(
            &s.pool_idle_timeout,
            &format!("{path}.pool_idle_timeout"),
            Duration::from_secs(90),
        ),
        balance,
        health,
        breaker,
        retries: c.count(&s.retries, &format!("{path}.retries"), 0..11, 2) as u32,
        retry_budget,
        timeout,
        queue_size: c.count(
            &s.queue_size,
            &format!("{path}.queue_size"),
            0..1_000_001,
            1024,
        ),
        queue_timeout: c.duration(
            &s.queue_timeout,
            &format!("{path}.queue_timeout"),
            Duration::from_secs(5),
        ),
        protocol,
        tls,
    }
}

/// One `servers` entry: `"host:port"` or `{ addr = "host:port", weight = 3, max_conns = 100 }`.
fn server_spec(c: &mut Checker, entry: &Spanned<toml::Value>, path: &str) -> Option<ServerSpec> {
    let example =
        "e.g. \"10.0.0.5:8080\" or { addr = \"app.internal:8080\", weight = 3, max_conns = 100 }";
    let (addr_text, weight, max_conns) = match entry.get_ref() {
        toml::Value::String(text) => (text.clone(), 1, 0),
        toml::Value::Table(table) => {
            let mut ok = true;
            for key in table.keys() {
                if !matches!(key.as_str(), "addr" | "weight" | "max_conns") {
                    c.report(entry.span(), path, format!("unknown key {key:?}"));
                    c.hint("a server table has addr, weight and max_conns");
                    ok = false;
                }
            }
            let Some(addr) = table.get("addr").and_then(|v| v.as_str()) else {
                c.report(entry.span(), path, "missing addr (a \"host:port\" string)");
                c.hint(example);
                return None;
            };
            let mut int = |key: &str, range: Range<i64>, default: i64| match table.get(key) {
                None => default,
                Some(toml::Value::Integer(n)) if range.contains(n) => *n,
                Some(other) => {
                    c.report(
                        entry.span(),
                        format!("{path}.{key}"),
                        format!(
                            "{other} is not a number from {} to {}",
                            range.start,
                            range.end - 1
                        ),
                    );
                    ok = false;
                    default
                }
            };
            let weight = int("weight", 1..1001, 1) as u32;
            let max_conns = int("max_conns", 0..1_000_001, 0) as usize;
            if !ok {
                return None;
            }
            (addr.to_string(), weight, max_conns)
        }
        other => {
            c.report(
                entry.span(),
                path,
                format!("a server is a string or a table, not {}", other.type_str()),
            );
            c.hint(example);
            return None;
        }
    };
    match parse_server_addr(&addr_text) {
        Ok(addr) => {
            if addr.authority.as_str().to_socket_addrs().is_err() {
                c.report(
                    entry.span(),
                    path,
                    format!("cannot resolve {:?}", addr.authority.as_str()),
                );
                c.hint("check the host name, or use an IP address");
                None
            } else {
                Some(ServerSpec {
                    addr,
                    weight,
                    max_conns,
                })
            }
        }
        Err(why) => {
            c.report(entry.span(), path, why);
            c.hint(example);
            None
        }
    }
}

fn balance(c: &mut Checker, s: &file::UpstreamSection, path: &str) -> Balance {
    let policy = s.balance.as_ref().map_or("p2c", |b| b.get_ref().as_str());
    let b = match policy {
        "p2c" => Balance::P2c,
        "round-robin" => Balance::RoundRobin,
        "least-outstanding" => Balance::LeastOutstanding,
        "hash" => {
            let key = match &s.hash_key {
                None => HashKey::ClientIp,
                Some(k) => match hash_key(k.get_ref()) {
                    Some(key) => key,
                    None => {
                        c.report(
                            k.span(),
                            format!("{path}.hash_key"),
                            format!("unknown hash key {:?}", k.get_ref()),
                        );
                        c.hint("use \"client-ip\", \"uri\", \"header:NAME\" or \"cookie:NAME\"");
                        HashKey::ClientIp
                    }
                },
            };
            return Balance::Hash(key);
        }
        other => {
            let span = s.balance.as_ref().map(|b| b.span()).unwrap_or_default();
            c.report(
                span,
                format!("{path}.balance"),
                format!("unknown policy {other:?}"),
            );
            c.hint("use \"p2c\" (default), \"round-robin\", \"least-outstanding\" or \"hash\"");
            Balance::P2c
        }
    };
    if let Some(k) = &s.hash_key {
        c.report(
            k.span(),
            format!("{path}.hash_key"),
            "hash_key only applies to balance = \"hash\"",
        );
        c.hint("add balance = \"hash\", or remove hash_key");
    }
    b
}

fn hash_key(text: &str) -> Option<HashKey> {
    match text {
        "client-ip" => Some(HashKey::ClientIp),
        "uri" => Some(HashKey::Uri),
        _ => {
            if let Some(name) = text.strip_prefix("header:") {
                HeaderName::from_bytes(name.trim().as_bytes())
                    .ok()
                    .map(HashKey::Header)
            } else if let Some(name) = text.strip_prefix("cookie:") {
                let name = name.trim();
                (!name.is_empty() && !name.contains([';', '=', ' ']))
                    .then(|| HashKey::Cookie(name.to_string()))
            } else {
                None
            }
        }
    }
}

fn health(c: &mut Checker, h: &file::HealthSection, path: &str) -> HealthCheck {
    let p = |k: &str| format!("{path}.health.{k}");
    let check_path = match &h.path {
        None => "/".to_string(),
        Some(v) if v.get_ref().starts_with('/') && v.get_ref().parse::<http::Uri>().is_ok() => {
            v.get_ref().clone()
        }
        Some(v) => {
            c.report(
                v.span(),
                p("path"),
                format!("{:?} is not a path", v.get_ref()),
            );
            c.hint("e.g. path = \"/healthz\"");
            "/".to_string()
        }
    };
    let expect = match &h.expect {
        None => (200, 399),
        Some(v) => {
            let text = v.get_ref().trim();
            let (lo, hi) = text.split_once('-').unwrap_or((text, text));
            match (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
                (Ok(lo), Ok(hi)) if (100..600).contains(&lo) && (lo..600).contains(&hi) => (lo, hi),
                _ => {
                    c.report(
                        v.span(),
                        p("expect"),
                        format!("{text:?} is not a status or range of statuses"),
                    );
                    c.hint("e.g. expect = \"200-399\" or \"204\"");
                    (200, 399)
                }
            }
        }
    };
    HealthCheck {
        path: check_path,
        interval: c.duration(&h.interval, &p("interval"), Duration::from_secs(5)),
        timeout: c.duration(&h.timeout, &p("timeout"), Duration::from_secs(2)),
        expect,
        rise: c.count(&h.rise, &p("rise"), 1..101, 2) as u32,
        fall: c.count(&h.fall, &p("fall"), 1..101, 3) as u32,
    }
}

fn rate_limit(
    c: &mut Checker,
    section: &Spanned<file::RateLimitSection>,
    path: &str,
) -> Option<RateLimit> {
    let s = section.get_ref();
    let p = |k: &str| format!("{path}.rate_limit.{k}");
    let rps = match &s.rps {
        None => {
            c.report(section.span(), format!("{path}.rate_limit"), "missing rps");
            c.hint("e.g. rate_limit = { rps = 10, burst = 20 }");
            return None;
        }
        Some(v) if *v.get_ref() > 0.0 && v.get_ref().is_finite() => *v.get_ref(),
        Some(v) => {
            c.report(
                v.span(),
                p("rps"),
                format!("{} is not a positive rate", v.get_ref()),
            );
            c.hint("requests per second, e.g. 10 or 0.5");
            return None;
        }
    };
    let default_burst = rps.ceil().max(1.0) as usize;
    let burst = c.count(&s.burst, &p("burst"), 1..1_000_001, default_burst) as u32;
    let key = match &s.key {
        None => RateKey::ClientIp,
        Some(k) if k.get_ref() == "client-ip" => RateKey::ClientIp,
        Some(k) => match k
            .get_ref()
            .strip_prefix("header:")
            .and_then(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        {
            Some(name) => RateKey::Header(name),
            None => {
                c.report(k.span(), p("key"), format!("unknown key {:?}", k.get_ref()));
                c.hint("use \"client-ip\" (default) or \"header:NAME\"");
                RateKey::ClientIp
            }
        },
    };
    Some(RateLimit { rps, burst, key })
}

fn route(
    c: &mut Checker,
    spanned: &Spanned<file::RouteSection>,
    path: &str,
    id: RouteId,
    upstreams: &BTreeMap<UpstreamName, Upstream>,
    caching: bool,
) -> Option<Route> {
    let s = spanned.get_ref();
    let host = match &s.host {
        None => HostMatch::Any,
        Some(h) => {
            let text = h.get_ref().trim().to_ascii_lowercase();
            if let Some(suffix) = text.strip_prefix("*.") {
                if valid_hostname(suffix) {
                    HostMatch::Wildcard(format!(".{suffix}"))
                } else {
                    c.report(
                        h.span(),
                        format!("{path}.host"),
                        format!("{:?} is not a valid host name", h.get_ref()),
                    );
                    c.hint("use \"example.com\" or \"*.example.com\"");
                    HostMatch::Any
                }
            } else if text == "*" {
                HostMatch::Any
            } else if valid_hostname(&text) {
                HostMatch::Exact(text)
            } else {
                c.report(
                    h.span(),
                    format!("{path}.host"),
                    format!("{:?} is not a valid host name", h.get_ref()),
                );
                c.hint("use \"example.com\" or \"*.example.com\" (no port, no scheme)");
                HostMatch::Any
            }
        }
    };
    let route_path = match &s.path {
        None => "/".to_string(),
        Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#', ' ']) => {
            p.get_ref().clone()
        }
        Some(p) => {
            c.report(
                p.span(),
                format!("{path}.path"),
                format!("{:?} is not a path prefix", p.get_ref()),
            );
            c.hint("path prefixes start with '/' and hold no query, e.g. \"/api/\"");
            "/".to_string()
        }
    };

    let actions = [
        s.upstream.is_some(),
        s.respond.is_some(),
        s.redirect.is_some(),
    ];
    if actions.iter().filter(|&&a| a).count() != 1 {
        c.report(
            spanned.span(),
            path,
            "a route needs exactly one of upstream, respond, redirect",
        );
        c.hint("e.g. upstream = \"app\", or [routes.respond] status = 200, or [routes.redirect] to = \"https://…\"");
        return None;
    }
    let host_header = match &s.host_header {
        None => None,
        Some(h) => match HeaderValue::from_str(h.get_ref()) {
            Ok(v) if !h.get_ref().is_empty() => Some(v),
            _ => {
                c.report(
                    h.span(),
                    format!("{path}.host_header"),
                    format!("{:?} is not a valid Host value", h.get_ref()),
                );
                None
            }
        },
    };
    if s.host_header.is_some() && s.upstream.is_none() {
        if let Some(h) = &s.host_header {
            c.report(
                h.span(),
                format!("{path}.host_header"),
                "host_header only applies to routes with an upstream",
            );
        }
    }

    let action = if let Some(name) = &s.upstream {
        let key = UpstreamName(name.get_ref().clone());
        if !upstreams.contains_key(&key) {
            c.report(
                name.span(),
                format!("{path}.upstream"),
                format!("unknown upstream {:?}", name.get_ref()),
            );
            let defined: Vec<&str> = upstreams.keys().map(|k| k.0.as_str()).collect();
            if defined.is_empty() {
                c.hint("define one with [upstreams.<name>] servers = [\"127.0.0.1:3000\"]");
            } else {
                c.hint(format!("defined are {}", defined.join(", ")));
            }
            return None;
        }
        let cache = route_cache(c, s.cache.as_ref(), path, caching);
        Action::Proxy {
            upstream: key,
            host_header,
            cache,
        }
    } else if let Some(respond) = &s.respond {
        let r = respond.get_ref();
        let status = status(
            c,
            &r.status,
            &format!("{path}.respond.status"),
            StatusCode::OK,
            200..600,
        );
        let mut headers = HeaderMap::new();
        for (name, value) in &r.headers {
            let n = HeaderName::from_bytes(name.get_ref().as_bytes());
            let v = HeaderValue::from_str(value.get_ref());
            match (n, v) {
                (Ok(n), Ok(v)) => {
                    headers.append(n, v);
                }
                (Err(_), _) => c.report(
                    name.span(),
                    format!("{path}.respond.headers"),
                    format!("{:?} is not a valid header name", name.get_ref()),
                ),
                (_, Err(_)) => c.report(
                    value.span(),
                    format!("{path}.respond.headers"),
                    format!("{:?} is not a valid header value", value.get_ref()),
                ),
            }
        }
        Action::Respond {
            status,
            headers,
            body: Bytes::from(r.body.clone().unwrap_or_default()),
        }
    } else if let Some(redirect) = &s.redirect {
        let r = redirect.get_ref();
        let to = match &r.to {
            Some(to)
                if to.get_ref().parse::<http::Uri>().is_ok()
                    && HeaderValue::from_str(to.get_ref()).is_ok() =>
            {
                to.get_ref().clone()
            }
            Some(to) => {
                c.report(
                    to.span(),
                    format!("{path}.redirect.to"),
                    format!("{:?} is not a valid URL", to.get_ref()),
                );
                return None;
            }
            None => {
                c.report(redirect.span(), format!("{path}.redirect"), "missing `to`");
                c.hint("e.g. to = \"https://example.com\"");
                return None;
            }
        };
        let status = status(
            c,
            &r.status,
            &format!("{path}.redirect.status"),
            StatusCode::MOVED_PERMANENTLY,
            300..400,
        );
        Action::Redirect {
            status,
            to,
            keep_path: r.keep_path.unwrap_or(true),
        }
    } else {
        return None;
    };
    let rate_limit = s.rate_limit.as_ref().and_then(|r| rate_limit(c, r, path));
    Some(Route {
        id,
        host,
        path: route_path,
        action,
        rate_limit,
    })
}

fn status(
    c: &mut Checker,
    value: &Option<Spanned<i64>>,
    path: &str,
    default: StatusCode,
    range: Range<i64>,
) -> StatusCode {
    let Some(v) = value else { return default };
    let n = *v.get_ref();
    match u16::try_from(n)
        .ok()
        .and_then(|n| StatusCode::from_u16(n).ok())
    {
        Some(s) if range.contains(&n) => s,
        _ => {
            c.report(v.span(), path, format!("{n} is not a valid status here"));
            c.hint(format!(
                "use a status from {} to {}",
                range.start,
                range.end - 1
            ));
            default
        }
    }
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn cache_settings(c: &mut Checker, s: file::CacheSection) -> CacheSettings {
    let d = CacheSettings::default();
    let memory = c.size(&s.memory, "cache.memory", d.memory);
    let disk = s.disk.as_ref().and_then(|disk| {
        let section = disk.get_ref();
        let Some(path) = &section.path else {
            c.report(disk.span(), "cache.disk", "missing `path`");
            c.hint("e.g. disk = { path = \"/var/cache/torii\", size = \"10GiB\" }");
            return None;
        };
        if path.get_ref().is_empty() {
            c.report(path.span(), "cache.disk.path", "empty path");
            return None;
        }
        let size = c.size(&section.size, "cache.disk.size", 1 << 30);
        Some(DiskSettings {
            path: PathBuf::from(path.get_ref()),
            size,
        })
    });
    let purge_allow = match &s.purge_allow {
        None => d.purge_allow,
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let net = IpNet::parse(v.get_ref().trim());
                if net.is_none() {
                    c.report(
                        v.span(),
                        format!("cache.purge_allow[{i}]"),
                        format!("{:?} is not an address or CIDR range", v.get_ref()),
                    );
                    c.hint("e.g. \"127.0.0.1\", \"10.0.0.0/8\", \"::1\"");
                }
                net
            })
            .collect(),
    };
    let shared = s
        .shared
        .as_ref()
        .and_then(|section| shared_settings(c, section));
    if let (Some(section), 0) = (&s.shared, memory) {
        c.report(
            section.span(),
            "cache.shared",
            "a shared tier needs the memory tier, and cache.memory = \"0\" turns caching off",
        );
        c.hint("give cache.memory a size (e.g. \"256MiB\"), or remove [cache.shared]");
    }
    CacheSettings {
        memory,
        disk,
        purge_allow,
        shared,
    }
}

fn shared_settings(
    c: &mut Checker,
    section: &Spanned<file::SharedSection>,
) -> Option<SharedSettings> {
    let s = section.get_ref();
    let Some(url) = &s.redis else {
        c.report(section.span(), "cache.shared", "missing `redis`");
        c.hint("e.g. redis = \"redis://127.0.0.1:6379\" or \"redis+cluster://10.0.0.1:6379,10.0.0.2:6379\"");
        return None;
    };
    let redis = match RedisTarget::parse(url.get_ref()) {
        Ok(t) => t,
        Err(why) => {
            c.report(url.span(), "cache.shared.redis", why);
            c.hint("redis://host:port[/db], unix:///path.sock, redis+cluster://h1:p1,h2:p2, or comma-separated redis:// URLs");
            return None;
        }
    };
    let d = SharedSettings::new(redis);
    let timeout = c.duration(&s.timeout, "cache.shared.timeout", d.timeout);
    if timeout.is_zero() {
        if let Some(t) = &s.timeout {
            c.report(t.span(), "cache.shared.timeout", "must be more than 0");
            c.hint("e.g. \"100ms\"");
        }
    }
    let prefix = match &s.prefix {
        Some(p) if p.get_ref().is_empty() || p.get_ref().contains(['{', '}']) => {
            c.report(
                p.span(),
                "cache.shared.prefix",
                format!("{:?} cannot be a key prefix", p.get_ref()),
            );
            c.hint("a non-empty name without { or }, e.g. \"torii:\" or \"shop:\"");
            d.prefix.clone()
        }
        Some(p) => p.get_ref().clone(),
        None => d.prefix.clone(),
    };
    Some(SharedSettings {
        timeout,
        max_object_size: c.size(
            &s.max_object_size,
            "cache.shared.max_object_size",
            d.max_object_size,
        ),
        lease: c.duration(&s.lease, "cache.shared.lease", d.lease),
        breaker_failures: c.count(
            &s.breaker_failures,
            "cache.shared.breaker_failures",
            1..1001,
            d.breaker_failures as usize,
        ) as u32,
        breaker_retry: c.duration(
            &s.breaker_retry,
            "cache.shared.breaker_retry",
            d.breaker_retry,
        ),
        prefix,
        redis: d.redis,
    })
}

fn route_cache(
    c: &mut Checker,
    section: Option<&Spanned<file::RouteCacheSection>>,
    path: &str,
    caching: bool,
) -> Option<Arc<CachePolicy>> {
    let d = CachePolicy::default();
    let Some(section) = section else {
        return caching.then(|| Arc::new(d));
    };
    let s = section.get_ref();
    let p = |key: &str| format!("{path}.cache.{key}");
    let opt_duration = |c: &mut Checker, v: &Option<Spanned<String>>, key: &str| {
        v.as_ref().map(|_| c.duration(v, &p(key), Duration::ZERO))
    };
    let mut store = d.store.clone();
    store.default_ttl = opt_duration(c, &s.default_ttl, "default_ttl");
    store.forced_ttl = opt_duration(c, &s.forced_ttl, "forced_ttl");
    store.ignore_no_cache_private = s.ignore_no_cache.unwrap_or(false);
    store.allow_set_cookie = s.allow_set_cookie.unwrap_or(false);
    let mut key = d.key.clone();
    if let Some(k) = &s.key {
        key.include_host = k.host.unwrap_or(true);
        if let Some(q) = &k.query {
            match q.get_ref().as_str() {
                "sorted" => {}
                "as-is" => key.sort_query = false,
                "ignore" => key.include_query = false,
                other => {
                    c.report(
                        q.span(),
                        p("key.query"),
                        format!("unknown query mode {other:?}"),
                    );
                    c.hint("use \"sorted\" (default), \"as-is\" or \"ignore\"");
                }
            }
        }
        key.drop_query_params = k.drop_params.clone().unwrap_or_default();
        for h in k.headers.iter().flatten() {
            match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => key.headers.push(name),
                Err(_) => c.report(
                    h.span(),
                    p("key.headers"),
                    format!("{:?} is not a header name", h.get_ref()),
                ),
            }
        }
        key.cookies = k.cookies.clone().unwrap_or_default();
    }
    let policy = CachePolicy {
        store,
        key,
        max_object_size: c.size(&s.max_object_size, &p("max_object_size"), d.max_object_size),
        range_fill_max: range::range_fill_max(c, s, path, d.range_fill_max),
        grace: c.duration(&s.grace, &p("grace"), d.grace),
        stale_if_error: c.duration(&s.stale_if_error, &p("stale_if_error"), d.stale_if_error),
        keep: c.duration(&s.keep, &p("keep"), d.keep),
        hit_for_miss: c.duration(&s.hit_for_miss, &p("hit_for_miss"), d.hit_for_miss),
        refresh_ahead: s.refresh_ahead.unwrap_or(d.refresh_ahead),
        freshness_id: 0,
    }
    .with_freshness_id();
    (caching && s.enabled.unwrap_or(true)).then(|| Arc::new(policy))
}
