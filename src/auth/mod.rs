//! `routes[].auth`: who may use a route. Basic credentials checked against an htpasswd
//! file (`basic.rs`), or a subrequest to an auth service (`forward.rs`). `proxy::admit`
//! asks `Guard::check` after the route's access list and rate limit and before the cache
//! (its hit fast path too), and carries out the `Decision`: a request that did not pass
//! is never answered from the cache.
//!
//! A `Guard` is built per route with each config generation (`Runtime::build`), so a
//! reload starts with empty caches and lockouts and the users file read by that reload.

pub mod basic;
pub mod forward;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::RespBody;
use crate::config::auth::Auth;
use crate::error::ProxyError;
use crate::observe::metrics::RouteMetrics;
use crate::upstream::Group;

/// One route's auth: its settings and state (caches, lockouts), and its metrics.
pub struct Guard {
    kind: Kind,
    metrics: Arc<RouteMetrics>,
}

enum Kind {
    Basic(basic::Basic),
    Forward(forward::Forward),
}

/// What a request is, as auth sees it.
pub struct Asking<'a> {
    pub headers: &'a HeaderMap,
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub host: Option<&'a str>,
    pub scheme: &'static str,
    pub client: IpAddr,
}

/// What `Guard::check` decided.
pub enum Decision {
    /// Let on, with these changes to the request sent on.
    Pass(Passed),
    /// Answer this instead.
    Refuse(Refusal),
    /// Not decided without waiting (a password hash to verify on the blocking pool, or
    /// the auth service to ask): `Pending::settle` decides.
    Pending(Box<Pending>),
}

/// What a request that passed auth changes in the request sent on.
#[derive(Debug, Clone)]
pub enum Passed {
    /// Basic: `Authorization` goes only when `forward_authorization` is on.
    Basic { keep_authorization: bool },
    /// Forward: the `copy_headers` names are removed from the client's fields, then what
    /// the auth service answered under them is added.
    Forward {
        names: Arc<[HeaderName]>,
        fields: Arc<[(HeaderName, HeaderValue)]>,
    },
}

impl Passed {
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            Passed::Basic { keep_authorization } => {
                if !keep_authorization {
                    headers.remove(header::AUTHORIZATION);
                }
            }
            Passed::Forward { names, fields } => {
                for name in names.iter() {
                    headers.remove(name);
                }
                for (name, value) in fields.iter() {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
    }
}

/// Why a request did not pass, and so what it is answered.
#[derive(Debug)]
pub enum Refusal {
    /// 401 with `WWW-Authenticate: Basic realm="…", charset="UTF-8"`.
    Challenge(HeaderValue),
    /// 429 + `Retry-After`: too many failed attempts from this address lately; no hash
    /// was verified.
    LockedOut { retry_after: Duration },
    /// The auth service's own 401, 403 or 3xx, relayed as it came.
    Relayed(Box<Response<Bytes>>),
    /// 503: the auth service failed, timed out, or answered something else. Never a pass.
    Unavailable,
}

impl Refusal {
    /// Counts this refusal under its kind (`AUTH_FAILURE_KINDS`); a challenge to a request
    /// without credentials counts as `missing`.
    fn count(&self, metrics: &RouteMetrics, missing: bool) {
        let kind = match self {
            Refusal::Challenge(_) if missing => 0,
            Refusal::Challenge(_) => 1,
            Refusal::LockedOut { .. } => 2,
            Refusal::Relayed(_) => 3,
            Refusal::Unavailable => 4,
        };
        metrics.auth_failures[kind].inc();
    }

    pub fn into_response(self) -> Response<RespBody> {
        match self {
            Refusal::Challenge(challenge) => {
                let mut resp = plain(StatusCode::UNAUTHORIZED);
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
                resp
            }
            Refusal::LockedOut { retry_after } => {
                ProxyError::RateLimited { retry_after }.to_response()
            }
            Refusal::Relayed(resp) => {
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, RespBody::full(body))
            }
            Refusal::Unavailable => plain(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

/// A short text answer that no cache keeps.
fn plain(status: StatusCode) -> Response<RespBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(RespBody::full(text));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A decision that needs a wait.
pub struct Pending {
    step: Step,
    metrics: Arc<RouteMetrics>,
}

enum Step {
    Basic(basic::Pending),
    Forward(forward::Pending),
}

impl Pending {
    /// Waits for the decision: the hash verified on the blocking pool, or the auth
    /// service's answer.
    pub async fn settle(self) -> Result<Passed, Refusal> {
        let result = match self.step {
            Step::Basic(p) => p.settle().await,
            Step::Forward(p) => p.settle().await,
        };
        if let Err(refusal) = &result {
            refusal.count(&self.metrics, false);
        }
        result
    }
}

impl Guard {
    /// The guard of a route with `auth`; `groups` resolves forward auth's upstream (which
    /// validation made sure exists; a missing one refuses every request with 503).
    pub fn new(
        auth: &Auth,
        groups: &dyn Fn(&crate::config::UpstreamName) -> Option<Arc<Group>>,
        metrics: Arc<RouteMetrics>,
    ) -> Guard {
        let kind = match auth {
            Auth::Basic(settings) => Kind::Basic(basic::Basic::new(settings)),
            Auth::Forward(settings) => {
                Kind::Forward(forward::Forward::new(settings, groups(&settings.upstream)))
            }
        };
        Guard { kind, metrics }
    }

    /// Decides what is done with `req`, without waiting when it can: a missing or
    /// malformed credential, a locked-out address, a credential verified lately or a
    /// cached forward-auth answer are decided here.
    pub fn check(&self, req: &Asking<'_>) -> Decision {
        let inner = match &self.kind {
            Kind::Basic(b) => b.check(req),
            Kind::Forward(f) => f.check(req),
        };
        match inner {
            Inner::Pass(passed) => Decision::Pass(passed),
            Inner::Refuse(refusal) => {
                let missing = !req.headers.contains_key(header::AUTHORIZATION);
                refusal.count(&self.metrics, missing);
                Decision::Refuse(refusal)
            }
            Inner::Pending(step) => Decision::Pending(Box::new(Pending {
                step: *step,
                metrics: self.metrics.clone(),
            })),
        }
    }
}

/// What a kind decides, before `Guard` counts a refusal or wraps a pending step.
enum Inner {
    Pass(Passed),
    Refuse(Refusal),
    Pending(Box<Step>),
}

/// A SHA-256 digest: the key of the credential caches (never the credential itself).
type Digest = [u8; 32];

fn digest(parts: &[&[u8]]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
