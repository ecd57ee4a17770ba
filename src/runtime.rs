//! The runtime state every stage reads: the live config generation (`Runtime`), swapped
//! atomically on reload, and the process-wide handles (`Shared`): connection caps, drain,
//! metrics, admin auth. The stages read them and import nothing above them from here;
//! the server (`server.rs`) builds and wires them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{watch, Notify, Semaphore};

use crate::cache::tier::shared::SharedTier;
use crate::cache::Cache;
use crate::config::{Config, RouteId, UpstreamName};
use crate::limits::{PerIp, RateLimiter};
use crate::listener::tls::{Acceptor, Resumption};
use crate::observe::metrics::{route_label, GroupMetrics, Metrics, RouteMetrics};
use crate::observe::AccessLog;
use crate::route::Router;
use crate::upstream::Group;

/// One config generation and the handles built from it. Requests load the current one when
/// they start and keep it until they end, so a reload never changes a request mid-way.
pub struct Runtime {
    pub config: Arc<Config>,
    pub router: Router,
    pub upstreams: HashMap<UpstreamName, Arc<Group>>,
    pub access_log: Option<Arc<AccessLog>>,
    /// The cache, when `cache.memory` > 0; kept across reloads with the same `[cache]`.
    pub cache: Option<Arc<Cache>>,
    /// Metrics of each route, by `RouteId`, and of each upstream group.
    pub route_metrics: Vec<Arc<RouteMetrics>>,
    /// Each proxy route's upstream group, by `RouteId`: looked up once here, not by name
    /// on every request.
    pub route_groups: Vec<Option<Arc<Group>>>,
    /// Each route's rate limiter, by `RouteId`, when it has `rate_limit`.
    pub rate_limits: Vec<Option<Arc<RateLimiter>>>,
    /// The downstream HTTP/1.1 and HTTP/2 connection builders, configured from `limits`
    /// (a connection's first bytes pick one: see `listener::conn`).
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
    /// The TLS acceptor of each listener, by its index in `server.listeners`; `None` for
    /// plain listeners. Rebuilt on every reload from the certificates read then.
    pub tls: Vec<Option<Acceptor>>,
}

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
                            (route_label(r) == label && kept.config == *limit).then(|| kept.clone())
                        })
                    })
                    .unwrap_or_else(|| Arc::new(RateLimiter::new(limit.clone())))
            });
            rate_limits.push(limiter);
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
        let mut tls = Vec::new();
        for (i, listener) in config.server.listeners.iter().enumerate() {
            let acceptor = match &listener.tls {
                None => None,
                Some(settings) => {
                    let resumption = match previous.and_then(|p| p.tls.get(i).cloned().flatten()) {
                        Some(old) => old.resumption,
                        None => Resumption::new().map_err(std::io::Error::other)?,
                    };
                    Some(Acceptor::new(settings, resumption).map_err(std::io::Error::other)?)
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
        let mut http2 = http2::Builder::new(TokioExecutor::new());
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
            http1,
            http2,
            tls,
        })
    }
}

impl Runtime {
    /// The metrics a request on route `id` is counted under: the route's, and its upstream
    /// group's (for a proxy route).
    pub fn metrics_of(
        &self,
        id: RouteId,
    ) -> (Option<Arc<RouteMetrics>>, Option<Arc<GroupMetrics>>) {
        let route = self.route_metrics.get(id.0).cloned();
        let group = match self.route_groups.get(id.0) {
            Some(Some(group)) => Some(group.metrics.clone()),
            _ => None,
        };
        (route, group)
    }
}

/// Process-wide state, shared by every worker.
pub struct Shared {
    current: ArcSwap<Runtime>,
    /// Open downstream connections over all listeners; sized from the first config.
    pub conn_limit: Arc<Semaphore>,
    /// Open downstream connections per client IP (`limits.max_connections_per_ip`); fixed at
    /// start like `conn_limit`.
    pub per_ip: Arc<PerIp>,
    pub drain: Drain,
    pub metrics: Arc<Metrics>,
    pub admin_auth: AdminAuth,
}

/// Who may use the admin API.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    /// Bearer token (`TORII_ADMIN_TOKEN`); required for state-changing endpoints when set.
    pub token: Option<String>,
    /// Require the token on every endpoint (the admin listener is not on loopback).
    pub everywhere: bool,
}

impl AdminAuth {
    /// From the environment and the admin address.
    pub fn from_env(admin: Option<std::net::SocketAddr>) -> AdminAuth {
        let token = std::env::var("TORII_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        AdminAuth {
            token,
            everywhere: admin.is_some_and(|a| !a.ip().to_canonical().is_loopback()),
        }
    }
}

impl Shared {
    pub fn new(
        runtime: Runtime,
        conn_limit: Arc<Semaphore>,
        per_ip: Arc<PerIp>,
        metrics: Arc<Metrics>,
        admin_auth: AdminAuth,
    ) -> Shared {
        Shared {
            current: ArcSwap::from_pointee(runtime),
            conn_limit,
            per_ip,
            drain: Drain::default(),
            metrics,
            admin_auth,
        }
    }

    /// The current config generation.
    pub fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Makes `runtime` the current generation; requests in flight keep the one they loaded.
    pub fn store(&self, runtime: Runtime) {
        self.current.store(Arc::new(runtime));
    }
}

/// Graceful-shutdown state: a flag every accept loop and connection watches, and a count of
/// open connections so the process knows when draining is done.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
    open: AtomicUsize,
    idle: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
            open: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }
}

impl Drain {
    /// Starts draining: listeners stop accepting, idle connections close, busy ones close
    /// after their current request (hibernated ones: see `listener::Connections`).
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn connection_opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn connection_closed(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open_connections() == 0 {
                return;
            }
            notified.await;
        }
    }
}
