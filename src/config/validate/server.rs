//! `[server]`, `[limits]` and `[log]`: the listener addresses and process settings, the
//! request limits and timeouts, the access log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::super::file;
use super::super::model::*;
use super::Checker;
use toml::Spanned;

pub(super) fn server(c: &mut Checker, s: file::ServerSection, more_listeners: bool) -> Server {
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
    let log_format = match &s.log_format {
        None => ProcessLogFormat::Text,
        Some(v) => ProcessLogFormat::parse(v.get_ref()).unwrap_or_else(|| {
            c.report(
                v.span(),
                "server.log_format",
                format!("unknown log format {:?}", v.get_ref()),
            );
            c.hint("use \"text\" (default) or \"json\" (one object per line)");
            ProcessLogFormat::Text
        }),
    };
    let pid_file = pid_file(c, &s.pid_file);
    let upgrade_timeout = c.duration(
        &s.upgrade_timeout,
        "server.upgrade_timeout",
        Duration::from_secs(30),
    );
    if let (Some(v), true) = (&s.upgrade_timeout, upgrade_timeout.is_zero()) {
        c.report(
            v.span(),
            "server.upgrade_timeout",
            "0 would fail every upgrade",
        );
        c.hint("the new process needs time to start: e.g. \"30s\"");
    }
    Server {
        listeners,
        admin,
        workers,
        runtime,
        drain_timeout,
        pid_file,
        upgrade_timeout,
        trusted_proxies: super::identity::trusted_proxies(c, &s),
        log_format,
    }
}

/// `server.pid_file`: a file path (its directory is checked when torii starts, where it is
/// written: `torii check` may run on another machine).
fn pid_file(c: &mut Checker, v: &Option<Spanned<String>>) -> Option<PathBuf> {
    let v = v.as_ref()?;
    let text = v.get_ref();
    if text.is_empty() || text.ends_with('/') || text.contains('\0') {
        c.report(
            v.span(),
            "server.pid_file",
            format!("{text:?} is not a file path"),
        );
        c.hint("e.g. pid_file = \"/run/torii/torii.pid\"");
        return None;
    }
    Some(PathBuf::from(text))
}

pub(super) fn limits(c: &mut Checker, s: file::LimitsSection) -> Limits {
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
        underscores_in_headers: s
            .underscores_in_headers
            .map_or(d.underscores_in_headers, |v| *v.get_ref()),
        rate_limit: s
            .rate_limit
            .as_ref()
            .and_then(|r| super::route::rate_limit(c, r, "limits")),
    }
}

pub(super) fn log(c: &mut Checker, s: file::LogSection) -> Log {
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
