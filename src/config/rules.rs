//! Route rules as validated (`validate/rules.rs`): header rules with `{variable}` templates,
//! path rewrites and redirect captures. Applied by `proxy::rules`.

use http::HeaderName;
use regex::bytes::Regex;

/// A route's rules: `[defaults]` ones first, then the route's own. `None` on a route
/// without any (the request path does not look at rules then).
#[derive(Debug, Clone, Default)]
pub struct RouteRules {
    /// Applied to the request sent upstream, in order.
    pub request: Vec<HeaderOp>,
    /// Applied to every answer (hits, misses, errors, fixed answers), in order.
    pub response: Vec<HeaderOp>,
    pub rewrite: Option<Rewrite>,
    /// A request rule touches a field the route's cache key names: the key is built from
    /// the request as the rules left it (so not answered by the first, synchronous look).
    pub keyed: bool,
}

impl RouteRules {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty() && self.rewrite.is_none()
    }
}

/// One header rule. Within one table the order is: `remove`, `set`, `add`, `set_if_absent`.
#[derive(Debug, Clone)]
pub enum HeaderOp {
    Remove(HeaderName),
    /// Replaces every value of the field.
    Set(HeaderName, Template),
    /// Appends a value, keeping those there.
    Add(HeaderName, Template),
    /// Sets the field only when the message has none.
    SetIfAbsent(HeaderName, Template),
}

impl HeaderOp {
    pub fn name(&self) -> &HeaderName {
        match self {
            HeaderOp::Remove(n)
            | HeaderOp::Set(n, _)
            | HeaderOp::Add(n, _)
            | HeaderOp::SetIfAbsent(n, _) => n,
        }
    }
}

/// A header value with `{variable}`s; `{env.NAME}` is resolved when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(Var),
}

/// The variables a header rule value may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    ClientIp,
    Host,
    Scheme,
    Method,
    Path,
    Query,
    RequestId,
    Route,
    Upstream,
    /// The verified client certificate's subject (mutual TLS); empty without one.
    TlsClientSubject,
    /// Its subject alternative names; empty without one.
    TlsClientSan,
    /// SHA-256 of its DER, lowercase hex; empty without one.
    TlsClientFingerprint,
    /// `true` when the client presented a certificate the listener verified, else `false`.
    TlsClientVerified,
}

impl Var {
    pub const ALL: [(&'static str, Var); 13] = [
        ("client_ip", Var::ClientIp),
        ("host", Var::Host),
        ("scheme", Var::Scheme),
        ("method", Var::Method),
        ("path", Var::Path),
        ("query", Var::Query),
        ("request_id", Var::RequestId),
        ("route", Var::Route),
        ("upstream", Var::Upstream),
        ("tls_client_subject", Var::TlsClientSubject),
        ("tls_client_san", Var::TlsClientSan),
        ("tls_client_fingerprint", Var::TlsClientFingerprint),
        ("tls_client_verified", Var::TlsClientVerified),
    ];
}

/// `rewrite`: what the upstream sees as the path (the cache key keeps the client's).
#[derive(Debug, Clone)]
pub enum Rewrite {
    /// Removes this prefix (at a segment boundary or not); the rest, or `/`.
    StripPrefix(String),
    /// Puts this in front of the path.
    Prefix(String),
    /// Replaces the match in the raw path with `to` (`$1`, `${name}` captures).
    Regex(Regex, String),
}
