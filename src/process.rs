//! The torii process: worker threads, the admin listener, and signals (SIGHUP reload,
//! SIGTERM drain, SIGINT stop, SIGUSR1 reopen logs, SIGUSR2 binary upgrade) around one
//! `Server`; the pid file and systemd notifications (`src/lifecycle/`).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::{self, Config, RuntimeKind};
use crate::lifecycle::handover::{self, Inherited, Outcome, Pending, Role};
use crate::lifecycle::notify::{self, Notifier};
use crate::lifecycle::owner;
use crate::lifecycle::pidfile::PidFile;
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
/// Also: SIGUSR2 upgrades the binary (`lifecycle/handover.rs`); the process started by
/// one (`TORII_UPGRADE_FROM` set) adopts the old one's sockets. Every listen address is
/// bound with one owner (`lifecycle/owner.rs`). Once every listener accepts, the pid file
/// (`server.pid_file`) is written and systemd told `READY=1`.
///
/// # Errors
/// When a listener cannot be bound (an address another process owns included), the pid
/// file cannot be written, or a runtime cannot start.
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
    // Installed first: a signal during the start waits for the loop instead of killing.
    let signals = {
        let _enter = control.enter();
        Signals::new()?
    };
    let mut inherited = Inherited::receive().context("upgrade")?;
    let bound = bind(&config, inherited.as_mut())?;
    if let Some(inherited) = &inherited {
        for addr in inherited.left() {
            tracing::info!("upgrade: {addr} is no longer in the config; not listening there");
        }
    }
    let pid_file = match &config.server.pid_file {
        Some(path) => Some(
            PidFile::prepare(path)
                .with_context(|| format!("server.pid_file: cannot write {}", path.display()))?,
        ),
        None => None,
    };
    let life = Life {
        exe: own_path(),
        args: std::env::args_os().skip(1).collect(),
        handover: std::sync::Mutex::new(bound.handover),
        notifier: Notifier::from_env(),
        pid_file,
    };
    let result = serve(
        config,
        reload,
        control,
        signals,
        bound.groups,
        bound.admin,
        inherited,
        &life,
    );
    if let Some(pid_file) = &life.pid_file {
        pid_file.remove();
    }
    result
}

/// The sockets of every listener, bound or adopted.
struct Bound {
    /// Per worker thread (or the one work-stealing runtime): (listener index, socket).
    groups: Vec<Vec<(usize, std::net::TcpListener)>>,
    admin: Option<std::net::TcpListener>,
    /// Duplicates of every socket, for a later upgrade to hand over.
    handover: Vec<(Role, OwnedFd)>,
}

const BACKLOG: i32 = 4096;

/// Binds every listener of `config`, taking over the sockets `inherited` holds for an
/// address instead of binding it. Each worker gets its own SO_REUSEPORT socket per address
/// (its own accept queue); inherited ones beyond the worker count are shared out.
fn bind(config: &Config, mut inherited: Option<&mut Inherited>) -> anyhow::Result<Bound> {
    let workers = config.server.workers.max(1);
    let (count, layout) = match config.server.runtime {
        RuntimeKind::ThreadPerCore => (workers, "thread-per-core"),
        RuntimeKind::WorkStealing => (1, "work-stealing"),
    };
    let mut groups: Vec<Vec<_>> = (0..count).map(|_| Vec::new()).collect();
    let mut handover = Vec::new();
    for (index, listener) in config.server.listeners.iter().enumerate() {
        let addr = listener.addr;
        let mut sockets = match inherited.as_deref_mut() {
            Some(inherited) => inherited.take(Role::Proxy, addr),
            None => Vec::new(),
        };
        let adopted = sockets.len();
        if sockets.is_empty() {
            sockets.push(owner::bind_owned(addr, BACKLOG, true).context("cannot listen")?);
        }
        let bound = sockets[0].local_addr()?;
        while sockets.len() < count {
            sockets.push(
                bind_reuseport(bound, BACKLOG)
                    .with_context(|| format!("cannot listen on {bound}"))?,
            );
        }
        for (i, socket) in sockets.into_iter().enumerate() {
            handover.push((Role::Proxy, OwnedFd::from(socket.try_clone()?)));
            groups[i % count].push((index, socket));
        }
        let from = if adopted > 0 {
            format!(", {adopted} socket(s) taken over")
        } else {
            String::new()
        };
        tracing::info!(
            "listening on {}://{bound} ({workers} worker(s), {layout}{from})",
            listener.scheme()
        );
    }
    let admin = match config.server.admin {
        Some(addr) => {
            let taken = inherited.and_then(|i| i.take(Role::Admin, addr).pop());
            let socket = match taken {
                Some(socket) => socket,
                None => owner::bind_owned(addr, 1024, false).context("cannot listen on admin")?,
            };
            handover.push((Role::Admin, OwnedFd::from(socket.try_clone()?)));
            Some(socket)
        }
        None => None,
    };
    Ok(Bound {
        groups,
        admin,
        handover,
    })
}

/// What the process needs beyond the server: to upgrade, tell systemd, keep its pid file.
struct Life {
    /// This binary's path (`own_path`).
    exe: std::io::Result<PathBuf>,
    args: Vec<std::ffi::OsString>,
    /// Duplicates of every listening socket, for an upgrade. Closed when the drain starts:
    /// a socket left open would keep completing handshakes nobody accepts. (A std `Mutex`:
    /// only the signal loop takes it, never across an await.)
    handover: std::sync::Mutex<Vec<(Role, OwnedFd)>>,
    notifier: Notifier,
    pid_file: Option<PidFile>,
}

impl Life {
    fn close_handover(&self) {
        self.handover
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[allow(clippy::too_many_arguments)]
fn serve(
    config: Config,
    reload: Reload,
    control: tokio::runtime::Runtime,
    signals: Signals,
    groups: Vec<Vec<(usize, std::net::TcpListener)>>,
    admin: Option<std::net::TcpListener>,
    inherited: Option<Inherited>,
    life: &Life,
) -> anyhow::Result<()> {
    let server = {
        let _enter = control.enter();
        Server::new(config.clone()).context("cannot start")?
    };
    let workers = config.server.workers.max(1);
    let mut readiness = Vec::new();
    for (i, listeners) in groups.into_iter().enumerate() {
        let server = server.clone();
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        readiness.push(is_ready);
        let builder = std::thread::Builder::new();
        match config.server.runtime {
            RuntimeKind::ThreadPerCore => {
                builder.name(format!("torii-worker-{i}")).spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("worker runtime");
                    rt.block_on(serve_all(server, listeners, ready));
                })?
            }
            RuntimeKind::WorkStealing => builder.name("torii-main-rt".into()).spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("torii-worker")
                    .enable_all()
                    .build()
                    .expect("worker runtime");
                rt.block_on(serve_all(server, listeners, ready));
            })?,
        };
    }

    // The same runtime that was entered for `Server::new`: tasks the server spawned then
    // (the shared tier's purge subscription and cluster connection) run from here on.
    let stop = control.block_on(async {
        if let Some(admin) = admin {
            let addr = admin.local_addr()?;
            let l = tokio::net::TcpListener::from_std(admin)
                .with_context(|| format!("cannot listen on admin {addr}"))?;
            tracing::info!("admin on http://{addr}");
            tokio::spawn(crate::admin::serve(l, server.shared().clone()));
        }
        tokio::spawn(crate::server::tick_metrics(server.shared().clone()));
        for is_ready in readiness {
            match is_ready.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("cannot register listener: {e}"),
                Err(_) => anyhow::bail!("a worker thread ended before it was ready"),
            }
        }
        // Every listener accepts: say so.
        if let Some(pid_file) = &life.pid_file {
            if let Err(e) = pid_file.commit() {
                tracing::error!(
                    "server.pid_file: cannot write {}: {e}",
                    pid_file.path().display()
                );
            }
        }
        let upgraded = inherited.is_some();
        life.notifier.ready(upgraded.then(std::process::id));
        if let Some(inherited) = inherited {
            let from = inherited.from;
            match inherited.ready() {
                Ok(()) => {
                    tracing::info!("upgrade: ready; process {from} stops accepting and drains")
                }
                Err(e) => {
                    tracing::warn!("upgrade: cannot tell process {from} this one is ready: {e}")
                }
            }
        }
        let watchdog = notify::watchdog_interval()
            .filter(|_| life.notifier.is_enabled())
            .map(|every| tokio::spawn(watchdog(life.notifier.clone(), every)));
        server.start_acme();
        let stop = signals.run(&server, &reload, life).await;
        if let (Ok(Stop::Upgraded(_)), Some(watchdog)) = (&stop, watchdog) {
            // The new process pings systemd now; the old one must not mask its silence.
            watchdog.abort();
        }
        stop
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
    if let Stop::Upgraded(pid) = stop {
        tracing::info!("upgrade: process {pid} serves from here on");
    }
    Ok(())
}

/// Serves every listener on the current runtime, then waits for this runtime's connections.
/// `listeners` pairs each socket with its index in `server.listeners` of the config.
/// `ready` gets the outcome of registering them, before any connection is served.
async fn serve_all(
    server: Server,
    listeners: Vec<(usize, std::net::TcpListener)>,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let mut registered = Vec::new();
    for (index, l) in listeners {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => registered.push((index, l)),
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        }
    }
    let mut tasks = Vec::new();
    for (index, l) in registered {
        let server = server.clone();
        tasks.push(tokio::spawn(async move { server.serve(l, index).await }));
    }
    let _ = ready.send(Ok(()));
    for t in tasks {
        let _ = t.await;
    }
    // Keep this runtime (and its connection tasks) alive until the drain finishes.
    server.shared().drain.wait_idle().await;
}

/// `WATCHDOG=1` every `every` (half of `WATCHDOG_USEC`), from the control runtime.
async fn watchdog(notifier: Notifier, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        notifier.watchdog();
    }
}

/// Why the signal loop ended.
enum Stop {
    /// SIGTERM: drain, then exit.
    Drain,
    /// An upgrade's new process (this PID) is ready: drain, then exit.
    Upgraded(u32),
}

enum Event {
    Hup,
    Usr1,
    Usr2,
    Term,
    Int,
    Upgrade(Outcome),
}

/// The signals torii handles, installed before the start so that none kills it meanwhile.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    async fn run(mut self, server: &Server, source: &Reload, life: &Life) -> anyhow::Result<Stop> {
        let mut pending: Option<(Pending, tokio::time::Instant, Duration)> = None;
        loop {
            let event = tokio::select! {
                _ = self.hup.recv() => Event::Hup,
                _ = self.usr1.recv() => Event::Usr1,
                _ = self.usr2.recv() => Event::Usr2,
                _ = self.term.recv() => Event::Term,
                _ = self.int.recv() => Event::Int,
                outcome = wait_upgrade(&mut pending) => Event::Upgrade(outcome),
            };
            match event {
                Event::Hup => {
                    life.notifier.reloading();
                    reload(server, source);
                    life.notifier.ready(None);
                }
                Event::Usr1 => {
                    tracing::info!("SIGUSR1: reopening logs");
                    server.reopen_logs();
                }
                Event::Usr2 => match &pending {
                    Some((p, _, _)) => tracing::warn!(
                        "SIGUSR2 refused: an upgrade is in progress (new process {})",
                        p.pid
                    ),
                    None => match upgrade(life) {
                        Ok(p) => {
                            tracing::info!(
                                "SIGUSR2: upgrade: started new process {} ({}); waiting until it is ready",
                                p.pid,
                                life.exe.as_ref().map_or(String::new(), |e| e.display().to_string())
                            );
                            let timeout = server.config().server.upgrade_timeout;
                            let deadline = tokio::time::Instant::now() + timeout;
                            pending = Some((p, deadline, timeout));
                        }
                        Err(e) => tracing::error!("SIGUSR2: upgrade failed: {e}; still serving"),
                    },
                },
                Event::Upgrade(Outcome::Ready(pid)) => {
                    tracing::info!(
                        "upgrade: new process {pid} is ready; draining ({} connection(s) open)",
                        server.shared().drain.open_connections()
                    );
                    server.start_drain();
                    life.close_handover();
                    // Any further SIGUSR2 is for the new process.
                    tokio::spawn(refuse_upgrades(self.usr2, pid));
                    return Ok(Stop::Upgraded(pid));
                }
                Event::Upgrade(Outcome::Failed(why)) => {
                    tracing::error!("upgrade failed: {why}; still serving");
                    life.notifier
                        .status(&format!("serving; upgrade failed: {why}"));
                    pending = None;
                }
                Event::Term => {
                    if let Some((p, _, _)) = pending.take() {
                        tracing::warn!("SIGTERM during an upgrade: stopping new process {}", p.pid);
                        p.cancel();
                    }
                    tracing::info!(
                        "SIGTERM: draining ({} connection(s) open)",
                        server.shared().drain.open_connections()
                    );
                    life.notifier.stopping();
                    server.start_drain();
                    life.close_handover();
                    return Ok(Stop::Drain);
                }
                Event::Int => {
                    tracing::info!("SIGINT: stopping now");
                    if let Some(pid_file) = &life.pid_file {
                        pid_file.remove();
                    }
                    std::process::exit(130);
                }
            }
        }
    }
}

async fn wait_upgrade(pending: &mut Option<(Pending, tokio::time::Instant, Duration)>) -> Outcome {
    match pending {
        Some((p, deadline, timeout)) => p.wait(*deadline, *timeout).await,
        None => std::future::pending().await,
    }
}

/// While the old process drains after an upgrade, SIGUSR2 is logged and refused.
async fn refuse_upgrades(mut usr2: Signal, new: u32) {
    while usr2.recv().await.is_some() {
        tracing::warn!("SIGUSR2 refused: draining after an upgrade; process {new} serves now");
    }
}

/// The path this binary was started as, to start again on SIGUSR2: `argv[0]` when it names
/// a path (made absolute: the working directory may change), as nginx does, so that a
/// symlink switched to a new release starts the new one; else (found on `PATH`) the file
/// /proc/self/exe names now. Read at the start: once the file is replaced, /proc/self/exe
/// names the old, deleted one.
fn own_path() -> std::io::Result<PathBuf> {
    match std::env::args_os().next().map(PathBuf::from) {
        Some(argv0) if argv0.components().count() > 1 => std::path::absolute(argv0),
        _ => std::env::current_exe(),
    }
}

/// Starts the new process of an upgrade with every listening socket.
fn upgrade(life: &Life) -> Result<Pending, String> {
    let exe = life
        .exe
        .as_ref()
        .map_err(|e| format!("cannot tell this binary's path: {e}"))?;
    let sockets = life.handover.lock().unwrap_or_else(|e| e.into_inner());
    handover::spawn(exe, &life.args, &sockets)
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
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
