//! Limits: request sanity checks (framing, Host, sizes) before anything is routed or sent,
//! per-route rate limits (`rate`) and the per-client-IP connection cap (`per_ip`).
//!
//! hyper already refuses, with 400 and a closed connection, heads larger than
//! `limits.max_header_bytes`, more fields than `limits.max_headers`, unequal repeated
//! `Content-Length`s, a `Transfer-Encoding` whose last coding is not `chunked`, and bad
//! chunk framing, and (with the patch in vendor/hyper) a request carrying both
//! `Content-Length` and `Transfer-Encoding`. What is forwarded is re-serialised by hyper's
//! client in one framing, so the upstream can never read it differently.

mod per_ip;
mod rate;

pub use per_ip::{IpGuard, PerIp};
pub use rate::RateLimiter;

use http::{header, HeaderMap, HeaderName, Request, Version};

use crate::error::ProxyError;
use crate::header_scan;

/// Checks a request head. Time limits are enforced by the listener, body size by
/// [`check_body_size`] once the route (and so its `max_body`) is known, then while
/// streaming (`upstream::ReqBody`).
///
/// # Errors
/// `BadRequest` for a missing, repeated or conflicting Host, or both framing headers.
pub fn check_request<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let headers = req.headers();
    if header_scan::has(headers, &header::TRANSFER_ENCODING)
        && header_scan::has(headers, &header::CONTENT_LENGTH)
    {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    // The one transfer coding torii relays is a lone `chunked` (which it decodes and
    // re-frames): anything else, or a Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1),
    // can't be framed the same way by every recipient.
    let mut codings = header_scan::all(headers, &header::TRANSFER_ENCODING);
    if let Some(coding) = codings.next() {
        if codings.next().is_some()
            || req.version() != Version::HTTP_11
            || !coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding other than a single chunked",
            ));
        }
    }
    let mut hosts = header_scan::all(headers, &header::HOST);
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let is_h1 = matches!(
        req.version(),
        Version::HTTP_11 | Version::HTTP_10 | Version::HTTP_09
    );
    if req.version() == Version::HTTP_11 && host.is_none() {
        return Err(ProxyError::BadRequest("missing Host header"));
    }
    if let Some(host) = host {
        if host.is_empty()
            || host
                .as_bytes()
                .iter()
                .any(|&b| b <= b' ' || b == b'/' || b == b'@' || b >= 0x7f)
        {
            return Err(ProxyError::BadRequest("invalid Host header"));
        }
        if is_h1 {
            if let Some(authority) = req.uri().authority() {
                if !authority
                    .as_str()
                    .as_bytes()
                    .eq_ignore_ascii_case(host.as_bytes())
                {
                    return Err(ProxyError::BadRequest("request target and Host disagree"));
                }
            }
        }
    }
    // Content-Length is read once, by `check_body_size`, once the route is known.
    Ok(())
}

/// The request's `Content-Length`, if it has one. hyper has checked the syntax for
/// HTTP/1; HTTP/2 lengths are checked here.
fn content_length<B>(req: &Request<B>) -> Result<Option<u64>, ProxyError> {
    let Some(len) = header_scan::first(req.headers(), &header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    len.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or(ProxyError::BadRequest("invalid Content-Length"))
}

/// Refuses, before reading it, a body whose `Content-Length` is over `max_body` (the
/// route's `limits.max_body`, else `[limits]`'s). A body without one is cut at the limit
/// while it streams (`upstream::ReqBody`).
///
/// # Errors
/// `BodyTooLarge` (413) over the limit; `BadRequest` for an invalid `Content-Length`.
pub fn check_body_size<B>(req: &Request<B>, max_body: u64) -> Result<(), ProxyError> {
    match content_length(req)? {
        Some(len) if len > max_body => Err(ProxyError::BodyTooLarge),
        _ => Ok(()),
    }
}

/// Drops the request header fields whose names hold `_` (unless
/// `limits.underscores_in_headers`): CGI and WSGI origins map `X_Forwarded_For` and
/// `X-Forwarded-For` onto one variable, so such a field could stand in for one torii sets.
/// Returns how many fields were dropped.
///
/// A request without `_` in any name costs one byte scan per name, nothing allocated.
pub fn drop_underscore_headers(headers: &mut HeaderMap) -> usize {
    if !headers
        .keys()
        .any(|name| name.as_str().as_bytes().contains(&b'_'))
    {
        return 0;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().as_bytes().contains(&b'_'))
        .cloned()
        .collect();
    let mut dropped = 0;
    for name in names {
        dropped += headers.get_all(&name).iter().count();
        headers.remove(&name);
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn underscore_names_are_dropped_with_each_value() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
        assert_eq!(drop_underscore_headers(&mut headers), 0);
        headers.append("x_forwarded_for", "10.0.0.1".parse().unwrap());
        headers.append("x_forwarded_for", "10.0.0.2".parse().unwrap());
        headers.append("_", "x".parse().unwrap());
        assert_eq!(drop_underscore_headers(&mut headers), 3);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1");
    }

    #[test]
    fn host_rules() {
        assert!(check_request(&req(&[("host", "a")], "/")).is_ok());
        assert!(matches!(
            check_request(&req(&[], "/")),
            Err(ProxyError::BadRequest(_))
        ));
        assert!(check_request(&req(&[("host", "a"), ("host", "b")], "/")).is_err());
        assert!(check_request(&req(&[("host", "a")], "http://b/x")).is_err());
        assert!(check_request(&req(&[("host", "B:80")], "http://b:80/x")).is_ok());
        assert!(check_request(&req(&[("host", "a b")], "/")).is_err());
    }

    #[test]
    fn framing_and_size() {
        assert!(check_request(&req(
            &[
                ("host", "a"),
                ("content-length", "3"),
                ("transfer-encoding", "chunked")
            ],
            "/"
        ))
        .is_err());
        assert!(matches!(
            check_body_size(&req(&[("host", "a"), ("content-length", "11")], "/"), 10),
            Err(ProxyError::BodyTooLarge)
        ));
        assert!(check_body_size(&req(&[("host", "a"), ("content-length", "10")], "/"), 10).is_ok());
        assert!(check_body_size(&req(&[("host", "a")], "/"), 0).is_ok());
        assert!(check_request(&req(&[("host", "a"), ("content-length", "11")], "/")).is_ok());
        assert!(check_body_size(&req(&[("host", "a"), ("content-length", "x")], "/"), 10).is_err());
    }
}
