//! The admin listener: `GET /` (status page), `GET /healthz`, `GET /readyz`, `GET /metrics`,
//! `GET /stats.json`, `POST /purge`.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::body::RespBody;
use crate::cache::tier::shared::Target;
use crate::cache::{key, UrlMatch};
use crate::config::{Action, UpstreamName};
use crate::runtime::Shared;

/// The status page: one self-contained HTML file (inline CSS and JS) that polls `/stats.json`.
const STATUS_PAGE: &str = include_str!("status.html");

/// Largest admin request body (a purge request is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin API on `listener` until the drain starts.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut draining = shared.drain.subscribe();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = draining.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(req, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(req: Request<Incoming>, shared: &Shared) -> Response<RespBody> {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    let auth = &shared.admin_auth;
    if !reads || auth.everywhere {
        if let Some(token) = &auth.token {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) {
                let mut resp = json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "missing or wrong bearer token", "hint": "send Authorization: Bearer $TORII_ADMIN_TOKEN"}),
                );
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"torii admin\""),
                );
                return resp;
            }
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => {
            let mut resp = text(StatusCode::OK, STATUS_PAGE);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if shared.drain.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET | &Method::HEAD, "/stats.json") => stats(shared),
        (&Method::GET | &Method::HEAD, "/upstreams") => upstreams(shared),
        (&Method::POST, path) if path.starts_with("/upstreams/") => upstream_control(path, shared),
        (&Method::GET | &Method::HEAD, "/metrics") => metrics(shared),
        (&Method::POST, "/purge") => purge(req, shared).await,
        (_, "/healthz" | "/readyz" | "/stats.json") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        }
        (_, "/purge") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST with {\"url\": …}, {\"prefix\": …} or {\"tag\": …}\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try / (status page), /healthz, /readyz, /metrics, /stats.json, /upstreams or POST /purge\n",
        ),
    }
}

/// `GET /upstreams`: every group of the current config and each server's state.
fn upstreams(shared: &Shared) -> Response<RespBody> {
    let runtime = shared.current();
    let mut groups: Vec<_> = runtime.upstreams.values().collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let groups: Vec<_> = groups.iter().map(|g| g.snapshot()).collect();
    json(StatusCode::OK, serde_json::json!({ "upstreams": groups }))
}

/// `POST /upstreams/{group}/{server}/drain` and `…/enable`: take a server out of rotation
/// (in-flight requests finish) or put it back. `server` is its `host:port` or its index.
fn upstream_control(path: &str, shared: &Shared) -> Response<RespBody> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, server, action) = match parts.as_slice() {
        ["upstreams", g, s, a] => (*g, *s, *a),
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "use POST /upstreams/{group}/{server}/drain or /enable"}),
            )
        }
    };
    let draining = match action {
        "drain" => true,
        "enable" => false,
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!("unknown action {action:?}"), "hint": "drain or enable"}),
            )
        }
    };
    let runtime = shared.current();
    let Some(g) = runtime.upstreams.get(&UpstreamName(group.to_string())) else {
        let mut names: Vec<_> = runtime.upstreams.keys().map(|k| k.0.clone()).collect();
        names.sort();
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("unknown upstream {group:?}"), "defined": names}),
        );
    };
    if !g.set_draining(server, draining) {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("upstream {group:?} has no server {server:?}"), "hint": "use host:port as GET /upstreams lists it, or the server's index"}),
        );
    }
    tracing::info!(group, server, "admin: {action}");
    json(StatusCode::OK, g.snapshot())
}

/// A purge request: exactly one of `url`, `prefix`, `tag`; `soft` marks stale instead.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    soft: bool,
}

async fn purge(req: Request<Incoming>, shared: &Shared) -> Response<RespBody> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": "body larger than 64 KiB"}),
            )
        }
    };
    let purge: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("bad JSON: {e}"), "hint": "{\"url\": \"http://host/path\"}, {\"prefix\": \"/path/\"} or {\"tag\": \"name\"}"}),
            )
        }
    };
    let runtime = shared.current();
    let Some(cache) = &runtime.cache else {
        return json(
            StatusCode::CONFLICT,
            serde_json::json!({"error": "caching is off (cache.memory = 0)"}),
        );
    };
    let (what, target) = match (&purge.url, &purge.prefix, &purge.tag) {
        (Some(url), None, None) => {
            let Ok(uri) = url.parse::<http::Uri>() else {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("{url:?} is not a URL")}),
                );
            };
            let (Some(authority), Some(pq)) = (uri.authority(), uri.path_and_query()) else {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "url needs a host and a path, e.g. http://example.com/a"}),
                );
            };
            // Canonicalise as the route that serves this URL does, so its key spec applies.
            let spec = match runtime
                .router
                .lookup(Some(authority.as_str()), uri.path())
                .map(|r| &r.action)
            {
                Some(Action::Proxy { cache: Some(p), .. }) => p.key.clone(),
                _ => key::KeySpec::default(),
            };
            let canonical = key::canonical_url(
                &spec,
                uri.scheme_str().unwrap_or("http"),
                authority.as_str(),
                pq.as_str(),
            );
            (canonical.clone(), Target::Urls(UrlMatch::Exact(canonical)))
        }
        (None, Some(prefix), None) if prefix.starts_with('/') => (
            prefix.clone(),
            Target::Urls(UrlMatch::PathPrefix(prefix.clone())),
        ),
        (None, Some(prefix), None)
            if prefix.starts_with("http://") || prefix.starts_with("https://") =>
        {
            (
                prefix.clone(),
                Target::Urls(UrlMatch::Prefix(prefix.to_ascii_lowercase())),
            )
        }
        (None, Some(prefix), None) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("prefix {prefix:?} must be a path (/static/) or a URL (http://host/path)")}),
            )
        }
        (None, None, Some(tag)) if !tag.trim().is_empty() => {
            (tag.clone(), Target::Tag(tag.trim().to_string()))
        }
        _ => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "give exactly one of url, prefix, tag"}),
            );
        }
    };
    // A URL or URL prefix reaches the http and the https copies alike (`UrlMatch`).
    let report = cache.purge(&target, purge.soft).await;
    let purged = report.purged;
    tracing::info!(
        "purge {what}: {} in memory, {} on disk, {} in the shared tier{}; scope {}",
        purged.memory,
        purged.disk,
        purged.shared,
        if purge.soft { " (soft)" } else { "" },
        report.scope
    );
    let mut answer = serde_json::json!({"purged": purged.memory.max(purged.disk).max(purged.shared), "memory": purged.memory, "disk": purged.disk, "shared": purged.shared, "soft": purge.soft, "scope": report.scope});
    if let Some(warning) = report.warning {
        answer["warning"] = warning.into();
    }
    json(StatusCode::OK, answer)
}

fn stats(shared: &Shared) -> Response<RespBody> {
    let runtime = shared.current();
    let cache = runtime.cache.as_ref().map(|c| {
        let s = &c.stats;
        let m = c.memory().stats();
        serde_json::json!({
            "hits": s.hits.load(Relaxed),
            "misses": s.misses.load(Relaxed),
            "stale": s.stale.load(Relaxed),
            "revalidated": s.revalidated.load(Relaxed),
            "coalesced": s.coalesced.load(Relaxed),
            "bypass": s.bypass.load(Relaxed),
            "stores": s.stores.load(Relaxed),
            "refreshes": s.refreshes.load(Relaxed),
            "purged": s.purged.load(Relaxed),
            "memory": {"objects": c.memory().len(), "bytes": c.memory().weighted_bytes(), "max_bytes": c.memory().max_bytes(), "evictions": m.evictions},
            "disk": c.disk().map(|d| serde_json::json!({"objects": d.len(), "bytes": d.bytes(), "max_bytes": d.max_bytes()})),
            "shared": c.shared().map(|t| {
                let s = &t.stats;
                let breaker = ["closed", "open", "half-open"][t.breaker_state() as usize];
                serde_json::json!({
                    "node": t.node(),
                    "breaker": breaker,
                    "hits": s.hits.load(Relaxed),
                    "misses": s.misses.load(Relaxed),
                    "writes": s.writes.load(Relaxed),
                    "too_large": s.too_large.load(Relaxed),
                    "errors": s.errors.load(Relaxed),
                    "corrupt": s.corrupt.load(Relaxed),
                    "skipped": s.skipped.load(Relaxed),
                    "leases": s.leases.load(Relaxed),
                    "lease_waits": s.lease_waits.load(Relaxed),
                    "purges_cluster": s.purges_cluster.load(Relaxed),
                    "purges_local_only": s.purges_local_only.load(Relaxed),
                    "purges_received": s.purges_received.load(Relaxed),
                })
            }),
        })
    });
    let m = &shared.metrics;
    let routes: Vec<_> = runtime
        .config
        .routes
        .iter()
        .map(|r| {
            let rm = &runtime.route_metrics[r.id.0];
            let (kind, target) = match &r.action {
                Action::Proxy { upstream, cache, .. } => (if cache.is_some() { "proxy+cache" } else { "proxy" }, upstream.0.clone()),
                Action::Respond { status, .. } => ("respond", status.as_u16().to_string()),
                Action::Redirect { to, .. } => ("redirect", to.clone()),
            };
            serde_json::json!({"route": rm.label, "kind": kind, "target": target, "requests": rm.total()})
        })
        .collect();
    // Each group's live state, as `GET /upstreams` reports it (state, in-flight, queue,
    // ejections, …), except that `server` stays the URL this document has always given.
    let upstreams: Vec<_> = runtime
        .config
        .upstreams
        .iter()
        .map(|(name, u)| match runtime.upstreams.get(name) {
            Some(group) => {
                let mut snapshot = group.snapshot();
                if let Some(servers) = snapshot["servers"].as_array_mut() {
                    for s in servers {
                        if let Some(url) = s.as_object_mut().and_then(|o| o.remove("url")) {
                            s["server"] = url;
                        }
                    }
                }
                snapshot
            }
            None => {
                let servers: Vec<_> = u
                    .servers
                    .iter()
                    .map(|s| serde_json::json!({"server": s.to_string(), "state": "up"}))
                    .collect();
                serde_json::json!({"group": name.0, "servers": servers})
            }
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "connections": {
                "open": shared.drain.open_connections(),
                "hibernated": shared.drain.hibernated_connections(),
                "accepted": m.connections_accepted.get(),
            },
            "bytes": {"received": m.received_bytes.get(), "sent": m.sent_bytes.get()},
            "tls": {
                "handshakes": {"TLSv1.2": m.tls_handshakes[0].get(), "TLSv1.3": m.tls_handshakes[1].get()},
                "handshake_errors": m.tls_handshake_errors.get(),
            },
            "requests": m.routes().iter().map(|r| r.total()).sum::<u64>(),
            "draining": shared.drain.is_draining(),
            "recent_5s": m.recent(std::time::Duration::from_secs(5)),
            "recent_60s": m.recent(std::time::Duration::from_secs(60)),
            "routes": routes,
            "upstreams": upstreams,
            "cache": cache,
        }),
    )
}

/// `GET /metrics`: Prometheus text format.
fn metrics(shared: &Shared) -> Response<RespBody> {
    use crate::observe::metrics::{self as names, gauge, header as help};
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64 * 1024);
    shared.metrics.render(&mut out);
    gauge(
        &mut out,
        names::CONNECTIONS_OPEN,
        "Open downstream connections.",
        shared.drain.open_connections() as u64,
    );
    gauge(
        &mut out,
        names::CONNECTIONS_HIBERNATED,
        "Open downstream connections hibernating (idle keep-alive, held as their socket alone).",
        shared.drain.hibernated_connections() as u64,
    );
    if let Some(c) = &shared.current().cache {
        let s = &c.stats;
        for (name, what, v) in [
            (
                names::CACHE_HITS_TOTAL,
                "Requests answered from the cache while fresh.",
                &s.hits,
            ),
            (
                names::CACHE_MISSES_TOTAL,
                "Requests the cache sent to the origin.",
                &s.misses,
            ),
            (
                names::CACHE_STALE_TOTAL,
                "Requests answered with a stale entry (grace, stale-if-error, max-stale).",
                &s.stale,
            ),
            (
                names::CACHE_REVALIDATED_TOTAL,
                "Entries refreshed by a 304 from the origin.",
                &s.revalidated,
            ),
            (
                names::CACHE_COALESCED_TOTAL,
                "Requests answered from another request's fetch.",
                &s.coalesced,
            ),
            (
                names::CACHE_BYPASS_TOTAL,
                "Requests on caching routes that bypassed the cache.",
                &s.bypass,
            ),
            (names::CACHE_STORES_TOTAL, "Objects stored.", &s.stores),
            (names::CACHE_PURGED_TOTAL, "Objects purged.", &s.purged),
        ] {
            names::counter(&mut out, name, what, v.load(Relaxed));
        }
        help(
            &mut out,
            names::CACHE_EVICTIONS_TOTAL,
            "counter",
            "Objects evicted to make room, by tier.",
        );
        let _ = writeln!(
            out,
            "{}{{tier=\"memory\"}} {}",
            names::CACHE_EVICTIONS_TOTAL,
            c.memory().stats().evictions
        );
        help(
            &mut out,
            names::CACHE_OBJECTS,
            "gauge",
            "Objects stored, by tier.",
        );
        let _ = writeln!(
            out,
            "{}{{tier=\"memory\"}} {}",
            names::CACHE_OBJECTS,
            c.memory().len()
        );
        if let Some(d) = c.disk() {
            let _ = writeln!(out, "{}{{tier=\"disk\"}} {}", names::CACHE_OBJECTS, d.len());
        }
        help(
            &mut out,
            names::CACHE_BYTES,
            "gauge",
            "Bytes stored, by tier.",
        );
        let _ = writeln!(
            out,
            "{}{{tier=\"memory\"}} {}",
            names::CACHE_BYTES,
            c.memory().weighted_bytes()
        );
        if let Some(d) = c.disk() {
            let _ = writeln!(out, "{}{{tier=\"disk\"}} {}", names::CACHE_BYTES, d.bytes());
        }
        if let Some(t) = c.shared() {
            shared_metrics(&mut out, t);
        }
    }
    let mut resp = Response::new(RespBody::full(out));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// The `torii_shared_*` metrics of the shared tier.
fn shared_metrics(out: &mut String, t: &crate::cache::tier::shared::SharedTier) {
    use crate::observe::metrics::{self as names, counter, gauge, header as help};
    use std::fmt::Write as _;
    let s = &t.stats;
    for (name, what, v) in [
        (
            names::SHARED_HITS_TOTAL,
            "Lookups answered by the shared tier.",
            &s.hits,
        ),
        (
            names::SHARED_MISSES_TOTAL,
            "Lookups the shared tier did not have (corrupt values included).",
            &s.misses,
        ),
        (
            names::SHARED_WRITES_TOTAL,
            "Objects written to the shared tier.",
            &s.writes,
        ),
        (
            names::SHARED_TOO_LARGE_TOTAL,
            "Objects kept local because they exceed cache.shared.max_object_size.",
            &s.too_large,
        ),
        (
            names::SHARED_ERRORS_TOTAL,
            "Shared tier calls that failed or timed out.",
            &s.errors,
        ),
        (
            names::SHARED_CORRUPT_TOTAL,
            "Shared tier values dropped because they failed to decode.",
            &s.corrupt,
        ),
        (
            names::SHARED_SKIPPED_TOTAL,
            "Shared tier calls skipped because the breaker was open.",
            &s.skipped,
        ),
        (
            names::SHARED_LEASES_TOTAL,
            "Cluster-wide fetch leases taken by this node.",
            &s.leases,
        ),
        (
            names::SHARED_LEASE_WAITS_TOTAL,
            "Misses that waited on another node's fetch lease.",
            &s.lease_waits,
        ),
        (
            names::SHARED_PURGES_RECEIVED_TOTAL,
            "Purges received from other nodes.",
            &s.purges_received,
        ),
    ] {
        counter(out, name, what, v.load(Relaxed));
    }
    help(
        out,
        names::SHARED_PURGES_TOTAL,
        "counter",
        "Purges at this node, by how far they reached (cluster, or local only while the shared tier was unreachable).",
    );
    let _ = writeln!(
        out,
        "{}{{scope=\"cluster\"}} {}",
        names::SHARED_PURGES_TOTAL,
        s.purges_cluster.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "{}{{scope=\"local\"}} {}",
        names::SHARED_PURGES_TOTAL,
        s.purges_local_only.load(Relaxed)
    );
    gauge(
        out,
        names::SHARED_BREAKER_STATE,
        "Shared tier circuit breaker: 0 closed (in use), 1 open (local-only), 2 half-open (probing).",
        t.breaker_state(),
    );
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(format!("{value}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Compares without an early exit, so response time says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
