//! Request hardening (issue 19): header names with `_`, per-route body and rate limits.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::*;

async fn send(url: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut req = Request::builder().uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body: Body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed();
    let resp = client().request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

const DROPPED: &str = "torii_request_headers_dropped_total{reason=\"underscore\"}";

// === header names with `_` ===

#[tokio::test]
async fn underscore_headers_are_dropped_by_default_and_counted() {
    let origin = Origin::start().await;
    origin.set("/seen", Reply::new("ok"));
    let torii = Torii::to(&origin, "").await;
    assert_eq!(torii.metric(DROPPED).await, Some(0.0));
    let status = send(
        &torii.url("/seen"),
        &[
            ("x_forwarded_for", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.7"),
            ("x-custom_id", "1"),
            ("x-plain", "kept"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/seen");
    let (_, headers) = &seen[0];
    assert!(headers.get("x_forwarded_for").is_none(), "{headers:?}");
    assert!(headers.get("x-custom_id").is_none(), "{headers:?}");
    assert_eq!(headers["x-plain"], "kept");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(torii.metric(DROPPED).await, Some(3.0));
    // A request without any: nothing counted.
    assert_eq!(
        send(&torii.url("/seen"), &[("x-a", "b")]).await,
        StatusCode::OK
    );
    assert_eq!(torii.metric(DROPPED).await, Some(3.0));
}

#[tokio::test]
async fn underscore_headers_are_kept_with_the_flag() {
    let origin = Origin::start().await;
    origin.set("/seen", Reply::new("ok"));
    let torii = Torii::to(&origin, "[limits]\nunderscores_in_headers = true\n").await;
    let status = send(&torii.url("/seen"), &[("x_custom", "1")]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/seen");
    assert_eq!(seen[0].1["x_custom"], "1");
    assert_eq!(torii.metric(DROPPED).await, Some(0.0));
}

// === per-route limits ===

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Routes by Host: `small` (max_body 10 bytes, body_timeout 200ms), `big` (max_body 1KiB,
/// over the server's 100 bytes), and the default route with the server's limits.
async fn limited(origin: &Origin, extra: &str) -> Torii {
    Torii::start(
        &format!(
            "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n\
             [limits]\nmax_body = \"100\"\nbody_timeout = \"30s\"\n{extra}\n\
             [upstreams.app]\nservers = [\"{{origin}}\"]\n\
             [[routes]]\nhost = \"small\"\nupstream = \"app\"\n\
             limits = {{ max_body = \"10\", body_timeout = \"200ms\" }}\n\
             [[routes]]\nhost = \"big\"\nupstream = \"app\"\nlimits = {{ max_body = \"1KiB\" }}\n\
             [[routes]]\nupstream = \"app\"\n"
        ),
        Some(origin),
    )
    .await
}

fn upload(host: &str, len: usize) -> Vec<u8> {
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'x', len));
    req
}

fn chunked_upload(host: &str, len: usize) -> Vec<u8> {
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{len:x}\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'x', len));
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    req
}

fn status_of(text: &str) -> &str {
    text.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn a_route_max_body_overrides_the_servers_both_ways() {
    let origin = Origin::start().await;
    let torii = limited(&origin, "").await;
    let wait = PATIENCE;
    // 50 bytes: over the small route's 10, within the server's 100.
    let text = raw(torii.addr, &upload("small", 50), wait).await;
    assert_eq!(status_of(&text), "413", "{text}");
    assert_eq!(
        origin.hits("/upload"),
        0,
        "refused before reading, by Content-Length"
    );
    let text = raw(torii.addr, &upload("other", 50), wait).await;
    assert_eq!(status_of(&text), "200", "{text}");
    // Streamed (chunked): cut at the small route's limit.
    let text = raw(torii.addr, &chunked_upload("small", 50), wait).await;
    assert_eq!(status_of(&text), "413", "{text}");
    let text = raw(torii.addr, &chunked_upload("other", 50), wait).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("50"),
        "{text}"
    );
    // 500 bytes: over the server's 100, within the big route's 1KiB.
    let text = raw(torii.addr, &upload("big", 500), wait).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("500"),
        "{text}"
    );
    let text = raw(torii.addr, &chunked_upload("big", 500), wait).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("500"),
        "{text}"
    );
    let text = raw(torii.addr, &upload("other", 500), wait).await;
    assert_eq!(status_of(&text), "413", "{text}");
    let text = raw(torii.addr, &upload("big", 2000), wait).await;
    assert_eq!(status_of(&text), "413", "{text}");
}

#[tokio::test]
async fn a_route_body_timeout_overrides_the_servers() {
    let origin = Origin::start().await;
    let torii = limited(&origin, "").await;
    // The server would wait 30 s for the rest of the body; the small route waits 200 ms,
    // so the answer comes well within PATIENCE (15 s).
    let mut stream = TcpStream::connect(torii.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: small\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let out = read_until_closed(&mut stream, PATIENCE)
        .await
        .expect("the route's body_timeout closes a stalled upload");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), "408", "{text}");
    let text = raw(torii.addr, &upload("small", 10), Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("10"),
        "{text}"
    );
}

#[tokio::test]
async fn a_route_rate_limit_overrides_the_server_wide_one() {
    let origin = Origin::start().await;
    // The server-wide limit: one request, then (at 1 per 1000 s) none; shared by every
    // route without its own. The big route has its own, generous one.
    let torii = limited(
        &origin,
        "[limits.rate_limit]\nrps = 0.001\nburst = 1\n\
         [[routes]]\nhost = \"free\"\nupstream = \"app\"\nrate_limit = { rps = 1000, burst = 1000 }\n",
    )
    .await;
    let get = |host: &str| {
        format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let wait = Duration::from_secs(5);
    let text = raw(torii.addr, &get("other"), wait).await;
    assert_eq!(status_of(&text), "200", "{text}");
    let text = raw(torii.addr, &get("other"), wait).await;
    assert_eq!(status_of(&text), "429", "{text}");
    // The small route has no limit of its own: it shares the server-wide buckets.
    let text = raw(torii.addr, &get("small"), wait).await;
    assert_eq!(status_of(&text), "429", "{text}");
    // The route with its own limit is not held by the server-wide one.
    for _ in 0..5 {
        let text = raw(torii.addr, &get("free"), wait).await;
        assert_eq!(status_of(&text), "200", "{text}");
    }
}

#[test]
fn torii_check_refuses_bad_values_of_the_new_keys_with_a_hint() {
    let check = |extra_limits: &str, route: &str| {
        let text = format!(
            "[limits]\n{extra_limits}\n[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\nupstream = \"app\"\n{route}\n"
        );
        match torii::config::load_str("t.toml", &text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let e = check(
        "",
        "limits = { max_body = \"lots\", body_timeout = \"0s\" }",
    );
    assert!(
        e.contains("t.toml:7:23: routes[0].limits.max_body: "),
        "{e}"
    );
    assert!(e.contains("hint: sizes look like"), "{e}");
    assert!(
        e.contains("t.toml:7:46: routes[0].limits.body_timeout: a body timeout of 0"),
        "{e}"
    );
    let e = check("", "limits = { body_timeout = \"soon\" }");
    assert!(e.contains("routes[0].limits.body_timeout"), "{e}");
    assert!(e.contains("hint: durations look like"), "{e}");
    assert!(!e.contains("a body timeout of 0"), "reported once: {e}");
    let e = check("", "limits = { max_conns = 1 }");
    assert!(e.contains("t.toml:7:"), "{e}");
    assert!(e.contains("max_conns"), "{e}");
    let e = check("rate_limit = { burst = 2 }", "");
    assert!(
        e.contains("t.toml:2:14: limits.rate_limit: missing rps"),
        "{e}"
    );
    assert!(e.contains("hint: e.g. rate_limit = { rps = 10"), "{e}");
    let e = check("underscores_in_headers = \"yes\"", "");
    assert!(e.contains("t.toml:2:26: "), "{e}");
    assert!(e.contains("expected a boolean"), "{e}");
    assert_eq!(
        check(
            "underscores_in_headers = true",
            "limits = { max_body = \"1MiB\" }"
        ),
        ""
    );
}
