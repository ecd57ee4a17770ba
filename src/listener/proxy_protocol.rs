//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that load balancers such as
//! HAProxy and AWS NLB send before anything else on a connection, naming the client.
//!
//! Hand-written rather than a crate: it is small, reads exactly the header's bytes off the
//! socket (never a byte of the TLS handshake or HTTP request after it, so nothing has to be
//! put back), and bounds everything: a v1 line is at most 107 bytes, a v2 header at most
//! 16 + [`V2_MAX_LEN`] bytes. Whatever is wrong — truncated, a length past the header, an
//! address of the wrong family, an unknown version or command — refuses the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::ProxyProtocol;

/// The v2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;
/// The longest v2 address block plus TLVs accepted (the format allows 65535): AWS and
/// HAProxy send far less.
pub const V2_MAX_LEN: usize = 4096;

/// Why a header was refused.
pub type Refused = &'static str;

/// A refused header, by the reason `torii_proxy_protocol_refused_total` counts it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The connection ended (or failed) inside the header.
    Truncated,
    /// Not complete within `limits.header_timeout` (the listener's timeout, not `read`'s).
    TimedOut,
    /// Not a valid header of an accepted version: what is wrong.
    Invalid(Refused),
}

impl Refusal {
    /// Index into `observe::metrics::PROXY_REFUSED_REASONS`.
    pub fn index(self) -> usize {
        match self {
            Refusal::Invalid(_) => 0,
            Refusal::TimedOut => 1,
            Refusal::Truncated => 2,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Truncated => f.write_str("connection ended inside the PROXY header"),
            Refusal::TimedOut => f.write_str("PROXY header not complete in time"),
            Refusal::Invalid(why) => f.write_str(why),
        }
    }
}

/// Reads the PROXY header at the start of `stream`, as `accept` allows: the client's address,
/// or `None` when the header says the connection is the proxy's own (v1 `UNKNOWN`, v2
/// `LOCAL`, or an unspecified / UNIX family): the peer is then the client.
///
/// # Errors
/// When the connection does not start with a valid header of an accepted version.
pub async fn read(
    stream: &mut TcpStream,
    accept: ProxyProtocol,
) -> Result<Option<SocketAddr>, Refusal> {
    use Refusal::Truncated as TRUNCATED;
    let mut head = [0u8; V1_MAX];
    // 12 bytes: the v2 signature, and never more than the shortest v1 line (15 bytes).
    stream
        .read_exact(&mut head[..12])
        .await
        .map_err(|_| TRUNCATED)?;
    if head[..12] == V2_SIG {
        if accept == ProxyProtocol::V1 {
            return Err(Refusal::Invalid("a v2 PROXY header on a v1 listener"));
        }
        stream
            .read_exact(&mut head[12..16])
            .await
            .map_err(|_| TRUNCATED)?;
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if len > V2_MAX_LEN {
            return Err(Refusal::Invalid("v2 PROXY header longer than 4096 bytes"));
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.map_err(|_| TRUNCATED)?;
        return parse_v2(&head[..16], &body).map_err(Refusal::Invalid);
    }
    if !head.starts_with(b"PROXY ") {
        return Err(Refusal::Invalid("no PROXY header"));
    }
    if accept == ProxyProtocol::V2 {
        return Err(Refusal::Invalid("a v1 PROXY header on a v2 listener"));
    }
    // The rest of the line: what has arrived is looked at first, and only the bytes up to
    // the line's end are taken off the socket.
    let mut len = 12;
    while head[len - 1] != b'\n' {
        if len == V1_MAX {
            return Err(Refusal::Invalid("v1 PROXY header longer than 107 bytes"));
        }
        let n = stream.peek(&mut head[len..]).await.map_err(|_| TRUNCATED)?;
        if n == 0 {
            return Err(TRUNCATED);
        }
        let take = head[len..len + n]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(n, |i| i + 1);
        stream
            .read_exact(&mut head[len..len + take])
            .await
            .map_err(|_| TRUNCATED)?;
        len += take;
    }
    parse_v1(&head[..len]).map_err(Refusal::Invalid)
}

/// A v1 line, CRLF included: `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, Refused> {
    const BAD: Refused = "malformed v1 PROXY header";
    let line = line.strip_suffix(b"\r\n").ok_or(BAD)?;
    let text = std::str::from_utf8(line).map_err(|_| BAD)?;
    let mut fields = text.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(BAD);
    }
    let v6 = match fields.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        // The proxy's own connection (a health check): whatever follows is ignored.
        Some("UNKNOWN") => return Ok(None),
        _ => return Err("v1 PROXY header of an unknown protocol"),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(BAD);
    };
    let ip = |text: &str| -> Result<IpAddr, Refused> {
        let ip = if v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| "v1 PROXY header address not of its family")
    };
    let port = |text: &str| -> Result<u16, Refused> {
        if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BAD);
        }
        text.parse().map_err(|_| BAD)
    };
    let (src, _dst, sport, _dport) = (ip(src)?, ip(dst)?, port(sport)?, port(dport)?);
    Ok(Some(SocketAddr::new(src, sport)))
}

/// A v2 header: its 16 fixed bytes and the `len` bytes after them (addresses, then TLVs,
/// which are checked for framing and skipped).
pub fn parse_v2(head: &[u8], body: &[u8]) -> Result<Option<SocketAddr>, Refused> {
    if head.len() != 16 || head[..12] != V2_SIG {
        return Err("not a v2 PROXY header");
    }
    if head[12] >> 4 != 2 {
        return Err("v2 PROXY header of an unknown version");
    }
    let local = match head[12] & 0x0f {
        0 => true,
        1 => false,
        _ => return Err("v2 PROXY header with an unknown command"),
    };
    let (source, used) = match head[13] {
        // Unspecified: the proxy's own connection, or a protocol it does not name.
        0x00 => (None, 0),
        // TCP over IPv4: src, dst (4 bytes each), src port, dst port.
        0x11 => {
            let b = body
                .get(..12)
                .ok_or("v2 PROXY header shorter than its addresses")?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[8], b[9]]);
            (Some(SocketAddr::new(ip.into(), port)), 12)
        }
        // TCP over IPv6: 16 bytes each.
        0x21 => {
            let b = body
                .get(..36)
                .ok_or("v2 PROXY header shorter than its addresses")?;
            let octets: [u8; 16] = b[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([b[32], b[33]]);
            (
                Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port)),
                36,
            )
        }
        // UNIX stream sockets: no address to use.
        0x31 => {
            body.get(..216)
                .ok_or("v2 PROXY header shorter than its addresses")?;
            (None, 216)
        }
        _ if local => (None, 0),
        _ => return Err("v2 PROXY header of an unsupported family or protocol"),
    };
    if local {
        // LOCAL: the proxy's own connection; the addresses (if any) are ignored.
        return Ok(None);
    }
    let mut tlvs = &body[used..];
    while !tlvs.is_empty() {
        let [_kind, hi, lo, ref rest @ ..] = *tlvs else {
            return Err("v2 PROXY header with a truncated TLV");
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > rest.len() {
            return Err("v2 PROXY header TLV longer than the header");
        }
        tlvs = &rest[len..];
    }
    Ok(source.map(|s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut head = V2_SIG.to_vec();
        head.push(0x20 | cmd);
        head.push(fam);
        head.extend_from_slice(&(body.len() as u16).to_be_bytes());
        (head, body.to_vec())
    }

    #[test]
    fn v1_lines() {
        let ok = |l: &str| parse_v1(l.as_bytes());
        assert_eq!(
            ok("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"),
            Ok(Some("192.0.2.1:56324".parse().unwrap()))
        );
        assert_eq!(
            ok("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
            Ok(Some("[2001:db8::1]:1".parse().unwrap()))
        );
        assert_eq!(ok("PROXY UNKNOWN whatever\r\n"), Ok(None));
        for bad in [
            "PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
            "PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.1 1\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.1 1 2 3\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.1 99999 2\r\n",
            "PROXY TCP4 192.0.2.1  198.51.100.1 1 2\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.1 +1 2\r\n",
            "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            "PROXY UDP4 192.0.2.1 198.51.100.1 1 2\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.1 1 2\n",
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v2_headers() {
        let mut v4 = vec![192, 0, 2, 1, 198, 51, 100, 1];
        v4.extend_from_slice(&4711u16.to_be_bytes());
        v4.extend_from_slice(&443u16.to_be_bytes());
        let (h, b) = v2(1, 0x11, &v4);
        assert_eq!(
            parse_v2(&h, &b),
            Ok(Some("192.0.2.1:4711".parse().unwrap()))
        );
        // TLVs are skipped; one whose length runs past the header is refused.
        let mut with_tlv = v4.clone();
        with_tlv.extend_from_slice(&[0x04, 0, 3, 1, 2, 3, 0x20, 0, 0]);
        let (h, b) = v2(1, 0x11, &with_tlv);
        assert!(parse_v2(&h, &b).unwrap().is_some());
        let mut past = v4.clone();
        past.extend_from_slice(&[0x04, 0, 9, 1, 2]);
        let (h, b) = v2(1, 0x11, &past);
        assert!(parse_v2(&h, &b).is_err());
        let (h, b) = v2(1, 0x11, &[0x04, 0]);
        assert!(parse_v2(&h, &b[..1]).is_err());
        // Too short for its family (an IPv4 block claimed as IPv6).
        let (h, b) = v2(1, 0x21, &v4);
        assert!(parse_v2(&h, &b).is_err());
        let mut v6 = vec![0u8; 36];
        v6[15] = 1;
        v6[32..34].copy_from_slice(&80u16.to_be_bytes());
        let (h, b) = v2(1, 0x21, &v6);
        assert_eq!(parse_v2(&h, &b), Ok(Some("[::1]:80".parse().unwrap())));
        // LOCAL and UNSPEC: the peer.
        let (h, b) = v2(0, 0x00, &[]);
        assert_eq!(parse_v2(&h, &b), Ok(None));
        let (h, b) = v2(1, 0x00, &[]);
        assert_eq!(parse_v2(&h, &b), Ok(None));
        // UDP, unknown commands and versions.
        let (h, b) = v2(1, 0x12, &v4);
        assert!(parse_v2(&h, &b).is_err());
        let (h, b) = v2(2, 0x11, &v4);
        assert!(parse_v2(&h, &b).is_err());
        let (mut h, b) = v2(1, 0x11, &v4);
        h[12] = 0x11;
        assert!(parse_v2(&h, &b).is_err());
    }
}
