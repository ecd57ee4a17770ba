//! The proxy core through real sockets: forwarding, headers, routing, pooling, protocols.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn forwards_with_proxy_headers() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let (status, headers, body) = get(&torii.url("/echo?x=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["via"], "1.1 torii");
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("GET /echo?x=1 HTTP/1.1\n"), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(
        body.contains(&format!("x-forwarded-host: {}\n", torii.addr)),
        "{body}"
    );
    assert!(
        body.contains(&format!("host: {}\n", torii.addr)),
        "the downstream Host passes: {body}"
    );
    assert!(body.contains("via: 1.1 torii\n"), "{body}");
}

#[tokio::test]
async fn hop_by_hop_headers_removed_both_ways() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let req = b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nX-Forwarded-For: 10.1.1.1\r\nConnection: close\r\n\r\n";
    let text = raw(torii.addr, req, Duration::from_secs(5)).await;
    let lower = text.to_ascii_lowercase();
    assert!(!lower.contains("x-secret"), "{text}");
    assert!(!lower.contains("keep-alive: 5"), "{text}");
    assert!(!lower.contains("proxy-connection"), "{text}");
    assert!(!lower.contains("te: trailers"), "{text}");
    assert!(
        lower.contains("x-forwarded-for: 10.1.1.1, 127.0.0.1"),
        "appended: {text}"
    );

    let (_, headers, _) = get(&torii.url("/plain")).await;
    assert!(!headers.contains_key("x-hop"), "{headers:?}");
    assert!(!headers.contains_key("keep-alive"), "{headers:?}");
}

#[tokio::test]
async fn host_header_rewritten_per_route() {
    let origin = Origin::start().await;
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\n[upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\npath = \"/echo\"\nupstream = \"app\"\nhost_header = \"internal.example\"\n",
        Some(&origin),
    )
    .await;
    let (_, _, body) = get(&torii.url("/echo")).await;
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("host: internal.example\n"), "{body}");
    assert!(
        body.contains(&format!("x-forwarded-host: {}\n", torii.addr)),
        "{body}"
    );
}

#[tokio::test]
async fn routing_precedence_fixed_redirect_and_404() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let toml = format!(
        r#"
[server]
admin = "off"
[upstreams.a]
servers = ["{}"]
[upstreams.b]
servers = ["{}"]
[[routes]]
host = "*.example.com"
upstream = "a"
[[routes]]
host = "api.example.com"
path = "/v2"
upstream = "b"
[[routes]]
host = "static.example.com"
respond = {{ status = 203, body = "fixed", headers = {{ "x-fixed" = "yes" }} }}
[[routes]]
host = "old.example.com"
redirect = {{ to = "https://new.example.com", status = 308 }}
[[routes]]
host = "localhost"
path = "/name"
upstream = "b"
"#,
        a.url(),
        b.url()
    );
    let torii = Torii::start(&toml, None).await;
    let ask = |host: &'static str, path: &'static str| {
        let addr = torii.addr;
        async move {
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            raw(addr, req.as_bytes(), Duration::from_secs(5)).await
        }
    };
    assert!(ask("api.example.com", "/v2/name")
        .await
        .ends_with("\r\n\r\nb"));
    assert!(ask("api.example.com", "/v1/name")
        .await
        .ends_with("\r\n\r\na"));
    assert!(ask("www.example.com", "/name").await.ends_with("\r\n\r\na"));
    let fixed = ask("static.example.com", "/anything").await;
    assert!(fixed.starts_with("HTTP/1.1 203"), "{fixed}");
    assert!(
        fixed.contains("x-fixed: yes") && fixed.ends_with("fixed"),
        "{fixed}"
    );
    let redirect = ask("old.example.com", "/p?q=1").await;
    assert!(redirect.starts_with("HTTP/1.1 308"), "{redirect}");
    assert!(
        redirect.contains("location: https://new.example.com/p?q=1"),
        "{redirect}"
    );
    assert!(ask("localhost:8080", "/name").await.ends_with("\r\n\r\nb"));
    let none = ask("unknown.org", "/").await;
    assert!(none.starts_with("HTTP/1.1 404"), "{none}");
    assert!(none.contains("via: 1.1 torii"), "{none}");
    assert_eq!(a.hits("/"), 0);
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let client = client();
    for i in 0..200 {
        let resp = client
            .get(torii.url(&format!("/p{i}")).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    // Concurrency too: 20 at a time.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = client.clone();
        let url = torii.url(&format!("/c{i}"));
        tasks.push(tokio::spawn(async move {
            client
                .get(url.parse().unwrap())
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let conns = origin.connections();
    assert!(
        conns <= 110,
        "300 requests opened {conns} origin connections"
    );
    assert!(
        conns < 300 / 2,
        "300 requests opened {conns} origin connections"
    );
}

#[tokio::test]
async fn chunked_bodies_both_ways_and_expect_continue() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let mut s = TcpStream::connect(torii.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("200 OK"), "{text}");
    assert!(text.contains("hello world"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("expect: 100-continue"),
        "Expect is not forwarded: {text}"
    );

    // A streamed (chunked) response comes back chunked when its length is unknown.
    let stream = futures_util::stream::iter(
        (0..3).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abc")))),
    );
    let req = Request::post(torii.url("/upload"))
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "9");
}

#[tokio::test]
async fn pipelined_requests_answered_in_order() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let mut req = Vec::new();
    for i in 0..24 {
        req.extend_from_slice(
            format!(
                "GET /slow?ms={} HTTP/1.1\r\nHost: a\r\nX-N: {i}\r\n\r\n",
                (24 - i) * 2
            )
            .as_bytes(),
        );
        req.extend_from_slice(format!("GET /echo?n={i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    }
    req.extend_from_slice(b"GET /echo?n=last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let text = raw(torii.addr, &req, Duration::from_secs(10)).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 49, "{text}");
    let mut last = 0;
    for i in 0..24 {
        let at = text
            .find(&format!("GET /echo?n={i} "))
            .unwrap_or_else(|| panic!("missing {i}"));
        assert!(at > last, "response {i} out of order");
        last = at;
    }
    assert!(text.find("n=last").unwrap() > last);
}

/// Large bodies are queued behind the bytes before them instead of copied into hyper's
/// write buffer (hyper patch 10): pipelined behind and ahead of small ones, as hits, passes
/// and chunked streams, every response still comes whole and in order.
#[tokio::test]
async fn pipelined_large_and_small_bodies_come_whole_and_in_order() {
    let origin = Origin::start().await;
    let body = |n: usize, seed: u8| -> Bytes {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8 ^ seed)
            .collect::<Vec<u8>>()
            .into()
    };
    let cached = "public, max-age=60";
    let paths = [
        ("/big-hit", body(300_000, 1), cached, false),
        ("/small-hit", body(100, 2), cached, false),
        ("/big-pass", body(200_000, 3), "no-store", false),
        ("/big-chunked", body(150_000, 4), "no-store", true),
        ("/small-pass", body(10, 5), "no-store", false),
    ];
    for (path, body, cc, chunked) in &paths {
        let reply = Reply::new(body.clone()).header("cache-control", cc);
        origin.set(path, if *chunked { reply.chunked() } else { reply });
    }
    let torii = Torii::to(&origin, "").await;
    for (path, ..) in &paths {
        assert_eq!(get(&torii.url(path)).await.0, StatusCode::OK);
    }
    let mut req = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..3 {
        for (path, body, ..) in &paths {
            req.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            expected.push((*path, body.clone()));
        }
    }
    req.extend_from_slice(b"GET /small-hit HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    expected.push(("/small-hit", paths[1].1.clone()));

    let mut stream = TcpStream::connect(torii.addr).await.unwrap();
    stream.write_all(&req).await.unwrap();
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut wire))
        .await
        .expect("torii closes after the last response")
        .unwrap();
    let mut rest = &wire[..];
    for (i, (path, body)) in expected.iter().enumerate() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("response {i} ({path}): no head"));
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        rest = &rest[end + 4..];
        assert!(
            head.starts_with("http/1.1 200"),
            "response {i} ({path}): {head}"
        );
        let got = if head.contains("transfer-encoding: chunked") {
            let mut got = Vec::new();
            loop {
                let line = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size = std::str::from_utf8(&rest[..line]).unwrap();
                let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
                rest = &rest[line + 2..];
                got.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
                if size == 0 {
                    break;
                }
            }
            got
        } else {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap_or_else(|| panic!("response {i} ({path}): no length: {head}"))
                .parse()
                .unwrap();
            let got = rest[..len].to_vec();
            rest = &rest[len..];
            got
        };
        assert!(
            got == body[..],
            "response {i} ({path}): body differs ({} bytes)",
            got.len()
        );
    }
    assert!(
        rest.is_empty(),
        "{} bytes after the last response",
        rest.len()
    );

    // A request hyper can't parse, pipelined behind a large body: its 400 comes after the
    // whole body, not in the middle of it.
    let mut stream = TcpStream::connect(torii.addr).await.unwrap();
    stream
        .write_all(
            b"GET /big-hit HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nBad Name: x\r\n\r\n",
        )
        .await
        .unwrap();
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut wire))
        .await
        .expect("torii closes after the 400")
        .unwrap();
    let end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &paths[0].1;
    assert!(wire.len() > end + body.len(), "{} bytes", wire.len());
    assert!(
        wire[end..end + body.len()] == body[..],
        "the body comes whole"
    );
    assert!(
        wire[end + body.len()..].starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&wire[end + body.len()..])
    );
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = Request::post(torii.url("/echo"))
        .body(Full::new(Bytes::from_static(b"over h2")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["via"], "1.1 torii");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with("POST /echo HTTP/1.1"),
        "forwarded as HTTP/1.1: {body}"
    );
    assert!(body.contains(&format!("host: {}", torii.addr)), "{body}");
    assert!(body.ends_with("over h2"), "{body}");
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", torii.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg.into_text().unwrap().as_str(), format!("ping {i}"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn drain_lets_in_flight_request_finish() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let url = torii.url("/slow?ms=500");
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = torii.addr;
    torii.stop().await;
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slow done");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
