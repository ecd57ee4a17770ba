//! Hostile input, both ways: raw-socket requests that try to smuggle, confuse or exhaust
//! torii, and a raw origin that lies about its framing or dies mid-body. Each case asserts
//! the exact outcome: the status torii answers, what (if anything) reached the origin, and
//! how many requests the origin saw (two where one was sent would be smuggling).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the raw origin does for one path.
#[derive(Clone)]
struct Script {
    /// Raw bytes written back, exactly as given.
    response: Vec<u8>,
    /// Close the connection after writing (a body cut short, a close-delimited body).
    close: bool,
    /// Pause before the response (and between its halves when `split`).
    delay: Duration,
    /// Write the response in two halves, `delay` apart.
    split: bool,
    /// Write this many bytes, pause this long, then write the rest.
    pause_at: Option<(usize, Duration)>,
}

impl Script {
    fn new(response: &[u8]) -> Script {
        Script {
            response: response.to_vec(),
            close: false,
            delay: Duration::ZERO,
            split: false,
            pause_at: None,
        }
    }

    fn pause_at(mut self, at: usize, pause: Duration) -> Script {
        self.pause_at = Some((at, pause));
        self
    }

    fn then_close(mut self) -> Script {
        self.close = true;
        self
    }

    fn drip(mut self, delay: Duration) -> Script {
        self.delay = delay;
        self.split = true;
        self
    }
}

/// An origin that parses only enough HTTP/1.1 to find request boundaries, records every
/// request it receives byte for byte, and answers each path with a raw script.
#[derive(Clone)]
struct RawOrigin {
    addr: SocketAddr,
    state: Arc<RawState>,
}

#[derive(Default)]
struct RawState {
    scripts: Mutex<HashMap<String, Script>>,
    /// Every request head (and body) seen, in order.
    requests: Mutex<Vec<Vec<u8>>>,
    connections: Mutex<usize>,
}

impl RawOrigin {
    async fn start() -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = RawOrigin {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(RawState::default()),
        };
        let state = origin.state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *state.connections.lock().unwrap() += 1;
                tokio::spawn(serve_raw(stream, state.clone()));
            }
        });
        origin
    }

    fn set(&self, path: &str, script: Script) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert(path.to_string(), script);
    }

    fn requests(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    fn connections(&self) -> usize {
        *self.state.connections.lock().unwrap()
    }
}

async fn serve_raw(mut stream: TcpStream, state: Arc<RawState>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let path = request
            .split(|&b| b == b' ')
            .nth(1)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let path = path.split('?').next().unwrap_or("").to_string();
        state.requests.lock().unwrap().push(request);
        let script = state
            .scripts
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or(Script::new(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\r\nok",
            ));
        tokio::time::sleep(script.delay).await;
        if let Some((at, pause)) = script.pause_at {
            if stream.write_all(&script.response[..at]).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
            if stream.write_all(&script.response[at..]).await.is_err() {
                return;
            }
        } else if script.split {
            let half = script.response.len() / 2;
            if stream.write_all(&script.response[..half]).await.is_err() {
                return;
            }
            tokio::time::sleep(script.delay).await;
            if stream.write_all(&script.response[half..]).await.is_err() {
                return;
            }
        } else if stream.write_all(&script.response).await.is_err() {
            return;
        }
        if script.close {
            return;
        }
    }
}

/// Reads one request (head, then a `Content-Length` or chunked body) from `stream`.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let mut end = head_end;
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < head_end + len {
            read_more(stream, buf).await?;
        }
        end = head_end + len;
    } else if head.contains("transfer-encoding: chunked") {
        end = loop {
            if let Some(i) = find(&buf[head_end..], b"0\r\n\r\n") {
                break head_end + i + 5;
            }
            read_more(stream, buf).await?;
        };
    }
    Some(buf.drain(..end).collect())
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn torii_to(origin: &RawOrigin, extra: &str) -> Torii {
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n{extra}\n[upstreams.app]\nservers = [\"http://{}\"]\nretries = 0\n[[routes]]\nupstream = \"app\"\n",
        origin.addr
    );
    Torii::start(&toml, None).await
}

fn status_of(text: &str) -> &str {
    text.get(9..12).unwrap_or("")
}

/// Requests that must be refused with 400 and a closed connection, never reaching the
/// origin in any form.
#[tokio::test]
async fn ambiguous_or_malformed_requests_are_refused_and_never_forwarded() {
    let origin = RawOrigin::start().await;
    let torii = torii_to(&origin, "").await;
    let cases: &[(&str, &[u8])] = &[
        ("CL and TE", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"),
        ("TE and CL (other order)", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX"),
        ("two different CLs", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("CL list with different values", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd"),
        ("signed CL", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc"),
        ("negative CL", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
        ("hex CL", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc"),
        ("CL overflow", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        ("TE gzip, chunked", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("TE chunked, gzip", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("TE identity", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"),
        ("TE xchunked", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("TE chunked twice in one field", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
        ("TE split over two fields", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE with a vertical tab", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n"),
        ("TE in HTTP/1.0", b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE name with space before colon", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("bad chunk size", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        ("chunk size overflow", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        ("chunk data longer than its size", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n"),
        ("NUL in a header value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n"),
        ("bare CR in a header value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n"),
        ("bare CR in the request line", b"GET /x\rHTTP/1.1\r\nHost: a\r\n\r\n"),
        ("control byte in the target", b"GET /x\x01y HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("obsolete line folding", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n"),
        ("space before colon", b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n"),
        ("empty header name", b"GET /x HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n"),
        ("invalid method token", b"G(T /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("target without a slash", b"GET x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("unknown HTTP version", b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n"),
        ("missing Host", b"GET /x HTTP/1.1\r\n\r\n"),
        ("two Hosts", b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("Host with a path", b"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        ("Host with userinfo", b"GET /x HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        ("absolute target disagrees with Host", b"GET http://evil/x HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    for (what, req) in cases {
        let text = raw(torii.addr, req, Duration::from_secs(3)).await;
        assert_eq!(status_of(&text), "400", "{what}: {text:?}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "{what}: one answer, then closed: {text:?}"
        );
    }
    assert_eq!(
        origin.requests(),
        Vec::<String>::new(),
        "nothing reached the origin"
    );
}

/// The classic smuggling shapes: whatever torii accepts, the origin sees exactly the
/// requests the client sent, each in one unambiguous framing.
#[tokio::test]
async fn accepted_requests_are_reframed_unambiguously() {
    let origin = RawOrigin::start().await;
    let torii = torii_to(&origin, "").await;

    // Equal repeated Content-Lengths are one length (RFC 9110 §8.6): forwarded once.
    let text = raw(
        torii.addr,
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&text), "200", "{text}");
    // A chunked body with extensions and a trailer.
    let text = raw(
        torii.addr,
        b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&text), "200", "{text}");
    // A body that looks like a second request is body, not a request.
    let text = raw(
        torii.addr,
        b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nConnection: close\r\n\r\nGET /smuggled HTTP/1.1\r\nH: a\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&text), "200", "{text}");

    let seen = origin.requests();
    assert_eq!(
        seen.len(),
        3,
        "one origin request per client request: {seen:#?}"
    );
    for request in &seen {
        let lower = request.to_ascii_lowercase();
        let cl = lower.matches("\r\ncontent-length:").count();
        let te = lower.matches("\r\ntransfer-encoding:").count();
        assert!(cl + te == 1, "exactly one framing header: {request}");
    }
    assert!(seen[0]
        .to_ascii_lowercase()
        .contains("content-length: 3\r\n"));
    assert!(seen[0].ends_with("\r\n\r\nabc"), "{}", seen[0]);
    assert!(seen[1].contains("abc"), "{}", seen[1]);
    assert!(
        !seen[1].contains("ext=1"),
        "chunk extensions are not forwarded: {}",
        seen[1]
    );
}

/// Chunk extensions are bounded: a client can't make torii buffer an endless one.
#[tokio::test]
async fn endless_chunk_extension_is_cut_off() {
    let origin = RawOrigin::start().await;
    let torii = torii_to(&origin, "").await;
    let mut req = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    req.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
    let mut stream = TcpStream::connect(torii.addr).await.unwrap();
    let _ = stream.write_all(&req).await;
    let out = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let out = String::from_utf8_lossy(out.as_deref().unwrap_or_default()).into_owned();
    assert!(
        !out.starts_with("HTTP/1.1 200"),
        "an oversized chunk extension is not accepted: {out}"
    );
    let seen = origin.requests();
    assert!(
        seen.iter()
            .all(|r| !r.ends_with("0\r\n\r\n") || !r.contains("abc")),
        "the body never reached the origin complete: {seen:?}"
    );
}

/// Headers that change what an origin serves without being in the cache key can't poison
/// the cache: torii sets `X-Forwarded-Host` and `-Proto` itself and drops the URL-override
/// headers from requests before they reach the origin.
#[tokio::test]
async fn unkeyed_headers_cannot_poison_the_cache() {
    let origin = RawOrigin::start().await;
    let torii = torii_to(&origin, "").await;
    let text = raw(
        torii.addr,
        b"GET /page HTTP/1.1\r\nHost: shop\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX-Forwarded-Port: 1337\r\nX-Forwarded-Scheme: nothttps\r\nX-Host: evil\r\nX-HTTP-Method-Override: DELETE\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&text), "200", "{text}");
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    let lower = seen[0].to_ascii_lowercase();
    assert!(lower.contains("x-forwarded-host: shop\r\n"), "{lower}");
    assert!(lower.contains("x-forwarded-proto: http\r\n"), "{lower}");
    for header in [
        "evil",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-host:",
        "x-http-method-override",
    ] {
        assert!(
            !lower.contains(header),
            "{header} reached the origin: {lower}"
        );
    }
}

/// A request header that a route puts in its cache key may reach the origin: it can
/// only change the variant stored under its own value.
#[tokio::test]
async fn keyed_override_header_is_passed_and_keyed() {
    let origin = RawOrigin::start().await;
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"http://{}\"]\n[[routes]]\nupstream = \"app\"\n[routes.cache]\nkey = {{ headers = [\"x-original-url\"] }}\n",
        origin.addr
    );
    let torii = Torii::start(&toml, None).await;
    for _ in 0..2 {
        let text = raw(
            torii.addr,
            b"GET /page HTTP/1.1\r\nHost: shop\r\nX-Original-URL: /v2\r\nConnection: close\r\n\r\n",
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(status_of(&text), "200", "{text}");
    }
    let text = raw(
        torii.addr,
        b"GET /page HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        text.contains("X-Cache: MISS") || text.contains("x-cache: MISS"),
        "{text}"
    );
    let seen = origin.requests();
    assert_eq!(seen.len(), 2, "one fetch per key value: {seen:#?}");
    assert!(seen[0].to_ascii_lowercase().contains("x-original-url: /v2"));
}

/// Web cache deception: `/account.php/x.css` is not stored because it looks static; only
/// what the origin's answer allows is stored.
#[tokio::test]
async fn path_confusion_does_not_make_a_private_page_cacheable() {
    let origin = RawOrigin::start().await;
    origin.set(
        "/account.php/x.css",
        Script::new(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 7\r\n\r\nsecret!",
        ),
    );
    origin.set(
        "/profile/x.css",
        Script::new(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: private\r\nContent-Length: 7\r\n\r\nsecret!"),
    );
    let torii = torii_to(&origin, "").await;
    for path in ["/account.php/x.css", "/profile/x.css"] {
        for _ in 0..2 {
            let req = format!("GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
            let text = raw(torii.addr, req.as_bytes(), Duration::from_secs(3)).await;
            assert_eq!(status_of(&text), "200", "{text}");
            assert!(
                !text.contains("X-Cache: HIT") && !text.contains("x-cache: HIT"),
                "{text}"
            );
        }
    }
    assert_eq!(
        origin.requests().len(),
        4,
        "every request went to the origin"
    );
}

/// Upstream responses that lie about their framing: 502 before the response started, a
/// cut connection after, never stored, and the upstream connection never reused.
#[tokio::test]
async fn lying_upstream_responses_become_502_and_are_never_cached() {
    let origin = RawOrigin::start().await;
    let cases: &[(&str, Script)] = &[
        ("/bad-status", Script::new(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok")),
        ("/not-http", Script::new(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").then_close()),
        ("/cl-and-te", Script::new(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")),
        ("/two-cls", Script::new(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")),
        ("/bad-cl", Script::new(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2x\r\n\r\nok")),
        ("/te-gzip", Script::new(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nok\r\n0\r\n\r\n").then_close()),
        ("/null-in-header", Script::new(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok")),
        ("/folded", Script::new(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok")),
        ("/closed-before-head", Script::new(b"").then_close()),
        ("/half-head", Script::new(b"HTTP/1.1 200 OK\r\nContent-Le").then_close()),
    ];
    let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 512 * 1024));
    huge.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
    origin.set("/huge-header", Script::new(&huge).then_close());
    for (path, script) in cases {
        origin.set(path, script.clone());
    }
    let torii = torii_to(&origin, "").await;
    let paths: Vec<&str> = cases
        .iter()
        .map(|(p, _)| *p)
        .chain(["/huge-header"])
        .collect();
    for path in &paths {
        let before = origin.requests().len();
        let conns_before = origin.connections();
        for _ in 0..2 {
            let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            let text = raw(torii.addr, req.as_bytes(), Duration::from_secs(5)).await;
            assert_eq!(status_of(&text), "502", "{path}: {text:?}");
            assert!(
                !text.contains("ok"),
                "{path}: no part of the lie is relayed: {text:?}"
            );
        }
        assert_eq!(
            origin.requests().len() - before,
            2,
            "{path}: a 502 is never cached, both requests reached the origin"
        );
        // Each failed exchange cost its upstream connection: nothing is read after a lie.
        assert_eq!(
            origin.connections() - conns_before,
            2,
            "{path}: connection reused"
        );
    }
}

/// A body that ends before its `Content-Length` or mid-chunk: the client sees a cut
/// connection (the head was already sent), and the next request goes to the origin again.
#[tokio::test]
async fn upstream_dying_mid_body_cuts_the_client_and_is_not_stored() {
    let origin = RawOrigin::start().await;
    origin.set(
        "/short",
        Script::new(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\nonly part",
        )
        .then_close(),
    );
    origin.set(
        "/mid-chunk",
        Script::new(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly").then_close(),
    );
    origin.set(
        "/bad-chunk",
        Script::new(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfine\r\nzz\r\n").then_close(),
    );
    let torii = torii_to(&origin, "").await;
    for path in ["/short", "/mid-chunk", "/bad-chunk"] {
        for _ in 0..2 {
            let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
            let mut stream = TcpStream::connect(torii.addr).await.unwrap();
            stream.write_all(req.as_bytes()).await.unwrap();
            let out = read_until_closed(&mut stream, Duration::from_secs(5))
                .await
                .expect("torii closes the client connection");
            let text = String::from_utf8_lossy(&out);
            if text.starts_with("HTTP/1.1 200") {
                let (head, body) = text.split_once("\r\n\r\n").unwrap();
                let lower = head.to_ascii_lowercase();
                if let Some(len) = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                {
                    let len: usize = len.trim().parse().unwrap();
                    assert!(body.len() < len, "{path}: the cut shows: {text:?}");
                } else {
                    assert!(
                        !body.ends_with("0\r\n\r\n"),
                        "{path}: no final chunk: {text:?}"
                    );
                }
            } else {
                assert_eq!(status_of(&text), "502", "{path}: {text:?}");
            }
        }
    }
    assert_eq!(origin.requests().len(), 6, "a cut body is never stored");
}

/// An upstream that sends half its head, then stalls, hits the response timeout (504).
#[tokio::test]
async fn dripping_upstream_hits_the_response_timeout() {
    let origin = RawOrigin::start().await;
    origin.set(
        "/drip",
        Script::new(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").drip(Duration::from_secs(3)),
    );
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"http://{}\"]\nretries = 0\nresponse_timeout = \"500ms\"\n[[routes]]\nupstream = \"app\"\n",
        origin.addr
    );
    let torii = Torii::start(&toml, None).await;
    let text = raw(
        torii.addr,
        b"GET /drip HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&text), "504", "{text}");
}

/// A client that sends its body slowly is cut off by `limits.body_timeout`, and the
/// origin never gets a complete request from it.
#[tokio::test]
async fn slow_body_client_is_cut_off() {
    let origin = RawOrigin::start().await;
    let torii = torii_to(&origin, "[limits]\nbody_timeout = \"300ms\"\n").await;
    let mut stream = TcpStream::connect(torii.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let out = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("torii closes a stalled upload");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || status_of(&text) == "408" || status_of(&text) == "400",
        "{text}"
    );
    assert_eq!(
        origin.requests(),
        Vec::<String>::new(),
        "no complete request reached the origin"
    );
}

/// A client that sends a stray CRLF after its body (RFC 9112 §2.2 lets servers skip it)
/// on a keep-alive connection gets its answer at once, and the connection stays usable.
#[tokio::test]
async fn stray_crlf_after_a_body_does_not_hold_the_response() {
    let origin = RawOrigin::start().await;
    let torii = torii_to(&origin, "").await;
    let mut stream = TcpStream::connect(torii.addr).await.unwrap();
    stream
        .write_all(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the response is not held back by the unread CRLF")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream
        .write_all(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the second request is answered")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(origin.requests().len(), 2);
}

/// An upstream that goes silent mid-body is cut off after `response_timeout` (nginx's
/// `proxy_read_timeout`): the client sees a truncated response long before the origin would
/// have finished, and nothing is stored.
#[tokio::test]
async fn upstream_silent_mid_body_is_cut_after_the_response_timeout() {
    let origin = RawOrigin::start().await;
    let response =
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\n0123456789";
    let head_and_some = response.len() - 6;
    origin.set(
        "/stall",
        Script::new(response).pause_at(head_and_some, Duration::from_secs(30)),
    );
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"http://{}\"]\nretries = 0\nresponse_timeout = \"300ms\"\n[[routes]]\nupstream = \"app\"\n",
        origin.addr
    );
    let torii = Torii::start(&toml, None).await;
    let mut stream = TcpStream::connect(torii.addr).await.unwrap();
    stream
        .write_all(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Far less than the origin's 30 s pause: only the stall limit ends this.
    let out = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("torii cuts the response when the upstream stalls");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(
        text.ends_with("\r\n\r\n0123"),
        "the bytes before the stall are relayed: {text:?}"
    );
}

/// Interim 1xx answers: an origin's unsolicited 100 is skipped, its 103 relayed before the
/// final answer (tests/interim.rs has the rest), a close-delimited HTTP/1.0 body is relayed
/// to its end, and a chunked body with trailers arrives whole.
#[tokio::test]
async fn interim_close_delimited_and_trailered_responses_are_relayed() {
    let origin = RawOrigin::start().await;
    origin.set(
        "/interim",
        Script::new(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"),
    );
    origin.set(
        "/until-close",
        Script::new(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nread me to the end")
            .then_close(),
    );
    origin.set(
        "/trailers",
        Script::new(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"),
    );
    let torii = torii_to(&origin, "").await;
    for (path, body) in [
        ("/interim", "final"),
        ("/until-close", "read me to the end"),
        ("/trailers", "abcde"),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let text = raw(torii.addr, req.as_bytes(), Duration::from_secs(5)).await;
        let text = match text.strip_prefix("HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n") {
            Some(rest) if path == "/interim" => rest.to_string(),
            _ => text,
        };
        // Status lines only: a random X-Request-Id may hold these digits.
        assert!(!text.contains("HTTP/1.1 100 "), "{path}: {text:?}");
        assert_eq!(status_of(&text), "200", "{path}: {text:?}");
        let (_, got) = text.split_once("\r\n\r\n").unwrap();
        let got = if text
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(got)
        } else {
            got.to_string()
        };
        assert_eq!(got, body, "{path}: {text:?}");
        assert!(
            !text.contains("100 Continue") && !text.contains("103 Early Hints"),
            "{path}: {text:?}"
        );
    }
}

/// The data of a chunked body (extensions and trailers dropped).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (line, rest) = s.split_once("\r\n").expect("a chunk-size line");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
}

/// Bytes an upstream sends past the end of a response (a second, unrequested response)
/// are never read as the answer to the next request: the connection is dropped.
#[tokio::test]
async fn bytes_past_a_response_are_never_the_next_answer() {
    let origin = RawOrigin::start().await;
    origin.set(
        "/extra",
        Script::new(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"),
    );
    origin.set(
        "/next",
        Script::new(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"),
    );
    let torii = torii_to(&origin, "").await;
    let first = raw(
        torii.addr,
        b"GET /extra HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(first.ends_with("\r\n\r\nok"), "{first:?}");
    for _ in 0..3 {
        let next = raw(
            torii.addr,
            b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(next.ends_with("\r\n\r\ngood"), "{next:?}");
    }
    assert_eq!(origin.requests().len(), 4);
    assert_eq!(
        origin.connections(),
        2,
        "the connection with stray bytes was dropped, the next reused"
    );
}

/// An upstream that answers before it has read a large upload (a 413 of its own) gets its
/// answer relayed while the upload is still going: torii watches for the response while
/// it streams the body, instead of waiting for a write the server will never take.
#[tokio::test]
async fn an_early_upstream_answer_to_an_upload_is_relayed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The head only, then the answer; the body is never read.
                let mut buf = Vec::new();
                while find(&buf, b"\r\n\r\n").is_none() {
                    if read_more(&mut stream, &mut buf).await.is_none() {
                        return;
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo much")
                    .await;
                tokio::time::sleep(Duration::from_secs(20)).await;
            });
        }
    });
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[limits]\nmax_body = \"1GiB\"\n[upstreams.app]\nservers = [\"http://{origin}\"]\nretries = 0\n[[routes]]\nupstream = \"app\"\n"
    );
    let torii = Torii::start(&toml, None).await;
    let stream = TcpStream::connect(torii.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let total = 256 * 1024 * 1024;
    let upload = tokio::spawn(async move {
        let head = format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {total}\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..total / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    // Until the whole answer is in (far less than the upload, which can't complete).
    while !out.ends_with(b"too much") {
        let n = tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf))
            .await
            .expect("the early answer arrives while the upload is still going")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), "413", "{text}");
    upload.abort();
}

/// A relayed answer to an HTTP/1 GET goes out from its raw head (no header map in
/// between): every end-to-end field once, as sent, in CRLF lines whatever the server
/// used; the connection's own fields, the server's framing and its `X-Cache` never; torii's
/// `X-Cache` and `Via` once; the body framed exactly, pipelined answers back to back.
/// Heads torii must rewrite (no `Date`, a HEAD, HTTP/2) take the header map as before.
#[tokio::test]
async fn relayed_heads_keep_every_end_to_end_field_once() {
    let origin = RawOrigin::start().await;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let head = format!(
        "HTTP/1.1 200 OK\r\nDate: {date}\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\
         Keep-Alive: timeout=5\nContent-Length: 5\r\nCache-Control: no-store\r\n\
         X-Cache: from-origin\r\nVia: 1.0 edge\r\nSet-Thing: one\nX-Multi: a\r\nx-multi: b\r\n\r\n"
    );
    origin.set("/raw", Script::new(format!("{head}hello").as_bytes()));
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nDate: {date}\r\nTransfer-Encoding: chunked\r\nCache-Control: no-store\r\n\r\n\
         3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    );
    origin.set("/chunked", Script::new(chunked.as_bytes()));
    origin.set(
        "/undated",
        Script::new(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok"),
    );
    // Hit-for-pass (a caching route, `no-store` answers) and bypass (no cache on the route).
    let caching = torii_to(&origin, "").await;
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"http://{}\"]\n\
         retries = 0\n[[routes]]\nupstream = \"app\"\n[routes.cache]\nenabled = false\n",
        origin.addr
    );
    let plain = Torii::start(&toml, None).await;
    for (torii, status) in [(&plain, "bypass"), (&caching, "miss")] {
        // Three times: the first answer makes the key hit-for-pass, the rest pass.
        let req = "GET /raw HTTP/1.1\r\nHost: a\r\n\r\n";
        let last = "GET /raw HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let text = raw(
            torii.addr,
            format!("{req}{req}{last}").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        let answers: Vec<&str> = text.split_inclusive("hello").collect();
        assert_eq!(answers.len(), 3, "{text:?}");
        // Written from the raw head: the server's spelling of a name is kept.
        assert!(answers[2].contains("\r\nSet-Thing: one\r\n"), "{text:?}");
        for answer in answers {
            let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
            assert_eq!(body, "hello", "{text:?}");
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
            assert!(
                !head.contains("\n\n") && !head.replace("\r\n", "").contains('\n'),
                "CRLF lines only: {head:?}"
            );
            let lines: Vec<String> = head
                .lines()
                .skip(1)
                .map(|l| l.to_ascii_lowercase())
                .collect();
            let field = |name: &str| -> Vec<String> {
                lines
                    .iter()
                    .filter_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
                    .collect()
            };
            assert_eq!(field("date"), [date.to_ascii_lowercase()], "{head:?}");
            assert_eq!(field("content-length"), ["5"], "{head:?}");
            assert_eq!(field("x-cache"), [status], "{head:?}");
            assert_eq!(field("via"), ["1.0 edge", "1.1 torii"], "{head:?}");
            assert_eq!(field("set-thing"), ["one"], "{head:?}");
            assert_eq!(field("x-multi"), ["a", "b"], "{head:?}");
            assert_eq!(field("cache-control"), ["no-store"], "{head:?}");
            for gone in ["x-hop", "keep-alive", "transfer-encoding"] {
                assert!(field(gone).is_empty(), "{gone}: {head:?}");
            }
            assert!(field("connection").iter().all(|v| v == "close"), "{head:?}");
        }

        let text = raw(
            torii.addr,
            b"GET /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head.to_ascii_lowercase()
                .matches("transfer-encoding: chunked")
                .count(),
            1,
            "{head:?}"
        );
        assert_eq!(dechunk(body), "abcde", "{text:?}");

        // No Date: hyper adds one, as for any answer that goes through the map.
        let text = raw(
            torii.addr,
            b"GET /undated HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let lower = text.to_ascii_lowercase();
        assert_eq!(lower.matches("\r\ndate: ").count(), 1, "{text:?}");
        assert_eq!(lower.matches("\r\nx-cache: ").count(), 1, "{text:?}");
        assert!(text.ends_with("\r\n\r\nok"), "{text:?}");

        // HEAD keeps the server's length, with no body.
        let text = raw(
            torii.addr,
            b"HEAD /raw HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("\r\ncontent-length: 5\r\n"), "{text:?}");
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        assert_eq!(lower.matches("\r\nvia: ").count(), 2, "{text:?}");

        // HTTP/1.0: the same fields, and a body the client can frame.
        let text = raw(
            torii.addr,
            b"GET /raw HTTP/1.0\r\nHost: a\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let lower = text.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.0 200 ok\r\n"), "{text:?}");
        assert!(lower.contains("\r\ncontent-length: 5\r\n"), "{text:?}");
        assert_eq!(lower.matches("\r\nx-cache: ").count(), 1, "{text:?}");
        assert!(text.ends_with("\r\n\r\nhello"), "{text:?}");

        // HTTP/2 (h2c): every field through the header map.
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri: http::Uri = format!("http://{}/raw", torii.addr).parse().unwrap();
        let resp = client.get(uri).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let h = resp.headers();
        let all = |name: &str| -> Vec<&str> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-cache"), [status.to_ascii_uppercase()], "{h:?}");
        assert_eq!(all("via"), ["1.0 edge", "1.1 torii"], "{h:?}");
        assert_eq!(all("x-multi"), ["a", "b"], "{h:?}");
        assert_eq!(all("set-thing"), ["one"], "{h:?}");
        assert!(h.get("x-hop").is_none(), "{h:?}");
    }
}

/// A client that hangs up while its request waits on a slow upstream: torii notices the
/// close (it watches the client's side while it waits) and drops the upstream exchange, so
/// the upstream sees its connection closed instead of answering into the void.
#[tokio::test]
async fn client_hanging_up_mid_request_drops_the_upstream_exchange() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"http://{origin}\"]\nretries = 0\n[[routes]]\nupstream = \"app\"\n"
    );
    let torii = Torii::start(&toml, None).await;
    let slow = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n";

    // A connection's first request.
    let mut client = TcpStream::connect(torii.addr).await.unwrap();
    client.write_all(slow).await.unwrap();
    let (mut upstream, _) = listener.accept().await.unwrap();
    assert_eq!(upstream_sees_close(&mut upstream, client).await, Some(0));

    // A request after one served on the same connection (and the same upstream one).
    let mut client = TcpStream::connect(torii.addr).await.unwrap();
    client
        .write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (mut upstream, _) = listener.accept().await.unwrap();
    assert!(read_head(&mut upstream).await.starts_with(b"GET /first "));
    let mut buf = vec![0u8; 4096];
    upstream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"ok") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "torii closed before the first answer");
        answer.extend_from_slice(&buf[..n]);
    }
    client.write_all(slow).await.unwrap();
    assert_eq!(upstream_sees_close(&mut upstream, client).await, Some(0));
    torii.stop().await;
}

/// Reads the request off `upstream`, hangs the client up, and reads `upstream` again: the
/// byte count of that read (0: closed), or `None` if nothing happened within 10 s.
async fn upstream_sees_close(upstream: &mut TcpStream, client: TcpStream) -> Option<usize> {
    assert!(read_head(upstream).await.starts_with(b"GET /slow "));
    drop(client);
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), upstream.read(&mut buf))
        .await
        .ok()
        .map(|r| r.unwrap_or(0))
}

/// Reads one request head (no body) off `upstream`.
async fn read_head(upstream: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n\r\n") {
        let n = upstream.read(&mut buf).await.unwrap();
        assert!(n > 0, "torii closed before sending the whole request");
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}
