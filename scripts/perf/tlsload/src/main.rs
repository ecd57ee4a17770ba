//! TLS handshake load: `CONCURRENCY` tasks on one thread, each opening a new TLS 1.3
//! connection per request (`Connection: close`) for `SECONDS`, full handshakes or resumed
//! sessions. Loopback load for scripts/perf/scale.py; bounded by its duration.
//!
//!   tlsload HOST:PORT PATH CA.pem SECONDS CONCURRENCY full|resume
//!
//! The server must present CA.pem's first certificate (the harness's throwaway,
//! self-signed one: pinned, so no chain is built) and prove it holds its key: the
//! handshake's signature is verified as in any TLS 1.3 client. Requests carry
//! `Host: HOST:PORT`, as wrk's do. Prints one line:
//! `TLSLOADJSON {"requests":N,"errors":E,"full":F,"resumed":R,"seconds":S}`, where a
//! request counts when its response (status 200, its whole body) arrived; exit status 1
//! when nothing succeeded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::HandshakeKind;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Default, Clone, Copy)]
struct Counts {
    requests: u64,
    errors: u64,
    /// Of the requests, those whose handshake resumed a session; the rest were full.
    resumed: u64,
}

fn usage(msg: &str) -> ! {
    eprintln!("tlsload: {msg}");
    eprintln!("usage: tlsload HOST:PORT PATH CA.pem SECONDS CONCURRENCY full|resume");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 {
        usage("six arguments");
    }
    let addr: SocketAddr = args[0].parse().unwrap_or_else(|_| usage("HOST:PORT"));
    let path = args[1].clone();
    if !path.starts_with('/') {
        usage("PATH starts with /");
    }
    let pinned = CertificateDer::pem_file_iter(&args[2])
        .unwrap_or_else(|e| usage(&format!("{}: {e}", args[2])))
        .next()
        .unwrap_or_else(|| usage(&format!("{}: no certificate", args[2])))
        .unwrap_or_else(|e| usage(&format!("{}: {e}", args[2])));
    let seconds: f64 = args[3].parse().unwrap_or_else(|_| usage("SECONDS"));
    if !(seconds > 0.0 && seconds <= 3600.0) {
        usage("SECONDS in (0, 3600]");
    }
    let concurrency: usize = args[4].parse().unwrap_or_else(|_| usage("CONCURRENCY"));
    if !(1..=4096).contains(&concurrency) {
        usage("CONCURRENCY in 1..=4096");
    }
    let resume = match args[5].as_str() {
        "full" => false,
        "resume" => true,
        _ => usage("full or resume"),
    };

    // The suites in a browser's order (Chrome's and Firefox's: AES-128-GCM first, so a
    // SHA-256 transcript), the key exchange X25519 first, as theirs (bar post-quantum).
    #[allow(deprecated)] // rustls 0.23.48: ring's provider has no post-quantum exchange
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    });
    let verifier = Arc::new(Pinned {
        cert: pinned,
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| usage(&format!("TLS 1.3: {e}")))
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Resumed: each task keeps its own tickets, so each connection resumes the session of
    // the task's connection before it (one shared store keeps 8 tickets per server, too
    // few for 64 connections at once). Full: no resumption at all.
    let connector_for_task = move || {
        let mut config = config.clone();
        config.resumption = if resume {
            Resumption::in_memory_sessions(4)
        } else {
            Resumption::disabled()
        };
        TlsConnector::from(Arc::new(config))
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let total = rt.block_on(async move {
        let request: Arc<[u8]> = request.into_bytes().into();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let connector = connector_for_task();
                let request = request.clone();
                tokio::spawn(async move {
                    let mut counts = Counts::default();
                    let mut buf = Vec::with_capacity(4096);
                    while Instant::now() < deadline {
                        match tokio::time::timeout(
                            Duration::from_secs(10),
                            one(&connector, addr, &request, &mut buf),
                        )
                        .await
                        {
                            Ok(Ok(kind)) => {
                                counts.requests += 1;
                                counts.resumed += u64::from(kind == Some(HandshakeKind::Resumed));
                            }
                            Ok(Err(e)) => {
                                if counts.errors == 0 && counts.requests == 0 {
                                    eprintln!("tlsload: {e}");
                                }
                                counts.errors += 1;
                            }
                            Err(_) => counts.errors += 1,
                        }
                    }
                    counts
                })
            })
            .collect();
        let mut total = Counts::default();
        for task in tasks {
            let c = task.await.unwrap_or_default();
            total.requests += c.requests;
            total.errors += c.errors;
            total.resumed += c.resumed;
        }
        total
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "TLSLOADJSON {{\"requests\":{},\"errors\":{},\"full\":{},\"resumed\":{},\"seconds\":{secs:.3}}}",
        total.requests,
        total.errors,
        total.requests - total.resumed,
        total.resumed
    );
    if total.requests == 0 {
        std::process::exit(1);
    }
}

/// One connection, one request: the handshake, the GET, its response read through the
/// end of its body (`Content-Length`), status 200. Gives the handshake's kind.
async fn one(
    connector: &TlsConnector,
    addr: SocketAddr,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<HandshakeKind>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    // An address, as wrk's `https://127.0.0.1:PORT/`: no SNI.
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await?;
    let kind = tls.get_ref().1.handshake_kind();
    tls.write_all(request).await?;
    buf.clear();
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head not UTF-8"))?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(bad("status not 200"));
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| bad("no Content-Length"))?;
            while buf.len() < end + 4 + len {
                if read_some(&mut tls, buf).await? == 0 {
                    return Err(bad("body cut short"));
                }
            }
            return Ok(kind);
        }
        if buf.len() > 64 * 1024 {
            return Err(bad("head too long"));
        }
        if read_some(&mut tls, buf).await? == 0 {
            return Err(bad("closed before the head"));
        }
    }
}

async fn read_some<S: AsyncReadExt + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Accepts exactly the pinned certificate, and a handshake signature made with its key.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
