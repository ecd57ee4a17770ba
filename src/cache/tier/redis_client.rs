//! Redis clients for the shared tier: plain `redis://`, or `rediss://` with the CA, client
//! certificate and key of `cache.shared.tls` (rustls, the ring provider torii uses
//! everywhere).

use redis::{RedisResult, TlsCertificates};

use crate::config::RedisTls;

/// A client for one server URL. With `tls`, a `rediss://` URL is verified against its CA
/// (else the system's roots) and offers its client certificate; the name verified is the
/// URL's host (redis-rs dials and verifies the same name).
///
/// # Errors
/// A URL redis-rs cannot use, or PEM it cannot parse (validation has read both).
pub fn client(url: &str, tls: Option<&RedisTls>) -> RedisResult<redis::Client> {
    match tls {
        Some(tls) => redis::Client::build_with_tls(url, certificates(tls)),
        None => redis::Client::open(url),
    }
}

/// The certificates of `tls` in redis-rs's form.
pub fn certificates(tls: &RedisTls) -> TlsCertificates {
    TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tls.ca.clone(),
    }
}
