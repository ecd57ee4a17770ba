//! The runtime state every stage reads: the live config generation (`Runtime`), swapped
//! atomically on reload, and the process-wide handles (`Shared`): connection caps, drain,
//! metrics, admin auth. Types only: the stages read them; the server (`server.rs`) builds
//! them from a config (`Runtime::build`) and wires them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use tokio::sync::{watch, Notify, Semaphore};

use crate::cache::Cache;
use crate::config::{Config, RouteId, UpstreamName};
use crate::limits::{PerIp, RateLimiter};
use crate::listener::exec::FirstPollInline;
use crate::listener::tls::Acceptor;
use crate::observe::metrics::{GroupMetrics, Metrics, RouteMetrics};
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
    /// Each route's auth guard, by `RouteId`, when it has `auth`; built anew on every
    /// reload (empty caches and lockouts, the users file as this generation read it).
    pub auth: Vec<Option<Arc<crate::auth::Guard>>>,
    /// The downstream HTTP/1.1 and HTTP/2 connection builders, configured from `limits`
    /// (a connection's first bytes pick one: see `listener::conn`).
    pub http1: http1::Builder,
    pub http2: http2::Builder<FirstPollInline>,
    /// The TLS acceptor of each listener, by its index in `server.listeners`; `None` for
    /// plain listeners. Rebuilt on every reload from the certificates read then.
    pub tls: Vec<Option<Acceptor>>,
    /// ACME certificates and pending challenges: one for the process, kept across reloads.
    pub acme: Arc<crate::acme::State>,
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
    /// Open connections that hibernate now, kept by the listener's dorms.
    hibernated: Arc<AtomicUsize>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
            open: AtomicUsize::new(0),
            idle: Notify::new(),
            hibernated: Arc::default(),
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

    /// Open connections that hibernate now (idle keep-alive ones held as their socket
    /// alone; counted in `open_connections` too).
    pub fn hibernated_connections(&self) -> usize {
        self.hibernated.load(Ordering::Relaxed)
    }

    /// The gauge the listener's dorms keep `hibernated_connections` in.
    pub(crate) fn hibernated_gauge(&self) -> Arc<AtomicUsize> {
        self.hibernated.clone()
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
