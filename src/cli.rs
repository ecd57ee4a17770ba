//! The command line: the subcommands in shared/DESIGN.md, plus `torii top`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// torii: a caching reverse proxy and load balancer.
#[derive(Debug, Parser)]
#[command(name = "torii", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A one-line reverse proxy, no config file: torii proxy --listen :8080 --to http://127.0.0.1:3000
    Proxy(Box<ProxyArgs>),
    /// Run everything from a config file (default ./torii.toml).
    Run {
        /// The TOML config file.
        #[arg(long, short, default_value = "torii.toml")]
        config: PathBuf,
    },
    /// Validate a config file: prints FILE:LINE:COL: problem; hint: … and exits 1 when wrong.
    Check {
        /// The TOML config file.
        #[arg(long, short, default_value = "torii.toml")]
        config: PathBuf,
        /// Also print the effective config (after includes and ${VAR}) as TOML, secrets
        /// redacted.
        #[arg(long)]
        print: bool,
    },
    /// Print a shell completion script: torii completions bash > /etc/bash_completion.d/torii
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): torii man > /usr/share/man/man1/torii.1
    Man,
    /// Purge cached entries through the admin API: a URL, a path prefix, or a tag.
    Purge(PurgeArgs),
    /// A live terminal view of a running torii (rates, percentiles, hit ratio, routes,
    /// upstreams), refreshed every second; q quits.
    Top {
        /// The admin listener of the torii to watch.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
    /// A self-contained tour: a sample origin with torii in front of it; prints what to try.
    Demo {
        /// Where torii listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin listener (health) listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Address to listen on, e.g. `127.0.0.1:8080`, `[::]:8080` or `:8080`.
    #[arg(long, short, value_parser = parse_listen)]
    pub listen: Vec<SocketAddr>,
    /// Upstream server, e.g. http://127.0.0.1:3000 or 10.0.0.5:8080; repeat for more (round robin).
    #[arg(long, required = true)]
    pub to: Vec<String>,
    /// Admin listener address (health); off unless given.
    #[arg(long, value_parser = parse_listen)]
    pub admin: Option<SocketAddr>,
    /// Worker count (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Worker layout: thread-per-core (default) or work-stealing.
    #[arg(long, value_parser = ["thread-per-core", "work-stealing"])]
    pub runtime: Option<String>,
    /// Access log: off (default), stdout, or a file path.
    #[arg(long)]
    pub access_log: Option<String>,
    /// Access log format: combined (default) or json.
    #[arg(long, value_parser = ["combined", "json"])]
    pub log_format: Option<String>,
    /// Memory cache size, e.g. 256MiB (the default), 1GiB.
    #[arg(long, value_parser = parse_size, conflicts_with = "no_cache")]
    pub cache_memory: Option<u64>,
    /// Disk cache directory (persistent across restarts); off unless given.
    #[arg(long)]
    pub cache_disk: Option<PathBuf>,
    /// Disk cache size bound, e.g. 10GiB (default 1GiB).
    #[arg(long, value_parser = parse_size, requires = "cache_disk")]
    pub cache_disk_size: Option<u64>,
    /// Turn caching off: a plain reverse proxy.
    #[arg(long)]
    pub no_cache: bool,
    /// Serve TLS on every --listen address with this PEM certificate chain (leaf first);
    /// ALPN offers h2 and http/1.1.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also listen on this address with plain HTTP and answer every request with a 308
    /// redirect to https on the (first) --listen port, e.g. --redirect-from :80.
    #[arg(long, value_parser = parse_listen, requires = "tls_cert")]
    pub redirect_from: Option<SocketAddr>,
    /// How to talk to the --to servers: h1 (default), h2 (HTTP/2 over TLS, https:// servers)
    /// or h2c (cleartext HTTP/2, e.g. gRPC).
    #[arg(long, value_parser = ["h1", "h2", "h2c"])]
    pub upstream_protocol: Option<String>,
    /// Verify https:// --to servers against the CA certificates in this PEM file instead of
    /// the system's roots.
    #[arg(long, conflicts_with = "upstream_insecure_skip_verify")]
    pub upstream_ca: Option<PathBuf>,
    /// Accept any certificate from https:// --to servers (self-signed test servers only).
    #[arg(long)]
    pub upstream_insecure_skip_verify: bool,
    /// Shared cache tier and cluster-wide purge on Redis/Valkey: `redis://host:6379`,
    /// `redis+cluster://h1:6379,h2:6379` or comma-separated URLs (a Redis Cluster).
    #[arg(long, conflicts_with = "no_cache")]
    pub redis: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["url", "prefix", "tag"])))]
pub struct PurgeArgs {
    /// The admin listener of the torii to purge.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// A URL to purge, e.g. `http://example.com/page` (every stored variant).
    pub url: Option<String>,
    /// A path prefix (every host), e.g. /static/, or a URL prefix http://host/path.
    #[arg(long)]
    pub prefix: Option<String>,
    /// A tag from Surrogate-Key / Cache-Tag response headers.
    #[arg(long)]
    pub tag: Option<String>,
    /// Mark entries stale (served within grace while revalidating) instead of removing them.
    #[arg(long)]
    pub soft: bool,
}

/// Writes the completion script of `shell` for the whole command line.
///
/// # Errors
/// When `out` cannot be written (a closed pipe is an error, not a panic).
pub fn completions(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    // Generated into memory: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "torii", &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Writes the man page (section 1, roff).
///
/// # Errors
/// When `out` cannot be written.
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    clap_mangen::Man::new(Cli::command()).render(out)
}

fn parse_size(text: &str) -> Result<u64, String> {
    crate::config::units::parse_size(text)
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("{text:?}: bad port"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not IP:port (e.g. 127.0.0.1:8080 or :8080)"))
}
