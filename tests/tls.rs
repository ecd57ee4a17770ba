//! TLS termination and HTTP/2 on both sides, with certificates made at test time (rcgen):
//! SNI, ALPN, resumption, versions, reload on SIGHUP, `torii check`, redirect to https,
//! https and h2 upstreams, gRPC-style streaming with trailers, and real clients (curl, h2load).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use support::*;

const TORII: &str = env!("CARGO_BIN_EXE_torii");

// === certificates ===

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate and its key, as PEM and DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "torii test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `names`, valid from yesterday for a year.
    fn issue(&self, names: &[&str]) -> Leaf {
        let now = time::OffsetDateTime::now_utc();
        self.issue_valid(
            names,
            now - time::Duration::days(1),
            now + time::Duration::days(365),
        )
    }

    fn issue_valid(
        &self,
        names: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

/// A temporary directory to write PEM files and configs into.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes `NAME.pem` and `NAME.key`; returns the TOML `cert = …, key = …` for them.
    fn leaf(&self, name: &str, leaf: &Leaf) -> String {
        let cert = self.write(&format!("{name}.pem"), &leaf.cert_pem);
        let key = self.write(&format!("{name}.key"), &leaf.key_pem);
        format!("cert = {:?}\nkey = {:?}", cert.display(), key.display())
    }
}

// === clients ===

fn client_config(ca: &Ca, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

type H1Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 connection over `stream`.
async fn open_h1(stream: TlsStream<TcpStream>) -> H1Sender {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h1_get(sender: &mut H1Sender, host: &str, path: &str) -> (StatusCode, Version, String) {
    sender.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (status, version) = (resp.status(), resp.version());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

async fn h2_get(
    stream: TlsStream<TcpStream>,
    authority: &str,
    path: &str,
) -> (StatusCode, Version, String) {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("https://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (status, version) = (resp.status(), resp.version());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

async fn admin_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let (status, _, body) = get(&format!("http://{admin}{path}")).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).unwrap()
}

// === torii in this process ===

/// torii started from `toml` on `n` listeners bound here (`listeners[i]` serves as the
/// config's listener `i`).
struct Running {
    addrs: Vec<SocketAddr>,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(toml: &str, n: usize) -> Running {
        let config = torii::config::load_str("test.toml", toml).unwrap_or_else(|e| panic!("{e}"));
        let listeners: Vec<_> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let admin_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            torii::run(config, listeners, Some(admin_listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Running {
            addrs,
            admin,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS listener config: default certificate `default`, plus `a.test`, `b.test` and
/// `*.wild.test` chosen by SNI; proxying to `upstream_url`.
fn sni_config(files: &Files, ca: &Ca, upstream_url: &str) -> (String, [Leaf; 4]) {
    let leaves = [
        ca.issue(&["default.test"]),
        ca.issue(&["a.test"]),
        ca.issue(&["b.test"]),
        ca.issue(&["*.wild.test"]),
    ];
    let toml = format!(
        r#"
[server]
admin = "off"
[log]
access = "off"
[[listeners]]
addr = "127.0.0.1:0"
[listeners.tls]
{}
[[listeners.tls.certs]]
{}
[[listeners.tls.certs]]
{}
[[listeners.tls.certs]]
{}
[upstreams.app]
servers = ["{upstream_url}"]
[[routes]]
upstream = "app"
"#,
        files.leaf("default", &leaves[0]),
        files.leaf("a", &leaves[1]),
        files.leaf("b", &leaves[2]),
        files.leaf("wild", &leaves[3]),
    );
    (toml, leaves)
}

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

// === torii check and SIGHUP: the real binary ===

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

// === upstream TLS and HTTP/2 ===

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

// === real clients ===

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

/// Accepts any server certificate (for the no-SNI probes above).
#[derive(Debug, Default)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
