//! Routing: `Router::lookup(host, path)` picks the most specific route; pure, no I/O.
//!
//! Precedence: an exact host beats a wildcard host (the longer wildcard suffix first), which
//! beats a route without host; among routes with the same host match, the longest path prefix
//! wins; among equals, the one written first.

pub mod access;

use crate::config::{HostMatch, Route};

/// Routes in lookup order.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        let mut routes = routes.to_vec();
        // Stable sort keeps file order among equals.
        routes.sort_by_key(|r| {
            let host_rank = match &r.host {
                HostMatch::Exact(_) => (0, 0),
                HostMatch::Wildcard(suffix) => (1, usize::MAX - suffix.len()),
                HostMatch::Any => (2, 0),
            };
            (host_rank, usize::MAX - r.path.len())
        });
        Router { routes }
    }

    /// The route for a request. `host` is the Host header or URI authority (port allowed,
    /// any case); `path` the request path.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let host = host.map(normalise_host);
        self.routes
            .iter()
            .find(|r| host_matches(&r.host, host.as_deref()) && path_matches(&r.path, path))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// Lowercases and strips the port (and IPv6 brackets stay as written). Borrows unless
/// there is something to lowercase.
fn normalise_host(host: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = without_port.trim_end_matches('.');
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

fn host_matches(pattern: &HostMatch, host: Option<&str>) -> bool {
    match (pattern, host) {
        (HostMatch::Any, _) => true,
        (HostMatch::Exact(name), Some(host)) => name == host,
        (HostMatch::Wildcard(suffix), Some(host)) => {
            host.len() > suffix.len() && host.ends_with(suffix.as_str())
        }
        _ => false,
    }
}

/// `/api` matches `/api`, `/api/x` and `/api?q`, but not `/apix`; `/api/` matches `/api/x`.
fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, RouteId};

    fn route(id: usize, host: HostMatch, path: &str) -> Route {
        Route {
            auth: None,
            id: RouteId(id),
            host,
            path: path.into(),
            action: Action::Redirect {
                status: http::StatusCode::FOUND,
                to: "/".into(),
                keep_path: false,
                regex: None,
            },
            rate_limit: None,
            rules: None,
            access: None,
            limits: Default::default(),
        }
    }

    fn router() -> Router {
        Router::new(&[
            route(0, HostMatch::Any, "/"),
            route(1, HostMatch::Any, "/api"),
            route(2, HostMatch::Wildcard(".example.com".into()), "/"),
            route(3, HostMatch::Exact("www.example.com".into()), "/"),
            route(4, HostMatch::Wildcard(".b.example.com".into()), "/"),
            route(5, HostMatch::Exact("www.example.com".into()), "/api/"),
        ])
    }

    #[test]
    fn most_specific_wins() {
        let r = router();
        let id = |host: Option<&str>, path: &str| r.lookup(host, path).map(|r| r.id.0);
        assert_eq!(id(Some("www.example.com"), "/api/x"), Some(5));
        assert_eq!(id(Some("WWW.Example.com:8080"), "/x"), Some(3));
        assert_eq!(id(Some("a.b.example.com"), "/"), Some(4));
        assert_eq!(id(Some("a.example.com"), "/api"), Some(2));
        assert_eq!(
            id(Some("example.com"), "/api"),
            Some(1),
            "a wildcard does not match the bare domain"
        );
        assert_eq!(id(Some("other.org"), "/apix"), Some(0));
        assert_eq!(id(None, "/api/v1"), Some(1));
    }

    #[test]
    fn no_route_is_none() {
        let r = Router::new(&[route(0, HostMatch::Exact("a.com".into()), "/x")]);
        assert!(r.lookup(Some("a.com"), "/y").is_none());
        assert!(r.lookup(Some("b.com"), "/x").is_none());
        assert!(r.lookup(Some("a.com"), "/x/y").is_some());
    }

    #[test]
    fn hosts_normalise() {
        assert_eq!(normalise_host("[::1]:80"), "::1");
        assert_eq!(normalise_host("Example.COM."), "example.com");
        assert_eq!(normalise_host("a:1"), "a");
    }
}
