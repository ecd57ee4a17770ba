//! `[upstreams.NAME]`: servers, balancing, health checks, retries and pool settings.

use std::net::ToSocketAddrs;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::super::file;
use super::super::model::*;
use super::tls::upstream_protocol;
use super::Checker;

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

pub(super) fn upstream(
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
        send_proxy_protocol: send_proxy_protocol(c, s, path, protocol),
        protocol,
        tls,
    }
}

/// `send_proxy_protocol = "v1" | "v2"`: HTTP/1 groups only (an HTTP/2 connection carries
/// many clients' requests, a PROXY header names one).
fn send_proxy_protocol(
    c: &mut Checker,
    s: &file::UpstreamSection,
    path: &str,
    protocol: UpstreamProtocol,
) -> Option<SendProxyProtocol> {
    let v = s.send_proxy_protocol.as_ref()?;
    let key = format!("{path}.send_proxy_protocol");
    let version = match v.get_ref().trim().to_ascii_lowercase().as_str() {
        "v1" => SendProxyProtocol::V1,
        "v2" => SendProxyProtocol::V2,
        other => {
            c.report(
                v.span(),
                key,
                format!("unknown PROXY protocol version {other:?}"),
            );
            c.hint("use \"v1\" (text) or \"v2\" (binary), as the servers expect");
            return None;
        }
    };
    if protocol.is_h2() {
        c.report(
            v.span(),
            key,
            "a PROXY header names one client, and an HTTP/2 connection carries many",
        );
        c.hint("use send_proxy_protocol with protocol = \"h1\" (the default)");
        return None;
    }
    Some(version)
}

/// One `servers` entry: `"host:port"` or `{ addr = "host:port", weight = 3, max_conns = 100 }`.
pub(super) fn server_spec(
    c: &mut Checker,
    entry: &Spanned<toml::Value>,
    path: &str,
) -> Option<ServerSpec> {
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

pub(super) fn balance(c: &mut Checker, s: &file::UpstreamSection, path: &str) -> Balance {
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

pub(super) fn hash_key(text: &str) -> Option<HashKey> {
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

pub(super) fn health(c: &mut Checker, h: &file::HealthSection, path: &str) -> HealthCheck {
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
