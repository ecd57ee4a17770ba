use super::body::{chunk_size, Chunk};
use super::encode::push_hex;
use super::head::content_length;
use super::*;

#[test]
fn chunk_sizes() {
    assert_eq!(chunk_size(b"1a\r\n"), Some(26));
    assert_eq!(chunk_size(b"0\r\n"), Some(0));
    assert_eq!(chunk_size(b"FF;name=value\r\n"), Some(255));
    assert_eq!(chunk_size(b"10 \r\n"), Some(16));
    assert_eq!(chunk_size(b"\r\n"), None);
    assert_eq!(chunk_size(b"1a\n"), None, "a bare LF");
    assert_eq!(chunk_size(b"-1\r\n"), None);
    assert_eq!(chunk_size(b"0x10\r\n"), None);
    assert_eq!(chunk_size(b"1000000000000000\r\n"), None, "over 15 digits");
}

#[test]
fn hex_lengths() {
    for n in [0u64, 1, 15, 16, 255, 4096, 1 << 40] {
        let mut out = Vec::new();
        push_hex(&mut out, n);
        assert_eq!(out, format!("{n:x}").into_bytes());
    }
}

#[test]
fn content_lengths() {
    let mut length = None;
    content_length(b"12", &mut length).unwrap();
    assert_eq!(length, Some(12));
    content_length(b"12, 12", &mut length).unwrap();
    assert_eq!(length, Some(12));
    assert!(content_length(b"13", &mut length).is_err());
    for bad in ["", "+1", "1 2", "0x1", "99999999999999999999", "1,,1"] {
        assert!(
            content_length(bad.as_bytes(), &mut None).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn heads_parse_into_fields() {
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\nx-a: c\r\n\r\nabc"[..]);
    let parsed = parse_head(&mut buf, None).unwrap().unwrap();
    assert_eq!(parsed.head.status(), 200);
    assert_eq!(parsed.length, Framing::Length(3));
    assert!(parsed.keep_alive);
    let values: Vec<_> = parsed.head.headers().get_all("x-a").iter().collect();
    assert_eq!(values, ["b", "c"]);
    assert_eq!(&parsed.tail[..], b"abc", "a small body comes with the head");
    assert!(buf.is_empty());

    let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
    assert!(parse_head(&mut partial, None).unwrap().is_none());

    let mut close = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
    let parsed = parse_head(&mut close, None).unwrap().unwrap();
    assert_eq!(parsed.length, Framing::Close);
    assert!(!parsed.keep_alive);

    let mut both = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
    );
    assert!(matches!(
        parse_head(&mut both, None),
        Err(Failure::Framing(_))
    ));
    let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"[..]);
    assert!(matches!(parse_head(&mut bad, None), Err(Failure::Parse(_))));

    // The connection's own fields stay behind, whatever their case.
    let mut hop = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Hop\r\nKeep-Alive: timeout=5\r\nx-hop: 1\r\nTransfer-Encoding: Chunked\r\nX-End: 2\r\n\r\n"[..],
    );
    let parsed = parse_head(&mut hop, None).unwrap().unwrap();
    assert_eq!(parsed.length, Framing::Chunked(Chunk::Size));
    let names: Vec<_> = parsed.head.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-end"]);

    let mut close =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..]);
    assert!(!parse_head(&mut close, None).unwrap().unwrap().keep_alive);
    let mut two = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
    );
    assert!(matches!(
        parse_head(&mut two, None),
        Err(Failure::Parse(_)) | Err(Failure::Framing(_))
    ));
}

fn raw_lines(head: &[u8]) -> (Option<Bytes>, Bytes) {
    let mut buf = BytesMut::from(head);
    let parsed = parse_head(
        &mut buf,
        Some(RawTail {
            lines: b"via: t\r\n",
            replaces: "x-cache",
        }),
    )
    .unwrap()
    .unwrap();
    let raw = parsed.raw.as_ref();
    assert!(raw.is_none() || parsed.head.headers().is_empty());
    // The caller's lines are the tail, after the server's.
    let lines = raw.map(|r| Bytes::from([&r.lines[..], r.tail].concat()));
    (lines, parsed.tail)
}

#[test]
fn raw_heads_keep_end_to_end_lines() {
    // The lines as the server wrote them, without the framing, the connection's own
    // fields and the server's X-Cache; then the caller's lines.
    let (lines, tail) = raw_lines(
        b"HTTP/1.1 200 OK\r\nServer: o\r\nDate: d\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nETag: \"e\"\r\nX-Hop: 1\r\nx-cache: HIT\r\nCache-Control: no-store\r\n\r\nok",
    );
    assert_eq!(
        lines.as_deref(),
        Some(&b"Server: o\r\nDate: d\r\nETag: \"e\"\r\nCache-Control: no-store\r\nvia: t\r\n"[..])
    );
    assert_eq!(&tail[..], b"ok");

    // Lines written otherwise (bare LF, no space, more spaces) come as `name: value`
    // CRLF, in order.
    let (lines, _) = raw_lines(
        b"HTTP/1.1 200 OK\nDate: d\r\nA:1\r\nB:   2  \r\nC: 3\nD: 4\r\nE: \r\nF: 6\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        lines.as_deref(),
        Some(&b"Date: d\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: \r\nF: 6\r\nvia: t\r\n"[..])
    );

    // No Date (hyper adds one), or no body by its status: a header map.
    for head in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: 1\r\n\r\n"[..],
        b"HTTP/1.1 204 No Content\r\nDate: d\r\nX: 1\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nDate: d\r\nX: 1\r\n\r\n",
    ] {
        assert_eq!(raw_lines(head).0, None);
    }
}
