//! Upstream TLS and HTTP/2: https servers verified by a CA (or not), h2 over TLS, h2c
//! multiplexing, and gRPC-style streaming with trailers.

use super::*;

/// A TLS origin with `leaf`'s certificate, ALPN `h2` and `http/1.1`; answers the request's
/// HTTP version and records the SNI names it was reached by.
async fn tls_origin(leaf: &Leaf) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                seen.lock().unwrap().push(sni);
                let service = service_fn(|req: Request<Incoming>| async move {
                    let body = format!("{:?}", req.version());
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, names)
}

fn upstream_toml(servers: &str, extra: &str) -> String {
    format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\nmemory = \"0\"\n[upstreams.app]\nservers = [{servers}]\nretries = 0\n{extra}\n[[routes]]\nupstream = \"app\"\n"
    )
}

#[tokio::test]
async fn https_upstream_verified_by_the_configured_ca_and_refused_without_it() {
    let (files, ca) = (Files::new(), Ca::new());
    let leaf = ca.issue(&["origin.test"]);
    let (origin, sni_seen) = tls_origin(&leaf).await;
    let ca_file = files.write("ca.pem", &ca.pem());
    let server = format!("\"https://127.0.0.1:{}\"", origin.port());
    let name = "tls_server_name = \"origin.test\"";

    // Verified against tls_ca, SNI from tls_server_name; HTTP/1.1 by default.
    let torii = Torii::start(
        &upstream_toml(
            &server,
            &format!("tls_ca = {:?}\n{name}", ca_file.display()),
        ),
        None,
    )
    .await;
    let (status, _, body) = get(&torii.url("/")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(body, "HTTP/1.1");
    assert_eq!(sni_seen.lock().unwrap().last().unwrap(), "origin.test");
    torii.stop().await;

    // protocol = "h2": ALPN h2, the request goes over HTTP/2.
    let torii = Torii::start(
        &upstream_toml(
            &server,
            &format!(
                "tls_ca = {:?}\n{name}\nprotocol = \"h2\"",
                ca_file.display()
            ),
        ),
        None,
    )
    .await;
    let (status, _, body) = get(&torii.url("/")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"HTTP/2.0"[..]));
    torii.stop().await;

    // The system roots do not know the test CA: 502, never the origin's answer.
    let torii = Torii::start(&upstream_toml(&server, name), None).await;
    let (status, _, _) = get(&torii.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    torii.stop().await;

    // The right CA but the wrong name: 502 too.
    let torii = Torii::start(
        &upstream_toml(
            &server,
            &format!(
                "tls_ca = {:?}\ntls_server_name = \"evil.test\"",
                ca_file.display()
            ),
        ),
        None,
    )
    .await;
    assert_eq!(get(&torii.url("/")).await.0, StatusCode::BAD_GATEWAY);
    torii.stop().await;

    // The explicit opt-out accepts the self-signed chain (SNI: the host, an IP: none).
    let torii = Torii::start(
        &upstream_toml(&server, "tls_insecure_skip_verify = true"),
        None,
    )
    .await;
    assert_eq!(get(&torii.url("/")).await.0, StatusCode::OK);
    torii.stop().await;
}

#[tokio::test]
async fn h2c_upstream_multiplexes_concurrent_requests_on_one_connection() {
    let origin = Origin::start().await;
    // Each request is held until ten are in flight together at the origin.
    origin.set("/gate", Reply::new("through").gate(10));
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\nmemory = \"0\"\n[upstreams.app]\nservers = [\"{origin}\"]\nprotocol = \"h2c\"\n[[routes]]\nupstream = \"app\"\n",
        Some(&origin),
    )
    .await;
    let (_, _, echo) = get(&torii.url("/echo")).await;
    assert!(
        String::from_utf8_lossy(&echo).starts_with("GET http://"),
        "{echo:?}"
    );
    assert!(
        String::from_utf8_lossy(&echo).contains(" HTTP/2.0\n"),
        "the origin saw HTTP/2: {echo:?}"
    );
    let url = torii.url("/gate");
    let all = (0..10).map(|_| get(&url));
    for (status, _, body) in futures_util::future::join_all(all).await {
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"through"[..]));
    }
    assert_eq!(origin.max_in_flight("/gate"), 10);
    assert_eq!(origin.connections(), 1, "one multiplexed connection");
    torii.stop().await;

    // Caching routes fetch over the same HTTP/2 pool.
    origin.set(
        "/cached",
        Reply::new("stored").header("cache-control", "max-age=60"),
    );
    let torii = Torii::start(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"{origin}\"]\nprotocol = \"h2c\"\n[[routes]]\nupstream = \"app\"\n",
        Some(&origin),
    )
    .await;
    let (_, first, _) = get(&torii.url("/cached")).await;
    let (status, second, body) = get(&torii.url("/cached")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"stored"[..]));
    assert_eq!(
        (&first["x-cache"], &second["x-cache"]),
        (&"MISS".parse().unwrap(), &"HIT".parse().unwrap())
    );
    assert_eq!(origin.hits("/cached"), 1);
    torii.stop().await;
}

/// An h2c origin speaking like a gRPC server: `/echo.Echo/Stream` sends back each request
/// message as it arrives, then trailers `grpc-status: 0`. Records the request's `te`.
async fn grpc_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let te = Arc::new(Mutex::new(Vec::new()));
    let seen = te.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(
                            req.headers()
                                .get("te")
                                .map_or("-".into(), |v| v.to_str().unwrap().to_string()),
                        );
                        let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(8);
                        let mut body = req.into_body();
                        tokio::spawn(async move {
                            while let Some(Ok(frame)) = body.frame().await {
                                if let Ok(data) = frame.into_data() {
                                    let _ = tx.send(Frame::data(data)).await;
                                }
                            }
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            trailers.insert("grpc-message", "done".parse().unwrap());
                            let _ = tx.send(Frame::trailers(trailers)).await;
                        });
                        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                            rx.recv().await.map(|f| (Ok::<_, Infallible>(f), rx))
                        });
                        let resp = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(stream))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, te)
}

#[tokio::test]
async fn grpc_style_bidirectional_stream_with_trailers_passes_an_h2c_upstream() {
    let (origin, te_seen) = grpc_origin().await;
    let (files, ca) = (Files::new(), Ca::new());
    let leaf = ca.issue(&["grpc.test"]);
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[[listeners]]\naddr = \"127.0.0.1:0\"\n[listeners.tls]\n{}\n[upstreams.grpc]\nservers = [\"http://{origin}\"]\nprotocol = \"h2c\"\n[[routes]]\nupstream = \"grpc\"\n",
        files.leaf("grpc", &leaf)
    );
    let torii = Running::start(&toml, 1).await;
    let stream = connect(torii.addrs[0], client_config(&ca, &[b"h2"]), "grpc.test")
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);

    let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(8);
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|f| (Ok::<_, Infallible>(f), rx)) },
    )));
    let req = Request::post("https://grpc.test/echo.Echo/Stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    tx.send(Frame::data(Bytes::from_static(b"\0\0\0\0\x06ping-1")))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("the response head comes while the request still streams")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let mut body = resp.into_body();
    // Each message comes back before the next one is sent: streaming both ways.
    assert_eq!(
        next_data(&mut body).await.unwrap(),
        &b"\0\0\0\0\x06ping-1"[..]
    );
    tx.send(Frame::data(Bytes::from_static(b"\0\0\0\0\x06ping-2")))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut body).await.unwrap(),
        &b"\0\0\0\0\x06ping-2"[..]
    );
    drop(tx); // end of the request stream
    let trailers = next_data(&mut body)
        .await
        .expect_err("trailers end the response");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
    assert_eq!(te_seen.lock().unwrap().as_slice(), ["trailers"]);
    torii.stop().await;
}

/// The next data frame of `body`, or its trailers.
async fn next_data(body: &mut Incoming) -> Result<Bytes, HeaderMap> {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a frame in time")
        .expect("the body goes on")
        .unwrap();
    frame.into_data().map_err(|f| f.into_trailers().unwrap())
}

#[tokio::test]
async fn https_upstream_that_never_finishes_the_handshake_answers_504() {
    // Accepts TCP, then never says a word: the TLS handshake cannot finish.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            open.push(tcp);
        }
    });
    let torii = Torii::start(
        &upstream_toml(
            &format!("\"https://{addr}\""),
            "connect_timeout = \"200ms\"\ntls_insecure_skip_verify = true",
        ),
        None,
    )
    .await;
    // response_timeout is 60 s: an answer within 30 s is connect_timeout's doing.
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(30), get(&torii.url("/")))
        .await
        .expect("the handshake is bounded by connect_timeout");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    torii.stop().await;
    held.abort();
}
