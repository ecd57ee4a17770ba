//! Client identity: the one address a request is from (`resolve`).
//!
//! The peer is the TCP peer, or the source of a PROXY protocol header on listeners with
//! `proxy_protocol` (the listener puts that in place before any request). When the peer is
//! in `server.trusted_proxies`, the client is read from `X-Forwarded-For` (right to left,
//! past trusted hops), else from `Forwarded: for=`. That one address is what the access
//! log, the rate limits, the `client_ip` hash, route `access` lists, `PURGE` permission and
//! the `X-Forwarded-For` sent upstream all use. Per-IP connection caps count connections
//! before any request, so they use the peer (or PROXY) address only.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName};

use crate::config::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// At most this many list entries are looked at, over all the fields of one header: a
/// longer chain of trusted hops is not believed past that.
pub const MAX_HOPS: usize = 64;

/// The client address of a request from `peer`. With a trusted `peer` it is taken from the
/// headers, and the incoming `X-Forwarded-For` is removed: the proxy then sends just the
/// resolved client upstream (the addresses to its left were the client's to write, those to
/// its right are trusted hops). With no trusted proxies this costs one comparison.
pub fn resolve(peer: SocketAddr, headers: &mut HeaderMap, trusted: &[IpNet]) -> SocketAddr {
    if trusted.is_empty() || !is_trusted(peer.ip(), trusted) {
        return peer;
    }
    let found = client_from(headers, &X_FORWARDED_FOR, trusted, xff_entry)
        .or_else(|| client_from(headers, &FORWARDED, trusted, forwarded_for));
    headers.remove(X_FORWARDED_FOR);
    match found {
        Some(ip) => SocketAddr::new(ip, 0),
        None => peer,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(ip))
}

/// Walks the comma-separated entries of every `name` field, right to left, for at most
/// [`MAX_HOPS`] entries: the first valid address not trusted; else (all trusted) the
/// leftmost valid one seen; `None` when there is no valid address at all. Entries that are
/// not addresses (garbage, IPv6 with a zone, `unknown`, obfuscated names) are skipped.
fn client_from(
    headers: &HeaderMap,
    name: &HeaderName,
    trusted: &[IpNet],
    parse: fn(&str) -> Option<IpAddr>,
) -> Option<IpAddr> {
    let mut seen = 0;
    let mut leftmost = None;
    for value in headers.get_all(name).iter().rev() {
        let Ok(value) = value.to_str() else {
            seen += 1;
            continue;
        };
        for entry in value.rsplit(',') {
            seen += 1;
            if seen > MAX_HOPS {
                return leftmost;
            }
            let Some(ip) = parse(entry.trim()) else {
                continue;
            };
            if !is_trusted(ip, trusted) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
    }
    leftmost
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, with or without
/// a port (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn xff_entry(entry: &str) -> Option<IpAddr> {
    if entry.len() > 64 {
        return None;
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after.strip_prefix(':').is_some_and(|p| {
                !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
            });
        return port_ok
            .then(|| ip.parse::<std::net::Ipv6Addr>().ok())
            .flatten()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    entry
        .parse::<std::net::SocketAddrV4>()
        .ok()
        .map(|a| IpAddr::V4(*a.ip()))
}

/// The `for=` of one `Forwarded` element (RFC 7239): `for=192.0.2.60`,
/// `for="[2001:db8::1]:4711"`; `unknown` and obfuscated names are not addresses.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"')?,
            None => value,
        };
        xff_entry(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| IpNet::parse(n).unwrap()).collect()
    }

    fn run(peer: &str, fields: &[(&str, &str)], trusted: &[&str]) -> (IpAddr, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let peer: SocketAddr = peer.parse().unwrap();
        let ip = resolve(peer, &mut h, &nets(trusted)).ip();
        (ip, h)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_and_keeps_its_header() {
        let (got, h) = run(
            "203.0.113.9:1",
            &[("x-forwarded-for", "1.2.3.4")],
            &["10.0.0.0/8"],
        );
        assert_eq!(got, ip("203.0.113.9"));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4");
        let (got, _) = run("10.0.0.1:1", &[("x-forwarded-for", "1.2.3.4")], &[]);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn right_to_left_past_trusted_hops() {
        let t = ["10.0.0.0/8", "127.0.0.1/32"];
        let (got, h) = run(
            "10.0.0.1:1",
            &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1, 127.0.0.1")],
            &t,
        );
        assert_eq!(got, ip("1.2.3.4"));
        assert!(!h.contains_key("x-forwarded-for"));
        // Over several fields: the last field's last entry is the nearest hop.
        let (got, _) = run(
            "10.0.0.1:1",
            &[
                ("x-forwarded-for", "6.6.6.6, 5.5.5.5"),
                ("x-forwarded-for", "10.2.2.2"),
            ],
            &t,
        );
        assert_eq!(got, ip("5.5.5.5"));
        // All trusted: the leftmost.
        let (got, _) = run(
            "10.0.0.1:1",
            &[("x-forwarded-for", "10.0.0.7, 10.0.0.8")],
            &t,
        );
        assert_eq!(got, ip("10.0.0.7"));
        // No header: the peer.
        let (got, _) = run("10.0.0.1:1", &[], &t);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn garbage_zones_and_ports() {
        let t = ["10.0.0.0/8"];
        let (got, _) = run(
            "10.0.0.1:1",
            &[(
                "x-forwarded-for",
                "1.1.1.1, fe80::1%eth0, junk, , 999.1.1.1, 10.0.0.2",
            )],
            &t,
        );
        assert_eq!(got, ip("1.1.1.1"));
        let (got, _) = run(
            "10.0.0.1:1",
            &[("x-forwarded-for", "[2001:db8::5]:443")],
            &t,
        );
        assert_eq!(got, ip("2001:db8::5"));
        let (got, _) = run("10.0.0.1:1", &[("x-forwarded-for", "192.0.2.4:8080")], &t);
        assert_eq!(got, ip("192.0.2.4"));
        let (got, _) = run("10.0.0.1:1", &[("x-forwarded-for", "::ffff:192.0.2.4")], &t);
        assert_eq!(got, ip("192.0.2.4"));
        // Only garbage: the peer.
        let (got, _) = run("10.0.0.1:1", &[("x-forwarded-for", "nope, [::1")], &t);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn bounded_walk() {
        let t = ["10.0.0.0/8"];
        let mut chain = vec!["9.9.9.9".to_string()];
        chain.extend((0..1000).map(|i| format!("10.0.{}.{}", i / 250, i % 250)));
        let (got, _) = run("10.0.0.1:1", &[("x-forwarded-for", &chain.join(", "))], &t);
        // 9.9.9.9 is past the bound: a trusted hop, never the spoofable far end.
        assert!(is_trusted(got, &nets(&t)), "{got}");
        let chain = vec!["1.1.1.1"; 1000].join(",");
        let (got, _) = run("10.0.0.1:1", &[("x-forwarded-for", &chain)], &t);
        assert_eq!(got, ip("1.1.1.1"));
    }

    #[test]
    fn forwarded_header() {
        let t = ["10.0.0.0/8"];
        let (got, _) = run(
            "10.0.0.1:1",
            &[(
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, For=10.3.3.3",
            )],
            &t,
        );
        assert_eq!(got, ip("2001:db8::1"));
        let (got, _) = run(
            "10.0.0.1:1",
            &[("forwarded", "for=unknown, for=_hidden")],
            &t,
        );
        assert_eq!(got, ip("10.0.0.1"));
        // X-Forwarded-For first.
        let (got, _) = run(
            "10.0.0.1:1",
            &[("forwarded", "for=7.7.7.7"), ("x-forwarded-for", "8.8.8.8")],
            &t,
        );
        assert_eq!(got, ip("8.8.8.8"));
    }
}
