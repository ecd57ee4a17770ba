//! Connections to upstream servers: TCP for `http://`, TCP + rustls for `https://` (verified
//! against the system roots or the group's `tls_ca`, SNI from the host or `tls_server_name`,
//! ALPN `h2` or `http/1.1` as the group's protocol says). The pool (`pool.rs`) runs HTTP over
//! what `Connector::connect` returns.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{ServerAddr, Upstream, UpstreamProtocol};

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// TCP keep-alive probes on upstream connections: a pooled connection to a server that
/// vanished (no FIN, no RST) is found out instead of waiting forever.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why `Connector::connect` failed.
#[derive(Debug)]
pub enum ConnectError {
    /// `connect_timeout` passed before the TCP connect and TLS handshake were done.
    Timeout,
    /// Name resolution, the TCP connect or the TLS handshake failed.
    Failed(BoxError),
}

/// The connector of one upstream group.
pub struct Connector {
    /// `None` when the group has no `https://` server.
    tls: Option<tokio_rustls::TlsConnector>,
    server_name: Option<ServerName<'static>>,
    timeout: Duration,
}

impl Connector {
    /// The connector for `config`: TCP_NODELAY, keep-alive probes, `connect_timeout` over the
    /// TCP connect and the TLS handshake together.
    ///
    /// # Errors
    /// When the TLS client config cannot be built (no usable root, which `validate` rules
    /// out for `tls_ca`; the system store may be empty).
    pub fn new(config: &Upstream) -> Result<Connector, rustls::Error> {
        let https = config
            .servers
            .iter()
            .any(|s| s.addr.scheme == http::uri::Scheme::HTTPS);
        let tls = if https {
            Some(tokio_rustls::TlsConnector::from(Arc::new(client_config(
                config,
            )?)))
        } else {
            None
        };
        let server_name = config
            .tls
            .server_name
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_string()).ok());
        Ok(Connector {
            tls,
            server_name,
            timeout: config.connect_timeout,
        })
    }

    /// A new connection to `addr`, within `connect_timeout` (resolution, TCP connect and TLS
    /// handshake together). `preface` (a PROXY protocol header) is written first, before
    /// any TLS.
    pub async fn connect(
        &self,
        addr: &ServerAddr,
        preface: Option<&[u8]>,
    ) -> Result<Stream, ConnectError> {
        match tokio::time::timeout(self.timeout, self.open(addr, preface)).await {
            Ok(result) => result.map_err(ConnectError::Failed),
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn open(&self, addr: &ServerAddr, preface: Option<&[u8]>) -> Result<Stream, BoxError> {
        let https = addr.scheme == http::uri::Scheme::HTTPS;
        let host = addr.authority.host();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = addr
            .authority
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let mut tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))?;
        if let Some(preface) = preface {
            tcp.write_all(preface).await?;
        }
        if !https {
            return Ok(Stream::Plain(tcp));
        }
        let tls = self
            .tls
            .as_ref()
            .ok_or("https:// server without a TLS client")?;
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_string())?,
        };
        let stream = tls.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(stream)))
    }
}

/// The rustls client config of a group with `https://` servers.
fn client_config(config: &Upstream) -> Result<ClientConfig, rustls::Error> {
    let provider = crate::config::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut client = if config.tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let roots = match &config.tls.ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(ca.certs.iter().cloned());
                Arc::new(roots)
            }
            None => system_roots(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    client.alpn_protocols = match config.protocol {
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        UpstreamProtocol::H1 | UpstreamProtocol::H2c => vec![b"http/1.1".to_vec()],
    };
    Ok(client)
}

/// The system's trusted roots (Debian: /etc/ssl/certs), read once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("system CA certificates: {e}");
            }
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no system CA certificates found: https upstreams need tls_ca");
            }
            Arc::new(roots)
        })
        .clone()
}

/// A connection to an upstream server.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `tls_insecure_skip_verify = true`: accepts any certificate for any name, but still
/// checks the handshake signatures (so the session is encrypted to whoever holds the
/// certificate's key). Only for self-signed test servers.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
