use super::*;

const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
admin = "off"
workers = 2
runtime = "work-stealing"

[limits]
max_body = "10MiB"
header_timeout = "5s"

[upstreams.app]
servers = ["127.0.0.1:3000", "http://localhost:3001"]

[[routes]]
host = "*.example.com"
path = "/api"
upstream = "app"

[[routes]]
path = "/health"
respond = { status = 200, body = "ok", headers = { "content-type" = "text/plain" } }

[[routes]]
path = "/old"
redirect = { to = "https://example.com/new", status = 308, keep_path = false }
"#;

fn problems(text: &str) -> Vec<String> {
    match load_str("t.toml", text) {
        Ok(_) => vec![],
        Err(e) => e.to_string().lines().map(String::from).collect(),
    }
}

#[test]
fn good_config_loads() {
    let config = load_str("t.toml", GOOD).unwrap();
    assert_eq!(config.server.workers, 2);
    assert_eq!(config.server.runtime, RuntimeKind::WorkStealing);
    assert_eq!(config.limits.max_body, 10 << 20);
    assert_eq!(config.routes.len(), 3);
    assert_eq!(
        config.upstreams[&UpstreamName("app".into())].servers.len(),
        2
    );
    assert!(matches!(config.routes[0].host, HostMatch::Wildcard(ref s) if s == ".example.com"));
}

#[test]
fn unknown_key_has_line_and_column() {
    let p = problems("[server]\nlisten = [\"127.0.0.1:1\"]\nworkrs = 2\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("t.toml:3:1: unknown field `workrs`"),
        "{}",
        p[0]
    );
    assert!(p[0].contains("hint:"), "{}", p[0]);
}

#[test]
fn unknown_upstream_lists_defined_ones() {
    let p =
        problems("[upstreams.api]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"apii\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("t.toml:4:12: routes[0].upstream: unknown upstream \"apii\""),
        "{}",
        p[0]
    );
    assert!(p[0].ends_with("hint: defined are api"), "{}", p[0]);
}

#[test]
fn every_problem_is_collected() {
    let text = r#"
[server]
listen = ["10.0.0.5"]
drain_timeout = "5"
[limits]
max_body = "12XB"
[upstreams.a]
servers = ["127.0.0.1:1/path"]
[[routes]]
upstream = "a"
"#;
    let p = problems(text);
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(
        p[0].starts_with("t.toml:3:11: server.listen[0]: \"10.0.0.5\" is not an IP:port"),
        "{}",
        p[0]
    );
    assert!(p[0].contains("hint: add a port: \"10.0.0.5:8080\""));
    assert!(
        p[1].starts_with("t.toml:4:17: server.drain_timeout"),
        "{}",
        p[1]
    );
    assert!(p[2].starts_with("t.toml:6:12: limits.max_body"), "{}", p[2]);
    assert!(
        p[3].starts_with("t.toml:8:12: upstreams.a.servers[0]"),
        "{}",
        p[3]
    );
}

#[test]
fn route_needs_exactly_one_action() {
    let p = problems("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\n");
    assert!(
        p[0].contains("exactly one of upstream, respond, redirect"),
        "{p:?}"
    );
}

#[test]
fn bad_types_and_syntax() {
    assert!(
        problems("[limits]\nmax_headers = \"ten\"\n")[0].starts_with("t.toml:2:15: invalid type")
    );
    assert!(problems("[server\n")[0].starts_with("t.toml:1:8:"));
    assert!(
        problems("[[routes]]\nhost = \"exa mple.com\"\nrespond = {}\n")[0]
            .contains("not a valid host name")
    );
    assert!(problems("[[routes]]\npath = \"api\"\nrespond = {}\n")[0].contains("not a path prefix"));
    assert!(problems("[[routes]]\nrespond = { status = 99 }\n")[0].contains("not a valid status"));
}

#[test]
fn line_col_counts_chars() {
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é=1", 2), (1, 2));
}
