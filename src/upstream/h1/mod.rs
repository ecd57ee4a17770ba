//! HTTP/1.1 to upstream servers, driven from the request's own task.
//!
//! hyper's client runs each connection in a task of its own: a request goes to it through
//! a channel and the response head comes back through another, two task switches per
//! exchange, and its response parse does more than a proxy needs (about a third of the pass
//! path's instructions went to that task). Here the request's task writes the request
//! (and streams its body), reads and parses the response head; the downstream connection's
//! task reads the body as it sends it on. A body that arrived in the same read as its head
//! (the common small response) is handed on as one `Bytes`, and the connection is back in
//! its pool before the head is even relayed.
//!
//! What is relayed and what is refused (RFC 9112 §6.3): a response to HEAD, a 1xx, 204 and
//! 304 have no body; a lone `chunked` coding is decoded (its trailers relayed); otherwise a
//! `Content-Length` (repeats must agree) frames the body; without either the body runs to
//! the connection's close. Both, another transfer coding, a bad length, a head over
//! `MAX_HEAD` or a malformed one are refused. A connection is reused only when its
//! response said keep-alive and ended exactly where its framing said.

mod body;
mod encode;
mod head;
mod idle;
#[cfg(test)]
mod tests;

pub use body::{Body, BodyBroken, BodyStalled, Pending};
pub use head::{parse_head, Parsed};
pub use idle::IdleStack;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::connect::Stream;
use super::{BoxError, HeadAs, Interim, RawTail, ReqBody};
use body::Framing;
use encode::{encode_head, BodyFraming, Send};

/// Longest response head (status line and fields) torii reads.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most fields in a response head (or in a chunked body's trailers).
pub(super) const MAX_FIELDS: usize = 128;
/// Room made in the read buffer before each read.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Below this much free room in the read buffer, room is made before a read.
pub(super) const MIN_ROOM: usize = 4 * 1024;
/// Room made for a large body still to come: fewer, larger reads.
pub(super) const READ_LARGE: usize = 64 * 1024;
/// Largest body copied out of the read buffer rather than split off it.
pub(super) const COPY_MAX: usize = 4 * 1024;
/// Longest chunk-size line (the size and any extensions).
pub(super) const MAX_CHUNK_LINE: usize = 1024;

/// One HTTP/1.1 connection to an upstream server, idle between exchanges.
pub struct Conn {
    pub(super) io: Stream,
    /// Bytes read and not yet consumed; empty while the connection is idle.
    pub(super) buf: BytesMut,
    /// The request head being written; its capacity is kept for the next one.
    out: Vec<u8>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("the server closed the connection before its response was complete")]
    Closed,
    #[error("malformed response head: {0}")]
    Parse(httparse::Error),
    #[error("response head larger than {} KiB", MAX_HEAD / 1024)]
    HeadTooLarge,
    /// The response's framing can't be relayed one way only.
    #[error("{0}")]
    Framing(&'static str),
    /// The request body failed (too large, stalled, cut short): the client's fault.
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
}

/// A failed exchange and whether the server answered anything at all.
#[derive(Debug)]
pub struct Failed {
    pub failure: Failure,
    /// No byte of a response arrived before the connection closed or reset: on a reused
    /// connection, the server most likely closed it as idle just as the request went out.
    pub unanswered: bool,
}

impl Failed {
    fn new(failure: Failure, answered: bool) -> Failed {
        let unanswered = !answered
            && match &failure {
                Failure::Closed => true,
                Failure::Io(e) => matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ),
                _ => false,
            };
        Failed {
            failure,
            unanswered,
        }
    }
}

impl Conn {
    pub fn new(io: Stream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
        }
    }

    /// Whether an idle connection is still usable: nothing arrived on it while it was
    /// idle, neither bytes (which no request asked for) nor the server's close. Costs no
    /// system call unless the socket became readable.
    pub fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match &mut self.io {
            Stream::Plain(tcp) => match tcp.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                // Readable: data, the close, or readiness left from the last read.
                Poll::Ready(Ok(())) => matches!(
                    tcp.try_read(&mut [0u8; 1]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock
                ),
            },
            // TLS records that aren't data (a session ticket) are taken in, not counted.
            Stream::Tls(tls) => {
                let mut byte = [0u8; 1];
                let mut probe = ReadBuf::new(&mut byte);
                Pin::new(tls.as_mut())
                    .poll_read(&mut cx, &mut probe)
                    .is_pending()
            }
        }
    }

    /// Sends the request `head` and `body` (streamed) and reads the response head; interim
    /// 1xx answers other than 101 go to `interim` (see [`Interim`]), or are skipped. The
    /// body is read later, from the `Answer`.
    pub async fn exchange(
        mut self,
        head: &http::request::Parts,
        body: ReqBody,
        head_as: HeadAs,
        interim: Interim<'_>,
    ) -> Result<Answer, Failed> {
        let head_request = head.method == Method::HEAD;
        // Raw lines for a GET only: its answer's fields frame its body as they say.
        let raw = match head_as {
            HeadAs::RawLines(tail) if head.method == Method::GET => Some(tail),
            _ => None,
        };
        let framing = encode_head(&mut self.out, head, &body);
        let mut send = Send {
            body,
            framing,
            written: 0,
            done: false,
        };
        let mut answered = false;
        let parsed = std::future::poll_fn(|cx| {
            self.poll_exchange(cx, &mut send, &mut answered, raw, interim)
        })
        .await
        .map_err(|f| Failed::new(f, answered))?;
        self.out.clear();
        let Parsed {
            head,
            raw,
            keep_alive,
            length,
            tail,
        } = parsed;
        let status = head.status();
        // A final answer before the whole body went out: the server won't read the rest,
        // and the connection is left where nothing frames what comes next.
        let reusable = keep_alive && send.done;
        let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
            self.unread(&tail);
            let leftover = std::mem::take(&mut self.buf);
            return Ok(Answer::Upgraded(
                head,
                Upgraded {
                    io: self.io,
                    leftover,
                },
            ));
        } else if head_request || !has_body(status) {
            Framing::Length(0)
        } else {
            length
        };
        Ok(Answer::Response {
            head,
            raw,
            body: Pending {
                conn: self,
                tail,
                framing,
                reusable,
            },
        })
    }

    /// Puts bytes read with a head, and not part of it, back in front of the buffer
    /// (which `parse_head` left empty when it took them).
    pub(super) fn unread(&mut self, tail: &Bytes) {
        if !tail.is_empty() {
            debug_assert!(self.buf.is_empty());
            self.buf.extend_from_slice(tail);
        }
    }

    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        send: &mut Send,
        answered: &mut bool,
        raw: Option<RawTail>,
        interim: Interim<'_>,
    ) -> Poll<Result<Parsed, Failure>> {
        loop {
            // The request: the head, then the body frame by frame, as far as it goes now.
            let mut progress = false;
            while !send.done {
                if send.written < self.out.len() {
                    match Pin::new(&mut self.io).poll_write(cx, &self.out[send.written..]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(Failure::Io(io::ErrorKind::WriteZero.into())))
                        }
                        Poll::Ready(Ok(n)) => {
                            send.written += n;
                            progress = true;
                            continue;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Io(e))),
                        Poll::Pending => break,
                    }
                }
                self.out.clear();
                send.written = 0;
                if send.framing == BodyFraming::Done {
                    send.done = true;
                    break;
                }
                match Pin::new(&mut send.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            send.framing.encode(&mut self.out, &data);
                        }
                        progress = true;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Failure::RequestBody(e))),
                    Poll::Ready(None) => {
                        send.framing.finish(&mut self.out);
                        send.framing = BodyFraming::Done;
                        progress = true;
                    }
                    Poll::Pending => break,
                }
            }
            // The response: whatever has arrived, early or not.
            if !self.buf.is_empty() {
                *answered = true;
                if let Some(parsed) = parse_head(&mut self.buf, raw)? {
                    if parsed.head.status().is_informational()
                        && parsed.head.status() != StatusCode::SWITCHING_PROTOCOLS
                    {
                        // 100 Continue, 103 Early Hints: the answer is yet to come.
                        self.unread(&parsed.tail);
                        if let Some(relay) = interim {
                            if parsed.head.status() != StatusCode::CONTINUE {
                                relay(parsed.head);
                            }
                        }
                        continue;
                    }
                    return Poll::Ready(Ok(parsed));
                }
                if self.buf.len() > MAX_HEAD {
                    return Poll::Ready(Err(Failure::HeadTooLarge));
                }
            }
            match poll_read(&mut self.io, &mut self.buf, READ_CHUNK, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Failure::Closed)),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Io(e))),
                Poll::Pending if progress => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Whether an answer with this status has a body, whatever its fields say (RFC 9112
/// §6.3): not a 1xx (101 hands the connection over), 204 or 304. An answer to HEAD has
/// none either.
pub(super) fn has_body(status: StatusCode) -> bool {
    status.as_u16() >= 200 && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED
}

/// Reads what the socket has into `buf`, making room for at least `room` bytes first.
pub(super) fn poll_read(
    io: &mut Stream,
    buf: &mut BytesMut,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < MIN_ROOM {
        buf.reserve(room);
    }
    // `read_buf` is cancel-safe: polled once and dropped, it loses nothing.
    let read = std::pin::pin!(io.read_buf(buf));
    read.poll(cx)
}

/// What an exchange brought back.
pub enum Answer {
    /// A response; its body is still (at least partly) on the connection. Its fields are
    /// in `raw` (and `head`'s map empty) when they came as raw lines (`HeadAs::RawLines`).
    Response {
        head: Response<()>,
        raw: Option<hyper::RawFields>,
        body: Pending,
    },
    /// `101 Switching Protocols`: the connection is the tunnel's now.
    Upgraded(Response<()>, Upgraded),
}

/// The connection of a `101 Switching Protocols` answer, with any bytes that came after
/// its head: the upstream end of a tunnel (WebSocket).
pub struct Upgraded {
    io: Stream,
    leftover: BytesMut,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h1::Upgraded")
            .field("leftover", &self.leftover.len())
            .finish()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.leftover.is_empty() {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
