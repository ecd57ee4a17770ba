//! The cache through real sockets: hits, coalescing, stale serving, revalidation, Vary,
//! invalidation, purge, bounds and what is never stored. Proven by counting origin
//! requests and reading `X-Cache`, `Age` and `/stats.json`, never by timing.

mod support;

use std::future::Future;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// torii with one caching route to `origin`; `cache` goes in `[cache]`, `route` in the
/// route's `[routes.cache]` (both TOML lines, may be empty).
async fn proxy(origin: &Origin, cache: &str, route: &str) -> Torii {
    Torii::start(&config(cache, route), Some(origin)).await
}

fn config(cache: &str, route: &str) -> String {
    format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\n{cache}\n\
         [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n\
         [routes.cache]\n{route}\n"
    )
}

fn x_cache(h: &HeaderMap) -> &str {
    h.get("x-cache").map_or("<none>", |v| v.to_str().unwrap())
}

/// GET `url`: X-Cache and body as text.
async fn fetch(url: &str, headers: &[(&str, &str)]) -> (String, String) {
    let (status, h, body) = send("GET", url, headers).await;
    assert!(status.is_success(), "{url}: {status}");
    (
        x_cache(&h).to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn stats(torii: &Torii) -> serde_json::Value {
    let (_, _, body) = get(&format!("http://{}/stats.json", torii.admin)).await;
    serde_json::from_slice(&body).unwrap()
}

async fn purge(torii: &Torii, json: &str) -> serde_json::Value {
    let (status, v) = admin_post(torii, "/purge", json).await;
    assert_eq!(status, StatusCode::OK, "{json}: {v}");
    v
}

/// Polls `check` until it is true; panics with `what` after a deadline generous enough
/// for a loaded machine.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_async(what, PATIENCE, check).await;
}

/// Lets a `max-age=1` response go stale, without waiting: torii's cache clock (and the
/// `Date` of what `origin` sends from now on) moves 1.1 s ahead.
fn let_expire(torii: &Torii, origin: &Origin) {
    torii.advance_clock(origin, Duration::from_millis(1100));
}

fn reply(body: &str, headers: &[(&str, &str)]) -> Reply {
    headers
        .iter()
        .fold(Reply::new(body.to_string()), |r, (k, v)| r.header(k, v))
}

#[tokio::test]
async fn hit_after_miss_with_age_and_head_from_stored_get() {
    let origin = Origin::start().await;
    origin.set("/a", reply("hello", &[("cache-control", "max-age=60")]));
    let torii = proxy(&origin, "", "").await;

    let (status, h, body) = get(&torii.url("/a")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&h), "MISS");
    assert_eq!(body, "hello");
    assert!(
        !h.contains_key("age"),
        "a fresh origin response has no Age: {h:?}"
    );

    let (status, h, body) = get(&torii.url("/a")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&h), "HIT");
    assert_eq!(body, "hello");
    let age: u64 = h["age"].to_str().unwrap().parse().unwrap();
    assert!(age < 60, "{age}");
    assert_eq!(h["via"], "1.1 torii");

    let (status, h, body) = send("HEAD", &torii.url("/a"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&h), "HIT");
    assert_eq!(h["content-length"], "5");
    assert!(body.is_empty());
    assert_eq!(
        origin.hits("/a"),
        1,
        "one origin request for GET, GET, HEAD"
    );

    // A HEAD on a cold key goes to the origin and stores nothing.
    origin.set("/h", reply("head", &[("cache-control", "max-age=60")]));
    let (_, h, _) = send("HEAD", &torii.url("/h"), &[]).await;
    assert_eq!(x_cache(&h), "MISS");
    assert_eq!(fetch(&torii.url("/h"), &[]).await.0, "MISS");
    assert_eq!(origin.requests("/h")[0].0, http::Method::HEAD);
    assert_eq!(origin.hits("/h"), 2);

    let s = stats(&torii).await;
    assert_eq!(s["cache"]["hits"], 2, "{s}");
    assert_eq!(s["cache"]["stores"], 2, "{s}");
}

/// A fresh HTTP/1 hit writes the stored fields pre-encoded (hyper's `RawFields`): the
/// head must still be exactly what the map-built one was, on the wire.
#[tokio::test]
async fn a_pre_encoded_hit_head_keeps_every_stored_field_once() {
    let origin = Origin::start().await;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(30));
    origin.set("/raw", raw_reply(&date));
    let torii = proxy(&origin, "", "").await;
    assert_eq!(fetch(&torii.url("/raw"), &[]).await.0, "MISS");

    // Two hits pipelined on one connection: the framing of the first must end exactly
    // where the second begins.
    let req = format!("GET /raw HTTP/1.1\r\nHost: {}\r\n\r\n", torii.addr);
    let heads = raw_heads(torii.addr, &format!("{req}{req}"), 2).await;
    for head in &heads {
        let field = |name: &str| field_of(head, name);
        assert_eq!(
            field("date"),
            [date.to_ascii_lowercase()],
            "the origin's Date: {head}"
        );
        assert_eq!(field("content-length"), ["10"], "{head}");
        assert_eq!(field("x-cache"), ["hit"], "{head}");
        assert_eq!(field("set-thing"), ["one"], "{head}");
        assert_eq!(field("x-multi"), ["a", "b"], "{head}");
        assert_eq!(field("via"), ["1.1 torii"], "{head}");
        let age = field("age");
        assert_eq!(age.len(), 1, "one Age: {head}");
        assert!(age[0].parse::<u64>().unwrap() >= 7, "{head}");
        assert!(field("transfer-encoding").is_empty(), "{head}");
    }
    assert_eq!(origin.hits("/raw"), 1);
}

/// The origin's answer of the raw-head tests: a 10-byte body ([`RAW_BODY`]), `date`, an
/// `Age`, an `X-Cache` of its own and a field given twice.
fn raw_reply(date: &str) -> Reply {
    reply(
        RAW_BODY,
        &[
            ("cache-control", "max-age=3600"),
            ("date", date),
            ("age", "7"),
            ("x-cache", "from-origin"),
            ("set-thing", "one"),
            ("x-multi", "a"),
        ],
    )
    .header("x-multi", "b")
}

const RAW_BODY: &str = "0123456789";

/// Writes `requests` to a new connection to `addr` and reads until `count` responses of
/// [`RAW_BODY`] came back: their heads as sent, each checked to be a whole 200 head.
async fn raw_heads(addr: std::net::SocketAddr, requests: &str, count: usize) -> Vec<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(requests.as_bytes()).await.unwrap();
    let mut wire = Vec::new();
    let mut buf = [0u8; 4096];
    let body = RAW_BODY.as_bytes();
    while wire.windows(body.len()).filter(|w| *w == body).count() < count {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("the responses in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&wire));
        wire.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(wire).unwrap();
    let heads: Vec<String> = text
        .split(RAW_BODY)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(heads.len(), count, "{text}");
    for head in &heads {
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }
    heads
}

/// The values of the field `name` in `head`, lowercased, in order.
fn field_of(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .map(str::to_ascii_lowercase)
        .filter_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        .collect()
}

/// The stored miss's head goes out as the lines written for the store (`hyper::RawFields`
/// with the miss's own tail): every field of the origin's once, the origin's `Age`, the
/// miss's `X-Cache` and `Via`, one request ID, and the length hyper frames the body with.
#[tokio::test]
async fn a_stored_miss_sent_as_its_stored_lines_keeps_every_field_once() {
    let origin = Origin::start().await;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(30));
    origin.set(
        "/raw-miss",
        raw_reply(&date).header("x-request-id", "from-origin"),
    );
    let torii = proxy(&origin, "", "").await;
    let req = format!("GET /raw-miss HTTP/1.1\r\nHost: {}\r\n\r\n", torii.addr);
    let head = &raw_heads(torii.addr, &req, 1).await[0];
    let field = |name: &str| field_of(head, name);
    assert_eq!(field("date"), [date.to_ascii_lowercase()], "{head}");
    assert_eq!(field("content-length"), ["10"], "{head}");
    assert_eq!(field("x-cache"), ["miss"], "{head}");
    assert_eq!(field("via"), ["1.1 torii"], "{head}");
    assert_eq!(field("age"), ["7"], "the origin's Age: {head}");
    assert_eq!(field("set-thing"), ["one"], "{head}");
    assert_eq!(field("x-multi"), ["a", "b"], "{head}");
    let id = field("x-request-id");
    assert_eq!(id.len(), 1, "one request ID: {head}");
    assert_ne!(id[0], "from-origin", "{head}");
    assert!(field("transfer-encoding").is_empty(), "{head}");
    // Stored as it was sent: the next request is a hit with the same fields.
    let (status, headers, _) = send("GET", &torii.url("/raw-miss"), &[]).await;
    assert!(status.is_success());
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(headers.get("set-thing").unwrap(), "one");
    assert_eq!(origin.hits("/raw-miss"), 1);
}

#[tokio::test]
async fn concurrent_cold_requests_coalesce_into_one_origin_request() {
    let origin = Origin::start().await;
    let body = "x".repeat(100_000);
    origin.set(
        "/hot",
        Reply::new(body.clone())
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300)),
    );
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/hot");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let url = url.clone();
        tasks.spawn(async move { send("GET", &url, &[]).await });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (status, h, got) = done.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got.len(), body.len(), "every client gets the whole body");
        *statuses.entry(x_cache(&h).to_string()).or_insert(0) += 1;
    }
    assert_eq!(origin.hits("/hot"), 1, "{statuses:?}");
    assert_eq!(statuses.get("MISS"), Some(&1), "{statuses:?}");
    let s = stats(&torii).await;
    assert_eq!(s["cache"]["misses"], 1, "{s}");
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let origin = Origin::start().await;
    origin.set(
        "/swr",
        reply(
            "v1",
            &[("cache-control", "max-age=1, stale-while-revalidate=30")],
        ),
    );
    let torii = proxy(&origin, "", "").await;
    assert_eq!(fetch(&torii.url("/swr"), &[]).await.0, "MISS");
    // From now on the origin is slow: a stale request that waited for it would time out.
    origin.set(
        "/swr",
        reply("v2", &[("cache-control", "max-age=60")]).delay(Duration::from_secs(4)),
    );
    let_expire(&torii, &origin);

    let stale = tokio::time::timeout(Duration::from_secs(3), fetch(&torii.url("/swr"), &[]))
        .await
        .expect("a stale response does not wait for the origin");
    assert_eq!(stale, ("STALE".to_string(), "v1".to_string()));
    for _ in 0..5 {
        let again = tokio::time::timeout(Duration::from_secs(3), fetch(&torii.url("/swr"), &[]))
            .await
            .expect("stale again while the refresh runs");
        assert_eq!(again.1, "v1");
    }
    // The one background refresh stores v2; meanwhile nobody else asked the origin.
    eventually("the refreshed copy is served", || async {
        fetch(&torii.url("/swr"), &[]).await == ("HIT".to_string(), "v2".to_string())
    })
    .await;
    assert_eq!(origin.hits("/swr"), 2, "one miss and exactly one refresh");
    let s = stats(&torii).await;
    assert_eq!(s["cache"]["refreshes"], 1, "{s}");
}

#[tokio::test]
async fn stale_if_error_serves_the_old_body_when_the_origin_fails() {
    let origin = Origin::start().await;
    origin.set("/sie", reply("good", &[("cache-control", "max-age=1")]));
    origin.set(
        "/strict",
        reply("good", &[("cache-control", "max-age=1, must-revalidate")]),
    );
    // No grace: a stale entry is revalidated in the foreground, so the error is seen.
    let torii = proxy(&origin, "", "grace = \"0s\"").await;
    assert_eq!(fetch(&torii.url("/sie"), &[]).await.0, "MISS");
    assert_eq!(fetch(&torii.url("/strict"), &[]).await.0, "MISS");
    origin.set("/sie", Reply::new("boom").status(500));
    origin.set("/strict", Reply::new("boom").status(500));
    let_expire(&torii, &origin);

    let (status, h, body) = get(&torii.url("/sie")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&h), "STALE");
    assert_eq!(body, "good");
    assert_eq!(origin.hits("/sie"), 2, "the origin was asked and failed");

    // must-revalidate forbids serving stale: the error passes through.
    let (status, _, body) = get(&torii.url("/strict")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "boom");
}

/// An origin that answers one connection with `response` and then stops listening.
async fn one_shot_origin(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        drop(listener);
        read_head(&mut stream).await;
        stream.write_all(response).await.unwrap();
        let _ = stream.shutdown().await;
    });
    addr
}

async fn read_head(stream: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        buf.push(byte[0]);
    }
}

#[tokio::test]
async fn stale_if_error_when_the_origin_is_down() {
    let addr = one_shot_origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nCache-Control: max-age=1\r\nConnection: close\r\n\r\ngood",
    )
    .await;
    let toml = config("", "grace = \"0s\"").replace("{origin}", &format!("http://{addr}"));
    let torii = Torii::start(&toml, None).await;
    assert_eq!(
        fetch(&torii.url("/x"), &[]).await,
        ("MISS".into(), "good".into())
    );
    // This origin sends no `Date`: only the cache's clock needs to move.
    torii.clock().advance(Duration::from_millis(1100));
    let (status, h, body) = get(&torii.url("/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&h), "STALE");
    assert_eq!(body, "good");
}

#[tokio::test]
async fn revalidation_with_304_and_client_conditionals() {
    let origin = Origin::start().await;
    origin.set_fn("/etag", |req| {
        if req
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            Reply::new("")
                .status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=60")
        } else {
            Reply::new("body v1")
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=1")
        }
    });
    let torii = proxy(&origin, "", "grace = \"0s\"").await;
    assert_eq!(fetch(&torii.url("/etag"), &[]).await.0, "MISS");
    let_expire(&torii, &origin);

    let (status, h, body) = get(&torii.url("/etag")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&h), "REVALIDATED");
    assert_eq!(body, "body v1");
    let sent = origin.requests("/etag");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].1["if-none-match"], "\"v1\"", "{:?}", sent[1].1);
    // The 304's Cache-Control replaced the stored one.
    assert_eq!(h["cache-control"], "max-age=60");
    assert_eq!(fetch(&torii.url("/etag"), &[]).await.0, "HIT");

    // A client's own conditional request is answered from the cache.
    let (status, h, body) = send("GET", &torii.url("/etag"), &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(x_cache(&h), "HIT");
    assert_eq!(h["etag"], "\"v1\"");
    assert!(body.is_empty());
    let (status, _, body) = send("GET", &torii.url("/etag"), &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "body v1");
    assert_eq!(origin.hits("/etag"), 2);
    let s = stats(&torii).await;
    assert_eq!(s["cache"]["revalidated"], 1, "{s}");
}

#[tokio::test]
async fn vary_variants_side_by_side_and_vary_star_never_stored() {
    let origin = Origin::start().await;
    origin.set_fn("/v", |req| {
        let enc = req
            .headers
            .get("accept-encoding")
            .map_or("none", |v| v.to_str().unwrap());
        Reply::new(format!("enc={enc}"))
            .header("vary", "Accept-Encoding")
            .header("cache-control", "max-age=60")
    });
    origin.set(
        "/star",
        reply("star", &[("vary", "*"), ("cache-control", "max-age=60")]),
    );
    // Without torii's own compression (which asks the origin for identity and keeps one
    // object for every client: tests/compress.rs).
    let torii = proxy(&origin, "", "[routes.compress]\nenabled = false").await;
    let url = torii.url("/v");
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    assert_eq!(fetch(&url, &gzip).await, ("MISS".into(), "enc=gzip".into()));
    assert_eq!(fetch(&url, &br).await, ("MISS".into(), "enc=br".into()));
    assert_eq!(origin.hits("/v"), 2);
    assert_eq!(fetch(&url, &gzip).await, ("HIT".into(), "enc=gzip".into()));
    assert_eq!(fetch(&url, &br).await, ("HIT".into(), "enc=br".into()));
    assert_eq!(origin.hits("/v"), 2);
    // No Accept-Encoding: the identity variant, and the origin is asked for identity.
    assert_eq!(
        fetch(&url, &[]).await,
        ("MISS".into(), "enc=identity".into())
    );
    assert_eq!(
        fetch(&url, &[]).await,
        ("HIT".into(), "enc=identity".into())
    );
    assert_eq!(fetch(&url, &gzip).await, ("HIT".into(), "enc=gzip".into()));
    assert_eq!(origin.hits("/v"), 3);

    assert_eq!(fetch(&torii.url("/star"), &[]).await.0, "MISS");
    assert_eq!(fetch(&torii.url("/star"), &[]).await.0, "MISS");
    assert_eq!(origin.hits("/star"), 2);
}

#[tokio::test]
async fn unsafe_methods_invalidate_target_and_location() {
    let origin = Origin::start().await;
    origin.set("/r", reply("resource", &[("cache-control", "max-age=60")]));
    origin.set(
        "/form",
        Reply::new("created").status(201).header("location", "/r"),
    );
    origin.set("/fail", Reply::new("no").status(500));
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/r");
    assert_eq!(fetch(&url, &[]).await.0, "MISS");
    assert_eq!(fetch(&url, &[]).await.0, "HIT");

    let (status, h, _) = send("POST", &url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache(&h), "BYPASS");
    assert_eq!(
        fetch(&url, &[]).await.0,
        "MISS",
        "POST to the URL invalidated it"
    );
    assert_eq!(fetch(&url, &[]).await.0, "HIT");

    let (status, _, _) = send("POST", &torii.url("/form"), &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        fetch(&url, &[]).await.0,
        "MISS",
        "Location: /r invalidated it"
    );

    // DELETE too; an unsafe request that failed invalidates nothing.
    assert_eq!(fetch(&url, &[]).await.0, "HIT");
    origin.set(
        "/fail",
        Reply::new("no").status(500).header("location", "/r"),
    );
    let (status, _, _) = send("PUT", &torii.url("/fail"), &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(fetch(&url, &[]).await.0, "HIT");
    send("DELETE", &url, &[]).await;
    assert_eq!(fetch(&url, &[]).await.0, "MISS");
    assert_eq!(origin.hits("/r"), 6, "4 GET misses, POST, DELETE");
}

#[tokio::test]
async fn purge_by_url_method_prefix_and_tag() {
    let origin = Origin::start().await;
    for p in ["/p/a", "/p/b", "/q/c"] {
        origin.set(p, reply(p, &[("cache-control", "max-age=60")]));
    }
    origin.set(
        "/t1",
        reply(
            "t1",
            &[("cache-control", "max-age=60"), ("surrogate-key", "a b")],
        ),
    );
    origin.set(
        "/t2",
        reply("t2", &[("cache-control", "max-age=60"), ("cache-tag", "c")]),
    );
    origin.set(
        "/t3",
        reply(
            "t3",
            &[("cache-control", "max-age=60"), ("surrogate-key", "b")],
        ),
    );
    let torii = proxy(&origin, "", "").await;
    let all = ["/p/a", "/p/b", "/q/c", "/t1", "/t2", "/t3"];
    for p in all {
        assert_eq!(fetch(&torii.url(p), &[]).await.0, "MISS", "{p}");
        assert_eq!(fetch(&torii.url(p), &[]).await.0, "HIT", "{p}");
    }
    let state = || async {
        let mut out = Vec::new();
        for p in all {
            out.push(fetch(&torii.url(p), &[]).await.0);
        }
        out.join(" ")
    };

    let v = purge(&torii, &format!(r#"{{"url": "{}"}}"#, torii.url("/p/a"))).await;
    assert_eq!(v["purged"], 1, "{v}");
    assert_eq!(state().await, "MISS HIT HIT HIT HIT HIT");

    let (status, _, body) = send("PURGE", &torii.url("/p/a"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, _, _) = send("PURGE", &torii.url("/p/a"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already gone");
    assert_eq!(state().await, "MISS HIT HIT HIT HIT HIT");

    let v = purge(&torii, r#"{"prefix": "/p/"}"#).await;
    assert_eq!(v["purged"], 2, "{v}");
    assert_eq!(state().await, "MISS MISS HIT HIT HIT HIT");

    let v = purge(&torii, r#"{"tag": "b"}"#).await;
    assert_eq!(v["purged"], 2, "{v}");
    assert_eq!(state().await, "HIT HIT HIT MISS HIT MISS");
    let v = purge(&torii, r#"{"tag": "c"}"#).await;
    assert_eq!(v["purged"], 1, "{v}");
    assert_eq!(state().await, "HIT HIT HIT HIT MISS HIT");
    assert_eq!(origin.hits("/q/c"), 1, "never purged");
}

#[tokio::test]
async fn purge_method_only_from_allowed_addresses() {
    let origin = Origin::start().await;
    origin.set("/a", reply("a", &[("cache-control", "max-age=60")]));
    let torii = proxy(&origin, "purge_allow = [\"10.0.0.0/8\"]", "").await;
    assert_eq!(fetch(&torii.url("/a"), &[]).await.0, "MISS");
    let (status, _, _) = send("PURGE", &torii.url("/a"), &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "as Varnish answers");
    assert_eq!(fetch(&torii.url("/a"), &[]).await.0, "HIT");
    assert_eq!(origin.hits("/a"), 1, "PURGE is never forwarded");
}

#[tokio::test]
async fn soft_purge_serves_stale_and_revalidates() {
    let origin = Origin::start().await;
    origin.set_fn("/s", |req| {
        if req
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"s1\"")
        {
            Reply::new("").status(304).header("etag", "\"s1\"")
        } else {
            Reply::new("soft")
                .header("etag", "\"s1\"")
                .header("cache-control", "max-age=60")
        }
    });
    let torii = proxy(&origin, "", "").await;
    assert_eq!(fetch(&torii.url("/s"), &[]).await.0, "MISS");
    let v = purge(
        &torii,
        &format!(r#"{{"url": "{}", "soft": true}}"#, torii.url("/s")),
    )
    .await;
    assert_eq!(v["purged"], 1, "{v}");
    // Within grace: served stale at once, revalidated in the background.
    assert_eq!(
        fetch(&torii.url("/s"), &[]).await,
        ("STALE".into(), "soft".into())
    );
    eventually("the background revalidation reaches the origin", || async {
        origin.hits("/s") == 2
    })
    .await;
    assert_eq!(
        origin.requests("/s")[1].1["if-none-match"],
        "\"s1\"",
        "a conditional request"
    );
    eventually("revalidated copy is fresh again", || async {
        fetch(&torii.url("/s"), &[]).await.0 == "HIT"
    })
    .await;
    assert_eq!(origin.hits("/s"), 2);
}

#[tokio::test]
async fn hit_for_miss_lets_uncacheable_requests_run_concurrently() {
    let origin = Origin::start().await;
    origin.set("/private", reply("mine", &[("cache-control", "private")]));
    let torii = proxy(&origin, "", "").await;
    assert_eq!(fetch(&torii.url("/private"), &[]).await.0, "MISS");
    // Each request is held until 10 are at the origin together (5 s at most): only
    // requests that are not queued behind one another can all get there.
    origin.set(
        "/private",
        reply("mine", &[("cache-control", "private")]).gate(10),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let url = torii.url("/private");
        tasks.spawn(async move { fetch(&url, &[]).await });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap(), ("MISS".into(), "mine".into()));
    }
    assert_eq!(origin.max_in_flight("/private"), 10);
    assert_eq!(origin.hits("/private"), 11);
}

#[tokio::test]
async fn hit_for_pass_goes_to_the_origin_but_only_if_cached_still_gets_504() {
    let origin = Origin::start().await;
    origin.set("/private", reply("mine", &[("cache-control", "private")]));
    let torii = proxy(&origin, "", "").await;
    // The first answer marks the key uncacheable; the next ones pass straight through.
    for _ in 0..3 {
        assert_eq!(
            fetch(&torii.url("/private"), &[]).await,
            ("MISS".into(), "mine".into())
        );
    }
    assert_eq!(origin.hits("/private"), 3);
    let (status, h, _) = send(
        "GET",
        &torii.url("/private"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(x_cache(&h), "MISS");
    assert_eq!(
        origin.hits("/private"),
        3,
        "only-if-cached never reaches the origin"
    );
}

#[tokio::test]
async fn set_cookie_and_authorization_not_stored_by_default() {
    let origin = Origin::start().await;
    origin.set(
        "/cookie",
        reply(
            "c",
            &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
        ),
    );
    origin.set("/auth", reply("a", &[("cache-control", "max-age=60")]));
    origin.set(
        "/auth-public",
        reply("a", &[("cache-control", "public, max-age=60")]),
    );
    let torii = proxy(&origin, "", "").await;
    assert_eq!(fetch(&torii.url("/cookie"), &[]).await.0, "MISS");
    assert_eq!(fetch(&torii.url("/cookie"), &[]).await.0, "MISS");
    assert_eq!(origin.hits("/cookie"), 2);

    let auth = [("authorization", "Bearer x")];
    assert_eq!(fetch(&torii.url("/auth"), &auth).await.0, "MISS");
    assert_eq!(fetch(&torii.url("/auth"), &auth).await.0, "MISS");
    assert_eq!(origin.hits("/auth"), 2);
    assert_eq!(fetch(&torii.url("/auth-public"), &auth).await.0, "MISS");
    assert_eq!(fetch(&torii.url("/auth-public"), &auth).await.0, "HIT");
    assert_eq!(origin.hits("/auth-public"), 1);

    let allowed = proxy(&origin, "", "allow_set_cookie = true").await;
    assert_eq!(fetch(&allowed.url("/cookie"), &[]).await.0, "MISS");
    let (_, h, _) = get(&allowed.url("/cookie")).await;
    assert_eq!(x_cache(&h), "HIT");
    assert_eq!(h["set-cookie"], "s=1");
    assert_eq!(origin.hits("/cookie"), 3);
}

/// An origin that promises `Content-Length: 1000`, sends 500 bytes and closes, on every
/// connection; counts connections.
async fn truncating_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let mut resp =
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nCache-Control: max-age=60\r\n\r\n"
                        .to_vec();
                resp.extend_from_slice(&[b'y'; 500]);
                let _ = stream.write_all(&resp).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn truncated_upstream_body_is_not_stored() {
    let (addr, requests) = truncating_origin().await;
    let toml = config("", "").replace("{origin}", &format!("http://{addr}"));
    let torii = Torii::start(&toml, None).await;
    for n in 1..=2 {
        let resp = client()
            .get(torii.url("/t").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(x_cache(resp.headers()), "MISS");
        assert!(
            resp.into_body().collect().await.is_err(),
            "the client sees the body cut short"
        );
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), n);
    }
    let s = stats(&torii).await;
    assert_eq!(s["cache"]["stores"], 0, "{s}");
}

#[tokio::test]
async fn memory_bound_holds_under_distinct_large_objects() {
    let origin = Origin::start().await;
    origin.set(
        "/blob",
        Reply::new(vec![b'z'; 256 * 1024]).header("cache-control", "max-age=60"),
    );
    let torii = proxy(&origin, "memory = \"4MiB\"", "").await;
    for i in 0..50 {
        let (status, _, body) = get(&torii.url(&format!("/blob?i={i}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 256 * 1024);
    }
    let s = stats(&torii).await;
    let m = &s["cache"]["memory"];
    assert_eq!(m["max_bytes"], 4 << 20, "{s}");
    assert!(
        m["bytes"].as_u64().unwrap() <= 4 << 20,
        "memory bytes over the bound: {s}"
    );
    assert!(m["objects"].as_u64().unwrap() > 0, "{s}");
    assert!(m["evictions"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["cache"]["stores"], 50, "{s}");
    // The most recent object is still there.
    assert_eq!(fetch(&torii.url("/blob?i=49"), &[]).await.0, "HIT");
}

#[tokio::test]
async fn coalesced_fetch_survives_the_leader_leaving() {
    let origin = Origin::start().await;
    origin.set(
        "/lead",
        Reply::new(vec![b'l'; 10_000])
            .header("cache-control", "max-age=60")
            .trickle(10, Duration::from_millis(50)),
    );
    let torii = proxy(&origin, "", "").await;
    // The leader reads the head and hangs up while the body still trickles in.
    let leader = client()
        .get(torii.url("/lead").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(x_cache(leader.headers()), "MISS");
    let mut followers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let url = torii.url("/lead");
        followers.spawn(async move { send("GET", &url, &[]).await });
    }
    drop(leader);
    while let Some(done) = followers.join_next().await {
        let (status, _, body) = done.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 10_000);
    }
    assert_eq!(
        origin.hits("/lead"),
        1,
        "the followers got the leader's copy, stored after the leader left"
    );
    assert_eq!(fetch(&torii.url("/lead"), &[]).await.0, "HIT");
}

#[tokio::test]
async fn head_revalidation_never_stores_an_empty_body() {
    let origin = Origin::start().await;
    for path in ["/hd", "/hd-chunked"] {
        let r = reply("full body", &[("cache-control", "max-age=1")]);
        origin.set(path, if path == "/hd" { r } else { r.chunked() });
    }
    let torii = proxy(&origin, "", "grace = \"0s\"").await;
    for path in ["/hd", "/hd-chunked"] {
        let url = torii.url(path);
        assert_eq!(fetch(&url, &[]).await, ("MISS".into(), "full body".into()));
        let_expire(&torii, &origin);
        // A HEAD on the stale entry goes to the origin as a HEAD (no body comes back) ...
        let (status, _, body) = send("HEAD", &url, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(origin.requests(path)[1].0, http::Method::HEAD);
        // ... which must not become the stored GET response.
        let (_, _, body) = send("GET", &url, &[]).await;
        assert_eq!(body, "full body", "{path}");
        let (_, _, body) = send("GET", &url, &[]).await;
        assert_eq!(body, "full body", "{path}");
    }
}

#[tokio::test]
async fn response_without_freshness_is_never_served_from_cache() {
    let origin = Origin::start().await;
    origin.set_fn("/me", |req| {
        let who = req
            .headers
            .get("cookie")
            .map_or("anon", |v| v.to_str().unwrap());
        Reply::new(format!("page for {who}"))
    });
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/me");
    assert_eq!(
        fetch(&url, &[("cookie", "u=alice")]).await.1,
        "page for u=alice"
    );
    // No Cache-Control, Expires or Last-Modified: nothing says this may be reused.
    let (x, body) = fetch(&url, &[("cookie", "u=bob")]).await;
    assert_eq!(body, "page for u=bob", "X-Cache: {x}");
    assert_eq!(x, "MISS");
    assert_eq!(origin.hits("/me"), 2);
}

#[tokio::test]
async fn refresh_ahead_keeps_a_hot_entry_from_ever_missing() {
    let origin = Origin::start().await;
    origin.set("/hot", reply("hot", &[("cache-control", "max-age=20")]));
    // No grace: without refresh-ahead, the first request after expiry would be a MISS.
    let torii = proxy(&origin, "", "grace = \"0s\"").await;
    let url = torii.url("/hot");
    assert_eq!(fetch(&url, &[]).await.0, "MISS");
    let cache = torii.cache();
    let stores = || cache.stats.stores.load(std::sync::atomic::Ordering::SeqCst);
    let mut outcomes = std::collections::BTreeMap::new();
    // Into the last tenth of the 20 s lifetime, where a hit refreshes the entry with a
    // probability growing to 1 at expiry. The clock moves 50 ms a hit, but stops short of
    // expiry until a hit has started the refresh (on a loaded machine too). The origin's
    // `Date` has whole seconds, so the stored copy may be up to 1 s older than `aged`:
    // the clock stops more than 1 s short of expiry.
    let step = Duration::from_millis(50);
    let mut aged = Duration::from_millis(18_000);
    torii.advance_clock(&origin, aged);
    let start = std::time::Instant::now();
    while origin.hits("/hot") < 2 {
        *outcomes.entry(fetch(&url, &[]).await.0).or_insert(0) += 1;
        if aged + step < Duration::from_millis(18_950) {
            torii.advance_clock(&origin, step);
            aged += step;
        }
        assert!(start.elapsed() < PATIENCE, "no refresh: {outcomes:?}");
    }
    wait_until("the refreshed copy is stored", PATIENCE, || stores() >= 2).await;
    // Past the first copy's expiry: the refreshed one answers.
    for _ in 0..12 {
        torii.advance_clock(&origin, Duration::from_millis(200));
        *outcomes.entry(fetch(&url, &[]).await.0).or_insert(0) += 1;
    }
    assert_eq!(
        outcomes.keys().collect::<Vec<_>>(),
        vec!["HIT"],
        "{outcomes:?}"
    );
    assert_eq!(
        origin.hits("/hot"),
        2,
        "one refresh before expiry: {outcomes:?}"
    );
    assert_eq!(stores(), 2);
    assert_eq!(stats(&torii).await["cache"]["refreshes"], 1);
}
