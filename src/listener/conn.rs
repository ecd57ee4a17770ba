//! One downstream connection: the TLS handshake on TLS listeners, then hyper (HTTP/1.1, or
//! HTTP/2 by ALPN or by preface) over a watched socket, with the header-read and idle
//! keep-alive timeouts enforced from outside hyper.
//!
//! Why not hyper's own `header_read_timeout`: it starts as soon as hyper waits for the next
//! request, so it would also cut idle keep-alive connections; torii keeps the two apart
//! (nginx's `client_header_timeout` and `keepalive_timeout`).
//!
//! A plain HTTP/1 keep-alive connection idle for [`HIBERNATE_AFTER`] is taken apart from
//! hyper and hibernates as its socket alone (`dorm.rs`) until its next request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::coalesce::{Coalesced, Turns};
use super::tls::TlsInfo;
use super::Connections;
use crate::config::ProxyProtocol;
use crate::connection::ConnState;
use crate::limits::IpGuard;
use crate::observe::metrics::Metrics;
use crate::runtime::Shared;

pin_project_lite::pin_project! {
    /// A socket that tells its `ConnState` when request bytes arrive (under TLS: records),
    /// and counts the bytes that cross it.
    pub(super) struct Watched<S> {
        #[pin]
        pub(super) io: S,
        pub(super) state: Arc<ConnState>,
        pub(super) metrics: Arc<Metrics>,
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

/// How long an idle keep-alive HTTP/1 connection keeps hyper's state and its task before it
/// hibernates (see `dorm.rs`): it is then held as its socket alone, out of tokio's IO driver
/// (about 2.6 KiB less each: ~200 bytes left per idle connection), and gets hyper's state
/// and a task again when the next request arrives (which costs that request about as much
/// again as a cache hit). Long enough that a busy connection never pays for that; short
/// enough that idle ones don't hold memory for long. Connections that can hibernate look at
/// their deadlines this soon after they start, then less often while they stay busy.
const HIBERNATE_AFTER: Duration = Duration::from_millis(250);

/// Serves one connection accepted on listener `listener` (its index in
/// `server.listeners`) until the client closes it, a timeout cuts it, or the drain ends it.
/// On a TLS listener the handshake must finish within `limits.header_timeout`.
///
/// The returned future is the connection's task, until it ends or hibernates. It is kept
/// small: what serves requests lives in a box.
pub fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
    connections: Arc<Connections>,
    permit: OwnedSemaphorePermit,
) -> Served {
    let shared = &connections.shared;
    let runtime = shared.current();
    let proxy_protocol = runtime
        .config
        .server
        .listeners
        .get(listener)
        .map_or(ProxyProtocol::Off, |l| l.proxy_protocol);
    if proxy_protocol != ProxyProtocol::Off {
        // The per-IP cap waits for the header's address (`proxied`).
        shared.drain.connection_opened();
        let serving: Serving = Box::pin(proxied(
            stream,
            peer,
            listener,
            proxy_protocol,
            runtime.config.limits.header_timeout,
            shared.clone(),
        ));
        return Served {
            core: Some(Core {
                connections,
                peer,
                _permit: permit,
                _per_ip: None,
            }),
            serving: Some(serving),
        };
    }
    drop(runtime);
    // Over `limits.max_connections_per_ip`: close at once (dropping the stream).
    let Some(per_ip) = shared.per_ip.open(peer.ip()) else {
        return Served {
            core: None,
            serving: None,
        };
    };
    shared.drain.connection_opened();
    let serving = start(stream, peer, listener, shared);
    Served {
        core: Some(Core {
            connections,
            peer,
            _permit: permit,
            _per_ip: per_ip,
        }),
        serving: Some(serving),
    }
}

/// Serving a connection from `peer` (the client, or the PROXY header's source): plain, or
/// TLS on a TLS listener.
fn start(stream: TcpStream, peer: SocketAddr, listener: usize, shared: &Arc<Shared>) -> Serving {
    let state = Arc::new(ConnState::new(listener, stream.local_addr().ok()));
    let watched = Watched {
        io: stream,
        state: state.clone(),
        metrics: shared.metrics.clone(),
    };
    let runtime = shared.current();
    match runtime.tls.get(listener).cloned().flatten() {
        None => Box::pin(drive(watched, peer, state, shared.clone())),
        // Its own box: the TLS stream (rustls' state and buffers) would otherwise size
        // every plain connection's box too.
        Some(tls) => Box::pin(serve_tls(
            watched,
            tls,
            runtime.config.limits.header_timeout,
            peer,
            state,
            shared.clone(),
        )),
    }
}

/// A `proxy_protocol` listener's connection: the PROXY header first (within `timeout`,
/// before any TLS handshake), whose source is the client from then on, for the per-IP cap
/// too; then as any other. No valid header: the connection is closed, nothing read past it.
async fn proxied(
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
    accept: ProxyProtocol,
    timeout: Duration,
    shared: Arc<Shared>,
) -> Option<Idle> {
    let read = super::proxy_protocol::read(&mut stream, accept);
    let refused = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(source)) => Ok(source.unwrap_or(peer)),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(super::proxy_protocol::Refusal::TimedOut),
    };
    let client = match refused {
        Ok(client) => client,
        Err(why) => {
            shared.metrics.proxy_protocol_refused[why.index()].inc();
            tracing::debug!(%peer, "PROXY header refused: {why}");
            return None;
        }
    };
    let per_ip = shared.per_ip.open(client.ip())?;
    let mut idle = start(stream, client, listener, &shared).await?;
    // Hibernated, the connection keeps its client and its place under the per-IP cap.
    idle.client = Some((client, per_ip));
    Some(idle)
}

/// What a connection holds for its whole life, serving or hibernated.
pub(super) struct Core {
    pub(super) connections: Arc<Connections>,
    pub(super) peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    _per_ip: Option<IpGuard>,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.connections.shared.drain.connection_closed();
    }
}

/// Serving a connection: hyper and the watch on it. Ends with the socket when the
/// connection is to hibernate.
type Serving = Pin<Box<dyn Future<Output = Option<Idle>> + Send>>;

/// A connection to hibernate: its socket and when it is to be closed if no request comes.
struct Idle {
    io: Watched<TcpStream>,
    deadline: Instant,
    /// On a `proxy_protocol` listener: the PROXY header's client and its per-IP count.
    client: Option<(SocketAddr, Option<IpGuard>)>,
}

/// A connection's task (see [`serve_connection`]): it ends when the connection does, or
/// hibernates (see `dorm.rs`).
pub struct Served {
    core: Option<Core>,
    serving: Option<Serving>,
}

/// A hibernated connection's next request (or its end): a task to serve it.
pub(super) fn resumed(io: Watched<TcpStream>, core: Core) -> Served {
    Served {
        serving: Some(Box::pin(resume(
            io,
            core.peer,
            core.connections.shared.clone(),
        ))),
        core: Some(core),
    }
}

impl Future for Served {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(serving) = &mut this.serving else {
            return Poll::Ready(());
        };
        let idle = std::task::ready!(serving.as_mut().poll(cx));
        this.serving = None;
        if let (
            Some(Idle {
                io,
                deadline,
                client,
            }),
            Some(mut core),
        ) = (idle, this.core.take())
        {
            if let Some((peer, per_ip)) = client {
                core.peer = peer;
                core._per_ip = per_ip;
            }
            let connections = core.connections.clone();
            connections.dorms.hibernate(io, core, deadline);
        }
        this.core = None;
        Poll::Ready(())
    }
}

/// The TLS handshake (within `timeout`), then hyper over the TLS stream. TLS connections
/// don't hibernate (the TLS state would have to stay anyway).
async fn serve_tls(
    watched: Watched<TcpStream>,
    tls: super::tls::Acceptor,
    timeout: Duration,
    peer: SocketAddr,
    state: Arc<ConnState>,
    shared: Arc<Shared>,
) -> Option<Idle> {
    let stream = match tokio::time::timeout(timeout, tls.acceptor.accept(watched)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_errors.inc();
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            shared.metrics.tls_handshake_errors.inc();
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(crate::acme::ALPN) {
        // A TLS-ALPN-01 validation: the handshake was the answer (RFC 8737 §3); no HTTP.
        tracing::debug!(%peer, "answered an acme-tls/1 challenge handshake");
        return None;
    }
    let info = TlsInfo::of(stream.get_ref().1);
    shared.metrics.tls_handshakes[info.version as usize].inc();
    state.set_tls(info);
    drive(stream, peer, state, shared).await
}

/// A stream torii serves hyper on: whether an idle connection on it can hibernate (be held
/// as the plain socket alone).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether [`Stream::into_plain`] gives the socket back.
    const HIBERNATES: bool;
    fn into_plain(self) -> Option<Watched<TcpStream>>;
}

impl Stream for Watched<TcpStream> {
    const HIBERNATES: bool = true;
    fn into_plain(self) -> Option<Watched<TcpStream>> {
        Some(self)
    }
}

impl Stream for tokio_rustls::server::TlsStream<Watched<TcpStream>> {
    const HIBERNATES: bool = false;
    fn into_plain(self) -> Option<Watched<TcpStream>> {
        None
    }
}

/// The request service of a connection.
macro_rules! service {
    ($peer:expr, $shared:expr, $state:expr) => {{
        let (peer, shared, state) = ($peer, $shared.clone(), $state.clone());
        service_fn(move |req| crate::proxy::handle(req, peer, shared.clone(), state.clone()))
    }};
}

/// The client preface an HTTP/2 connection with prior knowledge starts with (RFC 9113
/// §3.4); a connection that starts otherwise speaks HTTP/1.x.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Runs hyper on `io` with torii's request service, timeouts and drain: HTTP/2 when the
/// first bytes are its preface, else HTTP/1.x. Ends with the socket when an idle HTTP/1
/// connection is to hibernate.
///
/// torii picks the protocol itself rather than through hyper-util's `auto` connection,
/// whose state is sized for its largest variant: every HTTP/1 connection, idle or not,
/// held room for an HTTP/2 one.
async fn drive<I: Stream>(
    io: I,
    peer: SocketAddr,
    state: Arc<ConnState>,
    shared: Arc<Shared>,
) -> Option<Idle> {
    let timeouts = Timeouts::of(&shared.current().config.limits, I::HIBERNATES);
    let mut draining = shared.drain.subscribe();
    let mut timeouts = timeouts;
    let sleep = tokio::time::sleep(timeouts.first());
    tokio::pin!(sleep);

    // Which protocol: the first bytes, read under the header timeout. A drain that starts
    // before them still waits for them: the client connected to ask something (an upgrade's
    // old process drains while its last accepted connections send their first request),
    // and `Watch::run` answers that request before it closes.
    let mut io = io;
    let mut drain_seen = false;
    let sniffed = {
        let sniff = sniff(&mut io);
        tokio::pin!(sniff);
        loop {
            tokio::select! {
                biased;
                sniffed = &mut sniff => break sniffed,
                _ = draining.changed(), if !drain_seen => drain_seen = true,
                _ = sleep.as_mut() => {
                    if let Check::TimedOut = timeouts.check(&state, sleep.as_mut(), false) {
                        tracing::debug!(%peer, "connection timed out");
                        return None;
                    }
                }
            }
        }
    };
    let (head, len) = match sniffed {
        Ok(sniffed) => sniffed,
        Err(e) => {
            tracing::debug!(%peer, "connection ended: {e}");
            return None;
        }
    };
    let watch = Watch {
        peer,
        state: &state,
        timeouts,
        draining,
        answer_first: true,
    };
    let io = Prefixed {
        head,
        at: 0,
        len: len as u8,
        io,
    };
    if head[..len] == H2_PREFACE[..] {
        // HTTP/2 connections don't hibernate: no need to look at them that often.
        // HTTP/2's graceful shutdown (GOAWAY) already tells the client which streams
        // were not served, so it can retry them.
        let watch = Watch {
            timeouts: Timeouts::of(&shared.current().config.limits, false),
            answer_first: false,
            ..watch
        };
        let runtime = shared.current();
        let service = service!(peer, shared, state);
        // Its frames written once per event-loop turn, not once per response (`coalesce`).
        let io = TokioIo::new(Coalesced::new(io));
        let conn = Box::pin(runtime.http2.serve_connection(io, service));
        let conn = Box::pin(Turns(conn));
        drop(runtime);
        watch
            .run(
                conn,
                sleep,
                |c| c.get_mut().0.as_mut().graceful_shutdown(),
                |_| false,
            )
            .await;
        None
    } else {
        serve_h1(io, peer, &state, &shared, watch, sleep).await
    }
}

/// A hibernated connection's next request (or end): hyper again on the socket.
async fn resume(io: Watched<TcpStream>, peer: SocketAddr, shared: Arc<Shared>) -> Option<Idle> {
    let state = io.state.clone();
    let timeouts = Timeouts::of(&shared.current().config.limits, true);
    let watch = Watch {
        peer,
        state: &state,
        timeouts,
        draining: shared.drain.subscribe(),
        answer_first: true,
    };
    let sleep = tokio::time::sleep(timeouts.first());
    tokio::pin!(sleep);
    let io = Prefixed {
        head: [0; 24],
        at: 0,
        len: 0,
        io,
    };
    serve_h1(io, peer, &state, &shared, watch, sleep).await
}

/// HTTP/1 on `io` until the connection ends, or is idle long enough to hibernate: then the
/// socket, taken back from hyper.
async fn serve_h1<I: Stream>(
    io: Prefixed<I>,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    shared: &Arc<Shared>,
    watch: Watch<'_>,
    sleep: Pin<&mut tokio::time::Sleep>,
) -> Option<Idle> {
    let runtime = shared.current();
    let service = service!(peer, shared, state);
    // Boxed, so that the serving future holds a pointer instead of hyper's connection
    // state inline.
    let conn = Box::pin(
        runtime
            .http1
            .serve_connection(TokioIo::new(io), service)
            // Interim (1xx) answers an origin sent, queued by the proxy in `ConnState`.
            .informational(state.clone())
            .with_upgrades(),
    );
    drop(runtime);
    let (conn, deadline) = watch
        .run(
            conn,
            sleep,
            |c| c.graceful_shutdown(),
            |c| I::HIBERNATES && c.is_idle(),
        )
        .await?;
    let parts = Pin::into_inner(conn).into_parts()?;
    let prefixed = parts.io.into_inner();
    if prefixed.at < prefixed.len || !parts.read_buf.is_empty() {
        // Not while hyper is idle: it read all it was sent.
        tracing::debug!(%peer, "unread input at hibernation: connection closed");
        return None;
    }
    Some(Idle {
        io: prefixed.io.into_plain()?,
        deadline,
        client: None,
    })
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
    /// How long until they are looked at next while the connection is busy: from
    /// [`HIBERNATE_AFTER`] (when it can hibernate), doubled at each look that finds it busy,
    /// up to [`Timeouts::tick`].
    every: Duration,
}

/// What a look at a connection's deadlines found.
enum Check {
    Wait,
    TimedOut,
    /// Idle for [`HIBERNATE_AFTER`]: the deadline it will time out at.
    Hibernate(Instant),
}

impl Timeouts {
    fn of(limits: &crate::config::Limits, hibernates: bool) -> Timeouts {
        let tick = Timeouts::tick(limits.header_timeout, limits.idle_timeout);
        Timeouts {
            header: limits.header_timeout,
            idle: limits.idle_timeout,
            every: if hibernates {
                tick.min(HIBERNATE_AFTER)
            } else {
                tick
            },
        }
    }

    /// How often at least the deadlines are looked at.
    fn tick(header: Duration, idle: Duration) -> Duration {
        idle.min(header).max(Duration::from_millis(10))
    }

    /// The first look.
    fn first(&self) -> Duration {
        self.every
    }

    /// Called when `sleep` fires: whether the connection's deadline has passed, or (when
    /// `may_hibernate`) it has been idle long enough to hibernate; if neither, `sleep` is
    /// set to fire again: when it will have been idle for [`HIBERNATE_AFTER`], else at the
    /// deadline or `every` from now, whichever comes first.
    fn check(
        &mut self,
        state: &ConnState,
        sleep: Pin<&mut tokio::time::Sleep>,
        may_hibernate: bool,
    ) -> Check {
        let now = Instant::now();
        let deadline = state.deadline(self.header, self.idle);
        if let Some(deadline) = deadline {
            if deadline <= now {
                return Check::TimedOut;
            }
            if let (true, Some(since)) = (may_hibernate, state.idle_since()) {
                let at = since + HIBERNATE_AFTER;
                if at <= now {
                    return Check::Hibernate(deadline);
                }
                sleep.reset(at.min(deadline));
                return Check::Wait;
            }
        }
        // The state may change while we sleep (a request ends, bytes arrive), so look again
        // at least every `tick`: a timeout fires at most one tick late. A connection found
        // busy time after time is looked at less and less often (spurious wake-ups poll
        // hyper). Busy connections are left to the request and upstream timeouts.
        self.every = (self.every * 2).min(Timeouts::tick(self.header, self.idle));
        let next = now + self.every;
        sleep.reset(deadline.map_or(next, |d| d.min(next)));
        Check::Wait
    }
}

/// What watches a served connection: its timeouts and the drain.
struct Watch<'a> {
    peer: SocketAddr,
    state: &'a ConnState,
    timeouts: Timeouts,
    draining: tokio::sync::watch::Receiver<bool>,
    /// HTTP/1: a request head being read when the drain starts is answered before the
    /// connection closes (see `run`).
    answer_first: bool,
}

impl Watch<'_> {
    /// Runs `conn` to its end, cut by a timeout, or shut down gracefully (`shut_down`)
    /// when the drain starts. Or, once `idle` says it may and it has been idle for
    /// [`HIBERNATE_AFTER`], gives it back (unfinished) with its idle deadline.
    async fn run<C, E>(
        mut self,
        mut conn: Pin<Box<C>>,
        mut sleep: Pin<&mut tokio::time::Sleep>,
        shut_down: impl Fn(Pin<&mut C>),
        idle: impl Fn(&C) -> bool,
    ) -> Option<(Pin<Box<C>>, Instant)>
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let peer = self.peer;
        let state = self.state;
        let answer_first = self.answer_first;
        let mut drain_started = *self.draining.borrow();
        // A connection reading a request head when the drain starts (a new one, or a
        // keep-alive one whose next request is arriving) gets that request answered, then
        // closes: hyper's graceful shutdown would close it at once, dropping the request.
        let mut shut_deferred = false;
        if drain_started {
            if answer_first && state.reading_head() {
                shut_deferred = true;
            } else {
                shut_down(conn.as_mut());
            }
        }
        enum Event<R> {
            Ended(R),
            Drain,
            Timer,
        }
        loop {
            let event = tokio::select! {
                // The connection first: a request that arrived as the idle timer fired is
                // read (and so counts as activity) before the timer is looked at.
                biased;
                result = std::future::poll_fn(|cx| {
                    let polled = conn.as_mut().poll(cx);
                    if polled.is_pending() && shut_deferred && !state.reading_head() {
                        // The request started (or was answered): close after it.
                        shut_deferred = false;
                        shut_down(conn.as_mut());
                        return conn.as_mut().poll(cx);
                    }
                    polled
                }) => Event::Ended(result),
                _ = self.draining.changed(), if !drain_started => Event::Drain,
                _ = sleep.as_mut() => Event::Timer,
            };
            match event {
                Event::Ended(result) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    return None;
                }
                Event::Drain => {
                    drain_started = true;
                    if answer_first && state.reading_head() {
                        shut_deferred = true;
                    } else {
                        shut_down(conn.as_mut());
                    }
                }
                Event::Timer => {
                    let may_hibernate = !drain_started && idle(&conn);
                    match self.timeouts.check(state, sleep.as_mut(), may_hibernate) {
                        Check::Wait => {}
                        Check::TimedOut => {
                            tracing::debug!(%peer, "connection timed out");
                            return None;
                        }
                        Check::Hibernate(deadline) => return Some((conn, deadline)),
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
