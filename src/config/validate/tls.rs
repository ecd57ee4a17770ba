//! Validation of what issue 6 added: TLS listeners (`[[listeners]]`, certificates read and
//! checked), the https redirect, and the upstream `protocol` and `tls_*` keys.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::super::file;
use super::super::model::*;
use super::Checker;

/// `protocol`, and the `tls_*` keys of a group, checked against its servers' schemes.
pub(super) fn upstream_protocol(
    c: &mut Checker,
    s: &file::UpstreamSection,
    servers: &[ServerSpec],
    path: &str,
    base: Option<&Path>,
) -> (UpstreamProtocol, UpstreamTls) {
    let https = |spec: &ServerSpec| spec.addr.scheme == http::uri::Scheme::HTTPS;
    let protocol = match &s.protocol {
        None => UpstreamProtocol::H1,
        Some(v) => {
            let p = match v.get_ref().as_str() {
                "h1" | "http/1.1" => Some(UpstreamProtocol::H1),
                "h2" => Some(UpstreamProtocol::H2),
                "h2c" => Some(UpstreamProtocol::H2c),
                other => {
                    c.report(
                        v.span(),
                        format!("{path}.protocol"),
                        format!("unknown protocol {other:?}"),
                    );
                    c.hint("use \"h1\" (default), \"h2\" (HTTP/2 over TLS) or \"h2c\" (cleartext HTTP/2)");
                    None
                }
            };
            match p {
                Some(UpstreamProtocol::H2) if servers.iter().any(|s| !https(s)) => {
                    c.report(
                        v.span(),
                        format!("{path}.protocol"),
                        "\"h2\" is HTTP/2 over TLS, but the group has http:// servers",
                    );
                    c.hint("use https:// servers, or protocol = \"h2c\" for cleartext HTTP/2");
                }
                Some(UpstreamProtocol::H2c) if servers.iter().any(https) => {
                    c.report(
                        v.span(),
                        format!("{path}.protocol"),
                        "\"h2c\" is cleartext HTTP/2, but the group has https:// servers",
                    );
                    c.hint("use protocol = \"h2\" for HTTP/2 over TLS");
                }
                _ => {}
            }
            p.unwrap_or(UpstreamProtocol::H1)
        }
    };
    let any_https = servers.iter().any(https);
    let only_https = |c: &mut Checker, span: Range<usize>, key: &str| {
        if !any_https && !servers.is_empty() {
            c.report(
                span,
                format!("{path}.{key}"),
                format!("{key} only applies to https:// servers"),
            );
            c.hint("write the servers as \"https://host:port\", or remove the key");
        }
    };
    let ca = s.tls_ca.as_ref().and_then(|v| {
        only_https(c, v.span(), "tls_ca");
        let file = resolve(base, v.get_ref());
        match super::super::tls::load_ca(&file) {
            Ok(certs) => Some(CaBundle { path: file, certs }),
            Err(why) => {
                c.report(v.span(), format!("{path}.tls_ca"), why);
                c.hint(
                    "a PEM file with the CA certificate(s) that issued the servers' certificates",
                );
                None
            }
        }
    });
    let server_name = s.tls_server_name.as_ref().and_then(|v| {
        only_https(c, v.span(), "tls_server_name");
        let name = v.get_ref().trim().to_ascii_lowercase();
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_ok() && !name.is_empty() {
            Some(name)
        } else {
            c.report(
                v.span(),
                format!("{path}.tls_server_name"),
                format!("{:?} is not a DNS name or IP address", v.get_ref()),
            );
            c.hint("e.g. tls_server_name = \"api.internal.example.com\"");
            None
        }
    });
    let insecure_skip_verify = match &s.tls_insecure_skip_verify {
        Some(v) => {
            only_https(c, v.span(), "tls_insecure_skip_verify");
            if *v.get_ref() && s.tls_ca.is_some() {
                c.report(
                    v.span(),
                    format!("{path}.tls_insecure_skip_verify"),
                    "tls_insecure_skip_verify = true ignores tls_ca",
                );
                c.hint("keep one: tls_ca to verify against your CA, or skip verification for a test server");
            }
            *v.get_ref()
        }
        None => false,
    };
    (
        protocol,
        UpstreamTls {
            ca,
            server_name,
            insecure_skip_verify,
        },
    )
}

/// `path` as written, or relative to `base` when it is relative and `base` is given.
pub(super) fn resolve(base: Option<&Path>, path: &str) -> PathBuf {
    let p = Path::new(path);
    match base {
        Some(base) if p.is_relative() => base.join(p),
        _ => p.to_path_buf(),
    }
}

/// One `[[listeners]]` entry.
pub(super) fn listener(
    c: &mut Checker,
    section: &Spanned<file::ListenerSection>,
    path: &str,
    base: Option<&Path>,
) -> Option<Listener> {
    let s = section.get_ref();
    let Some(addr_value) = &s.addr else {
        c.report(section.span(), path, "missing addr");
        c.hint("e.g. addr = \"0.0.0.0:443\"");
        return None;
    };
    let addr = c.socket_addr(addr_value, &format!("{path}.addr"));
    let tls = s
        .tls
        .as_ref()
        .and_then(|t| tls(c, t, &format!("{path}.tls"), base))
        .map(Arc::new);
    let redirect_https = match &s.redirect_https {
        Some(v) if *v.get_ref() => {
            if s.tls.is_some() {
                c.report(
                    v.span(),
                    format!("{path}.redirect_https"),
                    "a TLS listener cannot redirect to https (it would redirect to itself)",
                );
                c.hint("put redirect_https = true on the plain listener (port 80)");
            }
            let port = match &s.https_port {
                None => 443,
                Some(p) => match u16::try_from(*p.get_ref()) {
                    Ok(port) if port > 0 => port,
                    _ => {
                        c.report(
                            p.span(),
                            format!("{path}.https_port"),
                            format!("{} is not a port", p.get_ref()),
                        );
                        c.hint("use a port from 1 to 65535");
                        443
                    }
                },
            };
            Some(port)
        }
        _ => {
            if let Some(p) = &s.https_port {
                c.report(
                    p.span(),
                    format!("{path}.https_port"),
                    "https_port only applies with redirect_https = true",
                );
                c.hint("add redirect_https = true, or remove https_port");
            }
            None
        }
    };
    Some(Listener {
        addr: addr?,
        tls,
        redirect_https,
        proxy_protocol: super::identity::proxy_protocol(c, s, path),
    })
}

/// `[listeners.tls]`: reads every certificate and key it names.
fn tls(
    c: &mut Checker,
    section: &Spanned<file::TlsSection>,
    path: &str,
    base: Option<&Path>,
) -> Option<Tls> {
    let s = section.get_ref();
    let now = std::time::SystemTime::now();
    let min_version = match &s.min_version {
        None => TlsVersion::Tls12,
        Some(v) => match v.get_ref().trim().trim_start_matches("TLSv") {
            "1.2" => TlsVersion::Tls12,
            "1.3" => TlsVersion::Tls13,
            other => {
                c.report(
                    v.span(),
                    format!("{path}.min_version"),
                    format!("unsupported TLS version {other:?}"),
                );
                c.hint("use \"1.2\" (default) or \"1.3\"; older versions are unsafe");
                TlsVersion::Tls12
            }
        },
    };
    let acme = s
        .acme
        .as_ref()
        .and_then(|a| super::acme::acme(c, a, &format!("{path}.acme"), base));
    // With `acme`, the static pair is optional: without it, a handshake for a name that
    // has no certificate (yet) fails.
    let default_cert = if s.acme.is_some() && s.cert.is_none() && s.key.is_none() {
        None
    } else {
        Some(cert_pair(
            c,
            &s.cert,
            &s.key,
            None,
            section.span(),
            path,
            base,
            now,
        )?)
    };
    let mut certs = Vec::new();
    for (i, entry) in s.certs.iter().flatten().enumerate() {
        let e = entry.get_ref();
        let entry_path = format!("{path}.certs[{i}]");
        let names = e.names.as_ref().map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    let name = n.get_ref().trim().to_ascii_lowercase();
                    if super::super::tls::valid_sni_name(&name) {
                        Some(name)
                    } else {
                        c.report(
                            n.span(),
                            format!("{entry_path}.names"),
                            format!("{:?} is not a DNS name", n.get_ref()),
                        );
                        c.hint("e.g. \"api.example.com\" or \"*.example.com\"");
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        if let Some(cert) = cert_pair(
            c,
            &e.cert,
            &e.key,
            names,
            entry.span(),
            &entry_path,
            base,
            now,
        ) {
            if cert.names.is_empty() {
                c.report(
                    entry.span(),
                    &entry_path,
                    "the certificate names no DNS name to choose it by",
                );
                c.hint("add names = [\"example.com\"]");
            }
            certs.push(cert);
        }
    }
    let client_auth = client_auth(c, s, path, base);
    Some(Tls {
        default_cert,
        certs,
        min_version,
        client_auth,
        acme,
    })
}

/// `client_ca` (read and checked) and `client_auth`: mutual TLS.
fn client_auth(
    c: &mut Checker,
    s: &file::TlsSection,
    path: &str,
    base: Option<&Path>,
) -> Option<ClientAuth> {
    let mode = match &s.client_auth {
        None => ClientAuthMode::Required,
        Some(v) => {
            let mode = match v.get_ref().as_str() {
                "required" => ClientAuthMode::Required,
                "optional" => ClientAuthMode::Optional,
                other => {
                    c.report(
                        v.span(),
                        format!("{path}.client_auth"),
                        format!("unknown client_auth {other:?}"),
                    );
                    c.hint("use \"required\" (default: no verified certificate, no handshake) or \"optional\" (routes decide)");
                    ClientAuthMode::Required
                }
            };
            if s.client_ca.is_none() {
                c.report(
                    v.span(),
                    format!("{path}.client_auth"),
                    "client_auth without client_ca: there is nothing to verify client certificates against",
                );
                c.hint("add client_ca = \"clients-ca.pem\" (the CA that issued the client certificates)");
            }
            mode
        }
    };
    let v = s.client_ca.as_ref()?;
    let file = resolve(base, v.get_ref());
    match super::super::tls::load_ca(&file) {
        Ok(certs) => Some(ClientAuth {
            ca: CaBundle { path: file, certs },
            mode,
        }),
        Err(why) => {
            c.report(v.span(), format!("{path}.client_ca"), why);
            c.hint("a PEM file with the CA certificate(s) that issued the client certificates; relative paths start at the config file's directory");
            None
        }
    }
}

/// A `cert` + `key` pair, read and checked.
#[allow(clippy::too_many_arguments)]
fn cert_pair(
    c: &mut Checker,
    cert: &Option<Spanned<String>>,
    key: &Option<Spanned<String>>,
    names: Option<Vec<String>>,
    span: Range<usize>,
    path: &str,
    base: Option<&Path>,
    now: std::time::SystemTime,
) -> Option<TlsCert> {
    let (Some(cert), Some(key)) = (cert, key) else {
        c.report(span, path, "needs both cert and key");
        c.hint("e.g. cert = \"/etc/torii/example.com.pem\", key = \"/etc/torii/example.com.key\"");
        return None;
    };
    let cert_file = resolve(base, cert.get_ref());
    let key_file = resolve(base, key.get_ref());
    match super::super::tls::load_cert(&cert_file, &key_file, names, now) {
        Ok(loaded) => Some(loaded),
        Err(p) => {
            let span = if p.key == "key" {
                key.span()
            } else {
                cert.span()
            };
            c.report(span, format!("{path}.{}", p.key), p.message);
            c.hint(p.hint);
            None
        }
    }
}
