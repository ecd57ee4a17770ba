//! What one downstream connection is doing (`ConnState`): written by the listener, read by
//! the proxy and observe. A leaf: it uses nothing of torii but the TLS handshake's outcome.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Context;
use std::time::Duration;

use tokio::time::Instant;

use crate::listener::tls::TlsInfo;

/// What a connection is doing, shared between its socket wrapper, its requests and its
/// watchdog. Times are milliseconds since the connection was accepted.
#[derive(Debug)]
pub struct ConnState {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the connection last became idle (or was opened).
    idle_since: AtomicU64,
    /// Bytes arrived since it became idle: a request head is being read.
    reading_head: AtomicBool,
    /// When the first byte of the head being read arrived.
    head_since: AtomicU64,
    /// The listener's index in `server.listeners`.
    pub listener: usize,
    /// The address the client connected to (this end of the connection).
    pub local: Option<std::net::SocketAddr>,
    /// Set once the TLS handshake is done; never set on plain connections.
    tls: OnceLock<TlsInfo>,
    /// Interim (1xx) heads for the HTTP/1.1 request in flight, which hyper takes (torii
    /// patch 11) before it writes the final head; `interim_queued` says whether there are
    /// any, so that a request without them takes no lock. Empty, it allocates nothing.
    interim: Mutex<Vec<http::Response<()>>>,
    interim_queued: AtomicBool,
}

impl ConnState {
    pub(crate) fn new(listener: usize, local: Option<std::net::SocketAddr>) -> ConnState {
        ConnState {
            listener,
            local,
            tls: OnceLock::new(),
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes us a request head right away.
            reading_head: AtomicBool::new(true),
            head_since: AtomicU64::new(0),
            interim: Mutex::new(Vec::new()),
            interim_queued: AtomicBool::new(false),
        }
    }

    /// Queues an interim (1xx) head for the HTTP/1.1 request in flight on this connection:
    /// hyper writes it before the final head. Call it from the request's own future (the
    /// connection's task), which hyper polls before it looks at the queue.
    pub fn relay_interim(&self, head: http::Response<()>) {
        self.interim.lock().expect("poisoned").push(head);
        self.interim_queued.store(true, Ordering::Release);
    }

    /// Notes the TLS handshake's outcome (once; later calls are ignored).
    pub(crate) fn set_tls(&self, info: TlsInfo) {
        let _ = self.tls.set(info);
    }

    /// The TLS handshake's outcome, on a TLS connection.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.get()
    }

    /// `"https"` on a TLS connection, else `"http"`: the downstream scheme.
    pub fn scheme(&self) -> &'static str {
        if self.tls.get().is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A request head was parsed and handed to torii.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.reading_head.store(false, Ordering::Release);
    }

    /// A response body ended (or was dropped).
    pub fn request_finished(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Request bytes arrived (a head starts being read if none was).
    pub(crate) fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.reading_head.load(Ordering::Acquire)
        {
            self.head_since.store(self.now_ms(), Ordering::Release);
            self.reading_head.store(true, Ordering::Release);
        }
    }

    /// Whether request bytes arrived that no request has started from yet (a new
    /// connection counts as reading its first head).
    pub(crate) fn reading_head(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.reading_head.load(Ordering::Acquire)
    }

    /// Since when the connection has been idle between requests (no request in flight, no
    /// head being read), if it is.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 || self.reading_head.load(Ordering::Acquire) {
            return None;
        }
        Some(self.opened + Duration::from_millis(self.idle_since.load(Ordering::Acquire)))
    }

    /// When this connection must be closed if nothing changes, or `None` while busy.
    pub(crate) fn deadline(
        &self,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let (since, limit) = if self.reading_head.load(Ordering::Acquire) {
            (self.head_since.load(Ordering::Acquire), header_timeout)
        } else {
            (self.idle_since.load(Ordering::Acquire), idle_timeout)
        };
        Some(self.opened + Duration::from_millis(since) + limit)
    }
}

/// hyper (torii patch 11) takes the interim heads of an HTTP/1 connection from here.
impl hyper::ext::InformationalSource for ConnState {
    fn next_informational(&self, _cx: &mut Context<'_>) -> Option<http::Response<()>> {
        if !self.interim_queued.load(Ordering::Acquire) {
            return None;
        }
        let mut queue = self.interim.lock().expect("poisoned");
        if queue.is_empty() {
            self.interim_queued.store(false, Ordering::Release);
            // The allocation goes with the last head.
            *queue = Vec::new();
            return None;
        }
        Some(queue.remove(0))
    }
}
