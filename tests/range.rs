//! Range requests and preconditions through real sockets (RFC 9110 §13, §14): ranges
//! answered from stored objects, If-Range, range misses filling the cache (or forwarded
//! above `range_fill_max`), 412, bad ranges, origin 206s that lie, GET with a body, an
//! unsolicited 101. Origin request counts prove what the cache served.

mod support;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const OBJ: &str = "0123456789abcdefghij";

fn config(route: &str) -> String {
    format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\n\
         [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n\
         [routes.cache]\n{route}\n"
    )
}

async fn proxy(origin: &Origin, route: &str) -> Torii {
    Torii::start(&config(route), Some(origin)).await
}

async fn range(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let (s, h, b) = send("GET", url, headers).await;
    (s, h, String::from_utf8_lossy(&b).into_owned())
}

fn hv<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).map_or("<none>", |v| v.to_str().unwrap())
}

/// The stored object `OBJ` at `path`, strong ETag `"v2"`, fetched once into the cache.
async fn stored(origin: &Origin, torii: &Torii, path: &str) {
    origin.set(
        path,
        Reply::new(OBJ)
            .header("cache-control", "max-age=600")
            .header("etag", "\"v2\"")
            .header("last-modified", "Sat, 05 Dec 2026 10:00:00 GMT")
            .header("content-type", "text/plain")
            .header("accept-ranges", "bytes"),
    );
    let (s, h, b) = range(&torii.url(path), &[]).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, OBJ));
    assert_eq!(hv(&h, "x-cache"), "MISS");
}

/// The parts of a `multipart/byteranges` body: (Content-Range, bytes).
fn multipart(h: &HeaderMap, body: &str) -> Vec<(String, String)> {
    let ct = hv(h, "content-type");
    let boundary = ct.split("boundary=").nth(1).expect("a boundary");
    body.split(&format!("--{boundary}"))
        .filter(|p| !p.trim().is_empty() && !p.starts_with("--"))
        .map(|p| {
            let (head, data) = p.trim_start_matches("\r\n").split_once("\r\n\r\n").unwrap();
            let cr = head
                .lines()
                .find_map(|l| l.strip_prefix("content-range: "))
                .unwrap()
                .to_string();
            (cr, data.trim_end_matches("\r\n").to_string())
        })
        .collect()
}

#[tokio::test]
async fn single_ranges_are_answered_from_the_stored_object() {
    let origin = Origin::start().await;
    let torii = proxy(&origin, "").await;
    stored(&origin, &torii, "/obj").await;
    let url = torii.url("/obj");
    for (asked, want, cr) in [
        ("bytes=0-9", "0123456789", "bytes 0-9/20"),
        ("bytes=15-", "fghij", "bytes 15-19/20"),
        ("bytes=-3", "hij", "bytes 17-19/20"),
        ("bytes=18-1000", "ij", "bytes 18-19/20"),
        ("bytes=-100", OBJ, "bytes 0-19/20"),
    ] {
        let (s, h, b) = range(&url, &[("range", asked)]).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT, "{asked}");
        assert_eq!(b, want, "{asked}");
        assert_eq!(hv(&h, "content-range"), cr, "{asked}");
        assert_eq!(hv(&h, "content-length"), want.len().to_string(), "{asked}");
        assert_eq!(hv(&h, "x-cache"), "HIT", "{asked}");
        assert_eq!(hv(&h, "etag"), "\"v2\"");
        assert!(h.contains_key("age"));
    }
    // Without a Range the fast path answers the whole object as before.
    let (s, h, b) = range(&url, &[]).await;
    assert_eq!(
        (s, b.as_str(), hv(&h, "x-cache")),
        (StatusCode::OK, OBJ, "HIT")
    );
    assert_eq!(origin.hits("/obj"), 1, "every range came from the cache");
}

#[tokio::test]
async fn several_ranges_are_multipart_byteranges() {
    let origin = Origin::start().await;
    let torii = proxy(&origin, "").await;
    stored(&origin, &torii, "/multi").await;
    let (s, h, b) = range(&torii.url("/multi"), &[("range", "bytes=0-1, 5-6,-2")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert!(hv(&h, "content-type").starts_with("multipart/byteranges; boundary="));
    assert!(!h.contains_key("content-range"));
    assert_eq!(hv(&h, "content-length"), b.len().to_string());
    assert!(b.contains("content-type: text/plain"), "{b}");
    assert_eq!(
        multipart(&h, &b),
        vec![
            ("bytes 0-1/20".to_string(), "01".to_string()),
            ("bytes 5-6/20".to_string(), "56".to_string()),
            ("bytes 18-19/20".to_string(), "ij".to_string()),
        ]
    );
    assert_eq!(origin.hits("/multi"), 1);
}

#[tokio::test]
async fn unsatisfiable_range_is_416_with_the_length() {
    let origin = Origin::start().await;
    let torii = proxy(&origin, "").await;
    stored(&origin, &torii, "/416").await;
    for asked in ["bytes=20-", "bytes=100-200", "bytes=-0", "bytes=30-40,50-"] {
        let (s, h, b) = range(&torii.url("/416"), &[("range", asked)]).await;
        assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE, "{asked}");
        assert_eq!(hv(&h, "content-range"), "bytes */20", "{asked}");
        assert!(b.is_empty());
        assert_eq!(hv(&h, "x-cache"), "HIT");
    }
    assert_eq!(origin.hits("/416"), 1);
}

#[tokio::test]
async fn bad_ranges_get_the_whole_object_never_more() {
    let origin = Origin::start().await;
    let torii = proxy(&origin, "").await;
    stored(&origin, &torii, "/bad").await;
    let many = format!("bytes={}", vec!["0-0"; 101].join(","));
    for asked in [
        "bytes=5-1",
        "bytes=a-b",
        "bytes=",
        "lines=0-1",
        "bytes=0-15,5-19",
        "bytes=-15,0-9",
        "bytes=1-2-3",
        many.as_str(),
    ] {
        let (s, h, b) = range(&torii.url("/bad"), &[("range", asked)]).await;
        assert_eq!(s, StatusCode::OK, "{asked}");
        assert_eq!(b, OBJ, "{asked}");
        assert!(!h.contains_key("content-range"));
    }
    // Many ranges (up to 100) that fit in the object: one part each.
    let twenty = format!("bytes={}", vec!["3-3"; 20].join(","));
    let (s, h, b) = range(&torii.url("/bad"), &[("range", &twenty)]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(multipart(&h, &b).len(), 20);
    assert_eq!(origin.hits("/bad"), 1);
}

#[tokio::test]
async fn if_range_from_the_cache_uses_the_strong_comparison() {
    let origin = Origin::start().await;
    let torii = proxy(&origin, "").await;
    stored(&origin, &torii, "/ifr").await;
    let url = torii.url("/ifr");
    let r = ("range", "bytes=0-3");
    let (s, _, b) = range(&url, &[r, ("if-range", "\"v2\"")]).await;
    assert_eq!((s, b.as_str()), (StatusCode::PARTIAL_CONTENT, "0123"));
    for stale in ["\"v1\"", "W/\"v2\"", "Sat, 05 Dec 2026 09:00:00 GMT"] {
        let (s, h, b) = range(&url, &[r, ("if-range", stale)]).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, OBJ), "{stale}");
        assert_eq!(hv(&h, "x-cache"), "HIT");
    }
    let (s, _, b) = range(&url, &[r, ("if-range", "Sat, 05 Dec 2026 10:00:00 GMT")]).await;
    assert_eq!((s, b.as_str()), (StatusCode::PARTIAL_CONTENT, "0123"));
    assert_eq!(origin.hits("/ifr"), 1);
}

#[tokio::test]
async fn if_range_on_a_miss_gives_the_whole_new_object() {
    let origin = Origin::start().await;
    origin.set(
        "/v2",
        Reply::new(OBJ)
            .header("cache-control", "max-age=600")
            .header("etag", "\"v2\""),
    );
    let torii = proxy(&origin, "").await;
    // The client holds part of v1; the origin has v2 now: the whole v2, never a slice of it.
    let (s, h, b) = range(
        &torii.url("/v2"),
        &[("range", "bytes=10-"), ("if-range", "\"v1\"")],
    )
    .await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, OBJ));
    assert_eq!(hv(&h, "x-cache"), "MISS");
    let asked = origin.requests("/v2");
    assert_eq!(asked.len(), 1);
    assert!(!asked[0].1.contains_key("range"), "{:?}", asked[0].1);
    assert!(!asked[0].1.contains_key("if-range"), "{:?}", asked[0].1);
    // Stored: a matching If-Range gets its slice from the cache.
    let (s, h, b) = range(
        &torii.url("/v2"),
        &[("range", "bytes=10-"), ("if-range", "\"v2\"")],
    )
    .await;
    assert_eq!(
        (s, b.as_str(), hv(&h, "x-cache")),
        (StatusCode::PARTIAL_CONTENT, "abcdefghij", "HIT")
    );
    assert_eq!(origin.hits("/v2"), 1);
}

#[tokio::test]
async fn a_range_miss_fetches_the_whole_object_once_and_stores_it() {
    let origin = Origin::start().await;
    origin.set(
        "/fill",
        Reply::new(OBJ)
            .header("cache-control", "max-age=600")
            .delay(std::time::Duration::from_millis(300)),
    );
    let torii = proxy(&origin, "").await;
    let url = torii.url("/fill");
    // Coalesced: ranges and whole-object requests wait on the same fill.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20u64 {
        let url = url.clone();
        tasks.spawn(async move {
            let asked = (i % 4 != 0).then(|| format!("bytes={}-{}", i % 20, (i % 20) + 2));
            let headers: Vec<(&str, &str)> = asked.iter().map(|a| ("range", a.as_str())).collect();
            (i, range(&url, &headers).await)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, (s, h, b)) = done.unwrap();
        if i % 4 == 0 {
            assert_eq!((s, b.as_str()), (StatusCode::OK, OBJ));
        } else {
            let a = (i % 20) as usize;
            let want = &OBJ[a..(a + 3).min(20)];
            assert_eq!((s, b.as_str()), (StatusCode::PARTIAL_CONTENT, want), "{i}");
            assert_eq!(
                hv(&h, "content-range"),
                format!("bytes {a}-{}/20", (a + 2).min(19))
            );
        }
    }
    assert_eq!(origin.hits("/fill"), 1, "one fill for every request");
    assert!(!origin.requests("/fill")[0].1.contains_key("range"));
    // A range miss alone stores the object too.
    origin.set(
        "/alone",
        Reply::new(OBJ).header("cache-control", "max-age=600"),
    );
    let (s, h, b) = range(&torii.url("/alone"), &[("range", "bytes=2-4")]).await;
    assert_eq!(
        (s, b.as_str(), hv(&h, "x-cache")),
        (StatusCode::PARTIAL_CONTENT, "234", "MISS")
    );
    let (s, h, b) = range(&torii.url("/alone"), &[]).await;
    assert_eq!(
        (s, b.as_str(), hv(&h, "x-cache")),
        (StatusCode::OK, OBJ, "HIT")
    );
    assert_eq!(origin.hits("/alone"), 1);
}

/// An origin that answers ranges itself (one `a-b` range, honouring If-Range on its ETag).
fn ranged_origin(origin: &Origin, path: &str, body: Bytes) {
    origin.set_fn(path, move |req| {
        let full = || {
            Reply::new(body.clone())
                .header("cache-control", "max-age=600")
                .header("etag", "\"big\"")
        };
        let Some(asked) = req.headers.get("range") else {
            return full();
        };
        if req.headers.get("if-range").is_some_and(|v| v != "\"big\"") {
            return full();
        }
        let spec = asked.to_str().unwrap().strip_prefix("bytes=").unwrap();
        let (a, b) = spec.split_once('-').unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        Reply::new(body.slice(a..=b))
            .status(206)
            .header("etag", "\"big\"")
            .header("content-range", &format!("bytes {a}-{b}/{}", body.len()))
    });
}

#[tokio::test]
async fn above_range_fill_max_the_range_is_forwarded_with_its_if_range_and_not_stored() {
    let origin = Origin::start().await;
    let body = Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    ranged_origin(&origin, "/big", body.clone());
    let torii = proxy(&origin, "range_fill_max = \"1KiB\"").await;
    let url = torii.url("/big");
    let (s, h, b) = send(
        "GET",
        &url,
        &[("range", "bytes=100-199"), ("if-range", "\"big\"")],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, body.slice(100..200));
    assert_eq!(hv(&h, "content-range"), "bytes 100-199/4096");
    assert_eq!(hv(&h, "x-cache"), "MISS");
    let asked = origin.requests("/big");
    let last = &asked.last().unwrap().1;
    assert_eq!(hv(last, "range"), "bytes=100-199");
    assert_eq!(
        hv(last, "if-range"),
        "\"big\"",
        "never a Range without its If-Range"
    );
    // A mismatching If-Range: the origin's whole 200 is relayed.
    let (s, _, b) = send(
        "GET",
        &url,
        &[("range", "bytes=0-9"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!((s, b.len()), (StatusCode::OK, 4096));
    // The 206 was not stored: the next request goes to the origin again.
    let before = origin.hits("/big");
    let (s, _, b) = send("GET", &url, &[("range", "bytes=100-199")]).await;
    assert_eq!((s, b), (StatusCode::PARTIAL_CONTENT, body.slice(100..200)));
    assert!(origin.hits("/big") > before);
}

#[tokio::test]
async fn an_origin_206_whose_content_range_disagrees_is_a_502_and_not_stored() {
    let origin = Origin::start().await;
    let lie = |chunked: bool| {
        move |req: &http::request::Parts| {
            if req.headers.contains_key("range") {
                let r = Reply::new("01234")
                    .status(206)
                    .header("content-range", "bytes 0-9/100");
                if chunked {
                    r.chunked()
                } else {
                    r
                }
            } else {
                Reply::new(vec![b'x'; 100]).header("cache-control", "max-age=600")
            }
        }
    };
    origin.set_fn("/lie", lie(false));
    origin.set_fn("/lie-chunked", lie(true));
    let torii = proxy(&origin, "range_fill_max = \"0\"").await;
    for path in ["/lie", "/lie-chunked"] {
        let (s, _, _) = send("GET", &torii.url(path), &[("range", "bytes=0-9")]).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{path}");
        let before = origin.hits(path);
        let (s, _, _) = send("GET", &torii.url(path), &[("range", "bytes=0-9")]).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{path}");
        assert!(origin.hits(path) > before, "{path}: nothing stored");
    }
}

#[tokio::test]
async fn head_and_conditionals_keep_working_with_ranges() {
    let origin = Origin::start().await;
    let torii = proxy(&origin, "").await;
    stored(&origin, &torii, "/head").await;
    let url = torii.url("/head");
    let (s, h, b) = send("HEAD", &url, &[("range", "bytes=0-9")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(hv(&h, "content-range"), "bytes 0-9/20");
    assert_eq!(hv(&h, "content-length"), "10");
    assert!(b.is_empty());
    let (s, h, _) = send("HEAD", &url, &[("range", "bytes=50-")]).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hv(&h, "content-range"), "bytes */20");
    // If-None-Match comes before the range (RFC 9110 §13.2.2): a 304.
    let (s, _, b) = send(
        "GET",
        &url,
        &[("range", "bytes=0-9"), ("if-none-match", "\"v2\"")],
    )
    .await;
    assert_eq!((s, b.len()), (StatusCode::NOT_MODIFIED, 0));
    let (s, _, b) = send(
        "GET",
        &url,
        &[("range", "bytes=0-9"), ("if-none-match", "\"v1\"")],
    )
    .await;
    assert_eq!((s, b.len()), (StatusCode::PARTIAL_CONTENT, 10));
    // If-Match passes: the range; fails: 412, with or without a range.
    let (s, _, b) = send(
        "GET",
        &url,
        &[("range", "bytes=0-1"), ("if-match", "\"v1\", \"v2\"")],
    )
    .await;
    assert_eq!((s, &b[..]), (StatusCode::PARTIAL_CONTENT, &b"01"[..]));
    for (name, value) in [
        ("if-match", "\"v1\""),
        ("if-match", "W/\"v2\""),
        ("if-unmodified-since", "Sat, 05 Dec 2026 09:59:59 GMT"),
    ] {
        for method in ["GET", "HEAD"] {
            let (s, h, _) = send(method, &url, &[(name, value)]).await;
            assert_eq!(
                s,
                StatusCode::PRECONDITION_FAILED,
                "{method} {name}: {value}"
            );
            assert_eq!(hv(&h, "x-cache"), "HIT");
            let (s, _, _) = send(method, &url, &[(name, value), ("range", "bytes=0-1")]).await;
            assert_eq!(
                s,
                StatusCode::PRECONDITION_FAILED,
                "{method} {name}: {value} + range"
            );
        }
    }
    let (s, _, b) = send(
        "GET",
        &url,
        &[("if-unmodified-since", "Sat, 05 Dec 2026 10:00:00 GMT")],
    )
    .await;
    assert_eq!((s, &b[..]), (StatusCode::OK, OBJ.as_bytes()));
    assert_eq!(origin.hits("/head"), 1);

    // On a miss: judged against the new response, which is stored all the same.
    origin.set(
        "/im",
        Reply::new(OBJ)
            .header("cache-control", "max-age=600")
            .header("etag", "\"v2\""),
    );
    let (s, _, _) = send("GET", &torii.url("/im"), &[("if-match", "\"v1\"")]).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert!(!origin.requests("/im")[0].1.contains_key("if-match"));
    eventually_hit(&torii.url("/im")).await;
    assert_eq!(origin.hits("/im"), 1);
    // A HEAD miss is relayed, its precondition judged on the origin's answer.
    origin.set("/head-im", Reply::new(OBJ).header("etag", "\"v2\""));
    let (s, _, _) = send("HEAD", &torii.url("/head-im"), &[("if-match", "\"v1\"")]).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, _, _) = send("HEAD", &torii.url("/head-im"), &[("if-match", "\"v2\"")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(origin.hits("/head-im"), 2);
}

/// Waits until `url` is answered from the cache (the background fill may still be running).
async fn eventually_hit(url: &str) {
    let url = url.to_string();
    wait_until_async("a hit", PATIENCE, || {
        let url = url.clone();
        async move { hv(&send("GET", &url, &[]).await.1, "x-cache") == "HIT" }
    })
    .await;
}

#[tokio::test]
async fn get_with_a_body_passes_to_the_origin_and_is_not_stored() {
    let origin = Origin::start().await;
    origin.set(
        "/body",
        Reply::new(OBJ).header("cache-control", "max-age=600"),
    );
    let torii = proxy(&origin, "").await;
    for _ in 0..2 {
        let req = Request::get(torii.url("/body"))
            .body(
                Full::new(Bytes::from_static(b"query"))
                    .map_err(|e| match e {})
                    .boxed(),
            )
            .unwrap();
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(hv(resp.headers(), "x-cache"), "BYPASS");
        let _ = resp.into_body().collect().await;
    }
    assert_eq!(origin.hits("/body"), 2);
    assert_eq!(hv(&origin.requests("/body")[0].1, "content-length"), "5");
    // Nothing was stored: a plain GET is a miss.
    let (s, h, _) = send("GET", &torii.url("/body"), &[]).await;
    assert_eq!((s, hv(&h, "x-cache")), (StatusCode::OK, "MISS"));
    assert_eq!(origin.hits("/body"), 3);
    // A stored object does not answer a GET with a body either.
    let req = Request::get(torii.url("/body"))
        .body(
            Full::new(Bytes::from_static(b"q"))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(hv(resp.headers(), "x-cache"), "BYPASS");
    assert_eq!(origin.hits("/body"), 4);
}

/// An origin that answers every request with `101 Switching Protocols`.
async fn upgrading_origin() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nhello")
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_unsolicited_101_is_a_502_not_a_tunnel() {
    let addr = upgrading_origin().await;
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\n\
         [upstreams.app]\nservers = [\"{addr}\"]\nretries = 0\n\
         [[routes]]\npath = \"/cached\"\nupstream = \"app\"\n[routes.cache]\n\
         [[routes]]\nupstream = \"app\"\n"
    );
    let torii = Torii::start(&toml, None).await;
    for path in ["/cached/x", "/plain", "/cached/y"] {
        for method in ["GET", "HEAD"] {
            let (s, h, _) = send(method, &torii.url(path), &[]).await;
            assert_eq!(s, StatusCode::BAD_GATEWAY, "{method} {path}");
            assert!(!h.contains_key("upgrade"));
        }
    }
}

/// Any range set over objects of many lengths, through torii: 416 (nothing satisfiable),
/// the whole object, or exactly the same slices of the object (single or multipart).
#[test]
fn any_range_set_answers_416_or_the_objects_own_bytes() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    const LENGTHS: [usize; 6] = [0, 1, 2, 7, 64, 300];
    let object = |len: usize| {
        (0..len)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect::<String>()
    };
    let (origin, torii) = rt.block_on(async {
        let origin = Origin::start().await;
        for len in LENGTHS {
            origin.set(
                &format!("/p{len}"),
                Reply::new(object(len)).header("cache-control", "max-age=3600"),
            );
        }
        let torii = proxy(&origin, "").await;
        for len in LENGTHS {
            send("GET", &torii.url(&format!("/p{len}")), &[]).await;
        }
        (origin, torii)
    });
    let spec = prop_oneof![
        (0u64..320, 0u64..320).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u64..320).prop_map(|a| format!("{a}-")),
        (0u64..320).prop_map(|n| format!("-{n}")),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(96));
    runner
        .run(
            &(0..LENGTHS.len(), proptest::collection::vec(spec, 1..5)),
            |(i, specs)| {
                let len = LENGTHS[i];
                let obj = object(len);
                let asked = format!("bytes={}", specs.join(","));
                let (s, h, b) =
                    rt.block_on(range(&torii.url(&format!("/p{len}")), &[("range", &asked)]));
                let slice = |cr: &str| {
                    let span = cr.strip_prefix("bytes ").unwrap();
                    let (span, total) = span.split_once('/').unwrap();
                    assert_eq!(total, len.to_string());
                    let (a, z) = span.split_once('-').unwrap();
                    obj[a.parse::<usize>().unwrap()..=z.parse::<usize>().unwrap()].to_string()
                };
                match s {
                    StatusCode::RANGE_NOT_SATISFIABLE => {
                        prop_assert_eq!(hv(&h, "content-range"), format!("bytes */{len}"));
                    }
                    StatusCode::OK => prop_assert_eq!(&b, &obj),
                    StatusCode::PARTIAL_CONTENT if h.contains_key("content-range") => {
                        prop_assert_eq!(&b, &slice(hv(&h, "content-range")));
                    }
                    StatusCode::PARTIAL_CONTENT => {
                        let parts = multipart(&h, &b);
                        prop_assert!(parts.len() >= 2);
                        let total: usize = parts.iter().map(|(_, d)| d.len()).sum();
                        prop_assert!(total <= len, "{} bytes of {}", total, len);
                        for (cr, data) in parts {
                            prop_assert_eq!(data, slice(&cr));
                        }
                    }
                    other => prop_assert!(false, "{} for {}", other, asked),
                }
                Ok(())
            },
        )
        .unwrap();
    for len in LENGTHS {
        assert_eq!(
            origin.hits(&format!("/p{len}")),
            1,
            "every range from the cache"
        );
    }
    drop(torii);
}

#[tokio::test]
async fn a_stale_object_revalidated_for_a_range_answers_it() {
    let origin = Origin::start().await;
    origin.set_fn("/reval", |req| {
        if req
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v2\"")
        {
            Reply::new("").status(304).header("etag", "\"v2\"")
        } else {
            Reply::new(OBJ)
                .header("cache-control", "max-age=10")
                .header("etag", "\"v2\"")
        }
    });
    let torii = proxy(&origin, "grace = \"0s\"\nrefresh_ahead = false").await;
    let url = torii.url("/reval");
    assert_eq!(range(&url, &[]).await.0, StatusCode::OK);
    torii.advance_clock(&origin, std::time::Duration::from_secs(20));
    let (s, h, b) = range(&url, &[("range", "bytes=3-5")]).await;
    assert_eq!((s, b.as_str()), (StatusCode::PARTIAL_CONTENT, "345"));
    assert_eq!(hv(&h, "x-cache"), "REVALIDATED");
    let asked = origin.requests("/reval");
    assert_eq!(asked.len(), 2);
    assert!(
        !asked[1].1.contains_key("range"),
        "the whole object is revalidated"
    );
    // A new version on revalidation: the range comes from it, and it is stored.
    origin.set(
        "/reval",
        Reply::new("ABCDEFGHIJKLMNOPQRST")
            .header("cache-control", "max-age=10")
            .header("etag", "\"v3\""),
    );
    torii.advance_clock(&origin, std::time::Duration::from_secs(20));
    let (s, h, b) = range(&url, &[("range", "bytes=3-5")]).await;
    assert_eq!(
        (s, b.as_str(), hv(&h, "x-cache")),
        (StatusCode::PARTIAL_CONTENT, "DEF", "MISS")
    );
    let (s, h, b) = range(&url, &[("range", "bytes=-2")]).await;
    assert_eq!(
        (s, b.as_str(), hv(&h, "x-cache")),
        (StatusCode::PARTIAL_CONTENT, "ST", "HIT")
    );
    assert_eq!(origin.hits("/reval"), 3);
}

#[tokio::test]
async fn a_head_miss_with_a_range_is_relayed_with_its_if_range() {
    let origin = Origin::start().await;
    ranged_origin(&origin, "/hr", Bytes::from_static(b"0123456789"));
    let torii = proxy(&origin, "").await;
    let (s, h, _) = send(
        "HEAD",
        &torii.url("/hr"),
        &[("range", "bytes=2-4"), ("if-range", "\"big\"")],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(hv(&h, "content-range"), "bytes 2-4/10");
    let asked = origin.requests("/hr");
    assert_eq!(asked[0].0, http::Method::HEAD);
    assert_eq!(hv(&asked[0].1, "range"), "bytes=2-4");
    assert_eq!(hv(&asked[0].1, "if-range"), "\"big\"");
}
