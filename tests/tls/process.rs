//! The real binary: `torii check` on bad certificates, SIGHUP certificate reload, and the
//! `torii proxy --tls-cert` one-liner.

use super::*;

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(TORII)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn torii_check_catches_missing_mismatched_and_expired_certificates() {
    let (files, ca) = (Files::new(), Ca::new());
    let good = ca.issue(&["a.test"]);
    let other = ca.issue(&["b.test"]);
    let now = time::OffsetDateTime::now_utc();
    let expired = ca.issue_valid(
        &["old.test"],
        now - time::Duration::days(400),
        now - time::Duration::days(35),
    );
    files.write("good.pem", &good.cert_pem);
    files.write("good.key", &good.key_pem);
    files.write("other.key", &other.key_pem);
    files.write("expired.pem", &expired.cert_pem);
    files.write("expired.key", &expired.key_pem);
    // Relative paths are taken from the config file's directory.
    let config = |cert: &str, key: &str| {
        format!(
            "[server]\nadmin = \"off\"\n[[listeners]]\naddr = \"127.0.0.1:0\"\n[listeners.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n[upstreams.app]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nupstream = \"app\"\n"
        )
    };
    let path = files.write("ok.toml", &config("good.pem", "good.key"));
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    assert!(text.contains("1 listener(s) (1 TLS)"), "{text}");
    assert!(!text.contains("warning"), "{text}");

    // Still valid but due: check passes and warns.
    let soon = ca.issue_valid(
        &["soon.test"],
        now - time::Duration::days(80),
        now + time::Duration::days(10) - time::Duration::hours(1),
    );
    files.write("soon.pem", &soon.cert_pem);
    files.write("soon.key", &soon.key_pem);
    let path = files.write("soon.toml", &config("soon.pem", "soon.key"));
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: listeners[0]: ") && text.contains("soon.pem expires in 9 day(s)"),
        "{text}"
    );

    for (name, cert, key, want) in [
        (
            "missing",
            "nope.pem",
            "good.key",
            ":6:8: listeners[0].tls.cert: cannot read ",
        ),
        (
            "mismatch",
            "good.pem",
            "other.key",
            ":7:7: listeners[0].tls.key: ",
        ),
        (
            "expired",
            "expired.pem",
            "expired.key",
            ":6:8: listeners[0].tls.cert: ",
        ),
    ] {
        let path = files.write(&format!("{name}.toml"), &config(cert, key));
        let (ok, text) = check(&path);
        assert!(!ok, "{name}: {text}");
        assert!(
            text.contains(&format!("{}{want}", path.display())),
            "{name}: {text}"
        );
        assert!(text.contains("; hint: "), "{name}: {text}");
        match name {
            "missing" => assert!(text.contains("No such file"), "{text}"),
            "mismatch" => assert!(text.contains("does not match the certificate"), "{text}"),
            _ => assert!(text.contains("expired on"), "{text}"),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Kills our own child by PID when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_binary(config: &Path, port: u16) -> ChildGuard {
    let child = Command::new(TORII)
        .args(["run", "--config"])
        .arg(config)
        .env("TORII_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "torii did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    guard
}

#[tokio::test]
async fn sighup_serves_new_certificates_to_new_connections_and_keeps_old_ones() {
    let origin = Origin::start().await;
    let (files, ca) = (Files::new(), Ca::new());
    let old = ca.issue(&["a.test"]);
    let new = ca.issue(&["a.test"]);
    files.write("a.pem", &old.cert_pem);
    files.write("a.key", &old.key_pem);
    let port = free_port();
    let config = files.write(
        "torii.toml",
        &format!(
            "[server]\nadmin = \"off\"\nworkers = 1\n[log]\naccess = \"off\"\n[cache]\nmemory = \"0\"\n[[listeners]]\naddr = \"127.0.0.1:{port}\"\n[listeners.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
            origin.url()
        ),
    );
    let torii = start_binary(&config, port).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let client = client_config(&ca, &[b"http/1.1"]);

    let before = connect(addr, client.clone(), "a.test").await.unwrap();
    assert!(peer_leaf(&before) == old.der);
    let mut kept = open_h1(before).await;
    assert_eq!(h1_get(&mut kept, "a.test", "/").await.0, StatusCode::OK);

    files.write("a.pem", &new.cert_pem);
    files.write("a.key", &new.key_pem);
    signal(&torii.0, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = connect(addr, client.clone(), "a.test").await.unwrap();
        if peer_leaf(&stream) == new.der {
            let mut fresh = open_h1(stream).await;
            assert_eq!(h1_get(&mut fresh, "a.test", "/").await.0, StatusCode::OK);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the reload still works, on its old session.
    for _ in 0..3 {
        assert_eq!(h1_get(&mut kept, "a.test", "/").await.0, StatusCode::OK);
    }
    assert_eq!(origin.hits("/"), 5);
}

#[tokio::test]
async fn proxy_one_liner_serves_tls_with_h2_redirects_and_reloads_certificates() {
    let origin = Origin::start().await;
    let (files, ca) = (Files::new(), Ca::new());
    let old = ca.issue(&["a.test"]);
    let new = ca.issue(&["a.test"]);
    let cert = files.write("a.pem", &old.cert_pem);
    let key = files.write("a.key", &old.key_pem);
    let (port, plain) = (free_port(), free_port());
    let child = Command::new(TORII)
        .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--to", &origin.url(), "--workers", "1", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--redirect-from", &format!("127.0.0.1:{plain}")])
        .env("TORII_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let torii = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", plain)).await.is_err() {
        assert!(Instant::now() < deadline, "torii did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let client = client_config(&ca, &[b"h2", b"http/1.1"]);
    let stream = connect(addr, client.clone(), "a.test").await.unwrap();
    assert!(peer_leaf(&stream) == old.der);
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let (status, version, body) = h2_get(stream, "a.test", "/echo").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");

    let text = raw(
        SocketAddr::from(([127, 0, 0, 1], plain)),
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("location: https://a.test:{port}/x\r\n")),
        "{text}"
    );

    // SIGHUP reads --tls-cert and --tls-key again.
    files.write("a.pem", &new.cert_pem);
    files.write("a.key", &new.key_pem);
    signal(&torii.0, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = connect(addr, client.clone(), "a.test").await.unwrap();
        if peer_leaf(&stream) == new.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
