//! Turns the file as written into a typed `Config`, collecting every problem on the way.
//! One file per section: `server.rs` (`[server]`, `[limits]`, `[log]`), `tls.rs`
//! (`[[listeners]]` and upstream TLS), `upstream.rs`, `route.rs`, `cache.rs`; here the
//! `Checker` they report to, and `validate`, which runs them in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::file::FileConfig;
use super::model::*;
use super::units::{parse_duration, parse_size};
use super::Problem;

mod acme;
mod auth;
mod cache;
mod cache_rfc;

/// `[defaults]`, checked once: what every route starts from.
struct Defaults {
    headers: rules::HeaderTables,
    compress: compress::Base,
}

mod compress;
mod identity;
mod range;
mod redis_tls;
mod route;
mod rules;
mod server;
mod tls;
mod upstream;

pub use upstream::parse_server_addr;

use cache::cache_settings;
use route::route;
use server::{limits, log, server};
use tls::listener;
use upstream::upstream;

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
    let identity = rules::identity(
        &mut c,
        server_section.trust_request_id.as_ref(),
        file.tracing.as_ref(),
    );
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
        acme::needs_plain_listener(&mut c, &file.listeners, &server.listeners);
    }
    let limits = limits(&mut c, file.limits.unwrap_or_default());
    let log = log(&mut c, file.log.unwrap_or_default());
    let targeted_fields = cache_rfc::targeted_fields(&mut c, file.cache.as_ref());
    let cache = cache_settings(&mut c, file.cache.unwrap_or_default(), base);

    let mut upstreams = BTreeMap::new();
    for (name, section) in &file.upstreams {
        let path = format!("upstreams.{}", name.get_ref());
        // Kept even when invalid, so routes naming it don't add a second, misleading error.
        let upstream = upstream(&mut c, section, &path, name.span(), base);
        upstreams.insert(UpstreamName(name.get_ref().clone()), upstream);
    }

    let defaults = Defaults {
        headers: rules::headers(
            &mut c,
            file.defaults.as_ref().and_then(|d| d.headers.as_ref()),
            "defaults",
        ),
        compress: compress::defaults(
            &mut c,
            file.defaults.as_ref().and_then(|d| d.compress.as_ref()),
        ),
    };
    let default_auth = file
        .defaults
        .as_ref()
        .and_then(|d| auth::route_auth(&mut c, d.auth.as_ref(), "defaults.auth", &upstreams, base));
    let mut routes = Vec::new();
    for (index, section) in file.routes.iter().enumerate() {
        let path = format!("routes[{index}]");
        if let Some(mut route) = route(
            &mut c,
            section,
            &path,
            RouteId(index),
            &upstreams,
            cache.memory > 0,
            &defaults,
        ) {
            route.auth = match section.get_ref().auth.as_ref() {
                None => default_auth.clone(),
                own => auth::route_auth(&mut c, own, &format!("{path}.auth"), &upstreams, base),
            };
            routes.push(route);
        }
    }
    cache_rfc::apply_targeted_fields(&mut routes, targeted_fields);
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
            identity,
        })
    } else {
        Err(c.problems)
    }
}
