//! The torii process: worker threads, the admin listener, and signals (SIGHUP reload,
//! SIGTERM drain, SIGINT stop, SIGUSR1 reopen logs) around one `Server`.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, Config, RuntimeKind};
use crate::listener::bind_reuseport;
use crate::server::Server;

/// Where SIGHUP takes the new config from.
pub enum Reload {
    /// Nothing to reload: SIGHUP only logs a line.
    Nothing,
    /// Re-read and validate this file (`torii run`).
    File(PathBuf),
    /// Rebuild the config from the command line (`torii proxy`), which reads the
    /// `--tls-cert`/`--tls-key` files again: renewed certificates without a config file.
    Flags(Box<dyn Fn() -> Result<Config, String> + Send + Sync>),
}

/// Runs torii until SIGTERM (drain, then `Ok`) or SIGINT (exit at once). `config_path` is
/// re-read on SIGHUP; `None` makes SIGHUP a no-op apart from a log line (see `run_with`).
///
/// # Errors
/// When a listener cannot be bound or a runtime cannot start.
pub fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    run_with(config, config_path.map_or(Reload::Nothing, Reload::File))
}

/// `run`, with SIGHUP reloading from `reload`.
///
/// # Errors
/// When a listener cannot be bound or a runtime cannot start.
pub fn run_with(config: Config, reload: Reload) -> anyhow::Result<()> {
    // The control runtime hosts signals, the admin listener and background work such as
    // the disk tier's index scan.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(admin) = config.server.admin {
        let auth = crate::runtime::AdminAuth::from_env(Some(admin));
        if auth.everywhere && auth.token.is_none() {
            anyhow::bail!("the admin listener {admin} is not on loopback: set TORII_ADMIN_TOKEN (every admin request then needs Authorization: Bearer <token>), or bind it to 127.0.0.1");
        }
    }
    let server = {
        let _enter = control.enter();
        Server::new(config.clone()).context("cannot start")?
    };
    let workers = config.server.workers.max(1);
    let mut threads = Vec::new();

    match config.server.runtime {
        RuntimeKind::ThreadPerCore => {
            // Each worker gets its own SO_REUSEPORT socket per address: its own accept queue.
            let mut per_worker: Vec<Vec<std::net::TcpListener>> =
                (0..workers).map(|_| Vec::new()).collect();
            for listener in &config.server.listeners {
                let addr = listener.addr;
                let first = bind_reuseport(addr, 4096)
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let bound = first.local_addr()?;
                per_worker[0].push(first);
                for list in per_worker.iter_mut().skip(1) {
                    list.push(
                        bind_reuseport(bound, 4096)
                            .with_context(|| format!("cannot listen on {bound}"))?,
                    );
                }
                tracing::info!(
                    "listening on {}://{bound} ({workers} worker(s), thread-per-core)",
                    listener.scheme()
                );
            }
            for (i, listeners) in per_worker.into_iter().enumerate() {
                let server = server.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("torii-worker-{i}"))
                        .spawn(move || {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .expect("worker runtime");
                            rt.block_on(serve_all(server, listeners));
                        })?,
                );
            }
        }
        RuntimeKind::WorkStealing => {
            let mut listeners = Vec::new();
            for listener in &config.server.listeners {
                let addr = listener.addr;
                let l = bind_reuseport(addr, 4096)
                    .with_context(|| format!("cannot listen on {addr}"))?;
                tracing::info!(
                    "listening on {}://{} ({workers} worker thread(s), work-stealing)",
                    listener.scheme(),
                    l.local_addr()?
                );
                listeners.push(l);
            }
            let server = server.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("torii-main-rt".into())
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(workers)
                            .thread_name("torii-worker")
                            .enable_all()
                            .build()
                            .expect("worker runtime");
                        rt.block_on(serve_all(server, listeners));
                    })?,
            );
        }
    }

    // The same runtime that was entered for `Server::new`: tasks the server spawned then
    // (the shared tier's purge subscription and cluster connection) run from here on.
    control.block_on(async {
        if let Some(addr) = config.server.admin {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on admin {addr}"))?;
            tracing::info!("admin on http://{addr}");
            tokio::spawn(crate::admin::serve(l, server.shared().clone()));
        }
        tokio::spawn(crate::server::tick_metrics(server.shared().clone()));
        server.start_acme();
        signals(&server, &reload).await
    })?;
    let drain_timeout = server.config().server.drain_timeout;
    let drained = control.block_on(server.wait_drained(drain_timeout));
    if drained {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            "drain timeout ({drain_timeout:?}) reached with {} connection(s) open; exiting",
            server.shared().drain.open_connections()
        );
    }
    Ok(())
}

/// Serves every listener on the current runtime, then waits for this runtime's connections.
/// `listeners[i]` is `server.listeners[i]` of the config.
async fn serve_all(server: Server, listeners: Vec<std::net::TcpListener>) {
    let mut tasks = Vec::new();
    for (index, l) in listeners.into_iter().enumerate() {
        let server = server.clone();
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => tasks.push(tokio::spawn(async move { server.serve(l, index).await })),
            Err(e) => tracing::error!("cannot register listener: {e}"),
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    // Keep this runtime (and its connection tasks) alive until the drain finishes.
    server.shared().drain.wait_idle().await;
}

async fn signals(server: &Server, source: &Reload) -> anyhow::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(server, source),
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: reopening logs");
                server.reopen_logs();
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining ({} connection(s) open)", server.shared().drain.open_connections());
                server.start_drain();
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                std::process::exit(130);
            }
        }
    }
}

fn reload(server: &Server, source: &Reload) {
    let (config, origin) = match source {
        Reload::Nothing => {
            tracing::info!("SIGHUP: no config file to reload");
            return;
        }
        Reload::File(path) => match config::load_file(path) {
            Ok(config) => (config, path.display().to_string()),
            Err(e) => {
                tracing::error!("SIGHUP: {} rejected, old config kept:\n{e}", path.display());
                return;
            }
        },
        Reload::Flags(build) => match build() {
            Ok(config) => (config, "the command line".to_string()),
            Err(e) => {
                tracing::error!("SIGHUP: the command line's config is rejected, old one kept: {e}");
                return;
            }
        },
    };
    let summary = config.summary();
    match server.reload(config) {
        Ok(()) => tracing::info!("SIGHUP: reloaded {origin}: {summary}"),
        Err(e) => tracing::error!("SIGHUP: reload of {origin} failed, old config kept: {e}"),
    }
}
