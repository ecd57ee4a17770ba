//! One server's keep-alive connections.
//!
//! HTTP/1 (`h1/`): idle connections wait in a stack (`h1::IdleStack`: the most recently
//! idle is reused first, so a surplus left over from a burst ages out). A request takes one that is still
//! open, or opens a new one, and runs the exchange from its own task; the response body
//! puts the connection back when it has been read to its clean end (at once when it came
//! with the head). No task per connection, none per request, no key hashed: the pool is
//! found through the server it belongs to.
//!
//! HTTP/2 (`h2`, `h2c`): one multiplexed hyper connection, its handle cloned for each
//! request and replaced when it closes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{Parts, PathAndQuery};
use http::{Request, Response, Uri};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::connect::{ConnectError, Connector};
use super::h1::{self, Answer, Failure, IdleStack};
use super::{framing_fault, Error, HeadAs, Interim, ReqBody, UpstreamBody};
use crate::config::{ServerAddr, Upstream};

type H2 = http2::SendRequest<ReqBody>;

/// What one exchange brought back: the response, and its end-to-end fields as raw lines
/// when the caller asked for them (`HeadAs::RawLines`) and the head allowed it (then the
/// response's map is empty). Carried beside the response, not in its extensions (an
/// extensions map costs three allocations).
#[derive(Debug)]
pub struct Answered {
    pub response: Response<UpstreamBody>,
    pub raw: Option<hyper::RawFields>,
}

/// The keep-alive connections of one server, shared by every worker.
pub struct Pool {
    addr: ServerAddr,
    h2: bool,
    /// Longest wait for each read of a response body (`response_timeout`).
    stall: Duration,
    /// Idle HTTP/1 connections; shared with the response bodies that put them back.
    idle: Arc<IdleStack>,
    /// `send_proxy_protocol`: every connection starts with a PROXY header (and is not kept).
    send_proxy: Option<crate::config::SendProxyProtocol>,
    /// The shared HTTP/2 connection, if one is open.
    shared: Mutex<Option<H2>>,
    /// Held while an HTTP/2 connection is being opened, so that a burst of requests
    /// arriving to no connection opens one, not one each.
    opening: tokio::sync::Mutex<()>,
    /// Failed attempts to open the HTTP/2 connection: a request that waited for `opening`
    /// while one failed fails too, instead of trying again after it (with a server that
    /// doesn't answer, waiting requests would each add a `connect_timeout`).
    failed_opens: AtomicU64,
    /// Whether the task closing HTTP/1 connections idle past `idle_timeout` runs.
    sweeping: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .field("idle", &self.idle())
            .finish()
    }
}

impl Pool {
    pub fn new(addr: ServerAddr, config: &Upstream) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            h2: config.protocol.is_h2(),
            stall: config.response_timeout,
            // A connection that began with a PROXY header is one client's: never pooled.
            idle: Arc::new(IdleStack::new(
                if config.send_proxy_protocol.is_some() {
                    0
                } else {
                    config.pool_max_idle
                },
                config.pool_idle_timeout,
            )),
            send_proxy: config.send_proxy_protocol,
            shared: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            failed_opens: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        })
    }

    /// The request target to send `pq` to this server with: origin-form (`/path?query`)
    /// over HTTP/1, absolute (scheme and authority of the server) over HTTP/2, where they
    /// become `:scheme` and `:authority`. Allocates nothing: the parts are shared.
    pub fn target(&self, pq: Option<&PathAndQuery>) -> Uri {
        let mut parts = Parts::default();
        parts.path_and_query = Some(
            pq.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        if self.h2 {
            parts.scheme = Some(self.addr.scheme.clone());
            parts.authority = Some(self.addr.authority.clone());
        }
        Uri::from_parts(parts).expect("a path with or without scheme and authority is a URI")
    }

    /// Sends the request `head` with `body` over a pooled connection (unless `fresh`), or a
    /// new one, and returns the response head. The head is borrowed: a caller that may
    /// send the request again (another server, a stale keep-alive connection) keeps it
    /// without a copy. Over HTTP/1 its URI's path and query are sent (origin-form), over
    /// HTTP/2 the server's scheme and authority with them.
    ///
    /// # Errors
    /// `Connect`/`ConnectTimeout` when no connection could be made, `Protocol` for a
    /// response whose framing torii won't relay, `Exchange` for everything else.
    pub async fn send(
        self: &Arc<Pool>,
        connector: &Connector,
        head: &http::request::Parts,
        body: ReqBody,
        fresh: bool,
        head_as: HeadAs,
        interim: Interim<'_>,
    ) -> Result<Answered, Error> {
        if self.h2 {
            let mut req = Request::new(body);
            *req.method_mut() = head.method.clone();
            *req.uri_mut() = self.target(head.uri.path_and_query());
            *req.headers_mut() = head.headers.clone();
            let response = self.send_h2(connector, req).await?;
            Ok(Answered {
                response,
                raw: None,
            })
        } else {
            self.send_h1(connector, head, body, fresh, head_as, interim)
                .await
        }
    }

    async fn send_h1(
        self: &Arc<Pool>,
        connector: &Connector,
        head: &http::request::Parts,
        body: ReqBody,
        fresh: bool,
        head_as: HeadAs,
        interim: Interim<'_>,
    ) -> Result<Answered, Error> {
        let idle = if fresh { None } else { self.idle.take() };
        let reused = idle.is_some();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let preface = self.send_proxy.map(|version| {
                    super::proxy_header::encode(
                        version,
                        head.extensions
                            .get::<super::proxy_header::ProxyAddrs>()
                            .copied(),
                    )
                });
                let stream = self.connect(connector, preface.as_deref()).await?;
                let conn = h1::Conn::new(stream);
                self.start_sweeping();
                conn
            }
        };
        let answer = conn
            .exchange(head, body, head_as, interim)
            .await
            .map_err(|failed| match failed.failure {
                Failure::Framing(what) => Error::Protocol {
                    backend: self.addr.clone(),
                    what,
                },
                failure => Error::Exchange {
                    backend: self.addr.clone(),
                    source: Box::new(failure),
                    stale: reused && failed.unanswered,
                },
            })?;
        Ok(match answer {
            Answer::Response { head, raw, body } => {
                let (parts, ()) = head.into_parts();
                Answered {
                    response: Response::from_parts(parts, body.into_body(&self.idle, self.stall)),
                    raw,
                }
            }
            Answer::Upgraded(head, tunnel) => {
                let (parts, ()) = head.into_parts();
                Answered {
                    response: Response::from_parts(parts, UpstreamBody::Tunnel(Box::new(tunnel))),
                    raw: None,
                }
            }
        })
    }

    async fn send_h2(
        self: &Arc<Pool>,
        connector: &Connector,
        req: Request<ReqBody>,
    ) -> Result<Response<UpstreamBody>, Error> {
        let shared = self
            .shared
            .lock()
            .expect("poisoned")
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned();
        let (mut send, reused) = match shared {
            Some(send) => (send, true),
            None => (self.open_h2(connector).await?, false),
        };
        let resp = match send.try_send_request(req).await {
            Ok(resp) => resp,
            Err(mut e) => match e.take_message() {
                Some(req) if reused => {
                    tracing::debug!(server = %self.addr, "shared h2 connection closed; sending on a new one");
                    self.open_h2(connector)
                        .await?
                        .try_send_request(req)
                        .await
                        .map_err(|e| self.exchange(e.into_error(), false))?
                }
                _ => return Err(self.exchange(e.into_error(), false)),
            },
        };
        // A bad stream does not taint the connection's other streams: it stays.
        match framing_fault(resp.headers()) {
            Some(what) => Err(Error::Protocol {
                backend: self.addr.clone(),
                what,
            }),
            None => Ok(resp.map(UpstreamBody::H2)),
        }
    }

    fn exchange(&self, source: hyper::Error, stale: bool) -> Error {
        Error::Exchange {
            backend: self.addr.clone(),
            source: Box::new(source),
            stale,
        }
    }

    /// Opens the shared HTTP/2 connection, unless another request just did.
    async fn open_h2(&self, connector: &Connector) -> Result<H2, Error> {
        let failed = self.failed_opens.load(Ordering::Relaxed);
        let _opening = self.opening.lock().await;
        if let Some(send) = self.shared.lock().expect("poisoned").as_ref() {
            if !send.is_closed() {
                return Ok(send.clone());
            }
        }
        if self.failed_opens.load(Ordering::Relaxed) != failed {
            return Err(self.connect_failed(
                "opening the shared HTTP/2 connection failed while this request waited".into(),
            ));
        }
        let opened = self.handshake_h2(connector).await;
        if opened.is_err() {
            self.failed_opens.fetch_add(1, Ordering::Relaxed);
        }
        opened
    }

    async fn handshake_h2(&self, connector: &Connector) -> Result<H2, Error> {
        let io = TokioIo::new(self.connect(connector, None).await?);
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Pings find a dead connection between requests.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_concurrent_reset_streams(1024)
            .handshake(io)
            .await
            .map_err(|e| self.connect_failed(e.into()))?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(server = %addr, "upstream h2 connection: {e}");
            }
        });
        *self.shared.lock().expect("poisoned") = Some(send.clone());
        Ok(send)
    }

    async fn connect(
        &self,
        connector: &Connector,
        preface: Option<&[u8]>,
    ) -> Result<super::connect::Stream, Error> {
        connector
            .connect(&self.addr, preface)
            .await
            .map_err(|e| match e {
                ConnectError::Timeout => Error::ConnectTimeout {
                    backend: self.addr.clone(),
                },
                ConnectError::Failed(source) => self.connect_failed(source),
            })
    }

    fn connect_failed(&self, source: super::connect::BoxError) -> Error {
        Error::Connect {
            backend: self.addr.clone(),
            source,
        }
    }

    /// Starts, once, the task that closes idle HTTP/1 connections past `idle_timeout`
    /// when no request comes to find them (checkout drops them too). It ends with the pool.
    fn start_sweeping(self: &Arc<Pool>) {
        if !self.idle.keeps() || self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        let every = (self.idle.idle_timeout() / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.idle.sweep();
            }
        });
    }

    /// Idle HTTP/1 connections.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}
