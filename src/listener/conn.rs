//! One downstream connection: the TLS handshake on TLS listeners, then hyper (HTTP/1.1, or
//! HTTP/2 by ALPN or by preface) over a watched socket, with the header-read and idle
//! keep-alive timeouts enforced from outside hyper.
//!
//! Why not hyper's own `header_read_timeout`: it starts as soon as hyper waits for the next
//! request, so it would also cut idle keep-alive connections; torii keeps the two apart
//! (nginx's `client_header_timeout` and `keepalive_timeout`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::tls::TlsInfo;
use crate::observe::metrics::Metrics;
use crate::server::Shared;

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
    /// Set once the TLS handshake is done; never set on plain connections.
    tls: OnceLock<TlsInfo>,
}

impl ConnState {
    fn new(listener: usize) -> ConnState {
        ConnState {
            listener,
            tls: OnceLock::new(),
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes us a request head right away.
            reading_head: AtomicBool::new(true),
            head_since: AtomicU64::new(0),
        }
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

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.reading_head.load(Ordering::Acquire)
        {
            self.head_since.store(self.now_ms(), Ordering::Release);
            self.reading_head.store(true, Ordering::Release);
        }
    }

    /// When this connection must be closed if nothing changes, or `None` while busy.
    fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
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

pin_project_lite::pin_project! {
    /// A socket that tells its `ConnState` when request bytes arrive (under TLS: records),
    /// and counts the bytes that cross it.
    struct Watched<S> {
        #[pin]
        io: S,
        state: Arc<ConnState>,
        metrics: Arc<Metrics>,
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.state.bytes_read();
            this.metrics.received_bytes.add(read as u64);
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.metrics.sent_bytes.add(*n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            this.metrics.sent_bytes.add(*n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// Serves one connection accepted on listener `listener` (its index in
/// `server.listeners`) until the client closes it, a timeout cuts it, or the drain ends it.
/// On a TLS listener the handshake must finish within `limits.header_timeout`.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
    shared: Arc<Shared>,
) {
    // Over `limits.max_connections_per_ip`: close at once (dropping the stream).
    let Some(_per_ip) = shared.per_ip.open(peer.ip()) else {
        return;
    };
    shared.drain.connection_opened();
    let _closed = scopeguard(|| shared.drain.connection_closed());

    let runtime = shared.current();
    let state = Arc::new(ConnState::new(listener));
    let watched = Watched {
        io: stream,
        state: state.clone(),
        metrics: shared.metrics.clone(),
    };
    match runtime.tls.get(listener).cloned().flatten() {
        None => drive(watched, peer, state, &shared).await,
        // Boxed: the TLS stream (rustls' state and buffers) would otherwise size every
        // connection's task, plain ones included (idle plain connections: ~4 KiB less each).
        Some(tls) => {
            let timeout = runtime.config.limits.header_timeout;
            drop(runtime);
            Box::pin(serve_tls(watched, tls, timeout, peer, state, &shared)).await;
        }
    }
}

/// The TLS handshake (within `timeout`), then hyper over the TLS stream.
async fn serve_tls(
    watched: Watched<TcpStream>,
    tls: super::tls::Acceptor,
    timeout: Duration,
    peer: SocketAddr,
    state: Arc<ConnState>,
    shared: &Arc<Shared>,
) {
    let stream = match tokio::time::timeout(timeout, tls.acceptor.accept(watched)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_errors.inc();
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_errors.inc();
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let info = TlsInfo::of(stream.get_ref().1);
    shared.metrics.tls_handshakes[info.version as usize].inc();
    let _ = state.tls.set(info);
    drive(stream, peer, state, shared).await;
}

/// The client preface an HTTP/2 connection with prior knowledge starts with (RFC 9113
/// §3.4); a connection that starts otherwise speaks HTTP/1.x.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Runs hyper on `io` with torii's request service, timeouts and drain: HTTP/2 when the
/// first bytes are its preface, else HTTP/1.x.
///
/// torii picks the protocol itself rather than through hyper-util's `auto` connection,
/// whose state is sized for its largest variant: every HTTP/1 connection, idle or not,
/// held room for an HTTP/2 one.
async fn drive<I>(io: I, peer: SocketAddr, state: Arc<ConnState>, shared: &Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let runtime = shared.current();
    let timeouts = Timeouts::of(&runtime.config.limits);
    let mut draining = shared.drain.subscribe();
    let sleep = tokio::time::sleep(timeouts.tick);
    tokio::pin!(sleep);

    // Which protocol: the first bytes, read under the header timeout. A drain that starts
    // before them closes the connection (nothing was asked).
    let mut io = io;
    let sniffed = {
        let sniff = sniff(&mut io);
        tokio::pin!(sniff);
        loop {
            tokio::select! {
                biased;
                sniffed = &mut sniff => break sniffed,
                _ = draining.changed() => return,
                _ = sleep.as_mut() => {
                    if timeouts.passed(&state, sleep.as_mut()) {
                        tracing::debug!(%peer, "connection timed out");
                        return;
                    }
                }
            }
        }
    };
    let (head, len) = match sniffed {
        Ok(sniffed) => sniffed,
        Err(e) => {
            tracing::debug!(%peer, "connection ended: {e}");
            return;
        }
    };
    let h2 = head[..len] == H2_PREFACE[..];
    let io = TokioIo::new(Prefixed {
        head,
        at: 0,
        len: len as u8,
        io,
    });
    let service = {
        let shared = shared.clone();
        let state = state.clone();
        service_fn(move |req| crate::proxy::handle(req, peer, shared.clone(), state.clone()))
    };
    let watch = Watch {
        peer,
        state: &state,
        timeouts,
        draining,
    };
    // Boxed, so that this future (the connection's task) holds a pointer instead of
    // hyper's connection state inline: measured ~1.3 KiB less per idle connection.
    if h2 {
        let conn = Box::pin(runtime.http2.serve_connection(io, service));
        drop(runtime);
        watch.run(conn, sleep, |c| c.graceful_shutdown()).await;
    } else {
        let conn = Box::pin(runtime.http1.serve_connection(io, service).with_upgrades());
        drop(runtime);
        watch.run(conn, sleep, |c| c.graceful_shutdown()).await;
    }
}

/// Reads until the bytes read can't start [`H2_PREFACE`] or hold all of it (or the
/// stream ends): the bytes read and how many.
async fn sniff<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<([u8; 24], usize)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 24];
    let mut len = 0;
    while len < head.len() {
        let n = io.read(&mut head[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if head[..len] != H2_PREFACE[..len] {
            break;
        }
    }
    Ok((head, len))
}

/// A connection's timeouts, copied out of `limits`.
#[derive(Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
    /// How often the deadlines are looked at.
    tick: Duration,
}

impl Timeouts {
    fn of(limits: &crate::config::Limits) -> Timeouts {
        Timeouts {
            header: limits.header_timeout,
            idle: limits.idle_timeout,
            tick: limits
                .idle_timeout
                .min(limits.header_timeout)
                .max(Duration::from_millis(10)),
        }
    }

    /// Called when `sleep` fires: whether the connection's deadline has passed; if not,
    /// `sleep` is set to fire again at the deadline or one tick from now.
    fn passed(&self, state: &ConnState, sleep: Pin<&mut tokio::time::Sleep>) -> bool {
        let now = Instant::now();
        match state.deadline(self.header, self.idle) {
            Some(deadline) if deadline <= now => true,
            // The state may change while we sleep (a request ends, bytes arrive), so look
            // again at least every `tick`: a timeout fires at most one tick late. Busy
            // connections are left to the request and upstream timeouts.
            Some(deadline) => {
                sleep.reset(deadline.min(now + self.tick));
                false
            }
            None => {
                sleep.reset(now + self.tick);
                false
            }
        }
    }
}

/// What watches a served connection: its timeouts and the drain.
struct Watch<'a> {
    peer: SocketAddr,
    state: &'a ConnState,
    timeouts: Timeouts,
    draining: tokio::sync::watch::Receiver<bool>,
}

impl Watch<'_> {
    /// Runs `conn` to its end, cut by a timeout, or shut down gracefully (`shut_down`)
    /// when the drain starts.
    async fn run<C, E>(
        mut self,
        mut conn: Pin<Box<C>>,
        mut sleep: Pin<&mut tokio::time::Sleep>,
        shut_down: impl Fn(Pin<&mut C>),
    ) where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let peer = self.peer;
        let mut drain_started = *self.draining.borrow();
        if drain_started {
            shut_down(conn.as_mut());
        }
        loop {
            tokio::select! {
                // The connection first: a request that arrived as the idle timer fired is
                // read (and so counts as activity) before the timer is looked at.
                biased;
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    return;
                }
                _ = self.draining.changed(), if !drain_started => {
                    drain_started = true;
                    shut_down(conn.as_mut());
                }
                _ = sleep.as_mut() => {
                    if self.timeouts.passed(self.state, sleep.as_mut()) {
                        tracing::debug!(%peer, "connection timed out");
                        return;
                    }
                }
            }
        }
    }
}

/// A stream with the bytes [`sniff`] read put back in front of it.
struct Prefixed<S> {
    head: [u8; 24],
    at: u8,
    len: u8,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.len {
            let rest = &this.head[usize::from(this.at)..usize::from(this.len)];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n as u8;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
