//! Observe: what happened to each exchange, recorded when its response body ends.

pub mod access_log;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, Version};
use tokio::time::Instant;

pub use access_log::AccessLog;

use crate::config::ServerAddr;
use crate::listener::ConnState;

/// One request/response exchange, carried by the response body and recorded when the body
/// is finished or dropped (so bytes and duration include the whole body).
#[derive(Debug)]
pub struct Exchange {
    pub conn: Arc<ConnState>,
    pub log: Option<Arc<AccessLog>>,
    pub record: Record,
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
}

impl Exchange {
    /// Starts an exchange on `conn`: counts it in flight until dropped.
    pub fn start(conn: Arc<ConnState>, log: Option<Arc<AccessLog>>, record: Record) -> Exchange {
        conn.request_started();
        Exchange { conn, log, record }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.conn.request_finished();
        if let Some(log) = &self.log {
            log.write(&self.record);
        }
    }
}
