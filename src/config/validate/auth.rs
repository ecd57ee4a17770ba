//! `routes[].auth` and `[defaults].auth`: Basic auth (the htpasswd file is read and checked
//! here, so `torii check` and every reload refuse a weak or broken file) or forward auth.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::HeaderName;
use toml::Spanned;

use super::super::auth::{parse_htpasswd, Auth, BasicAuth, ForwardAuth, MAX_USERS_FILE};
use super::super::file;
use super::Checker;
use crate::config::model::{Upstream, UpstreamName};

/// The longest forward-auth `cache` accepted: a revoked session stays valid this long.
const MAX_CACHE: Duration = Duration::from_secs(3600);

/// `auth` at `path` (default: none); `None` too for `off = true`.
pub(super) fn route_auth(
    c: &mut Checker,
    section: Option<&Spanned<file::AuthSection>>,
    path: &str,
    upstreams: &BTreeMap<UpstreamName, Upstream>,
    base: Option<&Path>,
) -> Option<Arc<Auth>> {
    let spanned = section?;
    let s = spanned.get_ref();
    if let Some(off) = s.off {
        if !off || s.basic.is_some() || s.forward.is_some() {
            c.report(
                spanned.span(),
                path,
                "`off` stands alone, and only as `off = true`",
            );
            c.hint("auth = { off = true } turns off the auth of [defaults] for this route");
        }
        return None;
    }
    match (&s.basic, &s.forward) {
        (Some(basic), None) => basic_auth(c, basic, &format!("{path}.basic"), base),
        (None, Some(forward)) => forward_auth(c, forward, &format!("{path}.forward"), upstreams),
        (Some(_), Some(_)) => {
            c.report(spanned.span(), path, "`basic` and `forward` are exclusive");
            c.hint("keep one: auth = { basic = {…} } or auth = { forward = {…} }");
            None
        }
        (None, None) => {
            c.report(spanned.span(), path, "empty: neither `basic` nor `forward`");
            c.hint("auth = { basic = { realm = \"staff\", users_file = \"htpasswd\" } }");
            None
        }
    }
}

fn basic_auth(
    c: &mut Checker,
    spanned: &Spanned<file::BasicAuthSection>,
    path: &str,
    base: Option<&Path>,
) -> Option<Arc<Auth>> {
    let s = spanned.get_ref();
    let realm = match &s.realm {
        None => "restricted".to_string(),
        Some(r) => {
            let text = r.get_ref();
            // It is written inside a quoted string of `WWW-Authenticate`.
            if text.is_empty()
                || text
                    .chars()
                    .any(|ch| ch == '"' || ch == '\\' || ch.is_control())
            {
                c.report(
                    r.span(),
                    format!("{path}.realm"),
                    format!("{text:?} is not a usable realm"),
                );
                c.hint("a non-empty name without quotes, backslashes or control characters");
            }
            text.clone()
        }
    };
    let Some(file_value) = &s.users_file else {
        c.report(spanned.span(), format!("{path}.users_file"), "missing");
        c.hint("users_file = \"htpasswd\" (bcrypt: `htpasswd -B -c htpasswd NAME`)");
        return None;
    };
    let users_file = super::tls::resolve(base, file_value.get_ref());
    let key = format!("{path}.users_file");
    let shown = users_file.display();
    let text = match std::fs::metadata(&users_file) {
        Ok(m) if m.len() > MAX_USERS_FILE => Err(format!(
            "{shown} is larger than {} MiB",
            MAX_USERS_FILE >> 20
        )),
        Ok(_) => std::fs::read_to_string(&users_file).map_err(|e| format!("{shown}: {e}")),
        Err(e) => Err(format!("{shown}: {e}")),
    };
    let text = match text {
        Ok(text) => text,
        Err(why) => {
            c.report(file_value.span(), key, why);
            c.hint("a readable htpasswd file; relative paths are from the config file's directory");
            return None;
        }
    };
    let users = match parse_htpasswd(&text) {
        Ok(users) => users,
        Err(problems) => {
            for (line, why) in problems {
                let at = if line == 0 {
                    shown.to_string()
                } else {
                    format!("{shown}:{line}")
                };
                c.report(file_value.span(), key.clone(), format!("{at}: {why}"));
                c.hint(
                    "lines are `user:hash` with bcrypt ($2y$, `htpasswd -B`) or $argon2id$ hashes",
                );
            }
            return None;
        }
    };
    Some(Arc::new(Auth::Basic(BasicAuth {
        realm,
        users_file,
        users: Arc::new(users),
        forward_authorization: s.forward_authorization.unwrap_or(false),
    })))
}

fn forward_auth(
    c: &mut Checker,
    spanned: &Spanned<file::ForwardAuthSection>,
    path: &str,
    upstreams: &BTreeMap<UpstreamName, Upstream>,
) -> Option<Arc<Auth>> {
    let s = spanned.get_ref();
    let upstream = match &s.upstream {
        None => {
            c.report(spanned.span(), format!("{path}.upstream"), "missing");
            c.hint("upstream = \"<name of an [upstreams.<name>] group that answers auth>\"");
            None
        }
        Some(name) => {
            let key = UpstreamName(name.get_ref().clone());
            if upstreams.contains_key(&key) {
                Some(key)
            } else {
                c.report(
                    name.span(),
                    format!("{path}.upstream"),
                    format!("unknown upstream {:?}", name.get_ref()),
                );
                let defined: Vec<&str> = upstreams.keys().map(|k| k.0.as_str()).collect();
                if defined.is_empty() {
                    c.hint("define one with [upstreams.<name>] servers = [\"127.0.0.1:9000\"]");
                } else {
                    c.hint(format!("defined are {}", defined.join(", ")));
                }
                None
            }
        }
    };
    let auth_path = match &s.path {
        None => {
            c.report(spanned.span(), format!("{path}.path"), "missing");
            c.hint("path = \"/verify\"");
            None
        }
        Some(p) => match p.get_ref().parse::<PathAndQuery>() {
            Ok(pq) if p.get_ref().starts_with('/') => Some(pq),
            _ => {
                c.report(
                    p.span(),
                    format!("{path}.path"),
                    format!("{:?} is not a path", p.get_ref()),
                );
                c.hint("a path starting with '/', e.g. \"/verify\"");
                None
            }
        },
    };
    let mut copy_headers: Vec<HeaderName> = Vec::new();
    for (i, name) in s.copy_headers.iter().flatten().enumerate() {
        match HeaderName::from_bytes(name.get_ref().as_bytes()) {
            // What header rules may not touch (hop-by-hop and framing fields, Host), and
            // Authorization, which the client sent the auth service.
            Ok(h)
                if !super::rules::FORBIDDEN.contains(&h.as_str())
                    && !matches!(
                        h.as_str(),
                        "authorization" | "proxy-authorization" | "proxy-authenticate"
                    ) =>
            {
                if !copy_headers.contains(&h) {
                    copy_headers.push(h);
                }
            }
            _ => {
                c.report(
                    name.span(),
                    format!("{path}.copy_headers[{i}]"),
                    format!("{:?} cannot be copied onto the request", name.get_ref()),
                );
                c.hint("a field name such as \"X-User\"; not hop-by-hop, Host, Content-Length or Authorization");
            }
        }
    }
    let cache_path = format!("{path}.cache");
    let cache = match &s.cache {
        Some(v) if v.get_ref() == "off" => None,
        Some(_) => {
            let d = c.duration(&s.cache, &cache_path, Duration::ZERO);
            if d > MAX_CACHE {
                c.report(
                    s.cache.as_ref().map_or(0..0, |v| v.span()),
                    cache_path,
                    "longer than 1h",
                );
                c.hint("a revoked session would stay valid this long; use at most \"1h\"");
            }
            (!d.is_zero()).then_some(d)
        }
        None => None,
    };
    Some(Arc::new(Auth::Forward(ForwardAuth {
        upstream: upstream?,
        path: auth_path?,
        copy_headers,
        cache,
    })))
}

#[cfg(test)]
mod tests {
    use crate::config::auth::Auth;
    use crate::config::load_str;

    fn problems(text: &str) -> Vec<String> {
        match load_str("t.toml", text) {
            Ok(_) => vec![],
            Err(e) => e.to_string().lines().map(String::from).collect(),
        }
    }

    /// Writes `text` to `name` in `dir` (a test's own, removed when it ends).
    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn forward_auth_checked() {
        let text = r#"
[upstreams.app]
servers = ["127.0.0.1:3000"]
[upstreams.auth]
servers = ["127.0.0.1:9000"]
[[routes]]
upstream = "app"
auth = { forward = { upstream = "auht", path = "verify", copy_headers = ["X-User", "Connection"], cache = "2h" } }
[[routes]]
path = "/b"
upstream = "app"
auth = { forward = { upstream = "auth", path = "/verify" }, basic = { users_file = "x" } }
"#;
        let p = problems(text);
        let find = |s: &str| {
            p.iter()
                .find(|l| l.contains(s))
                .cloned()
                .unwrap_or_default()
        };
        assert!(
            find("unknown upstream \"auht\"")
                .starts_with("t.toml:8:33: routes[0].auth.forward.upstream"),
            "{p:?}"
        );
        assert!(find("defined are app, auth").contains("hint"), "{p:?}");
        assert!(
            find("\"verify\" is not a path").contains("routes[0].auth.forward.path"),
            "{p:?}"
        );
        assert!(
            find("\"Connection\" cannot").contains("copy_headers[1]"),
            "{p:?}"
        );
        assert!(
            find("longer than 1h").contains("routes[0].auth.forward.cache"),
            "{p:?}"
        );
        assert!(
            find("exclusive").starts_with("t.toml:12:8: routes[1].auth"),
            "{p:?}"
        );
    }

    #[test]
    fn basic_auth_reads_the_file_and_defaults_apply() {
        let bcrypt = bcrypt::hash_with_salt("pw", 4, [1; 16])
            .unwrap()
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let good = file(&dir, "good", &format!("ann:{bcrypt}\n"));
        let weak = file(
            &dir,
            "weak",
            &format!("ann:{bcrypt}\nbob:$apr1$x$y\ncid:secret\n"),
        );
        let text = format!(
            r#"
[defaults]
auth = {{ basic = {{ realm = "staff", users_file = "{good}" }} }}
[upstreams.app]
servers = ["127.0.0.1:3000"]
[[routes]]
upstream = "app"
[[routes]]
path = "/open"
upstream = "app"
auth = {{ off = true }}
[[routes]]
path = "/weak"
upstream = "app"
auth = {{ basic = {{ users_file = "{weak}" }} }}
[[routes]]
path = "/none"
upstream = "app"
auth = {{ basic = {{ users_file = "/nonexistent/htpasswd" }} }}
"#
        );
        let p = problems(&text);
        assert_eq!(
            p.iter().filter(|l| l.contains("users_file")).count(),
            3,
            "{p:?}"
        );
        let find = |s: &str| {
            p.iter()
                .find(|l| l.contains(s))
                .cloned()
                .unwrap_or_default()
        };
        assert!(
            find("MD5-crypt").starts_with("t.toml:15:33: routes[2].auth.basic.users_file"),
            "{p:?}"
        );
        assert!(
            find("MD5-crypt").contains(&format!("{weak}:2: user \"bob\"")),
            "{p:?}"
        );
        assert!(find("plaintext").contains(&format!("{weak}:3:")), "{p:?}");
        assert!(
            find("/nonexistent/htpasswd").contains("routes[3].auth.basic.users_file"),
            "{p:?}"
        );

        let ok = text.split("[[routes]]\npath = \"/weak\"").next().unwrap();
        let config = load_str("t.toml", ok).unwrap();
        match config.routes[0].auth.as_deref() {
            Some(Auth::Basic(b)) => {
                assert_eq!(b.realm, "staff");
                assert_eq!(b.users.len(), 1);
                assert!(!b.forward_authorization);
            }
            other => panic!("{other:?}"),
        }
        assert!(config.routes[1].auth.is_none());
    }
}
