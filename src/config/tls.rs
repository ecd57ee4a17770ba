//! Certificates, keys and CA bundles read from PEM files, and checked the way `torii check`
//! promises: the files exist and parse, the key matches the certificate, and the certificate
//! is valid now.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::model::TlsCert;

/// The crypto provider torii uses everywhere (ring: no cmake, quick to build).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    // rustls 0.23.48 deprecates ring's provider for its lack of post-quantum key exchange
    // (its note: use aws-lc-rs); until torii moves, a lock update must not fail the lint.
    #[allow(deprecated)]
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// What is wrong with a certificate or key, said for `torii check`; `hint` says what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct CertProblem {
    /// Which of the two files: `cert` or `key`.
    pub key: &'static str,
    pub message: String,
    pub hint: &'static str,
}

fn problem(key: &'static str, message: String, hint: &'static str) -> CertProblem {
    CertProblem { key, message, hint }
}

fn read_error(path: &Path, e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read {}: {io}", path.display()),
        other => format!("{} is not valid PEM: {other:?}", path.display()),
    }
}

/// Reads a certificate chain (leaf first) and its private key, and checks them at `now`.
/// `names` overrides the names it is chosen for by SNI; by default they are the leaf's DNS
/// subject alternative names (or its common name when it has none).
///
/// # Errors
/// A missing or unreadable file, no certificate or key in it, an unsupported key, a key that
/// does not match the certificate, or a certificate not valid at `now` (expired or not yet).
pub fn load_cert(
    cert_path: &Path,
    key_path: &Path,
    names: Option<Vec<String>>,
    now: SystemTime,
) -> Result<TlsCert, CertProblem> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| {
            problem(
                "cert",
                read_error(cert_path, &e),
                "give the path of a PEM certificate chain (leaf first); relative paths start at the config file's directory",
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            problem(
                "cert",
                read_error(cert_path, &e),
                "the file must hold PEM blocks: -----BEGIN CERTIFICATE-----",
            )
        })?;
    if chain.is_empty() {
        return Err(problem(
            "cert",
            format!("{} holds no certificate", cert_path.display()),
            "the file must hold PEM blocks: -----BEGIN CERTIFICATE-----",
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        let message = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                format!("{} holds no private key", key_path.display())
            }
            e => read_error(key_path, &e),
        };
        problem(
            "key",
            message,
            "give the path of the PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate",
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        let message = match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                "{} does not match the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
            e => format!("{}: unusable private key: {e}", key_path.display()),
        };
        problem(
            "key",
            message,
            "use the key the certificate was issued for (compare `openssl x509 -pubkey` and `openssl pkey -pubout`)",
        )
    })?;

    let (_, leaf) = x509_parser::parse_x509_certificate(&certified.cert[0]).map_err(|e| {
        problem(
            "cert",
            format!("{}: cannot parse the certificate: {e}", cert_path.display()),
            "the first PEM block must be an X.509 certificate",
        )
    })?;
    let validity = leaf.validity();
    let not_before = to_system_time(validity.not_before.timestamp());
    let not_after = to_system_time(validity.not_after.timestamp());
    if now > not_after {
        return Err(problem(
            "cert",
            format!("{} expired on {}", cert_path.display(), validity.not_after),
            "renew the certificate (e.g. with certbot or your CA) and point cert at the new file",
        ));
    }
    if now < not_before {
        return Err(problem(
            "cert",
            format!(
                "{} is not valid before {}",
                cert_path.display(),
                validity.not_before
            ),
            "check the clock of this machine, or the certificate's dates",
        ));
    }
    let names = match names {
        Some(names) => names,
        None => leaf_names(&leaf),
    };
    Ok(TlsCert {
        cert_path: cert_path.to_path_buf(),
        names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        key: Arc::new(certified),
        not_after,
    })
}

/// The DNS names of a leaf certificate: its subject alternative names, or the common name.
fn leaf_names(leaf: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            leaf.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_string),
        );
    }
    names
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// Reads the CA certificates of a PEM file (for `tls_ca`).
///
/// # Errors
/// A missing or unreadable file, or one without certificates.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(path, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(path, &e))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, rejected) = roots.add_parsable_certificates(certs.iter().cloned());
    if rejected > 0 {
        return Err(format!(
            "{}: {rejected} certificate(s) cannot be used as a trust anchor",
            path.display()
        ));
    }
    Ok(certs)
}

/// Whether `name` (lowercase) is a DNS name or a `*.`-wildcard one that SNI can carry.
pub fn valid_sni_name(name: &str) -> bool {
    let base = name.strip_prefix("*.").unwrap_or(name);
    !base.is_empty()
        && base.len() <= 253
        && base.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
