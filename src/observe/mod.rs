//! Observe: what happened to each exchange, recorded when its response body ends.

pub mod access_log;
pub mod histogram;
pub mod metrics;
pub mod process_log;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, Version};
use tokio::time::Instant;

pub use access_log::AccessLog;

use crate::cache::status::CacheStatus;
use crate::config::{RouteId, ServerAddr};
use crate::connection::ConnState;
use metrics::{cache_outcome, GroupMetrics, RouteMetrics, CACHE_OUTCOMES};

/// One request/response exchange, carried by the response body and recorded when the body
/// is finished or dropped (so bytes and duration include the whole body).
#[derive(Debug)]
pub struct Exchange {
    pub conn: Arc<ConnState>,
    pub log: Option<Arc<AccessLog>>,
    pub record: Record,
    /// Where the exchange is counted when it ends.
    route: Option<Arc<RouteMetrics>>,
    group: Option<Arc<GroupMetrics>>,
    outcome: usize,
}

/// The fields of an access-log line.
#[derive(Debug, Default)]
pub struct Record {
    pub start: Option<Instant>,
    pub time: Option<SystemTime>,
    pub client: Option<SocketAddr>,
    pub method: Method,
    pub target: String,
    pub version: Version,
    pub status: StatusCode,
    pub bytes: u64,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    pub upstream: Option<ServerAddr>,
    pub upstream_time: Option<Duration>,
    /// Why torii answered by itself with an error, for the log.
    pub error: Option<String>,
    /// False when the response body was cut short (upstream died, client left).
    pub complete: bool,
    /// The route that served the request, if any matched.
    pub route: Option<RouteId>,
    /// The downstream TLS version; `None` on plain HTTP.
    pub tls: Option<crate::config::TlsVersion>,
    /// What the cache step decided (`None`: not a proxied request).
    pub cache: Option<CacheStatus>,
    /// `X-Request-Id` and the W3C trace id, for the log (set only when it is on).
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

impl Record {
    /// The downstream scheme: `https` on TLS connections.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

impl Exchange {
    /// Starts an exchange on `conn`: counts it in flight until dropped.
    pub fn start(conn: Arc<ConnState>, log: Option<Arc<AccessLog>>, record: Record) -> Exchange {
        conn.request_started();
        Exchange {
            conn,
            log,
            record,
            route: None,
            group: None,
            outcome: CACHE_OUTCOMES.len() - 1,
        }
    }

    /// Notes the metrics of the route and upstream group, and the cache outcome, to count
    /// this exchange under; nothing is counted when no route matched.
    pub fn observe(&mut self, route: Option<Arc<RouteMetrics>>, group: Option<Arc<GroupMetrics>>) {
        if self.record.route.is_none() {
            return;
        }
        self.route = route;
        self.group = group;
        self.outcome = cache_outcome(self.record.cache);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.conn.request_finished();
        if let Some(route) = &self.route {
            let elapsed = self.record.start.map_or(Duration::ZERO, |s| s.elapsed());
            route.record(self.record.status, self.outcome, elapsed);
        }
        if let (Some(group), Some(t)) = (&self.group, self.record.upstream_time) {
            group.response.record(t);
        }
        if let Some(log) = &self.log {
            log.write(&self.record);
        }
    }
}
