//! The response head parser: status, fields, and the body's framing by them (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};

use super::body::{Chunk, Framing};
use super::{has_body, Failure, COPY_MAX, MAX_FIELDS};
use crate::upstream;
use crate::upstream::RawTail;

/// Fields the response step may add to a relayed head's map.
const ADDED_FIELDS: usize = 4;

/// A parsed response head.
pub struct Parsed {
    pub(super) head: Response<()>,
    /// The head's end-to-end fields as raw lines, when asked for and given (then `head`'s
    /// map is empty): see [`parse_head`].
    pub(super) raw: Option<hyper::RawFields>,
    pub(super) keep_alive: bool,
    /// The body's framing by its fields (before the request method and status are weighed).
    pub(super) length: Framing,
    /// What came after the head in the same read, when that was little (at most
    /// `COPY_MAX`): copied out with the head, the read buffer left empty.
    pub(super) tail: Bytes,
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
/// With `raw` lines (see [`HeadAs::RawLines`](crate::upstream::HeadAs::RawLines)), a final
/// response that has a body by its status and a `Date` comes with its end-to-end fields
/// written once as [`hyper::RawFields`] lines (then `raw`), and an empty header map: nothing
/// of it is parsed into names and values the caller would only encode again. Anything else,
/// and every head without `raw`, comes as a header map.
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
            chunked |= codings == 1 && upstream::is_chunked(value);
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
    if let Some(what) = upstream::framing_verdict(codings, chunked, length.is_some()) {
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
            && (upstream::is_hop_by_hop(name) || named.iter().any(|n| n.eq_ignore_ascii_case(name)))
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
    let mut raw_fields = None;
    let tail = match raw {
        Some(extra) if bodied && dated => {
            // Each kept field as `name: value` CRLF (whatever line ends the server used),
            // but the framing (hyper writes it from the body) and the field the caller's
            // lines replace.
            let kept = |name: &[u8]| {
                !hop(name)
                    && !name.eq_ignore_ascii_case(b"content-length")
                    && !name.eq_ignore_ascii_case(extra.replaces.as_bytes())
                    // The response step sets the request's own (`proxy::trace`).
                    && !name.eq_ignore_ascii_case(b"x-request-id")
            };
            let room: usize = spans
                .iter()
                .map(|s| (s.1 - s.0 + s.3 - s.2) as usize + 4)
                .sum::<usize>()
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
            let lines = out.len();
            out.extend_from_slice(&buf[len..taken]);
            let mut out = out.freeze();
            let tail = out.split_off(lines);
            raw_fields = Some(hyper::RawFields {
                lines: out,
                tail: extra.lines,
                age: None,
            });
            tail
        }
        _ => {
            // Copied out (one small allocation) rather than split off: the read buffer
            // stays whole and is reused by the next exchange instead of being reallocated
            // while the fields of this head are still being relayed.
            let copied = Bytes::copy_from_slice(&buf[..taken]);
            // Room for what the response step adds (`Via`, `X-Cache`, `X-Request-ID`,
            // `Age`): a map at capacity grows (reallocates and rehashes) on the first.
            let mut headers = HeaderMap::with_capacity(count + ADDED_FIELDS);
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
        raw: raw_fields,
        keep_alive,
        length,
        tail,
    }))
}

/// Adds one `Content-Length` field's value to the length found so far: every value, in
/// every field and comma-separated list, must be the same number.
pub(super) fn content_length(value: &[u8], length: &mut Option<u64>) -> Result<(), Failure> {
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
