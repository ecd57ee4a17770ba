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

use crate::config::Limits;
use crate::error::ProxyError;

/// Checks a request head. Time limits are enforced by the listener, body size while
/// streaming (`upstream::ReqBody`).
///
/// # Errors
/// `BadRequest` for a missing, repeated or conflicting Host, or both framing headers;
/// `BodyTooLarge` when `Content-Length` exceeds `limits.max_body`.
pub fn check_request<B>(req: &Request<B>, limits: &Limits) -> Result<(), ProxyError> {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    // The one transfer coding torii relays is a lone `chunked` (which it decodes and
    // re-frames): anything else, or a Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1),
    // can't be framed the same way by every recipient.
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
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
    let mut hosts = headers.get_all(header::HOST).iter();
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
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        // hyper has checked the syntax for HTTP/1; HTTP/2 lengths are checked here.
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
        if len > limits.max_body {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    Ok(())
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
        let l = Limits::default();
        assert!(check_request(&req(&[("host", "a")], "/"), &l).is_ok());
        assert!(matches!(
            check_request(&req(&[], "/"), &l),
            Err(ProxyError::BadRequest(_))
        ));
        assert!(check_request(&req(&[("host", "a"), ("host", "b")], "/"), &l).is_err());
        assert!(check_request(&req(&[("host", "a")], "http://b/x"), &l).is_err());
        assert!(check_request(&req(&[("host", "B:80")], "http://b:80/x"), &l).is_ok());
        assert!(check_request(&req(&[("host", "a b")], "/"), &l).is_err());
    }

    #[test]
    fn framing_and_size() {
        let l = Limits {
            max_body: 10,
            ..Limits::default()
        };
        assert!(check_request(
            &req(
                &[
                    ("host", "a"),
                    ("content-length", "3"),
                    ("transfer-encoding", "chunked")
                ],
                "/"
            ),
            &l
        )
        .is_err());
        assert!(matches!(
            check_request(&req(&[("host", "a"), ("content-length", "11")], "/"), &l),
            Err(ProxyError::BodyTooLarge)
        ));
        assert!(check_request(&req(&[("host", "a"), ("content-length", "10")], "/"), &l).is_ok());
        assert!(check_request(&req(&[("host", "a"), ("content-length", "x")], "/"), &l).is_err());
    }
}
