//! The HTTPS client instant-acme talks to the directory through: torii's own hyper and
//! rustls (ring), trusting the system's roots or the `ca` file of a private directory.
//! One connection per request: an order makes a handful, days apart.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Uri};
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls_pki_types::ServerName;

/// Longest a connection, TLS handshake and response head may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read from a directory (its answers are small JSON or PEM).
const MAX_BODY: usize = 1024 * 1024;

/// HTTPS to the ACME directory.
pub struct Http {
    tls: tokio_rustls::TlsConnector,
}

impl Http {
    /// Trusts the certificates of the PEM file `ca`, or else the system's roots.
    ///
    /// # Errors
    /// When `ca` cannot be read, or no root can be loaded at all.
    pub fn new(ca: Option<&Path>) -> Result<Http, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                roots.add_parsable_certificates(crate::config::tls::load_ca(path)?);
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        if roots.is_empty() {
            return Err("no trusted root certificates to verify the directory with".into());
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(crate::config::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Http {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

fn other(message: impl Into<String>) -> Error {
    Error::Other(message.into().into())
}

impl HttpClient for Http {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            tokio::time::timeout(TIMEOUT, send(tls, req))
                .await
                .map_err(|_| other(format!("no answer within {TIMEOUT:?}")))?
        })
    }
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    req: Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, Error> {
    let (mut parts, body) = req.into_parts();
    let uri = parts.uri.clone();
    if uri.scheme_str() != Some("https") {
        return Err(other(format!("{uri}: the directory must be https")));
    }
    let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
        return Err(other(format!("{uri}: no host")));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    parts.headers.insert(
        header::HOST,
        HeaderValue::from_str(authority.as_str()).map_err(|e| other(e.to_string()))?,
    );
    // Origin form on the wire: hyper's connection sends the target as given.
    parts.uri = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse::<Uri>()
        .map_err(|e| other(e.to_string()))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| other(format!("{host}: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| other(format!("connect {host}:{port}: {e}")))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| other(format!("TLS to {host}:{port}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| other(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| other(format!("{uri}: {e}")))?;
    Ok(BytesResponse::from(
        resp.map(|body| http_body_util::Limited::new(body, MAX_BODY)),
    ))
}
