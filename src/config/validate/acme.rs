//! Validation of `listeners[].tls.acme` (issue 20): domains, contact, directory URL,
//! challenge, storage and the directory's CA. Nothing here contacts the directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::super::file;
use super::super::model::*;
use super::Checker;

/// Let's Encrypt's production directory, used when `directory` is not given.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// One `[listeners.tls.acme]` table.
pub(super) fn acme(
    c: &mut Checker,
    section: &Spanned<file::AcmeSection>,
    path: &str,
    base: Option<&Path>,
) -> Option<Acme> {
    let s = section.get_ref();
    let mut ok = true;
    let mut domains = Vec::new();
    match &s.domains {
        None => {
            c.report(section.span(), format!("{path}.domains"), "missing domains");
            c.hint("e.g. domains = [\"example.com\", \"www.example.com\"]");
            ok = false;
        }
        Some(list) if list.is_empty() => {
            c.report(
                section.span(),
                format!("{path}.domains"),
                "domains is empty",
            );
            c.hint("name at least one domain, e.g. domains = [\"example.com\"]");
            ok = false;
        }
        Some(list) => {
            for d in list {
                let name = d
                    .get_ref()
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if name.starts_with("*.") {
                    c.report(
                        d.span(),
                        format!("{path}.domains"),
                        format!("{:?}: wildcard names need the dns-01 challenge, which torii does not answer", d.get_ref()),
                    );
                    c.hint("list each name (\"www.example.com\"), or use a static certificate for the wildcard");
                    ok = false;
                } else if !dns_name(&name) {
                    c.report(
                        d.span(),
                        format!("{path}.domains"),
                        format!("{:?} is not a DNS name", d.get_ref()),
                    );
                    c.hint("e.g. \"example.com\": letters, digits and '-', labels of 1 to 63, at least two labels");
                    ok = false;
                } else if domains.contains(&name) {
                    c.report(
                        d.span(),
                        format!("{path}.domains"),
                        format!("{name:?} is listed twice"),
                    );
                    c.hint("list each domain once");
                    ok = false;
                } else {
                    domains.push(name);
                }
            }
        }
    }
    let email = s.email.as_ref().and_then(|e| {
        let text = e.get_ref().trim().trim_start_matches("mailto:");
        if email(text) {
            Some(text.to_string())
        } else {
            c.report(
                e.span(),
                format!("{path}.email"),
                format!("{:?} is not an email address", e.get_ref()),
            );
            c.hint("e.g. email = \"ops@example.com\" (the CA writes to it about expiring certificates)");
            ok = false;
            None
        }
    });
    let directory = match &s.directory {
        None => LETS_ENCRYPT.to_string(),
        Some(d) => {
            let text = d.get_ref().trim();
            let uri = text.parse::<http::Uri>().ok();
            let https = uri
                .as_ref()
                .is_some_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
            if !https {
                c.report(
                    d.span(),
                    format!("{path}.directory"),
                    format!("{text:?} is not an https:// URL"),
                );
                c.hint(format!(
                    "the CA's directory URL, e.g. \"{LETS_ENCRYPT}\" (staging: \"https://acme-staging-v02.api.letsencrypt.org/directory\")"
                ));
                ok = false;
            }
            text.to_string()
        }
    };
    let challenge = match &s.challenge {
        None => AcmeChallenge::TlsAlpn01,
        Some(v) => match v.get_ref().trim() {
            "http-01" => AcmeChallenge::Http01,
            "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
            other => {
                c.report(
                    v.span(),
                    format!("{path}.challenge"),
                    format!("unknown challenge {other:?}"),
                );
                c.hint("use \"tls-alpn-01\" (default: answered on this TLS listener) or \"http-01\" (answered on a plain listener on port 80)");
                ok = false;
                AcmeChallenge::TlsAlpn01
            }
        },
    };
    let storage = match &s.storage {
        None => {
            c.report(section.span(), format!("{path}.storage"), "missing storage");
            c.hint("a directory for the account key and certificates, e.g. storage = \"/var/lib/torii/acme\"");
            ok = false;
            PathBuf::new()
        }
        Some(v) => {
            let dir = resolve(base, v.get_ref());
            if let Err(why) = storage_writable(&dir) {
                c.report(v.span(), format!("{path}.storage"), why);
                c.hint("a directory torii's user can write (it is created with mode 0700 if missing), e.g. \"/var/lib/torii/acme\"");
                ok = false;
            }
            dir
        }
    };
    let ca = s.ca.as_ref().and_then(|v| {
        let file = resolve(base, v.get_ref());
        match super::super::tls::load_ca(&file) {
            Ok(_) => Some(file),
            Err(why) => {
                c.report(v.span(), format!("{path}.ca"), why);
                c.hint("a PEM file with the CA certificate that issued the directory's HTTPS certificate (for a private CA such as pebble)");
                ok = false;
                None
            }
        }
    });
    let renew_before = s.renew_before.as_ref().map(|_| {
        c.duration(
            &s.renew_before,
            &format!("{path}.renew_before"),
            Duration::ZERO,
        )
    });
    let retry_backoff = c.duration(
        &s.retry_backoff,
        &format!("{path}.retry_backoff"),
        Duration::from_secs(60),
    );
    if let Some(v) = &s.retry_backoff {
        if retry_backoff.is_zero() {
            c.report(
                v.span(),
                format!("{path}.retry_backoff"),
                "retry_backoff must be more than 0",
            );
            c.hint("e.g. retry_backoff = \"1m\" (doubled after each failure, up to 6 h)");
            ok = false;
        }
    }
    ok.then_some(Acme {
        domains,
        email,
        directory,
        challenge,
        storage,
        ca,
        renew_before,
        retry_backoff,
    })
}

/// `http-01` is answered on a plain listener: there must be one.
pub(super) fn needs_plain_listener(
    c: &mut Checker,
    sections: &[Spanned<file::ListenerSection>],
    listeners: &[Listener],
) {
    if listeners.iter().any(|l| l.tls.is_none()) {
        return;
    }
    for (i, section) in sections.iter().enumerate() {
        let challenge = section
            .get_ref()
            .tls
            .as_ref()
            .and_then(|t| t.get_ref().acme.as_ref())
            .and_then(|a| a.get_ref().challenge.as_ref());
        if let Some(v) = challenge.filter(|v| v.get_ref().trim() == "http-01") {
            c.report(
                v.span(),
                format!("listeners[{i}].tls.acme.challenge"),
                "http-01 is answered on a plain listener, and there is none",
            );
            c.hint("add a [[listeners]] with addr = \"0.0.0.0:80\", or use challenge = \"tls-alpn-01\"");
        }
    }
}

/// `path` as written, or relative to `base` when it is relative (as `tls.rs` resolves its
/// files; not shared, so this file does not depend on the one that calls it).
fn resolve(base: Option<&Path>, path: &str) -> PathBuf {
    let p = Path::new(path);
    match base {
        Some(base) if p.is_relative() => base.join(p),
        _ => p.to_path_buf(),
    }
}

/// A DNS name an ACME CA can issue for: at least two labels of letters, digits and `-`.
fn dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `local@domain`, printable, no spaces, a DNS-looking domain.
fn email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'@' | b'<' | b'>' | b',' | b';' | b'"'))
        && dns_name(&domain.to_ascii_lowercase())
}

/// Whether torii could keep files in `dir`: it is a writable directory, or the nearest
/// existing ancestor is one (so it can be created). Checks permissions only; writes nothing.
fn storage_writable(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(meta) if meta.is_dir() => {
                return if writable(probe) {
                    Ok(())
                } else if probe == dir {
                    Err(format!("{} is not writable", dir.display()))
                } else {
                    Err(format!(
                        "{} does not exist, and {} is not writable to create it",
                        dir.display(),
                        probe.display()
                    ))
                };
            }
            Ok(_) => return Err(format!("{} is not a directory", probe.display())),
            // Missing, or under a file (ENOTDIR): look at the parent.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match probe.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(format!("cannot read {}: {e}", probe.display())),
        }
    }
}

/// Whether the mode bits of `dir` let this process write it (root always may). Who we are
/// is read from `/proc/self` (owned by the process's effective uid and gid), so no file is
/// written and no unsafe call is made; where `/proc` is missing, assume yes (the order task
/// then reports what fails).
fn writable(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Ok(meta)) = (std::fs::metadata("/proc/self"), std::fs::metadata(dir)) else {
        return true;
    };
    let mode = meta.mode();
    if me.uid() == 0 {
        true
    } else if meta.uid() == me.uid() {
        mode & 0o200 != 0
    } else if meta.gid() == me.gid() {
        mode & 0o020 != 0
    } else {
        mode & 0o002 != 0
    }
}
