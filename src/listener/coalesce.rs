//! Write coalescing for downstream HTTP/2 connections: the responses of one event-loop turn
//! go out in one write instead of one write each.
//!
//! The `h2` crate keeps a DATA frame of 256 bytes or more out of its write buffer (to write
//! it without a copy) and so writes, and flushes, its buffer before it takes the next frame:
//! ten concurrent 1 KiB hits on a connection cost ten `writev`s (h2load, 100 connections ×
//! 10 streams: 1.00 write per response). [`Coalesced`] sits between hyper and the socket
//! (or TLS stream) of an HTTP/2 connection:
//! - a write under [`SMALL`] bytes is copied into its buffer (up to [`LIMIT`] bytes) and
//!   reported written; a larger one goes to the socket with what is buffered in front of it,
//!   in one vectored write, without a copy (a 1 MiB body is not copied again);
//! - a flush with bytes buffered in this turn (this poll of the connection's task, counted
//!   by [`Turns`]) is deferred: it wakes the task once and returns, so frames queued later
//!   in the same turn join the buffer. The buffer goes out at the first read or flush of a
//!   later turn (the task polled again: `h2` reads before it writes), at a larger write,
//!   or at shutdown — never later than the task's next poll. Reads within the turn leave
//!   it: `h2` reads between the streams it hands out, and hyper polls each stream's task
//!   inline (`listener::exec`), so a turn's responses are queued between reads.
//!
//! So `h2` still sees every write and flush done, and the peer still gets every byte; only
//! when they reach the socket changes. Backpressure is kept: when the buffer is full, a
//! write waits for the socket.

use std::cell::Cell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes smaller than this are copied into the buffer; larger ones go to the socket.
pub const SMALL: usize = 4 * 1024;
/// The most bytes buffered; a write that would go past it sends the buffer first.
pub const LIMIT: usize = 16 * 1024;

/// Threads that have counted turns: each counts in a range of its own, so a task moved
/// to another thread (the work-stealing runtime) never finds its old turn's number there.
static THREADS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The turn being polled on this thread ([`Turns`]), counted from this thread's base.
    static TURN: Cell<u64> = Cell::new(THREADS.fetch_add(1, Ordering::Relaxed) << 40);
}

/// Starts a new turn: the task of a connection is being polled again.
pub fn next_turn() {
    TURN.with(|t| t.set(t.get().wrapping_add(1)));
}

fn turn() -> u64 {
    TURN.with(Cell::get)
}

/// A connection's future, each poll of which is a new turn for its [`Coalesced`] stream.
pub struct Turns<C>(pub Pin<Box<C>>);

impl<C: Future> Future for Turns<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        next_turn();
        self.get_mut().0.as_mut().poll(cx)
    }
}

/// A stream whose small writes are gathered and written once per event-loop turn.
pub struct Coalesced<S> {
    io: S,
    /// Bytes written by the connection and not yet to `io`: `buf[at..]`.
    buf: Vec<u8>,
    at: usize,
    /// The turn the buffered bytes were written in.
    turn: u64,
    /// A flush was deferred and the task woken for it; cleared once the buffer is out.
    woken: bool,
}

impl<S> Coalesced<S> {
    pub fn new(io: S) -> Coalesced<S> {
        Coalesced {
            io,
            buf: Vec::new(),
            at: 0,
            turn: 0,
            woken: false,
        }
    }

    /// Whether bytes are buffered from an earlier turn than this one.
    fn owed(&self) -> bool {
        self.pending() > 0 && self.turn != turn()
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.at
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes `bufs` with what is buffered in front of them (one vectored write each
    /// try), until the socket took some of `bufs`: how many of their bytes.
    fn poll_write_through(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            let pending = self.pending();
            let mut iov = [IoSlice::new(&[]); 8];
            iov[0] = IoSlice::new(&self.buf[self.at..]);
            let k = bufs.len().min(iov.len() - 1);
            iov[1..=k].copy_from_slice(&bufs[..k]);
            let first = usize::from(pending == 0);
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &iov[first..=k]))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            let from_buf = n.min(pending);
            self.consume(from_buf);
            if n > from_buf {
                return Poll::Ready(Ok(n - from_buf));
            }
        }
    }

    /// Writes the whole buffer to `io`.
    fn poll_write_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending() > 0 {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the whole buffer to `io`, then flushes `io` (a TLS stream's records).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_buffered(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            self.woken = false;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The turn that buffered these bytes is over: out with them before reading on.
        // A full socket doesn't hold up reading; its writability wakes the task again.
        if this.owed() {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if total >= SMALL {
            return this.poll_write_through(cx, bufs);
        }
        if this.pending() + total > LIMIT {
            ready!(this.poll_write_buffered(cx))?;
        }
        if this.pending() == 0 {
            this.turn = turn();
        }
        if this.buf.capacity() == 0 {
            // Grows (to `LIMIT` at most) with what a connection's turns write,
            // and stays with the connection.
            this.buf.reserve(SMALL);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() == 0 {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if this.owed() {
            return this.poll_drain(cx);
        }
        // Deferred to the task's next poll; more frames may join first.
        if !this.woken {
            this.woken = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;

    /// A real in-memory pipe that counts the writes that reach it.
    struct Counted {
        pipe: DuplexStream,
        writes: usize,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.pipe).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.pipe).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = polled {
                if n > 0 {
                    self.writes += 1;
                }
            }
            polled
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            // DuplexStream writes one slice at a time: join them, as writev would.
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.poll_write(cx, &joined)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.pipe).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.pipe).poll_shutdown(cx)
        }
    }

    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn coalesced(capacity: usize) -> (Coalesced<Counted>, DuplexStream) {
        let (ours, peer) = tokio::io::duplex(capacity);
        let io = Counted {
            pipe: ours,
            writes: 0,
        };
        (Coalesced::new(io), peer)
    }

    fn write(c: &mut Coalesced<Counted>, cx: &mut Context<'_>, data: &[u8]) -> Poll<usize> {
        Pin::new(c).poll_write(cx, data).map(|r| r.unwrap())
    }

    #[tokio::test]
    async fn small_writes_go_out_in_one_write_at_the_next_read() {
        let (mut c, mut peer) = coalesced(1 << 20);
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1033]).collect();
        for f in &frames {
            assert_eq!(write(&mut c, &mut cx, f), Poll::Ready(f.len()));
            assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        }
        assert_eq!(c.io.writes, 0, "held until the turn ends");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task woken once");
        let mut space = [0u8; 16];
        let mut buf = ReadBuf::new(&mut space);
        // A read within the turn (h2 between the streams it hands out) leaves them.
        assert!(Pin::new(&mut c).poll_read(&mut cx, &mut buf).is_pending());
        assert_eq!(c.io.writes, 0, "held until the turn ends");
        next_turn();
        assert!(Pin::new(&mut c).poll_read(&mut cx, &mut buf).is_pending());
        assert_eq!(c.io.writes, 1, "one write for ten frames");
        let mut got = vec![0u8; 10 * 1033];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, frames.concat());
        // Nothing buffered: a flush goes straight through, no wake.
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_large_write_takes_the_buffer_along_without_a_copy_of_its_own() {
        let (mut c, mut peer) = coalesced(1 << 20);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(write(&mut c, &mut cx, b"head"), Poll::Ready(4));
        let large = vec![7u8; 64 * 1024];
        assert_eq!(write(&mut c, &mut cx, &large), Poll::Ready(large.len()));
        assert_eq!(c.io.writes, 1, "buffer and payload in one write");
        assert_eq!(c.pending(), 0);
        let mut got = vec![0u8; 4 + large.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..] == large[..]);
    }

    #[tokio::test]
    async fn a_flush_in_a_later_turn_sends_what_an_earlier_one_buffered() {
        let (mut c, mut peer) = coalesced(1 << 20);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(write(&mut c, &mut cx, b"one"), Poll::Ready(3));
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(c.io.writes, 0);
        next_turn();
        assert_eq!(write(&mut c, &mut cx, b"two"), Poll::Ready(3));
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(c.io.writes, 1, "both turns' bytes in one write");
        let mut got = [0u8; 6];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"onetwo");
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_buffered() {
        let (mut c, mut peer) = coalesced(1 << 20);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(write(&mut c, &mut cx, b"goaway"), Poll::Ready(6));
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert!(Pin::new(&mut c).poll_shutdown(&mut cx).is_ready());
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"goaway");
    }

    #[tokio::test]
    async fn a_full_socket_holds_writes_back() {
        // Nobody reads the peer: the buffer fills to its limit, then writes wait.
        let (mut c, _peer) = coalesced(1024);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut taken = 0;
        while let Poll::Ready(n) = write(&mut c, &mut cx, &[1u8; 1000]) {
            assert_eq!(n, 1000);
            taken += n;
            assert!(taken <= LIMIT + 1024, "{taken} bytes taken");
        }
        assert!(taken >= LIMIT - 1000, "{taken} bytes taken");
        assert!(c.pending() <= LIMIT);
    }
}
