//! A 1 GiB download and a 1 GiB upload pass through torii in bounded memory.
//! (Its own test binary: the check reads this process's peak RSS.)

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::*;

const GIB: u64 = 1 << 30;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_in_bounded_memory() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "[limits]\nmax_body = \"2GiB\"\n").await;
    let before = peak_rss_kib();

    // Download: the origin streams 1 GiB; the client counts it as it arrives.
    let resp = client()
        .get(torii.url(&format!("/big?bytes={GIB}")).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, GIB);

    // Upload: the client streams 1 GiB (chunked); the origin counts it.
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = (GIB / chunk.len() as u64) as usize;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let req = Request::post(torii.url("/upload"))
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        GIB.to_string()
    );

    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 64,
        "peak RSS grew by {grown_mib} MiB while streaming 2 GiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_cannot_make_torii_buffer_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let before = peak_rss_kib();
    let mut s = tokio::net::TcpStream::connect(torii.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /big?bytes={} HTTP/1.1\r\nHost: a\r\n\r\n",
            512u64 << 20
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Read nothing until the origin has stopped producing (back pressure reached it
    // through torii): until then it could have sent all 512 MiB.
    let start = std::time::Instant::now();
    let (mut produced, mut unchanged) = (0, 0);
    while unchanged < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let now = origin.big_bytes();
        if now == produced && now > 0 {
            unchanged += 1;
        } else {
            (produced, unchanged) = (now, 0);
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the origin never stopped: {now} bytes"
        );
    }
    assert!(
        produced < 256 << 20,
        "the origin sent {produced} bytes to a client that read nothing"
    );
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 64,
        "peak RSS grew by {grown_mib} MiB while the client did not read"
    );
    // Then the whole body still arrives.
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    while total < (512 << 20) {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early after {total} bytes");
        total += n as u64;
    }
}
