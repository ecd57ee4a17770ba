//! Interim (1xx) answers (issue 17): an origin's `102 Processing` and `103 Early Hints` reach
//! an HTTP/1.1 client on the wire before the final answer, are never stored, and their
//! fields never leak into the final response or the stored one; a hit never replays them.
//! `100 Continue` goes to a client that sent `Expect` once (hyper's own), never twice.
//! The same for HTTP/2 clients (prior knowledge), stream by stream.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(5);

/// An origin written on a raw socket: to each request it sends `100 Continue` (if
/// `continue_first`), `102 Processing` and `103 Early Hints` (with `Link` and `X-Hint`), then
/// waits for a permit of `gate` before its final `200`, which carries its own `Link`.
struct HintingOrigin {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl HintingOrigin {
    async fn start(continue_first: bool) -> HintingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = HintingOrigin {
            addr: listener.local_addr().unwrap(),
            hits: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Semaphore::new(0)),
        };
        let (hits, gate) = (origin.hits.clone(), origin.gate.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, hits.clone(), gate.clone(), continue_first));
            }
        });
        origin
    }

    /// Lets one final answer go.
    fn release(&self) {
        self.gate.add_permits(1);
    }
}

async fn serve(mut stream: TcpStream, hits: Arc<AtomicUsize>, gate: Arc<Semaphore>, cont: bool) {
    let mut buf = Vec::new();
    loop {
        // One request head (and a Content-Length body).
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        hits.fetch_add(1, Ordering::SeqCst);
        let mut interim = String::new();
        if cont {
            interim.push_str("HTTP/1.1 100 Continue\r\n\r\n");
        }
        interim.push_str("HTTP/1.1 102 Processing\r\n\r\n");
        interim.push_str(
            "HTTP/1.1 103 Early Hints\r\nLink: </hint.css>; rel=preload; as=style\r\n\
             X-Hint: yes\r\nConnection: x-hop\r\nX-Hop: no\r\n\r\n",
        );
        if stream.write_all(interim.as_bytes()).await.is_err() {
            return;
        }
        while buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + length);
        gate.acquire().await.unwrap().forget();
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let fin = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: public, max-age=600\r\n\
             Date: {date}\r\nLink: </final.css>; rel=stylesheet\r\n\r\nhello"
        );
        if stream.write_all(fin.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn torii(origin: &HintingOrigin, cached: bool) -> Torii {
    let cache = if cached { "[cache]\n" } else { "" };
    let route_cache = if cached { "[routes.cache]\n" } else { "" };
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n{cache}\
         [upstreams.app]\nservers = [\"http://{}\"]\n[[routes]]\nupstream = \"app\"\n{route_cache}",
        origin.addr
    );
    Torii::start(&toml, None).await
}

/// Reads from `stream` into `out` until `needle` is in it.
async fn read_until(stream: &mut TcpStream, out: &mut Vec<u8>, needle: &str) {
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(out).contains(needle) {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(out)
            );
            out.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(out)));
}

/// The final response's head (from its status line on), lower-cased.
fn final_head(wire: &str) -> String {
    let at = wire.find("HTTP/1.1 200").expect("a final 200");
    let end = wire[at..].find("\r\n\r\n").unwrap() + at;
    wire[at..end].to_ascii_lowercase()
}

#[tokio::test]
async fn early_hints_reach_an_http11_client_first_and_are_never_stored() {
    let origin = HintingOrigin::start(false).await;
    let torii = torii(&origin, true).await;
    let mut client = TcpStream::connect(torii.addr).await.unwrap();
    client
        .write_all(b"GET /page HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .unwrap();
    // The 102 and the 103 arrive while the origin still holds its final answer.
    let mut wire = Vec::new();
    read_until(&mut client, &mut wire, "x-hint: yes\r\n\r\n").await;
    let interim = String::from_utf8_lossy(&wire).into_owned();
    assert!(
        interim.starts_with(
            "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\n\
             link: </hint.css>; rel=preload; as=style\r\nx-hint: yes\r\n"
        ),
        "{interim}"
    );
    assert!(!interim.contains("HTTP/1.1 200"), "{interim}");
    // Hop-by-hop fields (and the ones `Connection` names) are stripped.
    assert!(!interim.to_ascii_lowercase().contains("x-hop"), "{interim}");
    assert!(
        !interim.to_ascii_lowercase().contains("connection:"),
        "{interim}"
    );
    origin.release();
    read_until(&mut client, &mut wire, "hello").await;
    let wire = String::from_utf8_lossy(&wire).into_owned();
    assert_eq!(wire.matches("HTTP/1.1 103").count(), 1, "{wire}");
    let head = final_head(&wire);
    assert!(
        head.contains("link: </final.css>; rel=stylesheet"),
        "{head}"
    );
    assert!(!head.contains("hint"), "the 103's fields leaked: {head}");
    assert!(head.contains("x-cache: miss"), "{head}");

    // A hit: the stored object has the final answer's fields only, and no 1xx is replayed.
    let mut client = TcpStream::connect(torii.addr).await.unwrap();
    client
        .write_all(b"GET /page HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let wire = read_until_closed(&mut client, WAIT).await.unwrap();
    let wire = String::from_utf8_lossy(&wire).into_owned();
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
    assert!(!wire.contains("HTTP/1.1 1"), "{wire}");
    let head = final_head(&wire);
    assert!(head.contains("x-cache: hit"), "{head}");
    assert!(
        head.contains("link: </final.css>; rel=stylesheet"),
        "{head}"
    );
    assert!(
        !head.contains("hint"),
        "the 103's fields were stored: {head}"
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn interim_answers_on_a_pass_keep_alive_connection_go_with_their_own_request() {
    let origin = HintingOrigin::start(false).await;
    let torii = torii(&origin, false).await;
    let mut client = TcpStream::connect(torii.addr).await.unwrap();
    for round in 0..2 {
        origin.release();
        // Two paths: a default route may cache.
        let req = format!("GET /p{round} HTTP/1.1\r\nHost: example.com\r\n\r\n");
        client.write_all(req.as_bytes()).await.unwrap();
        let mut wire = Vec::new();
        read_until(&mut client, &mut wire, "hello").await;
        let wire = String::from_utf8_lossy(&wire).into_owned();
        assert!(
            wire.starts_with("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103"),
            "{round}: {wire}"
        );
        assert_eq!(wire.matches("HTTP/1.1 103").count(), 1, "{round}: {wire}");
        assert!(!final_head(&wire).contains("hint"), "{round}: {wire}");
    }
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_http10_client_gets_no_interim_answer() {
    let origin = HintingOrigin::start(false).await;
    origin.release();
    let torii = torii(&origin, false).await;
    let wire = raw(
        torii.addr,
        b"GET /old HTTP/1.0\r\nHost: example.com\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(
        wire.starts_with("HTTP/1.") && wire.contains(" 200 OK\r\n"),
        "{wire}"
    );
    assert!(!wire.contains(" 102 ") && !wire.contains(" 103 "), "{wire}");
    assert!(!wire.to_ascii_lowercase().contains("hint"), "{wire}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_once_not_twice() {
    // The origin sends its own 100 as well: torii doesn't forward `Expect`, and its
    // client already had hyper's 100.
    let origin = HintingOrigin::start(true).await;
    let torii = torii(&origin, false).await;
    let mut client = TcpStream::connect(torii.addr).await.unwrap();
    client
        .write_all(
            b"POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut wire = Vec::new();
    read_until(&mut client, &mut wire, "HTTP/1.1 100 Continue\r\n\r\n").await;
    client.write_all(b"body").await.unwrap();
    origin.release();
    let rest = read_until_closed(&mut client, WAIT).await.unwrap();
    wire.extend_from_slice(&rest);
    let wire = String::from_utf8_lossy(&wire).into_owned();
    assert_eq!(wire.matches("HTTP/1.1 100").count(), 1, "{wire}");
    assert_eq!(wire.matches("HTTP/1.1 103").count(), 1, "{wire}");
    assert!(wire.ends_with("hello"), "{wire}");
}

/// Sends `GET path` on `client`; the response, still to be awaited.
async fn h2_get(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    path: &str,
) -> h2::client::ResponseFuture {
    let req = http::Request::get(format!("http://example.com{path}"))
        .body(())
        .unwrap();
    let ready = client.clone().ready();
    *client = tokio::time::timeout(WAIT, ready).await.unwrap().unwrap();
    client.send_request(req, true).unwrap().0
}

/// The next interim head of `response`, or `None` once its final head has come.
async fn h2_interim(response: &mut h2::client::ResponseFuture) -> Option<http::Response<()>> {
    let next = std::future::poll_fn(|cx| response.poll_informational(cx));
    tokio::time::timeout(WAIT, next)
        .await
        .expect("no interim or final head")
        .map(|r| r.unwrap())
}

/// The final response: its head and its whole body.
async fn h2_final(response: h2::client::ResponseFuture) -> (http::response::Parts, Vec<u8>) {
    h2_whole(response, WAIT).await
}

#[tokio::test]
async fn early_hints_reach_an_http2_client_first_and_are_never_stored() {
    let origin = HintingOrigin::start(false).await;
    let torii = torii(&origin, true).await;
    let mut client = h2_client(&torii).await;
    let mut response = h2_get(&mut client, "/page").await;
    // The 102 and the 103 arrive while the origin still holds its final answer.
    let processing = h2_interim(&mut response).await.expect("a 102");
    assert_eq!(processing.status(), 102);
    let hints = h2_interim(&mut response).await.expect("a 103");
    assert_eq!(hints.status(), 103);
    let fields = hints.headers();
    assert_eq!(fields["link"], "</hint.css>; rel=preload; as=style");
    assert_eq!(fields["x-hint"], "yes");
    // Hop-by-hop fields (and the ones `Connection` names) are stripped: h2 forbids them.
    assert!(!fields.contains_key("connection"), "{fields:?}");
    assert!(!fields.contains_key("x-hop"), "{fields:?}");
    origin.release();
    assert!(
        h2_interim(&mut response).await.is_none(),
        "a third interim head"
    );
    let (head, body) = h2_final(response).await;
    assert_eq!(head.status, 200);
    assert_eq!(body, b"hello");
    let links: Vec<_> = head.headers.get_all("link").iter().collect();
    assert_eq!(
        links,
        ["</final.css>; rel=stylesheet"],
        "{:?}",
        head.headers
    );
    assert!(!head.headers.contains_key("x-hint"), "{:?}", head.headers);
    assert_eq!(head.headers["x-cache"], "MISS");

    // A hit, on the same connection: the final answer's fields only, and no 1xx replayed.
    let mut response = h2_get(&mut client, "/page").await;
    assert!(
        h2_interim(&mut response).await.is_none(),
        "a hit replayed a 1xx"
    );
    let (head, body) = h2_final(response).await;
    assert_eq!(head.status, 200);
    assert_eq!(body, b"hello");
    assert_eq!(head.headers["x-cache"], "HIT");
    let links: Vec<_> = head.headers.get_all("link").iter().collect();
    assert_eq!(
        links,
        ["</final.css>; rel=stylesheet"],
        "{:?}",
        head.headers
    );
    assert!(
        !head.headers.contains_key("x-hint"),
        "stored: {:?}",
        head.headers
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn interim_answers_on_concurrent_http2_streams_go_with_their_own_request() {
    let origin = HintingOrigin::start(false).await;
    let torii = torii(&origin, false).await;
    let mut client = h2_client(&torii).await;
    // Two streams in flight at once, each held at the origin until both had their hints.
    let mut first = h2_get(&mut client, "/a").await;
    let mut second = h2_get(&mut client, "/b").await;
    for response in [&mut first, &mut second] {
        assert_eq!(h2_interim(response).await.unwrap().status(), 102);
        assert_eq!(h2_interim(response).await.unwrap().status(), 103);
    }
    origin.release();
    origin.release();
    for response in [first, second] {
        let mut response = response;
        assert!(
            h2_interim(&mut response).await.is_none(),
            "a third interim head"
        );
        let (head, body) = h2_final(response).await;
        assert_eq!(head.status, 200);
        assert_eq!(body, b"hello");
        assert!(!head.headers.contains_key("x-hint"), "{:?}", head.headers);
    }
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_http2_request_without_interim_answers_is_unchanged() {
    // No origin hint at all: a plain answer, no interim head.
    let origin = Origin::start().await;
    origin.set("/plain", Reply::new("plain"));
    let torii = Torii::to(&origin, "").await;
    let mut client = h2_client(&torii).await;
    for _ in 0..3 {
        let mut response = h2_get(&mut client, "/plain").await;
        assert!(h2_interim(&mut response).await.is_none());
        let (head, body) = h2_final(response).await;
        assert_eq!(head.status, 200);
        assert_eq!(body, b"plain");
    }
}
