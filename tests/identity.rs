//! Who is asking (issue 19): trusted proxies, per-route access lists, PROXY protocol.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::*;

async fn send(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body: Body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed();
    let resp = client().request(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The `X-Forwarded-For` the origin's `/echo` saw.
fn echoed_xff(body: &str) -> &str {
    body.lines()
        .find_map(|l| l.strip_prefix("x-forwarded-for: "))
        .unwrap_or("<none>")
}

fn temp_log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("torii-identity-{}-{name}.log", std::process::id()))
}

// === 1. Trusted proxies ===

#[tokio::test]
async fn a_trusted_peer_names_the_client_everywhere() {
    let origin = Origin::start().await;
    let log = temp_log("trusted");
    let _ = std::fs::remove_file(&log);
    let torii = Torii::start(
        &format!(
            "[server]\nadmin = \"off\"\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1/32\"]\n\
             [log]\naccess = \"{}\"\n[upstreams.app]\nservers = [\"{{origin}}\"]\n\
             [[routes]]\nupstream = \"app\"\n",
            log.display()
        ),
        Some(&origin),
    )
    .await;
    // Right to left past the trusted hops; the spoofed far end is not believed.
    let (status, _, body) = send(
        &torii.url("/echo"),
        &[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed_xff(&body), "203.0.113.7", "{body}");
    // Garbage, zones and a thousand entries: bounded, the first untrusted valid one wins.
    let mut long = vec!["198.51.100.1"; 1000].join(", ");
    long.push_str(", junk, fe80::1%eth0, 10.0.0.9");
    let (_, _, body) = send(&torii.url("/echo"), &[("x-forwarded-for", &long)]).await;
    assert_eq!(echoed_xff(&body), "198.51.100.1", "{body}");
    // `Forwarded: for=` when there is no X-Forwarded-For (and it is not passed on).
    let (_, _, body) = send(
        &torii.url("/echo"),
        &[(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.1",
        )],
    )
    .await;
    assert_eq!(echoed_xff(&body), "2001:db8::7", "{body}");
    assert!(!body.contains("forwarded: "), "{body}");
    // Nothing said: the peer.
    let (_, _, body) = send(&torii.url("/echo"), &[]).await;
    assert_eq!(echoed_xff(&body), "127.0.0.1", "{body}");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("four access-log lines", Duration::from_secs(5), || {
        read().lines().count() >= 4
    })
    .await;
    let text = read();
    let clients: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        clients,
        ["203.0.113.7", "198.51.100.1", "2001:db8::7", "127.0.0.1"],
        "{text}"
    );
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn an_untrusted_peer_is_the_client_and_its_header_is_appended_to() {
    let origin = Origin::start().await;
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n[log]\naccess = \"off\"\n\
         [upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n",
        Some(&origin),
    )
    .await;
    let (_, _, body) = send(&torii.url("/echo"), &[("x-forwarded-for", "1.2.3.4")]).await;
    assert_eq!(echoed_xff(&body), "1.2.3.4, 127.0.0.1", "{body}");
    // No trusted proxies at all (the default): the same.
    let plain = Torii::to(&origin, "").await;
    let (_, _, body) = send(&plain.url("/echo"), &[("x-forwarded-for", "1.2.3.4")]).await;
    assert_eq!(echoed_xff(&body), "1.2.3.4, 127.0.0.1", "{body}");
}

#[tokio::test]
async fn rate_limits_count_the_resolved_client() {
    let origin = Origin::start().await;
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\ntrusted_proxies = [\"127.0.0.1\"]\n[log]\naccess = \"off\"\n\
         [upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n\
         rate_limit = { rps = 0.01, burst = 1 }\n",
        Some(&origin),
    )
    .await;
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(send(&torii.url("/"), &a).await.0, StatusCode::OK);
    assert_eq!(
        send(&torii.url("/"), &a).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&torii.url("/"), &b).await.0, StatusCode::OK);
}

// === 2. Access lists per route ===

#[tokio::test]
async fn access_lists_refuse_before_the_cache_and_the_upstream() {
    let origin = Origin::start().await;
    origin.set(
        "/admin/page",
        Reply::new("secret").header("cache-control", "max-age=600"),
    );
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\ntrusted_proxies = [\"127.0.0.1\"]\n[log]\naccess = \"off\"\n\
         [upstreams.app]\nservers = [\"{origin}\"]\n\
         [[routes]]\npath = \"/admin\"\nupstream = \"app\"\n\
         access = { allow = [\"192.0.2.0/24\"], deny = [\"192.0.2.13\"] }\n[routes.cache]\n\
         [[routes]]\npath = \"/open\"\nupstream = \"app\"\naccess = { deny = [\"192.0.2.13\"] }\n\
         [[routes]]\nupstream = \"app\"\n",
        Some(&origin),
    )
    .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let url = torii.url("/admin/page");
    let (status, h, body) = send(&url, &from("192.0.2.5")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "secret"));
    assert_eq!(h["x-cache"], "MISS");
    let (status, h, _) = send(&url, &from("192.0.2.6")).await;
    assert_eq!(
        (status, &h["x-cache"]),
        (StatusCode::OK, &"HIT".parse().unwrap())
    );
    // Denied wins over allowed; outside the allow list is refused; cached or not, 403.
    for ip in ["192.0.2.13", "198.51.100.1"] {
        let (status, h, body) = send(&url, &from(ip)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{ip}");
        assert!(!body.contains("secret"));
        assert!(h.get("x-cache").is_none());
        let (status, _, _) = send(&torii.url("/admin/other"), &from(ip)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{ip}");
    }
    assert_eq!(origin.hits("/admin/page"), 1);
    assert_eq!(origin.hits("/admin/other"), 0);
    // An empty allow list is everyone but the denied.
    assert_eq!(
        send(&torii.url("/open"), &from("8.8.8.8")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&torii.url("/open"), &from("192.0.2.13")).await.0,
        StatusCode::FORBIDDEN
    );
    // A route without access: everyone.
    assert_eq!(
        send(&torii.url("/x"), &from("192.0.2.13")).await.0,
        StatusCode::OK
    );
}
