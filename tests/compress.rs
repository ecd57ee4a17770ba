//! Compression (`routes[].compress`) through real sockets: each coding decoded by a
//! decoder other than torii's own (the crates' read-side decoders), the choice from
//! `Accept-Encoding`, compress-once with the cache (origin count and
//! `torii_compressions_total`), identity for clients that take no coding, what is never
//! compressed (no-transform, HEAD, ranges, encoded bodies, small bodies, other types),
//! streaming, and a decompression bomb.

mod support;

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::*;

fn config(extra: &str, route: &str) -> String {
    format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\n{extra}\n\
         [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n{route}\n"
    )
}

async fn proxy(origin: &Origin, extra: &str, route: &str) -> Torii {
    Torii::start(&config(extra, route), Some(origin)).await
}

async fn get_ae(url: &str, ae: &str) -> (StatusCode, HeaderMap, Bytes) {
    if ae.is_empty() {
        send("GET", url, &[]).await
    } else {
        send("GET", url, &[("accept-encoding", ae)]).await
    }
}

fn hv<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).map_or("<none>", |v| v.to_str().unwrap())
}

/// Decodes with the crates' read-side decoders (not the write-side ones torii uses).
fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::stream::decode_all(body).unwrap(),
        "<none>" | "identity" => out = body.to_vec(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

/// A text body of `n` bytes that compresses well, with a little variety.
fn text(n: usize) -> String {
    let mut s = String::with_capacity(n + 64);
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!(
            "<p class=\"row{}\">item {i} of the page</p>\n",
            i % 13
        ));
        i += 1;
    }
    s.truncate(n);
    s
}

fn page(body: &str) -> Reply {
    Reply::new(body.to_string())
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "max-age=600")
        .header("etag", "\"v1\"")
}

async fn compressions(torii: &Torii, coding: &str) -> f64 {
    torii
        .metric(&format!("torii_compressions_total{{coding=\"{coding}\"}}"))
        .await
        .unwrap_or(0.0)
}

#[tokio::test]
async fn each_coding_chosen_by_q_values_and_decoded_by_a_real_decoder() {
    let origin = Origin::start().await;
    let body = text(50_000);
    // Not cached: every request is compressed on the fly.
    let torii = proxy(&origin, "", "").await;
    origin.set("/p", page(&body).header("cache-control", "no-store"));
    for (ae, want) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, deflate, br", "br"),
        ("gzip;q=1, br;q=0.5, zstd;q=0.1", "gzip"),
        ("x-gzip", "gzip"),
        ("*", "zstd"),
        ("deflate", "<none>"),
        ("br;q=0.5, identity", "<none>"),
        ("", "<none>"),
    ] {
        let (s, h, b) = get_ae(&torii.url("/p"), ae).await;
        assert_eq!(s, StatusCode::OK, "{ae}");
        assert_eq!(hv(&h, "content-encoding"), want, "{ae}");
        assert_eq!(decode(want, &b), body.as_bytes(), "{ae}");
        if want != "<none>" {
            // (An identity answer relayed as the server's raw head has no `Vary` added.)
            assert!(
                hv(&h, "vary")
                    .to_ascii_lowercase()
                    .contains("accept-encoding"),
                "{ae}"
            );
            assert!(b.len() < body.len() / 4, "{ae}: {}", b.len());
            assert_eq!(hv(&h, "etag"), "W/\"v1\"", "{ae}");
            assert!(h.get("content-length").is_none(), "{ae}");
        } else {
            assert_eq!(hv(&h, "etag"), "\"v1\"", "{ae}");
        }
    }
    assert_eq!(compressions(&torii, "zstd").await, 3.0);
    assert_eq!(compressions(&torii, "br").await, 2.0);
    assert_eq!(compressions(&torii, "gzip").await, 3.0);
}

#[tokio::test]
async fn compressed_once_stored_and_decoded_for_identity_clients() {
    let origin = Origin::start().await;
    let body = text(40_000);
    origin.set("/once", page(&body));
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/once");

    let (_, h, b) = get_ae(&url, "br, gzip").await;
    assert_eq!(hv(&h, "x-cache"), "MISS");
    assert_eq!(hv(&h, "content-encoding"), "br");
    assert_eq!(decode("br", &b), body.as_bytes());
    // The origin was asked for identity: torii makes the codings.
    let asked = origin.requests("/once");
    assert_eq!(hv(&asked[0].1, "accept-encoding"), "identity");

    // Later hits in that coding: the stored bytes, no compression.
    for _ in 0..3 {
        let (_, h2, b2) = get_ae(&url, "gzip, deflate, br").await;
        assert_eq!(hv(&h2, "x-cache"), "HIT");
        assert_eq!(hv(&h2, "content-encoding"), "br");
        assert_eq!(hv(&h2, "etag"), "W/\"v1\"");
        assert!(hv(&h2, "vary").contains("Accept-Encoding"));
        assert_eq!(b2, b);
    }
    // A client that takes no coding, or not br: the stored object decoded.
    for ae in ["", "gzip", "identity"] {
        let (s, h3, b3) = get_ae(&url, ae).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(hv(&h3, "x-cache"), "HIT", "{ae}");
        assert_eq!(hv(&h3, "content-encoding"), "<none>", "{ae}");
        assert_eq!(b3, body.as_bytes(), "{ae}");
    }
    assert_eq!(origin.hits("/once"), 1);
    assert_eq!(compressions(&torii, "br").await, 1.0);
    assert_eq!(compressions(&torii, "gzip").await, 0.0);
    // A conditional request with the weak tag: 304.
    let (s, _, _) = send(
        "GET",
        &url,
        &[("accept-encoding", "br"), ("if-none-match", "W/\"v1\"")],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn an_object_stored_as_identity_is_encoded_once_on_its_first_compressing_hit() {
    let origin = Origin::start().await;
    let body = text(30_000);
    origin.set("/plain-first", page(&body));
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/plain-first");

    // The first client takes no coding: the object is stored as identity.
    let (_, h, b) = get_ae(&url, "").await;
    assert_eq!(hv(&h, "x-cache"), "MISS");
    assert_eq!(hv(&h, "content-encoding"), "<none>");
    assert_eq!(b, body.as_bytes());
    assert_eq!(compressions(&torii, "gzip").await, 0.0);

    // The first gzip client is compressed for, and its encoding replaces the object.
    let (_, h, first) = get_ae(&url, "gzip").await;
    assert_eq!(hv(&h, "x-cache"), "HIT");
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(decode("gzip", &first), body.as_bytes());
    // Later gzip clients get the stored encoding: no more compression.
    for _ in 0..3 {
        let (_, h, b) = get_ae(&url, "gzip").await;
        assert_eq!(hv(&h, "x-cache"), "HIT");
        assert_eq!(hv(&h, "content-encoding"), "gzip");
        assert_eq!(hv(&h, "etag"), "W/\"v1\"");
        assert_eq!(b, first);
    }
    assert_eq!(compressions(&torii, "gzip").await, 1.0);
    // Identity clients now get the stored gzip decoded; a zstd client gets it decoded
    // too (one stored variant per object), nothing is compressed again.
    for ae in ["", "zstd"] {
        let (s, h, b) = get_ae(&url, ae).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(hv(&h, "content-encoding"), "<none>", "{ae}");
        assert_eq!(b, body.as_bytes(), "{ae}");
    }
    assert_eq!(compressions(&torii, "zstd").await, 0.0);
    assert_eq!(origin.hits("/plain-first"), 1);
}

#[tokio::test]
async fn accept_encoding_over_several_lines_reads_as_one_list_on_every_path() {
    let origin = Origin::start().await;
    let body = text(30_000);
    origin.set("/lines", page(&body));
    origin.set(
        "/lines-pass",
        Reply::new(body.clone())
            .header("content-type", "text/html")
            .header("cache-control", "no-store"),
    );
    let torii = proxy(&origin, "", "").await;
    let two = [("accept-encoding", "identity"), ("accept-encoding", "gzip")];

    // Stored as identity by a client that takes no coding.
    let (_, h, _) = get_ae(&torii.url("/lines"), "").await;
    assert_eq!(hv(&h, "x-cache"), "MISS");
    // A hit for a client whose list is split over two lines: gzip, as for "identity, gzip"
    // (the hit's as-is check reads both lines, not the first alone).
    let (s, h, b) = send("GET", &torii.url("/lines"), &two).await;
    assert_eq!((s, hv(&h, "x-cache")), (StatusCode::OK, "HIT"));
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(decode("gzip", &b), body.as_bytes());
    // A range from the object now stored gzip: servable for that client as it is.
    let mut range = two.to_vec();
    range.push(("range", "bytes=0-9"));
    let (s, h, _) = send("GET", &torii.url("/lines"), &range).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    // A pass is compressed for it too (the relay's may-encode check).
    let (s, h, b) = send("GET", &torii.url("/lines-pass"), &two).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(decode("gzip", &b), body.as_bytes());
    assert_eq!(origin.hits("/lines"), 1);
}

#[tokio::test]
async fn no_transform_head_ranges_small_and_other_types_are_not_compressed() {
    let origin = Origin::start().await;
    let body = text(20_000);
    origin.set(
        "/nt",
        page(&body).header("cache-control", "max-age=60, no-transform"),
    );
    origin.set("/small", page(&text(500)));
    origin.set(
        "/png",
        Reply::new(text(20_000))
            .header("content-type", "image/png")
            .header("cache-control", "max-age=60"),
    );
    origin.set("/head", page(&body));
    origin.set("/range", page(&body).header("accept-ranges", "bytes"));
    let torii = proxy(&origin, "", "").await;
    let br = [("accept-encoding", "gzip, br")];

    for path in ["/nt", "/small", "/png"] {
        for _ in 0..2 {
            let (s, h, b) = send("GET", &torii.url(path), &br).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(hv(&h, "content-encoding"), "<none>", "{path}");
            assert_eq!(b.len(), if path == "/small" { 500 } else { 20_000 });
        }
    }
    let (s, h, b) = send("HEAD", &torii.url("/head"), &br).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hv(&h, "content-encoding"), "<none>");
    assert!(b.is_empty());

    let with_range = [("accept-encoding", "br"), ("range", "bytes=0-9")];
    // On a miss, then from the cache.
    for _ in 0..2 {
        let (s, h, b) = send("GET", &torii.url("/range"), &with_range).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT);
        assert_eq!(hv(&h, "content-encoding"), "<none>");
        assert_eq!(&b[..], &body.as_bytes()[..10]);
    }
    for coding in ["zstd", "br", "gzip"] {
        assert_eq!(compressions(&torii, coding).await, 0.0, "{coding}");
    }
}

#[tokio::test]
async fn ranges_on_a_stored_compressed_object_for_a_client_without_that_coding() {
    let origin = Origin::start().await;
    let body = text(20_000);
    origin.set("/r", page(&body).header("accept-ranges", "bytes"));
    let torii = proxy(&origin, "", "").await;
    let (_, h, _) = get_ae(&torii.url("/r"), "br").await;
    assert_eq!(hv(&h, "content-encoding"), "br");
    // The stored object is br: a client that takes identity only gets it whole, decoded
    // (a server may ignore Range), never a slice of the encoded bytes.
    let (s, h, b) = send("GET", &torii.url("/r"), &[("range", "bytes=0-9")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hv(&h, "content-encoding"), "<none>");
    assert_eq!(b, body.as_bytes());
    assert_eq!(origin.hits("/r"), 1);
}

#[tokio::test]
async fn already_encoded_bodies_pass_and_are_decoded_for_identity_clients() {
    let origin = Origin::start().await;
    let body = text(30_000);
    let gz = torii::compress::encode_all(torii::config::Coding::Gzip, body.as_bytes()).unwrap();
    // An origin that sends gzip whatever it is asked.
    origin.set(
        "/gz",
        Reply::new(gz.clone())
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .header("cache-control", "max-age=60"),
    );
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/gz");
    let (_, h, b) = get_ae(&url, "gzip, br, zstd").await;
    assert_eq!(hv(&h, "x-cache"), "MISS");
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(b, gz);
    let (_, h, b) = get_ae(&url, "").await;
    assert_eq!(hv(&h, "x-cache"), "HIT");
    assert_eq!(hv(&h, "content-encoding"), "<none>");
    assert_eq!(b, body.as_bytes());
    assert_eq!(origin.hits("/gz"), 1);
    // Identity first on another path: decoded on the miss, stored as it came.
    origin.set(
        "/gz2",
        Reply::new(gz.clone())
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .header("cache-control", "max-age=60"),
    );
    let (_, h, b) = get_ae(&torii.url("/gz2"), "").await;
    assert_eq!(hv(&h, "content-encoding"), "<none>");
    assert_eq!(b, body.as_bytes());
    let (_, h, b) = get_ae(&torii.url("/gz2"), "gzip").await;
    assert_eq!(hv(&h, "x-cache"), "HIT");
    assert_eq!(b, gz);
    assert_eq!(origin.hits("/gz2"), 1);
    for coding in ["zstd", "br", "gzip"] {
        assert_eq!(compressions(&torii, coding).await, 0.0, "{coding}");
    }
}

#[tokio::test]
async fn decompression_bomb_is_cut_and_not_stored() {
    let origin = Origin::start().await;
    let bomb =
        torii::compress::encode_all(torii::config::Coding::Gzip, &vec![b'a'; 8 << 20]).unwrap();
    assert!(bomb.len() < 64 * 1024);
    origin.set(
        "/bomb",
        Reply::new(bomb.clone())
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .header("cache-control", "max-age=60"),
    );
    let torii = Torii::start(
        &config("", "").replace("[cache]", "[limits]\nmax_body = \"1MiB\"\n[cache]"),
        Some(&origin),
    )
    .await;
    let url = torii.url("/bomb");
    let req = Request::get(&url)
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(hv(resp.headers(), "content-encoding"), "<none>");
    // Cut: the body fails before its end, after at most max_body bytes.
    let mut got = 0usize;
    let mut body = resp.into_body();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => got += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ended cleanly after {got} bytes");
    assert!(got <= 1 << 20, "{got}");
    // Not stored: the next request goes to the origin again.
    let (_, h, b) = get_ae(&url, "gzip").await;
    assert_eq!(hv(&h, "x-cache"), "MISS");
    assert_eq!(b, bomb);
    assert_eq!(origin.hits("/bomb"), 2);
}

#[tokio::test]
async fn configured_types_min_size_and_codings() {
    let origin = Origin::start().await;
    let body = text(3000);
    origin.set(
        "/c",
        Reply::new(body.clone())
            .header("content-type", "application/x-custom")
            .header("cache-control", "no-store"),
    );
    origin.set("/html", page(&body).header("cache-control", "no-store"));
    let torii = proxy(
        &origin,
        "",
        "[routes.compress]\ncodings = [\"gzip\", \"br\"]\nmin_size = \"2KiB\"\ntypes = [\"application/x-custom\"]",
    )
    .await;
    let (_, h, b) = get_ae(&torii.url("/c"), "zstd, br, gzip").await;
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(decode("gzip", &b), body.as_bytes());
    let (_, h, _) = get_ae(&torii.url("/html"), "zstd, br, gzip").await;
    assert_eq!(hv(&h, "content-encoding"), "<none>");
    let (_, h, _) = get_ae(&torii.url("/c"), "zstd").await;
    assert_eq!(hv(&h, "content-encoding"), "<none>");

    // Off.
    let off = proxy(&origin, "", "[routes.compress]\nenabled = false").await;
    let (_, h, b) = get_ae(&off.url("/html"), "gzip").await;
    assert_eq!(hv(&h, "content-encoding"), "<none>");
    assert_eq!(b, body.as_bytes());
}

#[tokio::test]
async fn streaming_is_compressed_as_it_comes_and_event_streams_flush_per_chunk() {
    let origin = Origin::start().await;
    let events: String = (0..4).map(|i| format!("data: event {i}\n\n")).collect();
    origin.set(
        "/sse",
        Reply::new(events.clone())
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-store")
            .chunked()
            .trickle(4, Duration::from_millis(400)),
    );
    let torii = proxy(&origin, "", "").await;
    let req = Request::get(torii.url("/sse"))
        .header("accept-encoding", "gzip")
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(hv(resp.headers(), "content-encoding"), "gzip");
    let mut body = resp.into_body();
    // The first frame, decoded on its own, already holds the first event: it was
    // flushed, not held back for more input.
    let first = loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Some(d) = frame.data_ref() {
            if !d.is_empty() {
                break d.clone();
            }
        }
    };
    let mut partial = flate2::write::GzDecoder::new(Vec::new());
    std::io::Write::write_all(&mut partial, &first).unwrap();
    std::io::Write::flush(&mut partial).unwrap();
    let so_far = String::from_utf8_lossy(partial.get_ref()).into_owned();
    assert!(so_far.starts_with("data: event 0"), "{so_far:?}");
    assert!(!so_far.contains("event 3"), "{so_far:?}");
    let mut rest = first.to_vec();
    rest.extend_from_slice(&body.collect().await.unwrap().to_bytes());
    assert_eq!(decode("gzip", &rest), events.as_bytes());
}
