//! A verified client certificate (mutual TLS), as header rules and access lists see it:
//! parsed once per connection, right after the handshake, never per request.

use std::fmt::Write as _;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The leaf certificate a client presented and the listener's `client_ca` verified.
/// Its fields are what the variables `{tls_client_subject}`, `{tls_client_san}` and
/// `{tls_client_fingerprint}` stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject distinguished name, RFC 4514 style (`CN=alice,O=Example`).
    pub subject: String,
    /// The subject alternative names, comma-separated as OpenSSL prints them
    /// (`DNS:a.example, email:alice@example.com, IP:192.0.2.1, URI:spiffe://…`).
    pub san: String,
    /// SHA-256 of the leaf's DER, lowercase hex (64 characters).
    pub fingerprint: String,
}

impl ClientCert {
    /// Reads `leaf`, which rustls has already verified. A certificate x509-parser cannot read
    /// (webpki accepted it, so it never should) keeps its fingerprint, with an empty subject
    /// and SAN list. Control characters in names are written as `?`: the values may go into
    /// header fields.
    pub fn parse(leaf: &CertificateDer<'_>) -> ClientCert {
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        let mut fingerprint = String::with_capacity(64);
        for b in digest.as_ref() {
            let _ = write!(fingerprint, "{b:02x}");
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
            return ClientCert {
                subject: String::new(),
                san: String::new(),
                fingerprint,
            };
        };
        let subject = clean(&cert.subject().to_string());
        let mut san = String::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                let text = match name {
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::RFC822Name(e) => format!("email:{e}"),
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => format!("IP:{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
                        16 => {
                            let octets: [u8; 16] = (*ip).try_into().unwrap_or([0; 16]);
                            format!("IP:{}", std::net::Ipv6Addr::from(octets))
                        }
                        _ => continue,
                    },
                    _ => continue,
                };
                if !san.is_empty() {
                    san.push_str(", ");
                }
                san.push_str(&clean(&text));
            }
        }
        ClientCert {
            subject,
            san,
            fingerprint,
        }
    }
}

fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_sans_and_fingerprint() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice\nx");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "alice@example.com".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([192, 0, 2, 1].into()));
        let cert = params.self_signed(&key).unwrap();
        let parsed = ClientCert::parse(cert.der());
        assert!(parsed.subject.contains("CN=alice?x"), "{}", parsed.subject);
        assert!(parsed.subject.contains("O=Example"), "{}", parsed.subject);
        assert_eq!(
            parsed.san,
            "DNS:a.example, email:alice@example.com, IP:192.0.2.1"
        );
        assert_eq!(parsed.fingerprint.len(), 64);
        let garbage = ClientCert::parse(&CertificateDer::from(vec![1, 2, 3]));
        assert!(garbage.subject.is_empty() && garbage.san.is_empty());
        assert_eq!(garbage.fingerprint.len(), 64);
    }
}
