//! Range requests in the cache step (RFC 9110 §14): answered from a stored complete object,
//! or, on a miss, from the whole object fetched once and stored (up to the route's
//! `range_fill_max`); larger objects have the range forwarded as it came (with its
//! `If-Range`) and the 206 relayed, unstored. The byte arithmetic lives in
//! `cache::range`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::{CachedObject, Ctx, ObjectParts};
use crate::body::RespBody;
use crate::cache::range::{self, Ranges};
use crate::cache::{policy, FlightGuard, FlightState};
use crate::error::ProxyError;
use crate::observe::Record;
use crate::upstream::{self, Forwarded, ReqBody, UpstreamBody};

/// The answer a stored (or just fetched) 2xx gives a request with `Range`, `If-Match` or
/// `If-Unmodified-Since`, when it is not the plain one: 412 when a precondition fails,
/// 206 / 416 for a range that applies. `None`: answer as without them (a 304 when the
/// client's validators match, else the whole response). `age` goes on a 206 from the store.
pub(super) fn answer(
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
    req: &HeaderMap,
    is_head: bool,
    age: Option<&HeaderValue>,
) -> Option<Response<RespBody>> {
    if !status.is_success() {
        return None;
    }
    if range::precondition_failed(req, headers) {
        return Some(precondition_failed());
    }
    if status != StatusCode::OK
        || !req.contains_key(header::RANGE)
        || policy::not_modified(req, headers)
    {
        return None;
    }
    let ranges = range::applicable(req, headers, body.len() as u64);
    let part = range::partial(&ranges, body, headers.get(header::CONTENT_TYPE))?;
    let mut resp = Response::new(if is_head {
        RespBody::empty()
    } else {
        RespBody::full(part.body.clone())
    });
    *resp.status_mut() = part.status;
    let out = resp.headers_mut();
    if matches!(ranges, Ranges::Satisfiable(_)) {
        *out = headers.clone();
        if let Some(age) = age {
            out.insert(header::AGE, age.clone());
        }
    }
    for (name, value) in part.fields {
        out.insert(name, value);
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(part.body.len()));
    Some(resp)
}

/// 412 Precondition Failed (RFC 9110 §15.5.13).
pub(super) fn precondition_failed() -> Response<RespBody> {
    let mut resp = Response::new(RespBody::empty());
    *resp.status_mut() = StatusCode::PRECONDITION_FAILED;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// Puts the client's `Range` back on a request for the origin, always with the
/// `If-Range` that came with it (or none, when it came without).
pub(super) fn restore(upstream: &mut HeaderMap, client: &HeaderMap) {
    for name in [header::RANGE, header::IF_RANGE] {
        upstream.remove(&name);
        for v in client.get_all(&name) {
            upstream.append(name.clone(), v.clone());
        }
    }
}

/// A bodiless copy of a request for the origin (a range request is a GET without a body:
/// one with a body never reaches the cache step).
pub(super) fn copy_head(req: &Request<ReqBody>) -> Request<ReqBody> {
    let mut copy = Request::new(ReqBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// What the cache step accepts from the origin: never a `101` (no request of the cache
/// step asks for an upgrade), never a `206` it did not ask for, and never one whose
/// `Content-Range` disagrees with its length.
pub(super) fn check_answer(
    forwarded: &Forwarded,
    asked_range: bool,
) -> Result<(), upstream::Error> {
    let status = forwarded.response.status();
    let what = if status == StatusCode::SWITCHING_PROTOCOLS {
        "101 without an upgrade request"
    } else if status == StatusCode::PARTIAL_CONTENT && !asked_range {
        "206 to a request without Range"
    } else if status == StatusCode::PARTIAL_CONTENT {
        match range::check_origin_206(forwarded.response.headers()) {
            Ok(_) => return Ok(()),
            Err(what) => what,
        }
    } else {
        return Ok(());
    };
    Err(upstream::Error::Protocol {
        backend: forwarded.backend.clone(),
        what,
    })
}

/// What the cache step prepared to store a response: the object without its body (and
/// its `Vary` marker), the flight its followers wait on, the announced `Content-Length`.
pub(super) type Fill = (
    Option<(ObjectParts, Option<CachedObject>)>,
    Option<FlightGuard>,
    Option<u64>,
);

/// A miss for a GET with `Range` whose origin answered 200: the whole body is read (up to
/// `range_fill_max`), stored when it may be (its flight's followers get it), and the range
/// answered from it. A larger body is dropped and the range forwarded as it came.
pub(super) async fn answer_miss(
    ctx: &Ctx<'_>,
    (parts, body): (http::response::Parts, UpstreamBody),
    (template, flight, length): Fill,
    reforward: Request<ReqBody>,
    record: &mut Record,
) -> Result<Response<RespBody>, ProxyError> {
    // Never more than could be stored (a route's smaller max_object_size counts).
    let limit = ctx.policy.range_fill_max.min(ctx.policy.max_object_size);
    if length.is_some_and(|l| l > limit) {
        drop((body, flight));
        return forward_range(ctx, reforward, record).await;
    }
    let bytes = match http_body_util::Limited::new(body, limit as usize)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            drop(flight);
            return forward_range(ctx, reforward, record).await;
        }
        Err(_) => return Err(broken(record, "a body that broke off")),
    };
    if length.is_some_and(|l| l != bytes.len() as u64) {
        return Err(broken(record, "a body of another length than announced"));
    }
    let fill_max = ctx
        .policy
        .max_object_size
        .min(ctx.cache.memory().max_object_bytes());
    match template {
        Some((parts, index)) if bytes.len() as u64 <= fill_max => {
            let obj = Arc::new(parts.into_object(&[bytes]));
            ctx.cache.store(obj.clone(), index);
            if let Some(flight) = flight {
                flight.finish(FlightState::Stored(obj.clone()));
            }
            let now = ctx.cache.now();
            let fresh = super::freshness(&obj, ctx.policy);
            Ok(super::respond_stored(
                &obj,
                &ctx.req_headers,
                false,
                &fresh,
                now,
            ))
        }
        _ => {
            drop(flight);
            Ok(answer(
                parts.status,
                &parts.headers,
                &bytes,
                &ctx.req_headers,
                false,
                None,
            )
            .unwrap_or_else(|| Response::from_parts(parts, RespBody::full(bytes))))
        }
    }
}

/// A 206 without `Content-Length` whose range is at most this (or `range_fill_max`) is
/// read whole before it is relayed, and checked against its `Content-Range`.
const CHECKED_206: u64 = 1 << 20;

/// Sends the client's range to the origin as it came (with its `If-Range`) and relays the
/// answer, unstored. A 206 without `Content-Length` is read whole when its range is at
/// most `CHECKED_206` or `range_fill_max`, so that one shorter or longer than its
/// `Content-Range` is a 502 (a larger one streams, and a short one breaks off).
async fn forward_range(
    ctx: &Ctx<'_>,
    mut req: Request<ReqBody>,
    record: &mut Record,
) -> Result<Response<RespBody>, ProxyError> {
    restore(req.headers_mut(), &ctx.req_headers);
    let resp = super::fetch(ctx, req, record).await?;
    let (mut parts, body) = resp.into_parts();
    crate::proxy::strip_hop_by_hop(&mut parts.headers, false);
    let announced = (parts.status == StatusCode::PARTIAL_CONTENT
        && !parts.headers.contains_key(header::CONTENT_LENGTH))
    .then(|| range::check_origin_206(&parts.headers).ok().flatten())
    .flatten()
    .filter(|&n| n <= ctx.policy.range_fill_max.max(CHECKED_206));
    let Some(want) = announced else {
        return Ok(Response::from_parts(parts, RespBody::upstream(body)));
    };
    let bytes = http_body_util::Limited::new(body, want as usize + 1)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| broken(record, "a 206 longer than its Content-Range"))?;
    if bytes.len() as u64 != want {
        return Err(broken(record, "a 206 shorter than its Content-Range"));
    }
    Ok(Response::from_parts(parts, RespBody::full(bytes)))
}

fn broken(record: &Record, what: &'static str) -> ProxyError {
    match &record.upstream {
        Some(backend) => upstream::Error::Protocol {
            backend: backend.clone(),
            what,
        }
        .into(),
        None => ProxyError::BadRequest("range request failed"),
    }
}
