//! TLS listeners: SNI, ALPN, WebSocket, resumption and versions, redirect, reload mapping,
//! and real HTTP/2 clients (curl, h2load).

use super::*;

#[tokio::test]
async fn sni_picks_the_certificate_for_two_names_and_a_wildcard() {
    let origin = Origin::start().await;
    let (files, ca) = (Files::new(), Ca::new());
    let (toml, leaves) = sni_config(&files, &ca, &origin.url());
    let torii = Running::start(&toml, 1).await;
    let addr = torii.addrs[0];
    let config = client_config(&ca, &[b"http/1.1"]);
    for (sni, want) in [
        ("a.test", 1),
        ("b.test", 2),
        ("x.wild.test", 3),
        ("other.wild.test", 3),
        // One label only: the wildcard does not cover deeper names nor its own base.
        ("unknown.test", 0),
    ] {
        // The default certificate is not valid for names it does not carry: a verifying
        // client refuses it, which is what a browser would do too.
        let stream = connect(addr, config.clone(), sni).await;
        if want == 0 {
            assert!(stream.is_err(), "{sni}: the default cert must not verify");
            continue;
        }
        let stream = stream.unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert!(
            peer_leaf(&stream) == leaves[want].der,
            "{sni}: wrong certificate"
        );
        let mut h1 = open_h1(stream).await;
        let (status, _, _) = h1_get(&mut h1, sni, "/").await;
        assert_eq!(status, StatusCode::OK, "{sni}");
    }
    // A client that sends no SNI (an IP address) gets the default certificate.
    let mut insecure = rustls::ClientConfig::clone(&config);
    insecure
        .dangerous()
        .set_certificate_verifier(Arc::new(AcceptAny));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(insecure))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    // (rustls sends no SNI for an IP address.)
    assert!(
        peer_leaf(&stream) == leaves[0].der,
        "no SNI: the default certificate"
    );
    // Deeper names than the wildcard's one label fall to the default certificate.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut insecure = rustls::ClientConfig::clone(&config);
    insecure
        .dangerous()
        .set_certificate_verifier(Arc::new(AcceptAny));
    let stream = tokio_rustls::TlsConnector::from(Arc::new(insecure))
        .connect(ServerName::try_from("a.b.wild.test").unwrap(), tcp)
        .await
        .unwrap();
    assert!(
        peer_leaf(&stream) == leaves[0].der,
        "a.b.wild.test: default"
    );
    // The client that refused the default certificate ended its handshake: one error.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, metrics) = get(&format!("http://{}/metrics", torii.admin)).await;
        if String::from_utf8_lossy(&metrics).contains("torii_tls_handshake_errors_total 1\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&metrics)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    torii.stop().await;
}

#[tokio::test]
async fn alpn_negotiates_h2_with_an_h2_client_and_http1_with_an_http1_client() {
    let origin = Origin::start().await;
    let (files, ca) = (Files::new(), Ca::new());
    let (toml, _) = sni_config(&files, &ca, &origin.url());
    let log = files.0.path().join("access.log");
    let toml = toml.replace(
        "[log]\naccess = \"off\"",
        &format!("[log]\naccess = {:?}\nformat = \"json\"", log.display()),
    );
    let torii = Running::start(&toml, 1).await;
    let addr = torii.addrs[0];

    let stream = connect(addr, client_config(&ca, &[b"h2", b"http/1.1"]), "a.test")
        .await
        .unwrap();
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let (status, version, body) = h2_get(stream, "a.test", "/echo").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");

    let stream = connect(addr, client_config(&ca, &[b"http/1.1"]), "a.test")
        .await
        .unwrap();
    assert_eq!(alpn(&stream).as_deref(), Some(&b"http/1.1"[..]));
    let mut h1 = open_h1(stream).await;
    let (status, version, body) = h1_get(&mut h1, "a.test", "/echo").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");

    // A client without ALPN speaks HTTP/1.1 too.
    let stream = connect(addr, client_config(&ca, &[]), "a.test")
        .await
        .unwrap();
    assert_eq!(alpn(&stream), None);
    let mut h1 = open_h1(stream).await;
    assert_eq!(h1_get(&mut h1, "a.test", "/").await.0, StatusCode::OK);
    let (_, _, metrics) = get(&format!("http://{}/metrics", torii.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("torii_tls_handshakes_total{version=\"TLSv1.3\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("torii_tls_handshakes_total{version=\"TLSv1.2\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("torii_tls_handshake_errors_total 0\n"),
        "{metrics}"
    );
    let stats = admin_json(torii.admin, "/stats.json").await;
    assert_eq!(stats["tls"]["handshakes"]["TLSv1.3"], 3, "{stats}");
    assert_eq!(stats["tls"]["handshake_errors"], 0, "{stats}");
    torii.stop().await;

    // The access log shows the downstream scheme and TLS version of each exchange.
    // (Written by a background thread: wait for it.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while text.lines().count() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["protocol"], "HTTP/2.0");
    for line in &lines {
        assert_eq!(line["scheme"], "https", "{line}");
        assert_eq!(line["tls"], "TLSv1.3", "{line}");
    }
}

#[tokio::test]
async fn websocket_over_tls_passes_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let origin = Origin::start().await;
    let (files, ca) = (Files::new(), Ca::new());
    let (toml, _) = sni_config(&files, &ca, &origin.url());
    let torii = Running::start(&toml, 1).await;
    let stream = connect(torii.addrs[0], client_config(&ca, &[b"http/1.1"]), "a.test")
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://a.test/ws", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg.into_text().unwrap().as_str(), format!("ping {i}"));
    }
    ws.close(None).await.unwrap();
    torii.stop().await;
}

#[tokio::test]
async fn sessions_resume_and_versions_follow_min_version() {
    let origin = Origin::start().await;
    let (files, ca) = (Files::new(), Ca::new());
    let (toml, _) = sni_config(&files, &ca, &origin.url());
    let torii = Running::start(&toml, 1).await;
    let addr = torii.addrs[0];

    // The same client config keeps its session store: the second handshake resumes.
    let config = client_config(&ca, &[b"http/1.1"]);
    for round in 0..2 {
        let stream = connect(addr, config.clone(), "a.test").await.unwrap();
        let kind = stream.get_ref().1.handshake_kind();
        let mut h1 = open_h1(stream).await;
        assert_eq!(h1_get(&mut h1, "a.test", "/").await.0, StatusCode::OK);
        let want = if round == 0 {
            rustls::HandshakeKind::Full
        } else {
            rustls::HandshakeKind::Resumed
        };
        assert_eq!(kind, Some(want), "round {round}");
    }

    // TLS 1.2 is accepted by default and negotiated by a 1.2-only client.
    let tls12 = tls12_only(&ca);
    let stream = connect(addr, tls12.clone(), "b.test").await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    torii.stop().await;

    // min_version = "1.3" refuses it.
    let toml = toml.replace(
        "[listeners.tls]\n",
        "[listeners.tls]\nmin_version = \"1.3\"\n",
    );
    let torii = Running::start(&toml, 1).await;
    assert!(connect(torii.addrs[0], tls12, "b.test").await.is_err());
    let stream = connect(torii.addrs[0], client_config(&ca, &[]), "b.test")
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    torii.stop().await;
}

fn tls12_only(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn redirect_https_listener_answers_308_to_the_https_port() {
    let origin = Origin::start().await;
    let (files, ca) = (Files::new(), Ca::new());
    let (toml, _) = sni_config(&files, &ca, &origin.url());
    let toml = format!(
        "{toml}\n[[listeners]]\naddr = \"127.0.0.1:0\"\nredirect_https = true\nhttps_port = 8443\n"
    );
    let torii = Running::start(&toml, 2).await;
    let text = raw(
        torii.addrs[1],
        b"POST /a/b?c=1 HTTP/1.1\r\nHost: a.test:8080\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("location: https://a.test:8443/a/b?c=1\r\n"),
        "{text}"
    );
    assert_eq!(
        origin.total_hits(),
        0,
        "a redirect never reaches the upstream"
    );
    torii.stop().await;
}

#[tokio::test]
async fn reload_with_other_listener_addresses_keeps_each_socket_what_it_was() {
    let (files, ca) = (Files::new(), Ca::new());
    let leaf = ca.issue(&["a.test"]);
    let tls = files.leaf("a", &leaf);
    let config = |listeners: &str| {
        let text = format!(
            "[server]\nadmin = \"off\"\n{listeners}\n[upstreams.app]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nupstream = \"app\"\n"
        );
        torii::config::load_str("t.toml", &text).unwrap_or_else(|e| panic!("{e}"))
    };
    let server = torii::Server::new(config(&format!(
        "[[listeners]]\naddr = \"127.0.0.1:1443\"\n[listeners.tls]\n{tls}\n[[listeners]]\naddr = \"127.0.0.1:1080\"\nredirect_https = true\n"
    )))
    .unwrap();
    // A new plain listener first would shift every index by one.
    server
        .reload(config(&format!(
            "[[listeners]]\naddr = \"127.0.0.1:1081\"\n[[listeners]]\naddr = \"127.0.0.1:1443\"\n[listeners.tls]\n{tls}\nmin_version = \"1.3\"\n"
        )))
        .unwrap();
    let listeners = server.config().server.listeners.clone();
    assert_eq!(listeners.len(), 2, "the sockets open stay as they are");
    let tls = listeners[0].tls.as_ref().expect("socket 0 stays TLS");
    assert_eq!(
        tls.min_version,
        torii::config::TlsVersion::Tls13,
        "with the new settings of its address"
    );
    assert_eq!(
        listeners[1].redirect_https,
        Some(443),
        "socket 1 keeps its old ones"
    );
}

fn tool(name: &str) -> &str {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: .ci/run installs it (apt-get install curl nghttp2-client)"
    );
    name
}

#[tokio::test]
async fn curl_http2_and_h2load_against_a_tls_listener() {
    let origin = Origin::start().await;
    let (files, ca) = (Files::new(), Ca::new());
    let (toml, _) = sni_config(&files, &ca, &origin.url());
    let torii = Running::start(&toml, 1).await;
    let port = torii.addrs[0].port();
    let ca_file = files.write("ca.pem", &ca.pem());

    let curl = tokio::process::Command::new(tool("curl"))
        .args(["-sS", "--http2", "--cacert"])
        .arg(&ca_file)
        .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
        .args(["-o", "/dev/null", "-w", "%{http_version} %{response_code}"])
        .arg(format!("https://a.test:{port}/"))
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert_eq!(out, "2 200");

    let h2load = tokio::process::Command::new(tool("h2load"))
        .args(["-n", "2000", "-c", "4", "-m", "10"])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&h2load.stdout);
    assert!(h2load.status.success(), "{out}");
    assert!(out.contains("Application protocol: h2"), "{out}");
    assert!(
        out.contains("requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed"),
        "{out}"
    );
    assert!(out.contains("status codes: 2000 2xx"), "{out}");
    torii.stop().await;
}
