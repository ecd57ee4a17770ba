//! `upstreams.<name>.send_proxy_protocol`: a raw TCP origin reads what torii writes first on
//! each connection — the PROXY header, v1 and v2, naming the resolved client — and counts
//! connections, which are never reused. The header's bytes are read by this test's own
//! parsing, and also end to end by a second torii whose listener takes PROXY headers.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a raw origin saw: the bytes before the first request line, per connection.
#[derive(Default)]
struct Seen {
    prefaces: Mutex<Vec<Vec<u8>>>,
}

/// An origin that records each connection's bytes up to `GET `, answers every request
/// with 200 keep-alive, and keeps the connection open (torii must not reuse it anyway).
async fn raw_origin() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut recorded = false;
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if !recorded {
                        if let Some(at) = find(&buf, b"GET ") {
                            s.prefaces.lock().unwrap().push(buf[..at].to_vec());
                            buf.drain(..at);
                            recorded = true;
                        }
                    }
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok";
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn config(origin: SocketAddr, version: &str) -> String {
    format!(
        "[server]\nadmin = \"off\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[log]\naccess = \"off\"\n\
         [upstreams.app]\nservers = [\"http://{origin}\"]\nsend_proxy_protocol = \"{version}\"\n\
         [[routes]]\nupstream = \"app\"\n"
    )
}

async fn get_from(url: &str, client_ip: &str) -> StatusCode {
    let req = http::Request::get(url)
        .header("x-forwarded-for", client_ip)
        .body(empty())
        .unwrap();
    client().request(req).await.unwrap().status()
}

fn empty() -> Body {
    use http_body_util::{BodyExt, Empty};
    Empty::new().map_err(|e| match e {}).boxed()
}

#[tokio::test]
async fn v1_names_the_resolved_client_on_each_new_connection() {
    let (origin, seen) = raw_origin().await;
    let torii = Torii::start(&config(origin, "v1"), None).await;
    for ip in ["203.0.113.7", "198.51.100.9", "203.0.113.7"] {
        assert_eq!(get_from(&torii.url("/a"), ip).await, StatusCode::OK);
    }
    let prefaces = seen.prefaces.lock().unwrap().clone();
    // One connection per request: a connection is one client's, never pooled.
    assert_eq!(prefaces.len(), 3, "{prefaces:?}");
    let port = torii.addr.port();
    for (p, ip) in prefaces
        .iter()
        .zip(["203.0.113.7", "198.51.100.9", "203.0.113.7"])
    {
        let line = String::from_utf8(p.clone()).unwrap();
        // The client address came from X-Forwarded-For (trusted peer): its port is the
        // peer's; the destination is the address the client connected to.
        assert!(
            line.starts_with(&format!("PROXY TCP4 {ip} 127.0.0.1 "))
                && line.ends_with(&format!(" {port}\r\n")),
            "{line:?}"
        );
    }
}

#[tokio::test]
async fn v2_is_read_by_a_listener_that_takes_proxy_headers() {
    // A second torii, its listener taking v2 headers, in front of a recording origin: the
    // client address it sees is the one the first torii resolved.
    let origin = Origin::start().await;
    origin.set("/b", Reply::new("b").header("cache-control", "no-store"));
    let back_config = "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n\
        [[listeners]]\naddr = \"127.0.0.1:0\"\nproxy_protocol = \"v2\"\n\
        [upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n";
    let back_cfg =
        torii::config::load_str("back.toml", &back_config.replace("{origin}", &origin.url()))
            .unwrap();
    let back_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let back_addr = back_listener.local_addr().unwrap();
    let back = torii::Server::new(back_cfg).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        torii::server::run_server(back, vec![back_listener], None, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    let front = Torii::start(&config(back_addr, "v2"), None).await;
    assert_eq!(
        get_from(&front.url("/b"), "192.0.2.44").await,
        StatusCode::OK
    );
    assert_eq!(
        get_from(&front.url("/b"), "2001:db8::5").await,
        StatusCode::OK
    );
    let got = origin.requests("/b");
    assert_eq!(got.len(), 2);
    // The back torii appends its client (the PROXY header's source) to X-Forwarded-For.
    let last = |i: usize| {
        got[i]
            .1
            .get("x-forwarded-for")
            .unwrap()
            .to_str()
            .unwrap()
            .rsplit(',')
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(last(0), "192.0.2.44");
    // An IPv6 client with an IPv4 destination: both sent as IPv6 (IPv4-mapped).
    assert_eq!(last(1), "2001:db8::5");
    let _ = stop.send(());
    let _ = task.await;
}

#[test]
fn check_refuses_unknown_versions_and_http2_groups() {
    let bad = |extra: &str| {
        let text = format!(
            "[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\n{extra}\n[[routes]]\nupstream = \"app\"\n"
        );
        torii::config::load_str("t.toml", &text)
            .unwrap_err()
            .to_string()
    };
    let e = bad("send_proxy_protocol = \"v3\"");
    assert!(
        e.contains(
            "t.toml:3:23: upstreams.app.send_proxy_protocol: unknown PROXY protocol version \"v3\""
        ),
        "{e}"
    );
    let e = bad("send_proxy_protocol = \"v2\"\nprotocol = \"h2c\"");
    assert!(e.contains("an HTTP/2 connection carries many"), "{e}");
}
