//! Validation of the RFC 9111/9213 cache keys: `cache.targeted_fields` and, per route,
//! `cache.client_directives`, `cache.status_ttl` and `cache.vary_normalise`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::super::file;
use super::super::model::{Action, CachePolicy, Route};
use super::Checker;
use crate::cache::policy::StatusTtl;
use crate::config::units::parse_duration;

/// `cache.targeted_fields`: header names, in precedence order. `None` when not given
/// (the default, `["CDN-Cache-Control"]`, stays).
pub(super) fn targeted_fields(
    c: &mut Checker,
    section: Option<&file::CacheSection>,
) -> Option<Vec<HeaderName>> {
    let list = section?.targeted_fields.as_ref()?;
    let mut out: Vec<HeaderName> = Vec::new();
    for (i, name) in list.get_ref().iter().enumerate() {
        let path = format!("cache.targeted_fields[{i}]");
        let text = name.get_ref().trim();
        let Ok(parsed) = HeaderName::from_bytes(text.as_bytes()) else {
            c.report(
                name.span(),
                path,
                format!("{:?} is not a header field name", name.get_ref()),
            );
            c.hint("e.g. targeted_fields = [\"Torii-Cache-Control\", \"CDN-Cache-Control\"]");
            continue;
        };
        if matches!(parsed.as_str(), "cache-control" | "expires" | "pragma") {
            c.report(
                name.span(),
                path,
                format!("{text} is not a targeted field: it is always read, after them"),
            );
            c.hint("list only targeted fields (RFC 9213), e.g. \"CDN-Cache-Control\"");
            continue;
        }
        if out.contains(&parsed) {
            c.report(name.span(), path, format!("{text} is listed twice"));
            c.hint("list each field once, in precedence order");
            continue;
        }
        out.push(parsed);
    }
    Some(out)
}

/// Gives every caching route the `cache.targeted_fields` list, when one was given.
pub(super) fn apply_targeted_fields(routes: &mut [Route], fields: Option<Vec<HeaderName>>) {
    let Some(fields) = fields else { return };
    for route in routes {
        if let Action::Proxy {
            cache: Some(policy),
            ..
        } = &mut route.action
        {
            let policy = Arc::make_mut(policy);
            policy.store.targeted_fields = fields.clone();
            *policy = policy.clone().with_freshness_id();
        }
    }
}

/// `routes[].cache.client_directives`, `status_ttl` and `vary_normalise`, into `policy`
/// (before its `freshness_id` is computed).
pub(super) fn route_options(
    c: &mut Checker,
    s: &file::RouteCacheSection,
    path: &str,
    policy: &mut CachePolicy,
) {
    let p = |key: &str| format!("{path}.cache.{key}");
    if let Some(mode) = &s.client_directives {
        match mode.get_ref().as_str() {
            "honour" | "honor" => policy.ignore_client_directives = false,
            "ignore" => policy.ignore_client_directives = true,
            other => {
                c.report(
                    mode.span(),
                    p("client_directives"),
                    format!("unknown mode {other:?}"),
                );
                c.hint("use \"honour\" (default: RFC 9111) or \"ignore\" (shield the origin from reloads)");
            }
        }
    }
    if let Some(map) = &s.status_ttl {
        for (status, ttl) in map.get_ref() {
            let key = p(&format!("status_ttl.\"{}\"", status.get_ref()));
            let Some((from, to)) = status_range(status.get_ref()) else {
                c.report(
                    status.span(),
                    key,
                    format!("{:?} is not a status or a class", status.get_ref()),
                );
                c.hint("use a status from 200 to 599 (\"404\") or a class (\"4xx\", \"5xx\")");
                continue;
            };
            if (from, to) == (206, 206) || (from, to) == (304, 304) {
                c.report(
                    status.span(),
                    key,
                    format!("{} responses are never stored", status.get_ref()),
                );
                c.hint("206 and 304 are not complete responses; remove this entry");
                continue;
            }
            let d = match parse_duration(ttl.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    c.report(ttl.span(), key, "must be more than 0");
                    c.hint("e.g. \"5s\" or \"1m\"; leave the status out to not store it");
                    continue;
                }
                Err(why) => {
                    c.report(ttl.span(), key, why);
                    c.hint("durations look like \"250ms\", \"5s\", \"1m30s\"");
                    continue;
                }
            };
            policy.store.status_ttl.push(StatusTtl { from, to, ttl: d });
        }
    }
    if let Some(map) = &s.vary_normalise {
        for (name, values) in map.get_ref() {
            let key = p(&format!("vary_normalise.\"{}\"", name.get_ref()));
            let Ok(header) = HeaderName::from_bytes(name.get_ref().trim().as_bytes()) else {
                c.report(
                    name.span(),
                    key,
                    format!("{:?} is not a header field name", name.get_ref()),
                );
                c.hint("e.g. vary_normalise = { \"Accept-Language\" = [\"en\", \"de\", \"fr\"] }");
                continue;
            };
            if header == http::header::ACCEPT_ENCODING {
                c.report(
                    name.span(),
                    key,
                    "Accept-Encoding is always normalised (to br, zstd, gzip or identity)",
                );
                c.hint("remove this entry");
                continue;
            }
            if values.get_ref().is_empty() {
                c.report(values.span(), key, "empty list");
                c.hint("list the values to keep variants for, the fallback first, e.g. [\"en\", \"de\"]");
                continue;
            }
            let mut list: Vec<String> = Vec::new();
            for v in values.get_ref() {
                let text = v.get_ref().trim();
                let token_ok = !text.is_empty()
                    && text != "*"
                    && HeaderValue::from_str(text).is_ok()
                    && !text.contains([',', ';', ' ']);
                if !token_ok {
                    c.report(
                        v.span(),
                        key.clone(),
                        format!("{:?} is not a single value", v.get_ref()),
                    );
                    c.hint("one value per entry, without commas, weights or spaces, e.g. \"en\"");
                } else if list.iter().any(|l| l.eq_ignore_ascii_case(text)) {
                    c.report(v.span(), key.clone(), format!("{text:?} is listed twice"));
                    c.hint("list each value once");
                } else {
                    list.push(text.to_string());
                }
            }
            policy.vary.lists.push((header, list));
        }
    }
}

/// `"404"` is `(404, 404)`, `"5xx"` is `(500, 599)`; statuses from 200 to 599.
fn status_range(text: &str) -> Option<(u16, u16)> {
    let t = text.trim().to_ascii_lowercase();
    if let Some(class) = t.strip_suffix("xx") {
        let d: u16 = class.parse().ok().filter(|d| (2..=5).contains(d))?;
        return (class.len() == 1).then_some((d * 100, d * 100 + 99));
    }
    let code: u16 = t.parse().ok().filter(|c| (200..=599).contains(c))?;
    (t.len() == 3).then_some((code, code))
}
