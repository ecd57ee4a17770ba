//! `routes[].compress`: codings, the smallest body compressed, the media types.

use std::sync::Arc;

use toml::Spanned;

use super::super::compress::{Coding, Compress};
use super::super::file;
use super::Checker;

/// The route's compression: on by default (`compress = { enabled = false }` turns it off).
pub(super) fn compress(
    c: &mut Checker,
    section: Option<&Spanned<file::CompressSection>>,
    path: &str,
) -> Option<Arc<Compress>> {
    let d = Compress::default();
    let Some(section) = section else {
        return Some(Arc::new(d));
    };
    let s = section.get_ref();
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
    s.enabled.unwrap_or(true).then(|| Arc::new(out))
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
