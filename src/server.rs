//! The running server: builds the runtime state (`runtime.rs`) from a config, feeds it
//! listeners, swaps in a new generation on reload, drains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::limits::PerIp;
use crate::listener::{self, Connections};
use crate::observe::metrics::Metrics;
use crate::runtime::{AdminAuth, Runtime, Shared};

/// A torii server: build it from a config, feed it listeners, reload it, drain it.
#[derive(Clone)]
pub struct Server {
    connections: Arc<Connections>,
}

impl Server {
    /// # Errors
    /// When the access log cannot be opened.
    pub fn new(config: Config) -> std::io::Result<Server> {
        let conn_limit = Arc::new(Semaphore::new(config.limits.max_connections));
        let per_ip = Arc::new(PerIp::new(config.limits.max_connections_per_ip));
        let metrics = Arc::new(Metrics::default());
        let admin_auth = AdminAuth::from_env(config.server.admin);
        let runtime = Runtime::build(config, None, &metrics)?;
        let shared = Shared::new(runtime, conn_limit, per_ip, metrics, admin_auth);
        Ok(Server {
            connections: Connections::new(Arc::new(shared)),
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.connections.shared
    }

    pub fn config(&self) -> Arc<Config> {
        self.shared().current().config.clone()
    }

    /// Swaps in a new, already validated config. Requests in flight finish on the old one.
    /// Listener addresses and `limits.max_connections` are fixed at start; a change to them
    /// is logged and needs a restart (meanwhile each listener takes the new settings of
    /// the one with its address, else keeps its old ones).
    ///
    /// # Errors
    /// When the new access log cannot be opened; the old config then keeps serving.
    pub fn reload(&self, mut config: Config) -> std::io::Result<()> {
        let old = self.shared().current();
        if config.server.listen_addrs() != old.config.server.listen_addrs()
            || config.server.admin != old.config.server.admin
        {
            tracing::warn!("reload: listener addresses changed; they take effect after a restart");
        }
        if config.server.listen_addrs() != old.config.server.listen_addrs() {
            // The open sockets keep their place in the old list: give each the new
            // settings (certificates, redirect) of the listener with its address, or keep
            // its old ones, so a TLS socket never turns plain by a shifted index.
            config.server.listeners = old
                .config
                .server
                .listeners
                .iter()
                .map(|was| {
                    config
                        .server
                        .listeners
                        .iter()
                        .find(|l| l.addr == was.addr)
                        .unwrap_or(was)
                        .clone()
                })
                .collect();
        }
        if config.limits.max_connections != old.config.limits.max_connections
            || config.limits.max_connections_per_ip != old.config.limits.max_connections_per_ip
        {
            tracing::warn!(
                "reload: limits.max_connections(_per_ip) changed; it takes effect after a restart"
            );
        }
        let runtime = Runtime::build(config, Some(&old), &self.shared().metrics)?;
        self.shared().store(runtime);
        Ok(())
    }

    /// Reopens the access log file (SIGUSR1).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.shared().current().access_log {
            log.reopen();
        }
    }

    /// Accepts and serves connections on `listener` until the drain starts. `index` is the
    /// listener's place in `server.listeners` of the config: it says whether the listener
    /// terminates TLS or redirects to https (an index beyond them is plain HTTP).
    pub async fn serve(&self, listener: tokio::net::TcpListener, index: usize) {
        listener::serve(listener, index, self.connections.clone()).await;
    }

    /// Stops accepting and asks every connection to close after its current request.
    pub fn start_drain(&self) {
        self.connections.start_drain();
    }

    /// Waits until every connection has closed, at most `timeout`. Returns whether all did.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.shared().drain.wait_idle())
            .await
            .is_ok()
    }
}

/// Runs torii on already-bound listeners (and an optional admin listener) in the current
/// tokio runtime until `shutdown`. `listeners[i]` serves as `config.server.listeners[i]`
/// (TLS, redirect), whatever address it is bound to; extra ones serve plain HTTP.
/// completes, then drains (bounded by `server.drain_timeout`). Tests use this; the binary
/// adds workers and signals around the same parts.
///
/// # Errors
/// When a listener cannot be registered with tokio or the access log cannot be opened.
pub async fn run(
    config: Config,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let drain_timeout = config.server.drain_timeout;
    let server = Server::new(config)?;
    let mut tasks = Vec::new();
    for (index, l) in listeners.into_iter().enumerate() {
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        let server = server.clone();
        tasks.push(tokio::spawn(async move { server.serve(l, index).await }));
    }
    tokio::spawn(tick_metrics(server.shared().clone()));
    if let Some(admin) = admin {
        admin.set_nonblocking(true)?;
        let admin = tokio::net::TcpListener::from_std(admin)?;
        tokio::spawn(crate::admin::serve(admin, server.shared().clone()));
    }
    shutdown.await;
    server.start_drain();
    for t in tasks {
        let _ = t.await;
    }
    server.wait_drained(drain_timeout).await;
    Ok(())
}

/// Marks a metrics window boundary every second until the drain starts (for the
/// sliding-window figures in `/stats.json`).
pub async fn tick_metrics(shared: Arc<Shared>) {
    let mut draining = shared.drain.subscribe();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interval.tick() => shared.metrics.tick(),
            _ = draining.changed() => return,
        }
    }
}
