//! Route rules: `headers.request` / `headers.response` (per route and in `[defaults]`),
//! `rewrite`, and the regex of `redirect`. Each value template, name and regex is checked
//! here, at FILE:LINE:COL.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use regex::bytes::Regex;
use toml::Spanned;

use super::super::file;
use super::super::rules::*;
use super::Checker;

/// Request and response rules of one `headers` table.
pub(super) type HeaderTables = (Vec<HeaderOp>, Vec<HeaderOp>);

/// Fields header rules may not touch: hop-by-hop and framing fields, and `Host`.
pub(super) const FORBIDDEN: [&str; 9] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

pub(super) fn headers(
    c: &mut Checker,
    section: Option<&file::HeadersSection>,
    path: &str,
) -> HeaderTables {
    let Some(s) = section else {
        return (Vec::new(), Vec::new());
    };
    let request = s
        .request
        .as_ref()
        .map(|t| table(c, t, &format!("{path}.headers.request")))
        .unwrap_or_default();
    let response = s
        .response
        .as_ref()
        .map(|t| table(c, t, &format!("{path}.headers.response")))
        .unwrap_or_default();
    (request, response)
}

/// One table key: its values, its name, the rule it makes.
type Kind<'a> = (
    &'a Option<file::HeaderValues>,
    &'static str,
    fn(HeaderName, Template) -> HeaderOp,
);

fn table(c: &mut Checker, t: &file::HeaderRulesSection, path: &str) -> Vec<HeaderOp> {
    let mut ops = Vec::new();
    for name in t.remove.iter().flatten() {
        if let Some(n) = field_name(c, name, &format!("{path}.remove")) {
            ops.push(HeaderOp::Remove(n));
        }
    }
    let kinds: [Kind; 3] = [
        (&t.set, "set", HeaderOp::Set),
        (&t.add, "add", HeaderOp::Add),
        (&t.set_if_absent, "set_if_absent", HeaderOp::SetIfAbsent),
    ];
    for (values, key, op) in kinds {
        let p = format!("{path}.{key}");
        for (name, value) in values.iter().flatten() {
            let n = field_name(c, name, &p);
            let v = template(c, value, &p);
            if let (Some(n), Some(v)) = (n, v) {
                ops.push(op(n, v));
            }
        }
    }
    ops
}

fn field_name(c: &mut Checker, name: &Spanned<String>, path: &str) -> Option<HeaderName> {
    let Ok(n) = HeaderName::from_bytes(name.get_ref().as_bytes()) else {
        c.report(
            name.span(),
            path,
            format!("{:?} is not a valid header name", name.get_ref()),
        );
        return None;
    };
    if FORBIDDEN.contains(&n.as_str()) {
        c.report(
            name.span(),
            path,
            format!(
                "{:?} is a hop-by-hop or framing field: header rules cannot change it",
                name.get_ref()
            ),
        );
        if n == http::header::HOST {
            c.hint("set the upstream Host with the route's host_header = \"…\"");
        } else {
            c.hint("torii writes Connection, Content-Length and Transfer-Encoding itself");
        }
        return None;
    }
    Some(n)
}

/// Parses `text {var} text`; `{{` and `}}` are literal braces. `{env.NAME}` is read now.
pub(super) fn template(c: &mut Checker, value: &Spanned<String>, path: &str) -> Option<Template> {
    match parse_template(value.get_ref()) {
        Ok(t) => Some(t),
        Err((why, hint)) => {
            c.report(value.span(), path, why);
            c.hint(hint);
            None
        }
    }
}

fn parse_template(text: &str) -> Result<Template, (String, String)> {
    let vars = || {
        let names: Vec<String> = Var::ALL.iter().map(|(n, _)| format!("{{{n}}}")).collect();
        format!(
            "variables are {}, {{env.NAME}}; write {{{{ for a literal {{",
            names.join(", ")
        )
    };
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            lit.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err((format!("unmatched }} in {text:?}"), vars()));
        }
        let Some(end) = tail.find('}') else {
            return Err((format!("unclosed {{ in {text:?}"), vars()));
        };
        let name = &tail[1..end];
        rest = &tail[end + 1..];
        if let Some(env) = name.strip_prefix("env.") {
            match std::env::var(env) {
                Ok(v) => lit.push_str(&v),
                Err(_) => {
                    return Err((
                        format!("environment variable {env:?} is not set (or not UTF-8)"),
                        format!("set {env} in torii's environment, or leave {{env.{env}}} out"),
                    ))
                }
            }
            continue;
        }
        let Some((_, var)) = Var::ALL.iter().find(|(n, _)| *n == name) else {
            return Err((format!("unknown variable {{{name}}}"), vars()));
        };
        if !lit.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut lit)));
        }
        pieces.push(Piece::Var(*var));
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        pieces.push(Piece::Text(lit));
    }
    for p in &pieces {
        if let Piece::Text(t) = p {
            if HeaderValue::from_str(t).is_err() {
                return Err((
                    format!("{t:?} is not a valid header value"),
                    "header values are visible ASCII, spaces and tabs (no CR, LF or NUL)".into(),
                ));
            }
        }
    }
    Ok(Template(pieces))
}

/// A regex (the `regex` crate: linear time, no look-around or backreferences).
pub(super) fn regex(c: &mut Checker, value: &Spanned<String>, path: &str) -> Option<Regex> {
    match Regex::new(value.get_ref()) {
        Ok(r) => Some(r),
        Err(e) => {
            let why = e.to_string();
            let first = why.lines().last().unwrap_or("invalid").trim().to_string();
            c.report(
                value.span(),
                path,
                format!("{:?} is not a valid regex: {first}", value.get_ref()),
            );
            c.hint("Rust `regex` syntax: no look-around or backreferences; captures are $1 or $${name} in `to` (${…} is an environment variable)");
            None
        }
    }
}

fn rewrite(
    c: &mut Checker,
    section: &Spanned<file::RewriteSection>,
    path: &str,
) -> Option<Rewrite> {
    let s = section.get_ref();
    let p = |k: &str| format!("{path}.rewrite.{k}");
    let given = [
        s.strip_prefix.is_some(),
        s.prefix.is_some(),
        s.regex.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 || (s.to.is_some() != s.regex.is_some()) {
        c.report(
            section.span(),
            format!("{path}.rewrite"),
            "a rewrite needs exactly one of strip_prefix, prefix, or regex with to",
        );
        c.hint("e.g. rewrite = { strip_prefix = \"/api\" } or rewrite = { regex = \"^/old/(.*)$\", to = \"/new/$1\" }");
        return None;
    }
    let path_like = |c: &mut Checker, v: &Spanned<String>, key: &str| {
        let t = v.get_ref();
        if t.starts_with('/') && t.parse::<http::uri::PathAndQuery>().is_ok() && !t.contains('?') {
            Some(t.clone())
        } else {
            c.report(v.span(), p(key), format!("{t:?} is not a path"));
            c.hint("a path starting with '/', without a query, e.g. \"/v2\"");
            None
        }
    };
    if let Some(v) = &s.strip_prefix {
        return path_like(c, v, "strip_prefix").map(Rewrite::StripPrefix);
    }
    if let Some(v) = &s.prefix {
        return path_like(c, v, "prefix")
            .map(|t| Rewrite::Prefix(t.trim_end_matches('/').to_string()));
    }
    let (Some(re), Some(to)) = (&s.regex, &s.to) else {
        return None;
    };
    let re = regex(c, re, &p("regex"))?;
    // `to` holds `$1` / `${name}`: the path it makes is checked once filled in (400 if bad).
    let t = to.get_ref();
    if !t.starts_with('/') || t.contains(['?', '#', ' ']) || HeaderValue::from_str(t).is_err() {
        c.report(to.span(), p("to"), format!("{t:?} is not a path"));
        c.hint("a path starting with '/', without a query, e.g. \"/new/$1\"");
        return None;
    }
    Some(Rewrite::Regex(re, t.clone()))
}

/// `server.trust_request_id` and `[tracing]`.
pub(super) fn identity(
    c: &mut Checker,
    trust: Option<&Spanned<bool>>,
    tracing: Option<&file::TracingSection>,
) -> super::super::Identity {
    let d = super::super::Identity::default();
    let sample = match tracing.and_then(|t| t.sample.as_ref()) {
        None => d.sample,
        Some(v) if (0.0..=1.0).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            c.report(
                v.span(),
                "tracing.sample",
                format!("{} is not a share from 0.0 to 1.0", v.get_ref()),
            );
            c.hint("e.g. sample = 0.01 marks one new trace in a hundred sampled");
            d.sample
        }
    };
    super::super::Identity {
        trust_request_id: trust.map_or(d.trust_request_id, |t| *t.get_ref()),
        trace_context: tracing.and_then(|t| t.enabled).unwrap_or(d.trace_context),
        sample,
    }
}

/// A route's rules: `defaults` first, then its own. `None` when it has none.
pub(super) fn route_rules(
    c: &mut Checker,
    defaults: &HeaderTables,
    s: &file::RouteSection,
    path: &str,
    keyed: &[HeaderName],
) -> Option<Arc<RouteRules>> {
    let (own_req, own_resp) = headers(c, s.headers.as_ref(), path);
    let rewrite = match &s.rewrite {
        Some(r) if s.upstream.is_none() => {
            c.report(
                r.span(),
                format!("{path}.rewrite"),
                "rewrite only applies to routes with an upstream",
            );
            None
        }
        Some(r) => rewrite(c, r, path),
        None => None,
    };
    let mut rules = RouteRules {
        request: defaults.0.iter().cloned().chain(own_req).collect(),
        response: defaults.1.iter().cloned().chain(own_resp).collect(),
        rewrite,
        keyed: false,
    };
    if s.upstream.is_none() {
        // No request goes anywhere: request rules have nothing to act on.
        rules.request.clear();
    }
    rules.keyed = rules
        .request
        .iter()
        .any(|op| keyed.contains(op.name()) || op.name() == http::header::COOKIE);
    (!rules.is_empty()).then(|| Arc::new(rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = parse_template("a{client_ip}-{{x}}{route}").unwrap();
        assert_eq!(
            t.0,
            vec![
                Piece::Text("a".into()),
                Piece::Var(Var::ClientIp),
                Piece::Text("-{x}".into()),
                Piece::Var(Var::Route),
            ]
        );
        assert!(parse_template("{nope}").is_err());
        assert!(parse_template("{host").is_err());
        assert!(parse_template("a}b").is_err());
        assert!(parse_template("{env.TORII_SURELY_UNSET_VAR}").is_err());
        std::env::set_var("TORII_RULES_T", "v1");
        assert_eq!(
            parse_template("x{env.TORII_RULES_T}").unwrap().0,
            vec![Piece::Text("xv1".into())]
        );
    }
}
