//! Downstream HTTP/2 (prior knowledge, cleartext) as the hit path's cost work (issue 21)
//! shaped it: a connection's frames are gathered into one write per event-loop turn
//! (`listener::coalesce`), and `X-Request-Id`, unique per response, is sent as an HPACK
//! literal "never indexed" so it never enters the connection's dynamic table.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

async fn cached_proxy(origin: &Origin) -> Torii {
    Torii::start(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\n\
         [upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n",
        Some(origin),
    )
    .await
}

/// `GET path` on `client`: status, `x-cache`, whole body.
async fn h2_get(
    mut client: h2::client::SendRequest<Bytes>,
    path: String,
) -> (u16, String, Vec<u8>) {
    let req = http::Request::get(format!("http://example.com{path}"))
        .body(())
        .unwrap();
    client = tokio::time::timeout(WAIT, client.ready())
        .await
        .unwrap()
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let (head, bytes) = h2_whole(response, WAIT).await;
    let x_cache = head
        .headers
        .get("x-cache")
        .map_or("<none>", |v| v.to_str().unwrap())
        .to_string();
    (head.status.as_u16(), x_cache, bytes)
}

fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn concurrent_streams_of_small_hits_and_large_bodies_come_whole_and_apart() {
    let origin = Origin::start().await;
    let small: Vec<Vec<u8>> = (0..8).map(|i| patterned(300 + i * 700, i as u8)).collect();
    for (i, body) in small.iter().enumerate() {
        origin.set(
            &format!("/s{i}"),
            Reply::new(body.clone()).header("cache-control", "max-age=600"),
        );
    }
    // Larger than the coalescing limits: written through, never copied into the buffer.
    let large = patterned(3 * 1024 * 1024 + 17, 0xa5);
    origin.set(
        "/large",
        Reply::new(large.clone()).header("cache-control", "max-age=600"),
    );
    let torii = cached_proxy(&origin).await;
    let client = h2_client(&torii).await;
    for (i, want) in small.iter().enumerate() {
        let (status, _, body) = h2_get(client.clone(), format!("/s{i}")).await;
        assert_eq!(status, 200);
        assert_eq!(&body, want);
    }
    // 100 streams at once on the one connection: hits of every size, two large bodies.
    let mut tasks = Vec::new();
    for n in 0..100 {
        let path = match n {
            10 | 60 => "/large".to_string(),
            n => format!("/s{}", n % small.len()),
        };
        tasks.push(tokio::spawn(h2_get(client.clone(), path.clone())));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        let (status, x_cache, body) = task.await.unwrap();
        assert_eq!(status, 200, "stream {n}");
        match n {
            10 | 60 => assert!(body == large, "stream {n}: {} bytes", body.len()),
            n => {
                assert_eq!(x_cache, "HIT", "stream {n}");
                assert_eq!(body, small[n % small.len()], "stream {n}");
            }
        }
    }
    assert_eq!(origin.hits("/s0"), 1);
}

/// The representation of each field of an HPACK block (RFC 7541 §6), without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Indexed,
    IncrementalIndexing,
    WithoutIndexing,
    NeverIndexed,
    SizeUpdate,
}

fn hpack_int(block: &[u8], at: &mut usize, prefix: u32) -> usize {
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(block[*at]) & mask;
    *at += 1;
    if value < mask {
        return value;
    }
    let mut shift = 0;
    loop {
        let b = block[*at];
        *at += 1;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return value;
        }
    }
}

fn hpack_skip_string(block: &[u8], at: &mut usize) {
    let len = hpack_int(block, at, 7);
    *at += len;
}

fn hpack_fields(block: &[u8]) -> Vec<Field> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < block.len() {
        let b = block[at];
        let (field, prefix) = match b {
            _ if b & 0x80 != 0 => (Field::Indexed, 7),
            _ if b & 0xc0 == 0x40 => (Field::IncrementalIndexing, 6),
            _ if b & 0xe0 == 0x20 => (Field::SizeUpdate, 5),
            _ if b & 0xf0 == 0x10 => (Field::NeverIndexed, 4),
            _ => (Field::WithoutIndexing, 4),
        };
        let index = hpack_int(block, &mut at, prefix);
        if !matches!(field, Field::Indexed | Field::SizeUpdate) {
            if index == 0 {
                hpack_skip_string(block, &mut at);
            }
            hpack_skip_string(block, &mut at);
        }
        out.push(field);
    }
    out
}

/// Reads frames until `streams` streams have ended: the header block of each HEADERS
/// frame, in the order they came (the order HPACK encoded them in).
async fn response_blocks(tcp: &mut TcpStream, streams: usize) -> Vec<(u32, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut ended = 0;
    while ended < streams {
        let mut head = [0u8; 9];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.unwrap();
        match kind {
            // HEADERS: torii's heads fit one frame, without padding or priority.
            0x1 => {
                assert_eq!(flags & 0x2c, 0x4, "END_HEADERS, no padding, no priority");
                blocks.push((stream, payload));
            }
            0x3 => panic!("stream {stream} reset"),
            0x7 => panic!("GOAWAY {payload:?}"),
            _ => {}
        }
        if stream != 0 && flags & 0x1 != 0 {
            ended += 1;
        }
    }
    blocks
}

#[tokio::test]
async fn request_ids_are_never_indexed_and_a_hit_adds_nothing_to_the_table() {
    let origin = Origin::start().await;
    origin.set(
        "/r",
        Reply::new("hello")
            .header("cache-control", "max-age=600")
            .header("x-origin-field", "same every time"),
    );
    let torii = cached_proxy(&origin).await;
    // Stored once an HTTP/1 GET finds it a hit.
    let url = torii.url("/r");
    wait_until_async("/r stored", WAIT, || async {
        get(&url).await.1.get("x-cache").is_some_and(|v| v == "HIT")
    })
    .await;

    let mut tcp = TcpStream::connect(torii.addr).await.unwrap();
    // The preface, empty SETTINGS, and GETs for /r on streams 1, 3 and 5 whose header blocks
    // are all static-table references and literals that are never indexed.
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    for id in [1u8, 3, 5] {
        // The authority the HTTP/1 GETs had as `Host`: the same cache key.
        let authority = torii.addr.to_string();
        let authority = authority.as_bytes();
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.extend_from_slice(&[0x14, 2]); // :path (index 4), never indexed
        block.extend_from_slice(b"/r");
        block.extend_from_slice(&[0x11, authority.len() as u8]); // :authority (index 1)
        block.extend_from_slice(authority);
        let len = block.len() as u8;
        // HEADERS, END_STREAM | END_HEADERS.
        out.extend_from_slice(&[0, 0, len, 0x1, 0x5, 0, 0, 0, id]);
        out.extend_from_slice(&block);
    }
    tcp.write_all(&out).await.unwrap();

    let blocks = response_blocks(&mut tcp, 3).await;
    assert_eq!(blocks.len(), 3);
    for (n, (id, block)) in blocks.iter().enumerate() {
        let fields = hpack_fields(block);
        let never = fields.iter().filter(|f| **f == Field::NeverIndexed).count();
        assert_eq!(
            never, 1,
            "stream {id}: the request ID alone, never indexed: {fields:?}"
        );
        let inserted = fields
            .iter()
            .filter(|f| **f == Field::IncrementalIndexing)
            .count();
        // The stored fields, `content-length`, `via` and `x-cache` are sent pre-encoded, as
        // literals that never enter the table (`cached::pre_encoded`); `age`, the map's,
        // is one HPACK never indexes either: nothing on a hit goes into the table.
        let literals = fields
            .iter()
            .filter(|f| **f == Field::WithoutIndexing)
            .count();
        assert!(literals >= 5, "stream {id}: {fields:?}");
        assert_eq!(inserted, 0, "stream {id} (response {n}): {fields:?}");
    }
    assert_eq!(origin.hits("/r"), 1);
}

/// `method` `path` with `fields` on `client` (to torii's address, the authority HTTP/1
/// clients send as `Host`: the same cache key): the response's head and body.
async fn h2_request(
    client: &h2::client::SendRequest<Bytes>,
    torii: &Torii,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (http::response::Parts, Vec<u8>) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", torii.addr));
    for (name, value) in fields {
        req = req.header(*name, *value);
    }
    let client = tokio::time::timeout(WAIT, client.clone().ready())
        .await
        .unwrap()
        .unwrap();
    let mut client = client;
    let (response, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
    h2_whole(response, WAIT).await
}

/// Each field name of `headers` with its values, sorted: what two heads must share.
fn fields_of(headers: &http::HeaderMap, but: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = headers
        .keys()
        .filter(|name| !but.contains(&name.as_str()))
        .map(|name| {
            let values = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            (name.as_str().to_string(), values)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_pre_encoded_hit_carries_each_stored_field_once_on_every_connection() {
    let origin = Origin::start().await;
    origin.set(
        "/o",
        Reply::new("pre-encoded")
            .header("cache-control", "max-age=600")
            .header("etag", "\"v1\"")
            .header("x-multi", "one")
            .header("x-multi", "two")
            // Over one HEADERS frame (16 KiB; ~22 KiB coded): CONTINUATION frames follow.
            .header("x-long", &"l".repeat(30_000))
            .header("content-type", "text/plain")
            // The hit's own replace these.
            .header("age", "100")
            .header("x-cache", "MISS")
            .header("x-request-id", "from-origin"),
    );
    let torii = cached_proxy(&origin).await;
    let url = torii.url("/o");
    wait_until_async("/o stored", WAIT, || async {
        get(&url).await.1.get("x-cache").is_some_and(|v| v == "HIT")
    })
    .await;
    let h1 = Some(get(&url).await.1);
    let want = fields_of(h1.as_ref().unwrap(), &["x-request-id", "age"]);
    assert!(
        want.iter().any(|(n, v)| n == "x-multi" && v.len() == 2),
        "{want:?}"
    );

    // Two connections, three hits each: the same block serves them all.
    for _ in 0..2 {
        let client = h2_client(&torii).await;
        for _ in 0..3 {
            let (head, body) = h2_request(&client, &torii, "GET", "/o", &[]).await;
            assert_eq!(head.status, 200);
            assert_eq!(body, b"pre-encoded");
            assert_eq!(fields_of(&head.headers, &["x-request-id", "age"]), want);
            for name in [
                "age",
                "x-request-id",
                "date",
                "content-length",
                "via",
                "x-cache",
            ] {
                assert_eq!(head.headers.get_all(name).iter().count(), 1, "{name}");
            }
            let age: u64 = head.headers["age"].to_str().unwrap().parse().unwrap();
            assert!((100..600).contains(&age), "{age}");
            assert_ne!(head.headers["x-request-id"], "from-origin");
        }
        // What is not a plain GET of the whole object goes the map's way, as before.
        let (head, body) =
            h2_request(&client, &torii, "GET", "/o", &[("if-none-match", "\"v1\"")]).await;
        assert_eq!(head.status, 304);
        assert!(body.is_empty());
        assert_eq!(head.headers.get("etag").unwrap(), "\"v1\"");
        let (head, body) = h2_request(&client, &torii, "HEAD", "/o", &[]).await;
        assert_eq!(head.status, 200);
        assert!(body.is_empty());
        assert_eq!(head.headers.get("content-length").unwrap(), "11");
        let (head, body) =
            h2_request(&client, &torii, "GET", "/o", &[("range", "bytes=0-2")]).await;
        assert_eq!(head.status, 206);
        assert_eq!(body, b"pre");
    }
    assert_eq!(origin.hits("/o"), 1);
}

#[tokio::test]
async fn response_rules_apply_to_http2_hits() {
    let origin = Origin::start().await;
    origin.set(
        "/r",
        Reply::new("ruled")
            .header("cache-control", "max-age=600")
            .header("x-powered-by", "origin"),
    );
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\n\
         [upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n\
         [routes.headers.response]\nremove = [\"X-Powered-By\"]\nset = { \"X-R\" = \"{method}\" }\n",
        Some(&origin),
    )
    .await;
    let url = torii.url("/r");
    wait_until_async("/r stored", WAIT, || async {
        get(&url).await.1.get("x-cache").is_some_and(|v| v == "HIT")
    })
    .await;
    let client = h2_client(&torii).await;
    for _ in 0..2 {
        let (head, body) = h2_request(&client, &torii, "GET", "/r", &[]).await;
        assert_eq!(head.status, 200);
        assert_eq!(body, b"ruled");
        assert_eq!(head.headers.get("x-cache").unwrap(), "HIT");
        assert_eq!(head.headers.get("x-r").unwrap(), "GET");
        assert!(head.headers.get("x-powered-by").is_none());
        assert_eq!(head.headers.get_all("cache-control").iter().count(), 1);
    }
}
