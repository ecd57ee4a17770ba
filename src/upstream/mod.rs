//! Upstream groups: pick a server, wait for a free slot, send the request over a pooled
//! keep-alive connection, record the server's health, retry on another server when safe.
//!
//! `balance` chooses among servers in rotation, `backend` holds each server's run-time
//! state, `breaker` is passive health, `health` active checks, `queue` the bounded wait
//! for a connection slot (`max_conns`), `body` the request body sent upstream.

mod backend;
pub mod balance;
mod body;
pub mod breaker;
mod connect;
pub mod h1;
mod health;
mod pool;
pub mod proxy_header;
mod queue;

use std::error::Error as StdError;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use backend::ServerState;
pub use balance::PickContext;
pub use body::{ReqBody, UpstreamBody};

use crate::config::{ServerAddr, Upstream, UpstreamName};
use crate::observe::metrics::GroupMetrics;
use backend::Backend;
use balance::Balancer;
use connect::{BoxError, Connector};

/// Why an upstream exchange failed. `error::to_response` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 502: the TCP connection was refused, reset or could not be made.
    #[error("connect to {backend} failed")]
    Connect {
        backend: ServerAddr,
        #[source]
        source: BoxError,
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
        source: BoxError,
        /// The request went out on a reused keep-alive connection that the server closed
        /// (or reset) without answering: most likely it had closed it as idle just before
        /// (RFC 9112 §9.3.1), and the request may be sent again if it is idempotent.
        stale: bool,
    },
    /// 502: the upstream answered something torii cannot relay.
    #[error("{backend} sent {what}")]
    Protocol {
        backend: ServerAddr,
        what: &'static str,
    },
    /// 503 + `Retry-After`: no server of the group can take the request: every one is
    /// draining or fails its active health checks (ejections alone never get here: see
    /// panic mode in `queue`). `retry_after` is the time until the first ejection ends.
    #[error("no server of upstream {group} is in rotation")]
    Unavailable {
        group: UpstreamName,
        retry_after: Duration,
    },
    /// 503 + `Retry-After: 1`: every server is at `max_conns` and the group's queue is full
    /// (or the request may not wait: `Patience::Never`).
    #[error("upstream {group}: every server at max_conns and the queue is full")]
    QueueFull { group: UpstreamName },
    /// 503 + `Retry-After: 1`: waited `queue_timeout` in the group's queue for a free slot.
    #[error("upstream {group}: no free connection slot after waiting {waited:?}")]
    QueueTimeout {
        group: UpstreamName,
        waited: Duration,
    },
}

impl Error {
    /// Whether the request certainly never reached the server (no connection was made), so
    /// that any request, whatever its method, may be sent again elsewhere.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::ConnectTimeout { .. })
    }

    /// Whether a reused keep-alive connection closed under the request without answering
    /// (the idle-close race); see `Exchange::stale`.
    pub fn stale_connection(&self) -> bool {
        matches!(self, Error::Exchange { stale: true, .. })
    }
}

/// Why an upstream response head can't be framed one way only, if it can't: torii relays
/// a lone `chunked` coding or a `Content-Length`, never both (RFC 9112 §6.3: a sender that
/// does both may be attempting smuggling), and no other transfer coding (torii would have
/// to pass on bytes it can't frame for the client).
pub fn framing_fault(headers: &http::HeaderMap) -> Option<&'static str> {
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    framing_verdict(
        1 + codings.count(),
        is_chunked(first.as_bytes()),
        headers.contains_key(http::header::CONTENT_LENGTH),
    )
}

/// `framing_fault` on what a head's fields say: how many `Transfer-Encoding` fields, whether
/// the first is a lone `chunked`, and whether there is a `Content-Length`.
pub fn framing_verdict(codings: usize, chunked: bool, has_length: bool) -> Option<&'static str> {
    if codings == 0 {
        None
    } else if has_length {
        Some("both Content-Length and Transfer-Encoding")
    } else if codings > 1 || !chunked {
        Some("a Transfer-Encoding other than a single chunked")
    } else {
        None
    }
}

/// Whether a `Transfer-Encoding` value is `chunked` alone.
pub fn is_chunked(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Where a request's interim (1xx) answers go: each head (hop-by-hop fields removed) is
/// handed to the callback as it arrives, before the final answer; without one (`None`)
/// they are skipped. `100 Continue` never is handed on (torii does not forward `Expect`;
/// hyper answers the client's itself). HTTP/1 servers only: an HTTP/2 server's are skipped.
pub type Interim<'a> = Option<&'a (dyn Fn(Response<()>) + Sync)>;

/// How a caller takes a response head from an upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadAs {
    /// As a header map: the caller reads or changes the fields (the cache step, PURGE).
    Map,
    /// Relayed unchanged to an HTTP/1 client, with the caller's lines after the server's
    /// fields: an HTTP/1 server's answer to a GET that has a body and a `Date` comes as
    /// [`hyper::RawFields`] lines ([`Forwarded::raw`]) and an empty header map,
    /// written once from the raw head instead of parsed into names and values that hyper
    /// would only encode again. Any other answer still comes as a map.
    RawLines(RawTail),
}

/// Lines a caller adds after the fields of a head taken as [`HeadAs::RawLines`]
/// (`CRLF`-ended), and the one field name they replace: the server's field of that name is
/// dropped. The upstream client writes them as they are, knowing nothing of their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTail {
    pub lines: &'static [u8],
    pub replaces: &'static str,
}

/// Whether a request may wait in the group's queue for a connection slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// A client waits: in the queue while every server is at `max_conns`.
    Queue,
    /// Background work (a refresh of a stored object): when every server is at
    /// `max_conns` it gives up at once (`QueueFull`) rather than queue ahead of clients.
    Never,
}

/// Whether a field of this name is about one connection only (RFC 9110 §7.6.1), in any
/// case: never relayed to the next hop.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"upgrade",
    ];
    NAMES
        .iter()
        .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
}

/// A response and the server that gave it, from `Group::forward`.
#[derive(Debug)]
pub struct Forwarded {
    pub backend: ServerAddr,
    pub response: Response<UpstreamBody>,
    /// The response's end-to-end fields as raw lines, when asked for
    /// ([`HeadAs::RawLines`]) and given (then the response's map is empty).
    pub raw: Option<hyper::RawFields>,
    /// How many servers were tried (1 without retries).
    pub tries: u32,
}

/// A live upstream group: its servers' state, its balancer, queue and connection pools (one
/// per server, in `Backend`). The pools are shared by every worker, so a connection opened
/// by one worker is reused by all.
/// A reload that leaves a group's config unchanged keeps the same `Group`, with its health
/// state and pooled connections.
pub struct Group {
    pub name: UpstreamName,
    pub config: Upstream,
    backends: Vec<Backend>,
    balancer: Balancer,
    connector: Connector,
    /// Requests waiting for a connection slot.
    queued: AtomicUsize,
    /// Woken when a slot frees up or a server comes back.
    freed: Notify,
    /// Retry tokens in thousandths: each request adds `retry_budget`, each retry takes one.
    budget: AtomicI64,
    pub metrics: Arc<GroupMetrics>,
    requests: AtomicU64,
    retries: AtomicU64,
    queue_full: AtomicU64,
    queue_timeouts: AtomicU64,
    unavailable: AtomicU64,
}

/// Retry tokens a group starts with and never holds more of (in thousandths): lets a
/// quiet group retry a few times even before requests have paid for it.
const BUDGET_RESERVE: i64 = 10_000;

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl Group {
    /// A group without metrics registration or health checker (see `start`).
    pub fn new(name: UpstreamName, config: Upstream) -> Group {
        Group::with_metrics(name, config, Arc::new(GroupMetrics::default()))
    }

    fn with_metrics(name: UpstreamName, config: Upstream, metrics: Arc<GroupMetrics>) -> Group {
        // Fails only if ring lacked the default TLS versions: our invariant, not input.
        let connector = Connector::new(&config).expect("ring supports the default TLS versions");
        Group {
            backends: config
                .servers
                .iter()
                .map(|s| Backend::new(s.clone(), &config))
                .collect(),
            balancer: Balancer::new(config.balance.clone(), config.servers.len()),
            name,
            config,
            connector,
            queued: AtomicUsize::new(0),
            freed: Notify::new(),
            budget: AtomicI64::new(BUDGET_RESERVE),
            metrics,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
        }
    }

    /// Builds a group and, when it has `health` configured and a tokio runtime is current,
    /// starts its health checker (which ends when the group is dropped).
    pub fn start(name: UpstreamName, config: Upstream, metrics: Arc<GroupMetrics>) -> Arc<Group> {
        let group = Arc::new(Group::with_metrics(name, config, metrics));
        if let (Some(check), Ok(rt)) = (
            group.config.health.clone(),
            tokio::runtime::Handle::try_current(),
        ) {
            rt.spawn(health::run(Arc::downgrade(&group), check));
        }
        group
    }

    /// The one door to the upstream: every request that reaches a server of the group, from
    /// any caller (a pass, a cache miss, a revalidation, a background refresh), comes
    /// through here. Sends a request (its head borrowed, the caller keeps it) to a server of
    /// the group and returns the response head, in this order:
    ///
    /// 1. pick a server in rotation by the group's policy (`hash` with the request's key in
    ///    `ctx`); when none is in rotation but some pass their active checks, pick among
    ///    those (panic mode, see `queue`);
    /// 2. take a slot under the server's `max_conns`, or wait in the group's queue (at most
    ///    `queue_size` requests, `queue_timeout` each; `Patience::Never` does not wait);
    /// 3. the try, its response head within `response_timeout`;
    /// 4. on failure, a retry on another server when nothing of the request was sent (a
    ///    connection could not be made) or the method is idempotent and the body is empty,
    ///    within `retries`, the retry budget and the overall `timeout`.
    ///
    /// The URI's path and query are sent to each server tried, in the form its protocol
    /// wants, and `Host` set to the server when the request has none. Every answer feeds
    /// the server's passive health; a 5xx is a failure but is returned, not retried. An
    /// idempotent bodiless request that a reused keep-alive connection closed under (the
    /// server's idle close raced it) is sent once more on a new connection, as neither a
    /// failure of the server nor one of the `retries`.
    ///
    /// # Errors
    /// `Unavailable`, `QueueFull` and `QueueTimeout` (503); the last try's error (502/504)
    /// when every try failed.
    pub async fn forward(
        &self,
        parts: &mut http::request::Parts,
        body: ReqBody,
        ctx: &PickContext,
        head_as: HeadAs,
        patience: Patience,
        interim: Interim<'_>,
    ) -> Result<Forwarded, Error> {
        let deadline = self.config.timeout.map(|t| Instant::now() + t);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let deposit = (self.config.retry_budget * 1000.0) as i64;
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + deposit).min(BUDGET_RESERVE.max(deposit)))
            });
        let replayable = matches!(body, ReqBody::Empty);
        let idempotent = is_idempotent(&parts.method);
        let mut body = Some(body);
        // Without a Host of its own, the request carries each server's authority in turn.
        let has_host = parts.headers.contains_key(header::HOST);
        let mut tried: Vec<usize> = Vec::new();
        // Whether a try already met a keep-alive connection the server had closed.
        let mut met_stale = false;
        loop {
            let slot = self.acquire(ctx, &tried, deadline, patience).await?;
            let index = slot.index;
            let backend = &self.backends[index];
            let addr = &backend.spec.addr;
            let try_body = if replayable {
                ReqBody::Empty
            } else {
                body.take().unwrap_or(ReqBody::Empty)
            };
            if !has_host {
                if let Ok(host) = HeaderValue::from_str(addr.authority.as_str()) {
                    parts.headers.insert(header::HOST, host);
                }
            }
            let result = self
                .send_once(
                    index, parts, try_body, deadline, met_stale, head_as, interim,
                )
                .await;
            drop(slot);
            if let Err(e) = &result {
                if e.stale_connection() && replayable && idempotent && !met_stale {
                    // The server closed an idle connection as torii reused it: not its
                    // failure, and not a retry of the group's (as nginx gives a cached
                    // connection's failure an extra try). Once, on a new connection.
                    met_stale = true;
                    tracing::debug!(group = %self.name, server = %addr, "keep-alive connection closed under the request; sending again on a new one");
                    continue;
                }
            }
            self.record(index, result.as_ref().map(|r| r.response.status()));
            match result {
                Ok(answered) => {
                    return Ok(Forwarded {
                        backend: addr.clone(),
                        response: answered.response,
                        raw: answered.raw,
                        tries: tried.len() as u32 + 1,
                    })
                }
                Err(e) => {
                    tried.push(index);
                    let safe = replayable && (e.nothing_sent() || idempotent);
                    let in_time = deadline.is_none_or(|d| Instant::now() < d);
                    if !safe
                        || !in_time
                        || tried.len() > self.config.retries as usize
                        || !self.take_retry_token()
                    {
                        return Err(e);
                    }
                    tracing::debug!(group = %self.name, server = %addr, "retrying on another server: {}", error_chain(&e));
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    self.metrics.retries.inc();
                }
            }
        }
    }

    fn take_retry_token(&self) -> bool {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
    }

    /// One exchange with server `index` (over a new connection if `fresh`): the response
    /// head within `response_timeout` (and before `deadline`).
    #[allow(clippy::too_many_arguments)]
    async fn send_once(
        &self,
        index: usize,
        head: &http::request::Parts,
        body: ReqBody,
        deadline: Option<Instant>,
        fresh: bool,
        head_as: HeadAs,
        interim: Interim<'_>,
    ) -> Result<pool::Answered, Error> {
        let mut timeout = self.config.response_timeout;
        if let Some(d) = deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        let backend = &self.backends[index];
        let exchange = backend
            .pool
            .send(&self.connector, head, body, fresh, head_as, interim);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::ResponseTimeout {
                backend: backend.spec.addr.clone(),
                timeout,
            }),
        }
    }

    /// One exchange with server `index`, unbounded and unrecorded: for health checks,
    /// which bound and count their own.
    async fn exchange(
        &self,
        index: usize,
        req: Request<ReqBody>,
    ) -> Result<Response<UpstreamBody>, Error> {
        let (head, body) = req.into_parts();
        self.backends[index]
            .pool
            .send(&self.connector, &head, body, false, HeadAs::Map, None)
            .await
            .map(|answered| answered.response)
    }

    /// Feeds one outcome to a server's breaker: errors and 5xx answers are failures.
    fn record(&self, index: usize, outcome: Result<StatusCode, &Error>) {
        let ok = match outcome {
            Ok(status) => !status.is_server_error(),
            Err(_) => false,
        };
        let may_eject = || self.may_eject(index);
        if self.backends[index]
            .record(ok, &self.config.breaker, may_eject)
            .is_some()
        {
            self.metrics.ejections.inc();
        }
    }

    /// Whether the breaker may take server `index` out of rotation: with it, at most
    /// `max_ejection_percent` of the group's servers are out by their breakers. A
    /// one-server group (below 100 %) is never ejected: one bad URL can't take the site
    /// down. Two failures at once may both see room (the count is not locked with the
    /// ejection); the next ejection then waits until one ends.
    fn may_eject(&self, index: usize) -> bool {
        let out = self
            .backends
            .iter()
            .enumerate()
            .filter(|(i, b)| *i != index && b.breaker_out())
            .count();
        (out + 1) * 100 <= self.config.breaker.max_ejection_percent as usize * self.backends.len()
    }

    /// Wakes every queued request: a server came back into rotation.
    fn wake_all(&self) {
        self.freed.notify_waiters();
    }

    /// Takes `server` (its address, `host:port`, or its index) out of rotation (`drain`) or
    /// puts it back. Returns false when the group has no such server.
    pub fn set_draining(&self, server: &str, draining: bool) -> bool {
        let Some(b) = self.find(server) else {
            return false;
        };
        b.draining.store(draining, Ordering::Relaxed);
        if !draining {
            self.wake_all();
        }
        true
    }

    fn find(&self, server: &str) -> Option<&Backend> {
        if let Ok(i) = server.parse::<usize>() {
            return self.backends.get(i);
        }
        self.backends
            .iter()
            .find(|b| b.spec.addr.authority.as_str() == server || b.spec.addr.to_string() == server)
    }

    /// Whether the group is in panic mode now: no server in rotation, but some out by
    /// their breakers only, which then take the requests (see `queue`).
    pub fn in_panic(&self, now: Instant) -> bool {
        let states = || self.backends.iter().map(|b| b.state(now));
        !states().any(|s| s == ServerState::Up) && states().any(|s| s == ServerState::Ejected)
    }

    /// The state of the group and each server, for `GET /upstreams`.
    pub fn snapshot(&self) -> serde_json::Value {
        let now = Instant::now();
        let servers: Vec<_> = self
            .backends
            .iter()
            .map(|b| {
                serde_json::json!({
                    "server": b.spec.addr.authority.as_str(),
                    "url": b.spec.addr.to_string(),
                    "state": b.state(now).as_str(),
                    "weight": b.spec.weight,
                    "max_conns": b.spec.max_conns,
                    "in_flight": b.in_flight.load(Ordering::Relaxed),
                    "requests": b.requests.load(Ordering::Relaxed),
                    "failures": b.failures.load(Ordering::Relaxed),
                    "recent_error_rate": b.recent_error_rate(),
                    "ejections": b.ejections.load(Ordering::Relaxed),
                    "ejected_for_ms": b.ejected_for(now).map(|d| d.as_millis() as u64),
                })
            })
            .collect();
        serde_json::json!({
            "group": self.name.0,
            "balance": self.config.balance.as_str(),
            "queue": {
                "length": self.queued.load(Ordering::Relaxed),
                "size": self.config.queue_size,
                "full": self.queue_full.load(Ordering::Relaxed),
                "timeouts": self.queue_timeouts.load(Ordering::Relaxed),
            },
            "requests": self.requests.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
            "unavailable": self.unavailable.load(Ordering::Relaxed),
            "panic": self.in_panic(now),
            "panic_requests": self.metrics.panic_requests.get(),
            "servers": servers,
        })
    }
}

/// Whether a request with this method may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
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
