//! TLS termination and HTTP/2 on both sides, with certificates made at test time (rcgen):
//! SNI, ALPN, resumption, versions, reload on SIGHUP, `torii check`, redirect to https,
//! https and h2 upstreams, gRPC-style streaming with trailers, and real clients (curl, h2load).
//!
//! `downstream`: TLS listeners in this process; `process`: the real binary (`torii check`,
//! SIGHUP, the one-liner); `upstream`: https, h2 and h2c upstreams. This file holds the
//! certificates, clients and the in-process torii they share.

#[path = "../support/mod.rs"]
mod support;

mod cache_scheme;
mod downstream;
mod process;
mod upstream;

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
