//! The running server: builds the runtime state (`runtime.rs`) from a config, feeds it
//! listeners, swaps in a new generation on reload, drains.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use tokio::sync::Semaphore;

use crate::cache::tier::shared::SharedTier;
use crate::cache::Cache;
use crate::config::{Config, UpstreamName};
use crate::limits::{PerIp, RateLimiter};
use crate::listener::exec::FirstPollInline;
use crate::listener::tls::{Acceptor, Resumption};
use crate::listener::{self, Connections};
use crate::observe::metrics::{route_label, Metrics};
use crate::observe::AccessLog;
use crate::route::Router;
use crate::runtime::{AdminAuth, Runtime, Shared};
use crate::upstream::Group;

// === impl Runtime ===

impl Runtime {
    /// Builds a generation from a validated config, reusing from `previous` every upstream
    /// group whose settings did not change (so their pooled connections survive a reload)
    /// and the access log when its settings did not change.
    ///
    /// TLS listeners keep the session cache and ticket keys of the listener with the same
    /// index in `previous`, so sessions resume across reloads.
    ///
    /// # Errors
    /// When the access log file cannot be opened, or a TLS acceptor cannot be built.
    pub fn build(
        config: Config,
        previous: Option<&Runtime>,
        metrics: &Metrics,
    ) -> std::io::Result<Runtime> {
        let upstreams: HashMap<UpstreamName, Arc<Group>> = config
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                let reused = previous
                    .and_then(|p| p.upstreams.get(name))
                    .filter(|g| g.config == *upstream)
                    .cloned();
                let group = reused.unwrap_or_else(|| {
                    Group::start(name.clone(), upstream.clone(), metrics.group(&name.0))
                });
                (name.clone(), group)
            })
            .collect();
        let access_log = match previous.and_then(|p| p.access_log.clone()) {
            Some(log) if *log.config() == config.log => Some(log),
            _ => AccessLog::start(&config.log)?.map(Arc::new),
        };
        let cache = match previous {
            Some(p)
                if p.config.cache.memory == config.cache.memory
                    && p.config.cache.disk == config.cache.disk
                    && p.config.cache.shared == config.cache.shared =>
            {
                p.cache.clone()
            }
            _ if config.cache.memory == 0 => None,
            _ => {
                let disk = config
                    .cache
                    .disk
                    .as_ref()
                    .map(|d| (d.path.as_path(), d.size));
                let mut cache = Cache::new(config.cache.memory, disk)?;
                if let Some(settings) = &config.cache.shared {
                    let shared = SharedTier::new(settings.clone())
                        .map_err(|e| std::io::Error::other(format!("cache.shared: {e}")))?;
                    cache = cache.with_shared(shared);
                }
                let cache = Arc::new(cache);
                cache.start_purge_listener();
                Some(cache)
            }
        };
        let mut route_metrics = vec![];
        let mut rate_limits = vec![];
        // `limits.rate_limit`: one set of buckets for every route without its own, kept
        // across a reload that leaves it as it was.
        let server_limiter = config.limits.rate_limit.as_ref().map(|limit| {
            previous
                .filter(|p| p.config.limits.rate_limit.as_ref() == Some(limit))
                .and_then(|p| {
                    p.config
                        .routes
                        .iter()
                        .filter(|r| r.rate_limit.is_none())
                        .find_map(|r| p.rate_limits.get(r.id.0)?.clone())
                })
                .unwrap_or_else(|| Arc::new(RateLimiter::new(limit.clone())))
        });
        for route in &config.routes {
            // Routes keep their index as id; the router only reorders its own copy.
            debug_assert_eq!(route.id.0, route_metrics.len());
            let label = route_label(route);
            route_metrics.push(metrics.route(&label));
            // A route with the same label and limit keeps its buckets across a reload.
            let limiter = route.rate_limit.as_ref().map(|limit| {
                previous
                    .and_then(|p| {
                        p.config.routes.iter().find_map(|r| {
                            let kept = p.rate_limits.get(r.id.0)?.as_ref()?;
                            // (Not the buckets `limits.rate_limit` shares.)
                            let own = r.rate_limit.is_some();
                            (own && route_label(r) == label && kept.config == *limit)
                                .then(|| kept.clone())
                        })
                    })
                    .unwrap_or_else(|| Arc::new(RateLimiter::new(limit.clone())))
            });
            rate_limits.push(limiter.or_else(|| server_limiter.clone()));
        }
        let route_groups = config
            .routes
            .iter()
            .map(|route| match &route.action {
                crate::config::model::Action::Proxy { upstream, .. } => {
                    upstreams.get(upstream).cloned()
                }
                _ => None,
            })
            .collect();
        let group_of = |name: &UpstreamName| upstreams.get(name).cloned();
        let auth = config
            .routes
            .iter()
            .map(|route| {
                let settings = route.auth.as_deref()?;
                let metrics = route_metrics[route.id.0].clone();
                Some(Arc::new(crate::auth::Guard::new(
                    settings, &group_of, metrics,
                )))
            })
            .collect();
        let acme = previous.map_or_else(Default::default, |p| p.acme.clone());
        let mut tls = Vec::new();
        for (i, listener) in config.server.listeners.iter().enumerate() {
            let acceptor = match &listener.tls {
                None => None,
                Some(settings) => {
                    // Sessions outlive a reload, unless the client certificates asked for
                    // changed: a session resumed would skip the new CA's verification.
                    let same_clients = previous.is_some_and(|p| {
                        p.config
                            .server
                            .listeners
                            .get(i)
                            .and_then(|l| l.tls.as_ref())
                            .is_some_and(|old| old.client_auth == settings.client_auth)
                    });
                    let kept = previous
                        .filter(|_| same_clients)
                        .and_then(|p| p.tls.get(i).cloned().flatten());
                    let resumption = match kept {
                        Some(old) => old.resumption,
                        None => Resumption::new().map_err(std::io::Error::other)?,
                    };
                    Some(
                        Acceptor::new(settings, resumption, &acme)
                            .map_err(std::io::Error::other)?,
                    )
                }
            };
            tls.push(acceptor);
        }
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(config.limits.max_header_bytes.max(8192))
            .max_headers(config.limits.max_headers)
            .pipeline_flush(true)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(FirstPollInline);
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(config.limits.max_header_bytes as u32)
            .max_concurrent_streams(config.limits.max_streams as u32);
        Ok(Runtime {
            router: Router::new(&config.routes),
            config: Arc::new(config),
            upstreams,
            access_log,
            cache,
            route_metrics,
            route_groups,
            rate_limits,
            auth,
            http1,
            http2,
            tls,
            acme,
        })
    }
}

// === impl Server ===

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

    /// Starts the background task of each `listeners[].tls.acme` (ordering and renewing
    /// its certificate) until the drain starts, sharing orders through `cache.shared` when
    /// configured. Settings changed by a reload take effect after a restart.
    pub fn start_acme(&self) {
        let shared = self.shared();
        let runtime = shared.current();
        for listener in &runtime.config.server.listeners {
            if let Some(settings) = listener.tls.as_ref().and_then(|t| t.acme.clone()) {
                crate::acme::start(
                    settings,
                    runtime.acme.clone(),
                    shared.metrics.clone(),
                    runtime.cache.as_ref().and_then(|c| c.shared().cloned()),
                    shared.drain.subscribe(),
                );
            }
        }
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
    run_server(Server::new(config)?, listeners, admin, shutdown).await
}

/// [`run`] on a server built beforehand: tests keep a clone of it to reach its runtime
/// (the cache's clock, the metrics).
///
/// # Errors
/// When a listener cannot be registered with tokio.
pub async fn run_server(
    server: Server,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let drain_timeout = server.config().server.drain_timeout;
    let mut tasks = Vec::new();
    for (index, l) in listeners.into_iter().enumerate() {
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        let server = server.clone();
        tasks.push(tokio::spawn(async move { server.serve(l, index).await }));
    }
    tokio::spawn(tick_metrics(server.shared().clone()));
    server.start_acme();
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
