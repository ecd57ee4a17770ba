//! `[[routes]]`: host and path matching, the action (proxy, respond, redirect) and its
//! settings, rate limits, per-route cache settings.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use toml::Spanned;

use super::super::file;
use super::super::model::*;
use super::Checker;

pub(super) fn rate_limit(
    c: &mut Checker,
    section: &Spanned<file::RateLimitSection>,
    path: &str,
) -> Option<RateLimit> {
    let s = section.get_ref();
    let p = |k: &str| format!("{path}.rate_limit.{k}");
    let rps = match &s.rps {
        None => {
            c.report(section.span(), format!("{path}.rate_limit"), "missing rps");
            c.hint("e.g. rate_limit = { rps = 10, burst = 20 }");
            return None;
        }
        Some(v) if *v.get_ref() > 0.0 && v.get_ref().is_finite() => *v.get_ref(),
        Some(v) => {
            c.report(
                v.span(),
                p("rps"),
                format!("{} is not a positive rate", v.get_ref()),
            );
            c.hint("requests per second, e.g. 10 or 0.5");
            return None;
        }
    };
    let default_burst = rps.ceil().max(1.0) as usize;
    let burst = c.count(&s.burst, &p("burst"), 1..1_000_001, default_burst) as u32;
    let key = match &s.key {
        None => RateKey::ClientIp,
        Some(k) if k.get_ref() == "client-ip" => RateKey::ClientIp,
        Some(k) => match k
            .get_ref()
            .strip_prefix("header:")
            .and_then(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        {
            Some(name) => RateKey::Header(name),
            None => {
                c.report(k.span(), p("key"), format!("unknown key {:?}", k.get_ref()));
                c.hint("use \"client-ip\" (default) or \"header:NAME\"");
                RateKey::ClientIp
            }
        },
    };
    Some(RateLimit { rps, burst, key })
}

pub(super) fn route(
    c: &mut Checker,
    spanned: &Spanned<file::RouteSection>,
    path: &str,
    id: RouteId,
    upstreams: &BTreeMap<UpstreamName, Upstream>,
    caching: bool,
    defaults: &super::Defaults,
) -> Option<Route> {
    let s = spanned.get_ref();
    let host = match &s.host {
        None => HostMatch::Any,
        Some(h) => {
            let text = h.get_ref().trim().to_ascii_lowercase();
            if let Some(suffix) = text.strip_prefix("*.") {
                if valid_hostname(suffix) {
                    HostMatch::Wildcard(format!(".{suffix}"))
                } else {
                    c.report(
                        h.span(),
                        format!("{path}.host"),
                        format!("{:?} is not a valid host name", h.get_ref()),
                    );
                    c.hint("use \"example.com\" or \"*.example.com\"");
                    HostMatch::Any
                }
            } else if text == "*" {
                HostMatch::Any
            } else if valid_hostname(&text) {
                HostMatch::Exact(text)
            } else {
                c.report(
                    h.span(),
                    format!("{path}.host"),
                    format!("{:?} is not a valid host name", h.get_ref()),
                );
                c.hint("use \"example.com\" or \"*.example.com\" (no port, no scheme)");
                HostMatch::Any
            }
        }
    };
    let route_path = match &s.path {
        None => "/".to_string(),
        Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#', ' ']) => {
            p.get_ref().clone()
        }
        Some(p) => {
            c.report(
                p.span(),
                format!("{path}.path"),
                format!("{:?} is not a path prefix", p.get_ref()),
            );
            c.hint("path prefixes start with '/' and hold no query, e.g. \"/api/\"");
            "/".to_string()
        }
    };

    let actions = [
        s.upstream.is_some(),
        s.respond.is_some(),
        s.redirect.is_some(),
    ];
    if actions.iter().filter(|&&a| a).count() != 1 {
        c.report(
            spanned.span(),
            path,
            "a route needs exactly one of upstream, respond, redirect",
        );
        c.hint("e.g. upstream = \"app\", or [routes.respond] status = 200, or [routes.redirect] to = \"https://…\"");
        return None;
    }
    let host_header = match &s.host_header {
        None => None,
        Some(h) => match HeaderValue::from_str(h.get_ref()) {
            Ok(v) if !h.get_ref().is_empty() => Some(v),
            _ => {
                c.report(
                    h.span(),
                    format!("{path}.host_header"),
                    format!("{:?} is not a valid Host value", h.get_ref()),
                );
                None
            }
        },
    };
    if s.host_header.is_some() && s.upstream.is_none() {
        if let Some(h) = &s.host_header {
            c.report(
                h.span(),
                format!("{path}.host_header"),
                "host_header only applies to routes with an upstream",
            );
        }
    }

    let action = if let Some(name) = &s.upstream {
        let key = UpstreamName(name.get_ref().clone());
        if !upstreams.contains_key(&key) {
            c.report(
                name.span(),
                format!("{path}.upstream"),
                format!("unknown upstream {:?}", name.get_ref()),
            );
            let defined: Vec<&str> = upstreams.keys().map(|k| k.0.as_str()).collect();
            if defined.is_empty() {
                c.hint("define one with [upstreams.<name>] servers = [\"127.0.0.1:3000\"]");
            } else {
                c.hint(format!("defined are {}", defined.join(", ")));
            }
            return None;
        }
        let mut cache = route_cache(c, s.cache.as_ref(), path, caching);
        let compress = super::compress::compress(c, s.compress.as_ref(), path, &defaults.compress);
        if let (Some(policy), Some(_)) = (&mut cache, &compress) {
            // torii makes the codings itself: the origin is asked for identity, and one
            // stored object serves every client (README, "Compression").
            Arc::make_mut(policy).vary.identity_upstream = true;
        }
        Action::Proxy {
            upstream: key,
            host_header,
            cache,
            compress,
        }
    } else if let Some(respond) = &s.respond {
        if let Some(compress) = &s.compress {
            c.report(
                compress.span(),
                format!("{path}.compress"),
                "compress only applies to routes with an upstream",
            );
        }
        let r = respond.get_ref();
        let status = status(
            c,
            &r.status,
            &format!("{path}.respond.status"),
            StatusCode::OK,
            200..600,
        );
        let mut headers = HeaderMap::new();
        for (name, value) in &r.headers {
            let n = HeaderName::from_bytes(name.get_ref().as_bytes());
            let v = HeaderValue::from_str(value.get_ref());
            match (n, v) {
                (Ok(n), Ok(v)) => {
                    headers.append(n, v);
                }
                (Err(_), _) => c.report(
                    name.span(),
                    format!("{path}.respond.headers"),
                    format!("{:?} is not a valid header name", name.get_ref()),
                ),
                (_, Err(_)) => c.report(
                    value.span(),
                    format!("{path}.respond.headers"),
                    format!("{:?} is not a valid header value", value.get_ref()),
                ),
            }
        }
        Action::Respond {
            status,
            headers,
            body: Bytes::from(r.body.clone().unwrap_or_default()),
        }
    } else if let Some(redirect) = &s.redirect {
        let r = redirect.get_ref();
        let regex = r
            .regex
            .as_ref()
            .and_then(|re| super::rules::regex(c, re, &format!("{path}.redirect.regex")));
        let to = match &r.to {
            // With a regex, `to` holds `$1` / `${name}`: checked once filled in.
            Some(to)
                if (regex.is_some() || to.get_ref().parse::<http::Uri>().is_ok())
                    && HeaderValue::from_str(to.get_ref()).is_ok() =>
            {
                to.get_ref().clone()
            }
            Some(to) => {
                c.report(
                    to.span(),
                    format!("{path}.redirect.to"),
                    format!("{:?} is not a valid URL", to.get_ref()),
                );
                return None;
            }
            None => {
                c.report(redirect.span(), format!("{path}.redirect"), "missing `to`");
                c.hint("e.g. to = \"https://example.com\"");
                return None;
            }
        };
        let status = status(
            c,
            &r.status,
            &format!("{path}.redirect.status"),
            StatusCode::MOVED_PERMANENTLY,
            300..400,
        );
        Action::Redirect {
            status,
            to,
            keep_path: r.keep_path.unwrap_or(true),
            regex,
        }
    } else {
        return None;
    };
    let rate_limit = s.rate_limit.as_ref().and_then(|r| rate_limit(c, r, path));
    let keyed = match &action {
        Action::Proxy {
            cache: Some(policy),
            ..
        } => &policy.key.headers[..],
        _ => &[],
    };
    let rules = super::rules::route_rules(c, &defaults.headers, s, path, keyed);
    Some(Route {
        id,
        host,
        path: route_path,
        action,
        rate_limit,
        rules,
        access: super::identity::access(c, s, path),
        // Set by `validate_in` (`auth::route_auth`), which has the config's directory.
        auth: None,
        limits: route_limits(c, s, path),
    })
}

/// `routes[].limits` (default: `[limits]`'s).
fn route_limits(c: &mut Checker, s: &file::RouteSection, path: &str) -> RouteLimits {
    let Some(section) = &s.limits else {
        return RouteLimits::default();
    };
    let l = section.get_ref();
    let max_body = l
        .max_body
        .as_ref()
        .map(|_| c.size(&l.max_body, &format!("{path}.limits.max_body"), 0));
    let body_timeout = l.body_timeout.as_ref().map(|_| {
        // (Not zero when the value is wrong: that is reported once, as such.)
        c.duration(
            &l.body_timeout,
            &format!("{path}.limits.body_timeout"),
            Duration::from_secs(1),
        )
    });
    if let (Some(v), Some(Duration::ZERO)) = (&l.body_timeout, body_timeout) {
        c.report(
            v.span(),
            format!("{path}.limits.body_timeout"),
            "a body timeout of 0 would cut every request body at once",
        );
        c.hint("e.g. body_timeout = \"5s\"; leave it out to use limits.body_timeout");
    }
    RouteLimits {
        max_body,
        body_timeout,
    }
}

pub(super) fn status(
    c: &mut Checker,
    value: &Option<Spanned<i64>>,
    path: &str,
    default: StatusCode,
    range: Range<i64>,
) -> StatusCode {
    let Some(v) = value else { return default };
    let n = *v.get_ref();
    match u16::try_from(n)
        .ok()
        .and_then(|n| StatusCode::from_u16(n).ok())
    {
        Some(s) if range.contains(&n) => s,
        _ => {
            c.report(v.span(), path, format!("{n} is not a valid status here"));
            c.hint(format!(
                "use a status from {} to {}",
                range.start,
                range.end - 1
            ));
            default
        }
    }
}

pub(super) fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

pub(super) fn route_cache(
    c: &mut Checker,
    section: Option<&Spanned<file::RouteCacheSection>>,
    path: &str,
    caching: bool,
) -> Option<Arc<CachePolicy>> {
    let d = CachePolicy::default();
    let Some(section) = section else {
        return caching.then(|| Arc::new(d));
    };
    let s = section.get_ref();
    let p = |key: &str| format!("{path}.cache.{key}");
    let opt_duration = |c: &mut Checker, v: &Option<Spanned<String>>, key: &str| {
        v.as_ref().map(|_| c.duration(v, &p(key), Duration::ZERO))
    };
    let mut store = d.store.clone();
    store.default_ttl = opt_duration(c, &s.default_ttl, "default_ttl");
    store.forced_ttl = opt_duration(c, &s.forced_ttl, "forced_ttl");
    store.ignore_no_cache_private = s.ignore_no_cache.unwrap_or(false);
    store.allow_set_cookie = s.allow_set_cookie.unwrap_or(false);
    let mut key = d.key.clone();
    if let Some(k) = &s.key {
        key.include_host = k.host.unwrap_or(true);
        if let Some(q) = &k.query {
            match q.get_ref().as_str() {
                "sorted" => {}
                "as-is" => key.sort_query = false,
                "ignore" => key.include_query = false,
                other => {
                    c.report(
                        q.span(),
                        p("key.query"),
                        format!("unknown query mode {other:?}"),
                    );
                    c.hint("use \"sorted\" (default), \"as-is\" or \"ignore\"");
                }
            }
        }
        key.drop_query_params = k.drop_params.clone().unwrap_or_default();
        for h in k.headers.iter().flatten() {
            match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => key.headers.push(name),
                Err(_) => c.report(
                    h.span(),
                    p("key.headers"),
                    format!("{:?} is not a header name", h.get_ref()),
                ),
            }
        }
        key.cookies = k.cookies.clone().unwrap_or_default();
    }
    let mut policy = CachePolicy {
        store,
        key,
        max_object_size: c.size(&s.max_object_size, &p("max_object_size"), d.max_object_size),
        range_fill_max: super::range::range_fill_max(c, s, path, d.range_fill_max),
        grace: c.duration(&s.grace, &p("grace"), d.grace),
        stale_if_error: c.duration(&s.stale_if_error, &p("stale_if_error"), d.stale_if_error),
        keep: c.duration(&s.keep, &p("keep"), d.keep),
        hit_for_miss: c.duration(&s.hit_for_miss, &p("hit_for_miss"), d.hit_for_miss),
        refresh_ahead: s.refresh_ahead.unwrap_or(d.refresh_ahead),
        ..d
    };
    super::cache_rfc::route_options(c, s, path, &mut policy);
    let policy = policy.with_freshness_id();
    (caching && s.enabled.unwrap_or(true)).then(|| Arc::new(policy))
}
