//! Upstream groups: pick a server, send the request over a pooled keep-alive connection.

mod body;

use std::error::Error as StdError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use body::ReqBody;

use crate::config::{ServerAddr, Upstream, UpstreamName};

/// Why an upstream exchange failed. `error::to_response` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 502: the TCP connection was refused, reset or could not be made.
    #[error("connect to {backend} failed")]
    Connect {
        backend: ServerAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// 504: connecting took longer than `connect_timeout`.
    #[error("connect to {backend} timed out")]
    ConnectTimeout { backend: ServerAddr },
    /// 504: no response head within `response_timeout`.
    #[error("{backend} did not answer within {timeout:?}")]
    ResponseTimeout {
        backend: ServerAddr,
        timeout: Duration,
    },
    /// 502: the exchange broke after connecting (reset, bad response, closed early).
    #[error("exchange with {backend} failed")]
    Exchange {
        backend: ServerAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// 502: the upstream answered something torii cannot relay.
    #[error("{backend} sent {what}")]
    Protocol {
        backend: ServerAddr,
        what: &'static str,
    },
}

/// A live upstream group: its servers and its connection pool. The pool is shared by every
/// worker, so a connection opened by one worker is reused by all.
pub struct Group {
    pub name: UpstreamName,
    pub config: Upstream,
    next: AtomicUsize,
    client: Client<HttpConnector, ReqBody>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl Group {
    pub fn new(name: UpstreamName, config: Upstream) -> Group {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.pool_max_idle)
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .set_host(false)
            .build(connector);
        Group {
            name,
            config,
            next: AtomicUsize::new(0),
            client,
        }
    }

    /// Picks the next server, round robin.
    pub fn pick(&self) -> &ServerAddr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.config.servers[n % self.config.servers.len()]
    }

    /// Sends `upstream_req` (whose URI must be absolute, pointing at `backend`) and waits for
    /// the response head, at most `response_timeout`.
    ///
    /// # Errors
    /// `Connect`/`ConnectTimeout` when no connection could be made, `ResponseTimeout` when the
    /// head did not arrive in time, `Exchange` for everything else.
    pub async fn send(
        &self,
        backend: &ServerAddr,
        upstream_req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, Error> {
        let timeout = self.config.response_timeout;
        match tokio::time::timeout(timeout, self.client.request(upstream_req)).await {
            Err(_) => Err(Error::ResponseTimeout {
                backend: backend.clone(),
                timeout,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => {
                if is_timeout(&e) {
                    Err(Error::ConnectTimeout {
                        backend: backend.clone(),
                    })
                } else {
                    Err(Error::Connect {
                        backend: backend.clone(),
                        source: e,
                    })
                }
            }
            Ok(Err(e)) => Err(Error::Exchange {
                backend: backend.clone(),
                source: e,
            }),
        }
    }
}

fn is_timeout(e: &(dyn StdError + 'static)) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err.to_string().contains("timed out") {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Walks an error's causes and joins them, for logs: `a: b: c`.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(err) = cause {
        let text = err.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = err.source();
    }
    out
}
