//! torii's upstream connection pool, against hand-written HTTP/1 origins whose every byte
//! and connection the test controls: keep-alive reuse, origin-form request targets, the
//! idle timeout, and a keep-alive connection the origin closed while it sat in the pool
//! (the request must go out again on a new connection, never become a 502).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use torii::upstream::{Group, ReqBody};

/// What a raw origin saw: connections accepted, request lines, and connections that ended.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    closed: AtomicUsize,
    lines: Mutex<Vec<String>>,
}

/// When to close a connection the origin answered on (keep-alive, not `Connection: close`).
struct Close {
    /// Waited for before closing.
    go: mpsc::Receiver<()>,
    /// Written to just before closing, so that the test's runtime learns of it in the
    /// same batch of socket events as the close, and first.
    signal: std::os::unix::net::UnixStream,
}

/// A blocking HTTP/1.1 origin on its own threads (so it runs whatever the test's runtime
/// does): answers every request `200 ok` with keep-alive, and after `close_after`
/// answers on a connection (if set) closes it: at once, or as `close` says.
struct RawOrigin {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl RawOrigin {
    fn start(close_after: Option<usize>, close: Option<Close>) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        let close = close.map(|rx| Arc::new(Mutex::new(rx)));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let close = close.clone();
                std::thread::spawn(move || serve(stream, &state, close_after, close));
            }
        });
        RawOrigin { addr, seen }
    }

    fn accepted(&self) -> usize {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.seen.closed.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    seen: &Seen,
    close_after: Option<usize>,
    close: Option<Arc<Mutex<Close>>>,
) {
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut answered = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.lines.lock().unwrap().push(line.trim_end().to_string());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
        {
            break;
        }
        answered += 1;
        if close_after == Some(answered) {
            if let Some(close) = &close {
                let mut close = close.lock().unwrap();
                let _ = close.go.recv();
                let _ = close.signal.write_all(b"x");
            }
            let _ = out.shutdown(std::net::Shutdown::Both);
            break;
        }
    }
    // Wait for the peer to go (or the shutdown above) before counting the close.
    let _ = reader.read(&mut [0u8; 1]);
    seen.closed.fetch_add(1, Ordering::SeqCst);
}

/// A group over `origin` (from a real config, with `extra` group keys).
fn group(origin: SocketAddr, extra: &str) -> (Group, torii::config::ServerAddr) {
    let toml = format!(
        "[upstreams.app]\nservers = [\"http://{origin}\"]\n{extra}\n[[routes]]\nupstream = \"app\"\n"
    );
    let config = torii::config::load_str("test.toml", &toml).unwrap_or_else(|e| panic!("{e}"));
    let (name, upstream) = config.upstreams.into_iter().next().unwrap();
    let addr = upstream.servers[0].addr.clone();
    (Group::new(name, upstream), addr)
}

fn get(path: &str) -> Request<ReqBody> {
    let mut req = Request::new(ReqBody::Empty);
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert(http::header::HOST, "app".parse().unwrap());
    req
}

/// One exchange through `group.forward` (the group's one server), body read to the end.
async fn exchange(
    group: &Group,
    _addr: &torii::config::ServerAddr,
    path: &str,
) -> Result<String, String> {
    let (mut parts, body) = get(path).into_parts();
    let resp = group
        .forward(
            &mut parts,
            body,
            &torii::upstream::PickContext::default(),
            torii::upstream::HeadAs::Map,
            torii::upstream::Patience::Queue,
            None,
        )
        .await
        .map_err(|e| torii::upstream::error_chain(&e))?
        .response;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// torii proxying everything to `origin` without caching; `upstream` is added to the
/// group's settings.
async fn proxy(origin: SocketAddr, upstream: &str) -> Torii {
    Torii::start(
        &format!(
            "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\nmemory = \"0\"\n\
             [upstreams.app]\nservers = [\"http://{origin}\"]\n{upstream}[[routes]]\nupstream = \"app\"\n"
        ),
        None,
    )
    .await
}

/// Lets the connection's driver task see that the exchange is over and pool the
/// connection again.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection_in_origin_form() {
    let origin = RawOrigin::start(None, None);
    let (group, addr) = group(origin.addr, "");
    for i in 0..20 {
        let path = format!("/item/{i}?q=1");
        assert_eq!(exchange(&group, &addr, &path).await.unwrap(), "ok");
        settle().await;
    }
    assert_eq!(origin.accepted(), 1, "20 requests, one connection");
    let lines = origin.seen.lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[3], "GET /item/3?q=1 HTTP/1.1", "origin-form target");
}

#[tokio::test]
async fn requests_through_the_proxy_reuse_the_upstream_connection() {
    let origin = RawOrigin::start(None, None);
    let torii = proxy(origin.addr, "").await;
    for i in 0..10 {
        // A new client connection each time: only the upstream side is kept alive.
        let (status, _, body) = support::get(&torii.url(&format!("/p{i}?x=y"))).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.accepted(), 1, "10 requests, one upstream connection");
    let lines = origin.seen.lines.lock().unwrap().clone();
    assert_eq!(lines[9], "GET /p9?x=y HTTP/1.1");
    torii.stop().await;
}

/// The keep-alive race, made certain: the origin closes the pooled connection while the
/// (single-threaded) runtime is blocked, and signals the test on another socket just
/// before. The runtime learns of both in one batch, wakes the test first, and the test's
/// next request takes the connection from the pool before its driver task has run to see
/// the close. hyper then finds it closed before writing a byte and gives the request back:
/// the pool must send it again on a new connection (hyper-util's
/// `retry_canceled_requests`), or the race is a 502.
#[tokio::test(flavor = "current_thread")]
async fn a_request_on_a_connection_closed_while_idle_goes_out_on_a_new_one() {
    let (close, go) = mpsc::channel();
    let (signal, theirs) = tokio::net::UnixStream::pair().unwrap();
    let theirs = theirs.into_std().unwrap();
    theirs.set_nonblocking(false).unwrap();
    let origin = RawOrigin::start(Some(1), Some(Close { go, signal: theirs }));
    // No retries on another try: the pool alone must save the request.
    let (group, addr) = group(origin.addr, "retries = 0");
    assert_eq!(exchange(&group, &addr, "/one").await.unwrap(), "ok");
    settle().await;
    close.send(()).unwrap();
    // Blocks the runtime: the connection's driver can't notice the close.
    while origin.closed() < 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    signal.readable().await.unwrap();
    assert_eq!(
        exchange(&group, &addr, "/two").await,
        Ok("ok".to_string()),
        "a closed idle connection became an error"
    );
    assert_eq!(origin.accepted(), 2, "the retry opened a new connection");
    let lines = origin.seen.lines.lock().unwrap().clone();
    assert_eq!(lines, ["GET /one HTTP/1.1", "GET /two HTTP/1.1"]);
}

/// An origin that closes every keep-alive connection right after its answer (without
/// saying `Connection: close`): through the proxy, with retries off, every request still
/// succeeds.
#[tokio::test]
async fn an_origin_closing_after_every_answer_costs_no_errors() {
    let origin = RawOrigin::start(Some(1), None);
    let torii = proxy(origin.addr, "retries = 0\n").await;
    for i in 0..30 {
        let (status, _, body) = support::get(&torii.url(&format!("/r{i}"))).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, &b"ok"[..]),
            "request {i}"
        );
        if i % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(origin.accepted(), 30);
    torii.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_pool_idle_timeout() {
    let origin = RawOrigin::start(None, None);
    let (group, addr) = group(origin.addr, "pool_idle_timeout = \"200ms\"");
    assert_eq!(exchange(&group, &addr, "/a").await.unwrap(), "ok");
    settle().await;
    assert_eq!(origin.closed(), 0, "kept while fresh");
    // Nothing takes it again: the sweep closes it.
    for _ in 0..100 {
        if origin.closed() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        origin.closed(),
        1,
        "idle connection outlived pool_idle_timeout"
    );
    assert_eq!(exchange(&group, &addr, "/b").await.unwrap(), "ok");
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test]
async fn pool_max_idle_zero_keeps_nothing() {
    let origin = RawOrigin::start(None, None);
    let (group, addr) = group(origin.addr, "pool_max_idle = 0");
    for _ in 0..3 {
        assert_eq!(exchange(&group, &addr, "/a").await.unwrap(), "ok");
        settle().await;
    }
    assert_eq!(origin.accepted(), 3);
}
