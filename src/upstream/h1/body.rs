//! The response body decoder: by length, chunked (with trailers) or to the close; the
//! connection goes back to its idle stack at the body's clean end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::idle::IdleStack;
use super::{poll_read, Conn, COPY_MAX, MAX_CHUNK_LINE, MAX_HEAD, READ_CHUNK, READ_LARGE};
use crate::upstream::{BoxError, UpstreamBody};

/// A response body not yet read, with the connection it comes on.
pub struct Pending {
    pub(super) conn: Conn,
    /// The start of the body, read with the head (see `Parsed::tail`).
    pub(super) tail: Bytes,
    pub(super) framing: Framing,
    pub(super) reusable: bool,
}

impl Pending {
    /// The body, as one buffer when all of it is already in (the connection then goes
    /// back to `idle` at once), else as a stream that reads it as it is polled and gives
    /// the connection back at its clean end. `stall` bounds the wait for each read.
    pub fn into_body(self, idle: &Arc<IdleStack>, stall: Duration) -> UpstreamBody {
        let Pending {
            mut conn,
            tail,
            framing,
            reusable,
        } = self;
        if let Framing::Length(n) = framing {
            if n <= tail.len() as u64 {
                // The common small response: all of it came with the head.
                let data = tail.slice(..n as usize);
                if reusable && tail.len() as u64 == n && conn.buf.is_empty() {
                    idle.put_back(conn);
                }
                return UpstreamBody::Full((!data.is_empty()).then_some(data));
            }
        }
        conn.unread(&tail);
        if let Framing::Length(n) = framing {
            if n <= conn.buf.len() as u64 {
                let n = n as usize;
                // A small body is copied out, for the reason the head is; a large one is
                // split off the buffer (no copy; the next read allocates a new buffer).
                let data = if n <= COPY_MAX {
                    let data = Bytes::copy_from_slice(&conn.buf[..n]);
                    conn.buf.advance(n);
                    data
                } else {
                    conn.buf.split_to(n).freeze()
                };
                if reusable && conn.buf.is_empty() {
                    idle.put_back(conn);
                }
                return UpstreamBody::Full((!data.is_empty()).then_some(data));
            }
        }
        UpstreamBody::H1(Box::new(Body {
            conn: Some(conn),
            idle: reusable.then(|| idle.clone()),
            framing,
            stall,
            timer: None,
        }))
    }
}

/// How a response body is framed, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the server closes the connection.
    Close,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes still to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// A streamed HTTP/1.1 response body.
pub struct Body {
    /// `None` once the body has ended (the connection went back or was closed).
    conn: Option<Conn>,
    /// Where the connection goes at the body's clean end; `None` when it can't be reused.
    idle: Option<Arc<IdleStack>>,
    framing: Framing,
    stall: Duration,
    /// Runs while a read waits; reset when bytes arrive.
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h1::Body")
            .field("framing", &self.framing)
            .finish()
    }
}

/// The server sent no body byte for the stall limit (`response_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("upstream sent no body byte for {0:?}")]
pub struct BodyStalled(Duration);

/// The body's framing broke: the server closed early or sent bad chunking.
#[derive(Debug, thiserror::Error)]
#[error("upstream body: {0}")]
pub struct BodyBroken(&'static str);

impl Body {
    /// The body has been read to its end: the connection goes back to its pool if it may.
    fn end(&mut self) {
        self.framing = Framing::Done;
        self.timer = None;
        if let (Some(conn), Some(idle)) = (self.conn.take(), self.idle.take()) {
            // Bytes past the body's end: nothing frames them, the connection can't go on.
            if conn.buf.is_empty() {
                idle.put_back(conn);
            }
        }
    }

    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        self.idle = None;
        Poll::Ready(Some(Err(e)))
    }

    /// Reads more of the body into the connection's buffer; `Ready(Ok(false))` on EOF.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BoxError>> {
        let room = match self.framing {
            Framing::Length(n) | Framing::Chunked(Chunk::Data(n)) if n > READ_CHUNK as u64 => {
                READ_LARGE
            }
            _ => READ_CHUNK,
        };
        let conn = self
            .conn
            .as_mut()
            .expect("a body being read has its connection");
        match poll_read(&mut conn.io, &mut conn.buf, room, cx) {
            Poll::Ready(Ok(n)) => {
                if let Some(timer) = &mut self.timer {
                    timer.as_mut().reset(Instant::now() + self.stall);
                }
                Poll::Ready(Ok(n > 0))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => {
                let stall = self.stall;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Box::new(BodyStalled(stall))));
                }
                Poll::Pending
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut conn.buf;
            match this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Framing::Length(n) | Framing::Chunked(Chunk::Data(n)) if !buf.is_empty() => {
                    let take = (buf.len() as u64).min(n);
                    let data = buf.split_to(take as usize).freeze();
                    let left = n - take;
                    match this.framing {
                        Framing::Length(_) if left == 0 => this.end(),
                        Framing::Length(_) => this.framing = Framing::Length(left),
                        _ if left == 0 => this.framing = Framing::Chunked(Chunk::DataEnd),
                        _ => this.framing = Framing::Chunked(Chunk::Data(left)),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close if !buf.is_empty() => {
                    let data = buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(Chunk::Size) => {
                    if let Some(at) = memchr::memchr(b'\n', buf) {
                        let size = match chunk_size(&buf[..at + 1]) {
                            Some(size) => size,
                            None => return this.fail(Box::new(BodyBroken("a bad chunk size"))),
                        };
                        buf.advance(at + 1);
                        this.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        continue;
                    }
                    if buf.len() > MAX_CHUNK_LINE {
                        return this.fail(Box::new(BodyBroken("a chunk-size line too long")));
                    }
                }
                Framing::Chunked(Chunk::DataEnd) if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return this.fail(Box::new(BodyBroken("chunk data longer than its size")));
                    }
                    buf.advance(2);
                    this.framing = Framing::Chunked(Chunk::Size);
                    continue;
                }
                Framing::Chunked(Chunk::Trailers) => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        this.end();
                        return Poll::Ready(None);
                    }
                    match parse_trailers(buf) {
                        Ok(Some(trailers)) => {
                            this.end();
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(None) if buf.len() > MAX_HEAD => {
                            return this.fail(Box::new(BodyBroken("trailers too large")))
                        }
                        Ok(None) => {}
                        Err(what) => return this.fail(Box::new(BodyBroken(what))),
                    }
                }
                _ => {}
            }
            // Nothing to give from the buffer: read more.
            match this.poll_more(cx) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(false)) => {
                    return this.fail(Box::new(BodyBroken(
                        "the server closed the connection before the body's end",
                    )))
                }
                Poll::Ready(Err(e)) => return this.fail(e),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The size on a chunk-size line (`1a;ext=v\r\n`), if it is one.
pub(super) fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let digits = match memchr::memchr(b';', line) {
        Some(at) => &line[..at],
        None => line,
    };
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n << 4 | u64::from(v))
    })
}

/// Trailer fields up to their empty line, if all of them are in `buf` (consumed then).
fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, &'static str> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let (len, map) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| "a bad trailer name")?;
                let value =
                    HeaderValue::from_bytes(field.value).map_err(|_| "a bad trailer value")?;
                map.append(name, value);
            }
            (len, map)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed trailers"),
    };
    buf.advance(len);
    Ok(Some(map))
}
