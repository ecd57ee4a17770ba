//! `cache.shared.tls`: the CA, client certificate and key, and server name for `rediss://`
//! URLs, read and checked as listener certificates are.

use std::path::Path;

use toml::Spanned;

use super::super::file;
use super::super::model::{RedisTarget, RedisTls};
use super::tls::resolve;
use super::Checker;

const PATH: &str = "cache.shared.tls";

pub(super) fn redis_tls(
    c: &mut Checker,
    section: Option<&Spanned<file::RedisTlsSection>>,
    url: &Spanned<String>,
    target: &RedisTarget,
    base: Option<&Path>,
) -> Option<RedisTls> {
    let tls_urls = target
        .urls()
        .iter()
        .filter(|u| u.starts_with("rediss://"))
        .count();
    if tls_urls > 0 && tls_urls < target.urls().len() {
        c.report(
            url.span(),
            "cache.shared.redis",
            "some URLs are rediss:// (TLS) and some are not",
        );
        c.hint("a cluster's nodes are all TLS or all plain: use rediss:// for every one");
    }
    let section = section?;
    if !target.is_tls() {
        c.report(
            section.span(),
            PATH,
            "TLS settings, but the Redis URL is not rediss://",
        );
        c.hint("write the URL as rediss://host:port, or remove cache.shared.tls");
        return None;
    }
    let s = section.get_ref();
    let ca = s.ca.as_ref().and_then(|v| {
        let file = resolve(base, v.get_ref());
        match super::super::tls::load_ca(&file).and_then(|_| read(&file)) {
            Ok(pem) => Some(pem),
            Err(why) => {
                c.report(v.span(), format!("{PATH}.ca"), why);
                c.hint("a PEM file with the CA certificate(s) that issued Redis's certificate");
                None
            }
        }
    });
    let client = match (&s.cert, &s.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let cert_file = resolve(base, cert.get_ref());
            let key_file = resolve(base, key.get_ref());
            match super::super::tls::load_cert(
                &cert_file,
                &key_file,
                None,
                std::time::SystemTime::now(),
            ) {
                Ok(_) => match (read(&cert_file), read(&key_file)) {
                    (Ok(cert), Ok(key)) => Some((cert, key)),
                    (Err(why), _) | (_, Err(why)) => {
                        c.report(cert.span(), format!("{PATH}.cert"), why);
                        None
                    }
                },
                Err(p) => {
                    let span = if p.key == "key" {
                        key.span()
                    } else {
                        cert.span()
                    };
                    c.report(span, format!("{PATH}.{}", p.key), p.message);
                    c.hint(p.hint);
                    None
                }
            }
        }
        _ => {
            c.report(
                section.span(),
                PATH,
                "a client certificate needs both cert and key",
            );
            c.hint("e.g. tls = { cert = \"client.pem\", key = \"client.key\" }");
            None
        }
    };
    if let Some(v) = &s.server_name {
        // redis-rs verifies the host it dials and has no hook to dial one name and verify
        // another (its connection manager and pub/sub take no resolver).
        c.report(
            v.span(),
            format!("{PATH}.server_name"),
            "server_name is not supported: Redis's certificate is verified against the URL's host",
        );
        c.hint(format!(
            "write the name in the URL (rediss://{}:6380) and let DNS or /etc/hosts resolve it",
            v.get_ref()
        ));
    }
    Some(RedisTls { ca, client })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
