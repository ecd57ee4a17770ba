//! Configuration: TOML text -> `file` (as written) -> `validate` -> `model::Config` (typed).
//!
//! Precedence: CLI flags (for `torii proxy`) > file > defaults. A config is always validated
//! completely before it is used; on reload a bad file leaves the running config in place.

pub mod auth;
pub mod compress;
pub mod env;
mod expand;
pub mod file;
pub mod include;
pub mod model;
pub mod print;
pub mod rules;
pub mod tls;
pub mod units;
pub mod validate;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use compress::{Coding, Compress};
pub use env::Vars;
pub use include::Source;
pub use model::*;

/// One thing wrong with a config, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Byte range in the source text, when known.
    pub span: Option<Range<usize>>,
    /// Key path, e.g. `routes[3].upstream`.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

/// A config that could not be loaded: the files read (the main one first, then what it
/// includes), and every problem found; a problem's span is in the files' shared offset
/// space (`include::Source::base`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.sources, .problems))]
    Invalid {
        sources: Vec<Source>,
        problems: Vec<Problem>,
    },
}

impl Error {
    /// The problems found, empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Read { .. } => &[],
            Error::Invalid { problems, .. } => problems,
        }
    }
}

/// Loads and validates a config from text; `origin` names it in messages (usually the path).
/// Relative certificate paths are read from the current directory; `${VAR}`s come from the
/// process environment.
pub fn load_str(origin: &str, text: &str) -> Result<Config, Error> {
    load_str_in(origin, text, None)
}

/// Like `load_str`, with relative certificate, key and CA paths (and includes) taken from
/// `base`.
pub fn load_str_in(origin: &str, text: &str, base: Option<&Path>) -> Result<Config, Error> {
    load_with(origin, text, base, &Vars::Process)
}

/// Like `load_str_in`, with `${VAR}` values from `vars`.
pub fn load_with(
    origin: &str,
    text: &str,
    base: Option<&Path>,
    vars: &Vars,
) -> Result<Config, Error> {
    load_tree(origin, text, base, None, vars).map(|(config, _)| config)
}

/// Loads, validates, and also returns the merged, substituted values (for `check --print`).
fn load_tree(
    origin: &str,
    text: &str,
    base: Option<&Path>,
    path: Option<&Path>,
    vars: &Vars,
) -> Result<(Config, toml::Table), Error> {
    let include::Tree {
        file,
        table,
        sources,
    } = include::load(origin, text, base, path, vars)
        .map_err(|(sources, problems)| Error::Invalid { sources, problems })?;
    match validate::validate_in(file, base) {
        Ok(config) => Ok((config, table)),
        Err(problems) => Err(Error::Invalid { sources, problems }),
    }
}

/// Reads and validates a config file; relative paths in it (certificates, keys, CA files,
/// includes) are taken from the file's directory; `${VAR}`s come from the environment. The
/// certificate files are read here too, so a reload (SIGHUP) picks up renewed certificates.
pub fn load_file(path: &Path) -> Result<Config, Error> {
    load_file_with(path, &Vars::Process).map(|(config, _)| config)
}

/// `load_file`, also giving the effective config as TOML (after includes and `${VAR}`,
/// secrets redacted) for `torii check --print`.
pub fn load_file_printed(path: &Path) -> Result<(Config, String), Error> {
    load_file_with(path, &Vars::Process).map(|(config, table)| (config, print::render(table)))
}

fn load_file_with(path: &Path, vars: &Vars) -> Result<(Config, toml::Table), Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    load_tree(&path.display().to_string(), &text, base, Some(path), vars)
}

pub(crate) fn parse_hint(message: &str) -> Option<String> {
    if message.contains("unknown field") {
        Some("check the spelling; the README's config reference lists every key".into())
    } else if message.contains("invalid type") {
        Some("sizes and durations are strings, e.g. \"64KiB\", \"5s\"; counts are numbers".into())
    } else {
        None
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

fn render(sources: &[Source], problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let at = p.span.as_ref().map_or_else(
            || include::locate(sources, 0),
            |s| include::locate(sources, s.start),
        );
        out.push_str(&at);
        out.push_str(": ");
        if !p.path.is_empty() {
            out.push_str(&p.path);
            out.push_str(": ");
        }
        out.push_str(&p.message);
        if let Some(hint) = &p.hint {
            out.push_str("; hint: ");
            out.push_str(hint);
        }
    }
    out
}

impl Config {
    /// The config `torii proxy` builds from its flags: one upstream `default` with the `--to`
    /// servers and one route `/` to it. Access log off unless asked for.
    pub fn for_proxy(listen: Vec<std::net::SocketAddr>, to: &[String]) -> Result<Config, String> {
        let mut servers = Vec::new();
        for t in to {
            let addr = validate::parse_server_addr(t).map_err(|why| format!("--to {t}: {why}"))?;
            servers.push(ServerSpec {
                addr,
                weight: 1,
                max_conns: 0,
            });
        }
        if servers.is_empty() {
            return Err("at least one --to URL is needed".into());
        }
        let name = UpstreamName("default".into());
        let upstream = Upstream {
            servers,
            connect_timeout: std::time::Duration::from_secs(5),
            response_timeout: std::time::Duration::from_secs(60),
            pool_max_idle: 256,
            pool_idle_timeout: std::time::Duration::from_secs(90),
            balance: Balance::P2c,
            health: None,
            breaker: BreakerSettings::default(),
            retries: 2,
            retry_budget: 0.2,
            timeout: None,
            queue_size: 1024,
            queue_timeout: std::time::Duration::from_secs(5),
            protocol: UpstreamProtocol::H1,
            tls: UpstreamTls::default(),
            send_proxy_protocol: None,
        };
        Ok(Config {
            server: Server {
                listeners: listen.into_iter().map(Listener::plain).collect(),
                admin: None,
                workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
                runtime: RuntimeKind::ThreadPerCore,
                drain_timeout: std::time::Duration::from_secs(30),
                pid_file: None,
                upgrade_timeout: std::time::Duration::from_secs(30),
                trusted_proxies: Vec::new(),
                log_format: ProcessLogFormat::default(),
            },
            limits: Limits::default(),
            log: Log {
                access: AccessTarget::Off,
                format: LogFormat::Combined,
            },
            cache: CacheSettings::default(),
            upstreams: [(name.clone(), upstream)].into_iter().collect(),
            routes: vec![Route {
                id: RouteId(0),
                host: HostMatch::Any,
                path: "/".into(),
                action: Action::Proxy {
                    upstream: name,
                    host_header: None,
                    cache: Some(Arc::new({
                        let mut policy = CachePolicy::default();
                        policy.vary.identity_upstream = true;
                        policy
                    })),
                    compress: Some(Arc::new(Compress::default())),
                },
                rate_limit: None,
                rules: None,
                access: None,
                auth: None,
                limits: Default::default(),
            }],
            identity: Identity::default(),
        })
    }

    /// One line for `torii check`: what this config defines.
    pub fn summary(&self) -> String {
        let tls = self
            .server
            .listeners
            .iter()
            .filter(|l| l.tls.is_some())
            .count();
        let tls = if tls > 0 {
            format!(" ({tls} TLS)")
        } else {
            String::new()
        };
        format!(
            "{} listener(s){tls}, {} upstream group(s) with {} server(s), {} route(s), {} worker(s) ({})",
            self.server.listeners.len(),
            self.upstreams.len(),
            self.upstreams.values().map(|u| u.servers.len()).sum::<usize>(),
            self.routes.len(),
            self.server.workers,
            self.server.runtime.as_str()
        )
    }
}

#[cfg(test)]
mod tests;
