//! The torii binary: parse the command line, load the config, run.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use torii::cli::{Cli, Command, ProxyArgs};
use torii::config::{self, AccessTarget, Config, LogFormat, RuntimeKind};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TORII_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load_file(&config) {
            Ok(c) => {
                println!("{}: ok: {}", config.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => match config::load_file(&path) {
            Ok(c) => finish(torii::process::run(c, Some(path))),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Proxy(args) => match proxy_config(args) {
            Ok(c) => finish(torii::process::run(c, None)),
            Err(e) => {
                eprintln!("torii proxy: {e}");
                ExitCode::from(2)
            }
        },
        Command::Demo { listen, admin } => finish(demo(listen, admin)),
    }
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torii: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn proxy_config(args: ProxyArgs) -> Result<Config, String> {
    let ProxyArgs {
        listen,
        to,
        admin,
        workers,
        runtime,
        access_log,
        log_format,
    } = args;
    let listen = if listen.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
    } else {
        listen
    };
    let mut config = Config::for_proxy(listen, &to)?;
    config.server.admin = admin;
    if let Some(w) = workers {
        if w == 0 || w > 1024 {
            return Err(format!("--workers {w}: use 1 to 1024"));
        }
        config.server.workers = w;
    }
    if runtime.as_deref() == Some("work-stealing") {
        config.server.runtime = RuntimeKind::WorkStealing;
    }
    config.log.access = match access_log.as_deref() {
        None | Some("off") => AccessTarget::Off,
        Some("stdout") | Some("-") => AccessTarget::Stdout,
        Some(path) => AccessTarget::File(path.into()),
    };
    if log_format.as_deref() == Some("json") {
        config.log.format = LogFormat::Json;
    }
    Ok(config)
}

fn demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let origin = torii::demo::start_origin(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let mut config = Config::for_proxy(vec![listen], &[format!("http://{origin}")])
        .map_err(anyhow::Error::msg)?;
    config.server.admin = Some(admin);
    config.log.access = AccessTarget::Stdout;
    println!(
        "torii demo: a sample origin on http://{origin}, torii in front of it on http://{listen}"
    );
    println!();
    println!("  curl -i http://{listen}/hello        # proxied; note Via: 1.1 torii");
    println!("  curl -i http://{listen}/cached       # Cache-Control: public, max-age=30");
    println!("  curl -i http://{listen}/slow         # a slow origin endpoint (2 s)");
    println!(
        "  curl -i http://{listen}/headers      # what the origin saw: X-Forwarded-For, Via, ..."
    );
    println!("  curl --http2-prior-knowledge -i http://{listen}/hello   # h2c");
    println!("  curl -i http://{admin}/healthz       # the admin listener");
    println!();
    println!("Access log below; Ctrl-C stops.");
    torii::process::run(config, None)
}
