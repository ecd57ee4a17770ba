//! Request IDs and W3C Trace Context (<https://www.w3.org/TR/trace-context/>).
//!
//! Every request gets an `X-Request-Id`: the client's when `server.trust_request_id` is on
//! and it is well-formed, otherwise 128 random bits as 32 hex digits. It is sent upstream,
//! returned to the client, and logged. With `[tracing]` on (the default) a valid incoming
//! `traceparent` keeps its trace id and flags and gets a new parent id for the upstream
//! hop; an invalid or missing one starts a new trace, sampled with `tracing.sample`.
//! `tracestate` goes along with a kept trace and is dropped with a restarted one.
//!
//! Cost: on a hit, two xorshift draws, 32 hex digits and one 32-byte allocation for the ID
//! value; the trace is only looked at when the request goes upstream or is logged.

use std::cell::{Cell, RefCell};

use bytes::BytesMut;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Identity;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest client request ID kept with `trust_request_id`.
const MAX_ID: usize = 200;

/// A trace this request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: [u8; 16],
    pub flags: u8,
    /// False when torii started it (the client sent none, or an invalid one).
    pub kept: bool,
}

/// One request's identity.
#[derive(Debug, Clone)]
pub struct Ids {
    pub request_id: HeaderValue,
    pub trace: Option<Trace>,
}

impl Ids {
    pub fn new(headers: &HeaderMap, identity: &Identity) -> Ids {
        let trusted = identity
            .trust_request_id
            .then(|| single(headers, &X_REQUEST_ID))
            .flatten()
            .filter(|v| valid_id(v.as_bytes()));
        let mut request_id = match trusted {
            Some(v) => v.clone(),
            None => new_id(),
        };
        // Unique per request, so HTTP/2's header compression (HPACK) could never reuse it:
        // sent as a literal "never indexed", it stays out of the connection's dynamic table.
        // Indexed, each response's new ID evicted older entries (the stored fields a hit
        // sends again) and lengthened the table's chain of `x-request-id` entries, which
        // the encoder walks comparing values on every response (h2c hit: 45.7k → see
        // README Performance). HTTP/1 ignores the flag.
        request_id.set_sensitive(true);
        let trace = identity.trace_context.then(|| {
            match single(headers, &TRACEPARENT).and_then(|v| parse_traceparent(v.as_bytes())) {
                Some((trace_id, flags)) => Trace {
                    trace_id,
                    // Version 00 defines the sampled (01) and random (02) flags.
                    flags: flags & 0x03,
                    kept: true,
                },
                None => Trace {
                    trace_id: random_nonzero_16(),
                    flags: u8::from(random_unit() < identity.sample),
                    kept: false,
                },
            }
        });
        Ids { request_id, trace }
    }

    /// The request ID and trace context on the request sent upstream: a new parent id
    /// (this hop), `tracestate` only with a kept trace.
    pub fn to_upstream(&self, headers: &mut HeaderMap) {
        headers.insert(X_REQUEST_ID, self.request_id.clone());
        if let Some(trace) = &self.trace {
            headers.insert(TRACEPARENT, traceparent(trace, random_nonzero_8()));
            if !trace.kept {
                headers.remove(TRACESTATE);
            }
        }
    }

    /// The trace id as 32 hex digits, for the log.
    pub fn trace_hex(&self) -> Option<String> {
        self.trace.map(|t| {
            let mut out = [0u8; 32];
            hex(&t.trace_id, &mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    }
}

fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

/// A client's ID is kept when it is 1 to 200 bytes of letters, digits and `-._~:/+=@`.
fn valid_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~:/+=@".contains(&b))
}

fn new_id() -> HeaderValue {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&random_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&random_u64().to_le_bytes());
    let mut out = [0u8; 32];
    hex(&bytes, &mut out);
    // Cut from a per-thread block of 128 IDs: no allocation per request, and the copies
    // that go upstream and back to the client are reference counts, not new buffers.
    let id = ID_BLOCK.with(|block| {
        let mut block = block.borrow_mut();
        if block.capacity() - block.len() < out.len() {
            *block = BytesMut::with_capacity(out.len() * 128);
        }
        block.extend_from_slice(&out);
        block.split_to(out.len()).freeze()
    });
    HeaderValue::from_maybe_shared(id).expect("hex digits are a valid value")
}

thread_local! {
    static ID_BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `00-<trace id>-<parent id>-<flags>`.
fn traceparent(trace: &Trace, parent: [u8; 8]) -> HeaderValue {
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    hex(&trace.trace_id, &mut out[3..35]);
    out[35] = b'-';
    hex(&parent, &mut out[36..52]);
    out[52] = b'-';
    hex(&[trace.flags], &mut out[53..55]);
    HeaderValue::from_bytes(&out).expect("hex digits are a valid value")
}

/// A valid `traceparent`: its trace id and flags. Version `ff` is invalid; a higher
/// version than 00 is read as 00 where it may hold more after the flags.
pub fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], u8)> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    match version {
        0xff => return None,
        0 if v.len() != 55 => return None,
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let parent = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    (trace_id != [0; 16] && parent != [0; 8]).then_some((trace_id, flags))
}

/// Lowercase hex only, as the spec requires.
fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

thread_local!(static STATE: Cell<u64> = Cell::new(seed()));

/// Per thread: the time, the thread's stack address and a process-wide counter, mixed.
fn seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let mut x = t
        ^ (&local as *const u8 as u64).rotate_left(32)
        ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    // splitmix64 finaliser: a well-spread, non-zero start.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) | 1
}

/// xorshift64*: cheap, not cryptographic (IDs need to be unique, not secret).
fn random_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn random_nonzero_16() -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&(random_u64() | 1).to_le_bytes());
    out[8..].copy_from_slice(&random_u64().to_le_bytes());
    out
}

fn random_nonzero_8() -> [u8; 8] {
    (random_u64() | 1).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trace context on (off by default).
    fn traced() -> Identity {
        Identity {
            trace_context: true,
            ..Identity::default()
        }
    }

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_formats() {
        let (id, flags) = parse_traceparent(GOOD.as_bytes()).unwrap();
        assert_eq!(id[0], 0x4b);
        assert_eq!(flags, 1);
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
        // A later version may carry more after the flags.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(parse_traceparent(v1.as_bytes()).is_some());
    }

    #[test]
    fn ids() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-1"));
        h.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        let trusting = Identity {
            trust_request_id: true,
            ..traced()
        };
        let ids = Ids::new(&h, &trusting);
        assert_eq!(ids.request_id, "abc-1");
        let ids = Ids::new(&h, &traced());
        assert_eq!(ids.request_id.len(), 32);
        assert_ne!(ids.request_id, Ids::new(&h, &traced()).request_id);
        let mut up = HeaderMap::new();
        ids.to_upstream(&mut up);
        let tp = up[&TRACEPARENT].to_str().unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"));
        assert_ne!(tp, GOOD, "a new parent id");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("bad id"));
        assert_eq!(Ids::new(&h, &trusting).request_id.len(), 32);
        let always = Identity {
            sample: 1.0,
            ..traced()
        };
        let fresh = Ids::new(&HeaderMap::new(), &always).trace.unwrap();
        assert_eq!((fresh.flags, fresh.kept), (1, false));
    }
}
