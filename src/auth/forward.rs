//! `auth.forward`: a `GET path` subrequest to the auth upstream group (through the one
//! door, `Group::forward`, with the group's queue, timeouts and retries) decides, as
//! Traefik's and Caddy's forward auth do.
//!
//! - It carries the original request as `X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto`,
//!   the client as `X-Forwarded-For` and `X-Real-IP`, and the client's `Authorization`
//!   and `Cookie`.
//! - A 2xx lets the request on with the `copy_headers` fields of the answer (the client's
//!   own fields of those names removed first); a 401, 403 or 3xx is relayed to the client
//!   as it came (status, fields, body up to `MAX_BODY`); any other answer, an error or a
//!   timeout is a 503, never a pass.
//! - With `cache`, a 2xx is reused for the same `Authorization` and `Cookie` (by their
//!   SHA-256) for that long, at most `CACHED_MAX` of them per route. Refusals are not kept.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::{digest, Asking, Digest, Inner, Passed, Refusal, Step};
use crate::config::auth::ForwardAuth;
use crate::upstream::{Group, HeadAs, Patience, PickContext, ReqBody};

/// The most of an auth answer's body relayed to the client.
const MAX_BODY: usize = 64 * 1024;
/// How long an auth answer's body may take when its group has no `timeout`.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// 2xx answers remembered per route with `cache`.
const CACHED_MAX: usize = 10_000;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

type Fields = Arc<[(HeaderName, HeaderValue)]>;
type Passes = quick_cache::sync::Cache<Digest, (Instant, Fields)>;

pub struct Forward {
    shared: Arc<Shared>,
}

struct Shared {
    group: Option<Arc<Group>>,
    path: http::uri::PathAndQuery,
    names: Arc<[HeaderName]>,
    /// `cache`: how long a pass is kept, and the passes by credential digest (until when).
    cache: Option<(Duration, Passes)>,
}

impl Forward {
    pub fn new(settings: &ForwardAuth, group: Option<Arc<Group>>) -> Forward {
        Forward {
            shared: Arc::new(Shared {
                group,
                path: settings.path.clone(),
                names: settings.copy_headers.clone().into(),
                cache: settings
                    .cache
                    .map(|ttl| (ttl, quick_cache::sync::Cache::new(CACHED_MAX))),
            }),
        }
    }

    pub(super) fn check(&self, req: &Asking<'_>) -> Inner {
        let key = self.shared.cache.as_ref().map(|(_, cache)| {
            // Every value of both, as the auth service sees them, each list led by its
            // length, so that no two different sets of fields make the same key.
            let auth: Vec<&[u8]> = (req.headers.get_all(header::AUTHORIZATION).iter())
                .map(|v| v.as_bytes())
                .collect();
            let cookies: Vec<&[u8]> = (req.headers.get_all(header::COOKIE).iter())
                .map(|v| v.as_bytes())
                .collect();
            let (n_auth, n_cookies) = (auth.len().to_be_bytes(), cookies.len().to_be_bytes());
            let mut parts: Vec<&[u8]> = vec![&n_auth];
            parts.extend(auth);
            parts.push(&n_cookies);
            parts.extend(cookies);
            let key = digest(&parts);
            (key, cache.get(&key))
        });
        if let Some((_, Some((until, fields)))) = &key {
            if *until > Instant::now() {
                return Inner::Pass(Passed::Forward {
                    names: self.shared.names.clone(),
                    fields: fields.clone(),
                });
            }
        }
        let Some(group) = self.shared.group.clone() else {
            return Inner::Refuse(Refusal::Unavailable);
        };
        Inner::Pending(Box::new(Step::Forward(Pending {
            shared: self.shared.clone(),
            group,
            subrequest: subrequest(&self.shared.path, req),
            client: req.client,
            key: key.map(|(k, _)| k),
        })))
    }
}

/// The head of the subrequest asking about `req`.
fn subrequest(path: &http::uri::PathAndQuery, req: &Asking<'_>) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.version = Version::HTTP_11;
    parts.uri = http::Uri::from(path.clone());
    let headers = &mut parts.headers;
    let text = |s: &str| HeaderValue::from_str(s).ok();
    if let Some(v) = text(req.method.as_str()) {
        headers.insert(X_FORWARDED_METHOD, v);
    }
    let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Some(v) = text(pq) {
        headers.insert(X_FORWARDED_URI, v);
    }
    if let Some(v) = req.host.and_then(text) {
        headers.insert(X_FORWARDED_HOST, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(req.scheme));
    let ip = req.client.to_canonical().to_string();
    if let Some(v) = text(&ip) {
        headers.insert(X_FORWARDED_FOR, v.clone());
        headers.insert(X_REAL_IP, v);
    }
    for name in [header::AUTHORIZATION, header::COOKIE] {
        for v in req.headers.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    parts
}

/// A subrequest to send.
pub(super) struct Pending {
    shared: Arc<Shared>,
    group: Arc<Group>,
    subrequest: http::request::Parts,
    client: std::net::IpAddr,
    key: Option<Digest>,
}

impl Pending {
    pub(super) async fn settle(self) -> Result<Passed, Refusal> {
        let Pending {
            shared,
            group,
            mut subrequest,
            client,
            key,
        } = self;
        let pick = PickContext {
            client: Some(client),
            hash: None,
        };
        let answer = group
            .forward(
                &mut subrequest,
                ReqBody::Empty,
                &pick,
                HeadAs::Map,
                Patience::Queue,
                None,
            )
            .await;
        let resp = match answer {
            Ok(forwarded) => forwarded.response,
            Err(e) => {
                tracing::warn!(group = %group.name.0, "forward auth failed: {e}");
                return Err(Refusal::Unavailable);
            }
        };
        let status = resp.status();
        if status.is_success() {
            let fields: Fields = shared
                .names
                .iter()
                .flat_map(|name| {
                    resp.headers()
                        .get_all(name)
                        .iter()
                        .map(move |v| (name.clone(), v.clone()))
                })
                .collect();
            if let (Some(key), Some((ttl, cache))) = (key, &shared.cache) {
                cache.insert(key, (Instant::now() + *ttl, fields.clone()));
            }
            // Read the rest (usually nothing), so the connection goes back to the pool.
            let wait = group.config.timeout.unwrap_or(BODY_TIMEOUT);
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
            let _ = tokio::time::timeout(wait, body.collect()).await;
            return Ok(Passed::Forward {
                names: shared.names.clone(),
                fields,
            });
        }
        if !(status.is_redirection()
            || status == http::StatusCode::UNAUTHORIZED
            || status == http::StatusCode::FORBIDDEN)
        {
            tracing::warn!(group = %group.name.0, %status, "forward auth answered neither 2xx, 3xx, 401 nor 403");
            return Err(Refusal::Unavailable);
        }
        let (mut parts, body) = resp.into_parts();
        let wait = group.config.timeout.unwrap_or(BODY_TIMEOUT);
        let body = http_body_util::Limited::new(body, MAX_BODY);
        let body = match tokio::time::timeout(wait, body.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            _ => {
                tracing::warn!(group = %group.name.0, "forward auth: unreadable or oversized body");
                return Err(Refusal::Unavailable);
            }
        };
        let hop_by_hop: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|name| crate::upstream::is_hop_by_hop(name.as_str().as_bytes()))
            .cloned()
            .collect();
        for name in hop_by_hop {
            parts.headers.remove(name);
        }
        // The body is whole now: its length is the one hyper writes.
        parts.headers.remove(header::CONTENT_LENGTH);
        Err(Refusal::Relayed(Box::new(Response::from_parts(
            parts, body,
        ))))
    }
}
