//! The torii binary: parse the command line, load the config, run.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use torii::cli::{Cli, Command, ProxyArgs, PurgeArgs};
use torii::config::{self, AccessTarget, Action, Config, DiskSettings, LogFormat, RuntimeKind};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` sets up its log once its config (and so `server.log_format`) is read.
    if !matches!(cli.command, Command::Run { .. }) {
        torii::observe::process_log::init(None);
    }
    match cli.command {
        Command::Check { config, print } => match check(&config, print) {
            Ok((c, printed)) => {
                for warning in expiry_warnings(&c, std::time::SystemTime::now()) {
                    eprintln!("{}: warning: {warning}", config.display());
                }
                let ok = format!("{}: ok: {}", config.display(), c.summary());
                match printed {
                    // stdout holds only the TOML, so it can be saved and checked again.
                    Some(printed) => {
                        use std::io::Write as _;
                        let mut stdout = std::io::stdout();
                        if let Err(e) = stdout
                            .write_all(printed.as_bytes())
                            .and_then(|()| stdout.flush())
                        {
                            eprintln!("torii check: cannot print: {e}");
                            return ExitCode::FAILURE;
                        }
                        eprintln!("{ok}");
                    }
                    None => println!("{ok}"),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => match config::load_file(&path) {
            Ok(c) => {
                torii::observe::process_log::init(Some(c.server.log_format));
                finish(torii::process::run(c, Some(path)))
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Proxy(args) => match proxy_config(*args.clone()) {
            Ok(c) => {
                // SIGHUP builds the config again from the same flags: renewed --tls-cert
                // and --tls-key files are read then.
                let reload =
                    torii::process::Reload::Flags(Box::new(move || proxy_config(*args.clone())));
                finish(torii::process::run_with(c, reload))
            }
            Err(e) => {
                eprintln!("torii proxy: {e}");
                ExitCode::from(2)
            }
        },
        Command::Completions { shell } => {
            match torii::cli::completions(shell, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("torii completions: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Man => match torii::cli::man(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("torii man: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo { listen, admin } => finish(demo(listen, admin)),
        Command::Purge(args) => purge(args),
        Command::Top { admin } => match torii::top::run(&admin) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("torii top: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `torii check`: the config, and with `--print` the effective config as TOML.
fn check(path: &std::path::Path, print: bool) -> Result<(Config, Option<String>), config::Error> {
    if print {
        config::load_file_printed(path).map(|(c, text)| (c, Some(text)))
    } else {
        config::load_file(path).map(|c| (c, None))
    }
}

/// Certificates that expire within 30 days: still valid (so `check` passes), but due.
fn expiry_warnings(config: &Config, now: std::time::SystemTime) -> Vec<String> {
    const SOON: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
    let mut warnings = Vec::new();
    for (i, listener) in config.server.listeners.iter().enumerate() {
        let Some(tls) = &listener.tls else { continue };
        for cert in tls.default_cert.iter().chain(&tls.certs) {
            let left = cert.not_after.duration_since(now).unwrap_or_default();
            if left < SOON {
                warnings.push(format!(
                    "listeners[{i}]: {} expires in {} day(s); renew it, then SIGHUP reloads it",
                    cert.cert_path.display(),
                    left.as_secs() / 86_400
                ));
            }
        }
    }
    warnings
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
        cache_memory,
        cache_disk,
        cache_disk_size,
        no_cache,
        tls_cert,
        tls_key,
        redirect_from,
        upstream_protocol,
        upstream_ca,
        upstream_insecure_skip_verify,
        redis,
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
    if let Some(memory) = cache_memory {
        config.cache.memory = memory;
    }
    if let Some(path) = cache_disk {
        config.cache.disk = Some(DiskSettings {
            path,
            size: cache_disk_size.unwrap_or(1 << 30),
        });
    }
    if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
        let cert = config::tls::load_cert(cert, key, None, std::time::SystemTime::now())
            .map_err(|p| format!("--tls-{}: {}; hint: {}", p.key, p.message, p.hint))?;
        let tls = std::sync::Arc::new(config::Tls {
            default_cert: Some(cert),
            certs: Vec::new(),
            min_version: config::TlsVersion::Tls12,
            client_auth: None,
            acme: None,
        });
        for listener in &mut config.server.listeners {
            listener.tls = Some(tls.clone());
        }
        if let Some(addr) = redirect_from {
            let port = config.server.listeners[0].addr.port();
            config.server.listeners.push(config::Listener {
                addr,
                tls: None,
                redirect_https: Some(port),
                proxy_protocol: config::ProxyProtocol::Off,
            });
        }
    }
    for upstream in config.upstreams.values_mut() {
        let https = |s: &config::ServerSpec| s.addr.scheme == http::uri::Scheme::HTTPS;
        upstream.protocol = match upstream_protocol.as_deref() {
            Some("h2") if upstream.servers.iter().all(https) => config::UpstreamProtocol::H2,
            Some("h2") => return Err(
                "--upstream-protocol h2 needs https:// --to servers; use h2c for cleartext HTTP/2"
                    .into(),
            ),
            Some("h2c") if !upstream.servers.iter().any(https) => config::UpstreamProtocol::H2c,
            Some("h2c") => {
                return Err(
                    "--upstream-protocol h2c needs http:// --to servers; use h2 over TLS".into(),
                )
            }
            _ => config::UpstreamProtocol::H1,
        };
        if let Some(path) = &upstream_ca {
            let certs = config::tls::load_ca(path).map_err(|e| format!("--upstream-ca: {e}"))?;
            upstream.tls.ca = Some(config::CaBundle {
                path: path.clone(),
                certs,
            });
        }
        upstream.tls.insecure_skip_verify = upstream_insecure_skip_verify;
    }
    if let Some(url) = redis {
        if config.cache.memory == 0 {
            return Err("--redis needs the memory tier; --cache-memory 0 turns caching off".into());
        }
        let target = config::RedisTarget::parse(&url).map_err(|why| format!("--redis: {why}"))?;
        config.cache.shared = Some(config::SharedSettings::new(target));
    }
    if no_cache {
        config.cache.memory = 0;
        config.cache.disk = None;
        for route in &mut config.routes {
            if let Action::Proxy { cache, .. } = &mut route.action {
                *cache = None;
            }
        }
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

/// `torii purge`: one POST to the admin API; prints its JSON answer.
fn purge(args: PurgeArgs) -> ExitCode {
    let PurgeArgs {
        admin,
        url,
        prefix,
        tag,
        soft,
    } = args;
    let body = match (url, prefix, tag) {
        (Some(url), _, _) => serde_json::json!({ "url": url, "soft": soft }),
        (_, Some(prefix), _) => serde_json::json!({ "prefix": prefix, "soft": soft }),
        (_, _, Some(tag)) => serde_json::json!({ "tag": tag, "soft": soft }),
        _ => unreachable!("clap requires one of url, --prefix, --tag"),
    };
    let admin = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("torii purge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        use http_body_util::{BodyExt, Full};
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<bytes::Bytes>>();
        let req = http::Request::post(format!("http://{admin}/purge"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| format!("no answer from {admin} within 10 s"))?
            .map_err(|e| format!("cannot reach the admin listener at {admin}: {e}"))?;
        let status = resp.status();
        let text = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&text).into_owned()))
    });
    match result {
        Ok((status, text)) if status.is_success() => {
            print!("{text}");
            // A shared tier that was unreachable: the purge reached only that node.
            if let Some(warning) = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["warning"].as_str().map(str::to_string))
            {
                eprintln!("torii purge: warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Ok((status, text)) => {
            eprint!("torii purge: {status}: {text}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("torii purge: {e}");
            ExitCode::FAILURE
        }
    }
}
