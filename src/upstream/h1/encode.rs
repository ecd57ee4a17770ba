//! The request side: the request line and fields, and the body as is or chunked.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Method;

use crate::upstream::ReqBody;

/// The request side of an exchange in progress.
pub(super) struct Send {
    pub(super) body: ReqBody,
    pub(super) framing: BodyFraming,
    /// Bytes of `Conn::out` already written.
    pub(super) written: usize,
    /// The whole request is written.
    pub(super) done: bool,
}

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// As is: a `Content-Length` was sent.
    Raw,
    Chunked,
    /// No (more) body.
    Done,
}

impl BodyFraming {
    pub(super) fn encode(self, out: &mut Vec<u8>, data: &[u8]) {
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

    pub(super) fn finish(self, out: &mut Vec<u8>) {
        if self == BodyFraming::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

pub(super) fn push_hex(out: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(n >> (i * 4)) as usize & 0xf]);
    }
}

/// Writes the request line and fields into `out`; returns how the body will be framed.
/// `Transfer-Encoding` is torii's to set (hop-by-hop); a body without a length goes
/// chunked; a bodiless POST, PUT or PATCH says `Content-Length: 0`.
pub(super) fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    body: &ReqBody,
) -> BodyFraming {
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
