//! Test support: a real in-process origin, torii started on real sockets, raw clients.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type Body = BoxBody<Bytes, Infallible>;

/// A real HTTP origin on 127.0.0.1:0 that counts connections and requests per path.
///
/// Paths: `/echo` (request line and headers as text), `/slow?ms=N`, `/big?bytes=N`
/// (streamed, 64 KiB chunks), `/upload` (reads the body, answers its length),
/// `/status/NNN`, `/ws` (WebSocket echo), `/name` (the origin's name); anything else 200 "ok".
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<OriginState>,
}

#[derive(Default)]
struct OriginState {
    connections: AtomicUsize,
    hits: Mutex<HashMap<String, usize>>,
    /// Programmable paths (`Origin::set`, `Origin::set_fn`), consulted before the fixed ones.
    replies: Mutex<HashMap<String, ReplyFn>>,
    /// Method and headers of every request to a programmable path.
    requests: Mutex<HashMap<String, Vec<(http::Method, http::HeaderMap)>>>,
    /// (in flight now, most ever in flight) per programmable path.
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
    /// Body bytes `/big` has produced, over all requests.
    big_bytes: std::sync::atomic::AtomicU64,
    /// Added to the time in the `Date` header of each answer (nanoseconds): moved with
    /// `advance_clock`, so that an origin keeps agreeing with the proxy's advanced clock.
    date_offset: std::sync::atomic::AtomicU64,
    /// The accept loop and every connection task, so `kill` can stop them all.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// Returned by the origin's service to make hyper drop the connection without answering.
#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("origin hangs up")
    }
}

impl std::error::Error for HangUp {}

type ReplyFn = Arc<dyn Fn(&http::request::Parts) -> Reply + Send + Sync>;

/// What a programmable origin path answers; set at run time with `Origin::set`.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Hold each request until this many requests to the path are in flight at once
    /// (or 5 s pass): proves requests reach the origin concurrently, without timing.
    pub gate: usize,
    /// Send the body in this many pieces, `trickle.1` apart.
    pub trickle: (usize, Duration),
    /// Send the body chunked, without `Content-Length`.
    pub chunked: bool,
    /// Read the request, then close the connection without answering (after `delay`).
    pub hang_up: bool,
}

impl Reply {
    /// 200 with `body`.
    pub fn new(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            gate: 0,
            trickle: (1, Duration::ZERO),
            chunked: false,
            hang_up: false,
        }
    }

    /// Closes the connection without answering, after reading the request.
    pub fn hang_up(mut self) -> Reply {
        self.hang_up = true;
        self
    }

    /// Sends the body chunked, without `Content-Length`.
    pub fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn gate(mut self, n: usize) -> Reply {
        self.gate = n;
        self
    }

    /// Sends the body in `pieces` pieces, `every` apart (the head goes out at once).
    pub fn trickle(mut self, pieces: usize, every: Duration) -> Reply {
        self.trickle = (pieces.max(1), every);
        self
    }
}

impl Origin {
    pub async fn start() -> Origin {
        Origin::named("origin").await
    }

    pub async fn named(name: &str) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let origin = Origin {
            addr,
            name: name.to_string(),
            state: state.clone(),
        };
        origin.accept(listener);
        origin
    }

    fn accept(&self, listener: TcpListener) {
        let state = self.state.clone();
        let name = self.name.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let conn_state = state.clone();
                let name = name.clone();
                let conn = tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, conn_state.clone(), name.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
                let mut tasks = state.tasks.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.push(conn.abort_handle());
            }
        });
        self.state.tasks.lock().unwrap().push(task.abort_handle());
    }

    /// Dies: closes the listening socket (new connections are refused) and every open
    /// connection, without answering requests in flight.
    pub fn kill(&self) {
        for t in self.state.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Comes back on the same address after `kill`.
    pub async fn revive(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.accept(listener);
    }

    /// Requests received on every path.
    pub fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().values().sum()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Body bytes `/big` has produced so far (handed to hyper to send), over all requests.
    pub fn big_bytes(&self) -> u64 {
        self.state.big_bytes.load(Ordering::SeqCst)
    }

    /// Dates its answers `by` later from now on (see `Torii::advance_clock`).
    pub fn advance_clock(&self, by: Duration) {
        self.state
            .date_offset
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Makes `path` (without query) answer `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.set_fn(path, move |_| reply.clone());
    }

    /// Makes `path` (without query) answer what `f` returns for each request.
    pub fn set_fn(
        &self,
        path: &str,
        f: impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
    ) {
        self.state
            .replies
            .lock()
            .unwrap()
            .insert(path.to_string(), Arc::new(f));
    }

    /// Method and headers of each request to programmable `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<(http::Method, http::HeaderMap)> {
        self.state
            .requests
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// The most requests to programmable `path` that were in flight at once.
    pub fn max_in_flight(&self, path: &str) -> usize {
        self.state
            .in_flight
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |&(_, max)| max)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed()
}

fn query_num(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix(&format!("{key}="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<OriginState>,
    name: String,
) -> Result<Response<Body>, HangUp> {
    let offset = Duration::from_nanos(state.date_offset.load(Ordering::SeqCst));
    let mut resp = answer(req, state, name).await?;
    if !offset.is_zero() && !resp.headers().contains_key(http::header::DATE) {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() + offset);
        resp.headers_mut()
            .insert(http::header::DATE, date.parse().unwrap());
    }
    Ok(resp)
}

async fn answer(
    mut req: Request<Incoming>,
    state: Arc<OriginState>,
    name: String,
) -> Result<Response<Body>, HangUp> {
    let path = req.uri().path().to_string();
    *state.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let programmed = state.replies.lock().unwrap().get(&path).cloned();
    if let Some(f) = programmed {
        return programmed_reply(req, &path, &state, &*f)
            .await
            .ok_or(HangUp);
    }
    let resp = match path.as_str() {
        "/echo" => {
            let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("<bin>")));
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            text.push_str(&format!("\n{}", String::from_utf8_lossy(&body)));
            Response::new(full(text))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
            Response::new(full("slow done"))
        }
        "/big" => {
            let total = query_num(&req, "bytes");
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                let state = state.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len() as u64);
                    state.big_bytes.fetch_add(n, Ordering::SeqCst);
                    Some((
                        Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                        left - n,
                    ))
                }
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut().insert("content-length", total.into());
            resp
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::new(full(total.to_string()))
        }
        "/ws" => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    use futures_util::{SinkExt, StreamExt};
                    let (mut tx, mut rx) = ws.split();
                    while let Some(Ok(msg)) = rx.next().await {
                        if msg.is_text() || msg.is_binary() {
                            let _ = tx.send(msg).await;
                        }
                    }
                }
            });
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                key.unwrap().as_bytes(),
            );
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(full(""))
                .unwrap()
        }
        p if p.ends_with("/name") => Response::new(full(name)),
        p if p.starts_with("/status/") => {
            let code: u16 = p[8..].parse().unwrap_or(500);
            let mut resp = Response::new(full(format!("status {code}")));
            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
            resp
        }
        _ => {
            let mut resp = Response::new(full("ok"));
            resp.headers_mut()
                .insert("connection", "x-hop".parse().unwrap());
            resp.headers_mut()
                .insert("x-hop", "should be removed".parse().unwrap());
            resp.headers_mut()
                .insert("keep-alive", "timeout=5".parse().unwrap());
            resp
        }
    };
    Ok(resp)
}

async fn programmed_reply(
    req: Request<Incoming>,
    path: &str,
    state: &OriginState,
    f: &(dyn Fn(&http::request::Parts) -> Reply + Send + Sync),
) -> Option<Response<Body>> {
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    state
        .requests
        .lock()
        .unwrap()
        .entry(path.to_string())
        .or_default()
        .push((parts.method.clone(), parts.headers.clone()));
    let reply = f(&parts);
    let in_flight = |delta: isize| {
        let mut map = state.in_flight.lock().unwrap();
        let e = map.entry(path.to_string()).or_default();
        e.0 = e.0.checked_add_signed(delta).unwrap();
        e.1 = e.1.max(e.0);
        e.1
    };
    in_flight(1);
    if reply.gate > 0 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // Open once the path has had `gate` requests in flight together.
        while in_flight(0) < reply.gate && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(reply.delay).await;
    in_flight(-1);
    if reply.hang_up {
        return None;
    }
    let (pieces, every) = reply.trickle;
    let total = reply.body.len();
    let body = if pieces > 1 || reply.chunked {
        let size = total.div_ceil(pieces).max(1);
        let chunks: Vec<Bytes> = reply
            .body
            .chunks(size)
            .map(Bytes::copy_from_slice)
            .collect();
        let stream = futures_util::stream::unfold(chunks.into_iter(), move |mut rest| async move {
            let next = rest.next()?;
            tokio::time::sleep(every).await;
            Some((Ok::<_, Infallible>(Frame::data(next)), rest))
        });
        BodyExt::boxed(StreamBody::new(stream))
    } else {
        full(reply.body)
    };
    let mut resp = Response::new(body);
    if !reply.chunked {
        resp.headers_mut().insert("content-length", total.into());
    }
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in &reply.headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    Some(resp)
}

/// torii, started in this process on 127.0.0.1:0 from a TOML config.
pub struct Torii {
    pub addr: SocketAddr,
    /// The admin listener (purge, stats).
    pub admin: SocketAddr,
    /// The running server: its runtime (cache, metrics) for tests to look at.
    pub server: torii::Server,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Torii {
    /// Starts torii with `toml`, in which `{origin}` is replaced by `origin`'s URL.
    pub async fn start(toml: &str, origin: Option<&Origin>) -> Torii {
        let text = match origin {
            Some(o) => toml.replace("{origin}", &o.url()),
            None => toml.to_string(),
        };
        let config = torii::config::load_str("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = torii::Server::new(config).unwrap();
        let running = server.clone();
        let task = tokio::spawn(async move {
            torii::server::run_server(running, vec![listener], Some(admin_listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Torii {
            addr,
            admin,
            server,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A proxy with one route to `origin` and the given extra TOML sections.
    pub async fn to(origin: &Origin, extra: &str) -> Torii {
        let log = if extra.contains("[log]") {
            ""
        } else {
            "[log]\naccess = \"off\"\n"
        };
        let toml = format!(
            "[server]\nadmin = \"off\"\n{log}{extra}\n[upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n"
        );
        Torii::start(&toml, Some(origin)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// torii's cache (its counters: `stats`), as the current config generation has it.
    pub fn cache(&self) -> Arc<torii::cache::Cache> {
        let runtime = self.server.shared().current();
        runtime.cache.clone().expect("torii has no cache")
    }

    /// The wall clock of torii's cache (freshness is judged by it).
    pub fn clock(&self) -> torii::cache::Clock {
        let runtime = self.server.shared().current();
        let cache = runtime.cache.as_ref().expect("torii has no cache");
        cache.clock().clone()
    }

    /// Moves the cache's clock forward by `by`, and `origin`'s `Date` headers with it:
    /// what was stored ages by `by` at once, without sleeping, and what the origin sends
    /// afterwards is not mistaken for an old response.
    pub fn advance_clock(&self, origin: &Origin, by: Duration) {
        self.clock().advance(by);
        origin.advance_clock(by);
    }

    /// The value of the Prometheus sample `name` (with its labels, e.g.
    /// `torii_cache_hits_total` or `x{a="b"}`) in `/metrics`, if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, _, body) = get(&format!("http://{}/metrics", self.admin)).await;
        metric_value(&String::from_utf8_lossy(&body), name)
    }

    /// Stops accepting, drains, and waits for torii to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Torii {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A plain HTTP client (HTTP/1.1, keep-alive pool).
pub fn client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url`, returns status, headers and the whole body.
pub async fn get(url: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let resp = client().get(url.parse().unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// An HTTP/2 response's head and its whole body (flow control released as it is read),
/// each step bounded by `wait`.
pub async fn h2_whole(
    response: h2::client::ResponseFuture,
    wait: Duration,
) -> (http::response::Parts, Vec<u8>) {
    let (head, mut body) = tokio::time::timeout(wait, response)
        .await
        .unwrap()
        .unwrap()
        .into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(wait, body.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    (head, bytes)
}

/// An HTTP/2 client (prior knowledge, cleartext) on torii; its connection runs in a task.
pub async fn h2_client(torii: &Torii) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(torii.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Writes raw bytes to `addr` and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `stream` until it is closed; returns what was read, or `None` after `wait`.
pub async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

/// POSTs a JSON body to torii's admin API; returns status and parsed JSON.
pub async fn admin_post(torii: &Torii, path: &str, json: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::post(format!("http://{}{}", torii.admin, path))
        .header("content-type", "application/json")
        .body(full(json.to_string()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// GETs a JSON document from torii's admin API.
pub async fn admin_get(torii: &Torii, path: &str) -> serde_json::Value {
    let (status, _, body) = get(&format!("http://{}{}", torii.admin, path)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The value of the sample `name` (with labels, if any) in Prometheus text `text`.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// How long `wait_until` waits at most by default: generous, for a loaded machine. A
/// test that passes never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Polls `check` until it is true (every 10 ms of real time, yielding between polls);
/// panics with `what` once `deadline` (of real time) has passed. For "this has happened"
/// waits on a counter (origin hits, a metric, a gauge) instead of a fixed sleep.
pub async fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `wait_until` for an async check (an admin request, a metric).
pub async fn wait_until_async<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` origins named `o0`, `o1`, … (their names answer `/name`).
pub async fn origins(n: usize) -> Vec<Origin> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Origin::named(&format!("o{i}")).await);
    }
    v
}

/// `origins` as a TOML list of `"host:port"` servers.
pub fn list(origins: &[&Origin]) -> String {
    origins
        .iter()
        .map(|o| format!("\"{}\"", o.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends `method url` with `headers` and no body; returns status, headers and the whole body.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body: Body = http_body_util::Empty::new().map_err(|e| match e {}).boxed();
    let resp = client().request(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// What a child process writes to stderr (an upgraded torii inherits the pipe too),
/// collected by a thread as it comes, so a test can wait for a log line instead of
/// sleeping.
#[derive(Clone)]
pub struct Stderr(Arc<Mutex<String>>);

impl Stderr {
    pub fn collect(child: &mut std::process::Child) -> Stderr {
        let text = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Stderr(text)
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until `line` has been written.
    pub async fn wait_for(&self, line: &str) {
        wait_until(&format!("torii logs {line:?}"), PATIENCE, || {
            self.0.lock().unwrap().contains(line)
        })
        .await;
    }
}
