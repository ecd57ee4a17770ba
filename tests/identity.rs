//! Who is asking (issue 19): trusted proxies, per-route access lists, PROXY protocol.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::*;

async fn send(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body: Body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed();
    let resp = client().request(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The `X-Forwarded-For` the origin's `/echo` saw.
fn echoed_xff(body: &str) -> &str {
    body.lines()
        .find_map(|l| l.strip_prefix("x-forwarded-for: "))
        .unwrap_or("<none>")
}

fn temp_log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("torii-identity-{}-{name}.log", std::process::id()))
}

// === 1. Trusted proxies ===

#[tokio::test]
async fn a_trusted_peer_names_the_client_everywhere() {
    let origin = Origin::start().await;
    let log = temp_log("trusted");
    let _ = std::fs::remove_file(&log);
    let torii = Torii::start(
        &format!(
            "[server]\nadmin = \"off\"\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1/32\"]\n\
             [log]\naccess = \"{}\"\n[upstreams.app]\nservers = [\"{{origin}}\"]\n\
             [[routes]]\nupstream = \"app\"\n",
            log.display()
        ),
        Some(&origin),
    )
    .await;
    // Right to left past the trusted hops; the spoofed far end is not believed.
    let (status, _, body) = send(
        &torii.url("/echo"),
        &[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed_xff(&body), "203.0.113.7", "{body}");
    // Garbage, zones and a thousand entries: bounded, the first untrusted valid one wins.
    let mut long = vec!["198.51.100.1"; 1000].join(", ");
    long.push_str(", junk, fe80::1%eth0, 10.0.0.9");
    let (_, _, body) = send(&torii.url("/echo"), &[("x-forwarded-for", &long)]).await;
    assert_eq!(echoed_xff(&body), "198.51.100.1", "{body}");
    // `Forwarded: for=` when there is no X-Forwarded-For (and it is not passed on).
    let (_, _, body) = send(
        &torii.url("/echo"),
        &[(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.1",
        )],
    )
    .await;
    assert_eq!(echoed_xff(&body), "2001:db8::7", "{body}");
    assert!(!body.contains("forwarded: "), "{body}");
    // Nothing said: the peer.
    let (_, _, body) = send(&torii.url("/echo"), &[]).await;
    assert_eq!(echoed_xff(&body), "127.0.0.1", "{body}");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("four access-log lines", Duration::from_secs(5), || {
        read().lines().count() >= 4
    })
    .await;
    let text = read();
    let clients: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        clients,
        ["203.0.113.7", "198.51.100.1", "2001:db8::7", "127.0.0.1"],
        "{text}"
    );
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn an_untrusted_peer_is_the_client_and_its_header_is_appended_to() {
    let origin = Origin::start().await;
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n[log]\naccess = \"off\"\n\
         [upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n",
        Some(&origin),
    )
    .await;
    let (_, _, body) = send(&torii.url("/echo"), &[("x-forwarded-for", "1.2.3.4")]).await;
    assert_eq!(echoed_xff(&body), "1.2.3.4, 127.0.0.1", "{body}");
    // No trusted proxies at all (the default): the same.
    let plain = Torii::to(&origin, "").await;
    let (_, _, body) = send(&plain.url("/echo"), &[("x-forwarded-for", "1.2.3.4")]).await;
    assert_eq!(echoed_xff(&body), "1.2.3.4, 127.0.0.1", "{body}");
}

#[tokio::test]
async fn rate_limits_count_the_resolved_client() {
    let origin = Origin::start().await;
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\ntrusted_proxies = [\"127.0.0.1\"]\n[log]\naccess = \"off\"\n\
         [upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n\
         rate_limit = { rps = 0.01, burst = 1 }\n",
        Some(&origin),
    )
    .await;
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(send(&torii.url("/"), &a).await.0, StatusCode::OK);
    assert_eq!(
        send(&torii.url("/"), &a).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&torii.url("/"), &b).await.0, StatusCode::OK);
}

// === 2. Access lists per route ===

#[tokio::test]
async fn access_lists_refuse_before_the_cache_and_the_upstream() {
    let origin = Origin::start().await;
    origin.set(
        "/admin/page",
        Reply::new("secret").header("cache-control", "max-age=600"),
    );
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\ntrusted_proxies = [\"127.0.0.1\"]\n[log]\naccess = \"off\"\n\
         [upstreams.app]\nservers = [\"{origin}\"]\n\
         [[routes]]\npath = \"/admin\"\nupstream = \"app\"\n\
         access = { allow = [\"192.0.2.0/24\"], deny = [\"192.0.2.13\"] }\n[routes.cache]\n\
         [[routes]]\npath = \"/open\"\nupstream = \"app\"\naccess = { deny = [\"192.0.2.13\"] }\n\
         [[routes]]\nupstream = \"app\"\n",
        Some(&origin),
    )
    .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let url = torii.url("/admin/page");
    let (status, h, body) = send(&url, &from("192.0.2.5")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "secret"));
    assert_eq!(h["x-cache"], "MISS");
    let (status, h, _) = send(&url, &from("192.0.2.6")).await;
    assert_eq!(
        (status, &h["x-cache"]),
        (StatusCode::OK, &"HIT".parse().unwrap())
    );
    // Denied wins over allowed; outside the allow list is refused; cached or not, 403.
    for ip in ["192.0.2.13", "198.51.100.1"] {
        let (status, h, body) = send(&url, &from(ip)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{ip}");
        assert!(!body.contains("secret"));
        assert!(h.get("x-cache").is_none());
        let (status, _, _) = send(&torii.url("/admin/other"), &from(ip)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{ip}");
    }
    assert_eq!(origin.hits("/admin/page"), 1);
    assert_eq!(origin.hits("/admin/other"), 0);
    // An empty allow list is everyone but the denied.
    assert_eq!(
        send(&torii.url("/open"), &from("8.8.8.8")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&torii.url("/open"), &from("192.0.2.13")).await.0,
        StatusCode::FORBIDDEN
    );
    // A route without access: everyone.
    assert_eq!(
        send(&torii.url("/x"), &from("192.0.2.13")).await.0,
        StatusCode::OK
    );
}

// === 3. PROXY protocol ===

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ECHO: &[u8] = b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

async fn proxy_listener(origin: &Origin, mode: &str, extra: &str) -> Torii {
    Torii::start(
        &format!(
            "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[limits]\nheader_timeout = \"1s\"\n\
             {extra}\n[[listeners]]\naddr = \"127.0.0.1:0\"\nproxy_protocol = \"{mode}\"\n\
             [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n"
        ),
        Some(origin),
    )
    .await
}

/// Sends `pieces` one write at a time (a pause between: split segments), then reads until
/// the connection closes.
async fn send_pieces(addr: SocketAddr, pieces: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for piece in pieces {
        if stream.write_all(piece).await.is_err() {
            break;
        }
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_tcp4(src: [u8; 4], tlvs: &[u8]) -> Vec<u8> {
    let mut body = src.to_vec();
    body.extend_from_slice(&[127, 0, 0, 1]);
    body.extend_from_slice(&4711u16.to_be_bytes());
    body.extend_from_slice(&80u16.to_be_bytes());
    body.extend_from_slice(tlvs);
    v2(1, 0x11, &body)
}

#[tokio::test]
async fn proxy_v1_and_v2_name_the_client_even_in_pieces() {
    let origin = Origin::start().await;
    let torii = proxy_listener(&origin, "any", "").await;
    let v1 = b"PROXY TCP4 192.0.2.10 127.0.0.1 56324 80\r\n";
    let resp = send_pieces(torii.addr, &[v1, ECHO]).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(echoed_xff(&resp), "192.0.2.10", "{resp}");
    // The header split over several segments, the request in the same write as its end.
    let with_echo = |line: &[u8]| [line, ECHO].concat();
    let tail = with_echo(b"::1 1 80\r\n");
    let resp = send_pieces(torii.addr, &[b"PRO", b"XY TCP6 2001:db8::9 ", &tail]).await;
    assert_eq!(echoed_xff(&resp), "2001:db8::9", "{resp}");
    let tail = with_echo(b"127.0.0.1 1 80\r\n");
    let resp = send_pieces(torii.addr, &[b"PROXY TCP4 192.0.2.11 ", &tail]).await;
    assert_eq!(echoed_xff(&resp), "192.0.2.11", "{resp}");
    // v2 with TLVs (AWS-style VPC endpoint id, CRC), written a byte at first then the rest.
    let mut tlvs = vec![0xEA, 0, 5, 1, b'v', b'p', b'c', b'e'];
    tlvs.extend_from_slice(&[0x03, 0, 4, 0, 0, 0, 0]);
    let header = v2_tcp4([198, 51, 100, 7], &tlvs);
    let resp = send_pieces(
        torii.addr,
        &[&header[..1], &header[1..20], &header[20..], ECHO],
    )
    .await;
    assert_eq!(echoed_xff(&resp), "198.51.100.7", "{resp}");
    // LOCAL (the balancer's health check): the peer.
    let resp = send_pieces(torii.addr, &[&v2(0, 0, &[]), ECHO]).await;
    assert_eq!(echoed_xff(&resp), "127.0.0.1", "{resp}");
    let resp = send_pieces(torii.addr, &[b"PROXY UNKNOWN\r\n", ECHO]).await;
    assert_eq!(echoed_xff(&resp), "127.0.0.1", "{resp}");
}

#[tokio::test]
async fn bad_proxy_headers_close_the_connection_and_forward_nothing() {
    let origin = Origin::start().await;
    let torii = proxy_listener(&origin, "any", "").await;
    let v1 = b"PROXY TCP4 192.0.2.10 127.0.0.1 56324 80\r\n".as_slice();
    let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120], b"\r\n"].concat();
    let mut v4_as_v6 = v2_tcp4([198, 51, 100, 7], &[]);
    v4_as_v6[13] = 0x21;
    let mut past = v2_tcp4([198, 51, 100, 7], &[]);
    past[15] += 40; // claims 40 bytes more than are sent
    let tlv_past = v2_tcp4([198, 51, 100, 7], &[0x04, 0, 200, 1]);
    let too_long = v2(1, 0x11, &[0; 5000]);
    // What each case is counted under in torii_proxy_protocol_refused_total ("twice": the
    // second header is an HTTP request, answered 400, not a refused header).
    type Case<'a> = (&'a str, Option<&'a str>, Vec<Vec<u8>>);
    let cases: Vec<Case> = vec![
        ("no header", Some("invalid"), vec![ECHO.to_vec()]),
        (
            "truncated v1",
            Some("timeout"),
            vec![b"PROXY TCP4 192.0.2.10".to_vec()],
        ),
        ("line too long", Some("invalid"), vec![long]),
        (
            "mixed families v1",
            Some("invalid"),
            vec![
                b"PROXY TCP4 2001:db8::1 127.0.0.1 1 80\r\n".to_vec(),
                ECHO.to_vec(),
            ],
        ),
        (
            "mixed families v2",
            Some("invalid"),
            vec![v4_as_v6, ECHO.to_vec()],
        ),
        ("length past the buffer", Some("timeout"), vec![past]),
        (
            "TLV past the header",
            Some("invalid"),
            vec![tlv_past, ECHO.to_vec()],
        ),
        (
            "over the v2 bound",
            Some("invalid"),
            vec![too_long, ECHO.to_vec()],
        ),
        ("twice", None, vec![v1.to_vec(), v1.to_vec(), ECHO.to_vec()]),
        (
            "garbage",
            Some("invalid"),
            vec![b"\x16\x03\x01 hello".to_vec(), ECHO.to_vec()],
        ),
    ];
    let refused =
        |reason: &str| format!("torii_proxy_protocol_refused_total{{reason=\"{reason}\"}}");
    for reason in ["invalid", "timeout", "truncated"] {
        assert_eq!(torii.metric(&refused(reason)).await, Some(0.0), "{reason}");
    }
    let mut expected = std::collections::HashMap::new();
    for (what, reason, pieces) in &cases {
        let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let resp = send_pieces(torii.addr, &pieces).await;
        assert!(!resp.contains(" 200 "), "{what}: {resp}");
        if let Some(reason) = reason {
            *expected.entry(*reason).or_insert(0.0) += 1.0;
            let counted = torii.metric(&refused(reason)).await;
            assert_eq!(counted, expected.get(reason).copied(), "{what}");
        }
        // The next connection is unaffected.
        let resp = send_pieces(torii.addr, &[v1, ECHO]).await;
        assert_eq!(echoed_xff(&resp), "192.0.2.10", "after {what}: {resp}");
    }
    assert_eq!(origin.hits("/echo"), cases.len());
    // A header that never comes: closed after limits.header_timeout.
    let started = std::time::Instant::now();
    let resp = send_pieces(torii.addr, &[b"PROXY "]).await;
    assert!(resp.is_empty(), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let timeouts = expected["timeout"] + 1.0;
    assert_eq!(torii.metric(&refused("timeout")).await, Some(timeouts));
    // The client closes inside the header: truncated.
    let mut stream = TcpStream::connect(torii.addr).await.unwrap();
    stream.write_all(b"PROXY TCP4 192.0.2.10").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    assert!(out.is_empty());
    wait_until_async("a truncated header is counted", PATIENCE, || async {
        torii.metric(&refused("truncated")).await == Some(1.0)
    })
    .await;
    // A v1 listener refuses v2, and a v2 listener v1.
    let only_v1 = proxy_listener(&origin, "v1", "").await;
    let resp = send_pieces(only_v1.addr, &[&v2_tcp4([1, 2, 3, 4], &[]), ECHO]).await;
    assert!(resp.is_empty(), "{resp}");
    let only_v2 = proxy_listener(&origin, "v2", "").await;
    let resp = send_pieces(only_v2.addr, &[v1, ECHO]).await;
    assert!(resp.is_empty(), "{resp}");
    assert_eq!(origin.hits("/echo"), cases.len());
}

#[tokio::test]
async fn per_ip_caps_count_the_proxy_address_also_after_hibernation() {
    let origin = Origin::start().await;
    let torii = proxy_listener(&origin, "v1", "max_connections_per_ip = 1").await;
    // One connection held open from 192.0.2.1; another from it is closed; 192.0.2.2 is not.
    let mut held = TcpStream::connect(torii.addr).await.unwrap();
    held.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 80\r\nGET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), held.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first[..n]).into_owned();
    assert_eq!(echoed_xff(&first), "192.0.2.1", "{first}");
    let resp = send_pieces(
        torii.addr,
        &[b"PROXY TCP4 192.0.2.1 127.0.0.1 2 80\r\n", ECHO],
    )
    .await;
    assert!(resp.is_empty(), "{resp}");
    let resp = send_pieces(
        torii.addr,
        &[b"PROXY TCP4 192.0.2.2 127.0.0.1 2 80\r\n", ECHO],
    )
    .await;
    assert_eq!(echoed_xff(&resp), "192.0.2.2", "{resp}");
    // The held connection, once it hibernates, still is 192.0.2.1's.
    wait_until_async("the held connection hibernates", PATIENCE, || async {
        torii.metric("torii_connections_hibernated").await == Some(1.0)
    })
    .await;
    let resp = send_pieces(
        torii.addr,
        &[b"PROXY TCP4 192.0.2.1 127.0.0.1 3 80\r\n", ECHO],
    )
    .await;
    assert!(resp.is_empty(), "{resp}");
    held.write_all(ECHO).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), held.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(echoed_xff(&resp), "192.0.2.1", "{resp}");
    // Once it is closed, 192.0.2.1 may connect again.
    let resp = send_pieces(
        torii.addr,
        &[b"PROXY TCP4 192.0.2.1 127.0.0.1 4 80\r\n", ECHO],
    )
    .await;
    assert_eq!(echoed_xff(&resp), "192.0.2.1", "{resp}");
}

#[tokio::test]
async fn proxy_header_comes_before_the_tls_handshake() {
    let origin = Origin::start().await;
    let dir = env!("CARGO_MANIFEST_DIR");
    let torii = Torii::start(
        &format!(
            "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n\
             [[listeners]]\naddr = \"127.0.0.1:0\"\nproxy_protocol = \"v2\"\n\
             [listeners.tls]\ncert = \"{dir}/examples/tls/example.pem\"\nkey = \"{dir}/examples/tls/example.key\"\n\
             [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n"
        ),
        Some(&origin),
    )
    .await;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from_pem_file(format!("{dir}/examples/tls/ca.pem"))
        .unwrap();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tcp = TcpStream::connect(torii.addr).await.unwrap();
    tcp.write_all(&v2_tcp4([203, 0, 113, 50], &[0x01, 0, 2, b'h', b'2']))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(ECHO).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(echoed_xff(&resp), "203.0.113.50", "{resp}");
    assert!(resp.contains("x-forwarded-proto: https"), "{resp}");
    // Without the header, the handshake never starts: closed.
    let tcp = TcpStream::connect(torii.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
}
