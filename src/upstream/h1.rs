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

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::connect::Stream;
use super::pool::Pool;
use super::{BoxError, HeadAs, RawTail, ReqBody};

/// Longest response head (status line and fields) torii reads.
const MAX_HEAD: usize = 64 * 1024;
/// Most fields in a response head (or in a chunked body's trailers).
const MAX_FIELDS: usize = 128;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much free room in the read buffer, room is made before a read.
const MIN_ROOM: usize = 4 * 1024;
/// Room made for a large body still to come: fewer, larger reads.
const READ_LARGE: usize = 64 * 1024;
/// Largest body copied out of the read buffer rather than split off it.
const COPY_MAX: usize = 4 * 1024;
/// Longest chunk-size line (the size and any extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// One HTTP/1.1 connection to an upstream server, idle between exchanges.
pub struct Conn {
    io: Stream,
    /// Bytes read and not yet consumed; empty while the connection is idle.
    buf: BytesMut,
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

    /// Sends the request `head` and `body` (streamed) and reads the response head, skipping
    /// interim 1xx answers other than 101. The body is read later, from the `Answer`.
    pub async fn exchange(
        mut self,
        head: &http::request::Parts,
        body: ReqBody,
        head_as: HeadAs,
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
        let parsed =
            std::future::poll_fn(|cx| self.poll_exchange(cx, &mut send, &mut answered, raw))
                .await
                .map_err(|f| Failed::new(f, answered))?;
        self.out.clear();
        let Parsed {
            head,
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
    fn unread(&mut self, tail: &Bytes) {
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
fn has_body(status: StatusCode) -> bool {
    status.as_u16() >= 200 && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED
}

/// The request side of an exchange in progress.
struct Send {
    body: ReqBody,
    framing: BodyFraming,
    /// Bytes of `Conn::out` already written.
    written: usize,
    /// The whole request is written.
    done: bool,
}

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    /// As is: a `Content-Length` was sent.
    Raw,
    Chunked,
    /// No (more) body.
    Done,
}

impl BodyFraming {
    fn encode(self, out: &mut Vec<u8>, data: &[u8]) {
        match self {
            BodyFraming::Raw => out.extend_from_slice(data),
            BodyFraming::Chunked if !data.is_empty() => {
                push_hex(out, data.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            BodyFraming::Chunked | BodyFraming::Done => {}
        }
    }

    fn finish(self, out: &mut Vec<u8>) {
        if self == BodyFraming::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

fn push_hex(out: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(n >> (i * 4)) as usize & 0xf]);
    }
}

/// Writes the request line and fields into `out`; returns how the body will be framed.
/// `Transfer-Encoding` is torii's to set (hop-by-hop); a body without a length goes
/// chunked; a bodiless POST, PUT or PATCH says `Content-Length: 0`.
fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts, body: &ReqBody) -> BodyFraming {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let streamed = matches!(body, ReqBody::Stream { .. });
    let mut has_length = false;
    for (name, value) in &parts.headers {
        if name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONTENT_LENGTH {
            if !streamed || has_length {
                has_length = true;
                continue;
            }
            has_length = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = if !streamed {
        if has_length || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        BodyFraming::Done
    } else if has_length {
        BodyFraming::Raw
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        BodyFraming::Chunked
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// Reads what the socket has into `buf`, making room for at least `room` bytes first.
fn poll_read(
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

/// A parsed response head.
pub struct Parsed {
    head: Response<()>,
    keep_alive: bool,
    /// The body's framing by its fields (before the request method and status are weighed).
    length: Framing,
    /// What came after the head in the same read, when that was little (at most
    /// `COPY_MAX`): copied out with the head, the read buffer left empty.
    tail: Bytes,
}

impl Parsed {
    /// The status, version and the fields to relay.
    pub fn head(&self) -> &Response<()> {
        &self.head
    }
}

/// Parses a complete response head off the front of `buf`, if there is one (public for
/// `benches/hot_path.rs`).
///
/// With `raw` lines (see [`HeadAs::RawLines`]), a final response that has a body by its
/// status and a `Date` comes with its end-to-end fields written once as
/// [`hyper::RawFields`] lines (then `raw`), and an empty header map: nothing of it is
/// parsed into names and values the caller would only encode again. Anything else, and
/// every head without `raw`, comes as a header map.
///
/// # Errors
/// `Parse` for a malformed head, `Framing` for one whose body can't be framed one way.
pub fn parse_head(buf: &mut BytesMut, raw: Option<RawTail>) -> Result<Option<Parsed>, Failure> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let (len, code, minor, count) = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut response, buf, &mut fields)
    {
        Ok(httparse::Status::Complete(len)) => {
            for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
                let name = field.name.as_ptr() as usize - base;
                let value = field.value.as_ptr() as usize - base;
                *span = (
                    name as u32,
                    (name + field.name.len()) as u32,
                    value as u32,
                    (value + field.value.len()) as u32,
                );
            }
            (
                len,
                response.code.unwrap_or(0),
                response.version.unwrap_or(1),
                response.headers.len(),
            )
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Parse(e)),
    };
    let status = StatusCode::from_u16(code).map_err(|_| Failure::Parse(httparse::Error::Status))?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let spans = &spans[..count];
    let field = |span: &(u32, u32, u32, u32)| {
        (
            &buf[span.0 as usize..span.1 as usize],
            &buf[span.2 as usize..span.3 as usize],
        )
    };
    // The framing and the connection's own fields, from the raw lines.
    let mut length = None;
    let mut codings = 0;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut dated = false;
    // Fields `Connection` names for this hop only (rare: mostly it says `keep-alive`).
    let mut named: Vec<&[u8]> = Vec::new();
    for span in spans {
        let (name, value) = field(span);
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length(value, &mut length)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            chunked |= codings == 1 && super::is_chunked(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else if !token.is_empty() {
                    named.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case(b"date") {
            dated = true;
        }
    }
    if let Some(what) = super::framing_verdict(codings, chunked, length.is_some()) {
        return Err(Failure::Framing(what));
    }
    let length = match (codings, length) {
        (0, Some(n)) => Framing::Length(n),
        (0, None) => Framing::Close,
        _ => Framing::Chunked(Chunk::Size),
    };
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive);
    // The fields that were about this connection go no further (a 101 keeps its
    // `Upgrade` and `Connection`: the tunnel's two ends need them).
    let tunnel = status == StatusCode::SWITCHING_PROTOCOLS;
    let hop = |name: &[u8]| {
        !tunnel
            && (super::is_hop_by_hop(name) || named.iter().any(|n| n.eq_ignore_ascii_case(name)))
    };
    // A small body that came with the head comes along in the same allocation.
    let taken = if buf.len() - len <= COPY_MAX {
        buf.len()
    } else {
        len
    };
    let bodied = has_body(status);
    let mut head = Response::new(());
    *head.status_mut() = status;
    *head.version_mut() = version;
    let tail = match raw {
        Some(extra) if bodied && dated => {
            // Each kept field as `name: value` CRLF (whatever line ends the server used),
            // but the framing (hyper writes it from the body) and the field the caller's
            // lines replace.
            let kept = |name: &[u8]| {
                !hop(name)
                    && !name.eq_ignore_ascii_case(b"content-length")
                    && !name.eq_ignore_ascii_case(extra.replaces.as_bytes())
            };
            let room: usize = spans
                .iter()
                .map(|s| (s.1 - s.0 + s.3 - s.2) as usize + 4)
                .sum::<usize>()
                + extra.lines.len()
                + (taken - len);
            let mut out = BytesMut::with_capacity(room);
            for span in spans {
                let (name, value) = field(span);
                if kept(name) {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(extra.lines);
            let lines = out.len();
            out.extend_from_slice(&buf[len..taken]);
            let mut out = out.freeze();
            let tail = out.split_off(lines);
            head.extensions_mut().insert(hyper::RawFields {
                lines: out,
                age: None,
            });
            tail
        }
        _ => {
            // Copied out (one small allocation) rather than split off: the read buffer
            // stays whole and is reused by the next exchange instead of being reallocated
            // while the fields of this head are still being relayed.
            let copied = Bytes::copy_from_slice(&buf[..taken]);
            let mut headers = HeaderMap::with_capacity(count);
            for span in spans {
                let (name, _) = field(span);
                if hop(name) {
                    continue;
                }
                let name = HeaderName::from_bytes(name)
                    .map_err(|_| Failure::Parse(httparse::Error::HeaderName))?;
                let value =
                    HeaderValue::from_maybe_shared(copied.slice(span.2 as usize..span.3 as usize))
                        .map_err(|_| Failure::Parse(httparse::Error::HeaderValue))?;
                headers.append(name, value);
            }
            *head.headers_mut() = headers;
            copied.slice(len..)
        }
    };
    buf.advance(taken);
    Ok(Some(Parsed {
        head,
        keep_alive,
        length,
        tail,
    }))
}

/// Adds one `Content-Length` field's value to the length found so far: every value, in
/// every field and comma-separated list, must be the same number.
fn content_length(value: &[u8], length: &mut Option<u64>) -> Result<(), Failure> {
    const BAD: Failure = Failure::Framing("an invalid Content-Length");
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(BAD);
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(BAD);
        }
        *length = Some(n);
    }
    Ok(())
}

/// What an exchange brought back.
pub enum Answer {
    /// A response; its body is still (at least partly) on the connection.
    Response { head: Response<()>, body: Pending },
    /// `101 Switching Protocols`: the connection is the tunnel's now.
    Upgraded(Response<()>, Upgraded),
}

/// A response body not yet read, with the connection it comes on.
pub struct Pending {
    conn: Conn,
    /// The start of the body, read with the head (see `Parsed::tail`).
    tail: Bytes,
    framing: Framing,
    reusable: bool,
}

impl Pending {
    /// The body, as one buffer when all of it is already in (the connection then goes
    /// back to `pool` at once), else as a stream that reads it as it is polled and gives
    /// the connection back at its clean end. `stall` bounds the wait for each read.
    pub fn into_body(self, pool: &Arc<Pool>, stall: Duration) -> super::UpstreamBody {
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
                    pool.put_back(conn);
                }
                return super::UpstreamBody::Full((!data.is_empty()).then_some(data));
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
                    pool.put_back(conn);
                }
                return super::UpstreamBody::Full((!data.is_empty()).then_some(data));
            }
        }
        super::UpstreamBody::H1(Box::new(Body {
            conn: Some(conn),
            pool: reusable.then(|| pool.clone()),
            framing,
            stall,
            timer: None,
        }))
    }
}

/// How a response body is framed, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the server closes the connection.
    Close,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
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
    pool: Option<Arc<Pool>>,
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
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            // Bytes past the body's end: nothing frames them, the connection can't go on.
            if conn.buf.is_empty() {
                pool.put_back(conn);
            }
        }
    }

    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        self.pool = None;
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
fn chunk_size(line: &[u8]) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a\r\n"), Some(26));
        assert_eq!(chunk_size(b"0\r\n"), Some(0));
        assert_eq!(chunk_size(b"FF;name=value\r\n"), Some(255));
        assert_eq!(chunk_size(b"10 \r\n"), Some(16));
        assert_eq!(chunk_size(b"\r\n"), None);
        assert_eq!(chunk_size(b"1a\n"), None, "a bare LF");
        assert_eq!(chunk_size(b"-1\r\n"), None);
        assert_eq!(chunk_size(b"0x10\r\n"), None);
        assert_eq!(chunk_size(b"1000000000000000\r\n"), None, "over 15 digits");
    }

    #[test]
    fn hex_lengths() {
        for n in [0u64, 1, 15, 16, 255, 4096, 1 << 40] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").into_bytes());
        }
    }

    #[test]
    fn content_lengths() {
        let mut length = None;
        content_length(b"12", &mut length).unwrap();
        assert_eq!(length, Some(12));
        content_length(b"12, 12", &mut length).unwrap();
        assert_eq!(length, Some(12));
        assert!(content_length(b"13", &mut length).is_err());
        for bad in ["", "+1", "1 2", "0x1", "99999999999999999999", "1,,1"] {
            assert!(
                content_length(bad.as_bytes(), &mut None).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn heads_parse_into_fields() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\nx-a: c\r\n\r\nabc"[..],
        );
        let parsed = parse_head(&mut buf, None).unwrap().unwrap();
        assert_eq!(parsed.head.status(), 200);
        assert_eq!(parsed.length, Framing::Length(3));
        assert!(parsed.keep_alive);
        let values: Vec<_> = parsed.head.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["b", "c"]);
        assert_eq!(&parsed.tail[..], b"abc", "a small body comes with the head");
        assert!(buf.is_empty());

        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse_head(&mut partial, None).unwrap().is_none());

        let mut close = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
        let parsed = parse_head(&mut close, None).unwrap().unwrap();
        assert_eq!(parsed.length, Framing::Close);
        assert!(!parsed.keep_alive);

        let mut both = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        );
        assert!(matches!(
            parse_head(&mut both, None),
            Err(Failure::Framing(_))
        ));
        let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"[..]);
        assert!(matches!(parse_head(&mut bad, None), Err(Failure::Parse(_))));

        // The connection's own fields stay behind, whatever their case.
        let mut hop = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Hop\r\nKeep-Alive: timeout=5\r\nx-hop: 1\r\nTransfer-Encoding: Chunked\r\nX-End: 2\r\n\r\n"[..],
        );
        let parsed = parse_head(&mut hop, None).unwrap().unwrap();
        assert_eq!(parsed.length, Framing::Chunked(Chunk::Size));
        let names: Vec<_> = parsed.head.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end"]);

        let mut close = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..],
        );
        assert!(!parse_head(&mut close, None).unwrap().unwrap().keep_alive);
        let mut two = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                [..],
        );
        assert!(matches!(
            parse_head(&mut two, None),
            Err(Failure::Parse(_)) | Err(Failure::Framing(_))
        ));
    }

    fn raw_lines(head: &[u8]) -> (Option<Bytes>, Bytes) {
        let mut buf = BytesMut::from(head);
        let parsed = parse_head(
            &mut buf,
            Some(RawTail {
                lines: b"via: t\r\n",
                replaces: "x-cache",
            }),
        )
        .unwrap()
        .unwrap();
        let raw = parsed.head.extensions().get::<hyper::RawFields>();
        assert!(raw.is_none() || parsed.head.headers().is_empty());
        (raw.map(|r| r.lines.clone()), parsed.tail)
    }

    #[test]
    fn raw_heads_keep_end_to_end_lines() {
        // The lines as the server wrote them, without the framing, the connection's own
        // fields and the server's X-Cache; then the caller's lines.
        let (lines, tail) = raw_lines(
            b"HTTP/1.1 200 OK\r\nServer: o\r\nDate: d\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nETag: \"e\"\r\nX-Hop: 1\r\nx-cache: HIT\r\nCache-Control: no-store\r\n\r\nok",
        );
        assert_eq!(
            lines.as_deref(),
            Some(
                &b"Server: o\r\nDate: d\r\nETag: \"e\"\r\nCache-Control: no-store\r\nvia: t\r\n"[..]
            )
        );
        assert_eq!(&tail[..], b"ok");

        // Lines written otherwise (bare LF, no space, more spaces) come as `name: value`
        // CRLF, in order.
        let (lines, _) = raw_lines(
            b"HTTP/1.1 200 OK\nDate: d\r\nA:1\r\nB:   2  \r\nC: 3\nD: 4\r\nE: \r\nF: 6\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            lines.as_deref(),
            Some(&b"Date: d\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: \r\nF: 6\r\nvia: t\r\n"[..])
        );

        // No Date (hyper adds one), or no body by its status: a header map.
        for head in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: 1\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\nDate: d\r\nX: 1\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nDate: d\r\nX: 1\r\n\r\n",
        ] {
            assert_eq!(raw_lines(head).0, None);
        }
    }
}
