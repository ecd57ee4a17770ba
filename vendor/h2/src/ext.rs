//! Extensions specific to the HTTP/2 protocol.

use crate::hpack::BytesStr;

use bytes::{Bytes, BytesMut}; // torii patch 01: BytesMut
use std::fmt;

/// torii patch 01: response fields HPACK-encoded once, for any number of responses on any
/// connections. Given with a `Response` to
/// `server::SendResponse::send_response_pre_encoded` (torii patch 06: by argument, not in
/// its extensions: no map to allocate), they are sent after the fields of its header
/// map, in the same header block, as they were encoded: an object answered again
/// and again costs the encoder nothing for them. They never touch the dynamic table
/// (literals without indexing, or entries of the static table), so they stay valid
/// whatever the connection's table holds; the price is bytes on the wire, as responses
/// of servers that do not index do (RFC 7541 §6.2.2).
///
/// Connection-specific fields (RFC 9113 §8.2.2) are left out. A field must not be both
/// here and in the response's map unless it may repeat.
#[derive(Clone, Debug)]
pub struct PreEncoded {
    block: Bytes,
    list_size: usize,
    // torii patch 03: a second block sent after the first (`followed_by`).
    tail: Option<Bytes>,
}

impl PreEncoded {
    /// Encodes `fields` (each name with each of its values, in the map's order).
    pub fn fields(fields: &http::HeaderMap) -> PreEncoded {
        Self::from_iter(fields)
    }

    /// Encodes the fields `fields` yields, in that order.
    pub fn from_iter<'a, I>(fields: I) -> PreEncoded
    where
        I: IntoIterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
    {
        let mut dst = BytesMut::new();
        let sendable = fields
            .into_iter()
            .filter(|(name, value)| !connection_specific(name, value));
        let list_size = crate::hpack::encode_without_indexing(sendable, &mut dst);
        PreEncoded {
            block: dst.freeze(),
            list_size,
            tail: None, // torii patch 03: none
        }
    }

    /// torii patch 03: these fields, then those of `tail`, without copying either block
    /// when neither has a tail yet (a per-response field after a per-object block).
    pub fn followed_by(self, tail: &PreEncoded) -> PreEncoded {
        let list_size = self.list_size + tail.list_size;
        match (self.tail, &tail.tail) {
            (None, None) => PreEncoded {
                block: self.block,
                list_size,
                tail: Some(tail.block.clone()),
            },
            (own, more) => {
                let mut block = BytesMut::from(&self.block[..]);
                let parts = [own.as_ref(), Some(&tail.block), more.as_ref()];
                for part in parts.into_iter().flatten() {
                    block.extend_from_slice(part);
                }
                PreEncoded {
                    block: block.freeze(),
                    list_size,
                    tail: None,
                }
            }
        }
    }

    /// The encoded fields (torii patch 03: those of the first block).
    pub fn as_bytes(&self) -> &[u8] {
        &self.block
    }

    /// Their header list size (RFC 9113 §6.5.2: names, values and 32 octets a field).
    pub fn list_size(&self) -> usize {
        self.list_size
    }

    /// torii patch 03: the blocks, in order.
    pub(crate) fn into_blocks(self) -> (Bytes, Option<Bytes>) {
        (self.block, self.tail)
    }
}

/// Whether HTTP/2 forbids the field (RFC 9113 §8.2.2), as `Send::check_headers` refuses it.
fn connection_specific(name: &http::HeaderName, value: &http::HeaderValue) -> bool {
    use http::header;
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
        || (name == header::TE && value != "trailers")
}

/// Represents the `:protocol` pseudo-header used by
/// the [Extended CONNECT Protocol].
///
/// [Extended CONNECT Protocol]: https://datatracker.ietf.org/doc/html/rfc8441#section-4
#[derive(Clone, Eq, PartialEq)]
pub struct Protocol {
    value: BytesStr,
}

impl Protocol {
    /// Converts a static string to a protocol name.
    pub const fn from_static(value: &'static str) -> Self {
        Self {
            value: BytesStr::from_static(value),
        }
    }

    /// Returns a str representation of the header.
    pub fn as_str(&self) -> &str {
        self.value.as_str()
    }

    pub(crate) fn try_from(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        Ok(Self {
            value: BytesStr::try_from(bytes)?,
        })
    }
}

impl<'a> From<&'a str> for Protocol {
    fn from(value: &'a str) -> Self {
        Self {
            value: BytesStr::from(value),
        }
    }
}

impl AsRef<[u8]> for Protocol {
    fn as_ref(&self) -> &[u8] {
        self.value.as_ref()
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.value.fmt(f)
    }
}
