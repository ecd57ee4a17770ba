//! ACME (issue 20) against a real pebble (Let's Encrypt's test CA), started by each test on
//! free loopback ports and killed by its PID at the end; `pebble-challtestsrv` is its DNS,
//! answering 127.0.0.1 for every name. pebble's validation authority connects to torii's
//! plain listener (HTTP-01) or TLS listener (TLS-ALPN-01); issued certificates are checked
//! by a real TLS handshake with SNI, verified against pebble's root (`/roots/0`).

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};

use support::*;

/// Waits for an order: pebble validates at once (PEBBLE_VA_NOSLEEP), but the machine is shared.
const ISSUE: Duration = Duration::from_secs(60);

// === pebble ===

/// A CA made for the test, and pebble's HTTPS certificate signed by it.
struct TestCa {
    ca_pem: String,
    roots: rustls::RootCertStore,
    leaf_pem: String,
    leaf_key: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble HTTPS test CA");
        let ca = params.self_signed(&key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        TestCa {
            ca_pem: ca.pem(),
            roots,
            leaf_pem: leaf.pem(),
            leaf_key: leaf_key.serialize_pem(),
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

/// A child process killed (by its PID) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pebble and its DNS server, with the files they need.
struct Pebble {
    dir: tempfile::TempDir,
    ca: TestCa,
    /// The ACME directory URL.
    directory: String,
    management: SocketAddr,
    pebble: Option<Proc>,
    _dns: Proc,
}

impl Pebble {
    /// Validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of 127.0.0.1.
    async fn start(http_port: u16, tls_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        std::fs::write(dir.path().join("cert.pem"), &ca.leaf_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &ca.leaf_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.ca_pem).unwrap();
        let (listen, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let dns_proc = Proc(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble-challtestsrv (apt-get install pebble)"),
        );
        let pebble = Proc(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.path().join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble (apt-get install pebble)"),
        );
        let listen_addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{management}").parse().unwrap();
        for addr in [listen_addr, management] {
            wait_until_async("pebble listens", PATIENCE, || async move {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await;
        }
        Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management,
            pebble: Some(pebble),
            _dns: dns_proc,
            ca,
            dir,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// pebble's issuing root (`/roots/0` on its management port).
    async fn root(&self) -> rustls::RootCertStore {
        let pem = https_get(&self.ca.roots, self.management, "/roots/0").await;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::into_owned(der)).unwrap();
        roots
    }

    /// Stops pebble (its DNS server stays): the directory is down.
    fn stop(&mut self) {
        self.pebble = None;
    }
}

fn client_config(roots: &rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// GET `path` over HTTPS from 127.0.0.1 at `addr`; the body.
async fn https_get(roots: &rustls::RootCertStore, addr: SocketAddr, path: &str) -> Bytes {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(roots))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// A TLS handshake with torii at `addr` for `name`, verified against `roots`: the serial
/// number of the leaf it served, or why it failed.
async fn handshake(
    addr: SocketAddr,
    name: &str,
    roots: &rustls::RootCertStore,
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(client_config(roots))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    Ok(cert.raw_serial().to_vec())
}

// === torii ===

/// The sockets torii will serve, bound before pebble is told their ports.
struct Sockets {
    tls: std::net::TcpListener,
    plain: std::net::TcpListener,
    tls_addr: SocketAddr,
    plain_addr: SocketAddr,
}

impl Sockets {
    fn bind() -> Sockets {
        let tls = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Sockets {
            tls_addr: tls.local_addr().unwrap(),
            plain_addr: plain.local_addr().unwrap(),
            tls,
            plain,
        }
    }
}

/// torii with a TLS listener (`listeners[0]`, ACME for `domain`) and a plain one
/// (`listeners[1]`), in front of `origin`.
struct Node {
    tls: SocketAddr,
    plain: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    async fn start(
        sockets: Sockets,
        origin: &Origin,
        acme: &str,
        directory: &str,
        ca: &Path,
        storage: &Path,
    ) -> Node {
        Node::start_with(sockets, origin, acme, directory, ca, storage, "").await
    }

    /// `start`, with `extra` TOML sections (say, `[cache.shared]`).
    async fn start_with(
        sockets: Sockets,
        origin: &Origin,
        acme: &str,
        directory: &str,
        ca: &Path,
        storage: &Path,
        extra: &str,
    ) -> Node {
        let toml = format!(
            r#"
[server]
admin = "off"
[log]
access = "off"
[[listeners]]
addr = "{tls}"
[listeners.tls]
[listeners.tls.acme]
directory = "{directory}"
ca = "{ca}"
storage = "{storage}"
email = "ops@acme.test"
retry_backoff = "50ms"
{acme}
[[listeners]]
addr = "{plain}"
[upstreams.app]
servers = ["{origin}"]
[[routes]]
upstream = "app"
{extra}
"#,
            tls = sockets.tls_addr,
            plain = sockets.plain_addr,
            ca = ca.display(),
            storage = storage.display(),
            origin = origin.url(),
        );
        let config = torii::config::load_str("acme.toml", &toml).unwrap_or_else(|e| panic!("{e}"));
        Node::run(config, sockets).await
    }

    /// Serves `config` (loaded and checked beforehand) on `sockets`.
    async fn run(config: torii::config::Config, sockets: Sockets) -> Node {
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = torii::Server::new(config).unwrap();
        let task = tokio::spawn(async move {
            torii::server::run_server(
                server,
                vec![sockets.tls, sockets.plain],
                Some(admin),
                async {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
        });
        Node {
            tls: sockets.tls_addr,
            plain: sockets.plain_addr,
            admin: admin_addr,
            stop: Some(tx),
            task,
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = get(&format!("http://{}/metrics", self.admin)).await;
        metric_value(&String::from_utf8_lossy(&body), name).unwrap_or(0.0)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits until torii at `addr` serves `name` a certificate `roots` verify; its serial.
async fn issued(addr: SocketAddr, name: &str, roots: &rustls::RootCertStore) -> Vec<u8> {
    let serial = std::sync::Mutex::new(None);
    wait_until_async(&format!("{name} has a certificate"), ISSUE, || async {
        match handshake(addr, name, roots).await {
            Ok(s) => {
                *serial.lock().unwrap() = Some(s);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    serial.into_inner().unwrap().unwrap()
}

// === tests ===

#[tokio::test]
async fn http01_issues_a_certificate_and_a_restart_reuses_it() {
    let origin = Origin::start().await;
    let sockets = Sockets::bind();
    let pebble = Pebble::start(sockets.plain_addr.port(), sockets.tls_addr.port()).await;
    let storage = tempfile::tempdir().unwrap();
    let store = storage.path().join("acme");
    let domains = r#"domains = ["www.acme.test", "acme.test"]
challenge = "http-01""#;
    let node = Node::start(
        sockets,
        &origin,
        domains,
        &pebble.directory,
        &pebble.ca_file(),
        &store,
    )
    .await;
    let plain = node.plain;

    // Plain HTTP is served from the start: ordering runs in the background (that a name
    // without a certificate fails its handshake is a_name_that_cannot_be_validated_…).
    let (status, _, _) = get(&format!("http://{plain}/")).await;
    assert_eq!(status, StatusCode::OK);

    let root = pebble.root().await;
    let serial = issued(node.tls, "www.acme.test", &root).await;
    assert_eq!(
        issued(node.tls, "acme.test", &root).await,
        serial,
        "one certificate, both names"
    );
    assert_eq!(node.metric("torii_acme_orders_total").await, 1.0);
    assert_eq!(node.metric("torii_acme_order_failures_total").await, 0.0);
    let expiry = node
        .metric("torii_tls_certificate_expiry_seconds{name=\"www.acme.test\"}")
        .await;
    assert!(expiry > unix_now(), "expiry {expiry}");
    // Stored privately: directory 0700, files 0600.
    assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o777, 0o700);
    for file in [
        "account.json",
        "www.acme.test.crt.pem",
        "www.acme.test.key.pem",
    ] {
        let mode = std::fs::metadata(store.join(file)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // A token nobody placed is not an ACME answer: the request goes to the origin.
    let (status, _, _) = get(&format!("http://{plain}/.well-known/acme-challenge/nope")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.hits("/.well-known/acme-challenge/nope"), 1);
    node.stop().await;

    // A second torii on the same storage serves the stored certificate and does not order:
    // its next order is planned for two thirds into the certificate's life.
    let node = Node::start(
        Sockets::bind(),
        &origin,
        domains,
        &pebble.directory,
        &pebble.ca_file(),
        &store,
    )
    .await;
    wait_until_async("the renewal is planned", PATIENCE, || async {
        node.metric("torii_acme_renewal_seconds{name=\"www.acme.test\"}")
            .await
            > 0.0
    })
    .await;
    let renewal = node
        .metric("torii_acme_renewal_seconds{name=\"www.acme.test\"}")
        .await;
    assert!(
        renewal > unix_now() + 86_400.0,
        "renewal {renewal} is not days away"
    );
    assert_eq!(
        handshake(node.tls, "www.acme.test", &root).await,
        Ok(serial)
    );
    assert_eq!(node.metric("torii_acme_orders_total").await, 0.0);
    node.stop().await;
}

#[tokio::test]
async fn tls_alpn01_issues_a_certificate() {
    let origin = Origin::start().await;
    let sockets = Sockets::bind();
    let pebble = Pebble::start(sockets.plain_addr.port(), sockets.tls_addr.port()).await;
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(
        sockets,
        &origin,
        "domains = [\"alpn.acme.test\"]\nchallenge = \"tls-alpn-01\"",
        &pebble.directory,
        &pebble.ca_file(),
        storage.path(),
    )
    .await;
    let root = pebble.root().await;
    issued(node.tls, "alpn.acme.test", &root).await;
    assert_eq!(node.metric("torii_acme_orders_total").await, 1.0);
    // The certificate serves HTTPS: a request through it reaches the origin.
    let tcp = tokio::net::TcpStream::connect(node.tls).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(&root))
        .connect(ServerName::try_from("alpn.acme.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/hello")
        .header("host", "alpn.acme.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        sender.send_request(req).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(origin.hits("/hello"), 1);
    node.stop().await;
}

#[tokio::test]
async fn renewal_swaps_the_certificate_without_a_reload() {
    let origin = Origin::start().await;
    let sockets = Sockets::bind();
    let pebble = Pebble::start(sockets.plain_addr.port(), sockets.tls_addr.port()).await;
    let storage = tempfile::tempdir().unwrap();
    // Renew when less than 100 years are left: at once, after every issuance.
    let node = Node::start(
        sockets,
        &origin,
        "domains = [\"renew.acme.test\"]\nchallenge = \"http-01\"\nrenew_before = \"36500d\"",
        &pebble.directory,
        &pebble.ca_file(),
        storage.path(),
    )
    .await;
    let root = pebble.root().await;
    let first = issued(node.tls, "renew.acme.test", &root).await;
    wait_until_async("a renewed certificate is served", ISSUE, || async {
        matches!(handshake(node.tls, "renew.acme.test", &root).await, Ok(s) if s != first)
    })
    .await;
    assert!(node.metric("torii_acme_orders_total").await >= 2.0);
    node.stop().await;
}

#[tokio::test]
async fn a_failing_order_keeps_the_certificate_served_and_retries() {
    let origin = Origin::start().await;
    let sockets = Sockets::bind();
    let mut pebble = Pebble::start(sockets.plain_addr.port(), sockets.tls_addr.port()).await;
    let storage = tempfile::tempdir().unwrap();
    let domains = "domains = [\"fail.acme.test\"]\nchallenge = \"http-01\"";
    let node = Node::start(
        sockets,
        &origin,
        domains,
        &pebble.directory,
        &pebble.ca_file(),
        storage.path(),
    )
    .await;
    let root = pebble.root().await;
    let serial = issued(node.tls, "fail.acme.test", &root).await;
    node.stop().await;

    // The directory goes down; a restart that wants to renew at once keeps serving the
    // stored certificate, counts each failed order and retries (with back-off).
    pebble.stop();
    let renew_now = format!("{domains}\nrenew_before = \"36500d\"");
    let node = Node::start(
        Sockets::bind(),
        &origin,
        &renew_now,
        &pebble.directory,
        &pebble.ca_file(),
        storage.path(),
    )
    .await;
    wait_until_async("orders fail and are retried", ISSUE, || async {
        node.metric("torii_acme_order_failures_total").await >= 3.0
    })
    .await;
    assert_eq!(
        handshake(node.tls, "fail.acme.test", &root).await,
        Ok(serial)
    );
    let (status, _, _) = get(&format!("http://{}/", node.plain)).await;
    assert_eq!(status, StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn a_name_that_cannot_be_validated_fails_cleanly() {
    let origin = Origin::start().await;
    let sockets = Sockets::bind();
    // pebble validates TLS-ALPN-01 on a port where nobody listens.
    let pebble = Pebble::start(sockets.plain_addr.port(), free_port()).await;
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(
        sockets,
        &origin,
        "domains = [\"nope.acme.test\"]",
        &pebble.directory,
        &pebble.ca_file(),
        storage.path(),
    )
    .await;
    wait_until_async("the order fails", ISSUE, || async {
        node.metric("torii_acme_order_failures_total").await >= 1.0
    })
    .await;
    let root = pebble.root().await;
    // No certificate for the name: the handshake fails, torii keeps serving plain HTTP.
    assert!(handshake(node.tls, "nope.acme.test", &root).await.is_err());
    let (status, _, _) = get(&format!("http://{}/", node.plain)).await;
    assert_eq!(status, StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn storage_that_cannot_be_written_still_serves_the_certificate() {
    let origin = Origin::start().await;
    let sockets = Sockets::bind();
    let pebble = Pebble::start(sockets.plain_addr.port(), sockets.tls_addr.port()).await;
    let tmp = tempfile::tempdir().unwrap();
    let blocked = tmp.path().join("blocked");
    let store = blocked.join("acme");
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[[listeners]]\naddr = \"{}\"\n[listeners.tls]\n[listeners.tls.acme]\ndomains = [\"ro.acme.test\"]\ndirectory = \"{}\"\nca = \"{}\"\nstorage = \"{}\"\nretry_backoff = \"50ms\"\n[[listeners]]\naddr = \"{}\"\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        sockets.tls_addr,
        pebble.directory,
        pebble.ca_file().display(),
        store.display(),
        sockets.plain_addr,
        origin.url()
    );
    // `check` accepts it (the directory can be created)...
    let config = torii::config::load_str("acme.toml", &toml).unwrap_or_else(|e| panic!("{e}"));
    // ...but by the time torii writes, a file stands where a directory should be made.
    std::fs::write(&blocked, "not a directory").unwrap();
    let node = Node::run(config, sockets).await;
    let root = pebble.root().await;
    issued(node.tls, "ro.acme.test", &root).await;
    assert_eq!(node.metric("torii_acme_orders_total").await, 1.0);
    assert_eq!(node.metric("torii_acme_order_failures_total").await, 0.0);
    assert!(!store.exists());
    node.stop().await;
}

/// A `redis-server` on a free loopback port, killed (by its PID) when dropped.
struct Redis {
    port: u16,
    _proc: Proc,
}

impl Redis {
    async fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let redis = Redis {
            port,
            _proc: Proc(child),
        };
        wait_until_async("redis-server answers", PATIENCE, || async {
            redis.query::<String>(&redis::cmd("PING")).await.is_ok()
        })
        .await;
        redis
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        cmd.query_async(&mut conn).await
    }

    /// How many SET commands the server has run.
    async fn sets(&self) -> u64 {
        let info: String = self
            .query(redis::cmd("INFO").arg("commandstats"))
            .await
            .unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_set:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn nodes_on_one_shared_tier_order_once_and_share_the_certificate() {
    let redis = Redis::start().await;
    let shared = format!(
        "[cache.shared]\nredis = \"redis://127.0.0.1:{}\"",
        redis.port
    );
    let origin = Origin::start().await;
    let sockets = Sockets::bind();
    let pebble = Pebble::start(sockets.plain_addr.port(), sockets.tls_addr.port()).await;
    let (store_a, store_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let domains = "domains = [\"shared.acme.test\"]\nchallenge = \"http-01\"";

    // Another node holds the order lease: this one waits, looking again, and orders nothing.
    let _: () = redis
        .query(
            redis::cmd("SET")
                .arg("torii:acme:lease:shared.acme.test")
                .arg("other-node")
                .arg("PX")
                .arg(600_000),
        )
        .await
        .unwrap();
    let a = Node::start_with(
        sockets,
        &origin,
        domains,
        &pebble.directory,
        &pebble.ca_file(),
        store_a.path(),
        &shared,
    )
    .await;
    wait_until_async("node a asked for the lease three times", ISSUE, || async {
        redis.sets().await >= 4
    })
    .await;
    assert_eq!(a.metric("torii_acme_orders_total").await, 0.0);

    // The lease is given back: node a orders, and shares what it got.
    let _: () = redis
        .query(redis::cmd("DEL").arg("torii:acme:lease:shared.acme.test"))
        .await
        .unwrap();
    let root = pebble.root().await;
    let serial = issued(a.tls, "shared.acme.test", &root).await;
    assert_eq!(a.metric("torii_acme_orders_total").await, 1.0);

    // Node b, with empty storage of its own, serves the same certificate without ordering.
    let b = Node::start_with(
        Sockets::bind(),
        &origin,
        domains,
        &pebble.directory,
        &pebble.ca_file(),
        store_b.path(),
        &shared,
    )
    .await;
    assert_eq!(issued(b.tls, "shared.acme.test", &root).await, serial);
    assert_eq!(b.metric("torii_acme_orders_total").await, 0.0);
    assert!(store_b.path().join("shared.acme.test.crt.pem").exists());
    a.stop().await;
    b.stop().await;
}

#[test]
fn check_explains_a_bad_acme_table() {
    let toml = r#"[[listeners]]
addr = "127.0.0.1:8443"
[listeners.tls]
[listeners.tls.acme]
domains = ["ok.example.com", "bad name", "*.example.com"]
email = "not-an-email"
directory = "http://acme.example.com/directory"
challenge = "dns-01"
storage = "/etc/hostname/acme"
[upstreams.app]
servers = ["127.0.0.1:9000"]
[[routes]]
upstream = "app"
"#;
    let err = torii::config::load_str("t.toml", toml)
        .unwrap_err()
        .to_string();
    for expected in [
        "t.toml:5:30: listeners[0].tls.acme.domains: \"bad name\" is not a DNS name",
        "t.toml:5:42: listeners[0].tls.acme.domains: \"*.example.com\": wildcard names need the dns-01 challenge",
        "t.toml:6:9: listeners[0].tls.acme.email: \"not-an-email\" is not an email address",
        "t.toml:7:13: listeners[0].tls.acme.directory: \"http://acme.example.com/directory\" is not an https:// URL",
        "t.toml:8:13: listeners[0].tls.acme.challenge: unknown challenge \"dns-01\"",
        "t.toml:9:11: listeners[0].tls.acme.storage:",
    ] {
        assert!(err.contains(expected), "{expected}\nnot in\n{err}");
    }
    assert!(err.contains("hint:"), "{err}");

    // http-01 needs a plain listener.
    let toml = toml
        .replace("\"bad name\", \"*.example.com\"", "")
        .replace("not-an-email", "ops@example.com")
        .replace("http://", "https://")
        .replace("dns-01", "http-01")
        .replace("/etc/hostname/acme", "/tmp/torii-acme-check");
    let err = torii::config::load_str("t.toml", &toml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "t.toml:8:13: listeners[0].tls.acme.challenge: http-01 is answered on a plain listener"
        ),
        "{err}"
    );
}
