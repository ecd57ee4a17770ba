//! Every limit and timeout, and the error answers: 400, 413, 431, 502, 504.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn oversized_head_and_too_many_headers_refused() {
    let origin = Origin::start().await;
    let torii = Torii::to(
        &origin,
        "[limits]\nmax_header_bytes = \"8KiB\"\nmax_headers = 10\n",
    )
    .await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let text = raw(torii.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..20 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let text = raw(torii.addr, many.as_bytes(), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(origin.hits("/"), 0);
}

#[tokio::test]
async fn body_over_limit_is_413() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "[limits]\nmax_body = \"1KiB\"\n").await;
    // Declared length over the limit: refused before anything reaches the origin.
    let req = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n";
    let text = raw(torii.addr, req, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert_eq!(origin.hits("/upload"), 0);
    // Chunked body that grows past the limit while streaming.
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'x'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let text = raw(torii.addr, &req, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // At the limit: passes.
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 1024\r\n\r\n"
            .to_vec();
    req.extend_from_slice(&[b'x'; 1024]);
    let text = raw(torii.addr, &req, Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("1024"),
        "{text}"
    );
}

#[tokio::test]
async fn slowloris_cut_by_header_timeout() {
    let origin = Origin::start().await;
    let torii = Torii::to(
        &origin,
        "[limits]\nheader_timeout = \"300ms\"\nidle_timeout = \"10s\"\n",
    )
    .await;
    let mut s = TcpStream::connect(torii.addr).await.unwrap();
    let start = Instant::now();
    let mut closed = false;
    // Drip a header byte every 100 ms: never completes.
    for b in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slowloris client was not cut off");
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(origin.hits("/"), 0);
}

#[tokio::test]
async fn idle_keepalive_closed_after_idle_timeout_but_not_before_header_timeout_logic() {
    let origin = Origin::start().await;
    let torii = Torii::to(
        &origin,
        "[limits]\nheader_timeout = \"5s\"\nidle_timeout = \"300ms\"\n",
    )
    .await;
    let mut s = TcpStream::connect(torii.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Now idle: closed by the idle timeout (well before the 5 s header timeout).
    let rest = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(rest.is_some(), "idle connection stayed open");
}

#[tokio::test]
async fn refused_upstream_is_502() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let toml = format!("[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.dead]\nservers = [\"{closed_port}\"]\n[[routes]]\nupstream = \"dead\"\n");
    let torii = Torii::start(&toml, None).await;
    let (status, headers, body) = get(&torii.url("/")).await;
    assert_eq!(status, 502);
    assert_eq!(headers["via"], "1.1 torii");
    assert_eq!(body, "502 Bad Gateway\n");
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let origin = Origin::start().await;
    let toml = "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"{origin}\"]\nresponse_timeout = \"200ms\"\n[[routes]]\nupstream = \"app\"\n";
    let torii = Torii::start(toml, Some(&origin)).await;
    let (status, _, body) = get(&torii.url("/slow?ms=2000")).await;
    assert_eq!(status, 504);
    assert_eq!(body, "504 Gateway Timeout\n");
    let (status, _, _) = get(&torii.url("/slow?ms=10")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A listener whose accept queue is full and never drained: further SYNs are dropped,
    // so connecting hangs until torii's connect timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let toml = format!("[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"{addr}\"]\nconnect_timeout = \"300ms\"\n[[routes]]\nupstream = \"app\"\n");
    let torii = Torii::start(&toml, None).await;
    let start = Instant::now();
    let (status, _, _) = get(&torii.url("/")).await;
    assert_eq!(status, 504);
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(socket);
}

#[tokio::test]
async fn max_connections_caps_open_connections() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "[limits]\nmax_connections = 2\n").await;
    let mut a = TcpStream::connect(torii.addr).await.unwrap();
    let mut b = TcpStream::connect(torii.addr).await.unwrap();
    for s in [&mut a, &mut b] {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        assert!(s.read(&mut buf).await.unwrap() > 0);
    }
    // The third waits in the backlog: no answer while two are open.
    let mut c = TcpStream::connect(torii.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf))
            .await
            .is_err()
    );
    drop(a);
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn malformed_and_ambiguous_requests() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let cases: &[(&str, &[u8])] = &[
        ("two different Content-Lengths", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("Transfer-Encoding not ending in chunked", b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("absolute target disagrees with Host", b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("bad chunk size", b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        ("garbage request line", b"GET\x00 / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        ("obsolete line folding", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n"),
    ];
    for (what, req) in cases {
        let text = raw(torii.addr, req, Duration::from_secs(3)).await;
        let status = text.get(9..12).unwrap_or("");
        assert!(
            status == "400" || (text.is_empty() && *what == "bad chunk size"),
            "{what}: {text:?}"
        );
    }
    assert_eq!(
        origin.hits("/"),
        0,
        "nothing malformed reached the origin's /"
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_never_forwarded_ambiguously() {
    // Both framings: refused with 400 and the connection closed (vendor/hyper patch 2), so
    // the smuggled second request is never read and nothing reaches the origin.
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let req = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let text = raw(torii.addr, req, Duration::from_secs(3)).await;
    let lower = text.to_ascii_lowercase();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        !lower.contains("content-length: 4\n"),
        "the origin never saw the Content-Length: {text}"
    );
    assert_eq!(origin.hits("/smuggled"), 0, "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
}

/// Reads from `s` until `n` responses with the body `hello` have arrived (or `wait` passed).
async fn read_hellos(s: &mut TcpStream, n: usize, wait: Duration) -> String {
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&got)
        .matches("\r\n\r\nhello")
        .count()
        < n
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(k)) if k > 0 => got.extend_from_slice(&buf[..k]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// How many connections hibernate in `torii` now (`torii_connections_hibernated`).
async fn hibernated(torii: &Torii) -> f64 {
    torii
        .metric("torii_connections_hibernated")
        .await
        .expect("/metrics has torii_connections_hibernated")
}

/// Waits until `n` connections hibernate in `torii` (each does after 250 ms idle).
async fn wait_hibernated(torii: &Torii, n: usize) {
    wait_until_async(
        &format!("{n} connection(s) hibernate"),
        PATIENCE,
        || async { hibernated(torii).await == n as f64 },
    )
    .await;
}

#[tokio::test]
async fn hibernated_keepalive_connection_serves_its_next_requests() {
    // Idle for more than 250 ms, a keep-alive connection hibernates (torii holds its socket
    // alone, without hyper's state); the next request on it, and pipelined ones, are
    // answered as on a fresh connection.
    let origin = Origin::start().await;
    origin.set("/h", Reply::new("hello"));
    let torii = Torii::to(&origin, "").await;
    assert_eq!(hibernated(&torii).await, 0.0);
    let mut s = TcpStream::connect(torii.addr).await.unwrap();
    let req = "GET /h HTTP/1.1\r\nHost: a\r\n\r\n";
    for n in [1, 1, 3, 1] {
        s.write_all(req.repeat(n).as_bytes()).await.unwrap();
        let got = read_hellos(&mut s, n, Duration::from_secs(5)).await;
        assert_eq!(got.matches("HTTP/1.1 200").count(), n, "{got}");
        wait_hibernated(&torii, 1).await;
    }
    assert_eq!(origin.hits("/h"), 6);
}

#[tokio::test]
async fn hibernated_connection_keeps_the_header_timeout() {
    let origin = Origin::start().await;
    origin.set("/h", Reply::new("hello"));
    let torii = Torii::to(
        &origin,
        "[limits]\nheader_timeout = \"300ms\"\nidle_timeout = \"60s\"\n",
    )
    .await;
    // A head started after hibernation is still cut by the header timeout (long before
    // the idle timeout).
    let mut s = TcpStream::connect(torii.addr).await.unwrap();
    s.write_all(b"GET /h HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_hellos(&mut s, 1, Duration::from_secs(5))
        .await
        .contains("200"));
    wait_hibernated(&torii, 1).await;
    s.write_all(b"GET /h HTTP/1.1\r\nHo").await.unwrap();
    assert!(
        read_until_closed(&mut s, Duration::from_secs(20))
            .await
            .is_some(),
        "cut by the header timeout, not the idle timeout"
    );
    assert_eq!(hibernated(&torii).await, 0.0, "it woke up, then was closed");
}

#[tokio::test]
async fn hibernated_connection_keeps_the_idle_timeout() {
    let origin = Origin::start().await;
    origin.set("/h", Reply::new("hello"));
    let torii = Torii::to(&origin, "[limits]\nidle_timeout = \"1500ms\"\n").await;
    // A hibernated connection is closed at its idle timeout, not before.
    let mut s = TcpStream::connect(torii.addr).await.unwrap();
    s.write_all(b"GET /h HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_hellos(&mut s, 1, Duration::from_secs(5))
        .await
        .contains("200"));
    let start = Instant::now();
    wait_hibernated(&torii, 1).await;
    assert!(read_until_closed(&mut s, Duration::from_secs(20))
        .await
        .is_some());
    let idle = start.elapsed();
    assert!(idle > Duration::from_millis(1300), "{idle:?}");
    assert_eq!(hibernated(&torii).await, 0.0, "closed while hibernating");
}

#[tokio::test]
async fn drain_closes_hibernated_connections() {
    let origin = Origin::start().await;
    origin.set("/h", Reply::new("hello"));
    let torii = Torii::to(&origin, "").await;
    let server = torii.server.clone();
    let mut s = TcpStream::connect(torii.addr).await.unwrap();
    s.write_all(b"GET /h HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_hellos(&mut s, 1, Duration::from_secs(5))
        .await
        .contains("200"));
    wait_hibernated(&torii, 1).await;
    // The drain does not wait for it (its timeout is 30 s): it closes it at once.
    let stop = tokio::spawn(torii.stop());
    assert!(read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .is_some());
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .expect("the drain waited on a hibernated connection")
        .unwrap();
    assert_eq!(server.shared().drain.hibernated_connections(), 0);
}
