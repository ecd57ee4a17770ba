//! `handle()`: the whole request path in one function.
//!
//! limits → route → cache (`cached`) → upstream → response headers → observe.

pub mod cached;
pub mod compress;
pub mod rules;
pub mod trace;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::body::{Head, RespBody};
use crate::cache::status::{Bypass, CacheStatus, X_CACHE};
use crate::config::rules::RouteRules;
use crate::config::{Action, Route};
use crate::connection::ConnState;
use crate::error::ProxyError;
use crate::identity;
use crate::limits;
use crate::observe::{Exchange, Record};
use crate::runtime::{Runtime, Shared};
use crate::upstream::{self, HeadAs, Patience, PickContext, RawTail, ReqBody, UpstreamBody};

/// The `Via` torii adds to every response (a pre-encoded hit carries it in its lines).
const VIA_TEXT: &str = "1.1 torii";
const VIA: HeaderValue = HeaderValue::from_static(VIA_TEXT);
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Serves one downstream request. Never fails: every error becomes a response
/// (`ProxyError::to_response`), logged with its cause.
///
/// Not an `async fn`: hyper keeps a slot per connection sized for the returned future,
/// idle or not, so a request that is answered at once (a hit, a fixed answer, an error)
/// is returned ready, and only one that goes on to the upstream gets a (boxed) future.
pub fn handle(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
) -> Handled {
    let runtime = shared.current();
    if !runtime.config.limits.underscores_in_headers {
        let dropped = limits::drop_underscore_headers(req.headers_mut());
        if dropped > 0 {
            use crate::observe::metrics::HEADER_DROP_UNDERSCORE;
            shared.metrics.request_headers_dropped[HEADER_DROP_UNDERSCORE].add(dropped as u64);
        }
    }
    // From here on `peer` is the client (trusted proxies resolved, see `identity`).
    let peer = identity::resolve(
        peer,
        req.headers_mut(),
        &runtime.config.server.trusted_proxies,
    );
    let mut record = Record {
        start: Some(Instant::now()),
        method: req.method().clone(),
        version: req.version(),
        tls: conn.tls().map(|t| t.version),
        ..Record::default()
    };
    // The listener's index in `server.listeners` (its TLS and redirect settings).
    let li = conn.listener;
    let ids = trace::Ids::new(req.headers(), &runtime.config.identity);
    if runtime.access_log.is_some() {
        record.request_id = Some(String::from_utf8_lossy(ids.request_id.as_bytes()).into_owned());
        record.trace_id = ids.trace_hex();
        record.time = Some(SystemTime::now());
        record.client = Some(peer);
        record.target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().to_string(), |pq| pq.to_string());
        record.referer = header_string(req.headers(), header::REFERER);
        record.user_agent = header_string(req.headers(), header::USER_AGENT);
    }
    // Boxed once here, then only the pointer moves: through this future (which hyper keeps
    // a slot for per connection, idle or not) and into the response body.
    let mut exchange = Box::new(Exchange::start(conn, runtime.access_log.clone(), record));

    let client = Client {
        addr: peer,
        cert_verified: exchange.conn.tls().is_some_and(|t| t.client_verified()),
    };
    let admitted = admit(&mut req, client, li, &runtime, &mut exchange.record);
    let (route, host, looked, auth) = match admitted {
        Ok(Next::Done(mut resp)) => {
            let ask = exchange
                .record
                .route
                .and_then(|id| compress::Ask::of(&req, &runtime.config.routes[id.0]));
            let rules = rule_vars(&req, peer, &runtime, &exchange, &ids);
            lend_headers(resp.headers_mut(), req.into_parts().0.headers);
            return Handled::Ready(Some(finish(
                Ok(resp),
                exchange,
                &runtime,
                &shared,
                peer,
                Answering {
                    ask,
                    rules: rules.as_ref(),
                    ids,
                },
            )));
        }
        Err(e) => {
            let rules = rule_vars(&req, peer, &runtime, &exchange, &ids);
            return Handled::Ready(Some(finish(
                Err(e),
                exchange,
                &runtime,
                &shared,
                peer,
                Answering {
                    ask: None,
                    rules: rules.as_ref(),
                    ids,
                },
            )));
        }
        Ok(Next::Proxy {
            route,
            host,
            looked,
        }) => (route.id, host, looked, None),
        Ok(Next::Auth {
            route,
            host,
            pending,
        }) => (route.id, host, Looked::Not, Some(pending)),
    };
    let ask = compress::Ask::of(&req, &runtime.config.routes[route.0]);
    let rules = rule_vars(&req, peer, &runtime, &exchange, &ids);
    Handled::Waiting(Box::pin(async move {
        let route = &runtime.config.routes[route.0];
        let mut looked = looked;
        // A group that names the client in a PROXY header on each connection finds it here.
        if let Some(Some(group)) = runtime.route_groups.get(route.id.0) {
            if group.config.send_proxy_protocol.is_some() {
                req.extensions_mut()
                    .insert(upstream::proxy_header::ProxyAddrs {
                        src: peer,
                        dst: exchange.conn.local.unwrap_or(peer),
                    });
            }
        }
        // Auth that needs a wait (`auth::Pending`); then the rest of `admit`, a hit
        // included, for a request that passed. `Some`: answered without the upstream.
        let answered = match auth {
            None => None,
            Some(pending) => match Box::pin(pending.settle()).await {
                Ok(passed) => {
                    passed.apply(req.headers_mut());
                    match answer(&req, route, host.clone(), &runtime, &mut exchange.record) {
                        Ok(Next::Proxy { looked: l, .. }) => {
                            looked = l;
                            None
                        }
                        Ok(Next::Done(resp)) => Some(Ok(resp)),
                        Ok(Next::Auth { .. }) => unreachable!("`answer` does not check auth"),
                        Err(e) => Some(Err(e)),
                    }
                }
                Err(refusal) => Some(Ok(refusal.into_response())),
            },
        };
        let result = match answered {
            Some(result) => result,
            None => {
                // An origin's interim (1xx) answers go on to an HTTP/1.1 client (hyper
                // writes what `ConnState` queues) and to an HTTP/2 one (hyper sends, on this
                // request's stream, what this future hands it while polled); both torii
                // patch 11. Never to HTTP/1.0 (RFC 9110 §15.2); never stored.
                let conn = &*exchange.conn;
                let relay = move |head: Response<()>| conn.relay_interim(head);
                let relay_h2 = |head: Response<()>| {
                    // Given back only if not called from within this stream's poll, which
                    // the upstream exchange (polled inline by this future) always is.
                    let _ = hyper::ext::send_informational(head);
                };
                let interim: upstream::Interim<'_> = match req.version() {
                    Version::HTTP_11 => Some(&relay),
                    Version::HTTP_2 => Some(&relay_h2),
                    _ => None,
                };
                proxy(
                    req,
                    peer,
                    route,
                    host,
                    looked,
                    &runtime,
                    &mut exchange.record,
                    interim,
                    rules.as_ref(),
                    &ids,
                )
                .await
            }
        };
        finish(
            result,
            exchange,
            &runtime,
            &shared,
            peer,
            Answering {
                ask,
                rules: rules.as_ref(),
                ids,
            },
        )
    }))
}

/// A route's rules and what their variables stand for, when the route has any.
type RuleVars = (Arc<RouteRules>, rules::Vars);

fn rule_vars<B>(
    req: &Request<B>,
    peer: SocketAddr,
    runtime: &Runtime,
    exchange: &Exchange,
    ids: &trace::Ids,
) -> Option<RuleVars> {
    let record = &exchange.record;
    let id = record.route?;
    let route = runtime.config.routes.get(id.0)?;
    let found = route.rules.as_ref()?;
    let upstream = match &route.action {
        Action::Proxy { upstream, .. } => upstream.0.clone(),
        _ => String::new(),
    };
    let vars = rules::Vars {
        client_ip: peer.ip(),
        host: request_host(req).map_or_else(String::new, |h| h.to_string()),
        scheme: record.scheme(),
        method: req.method().clone(),
        path_and_query: req.uri().path_and_query().cloned(),
        request_id: String::from_utf8_lossy(ids.request_id.as_bytes()).into_owned(),
        route: id.0,
        upstream,
        client_cert: exchange.conn.tls().and_then(|t| t.client_cert.clone()),
    };
    Some((found.clone(), vars))
}

/// hyper keeps a response's header map (drained as it is written) for the connection's
/// next request. A response written from raw lines has an empty, unallocated map: it takes
/// the request's, emptied, and the next request is parsed into that without allocating.
fn lend_headers(resp: &mut HeaderMap, mut request: HeaderMap) {
    if resp.capacity() == 0 {
        request.clear();
        *resp = request;
    }
}

/// The future `handle` returns: ready at once, or waiting on the upstream.
// The ready response inline: boxing it would cost every hit an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    Ready(Option<Response<RespBody>>),
    Waiting(Pin<Box<dyn Future<Output = Response<RespBody>> + Send>>),
}

impl Future for Handled {
    type Output = Result<Response<RespBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Handled::Ready(resp) => {
                let resp = resp.take().expect("polled after it ended");
                Poll::Ready(Ok(hand_over_head(resp)))
            }
            Handled::Waiting(fut) => fut.as_mut().poll(cx).map(hand_over_head).map(Ok),
        }
    }
}

/// A response's fields encoded beforehand (`body::Head`) go to hyper in the poll that
/// gives the response, as it asks: HTTP/1 lines to the connection
/// (`hyper::ext::send_raw_fields`), an HTTP/2 block to the stream
/// (`hyper::ext::send_pre_encoded`). Each is made only for a request of its version.
fn hand_over_head(mut resp: Response<RespBody>) -> Response<RespBody> {
    match resp.body_mut().take_head() {
        Head::Map => {}
        Head::Raw(raw) => {
            let handed = hyper::ext::send_raw_fields(raw);
            debug_assert!(handed.is_ok(), "raw lines outside an HTTP/1 connection");
        }
        Head::PreEncoded(block) => {
            let handed = hyper::ext::send_pre_encoded(block);
            debug_assert!(
                handed.is_ok(),
                "a pre-encoded response outside an HTTP/2 stream"
            );
        }
    }
    resp
}

/// What the response step needs of the request it answers: its compression ask, its
/// route's response rules with their variables, and its request and trace ids.
struct Answering<'a> {
    ask: Option<compress::Ask>,
    rules: Option<&'a RuleVars>,
    ids: trace::Ids,
}

/// The response step: an error becomes its response (logged, counted), `Via` is added,
/// and the exchange rides on the body until it ends (access log, metrics).
fn finish(
    result: Result<Response<RespBody>, ProxyError>,
    mut exchange: Box<Exchange>,
    runtime: &Runtime,
    shared: &Shared,
    peer: SocketAddr,
    answering: Answering<'_>,
) -> Response<RespBody> {
    let Answering { ask, rules, ids } = answering;
    let mut resp = match result {
        Ok(resp) => match &ask {
            Some(ask) => {
                compress::apply(resp, ask, runtime.config.limits.max_body, &shared.metrics)
            }
            None => resp,
        },
        Err(e) => {
            let cause = upstream::error_chain(&e);
            match e.status() {
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
                    tracing::warn!(%peer, "{cause}")
                }
                _ => tracing::debug!(%peer, "{cause}"),
            }
            exchange.record.error = Some(cause);
            let rejection = match e {
                ProxyError::RateLimited { .. } => Some(0),
                ProxyError::Upstream(upstream::Error::QueueFull { .. }) => Some(1),
                ProxyError::Upstream(upstream::Error::QueueTimeout { .. }) => Some(2),
                _ => None,
            };
            if let Some(i) = rejection {
                shared.metrics.rejections[i].inc();
            }
            e.to_response()
        }
    };
    // A pre-encoded head (a hit, a relayed answer) carries its `Via` and `X-Cache` in its
    // raw lines, spelled from the same decision (`CacheStatus::raw_lines`); an HTTP/2
    // hit's pre-encoded fields too (`cached::pre_encoded`).
    if !resp.body().is_pre_encoded() {
        let headers = resp.headers_mut();
        headers.append(header::VIA, VIA);
        if let (Some(status), true) = (exchange.record.cache, exchange.record.error.is_none()) {
            headers.insert(X_CACHE, status.header());
        }
    }
    // After any raw lines (left out of them: `cache::object`, `upstream::h1::head`).
    resp.headers_mut()
        .insert(trace::X_REQUEST_ID, ids.request_id);
    // Response rules, on every answer: after the lookup, on what the client is sent.
    if let Some((rules, vars)) = rules {
        rules::apply_response(&rules.response, &mut resp, vars);
    }
    exchange.record.status = resp.status();
    let (route, group) = match exchange.record.route {
        Some(id) => runtime.metrics_of(id),
        None => (None, None),
    };
    exchange.observe(route, group);
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.with_exchange(exchange))
}

/// The lines a relayed HTTP/1 head ends with (see `HeadAs::RawLines`): the `X-Cache` of
/// `status`, then `Via`, replacing any `X-Cache` of the server's.
fn raw_tail(status: CacheStatus) -> RawTail {
    RawTail {
        lines: status.raw_lines(),
        replaces: "x-cache",
    }
}

/// Who is asking, as `admit` checks it: the resolved client address, and whether the
/// connection presented a verified client certificate (mutual TLS).
#[derive(Debug, Clone, Copy)]
struct Client {
    addr: SocketAddr,
    cert_verified: bool,
}

/// What `admit` decided for a request.
// The response is moved once, straight into hyper; boxing it would cost a hit an allocation.
#[allow(clippy::large_enum_variant)]
enum Next<'r> {
    /// Answered at once, without waiting on anything: a fixed response, a redirect, a
    /// fresh hit from the memory tier.
    Done(Response<RespBody>),
    /// The rest of the path (`proxy`): the cache step's slow paths and the upstream.
    Proxy {
        route: &'r Route,
        host: Option<ReqHost>,
        /// What the first look at the cache found (hit-for-pass, or the key to go on with).
        looked: Looked,
    },
    /// The route's auth needs a wait (`auth::Pending`); the rest of `admit` (`answer`)
    /// follows once the request passed.
    Auth {
        route: &'r Route,
        host: Option<ReqHost>,
        pending: Box<crate::auth::Pending>,
    },
}

/// What `admit`'s first look at the cache left for `proxy`.
enum Looked {
    /// No look: not a cacheable request on a caching route.
    Not,
    /// Past the cache step (hit-for-pass): the key answered uncacheable lately.
    Pass,
    /// The whole cache step, with the primary key already built.
    Slow(String),
}

/// The synchronous front of the request path: limits, route, access, rate limit, auth,
/// and whatever can be answered without an await (`answer`).
fn admit<'r>(
    req: &mut Request<Incoming>,
    client: Client,
    listener: usize,
    runtime: &'r Runtime,
    record: &mut Record,
) -> Result<Next<'r>, ProxyError> {
    limits::check_request(req)?;
    if let Some(resp) = acme_http01(req, listener, runtime) {
        return Ok(Next::Done(resp));
    }
    let host = request_host(req);
    if let Some(port) = runtime
        .config
        .server
        .listeners
        .get(listener)
        .and_then(|l| l.redirect_https)
    {
        return redirect_https(req, host.as_deref(), port).map(Next::Done);
    }
    let route = runtime
        .router
        .lookup(host.as_deref(), req.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    record.route = Some(route.id);
    if let Some(access) = &route.access {
        crate::route::access::check(access, client.addr.ip(), client.cert_verified)?;
    }
    // The route's max_body wins over the server's, so it is checked once the route is known.
    limits::check_body_size(req, route.limits.max_body(&runtime.config.limits))?;
    if let Some(Some(limiter)) = runtime.rate_limits.get(route.id.0) {
        limiter.check(req, client.addr.ip())?;
    }
    if let Some(Some(guard)) = runtime.auth.get(route.id.0) {
        let asking = crate::auth::Asking {
            headers: req.headers(),
            method: req.method(),
            uri: req.uri(),
            host: host.as_deref(),
            scheme: record.scheme(),
            client: client.addr.ip(),
        };
        match guard.check(&asking) {
            crate::auth::Decision::Pass(passed) => passed.apply(req.headers_mut()),
            crate::auth::Decision::Refuse(refusal) => {
                return Ok(Next::Done(refusal.into_response()))
            }
            crate::auth::Decision::Pending(pending) => {
                return Ok(Next::Auth {
                    route,
                    host,
                    pending,
                })
            }
        }
    }
    answer(req, route, host, runtime, record)
}

/// The rest of `admit`, for a request that passed its route's checks: a fixed answer, a
/// redirect, a hit from the memory tier, or on to `proxy`.
fn answer<'r>(
    req: &Request<Incoming>,
    route: &'r Route,
    host: Option<ReqHost>,
    runtime: &'r Runtime,
    record: &mut Record,
) -> Result<Next<'r>, ProxyError> {
    let resp = match &route.action {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(RespBody::full(body.clone()));
            *resp.status_mut() = *status;
            *resp.headers_mut() = headers.clone();
            resp
        }
        Action::Redirect {
            status,
            to,
            regex: Some(regex),
            ..
        } => {
            let location =
                rules::redirect_location(regex, to, req.uri()).ok_or(ProxyError::NoRoute)?;
            let mut resp = Response::new(RespBody::empty());
            *resp.status_mut() = *status;
            let location = HeaderValue::try_from(location)
                .map_err(|_| ProxyError::BadRequest("invalid redirect target"))?;
            resp.headers_mut().insert(header::LOCATION, location);
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            resp
        }
        Action::Redirect {
            status,
            to,
            keep_path,
            regex: None,
        } => {
            let mut location = to.clone();
            if *keep_path {
                if let Some(pq) = req.uri().path_and_query() {
                    location.truncate(location.trim_end_matches('/').len());
                    location.push_str(pq.as_str());
                }
            }
            let mut resp = Response::new(RespBody::empty());
            *resp.status_mut() = *status;
            let location = HeaderValue::try_from(location)
                .map_err(|_| ProxyError::BadRequest("invalid redirect target"))?;
            resp.headers_mut().insert(header::LOCATION, location);
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            resp
        }
        Action::Proxy {
            upstream,
            cache: Some(policy),
            ..
        } if matches!(*req.method(), Method::GET | Method::HEAD)
            && !is_upgrade(req.headers())
            && req.body().is_end_stream()
            && !route.rules.as_ref().is_some_and(|r| r.keyed) =>
        {
            let (Some(cache), Some(Some(group))) =
                (&runtime.cache, runtime.route_groups.get(route.id.0))
            else {
                return Ok(Next::Proxy {
                    route,
                    host,
                    looked: Looked::Not,
                });
            };
            // The same key host as `proxy` uses (without a Host: the group's first server).
            let key_host = host
                .as_deref()
                .unwrap_or_else(|| group.config.servers[0].addr.authority.as_str());
            let compress = match &route.action {
                Action::Proxy { compress, .. } => compress.as_deref(),
                _ => None,
            };
            // Response rules need the stored fields in a map, not pre-encoded.
            let pre_encode = route.rules.as_ref().is_none_or(|r| r.response.is_empty());
            let scheme = record.scheme();
            match cached::serve_hit(cache, policy, compress, scheme, key_host, req, pre_encode) {
                cached::FirstLook::Hit(resp) => {
                    record.cache = Some(CacheStatus::Hit);
                    resp
                }
                cached::FirstLook::Pass => {
                    return Ok(Next::Proxy {
                        route,
                        host,
                        looked: Looked::Pass,
                    })
                }
                cached::FirstLook::Slow(primary) => {
                    return Ok(Next::Proxy {
                        route,
                        host,
                        looked: Looked::Slow(primary),
                    })
                }
            }
        }
        Action::Proxy { .. } => {
            return Ok(Next::Proxy {
                route,
                host,
                looked: Looked::Not,
            })
        }
    };
    Ok(Next::Done(resp))
}

/// Relays a request to the route's upstream group and its response back.
// Each argument is a different part of the request's context.
#[allow(clippy::too_many_arguments)]
async fn proxy(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    route: &Route,
    host: Option<ReqHost>,
    looked: Looked,
    runtime: &Runtime,
    record: &mut Record,
    interim: upstream::Interim<'_>,
    rules: Option<&RuleVars>,
    ids: &trace::Ids,
) -> Result<Response<RespBody>, ProxyError> {
    let pass = matches!(looked, Looked::Pass);
    let Action::Proxy {
        host_header,
        cache: route_cache,
        compress,
        ..
    } = &route.action
    else {
        unreachable!("proxy() is only called for proxy routes");
    };
    let group = runtime.route_groups[route.id.0]
        .as_ref()
        .expect("validated config names only defined upstreams");
    let caching = match (route_cache, &runtime.cache) {
        (Some(policy), Some(cache)) => Some((policy, cache)),
        _ => None,
    };
    // Without a Host (HTTP/1.0), cache keys use the group's first server: stable whichever
    // server answers.
    let key_host = host
        .as_deref()
        .unwrap_or_else(|| group.config.servers[0].addr.authority.as_str());
    let pick = PickContext::new(&req, peer.ip(), &group.config.balance);
    if req.method().as_str() == "PURGE" {
        return match caching {
            Some((policy, cache))
                if runtime
                    .config
                    .cache
                    .purge_allow
                    .iter()
                    .any(|n| n.contains(peer.ip())) =>
            {
                let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
                Ok(cached::purge_request(cache, policy, key_host, pq, req.headers()).await)
            }
            Some(_) => Err(ProxyError::Forbidden(
                "PURGE is not allowed from this address",
            )),
            None => Err(ProxyError::Forbidden("PURGE: this route does not cache")),
        };
    }
    let cacheable_method = matches!(*req.method(), Method::GET | Method::HEAD);
    let wants_upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());

    let downstream_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // A GET or HEAD with a body passes: the origin may read it, so its answer is not the
    // URL's (RFC 9110 §9.3.1).
    let with_body = cacheable_method && !body.is_end_stream();
    let mut downstream_headers =
        (caching.is_some() && cacheable_method && !wants_upgrade && !pass && !with_body)
            .then(|| parts.headers.clone());
    let method = parts.method.clone();
    // A clone of the URI shares its bytes: no copy of the path and query.
    let downstream_uri = parts.uri.clone();
    let downstream_pq = downstream_uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str());
    // The URI stays as it came: `Group::forward` sends its path and query to each server
    // it tries, in the form the server's protocol wants; the cache path below points it
    // at the server it picks.
    let upstream_version = parts.version;
    parts.version = Version::HTTP_11;
    let _ = upstream_version;

    let headers = &mut parts.headers;
    // `TE: trailers` says the client takes trailers. TE is hop-by-hop, but over HTTP/2 it
    // is the one value allowed and gRPC servers want it, so an h2 upstream gets it (as
    // nginx's grpc_pass sends it); torii relays trailers either way.
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    strip_hop_by_hop(headers, wants_upgrade);
    if te_trailers && group.config.protocol.is_h2() {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove(header::EXPECT);
    // Repeated equal lengths (which hyper accepted as one) go upstream as one.
    if let Some(len) = headers.get(header::CONTENT_LENGTH).cloned() {
        headers.insert(header::CONTENT_LENGTH, len);
    }
    // The request's own Host value when that is where the host came from (no copy).
    let downstream_host = match headers.get(header::HOST) {
        Some(v)
            if host
                .as_deref()
                .is_some_and(|h| h.as_bytes() == v.as_bytes()) =>
        {
            Some(v.clone())
        }
        _ => host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()),
    };
    // Room for the fields added below, in one growth of the map.
    headers.reserve(4);
    match (host_header, &downstream_host) {
        (Some(rewrite), _) => {
            headers.insert(header::HOST, rewrite.clone());
        }
        (None, Some(h)) => {
            headers.insert(header::HOST, h.clone());
        }
        // No Host downstream: `forward` sets the server's own authority on each try.
        (None, None) => {}
    }
    strip_unkeyed_overrides(headers, route_cache.as_ref().map(|p| &p.key.headers[..]));
    append_forwarded_for(headers, peer);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(record.scheme()));
    headers.remove(X_FORWARDED_HOST);
    if let Some(h) = downstream_host {
        headers.insert(X_FORWARDED_HOST, h);
    }
    headers.append(header::VIA, VIA);
    ids.to_upstream(headers);
    // Request rules, before the cache key is built; the key takes the client's path, and
    // the client's fields unless a rule changes a field the key names (`keyed`).
    let mut rewritten_key = None;
    if let Some((rules, vars)) = rules {
        rules::apply(&rules.request, headers, vars);
        if let (true, Some(h)) = (rules.keyed, downstream_headers.as_mut()) {
            rules::apply(&rules.request, h, vars);
        }
        if let Some(rewrite) = &rules.rewrite {
            parts.uri = rules::rewrite(rewrite, &parts.uri).ok_or(ProxyError::BadRequest(
                "the rewritten path is not a valid target",
            ))?;
            if let (Some((policy, _)), Some(h)) = (caching, downstream_headers.as_ref()) {
                rewritten_key = Some(cached::primary_key(
                    policy,
                    record.scheme(),
                    key_host,
                    downstream_pq,
                    h,
                ));
            }
        }
    }

    let limits = &runtime.config.limits;
    let (upstream_body, body_fault) = if body.is_end_stream() {
        (ReqBody::Empty, None)
    } else {
        let (body, fault) = ReqBody::stream(
            body,
            route.limits.max_body(limits),
            route.limits.body_timeout(limits),
        );
        (body, Some(fault))
    };
    let upstream_req = Request::from_parts(parts, upstream_body);

    let sent = Instant::now();
    if let (Some((policy, cache)), Some(req_headers)) = (caching, downstream_headers) {
        let ctx = cached::Ctx {
            cache,
            policy,
            group,
            pick,
            req_headers,
            host: key_host.to_string(),
            scheme: record.scheme(),
            primary: match looked {
                Looked::Slow(primary) => Some(primary),
                Looked::Not | Looked::Pass => rewritten_key,
            },
            interim,
            compress: compress.as_deref(),
        };
        // Boxed: the cache step's future is large (lookups, coalescing, ranges, fills), and
        // inline it would make every request's future as large, copied whole into its box
        // in `handle` (a pass paid ~14k instructions of memcpy for it; callgrind).
        let result = Box::pin(cached::serve(ctx, upstream_req, record)).await;
        if record.cache.is_some_and(CacheStatus::from_store) {
            record.upstream = None;
        } else {
            record.upstream_time = Some(sent.elapsed());
        }
        return result;
    }
    // Not through the cache step: a hit-for-pass, or a request the cache is not asked about.
    let status = match (caching, pass) {
        (Some(_), true) => CacheStatus::Pass,
        (None, _) => CacheStatus::Bypass(Bypass::Off),
        (Some(_), false) if wants_upgrade => CacheStatus::Bypass(Bypass::Upgrade),
        (Some(_), false) if with_body => CacheStatus::Bypass(Bypass::Body),
        (Some(_), false) => CacheStatus::Bypass(Bypass::Method),
    };
    record.cache = Some(status);
    // An HTTP/1 client's GET: an HTTP/1 server's answer may come as raw lines, with the
    // `X-Cache` and `Via` the response step would add to its map (hyper's h2 server writes
    // no raw lines, so never for HTTP/2).
    let head_as = match (record.version, &method) {
        // A response torii may compress is read from its fields (`compress::apply`).
        (Version::HTTP_10 | Version::HTTP_11, &Method::GET)
            if !wants_upgrade
                && !compress::may_encode(compress.as_deref(), upstream_req.headers()) =>
        {
            HeadAs::RawLines(raw_tail(status))
        }
        _ => HeadAs::Map,
    };
    let (mut upstream_head, upstream_body) = upstream_req.into_parts();
    let result = group
        .forward(
            &mut upstream_head,
            upstream_body,
            &pick,
            head_as,
            Patience::Queue,
            interim,
        )
        .await;
    record.upstream_time = Some(sent.elapsed());
    let (backend, upstream_resp, raw) = match result {
        Ok(f) => (f.backend, f.response, f.raw),
        Err(e) => {
            return Err(match body_fault {
                Some(fault) if fault.too_large() => ProxyError::BodyTooLarge,
                Some(fault) if fault.stalled() => ProxyError::BodyTimeout,
                Some(fault) if fault.broken() => {
                    ProxyError::BadRequest("malformed or incomplete request body")
                }
                _ => e.into(),
            })
        }
    };
    record.upstream = Some(backend.clone());

    if upstream_resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = upstream_resp.into_parts();
        if let (Some(downstream_upgrade), UpstreamBody::Tunnel(mut up)) = (downstream_upgrade, body)
        {
            tokio::spawn(async move {
                let Ok(down) = downstream_upgrade.await else {
                    tracing::debug!("upgrade failed downstream");
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut up).await;
            });
            let mut parts = parts;
            strip_hop_by_hop(&mut parts.headers, true);
            return Ok(Response::from_parts(parts, RespBody::empty()));
        }
        return Err(upstream::Error::Protocol {
            backend,
            what: "101 without an upgrade request",
        }
        .into());
    }

    let (mut parts, body) = upstream_resp.into_parts();
    lend_headers(&mut parts.headers, upstream_head.headers);
    strip_hop_by_hop(&mut parts.headers, false);
    if let Some((policy, cache)) = caching {
        parts
            .headers
            .remove(crate::cache::policy::OWN_TARGETED_FIELD);
        if pass {
            // Hit-for-pass: a miss the cache step was not asked about.
            cache.stats.misses.fetch_add(1, Ordering::Relaxed);
        } else {
            cache.stats.bypass.fetch_add(1, Ordering::Relaxed);
            cached::invalidate(
                cache,
                policy,
                &method,
                parts.status,
                record.scheme(),
                key_host,
                downstream_pq,
                &parts.headers,
            );
        }
    }
    let body = RespBody::upstream(body);
    // A head taken as raw lines (`HeadAs::RawLines`) rides with the body from here, as
    // every downstream pre-encoded head.
    let body = match raw {
        Some(raw) => body.with_raw(raw),
        None => body,
    };
    Ok(Response::from_parts(parts, body))
}

/// An ACME HTTP-01 validation (`GET /.well-known/acme-challenge/TOKEN` on a plain
/// listener, for a token an order placed): the key authorization, before the https
/// redirect and routing. Any other such path goes on as a normal request.
fn acme_http01<B>(
    req: &Request<B>,
    listener: usize,
    runtime: &Runtime,
) -> Option<Response<RespBody>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        || !req.uri().path().starts_with(crate::acme::HTTP01_PREFIX)
        || runtime
            .config
            .server
            .listeners
            .get(listener)
            .is_some_and(|l| l.tls.is_some())
    {
        return None;
    }
    let answer = runtime.acme.http01(req.uri().path())?;
    let mut resp = Response::new(RespBody::full(answer));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

/// `redirect_https` listeners: `308` to the same host and target over https (`port`, left
/// out when 443). The method and body are kept by the client on a 308.
fn redirect_https<B>(
    req: &Request<B>,
    host: Option<&str>,
    port: u16,
) -> Result<Response<RespBody>, ProxyError> {
    let host = host.ok_or(ProxyError::BadRequest("no Host to redirect to https"))?;
    // Drop any port of the Host (it is the plain listener's), keeping IPv6 brackets.
    let name = match host.rsplit_once(':') {
        Some((name, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    };
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{name}{pq}")
    } else {
        format!("https://{name}:{port}{pq}")
    };
    let location = HeaderValue::try_from(location)
        .map_err(|_| ProxyError::BadRequest("invalid redirect target"))?;
    let mut resp = Response::new(RespBody::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(resp)
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or the Host header.
/// Held as the request's own bytes (a reference count, no copy).
#[derive(Debug, Clone)]
enum ReqHost {
    Authority(http::uri::Authority),
    /// A `Host` value that is text (checked when taken).
    Header(HeaderValue),
}

impl std::ops::Deref for ReqHost {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            ReqHost::Authority(a) => a.as_str(),
            ReqHost::Header(h) => h.to_str().unwrap_or_default(),
        }
    }
}

fn request_host<B>(req: &Request<B>) -> Option<ReqHost> {
    if let Some(authority) = req.uri().authority() {
        return Some(ReqHost::Authority(authority.clone()));
    }
    crate::header_scan::first(req.headers(), &header::HOST)
        .filter(|h| h.to_str().is_ok())
        .map(|h| ReqHost::Header(h.clone()))
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    crate::header_scan::has(headers, &header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1), including those named in `Connection`.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay for the next hop.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names present finds that out. A field
    // named in `Connection` can only be there with a `Connection` field, which is one.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // The fields `Connection` names beyond those removed anyway (usually none: its
    // token is mostly `keep-alive`).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("upgrade"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    remove_where(headers, |name| {
        is_hop_by_hop(name) && !(keep_upgrade && name == header::UPGRADE)
    });
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether `name` is one of the fields `strip_hop_by_hop` always removes.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    upstream::is_hop_by_hop(name.as_str().as_bytes())
}

/// Removes every field whose name `unwanted` picks, looking at the fields present only
/// (most of the names asked about are usually absent): no hash lookup per name asked
/// about, no allocation.
fn remove_where(headers: &mut HeaderMap, unwanted: impl Fn(&HeaderName) -> bool) {
    while let Some(name) = headers.keys().find(|k| unwanted(k)).cloned() {
        headers.remove(name);
    }
}

/// Request headers that some frameworks let override the URL, host, scheme or method the
/// application sees. Were they passed while not in the cache key, one client could make the
/// origin answer differently and have that stored for everyone (cache poisoning), so torii
/// drops them unless the route's cache key includes them. `Forwarded` is dropped too: torii
/// states the client, host and scheme itself in `X-Forwarded-*`.
const UNKEYED_OVERRIDES: [HeaderName; 10] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

fn strip_unkeyed_overrides(headers: &mut HeaderMap, keyed: Option<&[HeaderName]>) {
    remove_where(headers, |name| {
        UNKEYED_OVERRIDES.contains(name) && !keyed.is_some_and(|keyed| keyed.contains(name))
    });
}

/// Appends the client's address to `X-Forwarded-For`, after any it came with.
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let prior = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|prior| !prior.trim().is_empty());
    if let Ok(v) = HeaderValue::try_from(forwarded_for(prior, peer.ip())) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// `prior, ip`, or `ip`: sized exactly when `ip` is IPv4, so that the header value takes
/// the string's buffer as it is, without another allocation.
fn forwarded_for(prior: Option<&str>, ip: std::net::IpAddr) -> String {
    let ip = ip.to_canonical();
    let ip_len = match ip {
        std::net::IpAddr::V4(v4) => {
            3 + v4
                .octets()
                .iter()
                .map(|&o| 1 + usize::from(o >= 10) + usize::from(o >= 100))
                .sum::<usize>()
        }
        std::net::IpAddr::V6(_) => 45,
    };
    let mut value = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + ip_len);
    if let Some(prior) = prior {
        value.push_str(prior);
        value.push_str(", ");
    }
    push_ip(&mut value, ip);
    value
}

/// Appends `ip` as text (an IPv4-mapped IPv6 address as IPv4). IPv4 by hand: the
/// formatting machinery cost a proxied request more than a thousand instructions.
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        ip => {
            use std::fmt::Write;
            let _ = write!(out, "{ip}");
        }
    }
}

fn header_string(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_tokens_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1:5".parse().unwrap());
        append_forwarded_for(&mut h, "[::ffff:10.0.0.2]:5".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2");
        append_forwarded_for(&mut h, "[2001:db8::1]:5".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 2001:db8::1");
        for ip in ["0.0.0.0", "9.10.99.100", "255.200.109.1"] {
            let mut out = String::new();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip);
            for prior in [None, Some("1.2.3.4")] {
                let value = forwarded_for(prior, ip.parse().unwrap());
                assert_eq!(value.len(), value.capacity(), "{value}");
            }
        }
    }
}
