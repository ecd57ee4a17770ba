//! `upstreams.<name>.send_proxy_protocol`: the PROXY protocol header (HAProxy's spec,
//! version 1 text or version 2 binary) torii writes first on each new connection to a
//! server, naming the client the connection is for. Such connections carry one client's
//! requests only, so they are never pooled (`Pool::send_h1`).

use std::net::{IpAddr, SocketAddr};

use crate::config::SendProxyProtocol;

/// Who a request is from and where it came in: the client (resolved, see
/// `identity`) and the address it connected to. Rides on the upstream request's
/// extensions of a group with `send_proxy_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAddrs {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// The header for a connection made for `addrs`; without them (a health check) the header
/// says so: `PROXY UNKNOWN` (v1) or the `LOCAL` command (v2), after which the server uses
/// the connection's own addresses.
pub fn encode(version: SendProxyProtocol, addrs: Option<ProxyAddrs>) -> Vec<u8> {
    // Both addresses in one family: IPv4 ones as IPv4-mapped IPv6 when the other is IPv6.
    let addrs = addrs.map(|a| match (a.src.ip(), a.dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (a.src, a.dst),
        _ => (v6(a.src), v6(a.dst)),
    });
    match version {
        SendProxyProtocol::V1 => match addrs {
            None => b"PROXY UNKNOWN\r\n".to_vec(),
            Some((src, dst)) => {
                let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    src.ip(),
                    dst.ip(),
                    src.port(),
                    dst.port()
                )
                .into_bytes()
            }
        },
        SendProxyProtocol::V2 => {
            let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            match addrs {
                None => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
                Some((src, dst)) => {
                    let block: Vec<u8> = match (src.ip(), dst.ip()) {
                        (IpAddr::V4(s), IpAddr::V4(d)) => {
                            out.push(0x21);
                            out.push(0x11);
                            [s.octets().as_slice(), d.octets().as_slice()].concat()
                        }
                        (s, d) => {
                            out.push(0x21);
                            out.push(0x21);
                            [octets6(s).as_slice(), octets6(d).as_slice()].concat()
                        }
                    };
                    let len = (block.len() + 4) as u16;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&block);
                    out.extend_from_slice(&src.port().to_be_bytes());
                    out.extend_from_slice(&dst.port().to_be_bytes());
                }
            }
            out
        }
    }
}

fn v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        v6 => v6,
    }
}

fn octets6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(src: &str, dst: &str) -> Option<ProxyAddrs> {
        Some(ProxyAddrs {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        })
    }

    #[test]
    fn v1_lines() {
        let v1 = SendProxyProtocol::V1;
        assert_eq!(
            encode(v1, addrs("203.0.113.7:51000", "127.0.0.1:8080")),
            b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\n"
        );
        assert_eq!(
            encode(v1, addrs("[2001:db8::1]:4000", "127.0.0.1:80")),
            b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 4000 80\r\n"
        );
        assert_eq!(encode(v1, None), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_blocks() {
        let v2 = SendProxyProtocol::V2;
        let h = encode(v2, addrs("203.0.113.7:51000", "127.0.0.1:8080"));
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[203, 0, 113, 7]);
        assert_eq!(&h[20..24], &[127, 0, 0, 1]);
        assert_eq!(&h[24..], &[0xC7, 0x38, 0x1F, 0x90]);
        let h = encode(v2, addrs("[2001:db8::1]:4000", "[::1]:80"));
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(encode(v2, None)[12..], [0x20, 0x00, 0, 0]);
    }
}
