//! Compression in the response step (`routes[].compress`): which coding a response goes
//! out in, chosen from the client's `Accept-Encoding`, and the body and fields changed for
//! it. The codings themselves are `crate::compress`.
//!
//! With the cache: the origin is asked for identity (`VaryNormalise::identity_upstream`),
//! the first response is encoded for the client that asked *before* it is stored, so the
//! object stored is the encoded one (compressed once). A later client that accepts that
//! coding gets the object as stored (the fresh-hit fast path, no work); one that does not
//! gets it decoded to identity. One origin fetch serves every client. An object stored as
//! identity (its first client took no coding) is encoded by the first hit that compresses
//! it, and that encoding replaces it (`cached::recode`, `Fill::recode`).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::body::RespBody;
use crate::cache::fields::{visible, FieldSource};
use crate::compress::Coder;
use crate::config::{Action, Coding, Compress, Route};
use crate::observe::metrics::Metrics;

/// What the response step needs to know about the request to compress its response.
#[derive(Debug)]
pub struct Ask {
    config: Arc<Compress>,
    /// The request's `Accept-Encoding` (lines joined), if it had one.
    accept: Option<HeaderValue>,
    head: bool,
    range: bool,
}

impl Ask {
    /// `None` when the route does not compress.
    pub fn of<B>(req: &Request<B>, route: &Route) -> Option<Ask> {
        let Action::Proxy {
            compress: Some(config),
            ..
        } = &route.action
        else {
            return None;
        };
        Some(Ask {
            config: config.clone(),
            accept: accept_value(req.headers()),
            head: req.method() == http::Method::HEAD,
            range: crate::header_scan::has(req.headers(), &header::RANGE),
        })
    }
}

fn accept_value(headers: &HeaderMap) -> Option<HeaderValue> {
    match accept_encoding(headers)? {
        // The one line itself (a shared clone, no copy).
        AcceptEncoding::One(line) => Some(line.clone()),
        AcceptEncoding::Joined(joined) => HeaderValue::from_bytes(&joined).ok(),
    }
}

/// The request's `Accept-Encoding` as every step reads it ([`accept_encoding`]); its bytes
/// by `Deref`.
pub enum AcceptEncoding<'a> {
    /// Its one line.
    One(&'a HeaderValue),
    /// Its lines joined with `", "`.
    Joined(Vec<u8>),
}

impl std::ops::Deref for AcceptEncoding<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            AcceptEncoding::One(line) => line.as_bytes(),
            AcceptEncoding::Joined(joined) => joined,
        }
    }
}

/// The request's `Accept-Encoding` as every step reads it: its one line, or all its lines
/// joined with `", "` (RFC 9110 §5.3), so the checks that send an answer as it is
/// (`hit_as_is`, `may_encode`, `range_servable`, the stored miss's raw head) decide as
/// the response step's [`Ask`] does.
pub fn accept_encoding(headers: &HeaderMap) -> Option<AcceptEncoding<'_>> {
    let mut lines = crate::header_scan::all(headers, &header::ACCEPT_ENCODING);
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(AcceptEncoding::One(first));
    };
    let mut joined = first.as_bytes().to_vec();
    for line in std::iter::once(second).chain(lines) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(line.as_bytes());
    }
    Some(AcceptEncoding::Joined(joined))
}

/// The weight (RFC 9110 §12.4.2) `accept` gives the coding `token`: named (`x-gzip` for
/// `gzip`), else `*`, else 1 for `identity` and 0 for the others. Invalid weights are 0.
pub fn weight(accept: Option<&[u8]>, token: &str) -> f32 {
    let Some(accept) = accept else {
        return if token.eq_ignore_ascii_case("identity") {
            1.0
        } else {
            0.0
        };
    };
    let mut star = None;
    for member in accept.split(|&b| b == b',') {
        let mut params = member.split(|&b| b == b';');
        let name = params.next().unwrap_or_default().trim_ascii();
        if name.is_empty() {
            continue;
        }
        let mut q = 1.0f32;
        for p in params {
            let p = p.trim_ascii();
            if let Some(w) = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q=")) {
                q = std::str::from_utf8(w)
                    .ok()
                    .and_then(|w| w.trim().parse::<f32>().ok())
                    .filter(|w| (0.0..=1.0).contains(w))
                    .unwrap_or(0.0);
            }
        }
        let named = name.eq_ignore_ascii_case(token.as_bytes())
            || (token.eq_ignore_ascii_case("gzip") && name.eq_ignore_ascii_case(b"x-gzip"));
        if named {
            return q;
        }
        if name == b"*" {
            star = Some(q);
        }
    }
    match star {
        Some(q) => q,
        None if token.eq_ignore_ascii_case("identity") => 1.0,
        None => 0.0,
    }
}

/// The coding to send: the one of `config.codings` the client weighs highest, ties in
/// the route's order; none when the client weighs identity higher, or accepts none.
pub fn choose(config: &Compress, accept: Option<&[u8]>) -> Option<Coding> {
    accept?;
    let mut best: Option<(Coding, f32)> = None;
    for &c in &config.codings {
        let q = weight(accept, c.token());
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((c, q));
        }
    }
    let (coding, q) = best?;
    (q >= weight(accept, "identity")).then_some(coding)
}

/// Whether a response to a request with `req_headers` may be encoded on this route: the
/// client accepts one of its codings. (A relayed HTTP/1 head is read from its fields only
/// then; otherwise it goes as the server's raw lines.)
pub fn may_encode(config: Option<&Compress>, req_headers: &HeaderMap) -> bool {
    config.is_some_and(|c| choose(c, accept_encoding(req_headers).as_deref()).is_some())
}

/// What a response needs on its way to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Sent as it is; `vary`: its coding depends on `Accept-Encoding` (say so).
    AsIs {
        vary: bool,
    },
    Encode(Coding),
    /// Stored or sent in a coding the client does not accept: decoded to identity.
    Decode(String),
}

/// Decides for a response with `status` and `headers` (body `len` bytes, when known).
pub fn plan(
    config: &Compress,
    accept: Option<&[u8]>,
    status: StatusCode,
    headers: &HeaderMap,
    len: Option<u64>,
) -> Plan {
    const NONE: Plan = Plan::AsIs { vary: false };
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return NONE;
    }
    if let Some(ce) = headers.get(header::CONTENT_ENCODING) {
        let Ok(ce) = ce.to_str().map(str::trim) else {
            return NONE;
        };
        if ce.eq_ignore_ascii_case("identity") || ce.is_empty() || no_transform(headers) {
            return NONE;
        }
        // Already encoded: sent as it is to a client that takes it, else decoded (when
        // torii can: one coding it knows).
        if weight(accept, ce) > 0.0 || !Coder::can_decode(ce) {
            return Plan::AsIs { vary: true };
        }
        return Plan::Decode(ce.to_string());
    }
    // Each of these sends it as it is: the cheapest first (a stored miss under
    // `min_size` decides on its length, without the type's list or a directive scan).
    if status != StatusCode::OK
        || len.is_some_and(|l| l < config.min_size)
        || headers.contains_key(header::CONTENT_RANGE)
        || !headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| config.compressible(t.as_bytes()))
        || no_transform(headers)
    {
        return NONE;
    }
    match choose(config, accept) {
        Some(c) => Plan::Encode(c),
        None => Plan::AsIs { vary: true },
    }
}

fn no_transform(headers: &impl FieldSource) -> bool {
    headers.any_value(&header::CACHE_CONTROL, &mut |v| {
        v.split(|&b| b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

/// Whether a fresh hit on a stored object can go out as stored (the raw fast path) for a
/// request with `req_headers`: no encoding or decoding to do. The same answer as `plan`
/// (`Plan::AsIs`), with the cheapest tests first: a stored coding the client takes is one
/// field lookup and a scan of `Accept-Encoding`; a type not compressed, two lookups.
pub fn hit_as_is(
    config: Option<&Compress>,
    status: StatusCode,
    stored: &impl FieldSource,
    len: usize,
    req_headers: &HeaderMap,
) -> bool {
    let Some(config) = config else {
        return true;
    };
    let accept = accept_encoding(req_headers);
    let accept = accept.as_deref();
    match stored.field(&header::CONTENT_ENCODING) {
        Some(ce) => {
            let Some(ce) = visible(ce).map(str::trim) else {
                return true;
            };
            ce.is_empty()
                || ce.eq_ignore_ascii_case("identity")
                || weight(accept, ce) > 0.0
                || !Coder::can_decode(ce)
                || no_transform(stored)
                || status.is_informational()
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
        }
        None => {
            status != StatusCode::OK
                || accept.is_none()
                || (len as u64) < config.min_size
                || !stored
                    .field(&header::CONTENT_TYPE)
                    .is_some_and(|t| config.compressible(t))
                || choose(config, accept).is_none()
                || no_transform(stored)
                || stored.has(&header::CONTENT_RANGE)
        }
    }
}

/// `hit_as_is` for a stored object, with what does not depend on the client computed
/// once per object: an object that needs no work for any client (not encoded, and not to
/// be compressed: its type, size, status or `no-transform`) costs one atomic load.
/// `fields` are the object's, as stored or as its map (`CachedObject::fields_map`).
pub fn hit_as_is_stored(
    config: Option<&Compress>,
    obj: &crate::cache::object::CachedObject,
    fields: &impl FieldSource,
    req_headers: &HeaderMap,
) -> bool {
    let Some(c) = config else {
        return true;
    };
    let inert = obj.memo.inert_or(c as *const Compress as usize, || {
        !obj.headers.is_encoded()
            && (obj.status != StatusCode::OK
                || (obj.body.len() as u64) < c.min_size
                || !obj
                    .headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|t| c.compressible(t))
                || no_transform(&obj.headers)
                || obj.headers.contains_key(header::CONTENT_RANGE))
    });
    inert || hit_as_is(config, obj.status, fields, obj.body.len(), req_headers)
}

/// Whether a range can be answered from a stored object for this client: the object is
/// not encoded, or in a coding the client accepts (else the whole object is sent, and
/// decoded for it).
pub fn range_servable(stored: &HeaderMap, req_headers: &HeaderMap) -> bool {
    match stored.get(header::CONTENT_ENCODING).map(|v| v.to_str()) {
        None => true,
        Some(Ok(ce)) => {
            let accept = accept_encoding(req_headers);
            let accept = accept.as_deref();
            ce.trim().eq_ignore_ascii_case("identity")
                || weight(accept, ce.trim()) > 0.0
                || !Coder::can_decode(ce.trim())
        }
        Some(Err(_)) => true,
    }
}

/// The response step's part: encodes or decodes `resp` for the client of `ask`. A
/// filling body is encoded before it is stored. Decoding stops past `max_body` bytes (the
/// response is cut and nothing is stored).
pub fn apply(
    resp: Response<RespBody>,
    ask: &Ask,
    max_body: u64,
    metrics: &Metrics,
) -> Response<RespBody> {
    // A pre-encoded head (a hit as stored; HTTP/2's stored fields) was decided on by
    // `hit_as_is`.
    if ask.head || resp.body().is_pre_encoded() {
        return resp;
    }
    let (mut parts, mut body) = resp.into_parts();
    let len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| http_body::Body::size_hint(&body).exact());
    let accept = ask.accept.as_ref().map(HeaderValue::as_bytes);
    let mut plan = plan(&ask.config, accept, parts.status, &parts.headers, len);
    if ask.range && matches!(plan, Plan::Encode(_)) {
        // Ranges are of the identity body: never compressed.
        plan = Plan::AsIs { vary: true };
    }
    if !matches!(plan, Plan::Encode(_)) {
        body.drop_recode();
    }
    match plan {
        Plan::AsIs { vary: false } => {}
        Plan::AsIs { vary: true } => {
            add_vary(&mut parts.headers);
            if let Some(fill) = body.fill_mut() {
                add_vary(fill.headers_mut());
            }
        }
        Plan::Encode(coding) => {
            let flush_each = parts
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
            if let Ok(coder) = Coder::encoder(coding, flush_each) {
                metrics.compressions[coding.index()].inc();
                encoded_fields(&mut parts.headers, coding);
                if let Some(fill) = body.fill_mut() {
                    // Compress once: the object stored is the encoded one.
                    encoded_fields(fill.headers_mut(), coding);
                    fill.unknown_length();
                    body.encode_before_fill(coder);
                } else {
                    body = body.transformed(coder);
                }
            }
        }
        Plan::Decode(token) => {
            if let Some(coder) = Coder::decoder(&token, max_body) {
                if let Some(fill) = body.fill_mut() {
                    // Stored as it came, once the decoder has taken all of it.
                    add_vary(fill.headers_mut());
                    fill.held = true;
                }
                parts.headers.remove(header::CONTENT_ENCODING);
                parts.headers.remove(header::CONTENT_LENGTH);
                weaken_etag(&mut parts.headers);
                add_vary(&mut parts.headers);
                body = body.transformed(coder);
            }
        }
    }
    Response::from_parts(parts, body)
}

/// The fields of a response encoded by torii: its coding, no length (it is streamed),
/// `Vary: Accept-Encoding`, and a weak `ETag` (the encoded bytes differ from the
/// origin's, RFC 9110 §8.8.3).
fn encoded_fields(headers: &mut HeaderMap, coding: Coding) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    weaken_etag(headers);
    add_vary(headers);
}

fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, v);
            }
        }
    }
}

/// Adds `Accept-Encoding` to `Vary`, unless it is listed or `Vary` is `*`.
fn add_vary(headers: &mut HeaderMap) {
    let listed = headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|f| {
            let f = f.trim_ascii();
            f == b"*" || f.eq_ignore_ascii_case(b"accept-encoding")
        })
    });
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(v: &'static str) -> Option<&'static [u8]> {
        Some(v.as_bytes())
    }

    #[test]
    fn choice_follows_q_values_then_route_order() {
        let c = Compress::default();
        assert_eq!(
            choose(&c, ae("gzip, deflate, br, zstd")),
            Some(Coding::Zstd)
        );
        assert_eq!(choose(&c, ae("gzip, br")), Some(Coding::Br));
        assert_eq!(choose(&c, ae("gzip;q=1, br;q=0.5")), Some(Coding::Gzip));
        assert_eq!(choose(&c, ae("x-gzip")), Some(Coding::Gzip));
        assert_eq!(choose(&c, ae("*")), Some(Coding::Zstd));
        assert_eq!(choose(&c, ae("*;q=0.5, identity")), None);
        assert_eq!(choose(&c, ae("br;q=0, gzip;q=0")), None);
        assert_eq!(choose(&c, ae("deflate")), None);
        assert_eq!(choose(&c, ae("identity")), None);
        assert_eq!(choose(&c, None), None);
        let gzip_first = Compress {
            codings: vec![Coding::Gzip, Coding::Br],
            ..Compress::default()
        };
        assert_eq!(choose(&gzip_first, ae("br, gzip")), Some(Coding::Gzip));
    }

    #[test]
    fn plans() {
        let c = Compress::default();
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let ok = StatusCode::OK;
        assert_eq!(
            plan(&c, ae("br"), ok, &h, Some(5000)),
            Plan::Encode(Coding::Br)
        );
        assert_eq!(
            plan(&c, ae("br"), ok, &h, Some(10)),
            Plan::AsIs { vary: false }
        );
        assert_eq!(plan(&c, None, ok, &h, None), Plan::AsIs { vary: true });
        assert_eq!(
            plan(&c, ae("br"), StatusCode::PARTIAL_CONTENT, &h, None),
            Plan::AsIs { vary: false }
        );
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            plan(&c, ae("gzip"), ok, &h, None),
            Plan::AsIs { vary: true }
        );
        assert_eq!(plan(&c, None, ok, &h, None), Plan::Decode("gzip".into()));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=5, no-transform"),
        );
        assert_eq!(plan(&c, None, ok, &h, None), Plan::AsIs { vary: false });
        let mut png = HeaderMap::new();
        png.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        assert_eq!(
            plan(&c, ae("br"), ok, &png, None),
            Plan::AsIs { vary: false }
        );
    }

    #[test]
    fn hit_as_is_agrees_with_plan() {
        let c = Compress::default();
        let mut cases = Vec::new();
        for ct in [Some("text/html"), Some("image/png"), None] {
            for ce in [
                None,
                Some("br"),
                Some("gzip"),
                Some("identity"),
                Some("compress"),
            ] {
                for cc in [None, Some("no-transform")] {
                    let mut h = HeaderMap::new();
                    for (name, v) in [
                        (header::CONTENT_TYPE, ct),
                        (header::CONTENT_ENCODING, ce),
                        (header::CACHE_CONTROL, cc),
                    ] {
                        if let Some(v) = v {
                            h.insert(name, HeaderValue::from_static(v));
                        }
                    }
                    cases.push(h);
                }
            }
        }
        for stored in &cases {
            for ae in [
                None,
                Some("br"),
                Some("gzip, br, zstd"),
                Some("identity"),
                Some("*;q=0"),
            ] {
                for status in [StatusCode::OK, StatusCode::NOT_FOUND] {
                    for len in [10usize, 5000] {
                        let mut req = HeaderMap::new();
                        if let Some(ae) = ae {
                            req.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(ae));
                        }
                        let accept = ae.map(str::as_bytes);
                        let planned = plan(&c, accept, status, stored, Some(len as u64));
                        assert_eq!(
                            hit_as_is(Some(&c), status, stored, len, &req),
                            matches!(planned, Plan::AsIs { .. }),
                            "{stored:?} {ae:?} {status} {len}: {planned:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn etags_become_weak_once() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"a\""));
        encoded_fields(&mut h, Coding::Gzip);
        assert_eq!(h[header::ETAG], "W/\"a\"");
        weaken_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"a\"");
        assert_eq!(h[header::VARY], "Accept-Encoding");
        add_vary(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
    }
}
