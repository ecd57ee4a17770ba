//! `routes[].compress`: codings, the smallest body compressed, the media types.

use std::sync::Arc;

use toml::Spanned;

use super::super::compress::{Coding, Compress};
use super::super::file;
use super::Checker;

/// What a route's `compress` starts from: `[defaults] compress`, or the built-in one.
pub(super) struct Base {
    settings: Arc<Compress>,
    enabled: bool,
}

/// `[defaults] compress`: checked once; every route's `compress` starts from it (a
/// route's own keys replace the ones they name).
pub(super) fn defaults(c: &mut Checker, section: Option<&Spanned<file::CompressSection>>) -> Base {
    let built_in = Base {
        settings: Arc::new(Compress::default()),
        enabled: true,
    };
    let Some(section) = section else {
        return built_in;
    };
    let (settings, enabled) = settings(c, section.get_ref(), "defaults", &built_in);
    Base {
        settings: Arc::new(settings),
        enabled,
    }
}

/// The route's compression: on by default (`compress = { enabled = false }` turns it off).
pub(super) fn compress(
    c: &mut Checker,
    section: Option<&Spanned<file::CompressSection>>,
    path: &str,
    base: &Base,
) -> Option<Arc<Compress>> {
    let Some(section) = section else {
        return base.enabled.then(|| base.settings.clone());
    };
    let (out, enabled) = settings(c, section.get_ref(), path, base);
    enabled.then(|| Arc::new(out))
}

fn settings(
    c: &mut Checker,
    s: &file::CompressSection,
    path: &str,
    base: &Base,
) -> (Compress, bool) {
    let d = &*base.settings;
    let p = |key: &str| format!("{path}.compress.{key}");
    let mut out = Compress {
        min_size: c.size(&s.min_size, &p("min_size"), d.min_size),
        ..d.clone()
    };
    if let Some(codings) = &s.codings {
        out.codings.clear();
        for token in codings.get_ref() {
            match Coding::from_token(token.get_ref().trim()) {
                Some(coding) if out.codings.contains(&coding) => {
                    c.report(
                        token.span(),
                        p("codings"),
                        format!("{:?} is listed twice", token.get_ref()),
                    );
                    c.hint("list each coding once, in the order torii prefers them");
                }
                Some(coding) => out.codings.push(coding),
                None => {
                    c.report(
                        token.span(),
                        p("codings"),
                        format!("unknown coding {:?}", token.get_ref()),
                    );
                    c.hint("torii compresses with \"zstd\", \"br\" and \"gzip\"");
                }
            }
        }
        if codings.get_ref().is_empty() {
            c.report(codings.span(), p("codings"), "no coding listed");
            c.hint("to turn compression off, use compress = { enabled = false }");
        }
    }
    if let Some(types) = &s.types {
        out.types.clear();
        for t in types.get_ref() {
            let text = t.get_ref().trim().to_ascii_lowercase();
            if valid_type(&text) {
                out.types.push(text);
            } else {
                c.report(
                    t.span(),
                    p("types"),
                    format!("{:?} is not a media type", t.get_ref()),
                );
                c.hint(
                    "use \"type/subtype\" or \"type/*\", e.g. \"text/*\" or \"application/json\"",
                );
            }
        }
        if types.get_ref().is_empty() {
            c.report(types.span(), p("types"), "no media type listed");
            c.hint("to turn compression off, use compress = { enabled = false }");
        }
    }
    (out, s.enabled.unwrap_or(base.enabled))
}

/// `type/subtype` or `type/*`, in token characters (RFC 9110 §8.3.1).
fn valid_type(text: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match text.split_once('/') {
        Some((ty, "*")) => token(ty),
        Some((ty, sub)) => token(ty) && token(sub),
        None => false,
    }
}
