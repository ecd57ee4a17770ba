//! TLS termination: a listener's rustls config (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`,
//! session resumption), its SNI certificate resolver, and the handshake's outcome.
//!
//! On a listener with `acme`, the resolver first asks `acme::State`: a ClientHello offering
//! ALPN `acme-tls/1` gets the TLS-ALPN-01 challenge certificate of its name (or none), any
//! other the issued certificate of its name; then the static certificates. A name with no
//! certificate yet and no static default fails the handshake (no placeholder is served).
//!
//! A config generation (`runtime::Runtime`) holds one `Acceptor` per TLS listener, built
//! from certificates read at load time; a reload (SIGHUP) re-reads them and swaps the whole
//! generation, so new connections get the new certificates while open ones keep theirs.
//! The session cache and ticket keys (`Resumption`) outlive reloads, so clients resume
//! their sessions across them.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::acme;
use crate::client_cert::ClientCert;
use crate::config::{AcmeChallenge, ClientAuth, ClientAuthMode, Tls, TlsVersion};

/// Sessions remembered for resumption by session ID (TLS 1.2) and stateful tickets.
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// Chooses a listener's certificate by the SNI name of the ClientHello: an ACME
/// certificate of the name, then an exact name, then a wildcard `*.rest` covering the
/// name's first label, then the default.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// With `acme`: its certificates and challenges, for the names it lists.
    acme: Option<(Arc<acme::State>, Vec<String>)>,
}

impl SniResolver {
    /// The resolver of `tls`. When two certificates claim one name, the first listed wins.
    pub fn new(tls: &Tls, acme: &Arc<acme::State>) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in &tls.certs {
            for name in &cert.names {
                let map = match name.strip_prefix("*.") {
                    Some(rest) => wildcard.entry(rest.to_string()),
                    None => exact.entry(name.clone()),
                };
                map.or_insert_with(|| cert.key.clone());
            }
        }
        SniResolver {
            exact,
            wildcard,
            default: tls.default_cert.as_ref().map(|c| c.key.clone()),
            acme: tls.acme.as_ref().map(|a| (acme.clone(), a.domains.clone())),
        }
    }

    /// The certificate served for `server_name` (`None`: the client sent no SNI); `None`
    /// when there is none for it (no default, and ACME has not issued one yet).
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some((acme, domains)) = &self.acme {
            if domains.contains(&name) {
                if let Some(key) = acme.cert(&name) {
                    return Some(key);
                }
            }
        }
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        // A wildcard covers exactly one label (RFC 6125 §6.4.3): *.example.com matches
        // a.example.com, not example.com nor a.b.example.com.
        if let Some((_, rest)) = name.split_once('.') {
            if let Some(key) = self.wildcard.get(rest) {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some((acme, domains)) = &self.acme {
            let challenge = hello
                .alpn()
                .is_some_and(|mut offered| offered.any(|p| p == acme::ALPN));
            if challenge {
                // TLS-ALPN-01 (RFC 8737 §3): only the challenge certificate, never another.
                let name = hello
                    .server_name()?
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                return domains
                    .contains(&name)
                    .then(|| acme.challenge_cert(&name))
                    .flatten();
            }
        }
        self.lookup(hello.server_name())
    }
}

/// Session resumption state of one listener, kept across reloads: the server-side session
/// cache and the (rotating) keys of stateless session tickets.
#[derive(Debug, Clone)]
pub struct Resumption {
    cache: Arc<dyn StoresServerSessions>,
    tickets: Arc<dyn ProducesTickets>,
}

impl Resumption {
    /// # Errors
    /// When the ticket keys cannot be generated (no system randomness).
    pub fn new() -> Result<Resumption, rustls::Error> {
        Ok(Resumption {
            cache: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            tickets: rustls::crypto::ring::Ticketer::new()?,
        })
    }
}

/// The TLS side of one listener in one config generation.
#[derive(Clone)]
pub struct Acceptor {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub resumption: Resumption,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Builds the rustls config of `tls`: ring's default cipher suites (AEAD only, forward
    /// secret), TLS 1.3 and, unless `min_version = "1.3"`, 1.2; ALPN `h2` then `http/1.1`;
    /// certificates by SNI (ACME's from `acme`, and `acme-tls/1` offered when its challenge
    /// is tls-alpn-01); resumption from `resumption`. With `client_ca`, client
    /// certificates are asked for and verified against it (webpki: chain, dates, client-auth
    /// usage); `client_auth = "optional"` also lets clients without one in.
    ///
    /// # Errors
    /// When rustls refuses the version set (it never should with these), or the client CA
    /// holds no usable trust anchor (`torii check` refuses such a file first).
    pub fn new(
        tls: &Tls,
        resumption: Resumption,
        acme: &Arc<acme::State>,
    ) -> Result<Acceptor, rustls::Error> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(crate::config::tls::provider())
            .with_protocol_versions(versions)?;
        let builder = match &tls.client_auth {
            None => builder.with_no_client_auth(),
            Some(auth) => builder.with_client_cert_verifier(client_verifier(auth)?),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(tls, acme)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if tls
            .acme
            .as_ref()
            .is_some_and(|a| a.challenge == AcmeChallenge::TlsAlpn01)
        {
            // Last: chosen only by a client that offers nothing else (the validator).
            config.alpn_protocols.push(acme::ALPN.to_vec());
        }
        config.session_storage = resumption.cache.clone();
        config.ticketer = resumption.tickets.clone();
        Ok(Acceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            resumption,
        })
    }
}

/// The verifier of a listener's client certificates.
fn client_verifier(
    auth: &ClientAuth,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(auth.ca.certs.iter().cloned());
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        crate::config::tls::provider(),
    );
    let builder = match auth.mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| rustls::Error::General(format!("client_ca: {e}")))
}

/// What a finished handshake agreed on, for `X-Forwarded-Proto`, the access log, metrics,
/// and (with mutual TLS) header rules and access lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: TlsVersion,
    /// ALPN chose `h2`.
    pub h2: bool,
    /// The client certificate, when the client presented one: on a `client_ca` listener,
    /// only a verified one gets this far. Shared with the header rules of each request;
    /// a pointer, since most connections have none.
    pub client_cert: Option<Arc<ClientCert>>,
}

impl TlsInfo {
    /// Reads the handshake's outcome, and parses the client's leaf certificate if any.
    pub fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        TlsInfo {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_2) => TlsVersion::Tls12,
                _ => TlsVersion::Tls13,
            },
            h2: conn.alpn_protocol() == Some(b"h2"),
            client_cert: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| Arc::new(ClientCert::parse(leaf))),
        }
    }

    /// Whether the client presented a certificate the listener's `client_ca` verified.
    pub fn client_verified(&self) -> bool {
        self.client_cert.is_some()
    }
}
