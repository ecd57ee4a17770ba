//! `ProxyError` and the one mapping from errors to HTTP responses.

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::RespBody;
use crate::upstream;

/// Why torii answered a request itself instead of relaying an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// 404: no route matches the host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// 400, connection closed: the request is malformed or ambiguous.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 405: a method this client may not use here (PURGE from a non-allowed address).
    #[error("{0}")]
    Forbidden(&'static str),
    /// 403: the route's `access` list refuses this client address.
    #[error("access denied: {0}")]
    Denied(&'static str),
    /// 413, connection closed: the body is larger than `limits.max_body`.
    #[error("request body larger than limits.max_body")]
    BodyTooLarge,
    /// 408, connection closed: the client left its body stalled past `limits.body_timeout`.
    #[error("request body stalled longer than limits.body_timeout")]
    BodyTimeout,
    /// 429 + `Retry-After`: the route's rate limit for this client is used up.
    #[error("rate limit exceeded; retry in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// 502, 503 or 504, see `upstream::Error`.
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Upstream(
                upstream::Error::Unavailable { .. }
                | upstream::Error::QueueFull { .. }
                | upstream::Error::QueueTimeout { .. },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(upstream::Error::ConnectTimeout { .. })
            | ProxyError::Upstream(upstream::Error::ResponseTimeout { .. }) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// How long the client should wait before trying again (`Retry-After`), for 429 and 503.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::RateLimited { retry_after }
            | ProxyError::Upstream(upstream::Error::Unavailable { retry_after, .. }) => {
                Some(*retry_after)
            }
            ProxyError::Upstream(
                upstream::Error::QueueFull { .. } | upstream::Error::QueueTimeout { .. },
            ) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Whether the downstream connection must be closed after the answer: after a request
    /// whose framing can't be trusted, the next bytes can't be trusted either.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::BodyTooLarge | ProxyError::BodyTimeout
        )
    }

    /// The response torii sends for this error: a short plain-text body naming the status.
    pub fn to_response(&self) -> Response<RespBody> {
        let status = self.status();
        let text = match self {
            ProxyError::BadRequest(why) | ProxyError::Forbidden(why) => format!(
                "{} {}: {why}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
            _ => format!(
                "{} {}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        };
        let mut resp = Response::new(RespBody::full(text));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(wait) = self.retry_after() {
            // Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
