//! `torii demo`: a small sample origin, so torii can be tried without any other server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

const INDEX: &str = "<!doctype html><title>torii demo origin</title>\
<h1>torii demo origin</h1><ul>\
<li><a href=\"/hello\">/hello</a>: plain text</li>\
<li><a href=\"/cached\">/cached</a>: Cache-Control: public, max-age=30</li>\
<li><a href=\"/slow\">/slow</a>: answers after 2 seconds</li>\
<li><a href=\"/time\">/time</a>: the origin's clock, never cacheable</li>\
<li><a href=\"/headers\">/headers</a>: the request headers the origin saw</li></ul>\n";

/// Starts the sample origin on `addr` (port 0 for any) in a background thread with its own
/// runtime; returns the bound address.
///
/// # Errors
/// When the address cannot be bound.
pub fn start_origin(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("torii-demo-origin".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("origin runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("origin listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service_fn(origin))
                            .await;
                    });
                }
            });
        })?;
    Ok(bound)
}

async fn origin(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, cache, body): (StatusCode, &str, &str, String) =
        match req.uri().path() {
            "/" => (
                StatusCode::OK,
                "text/html; charset=utf-8",
                "public, max-age=10",
                INDEX.into(),
            ),
            "/hello" => (
                StatusCode::OK,
                "text/plain",
                "public, max-age=60",
                "hello from the demo origin\n".into(),
            ),
            "/cached" => (
                StatusCode::OK,
                "text/plain",
                "public, max-age=30",
                format!(
                    "generated at {}\n",
                    httpdate::fmt_http_date(std::time::SystemTime::now())
                ),
            ),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                (
                    StatusCode::OK,
                    "text/plain",
                    "public, max-age=30",
                    "that took 2 seconds\n".into(),
                )
            }
            "/time" => (
                StatusCode::OK,
                "text/plain",
                "no-store",
                format!(
                    "{}\n",
                    httpdate::fmt_http_date(std::time::SystemTime::now())
                ),
            ),
            "/headers" => {
                let mut out = String::new();
                for (k, v) in req.headers() {
                    out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
                }
                (StatusCode::OK, "text/plain", "no-store", out)
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "public, max-age=5",
                "not found\n".into(),
            ),
        };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("static"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(cache).expect("static"),
    );
    Ok(resp)
}
