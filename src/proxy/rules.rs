//! Route rules at request time: header rules (`headers.request` on the request sent
//! upstream, `headers.response` on every answer), path rewrites, redirect captures.
//!
//! Paths are matched as received: the raw, percent-encoded bytes of the request target's
//! path (no decoding, no normalisation), so `%2F` is not `/` and any byte sequence matches
//! the same way every time. Only a route with rules gets here: a route without any costs
//! the request path one `Option` check.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Response};
use regex::bytes::Regex;

use crate::body::{Head, RespBody};
use crate::client_cert::ClientCert;
use crate::config::rules::{HeaderOp, Piece, Rewrite, Template, Var};
use crate::observe::metrics::HEADER_RULE_DROPS;

/// What the `{variables}` of a route's header rules stand for in one exchange.
#[derive(Debug, Clone)]
pub struct Vars {
    pub client_ip: IpAddr,
    pub host: String,
    pub scheme: &'static str,
    pub method: Method,
    /// The client's path and query, before any rewrite.
    pub path_and_query: Option<PathAndQuery>,
    pub request_id: String,
    pub route: usize,
    /// The route's upstream group (empty on routes without one).
    pub upstream: String,
    /// The connection's verified client certificate (mutual TLS), parsed at its handshake.
    pub client_cert: Option<Arc<ClientCert>>,
}

impl Vars {
    fn push(&self, var: Var, out: &mut String) {
        match var {
            Var::ClientIp => super::push_ip(out, self.client_ip),
            Var::Host => out.push_str(&self.host),
            Var::Scheme => out.push_str(self.scheme),
            Var::Method => out.push_str(self.method.as_str()),
            Var::Path => out.push_str(self.path_and_query.as_ref().map_or("/", |pq| pq.path())),
            Var::Query => out.push_str(
                self.path_and_query
                    .as_ref()
                    .and_then(|pq| pq.query())
                    .unwrap_or(""),
            ),
            Var::RequestId => out.push_str(&self.request_id),
            Var::Route => {
                use std::fmt::Write;
                let _ = write!(out, "{}", self.route);
            }
            Var::Upstream => out.push_str(&self.upstream),
            Var::TlsClientSubject => out.push_str(self.cert_field(|c| &c.subject)),
            Var::TlsClientSan => out.push_str(self.cert_field(|c| &c.san)),
            Var::TlsClientFingerprint => out.push_str(self.cert_field(|c| &c.fingerprint)),
            Var::TlsClientVerified => out.push_str(if self.client_cert.is_some() {
                "true"
            } else {
                "false"
            }),
        }
    }

    fn cert_field(&self, field: impl Fn(&ClientCert) -> &String) -> &str {
        self.client_cert
            .as_deref()
            .map_or("", |c| field(c).as_str())
    }

    /// The template filled in; `None` (counted) when the result is not a valid field
    /// value: CR, LF, NUL or another control character came in through a variable.
    pub fn expand(&self, template: &Template) -> Option<HeaderValue> {
        if let [Piece::Text(t)] = &template.0[..] {
            return HeaderValue::from_str(t).ok();
        }
        let mut out = String::new();
        for piece in &template.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => self.push(*v, &mut out),
            }
        }
        match HeaderValue::from_maybe_shared(Bytes::from(out)) {
            Ok(v) => Some(v),
            Err(_) => {
                HEADER_RULE_DROPS.fetch_add(1, Relaxed);
                tracing::warn!("header rule value dropped: not a valid field value once filled in");
                None
            }
        }
    }
}

/// Applies `ops` to `headers`, in order. A value that is invalid once filled in is dropped
/// (its rule does nothing) and counted in `torii_header_rule_drops_total`.
pub fn apply(ops: &[HeaderOp], headers: &mut HeaderMap, vars: &Vars) {
    for op in ops {
        match op {
            HeaderOp::Remove(name) => {
                headers.remove(name);
            }
            HeaderOp::Set(name, t) => {
                if let Some(v) = vars.expand(t) {
                    headers.insert(name.clone(), v);
                }
            }
            HeaderOp::Add(name, t) => {
                if let Some(v) = vars.expand(t) {
                    headers.append(name.clone(), v);
                }
            }
            HeaderOp::SetIfAbsent(name, t) => {
                if !headers.contains_key(name) {
                    if let Some(v) = vars.expand(t) {
                        headers.insert(name.clone(), v);
                    }
                }
            }
        }
    }
}

/// Response rules on an answer. HTTP/1 lines encoded beforehand (`body::Head::Raw`: a hit,
/// a stored miss, a relayed answer) are turned back into its header map first.
pub fn apply_response(ops: &[HeaderOp], resp: &mut Response<RespBody>, vars: &Vars) {
    if ops.is_empty() {
        return;
    }
    let raw = match resp.body_mut().take_head() {
        Head::Raw(raw) => Some(raw),
        Head::Map => None,
        // An HTTP/2 hit's block: `serve_hit` makes none on a route with response rules.
        pre_encoded @ Head::PreEncoded(_) => {
            resp.body_mut().set_head(pre_encoded);
            None
        }
    };
    if let Some(raw) = raw {
        let mut map = HeaderMap::new();
        let lines = raw.lines.split(|&b| b == b'\n');
        for line in lines.chain(raw.tail.split(|&b| b == b'\n')) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) else {
                continue;
            };
            map.append(name, value);
        }
        if let Some(age) = raw.age {
            map.insert(header::AGE, HeaderValue::from(age));
        }
        // Fields already in the map (a request ID) go after the raw ones, as hyper wrote them.
        for (name, value) in std::mem::take(resp.headers_mut()) {
            if let Some(name) = name {
                map.append(name, value);
            }
        }
        *resp.headers_mut() = map;
    }
    apply(ops, resp.headers_mut(), vars);
}

/// The path and query the upstream is sent after `rewrite`; `None` when the result is not
/// a valid request target (then the request is refused with 400).
pub fn rewrite(rewrite: &Rewrite, uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let mut out = BytesMut::with_capacity(path.len() + 16);
    match rewrite {
        Rewrite::StripPrefix(prefix) => {
            let rest = path.strip_prefix(prefix.as_str()).unwrap_or(path);
            if !rest.starts_with('/') {
                out.put_u8(b'/');
            }
            out.put_slice(rest.as_bytes());
        }
        Rewrite::Prefix(prefix) => {
            out.put_slice(prefix.as_bytes());
            out.put_slice(path.as_bytes());
        }
        Rewrite::Regex(re, to) => {
            let mut dst = Vec::new();
            match re.captures(path.as_bytes()) {
                Some(caps) => {
                    // The match is replaced; what is around it stays.
                    let m = caps.get(0).expect("group 0 always matches");
                    dst.extend_from_slice(&path.as_bytes()[..m.start()]);
                    caps.expand(to.as_bytes(), &mut dst);
                    dst.extend_from_slice(&path.as_bytes()[m.end()..]);
                }
                None => dst.extend_from_slice(path.as_bytes()),
            }
            out.put_slice(&dst);
        }
    }
    if let Some(q) = uri.query() {
        out.put_u8(b'?');
        out.put_slice(q.as_bytes());
    }
    let pq = PathAndQuery::from_maybe_shared(out.freeze()).ok()?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

/// A regex redirect's `Location`: `to` with the captures of the raw path filled in, and the
/// request's query appended when `to` has none. `None` when the path does not match.
pub fn redirect_location(re: &Regex, to: &str, uri: &Uri) -> Option<Vec<u8>> {
    let caps = re.captures(uri.path().as_bytes())?;
    let mut location = Vec::with_capacity(to.len() + 16);
    caps.expand(to.as_bytes(), &mut location);
    if let Some(q) = uri.query().filter(|_| !to.contains('?')) {
        location.push(b'?');
        location.extend_from_slice(q.as_bytes());
    }
    Some(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn rewrites() {
        let strip = Rewrite::StripPrefix("/api".into());
        assert_eq!(rewrite(&strip, &uri("/api/x?q=1")).unwrap(), "/x?q=1");
        assert_eq!(rewrite(&strip, &uri("/api")).unwrap(), "/");
        assert_eq!(rewrite(&strip, &uri("/other")).unwrap(), "/other");
        let prefix = Rewrite::Prefix("/v2".into());
        assert_eq!(rewrite(&prefix, &uri("/x")).unwrap(), "/v2/x");
        let re = Rewrite::Regex(Regex::new("^/old/(.*)$").unwrap(), "/new/$1".into());
        assert_eq!(rewrite(&re, &uri("/old/a%2Fb?z")).unwrap(), "/new/a%2Fb?z");
        assert_eq!(rewrite(&re, &uri("/keep")).unwrap(), "/keep");
    }

    #[test]
    fn redirects() {
        let re = Regex::new(r"^/blog/(\d+)$").unwrap();
        let to = "https://blog.example.com/p/$1";
        assert_eq!(
            redirect_location(&re, to, &uri("/blog/42?x=1")).unwrap(),
            b"https://blog.example.com/p/42?x=1"
        );
        assert!(redirect_location(&re, to, &uri("/blog/x")).is_none());
    }

    #[test]
    fn bad_values_dropped() {
        let vars = Vars {
            client_ip: "10.0.0.1".parse().unwrap(),
            host: "h\r\nx: y".into(),
            scheme: "http",
            method: Method::GET,
            path_and_query: None,
            request_id: String::new(),
            route: 3,
            upstream: "app".into(),
            client_cert: None,
        };
        let before = HEADER_RULE_DROPS.load(Relaxed);
        let t = Template(vec![Piece::Text("a ".into()), Piece::Var(Var::Host)]);
        assert!(vars.expand(&t).is_none());
        assert!(HEADER_RULE_DROPS.load(Relaxed) > before);
        let t = Template(vec![Piece::Var(Var::ClientIp), Piece::Var(Var::Route)]);
        assert_eq!(vars.expand(&t).unwrap(), "10.0.0.13");
        let t = Template(vec![
            Piece::Var(Var::TlsClientVerified),
            Piece::Text("/".into()),
            Piece::Var(Var::TlsClientSubject),
        ]);
        assert_eq!(vars.expand(&t).unwrap(), "false/");
    }
}
