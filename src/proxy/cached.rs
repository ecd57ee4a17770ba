//! The cache step of the request path: lookup, freshness decision, coalesced fetch,
//! revalidation, stale serving, background refresh, and storing as the body streams.
//! Range requests: `range`.

mod age;
mod pre_encoded;
mod range;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;

use crate::body::RespBody;
use crate::cache::fields::StoredFields;
use crate::cache::fill::Fill;
use crate::cache::object::{CachedObject, ObjectMeta, ObjectParts, PartsFields};
use crate::cache::policy::{self, Freshness, ResponseDirectives, Reuse};
use crate::cache::status::{CacheStatus, Miss, Stale};
use crate::cache::tier::shared::Target;
use crate::cache::{self, key, Cache, FlightState, Join, LeaseOutcome, UrlMatch};
use crate::config::CachePolicy;
use crate::error::ProxyError;
use crate::observe::Record;
use crate::upstream::{self, Group, HeadAs, Patience, PickContext, ReqBody, UpstreamBody};

const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Everything the cache step needs about the request being served.
pub struct Ctx<'a> {
    pub cache: &'a Arc<Cache>,
    pub policy: &'a Arc<CachePolicy>,
    pub group: &'a Arc<Group>,
    /// What the group's balancer needs to pick a server for this request.
    pub pick: PickContext,
    /// The downstream request's headers (Vary, conditionals, Cache-Control).
    pub req_headers: HeaderMap,
    /// The host the request was for (key and purge).
    pub host: String,
    /// The scheme the client used (`http` or `https`): part of the key.
    pub scheme: &'static str,
    /// The primary key, when the first look (`serve_hit`) already built it.
    pub primary: Option<String>,
    /// Where the origin's interim (1xx) answers go (relayed to the client, never stored).
    pub interim: upstream::Interim<'a>,
    /// The route's compression, which the response step applies (`compress::apply`).
    pub compress: Option<&'a crate::config::Compress>,
}

/// The primary key and URL of a request on a caching route; `scheme` is the one the
/// client used, so http and https copies are stored apart.
pub fn primary_key(
    policy: &CachePolicy,
    scheme: &str,
    host: &str,
    path_and_query: &str,
    req_headers: &HeaderMap,
) -> String {
    key::primary_key(&policy.key, true, scheme, host, path_and_query, req_headers)
}

/// The request's directives as the route reads them: all of them (RFC 9111 §5.2.1), or,
/// with `client_directives = "ignore"`, without those that would bypass a fresh object.
fn request_directives(policy: &CachePolicy, req_headers: &HeaderMap) -> policy::CacheControl {
    let cc = policy::request_cache_control(req_headers);
    if policy.ignore_client_directives {
        policy::shielded(cc)
    } else {
        cc
    }
}

/// Removes what a response to a client never carries from the cache: torii's own
/// targeted field (RFC 9213).
fn strip_own_fields(headers: &mut HeaderMap) {
    headers.remove(policy::OWN_TARGETED_FIELD);
}

/// What the first, synchronous look at the cache found for a request.
// A hit's response inline, as `Handled::Ready` holds it: boxing it would cost every hit an
// allocation (its body may carry an HTTP/2 hit's pre-encoded block: `RespBody`).
#[allow(clippy::large_enum_variant)]
pub enum FirstLook {
    /// A fresh object from the memory tier answers it.
    Hit(Response<RespBody>),
    /// The key answered something uncacheable lately (`hit_for_miss`): straight to the
    /// origin, past the cache step.
    Pass,
    /// Anything else (miss, stale, disk or shared tier, a refresh due, `no-cache`…): the
    /// whole cache step (`serve`), given the primary key built here.
    Slow(String),
}

thread_local! {
    /// `serve_hit`'s key buffer.
    static PRIMARY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The hit path: a fresh object in the memory tier answers `req` (a GET or HEAD on a
/// caching route) before anything is prepared for the upstream. `pre_encode`: whether an
/// HTTP/2 hit may send the stored fields pre-encoded (`pre_encoded`; the route has no
/// response rules, which need them in a map).
pub fn serve_hit<B>(
    cache: &Arc<Cache>,
    policy: &CachePolicy,
    compress: Option<&crate::config::Compress>,
    scheme: &str,
    host: &str,
    req: &Request<B>,
    pre_encode: bool,
) -> FirstLook {
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    // The key is built in a per-thread buffer: a hit or a hit-for-pass needs no key of its
    // own; only the slow path takes a copy.
    let found = PRIMARY.with_borrow_mut(|primary| {
        primary.clear();
        key::push_primary_key(primary, &policy.key, true, scheme, host, pq, req.headers());
        match cache.lookup_memory(primary, req.headers(), &policy.vary) {
            Some(obj) => Ok(obj),
            // `only-if-cached` (a Cache-Control directive) must get its 504 from the
            // cache step, never the origin.
            None if cache.passes(primary)
                && !(req.headers().contains_key(header::CACHE_CONTROL)
                    && policy::request_cache_control(req.headers()).only_if_cached) =>
            {
                Err(None)
            }
            None => Err(Some(primary.clone())),
        }
    });
    let obj = match found {
        Ok(obj) => obj,
        Err(None) => return FirstLook::Pass,
        Err(Some(primary)) => return FirstLook::Slow(primary),
    };
    let now = cache.now();
    let fresh = freshness(&obj, policy);
    let req_cc = request_directives(policy, req.headers());
    if policy::request_decision(&req_cc, &fresh, now) != Reuse::Fresh
        || (policy.refresh_ahead && refresh_window(&fresh, now).is_some())
    {
        // The buffer still holds this request's key.
        return FirstLook::Slow(PRIMARY.with_borrow(String::clone));
    }
    cache.stats.hits.fetch_add(1, Relaxed);
    // A range or a precondition is answered from the header map (`respond_stored`).
    let raw = req.version() <= Version::HTTP_11
        && req.method() == Method::GET
        && !cache::range::asks(req.headers());
    // A hit answered from the fields map (HTTP/2, HEAD, a range) reads them there, by
    // hash, rather than scanning the stored lines for each (h2c hit: 44.2k → 42.6k).
    let as_is = if raw {
        super::compress::hit_as_is_stored(compress, &obj, &obj.headers, req.headers())
    } else {
        super::compress::hit_as_is_stored(compress, &obj, &*obj.fields_map(), req.headers())
    };
    let raw = raw && as_is;
    let pre_encode = pre_encode
        && as_is
        && req.version() == Version::HTTP_2
        && req.method() == Method::GET
        && !cache::range::asks(req.headers());
    FirstLook::Hit(
        raw.then(|| respond_raw(&obj, req.headers(), &fresh, now))
            .flatten()
            .or_else(|| {
                pre_encode
                    .then(|| respond_pre_encoded(&obj, req.headers(), &fresh, now))
                    .flatten()
            })
            .unwrap_or_else(|| {
                let resp = respond_stored(
                    &obj,
                    req.headers(),
                    req.method() == Method::HEAD,
                    &fresh,
                    now,
                );
                if as_is {
                    resp
                } else {
                    recode(cache, &obj, req, resp)
                }
            }),
    )
}

/// A hit on a stored identity object that this client's response will be encoded for
/// (`compress::hit_as_is` said no): its body also goes into a fill that stores the
/// encoded variant in the object's place (`Fill::recode`), so later hits for that
/// coding cost no compression. Anything else is left as it is.
fn recode<B>(
    cache: &Arc<Cache>,
    obj: &Arc<CachedObject>,
    req: &Request<B>,
    resp: Response<RespBody>,
) -> Response<RespBody> {
    if req.method() != Method::GET
        || resp.status() != StatusCode::OK
        || obj.status != StatusCode::OK
        || obj.body.is_empty()
        || obj.headers.is_encoded()
        || cache::range::asks(req.headers())
    {
        return resp;
    }
    let Some(fill) = Fill::recode(cache.clone(), obj) else {
        return resp;
    };
    let (parts, _) = resp.into_parts();
    let body = RespBody::filling(UpstreamBody::Full(Some(obj.body.clone())), fill);
    Response::from_parts(parts, body)
}

/// `respond_stored` for a fresh HTTP/1 GET hit: the stored fields go out as the
/// object's pre-encoded lines instead of a copy of its header map (which costs a hit
/// allocations and hyper an encoding of every field). `None` when the client's
/// validators match (a 304) or the object has no such block.
fn respond_raw(
    obj: &CachedObject,
    req_headers: &HeaderMap,
    fresh: &Freshness,
    now: SystemTime,
) -> Option<Response<RespBody>> {
    if obj.status == StatusCode::OK && policy::not_modified(req_headers, &obj.headers) {
        return None;
    }
    // After the stored fields: the hit's `X-Cache`, and the `Via` the response step adds
    // to every other response (the response step writes neither to a raw head).
    let lines = obj.raw_fields()?;
    // The header map stays empty (and unallocated): hyper keeps a response's map for
    // the connection's next request, idle or not.
    let mut resp = Response::new(RespBody::full(obj.body.clone()).with_raw(hyper::RawFields {
        lines,
        tail: CacheStatus::Hit.raw_lines(),
        age: Some(obj.age_to_send(fresh.age(now).as_secs())),
    }));
    *resp.status_mut() = obj.status;
    Some(resp)
}

/// `respond_stored` for a fresh HTTP/2 GET hit: the stored fields go out as a block
/// HPACK-encoded once for the object (`pre_encoded`), with the body's `Content-Length`
/// and the hit's `Via` and `X-Cache`, then its `Age` (a block per value, or in the map
/// when old). `None` when the client's validators match (a 304) or the object has no
/// `Date`.
fn respond_pre_encoded(
    obj: &Arc<CachedObject>,
    req_headers: &HeaderMap,
    fresh: &Freshness,
    now: SystemTime,
) -> Option<Response<RespBody>> {
    let stored = obj.fields_map();
    if !pre_encoded::has_date(&stored)
        || (obj.status == StatusCode::OK && policy::not_modified(req_headers, &*stored))
    {
        return None;
    }
    let secs = obj.age_to_send(fresh.age(now).as_secs());
    let block = pre_encoded::block(obj, &stored);
    let (block, age_in_map) = match pre_encoded::age(secs) {
        Some(age) => (block.followed_by(&age), false),
        None => (block, true),
    };
    let mut resp = Response::new(RespBody::full_pre_encoded(obj.body.clone(), block));
    *resp.status_mut() = obj.status;
    if age_in_map {
        resp.headers_mut().insert(header::AGE, age::value(secs));
    }
    Some(resp)
}

/// Serves a GET or HEAD through the cache. `upstream_req` is the request prepared for the
/// upstream (headers already rewritten), sent only when the cache cannot answer, through
/// the group's one door (`Group::forward`). Notes the decision (`record.cache`) and the
/// server that answered (`record.upstream`) in the exchange record.
pub async fn serve(
    mut ctx: Ctx<'_>,
    mut upstream_req: Request<ReqBody>,
    record: &mut Record,
) -> Result<Response<RespBody>, ProxyError> {
    let now = ctx.cache.now();
    let primary = match ctx.primary.take() {
        Some(primary) => primary,
        None => {
            let pq = upstream_req
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str());
            primary_key(ctx.policy, ctx.scheme, &ctx.host, pq, &ctx.req_headers)
        }
    };
    let req_cc = request_directives(ctx.policy, &ctx.req_headers);
    let is_head = upstream_req.method() == Method::HEAD;
    // The client's conditionals are answered here, from the stored (or new) response,
    // and so is its range (from the whole object; `range`).
    strip_conditionals(upstream_req.headers_mut());
    // The origin is asked for the variant the response will be stored as: one coding,
    // and the listed value of each `vary_normalise` field.
    ctx.policy.vary.rewrite_request(upstream_req.headers_mut());
    let range_asked = upstream_req.headers_mut().remove(header::RANGE).is_some();

    let stored = ctx
        .cache
        .lookup(&primary, &ctx.req_headers, &ctx.policy.vary)
        .await;
    // Why the origin is asked, should it be.
    let mut miss = Miss::Absent;
    if let Some(obj) = &stored {
        let fresh = freshness(obj, ctx.policy);
        let answer = match policy::request_decision(&req_cc, &fresh, now) {
            Reuse::Fresh => {
                if ctx.policy.refresh_ahead && refresh_ahead_due(&fresh, now) {
                    spawn_refresh(&ctx, &upstream_req, obj.clone(), &primary);
                }
                Some((CacheStatus::Hit, &ctx.cache.stats.hits))
            }
            Reuse::StaleAccepted => {
                Some((CacheStatus::Stale(Stale::Accepted), &ctx.cache.stats.stale))
            }
            Reuse::StaleWhileRevalidate => {
                spawn_refresh(&ctx, &upstream_req, obj.clone(), &primary);
                Some((
                    CacheStatus::Stale(Stale::WhileRevalidate),
                    &ctx.cache.stats.stale,
                ))
            }
            Reuse::OnlyIfCachedMiss => {
                record.cache = Some(CacheStatus::Miss(Miss::Expired));
                return Ok(only_if_cached_miss());
            }
            Reuse::Revalidate => {
                miss = if fresh.is_fresh(now) {
                    Miss::ClientRefresh
                } else {
                    Miss::Expired
                };
                None
            }
        };
        if let Some((status, counter)) = answer {
            counter.fetch_add(1, Relaxed);
            record.cache = Some(status);
            return Ok(respond_stored(obj, &ctx.req_headers, is_head, &fresh, now));
        }
    } else if req_cc.only_if_cached {
        record.cache = Some(CacheStatus::Miss(Miss::Absent));
        return Ok(only_if_cached_miss());
    }
    record.cache = Some(CacheStatus::Miss(miss));

    if is_head && stored.is_none() {
        // A HEAD miss is relayed as is (a range with its If-Range); only GET responses
        // are stored.
        ctx.cache.stats.misses.fetch_add(1, Relaxed);
        range::restore(upstream_req.headers_mut(), &ctx.req_headers);
        let resp = fetch(&ctx, upstream_req, record).await?;
        let (mut parts, body) = resp.into_parts();
        if parts.status.is_success()
            && cache::range::precondition_failed(&ctx.req_headers, &parts.headers)
        {
            return Ok(range::precondition_failed());
        }
        super::strip_hop_by_hop(&mut parts.headers, false);
        strip_own_fields(&mut parts.headers);
        return Ok(Response::from_parts(parts, RespBody::upstream(body)));
    }

    // One request per key goes to the origin; the others wait for its result: in this
    // process by coalescing, across nodes by the lease in the shared tier.
    let flight = match ctx.cache.join(&primary) {
        Join::Leader(guard) => {
            let usable = |o: &CachedObject| {
                policy::request_decision(&req_cc, &freshness(o, ctx.policy), ctx.cache.now())
                    .serves_stored()
            };
            let wait = ctx.group.config.response_timeout;
            match ctx
                .cache
                .lease(&primary, &ctx.req_headers, &ctx.policy.vary, wait, usable)
                .await
            {
                LeaseOutcome::Fetch => Some(guard),
                LeaseOutcome::Found(obj) => {
                    // Another node fetched it: serve its copy, and hand it to our followers.
                    guard.finish(FlightState::Stored(obj.clone()));
                    let now = ctx.cache.now();
                    let fresh = freshness(&obj, ctx.policy);
                    let status = if policy::request_decision(&req_cc, &fresh, now) == Reuse::Fresh {
                        ctx.cache.stats.hits.fetch_add(1, Relaxed);
                        CacheStatus::Hit
                    } else {
                        ctx.cache.stats.stale.fetch_add(1, Relaxed);
                        CacheStatus::Stale(Stale::Shared)
                    };
                    ctx.cache.stats.coalesced.fetch_add(1, Relaxed);
                    record.cache = Some(status);
                    return Ok(respond_stored(&obj, &ctx.req_headers, is_head, &fresh, now));
                }
            }
        }
        Join::Pass => None,
        Join::Follower(rx) => {
            if cache::follow(rx, ctx.group.config.response_timeout)
                .await
                .is_some()
            {
                if let Some(obj) = ctx
                    .cache
                    .lookup(&primary, &ctx.req_headers, &ctx.policy.vary)
                    .await
                {
                    let fresh = freshness(&obj, ctx.policy);
                    if policy::request_decision(&req_cc, &fresh, ctx.cache.now()).serves_stored() {
                        ctx.cache.stats.coalesced.fetch_add(1, Relaxed);
                        ctx.cache.stats.hits.fetch_add(1, Relaxed);
                        record.cache = Some(CacheStatus::Hit);
                        return Ok(respond_stored(
                            &obj,
                            &ctx.req_headers,
                            is_head,
                            &fresh,
                            ctx.cache.now(),
                        ));
                    }
                }
            }
            None
        }
    };

    // Should the object be too large to answer the range from, the range goes as it came.
    let reforward = (range_asked && !is_head).then(|| range::copy_head(&upstream_req));
    if let Some(obj) = &stored {
        upstream_req
            .headers_mut()
            .extend(policy::validators_for(&obj.headers));
    }
    let request_time = ctx.cache.now();
    let result = fetch(&ctx, upstream_req, record).await;
    let response_time = ctx.cache.now();

    let resp = match result {
        Ok(resp) if !resp.status().is_server_error() => resp,
        failed => {
            // The origin failed: a stale copy may answer instead (stale-if-error).
            if let Some(obj) = &stored {
                let fresh = freshness(obj, ctx.policy);
                if fresh.can_serve_stale_on_error(&req_cc, response_time) {
                    ctx.cache.stats.stale.fetch_add(1, Relaxed);
                    record.cache = Some(CacheStatus::Stale(Stale::IfError));
                    return Ok(respond_stored(
                        obj,
                        &ctx.req_headers,
                        is_head,
                        &fresh,
                        response_time,
                    ));
                }
            }
            let resp = failed?;
            // A 5xx with explicit freshness (or a `status_ttl`) is stored like any other
            // response (RFC 9111 §4.2.1); one without is relayed.
            if !policy::has_explicit_freshness(resp.status(), resp.headers(), &ctx.policy.store) {
                ctx.cache.stats.misses.fetch_add(1, Relaxed);
                let (mut parts, body) = resp.into_parts();
                super::strip_hop_by_hop(&mut parts.headers, false);
                strip_own_fields(&mut parts.headers);
                return Ok(Response::from_parts(parts, RespBody::upstream(body)));
            }
            resp
        }
    };

    if resp.status() == StatusCode::NOT_MODIFIED {
        if let Some(obj) = &stored {
            let refreshed = refreshed_by_304(
                obj,
                resp.headers(),
                &primary,
                ctx.policy,
                &ctx.req_headers,
                request_time,
                response_time,
            );
            ctx.cache.stats.revalidated.fetch_add(1, Relaxed);
            let fresh = freshness(&refreshed.0, ctx.policy);
            let obj = Arc::new(refreshed.0);
            ctx.cache.store(obj.clone(), refreshed.1);
            if let Some(flight) = flight {
                flight.finish(FlightState::Stored(obj.clone()));
            }
            record.cache = Some(CacheStatus::Revalidated);
            return Ok(respond_stored(
                &obj,
                &ctx.req_headers,
                is_head,
                &fresh,
                response_time,
            ));
        }
    }

    ctx.cache.stats.misses.fetch_add(1, Relaxed);
    let (mut parts, body) = resp.into_parts();
    super::strip_hop_by_hop(&mut parts.headers, false);
    // Parsed once: whether it may be stored, and how, are decided from this one value.
    let directives = ResponseDirectives::parse(parts.status, &parts.headers, &ctx.policy.store);
    let storable = directives.storable(&Method::GET, &req_cc, &ctx.req_headers, &ctx.policy.store);
    // Whether the store keeps every field (none is `no-cache="field"` or `private="field"`).
    let whole = directives.unshared_fields(&ctx.policy.store).is_empty();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let fits = length.is_none_or(|l| l <= ctx.policy.max_object_size);
    let template = match storable {
        // A HEAD response has no body: it never becomes the stored GET response.
        Ok(()) if is_head => None,
        Ok(()) if fits => {
            let template = to_store(
                &primary,
                &directives,
                ctx.policy,
                &ctx.req_headers,
                request_time,
                response_time,
            );
            if template.is_none() {
                // Nothing to keep (no freshness, no validators): don't queue requests.
                ctx.cache
                    .mark_uncacheable(&primary, ctx.policy.hit_for_miss);
            }
            template
        }
        Ok(()) => None,
        Err(reason) => {
            // Hit-for-miss only for what the response says about itself: one client's
            // Authorization or no-store must not stop coalescing for everyone else.
            let request_side = reason == policy::NoStoreReason::Authorization || req_cc.no_store;
            if reason != policy::NoStoreReason::Status && !request_side {
                ctx.cache
                    .mark_uncacheable(&primary, ctx.policy.hit_for_miss);
            }
            None
        }
    };
    if !fits {
        ctx.cache
            .mark_uncacheable(&primary, ctx.policy.hit_for_miss);
    }
    if stored.is_some() && template.is_none() && !parts.status.is_server_error() {
        // The new response replaces the stored one, even when it can't be stored itself
        // (in the shared tier too, so no node refills the old copy from there).
        let url = UrlMatch::Exact(key::url_of(&primary).to_string());
        if ctx.cache.shared().is_some() {
            ctx.cache.invalidate(&url);
        } else {
            ctx.cache.purge_urls(&url, false).await;
        }
    }
    strip_own_fields(&mut parts.headers);
    if let (Some(reforward), StatusCode::OK) = (reforward, parts.status) {
        let (fill, head) = ((template, flight, length), (parts, body));
        return range::answer_miss(&ctx, head, fill, reforward, record).await;
    }
    let client_not_modified = template.is_some()
        && parts.status == StatusCode::OK
        && policy::not_modified(&ctx.req_headers, &parts.headers);
    // If-Match / If-Unmodified-Since fail for the new response (RFC 9110 §13.1.1, §13.1.4).
    let client_failed = parts.status == StatusCode::OK
        && cache::range::precondition_failed(&ctx.req_headers, &parts.headers);
    let filling = template.is_some();
    // An HTTP/1 client's response goes out with the lines just written for the store.
    let raw = match &template {
        Some((obj, _))
            if record.version <= Version::HTTP_11
                && whole
                && length.is_some()
                && http_body::Body::size_hint(&body).exact() == length =>
        {
            raw_miss_head(
                obj,
                &parts,
                &ctx,
                length,
                CacheStatus::Miss(miss).raw_lines(),
            )
        }
        _ => None,
    };
    let body = match template {
        Some((obj, index)) => {
            let max = ctx
                .policy
                .max_object_size
                .min(ctx.cache.memory().max_object_bytes()) as usize;
            RespBody::filling(
                body,
                Fill::new(ctx.cache.clone(), flight, obj, index, max, length),
            )
        }
        None => RespBody::upstream(body),
    };
    if client_failed {
        if filling {
            tokio::spawn(drain(body));
        }
        return Ok(range::precondition_failed());
    }
    if client_not_modified {
        // The body still streams into the cache in the background.
        tokio::spawn(drain(body));
        return Ok(not_modified_response(&parts.headers, None));
    }
    let body = match raw {
        Some(raw) => {
            // Emptied, its room kept for the fields the response step adds (`X-Request-ID`).
            parts.headers.clear();
            body.with_raw(raw)
        }
        None => body,
    };
    Ok(Response::from_parts(parts, body))
}

/// The head of a stored miss's response as pre-encoded lines (`hyper::RawFields`): the
/// fields just written for the store (`to_store`), then `tail` (the miss's `X-Cache` and
/// `Via`), then the origin's `Age`, so hyper encodes no map of them and the response step
/// adds nothing. The caller checks that the stored lines are all the client is owed (no
/// field kept from the store: `no-cache="field"`, `private="field"`) and that hyper
/// writes the body's known length; here: a GET's 200 with a `Date`, and nothing for
/// compression to do (`compress::plan` sends it as it is, without `Vary`), so the client
/// gets what the store keeps. `None` otherwise: the map goes.
fn raw_miss_head(
    obj: &ObjectParts,
    parts: &http::response::Parts,
    ctx: &Ctx<'_>,
    length: Option<u64>,
    tail: &'static [u8],
) -> Option<hyper::RawFields> {
    let PartsFields::Lines(stored) = &obj.headers else {
        return None;
    };
    if parts.status != StatusCode::OK {
        return None;
    }
    // The stored fields but the held ones (`cache::fields`), which the head leaves out:
    // framing (hyper's), `X-Cache`, `X-Request-ID` (the response step's), torii's
    // targeted field (never sent), and `Age`, written from `age` below.
    let lines = stored.raw()?;
    if let Some(config) = ctx.compress {
        let accept = super::compress::accept_encoding(&ctx.req_headers);
        let plan = super::compress::plan(
            config,
            accept.as_deref(),
            parts.status,
            &parts.headers,
            length,
        );
        if plan != (super::compress::Plan::AsIs { vary: false }) {
            return None;
        }
    }
    let age = match parts.headers.get(header::AGE) {
        Some(v) => Some(v.to_str().ok()?.trim().parse::<u64>().ok()?),
        None => None,
    };
    Some(hyper::RawFields { lines, tail, age })
}

/// Sends a request of the cache step to the route's group, through its one door, and
/// notes the server that answered.
async fn fetch(
    ctx: &Ctx<'_>,
    req: Request<ReqBody>,
    record: &mut Record,
) -> Result<Response<UpstreamBody>, upstream::Error> {
    let (mut parts, body) = req.into_parts();
    let asked_range = parts.headers.contains_key(header::RANGE);
    let forwarded = ctx
        .group
        .forward(
            &mut parts,
            body,
            &ctx.pick,
            HeadAs::Map,
            Patience::Queue,
            ctx.interim,
        )
        .await?;
    range::check_answer(&forwarded, asked_range)?;
    record.upstream = Some(forwarded.backend);
    Ok(forwarded.response)
}

/// Reads a body to its end (so a fill completes) and discards it.
async fn drain(mut body: RespBody) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// Answers a `PURGE` request on the proxy port: removes every stored variant of the URL.
pub async fn purge_request(
    cache: &Cache,
    policy: &CachePolicy,
    host: &str,
    path_and_query: &str,
    req_headers: &HeaderMap,
) -> Response<RespBody> {
    let primary = primary_key(policy, "http", host, path_and_query, req_headers);
    let url = key::url_of(&primary).to_string();
    // `UrlMatch` reaches the http and the https copy of the URL alike.
    let report = cache
        .purge(&Target::Urls(UrlMatch::Exact(url.clone())), false)
        .await;
    let purged = report.purged;
    let mut body = serde_json::json!({ "purged": purged.memory.max(purged.disk).max(purged.shared), "url": url, "memory": purged.memory, "disk": purged.disk, "shared": purged.shared, "scope": report.scope });
    if let Some(w) = report.warning {
        body["warning"] = w.into();
    }
    let status = if purged.memory + purged.disk + purged.shared > 0 {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let mut resp = Response::new(RespBody::full(format!("{body}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Invalidates what an unsafe request changed (RFC 9111 §4.4): the target URI and same-origin
/// `Location` / `Content-Location`.
#[allow(clippy::too_many_arguments)]
pub fn invalidate(
    cache: &Arc<Cache>,
    policy: &CachePolicy,
    method: &Method,
    status: StatusCode,
    scheme: &str,
    host: &str,
    pq: &str,
    resp_headers: &HeaderMap,
) {
    let uris = policy::invalidated_uris(method, status, scheme, host, pq, resp_headers);
    for uri in uris {
        let Ok(uri) = uri.parse::<http::Uri>() else {
            continue;
        };
        let (Some(authority), Some(pq)) = (uri.authority(), uri.path_and_query()) else {
            continue;
        };
        let url = key::canonical_url(&policy.key, "http", authority.as_str(), pq.as_str());
        // Before the response goes out: the client's next GET must not see the old copy,
        // over http or https (`UrlMatch` reaches both).
        cache.invalidate(&UrlMatch::Exact(url));
    }
}

/// Freshness of a stored object, with the route's grace and stale-if-error minimums, and
/// clamped by a soft purge (`meta.fresh_until()` moved to the past).
fn freshness(obj: &CachedObject, p: &CachePolicy) -> Freshness {
    obj.memo
        .get_or(p.freshness_id, || compute_freshness(obj, p))
}

fn compute_freshness(obj: &CachedObject, p: &CachePolicy) -> Freshness {
    // Kept by the store for its route's policy: computed here for another policy only.
    let mut f = Freshness::from_response(
        obj.status,
        &obj.headers.to_map(),
        &p.store,
        obj.meta.request_time(),
        obj.meta.response_time(),
    );
    widen(&mut f, p);
    let expires = f.stored_at + f.lifetime.saturating_sub(f.age_at_store);
    if obj.meta.fresh_until() < expires {
        let fresh_for = obj
            .meta
            .fresh_until()
            .duration_since(f.stored_at)
            .unwrap_or(Duration::ZERO);
        f.lifetime = f.age_at_store.saturating_add(fresh_for);
    }
    f
}

/// Applies the route's grace and stale-if-error minimums, only to responses that were
/// given a freshness lifetime: one that had none (no `Cache-Control`, `Expires` or
/// `Last-Modified`) may differ per request and is never served without the origin.
fn widen(f: &mut Freshness, p: &CachePolicy) {
    if !f.must_revalidate && !f.no_cache && !f.lifetime.is_zero() {
        f.stale_while_revalidate = f.stale_while_revalidate.max(p.grace);
        f.stale_if_error = f.stale_if_error.max(p.stale_if_error);
    }
}

/// Builds the object to store for a response (body filled in later), and the `Vary`
/// marker for its primary key when it has variants. `None` when it can't be stored, or
/// would be of no use: no freshness, no stale window and no validators.
fn to_store(
    primary: &str,
    directives: &ResponseDirectives,
    p: &CachePolicy,
    req_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Option<(ObjectParts, Option<CachedObject>)> {
    let (status, headers) = (directives.status, directives.headers);
    let mut f = directives.freshness(&p.store, request_time, response_time);
    widen(&mut f, p);
    let fresh_until = response_time + f.lifetime.saturating_sub(f.age_at_store);
    let mut stale_until = fresh_until + f.stale_while_revalidate.max(f.stale_if_error);
    if headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED) {
        stale_until += p.keep;
    }
    if stale_until <= response_time {
        return None;
    }
    let secondary = policy::secondary_key(headers.get_all(header::VARY), req_headers, &p.vary)?;
    let key = if secondary.is_empty() {
        primary.to_string()
    } else {
        cache::variant_key(primary, &secondary)
    };
    // One pass over the fields (two lookups of these uncommon names cost more).
    let mut tags = Vec::new();
    let mut cache_tags = Vec::new();
    for (name, v) in headers {
        if *name == SURROGATE_KEY {
            tags.extend(
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .map(str::to_string),
            );
        } else if *name == CACHE_TAG {
            cache_tags.extend(
                String::from_utf8_lossy(v.as_bytes())
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            );
        }
    }
    tags.append(&mut cache_tags);
    let obj = ObjectParts {
        meta: ObjectMeta::new(key, request_time, response_time, fresh_until, stale_until)
            .with_tags(tags),
        status,
        headers: PartsFields::Lines(StoredFields::from_map_except(
            headers,
            &directives.unshared_fields(&p.store),
        )),
        freshness: Some((p.freshness_id, f)),
    };
    let index = (!secondary.is_empty()).then(|| Cache::variants_index(primary, &obj));
    Some((obj, index))
}

/// The stored object updated by a 304 (RFC 9111 §4.3.4): merged headers, new times.
fn refreshed_by_304(
    obj: &CachedObject,
    headers_304: &HeaderMap,
    primary: &str,
    p: &CachePolicy,
    req_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> (CachedObject, Option<CachedObject>) {
    let mut headers = obj.headers.to_map();
    policy::merge_304(&mut headers, headers_304);
    match to_store(
        primary,
        &ResponseDirectives::parse(obj.status, &headers, &p.store),
        p,
        req_headers,
        request_time,
        response_time,
    ) {
        Some((fresh, index)) => (fresh.into_object(std::slice::from_ref(&obj.body)), index),
        None => (obj.clone(), None),
    }
}

/// Builds the response for a stored object: its status and headers with `Age` (the
/// response step adds `X-Cache`), the shared body (no copy), or a 304 when the client's validators match.
fn respond_stored(
    obj: &CachedObject,
    req_headers: &HeaderMap,
    is_head: bool,
    fresh: &Freshness,
    now: SystemTime,
) -> Response<RespBody> {
    let age = age::value(obj.age_to_send(fresh.age(now).as_secs()));
    let stored = obj.fields_map();
    if cache::range::asks(req_headers) && super::compress::range_servable(&stored, req_headers) {
        let (status, body) = (obj.status, &obj.body);
        if let Some(resp) = range::answer(status, &stored, body, req_headers, is_head, Some(&age)) {
            return resp;
        }
    }
    if obj.status == StatusCode::OK && policy::not_modified(req_headers, &*stored) {
        return not_modified_response(&stored, Some(age));
    }
    let body = if is_head {
        RespBody::empty()
    } else {
        RespBody::full(obj.body.clone())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = obj.status;
    let headers = resp.headers_mut();
    *headers = stored.into_owned();
    strip_own_fields(headers);
    headers.insert(header::AGE, age);
    if is_head && !headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.body.len()));
    }
    resp
}

/// A 304 carrying the fields RFC 9110 §15.4.5 asks for.
fn not_modified_response(stored: &HeaderMap, age: Option<HeaderValue>) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = resp.headers_mut();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for v in stored.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    if let Some(age) = age {
        headers.insert(header::AGE, age);
    }
    resp
}

fn only_if_cached_miss() -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(
        "504 Gateway Timeout: not in cache (only-if-cached)\n",
    ));
    *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    resp
}

fn strip_conditionals(headers: &mut HeaderMap) {
    const CONDITIONALS: [HeaderName; 5] = [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ];
    // Most requests carry none: one pass over their few fields costs less than five
    // removals, each a hash and a probe.
    if !headers.keys().any(|n| CONDITIONALS.contains(n)) {
        return;
    }
    for name in CONDITIONALS {
        headers.remove(name);
    }
}

/// Refresh-ahead: in the last tenth of a fresh entry's life (lifetimes of 2 s or more), each
/// hit triggers a background refresh with a probability that grows linearly from 0 to 1,
/// so a hot entry is refreshed before it expires and a cold one is left to expire (a
/// linear cousin of XFetch, Vattani et al., VLDB 2015; at most one refresh runs per key).
fn refresh_ahead_due(fresh: &Freshness, now: SystemTime) -> bool {
    refresh_window(fresh, now).is_some_and(|p| random_unit() < p)
}

/// In the last tenth of a lifetime of 2 s or more: the probability (0..1, growing to 1 at
/// expiry) with which a hit refreshes the entry.
fn refresh_window(fresh: &Freshness, now: SystemTime) -> Option<f64> {
    if fresh.lifetime < Duration::from_secs(2) {
        return None;
    }
    let window = fresh.lifetime.as_secs_f64() * 0.1;
    let remaining = fresh.remaining(now).as_secs_f64();
    (remaining < window).then(|| 1.0 - remaining / window)
}

fn random_unit() -> f64 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0x9e37_79b9, |d| d.as_nanos() as u64) | 1
    ));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Refreshes `obj` in the background (one refresh per key at a time): a conditional GET;
/// a 304 or a new storable response replaces the entry. Failures leave the entry alone.
fn spawn_refresh(
    ctx: &Ctx<'_>,
    upstream_req: &Request<ReqBody>,
    obj: Arc<CachedObject>,
    primary: &str,
) {
    let Some(guard) = ctx.cache.start_refresh(&obj.meta.key) else {
        return;
    };
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(upstream_req.uri().clone())
        .version(upstream_req.version());
    if let Some(h) = req.headers_mut() {
        *h = upstream_req.headers().clone();
        strip_conditionals(h);
        h.extend(policy::validators_for(&obj.headers));
    }
    let Ok(req) = req.body(ReqBody::Empty) else {
        return;
    };
    let (cache, group, pick, p) = (
        ctx.cache.clone(),
        ctx.group.clone(),
        ctx.pick.clone(),
        ctx.policy.clone(),
    );
    let (req_headers, primary) = (ctx.req_headers.clone(), primary.to_string());
    tokio::spawn(async move {
        let _guard = guard;
        // With a shared tier, one node refreshes for the cluster; the others take its copy.
        if !cache.claim_refresh(&obj).await {
            return;
        }
        let _lease = LeaseRelease {
            cache: cache.clone(),
            primary: primary.clone(),
        };
        let request_time = cache.now();
        // Through the one door, but never ahead of clients: a saturated group leaves
        // the stored copy as it is.
        let (mut head, body) = req.into_parts();
        let Ok(forwarded) = group
            .forward(&mut head, body, &pick, HeadAs::Map, Patience::Never, None)
            .await
        else {
            return;
        };
        let resp = forwarded.response;
        let response_time = cache.now();
        if resp.status() == StatusCode::NOT_MODIFIED {
            let (fresh, index) = refreshed_by_304(
                &obj,
                resp.headers(),
                &primary,
                &p,
                &req_headers,
                request_time,
                response_time,
            );
            cache.stats.revalidated.fetch_add(1, Relaxed);
            cache.store(Arc::new(fresh), index);
            return;
        }
        let (mut parts, body) = resp.into_parts();
        super::strip_hop_by_hop(&mut parts.headers, false);
        let directives = ResponseDirectives::parse(parts.status, &parts.headers, &p.store);
        let req_cc = policy::request_cache_control(&req_headers);
        if directives
            .storable(&Method::GET, &req_cc, &req_headers, &p.store)
            .is_err()
        {
            return;
        }
        let Some((fresh, index)) = to_store(
            &primary,
            &directives,
            &p,
            &req_headers,
            request_time,
            response_time,
        ) else {
            return;
        };
        let limited = http_body_util::Limited::new(body, p.max_object_size as usize);
        let Ok(collected) = limited.collect().await else {
            return;
        };
        let body = collected.to_bytes();
        if let Some(len) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if len != body.len() {
                return;
            }
        }
        cache.store(Arc::new(fresh.into_object(&[body])), index);
    });
}

/// Gives back a cluster-wide lease a background refresh may hold when it ends (a no-op once
/// `Cache::store` has taken it over).
struct LeaseRelease {
    cache: Arc<Cache>,
    primary: String,
}

impl Drop for LeaseRelease {
    fn drop(&mut self) {
        self.cache.release_lease(&self.primary);
    }
}
