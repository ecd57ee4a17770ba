//! Client certificates (mutual TLS, issue 19), with certificates made at test time (rcgen):
//! a CA, a server certificate, a client certificate it signed, and one from another CA.
//! Required listeners refuse handshakes without a verified certificate; optional ones let
//! routes decide (`access.client_cert`); header rule variables carry the certificate to a
//! real origin; HTTP/1.1 and HTTP/2; a reload picks up a new client CA.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;

use support::*;

// === certificates ===

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate: PEM for torii, DER and key for a rustls client.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn server(&self) -> Leaf {
        self.sign(rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap())
    }

    /// A client certificate for `cn`, with an e-mail and a DNS subject alternative name.
    fn client(&self, cn: &str) -> Leaf {
        let mut params = rcgen::CertificateParams::new(vec![format!("{cn}.clients.test")]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            format!("{cn}@example.com").try_into().unwrap(),
        ));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: rcgen::CertificateParams) -> Leaf {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// The server's CA, the clients' CA (which torii trusts), and another CA (which it does not).
struct Pki {
    dir: tempfile::TempDir,
    server_ca: Ca,
    clients: Ca,
    other: Ca,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            server_ca: Ca::new("server CA"),
            clients: Ca::new("clients CA"),
            other: Ca::new("other CA"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `[[listeners]]` with TLS, asking for client certificates as `client_auth` says.
    fn listener(&self, client_auth: &str) -> String {
        let server = self.server_ca.server();
        let cert = self.write("server.pem", &server.cert_pem);
        let key = self.write("server.key", &server.key_pem);
        let ca = self.write("clients-ca.pem", &self.clients.cert.pem());
        format!(
            "[[listeners]]\naddr = \"127.0.0.1:0\"\n[listeners.tls]\ncert = {cert:?}\nkey = {key:?}\n\
             client_ca = {ca:?}\nclient_auth = \"{client_auth}\"\n"
        )
    }

    /// A client trusting the server's CA, presenting `leaf` if given, speaking `alpn`.
    fn client(&self, leaf: Option<&Leaf>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match leaf {
            None => builder.with_no_client_auth(),
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.der.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
                )
                .unwrap(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

/// torii with `listener` (a TLS one) and `routes` to the origin `app`.
async fn start(origin: &Origin, listener: &str, routes: &str) -> Torii {
    Torii::start(
        &format!(
            "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n{listener}\n\
             [upstreams.app]\nservers = [\"{{origin}}\"]\n{routes}"
        ),
        Some(origin),
    )
    .await
}

const ONE_ROUTE: &str = "[[routes]]\nupstream = \"app\"\n";

// === clients ===

/// GET `path` over a new TLS connection (HTTP/1.1 or HTTP/2 by ALPN) with `headers`: the
/// status and version, or why it failed. With TLS 1.3 the client's handshake can finish
/// before the server has verified its certificate: a refusal then shows on the request.
async fn fetch(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, Version), String> {
    let h2 = config.alpn_protocols.first().map(Vec::as_slice) == Some(b"h2".as_slice());
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut req = Request::get(format!("https://localhost{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let io = TokioIo::new(stream);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        sender.send_request(req).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1: {e}"))?;
        tokio::spawn(conn);
        let req = req
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(req).await
    };
    let resp = resp.map_err(|e| format!("request: {e}"))?;
    let (status, version) = (resp.status(), resp.version());
    let _ = resp.into_body().collect().await;
    Ok((status, version))
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const HANDSHAKE_ERRORS: &str = "torii_tls_handshake_errors_total";

// === tests ===

#[tokio::test]
async fn a_required_listener_lets_in_only_verified_client_certificates() {
    let origin = Origin::start().await;
    let pki = Pki::new();
    let torii = start(&origin, &pki.listener("required"), ONE_ROUTE).await;
    let (alice, mallory) = (pki.clients.client("alice"), pki.other.client("mallory"));
    for alpn in [b"http/1.1".as_slice(), b"h2"] {
        let want = if alpn == b"h2" {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let ok = fetch(torii.addr, pki.client(Some(&alice), alpn), "/", &[]).await;
        assert_eq!(ok, Ok((StatusCode::OK, want)), "{alpn:?}");
        let none = fetch(torii.addr, pki.client(None, alpn), "/", &[]).await;
        assert!(none.is_err(), "no certificate, {alpn:?}: {none:?}");
        let wrong = fetch(torii.addr, pki.client(Some(&mallory), alpn), "/", &[]).await;
        assert!(
            wrong.is_err(),
            "another CA's certificate, {alpn:?}: {wrong:?}"
        );
    }
    // Only the verified clients' requests reached the origin; every refusal was counted.
    assert_eq!(origin.total_hits(), 2);
    wait_until_async("four refused handshakes are counted", PATIENCE, || async {
        torii.metric(HANDSHAKE_ERRORS).await == Some(4.0)
    })
    .await;
}

#[tokio::test]
async fn on_an_optional_listener_the_route_decides() {
    let origin = Origin::start().await;
    let pki = Pki::new();
    let routes = "[[routes]]\npath = \"/secure\"\nupstream = \"app\"\n\
                  access = { client_cert = \"required\" }\n\
                  [[routes]]\nupstream = \"app\"\n";
    let torii = start(&origin, &pki.listener("optional"), routes).await;
    // Cacheable: once stored, it must still not be served to a client without a certificate.
    origin.set(
        "/secure",
        Reply::new("secret").header("cache-control", "public, max-age=600"),
    );
    let alice = pki.clients.client("alice");
    for alpn in [b"http/1.1".as_slice(), b"h2"] {
        let anonymous = pki.client(None, alpn);
        let with_cert = pki.client(Some(&alice), alpn);
        let status = |r: Result<(StatusCode, Version), String>| r.map(|(s, _)| s);
        assert_eq!(
            status(fetch(torii.addr, anonymous.clone(), "/secure", &[]).await),
            Ok(StatusCode::FORBIDDEN),
            "{alpn:?}"
        );
        assert_eq!(
            status(fetch(torii.addr, anonymous, "/open", &[]).await),
            Ok(StatusCode::OK),
            "{alpn:?}"
        );
        assert_eq!(
            status(fetch(torii.addr, with_cert, "/secure", &[]).await),
            Ok(StatusCode::OK),
            "{alpn:?}"
        );
        // A certificate that does not verify is refused even where none is needed.
        let mallory = pki.client(Some(&pki.other.client("mallory")), alpn);
        let wrong = fetch(torii.addr, mallory, "/open", &[]).await;
        assert!(wrong.is_err(), "{alpn:?}: {wrong:?}");
    }
    // The 403s never reached the origin; the second verified client got the stored copy,
    // and after it was stored a client without a certificate still gets 403, not the hit.
    assert_eq!(origin.hits("/secure"), 1);
    assert_eq!(origin.hits("/open"), 2);
    let anonymous = pki.client(None, b"http/1.1");
    let after = fetch(torii.addr, anonymous, "/secure", &[]).await;
    assert_eq!(after.map(|(s, _)| s), Ok(StatusCode::FORBIDDEN));
}

#[tokio::test]
async fn certificate_variables_reach_the_origin_and_cannot_be_spoofed() {
    let origin = Origin::start().await;
    origin.set("/who", Reply::new("ok"));
    let pki = Pki::new();
    let routes = "[[routes]]\nupstream = \"app\"\n[routes.headers.request.set]\n\
                  \"X-Client-Subject\" = \"{tls_client_subject}\"\n\
                  \"X-Client-San\" = \"{tls_client_san}\"\n\
                  \"X-Client-Fingerprint\" = \"{tls_client_fingerprint}\"\n\
                  \"X-Client-Verified\" = \"{tls_client_verified}\"\n";
    let torii = start(&origin, &pki.listener("optional"), routes).await;
    let alice = pki.clients.client("alice");
    let spoofed = [
        ("x-client-subject", "CN=root"),
        ("x-client-fingerprint", "00"),
        ("x-client-verified", "true"),
    ];
    for alpn in [b"http/1.1".as_slice(), b"h2"] {
        let with_cert = pki.client(Some(&alice), alpn);
        let ok = fetch(torii.addr, with_cert, "/who", &spoofed).await;
        assert!(matches!(ok, Ok((StatusCode::OK, _))), "{ok:?}");
        let (_, seen) = origin.requests("/who").pop().unwrap();
        let subject = seen["x-client-subject"].to_str().unwrap();
        assert!(subject.contains("CN=alice"), "{subject}");
        assert!(subject.contains("O=Example"), "{subject}");
        assert_eq!(
            seen["x-client-san"],
            "DNS:alice.clients.test, email:alice@example.com"
        );
        assert_eq!(seen["x-client-fingerprint"], sha256_hex(&alice.der));
        assert_eq!(seen["x-client-verified"], "true");
        assert_eq!(seen.get_all("x-client-subject").iter().count(), 1);

        // Without a certificate: nothing of the client's own gets through.
        let anonymous = pki.client(None, alpn);
        let ok = fetch(torii.addr, anonymous, "/who", &spoofed).await;
        assert!(matches!(ok, Ok((StatusCode::OK, _))), "{ok:?}");
        let (_, seen) = origin.requests("/who").pop().unwrap();
        assert_eq!(seen["x-client-verified"], "false");
        assert_eq!(seen["x-client-subject"], "");
        assert_eq!(seen["x-client-fingerprint"], "");
    }
}

#[tokio::test]
async fn a_reload_picks_up_a_new_client_ca() {
    let origin = Origin::start().await;
    let pki = Pki::new();
    let listener = pki.listener("required");
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n{listener}\n\
         [upstreams.app]\nservers = [\"{}\"]\n{ONE_ROUTE}",
        origin.url()
    );
    let torii = Torii::start(&toml, None).await;
    let (alice, mallory) = (pki.clients.client("alice"), pki.other.client("mallory"));
    let h1 = b"http/1.1".as_slice();
    // One config for alice throughout: it keeps the session (ticket) torii gave it.
    let alice_config = pki.client(Some(&alice), h1);
    assert!(fetch(torii.addr, alice_config.clone(), "/", &[])
        .await
        .is_ok());
    assert!(fetch(torii.addr, pki.client(Some(&mallory), h1), "/", &[])
        .await
        .is_err());
    // The CA file now holds the other CA; a reload (what SIGHUP runs) reads it again.
    pki.write("clients-ca.pem", &pki.other.cert.pem());
    let config = torii::config::load_str("test.toml", &toml).unwrap();
    torii.server.reload(config).unwrap();
    let ok = fetch(torii.addr, pki.client(Some(&mallory), h1), "/", &[]).await;
    assert_eq!(ok, Ok((StatusCode::OK, Version::HTTP_11)));
    // Not even by resuming the session it had before the reload.
    let resumed = fetch(torii.addr, alice_config, "/", &[]).await;
    assert!(resumed.is_err(), "{resumed:?}");
    assert!(fetch(torii.addr, pki.client(Some(&alice), h1), "/", &[])
        .await
        .is_err());
    // A client CA file that is not PEM keeps the old config serving.
    pki.write("clients-ca.pem", "not a certificate");
    let bad = torii::config::load_str("test.toml", &toml)
        .unwrap_err()
        .to_string();
    assert!(bad.contains("listeners[0].tls.client_ca"), "{bad}");
    let ok = fetch(torii.addr, pki.client(Some(&mallory), h1), "/", &[]).await;
    assert_eq!(ok, Ok((StatusCode::OK, Version::HTTP_11)));
}

/// Stops our own child by its PID when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sighup_to_the_real_binary_reads_the_client_ca_again() {
    let origin = Origin::start().await;
    let pki = Pki::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listener = pki
        .listener("required")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = pki.write(
        "torii.toml",
        &format!(
            "[server]\nadmin = \"off\"\nworkers = 1\n[log]\naccess = \"off\"\n{listener}\n\
             [upstreams.app]\nservers = [\"{}\"]\n{ONE_ROUTE}",
            origin.url()
        ),
    );
    let torii = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_torii"))
            .args(["run", "--config"])
            .arg(&config)
            .env("TORII_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let h1 = b"http/1.1".as_slice();
    let (alice, mallory) = (pki.clients.client("alice"), pki.other.client("mallory"));
    wait_until_async("torii serves alice", PATIENCE, || async {
        fetch(addr, pki.client(Some(&alice), h1), "/", &[])
            .await
            .is_ok()
    })
    .await;
    assert!(fetch(addr, pki.client(Some(&mallory), h1), "/", &[])
        .await
        .is_err());
    pki.write("clients-ca.pem", &pki.other.cert.pem());
    let status = std::process::Command::new("kill")
        .args(["-HUP", &torii.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until_async("the reload lets mallory in", PATIENCE, || async {
        fetch(addr, pki.client(Some(&mallory), h1), "/", &[])
            .await
            .is_ok()
    })
    .await;
    assert!(fetch(addr, pki.client(Some(&alice), h1), "/", &[])
        .await
        .is_err());
}
