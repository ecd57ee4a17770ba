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

#[test]
fn upstream_stress_keys_load() {
    let text = r#"
[limits]
max_connections_per_ip = 50
[upstreams.app]
servers = ["127.0.0.1:1", { addr = "127.0.0.1:2", weight = 3, max_conns = 100 }]
balance = "hash"
hash_key = "cookie:session"
health = { path = "/healthz", interval = "2s", timeout = "500ms", expect = "200-299", rise = 3, fall = 1 }
breaker = { failures = 4, ejection = "1s", max_ejection = "30s", max_ejection_percent = 34 }
retries = 1
retry_budget = 0.5
timeout = "10s"
queue_size = 10
queue_timeout = "250ms"
[[routes]]
upstream = "app"
rate_limit = { rps = 2.5, burst = 5, key = "header:x-api-key" }
"#;
    let config = load_str("t.toml", text).unwrap();
    assert_eq!(config.limits.max_connections_per_ip, 50);
    let u = &config.upstreams[&UpstreamName("app".into())];
    assert_eq!(u.servers[0].weight, 1);
    assert_eq!((u.servers[1].weight, u.servers[1].max_conns), (3, 100));
    assert_eq!(u.balance, Balance::Hash(HashKey::Cookie("session".into())));
    let h = u.health.as_ref().unwrap();
    assert_eq!((h.expect, h.rise, h.fall), ((200, 299), 3, 1));
    assert_eq!(h.timeout, std::time::Duration::from_millis(500));
    assert_eq!(u.breaker.failures, 4);
    assert_eq!(u.breaker.max_ejection_percent, 34);
    assert_eq!((u.retries, u.retry_budget), (1, 0.5));
    assert_eq!(u.timeout, Some(std::time::Duration::from_secs(10)));
    assert_eq!(u.queue_size, 10);
    let rl = config.routes[0].rate_limit.as_ref().unwrap();
    assert_eq!((rl.rps, rl.burst), (2.5, 5));
    assert_eq!(
        rl.key,
        RateKey::Header(http::HeaderName::from_static("x-api-key"))
    );
}

#[test]
fn upstream_stress_keys_are_checked_with_hints() {
    let text = r#"
[upstreams.app]
servers = [{ addr = "127.0.0.1:2", weigth = 3 }, { weight = 2 }, 5, "127.0.0.1:3", "127.0.0.1:3"]
balance = "least-conn"
hash_key = "uri"
health = { expect = "2xx" }
breaker = { ejection = "10s", max_ejection = "1s", max_ejection_percent = 101 }
retry_budget = 1.5
[[routes]]
upstream = "app"
rate_limit = { burst = 5 }
"#;
    let p = problems(text);
    let find = |needle: &str| {
        p.iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {p:#?}"))
    };
    assert!(find("unknown key \"weigth\"").starts_with("t.toml:3:12: upstreams.app.servers[0]"));
    assert!(find("missing addr").starts_with("t.toml:3:50: upstreams.app.servers[1]"));
    assert!(find("string or a table, not integer").contains("servers[2]"));
    assert!(find("listed twice").contains("hint: list each server once"));
    assert!(find("unknown policy \"least-conn\"").contains("hint: use \"p2c\" (default)"));
    assert!(find("hash_key only applies").contains("hint: add balance = \"hash\""));
    assert!(find("\"2xx\" is not a status").starts_with("t.toml:6:21: upstreams.app.health.expect"));
    assert!(find("shorter than breaker.ejection").contains("breaker.max_ejection"));
    assert!(find("101 is out of range")
        .starts_with("t.toml:7:75: upstreams.app.breaker.max_ejection_percent"));
    assert!(find("1.5 is not a fraction").contains("upstreams.app.retry_budget"));
    assert!(find("missing rps").starts_with("t.toml:11:14: routes[0].rate_limit"));
}

// === TLS listeners and upstream TLS (issue 6) ===

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn tls_problems(text: &str) -> Vec<String> {
    match load_str_in("t.toml", text, Some(&examples())) {
        Ok(_) => vec![],
        Err(e) => e.to_string().lines().map(String::from).collect(),
    }
}

const UPSTREAM_AND_ROUTE: &str =
    "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n";

#[test]
fn issue_6_tls_listener_reads_certificates_relative_to_the_config() {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[listeners]]\naddr = \"127.0.0.1:8443\"\n[listeners.tls]\ncert = \"tls/example.pem\"\nkey = \"tls/example.key\"\n[[listeners.tls.certs]]\ncert = \"tls/api.pem\"\nkey = \"tls/api.key\"\n[[listeners.tls.certs]]\ncert = \"tls/example.pem\"\nkey = \"tls/example.key\"\nnames = [\"Other.Example.Test\"]\n[[listeners]]\naddr = \"127.0.0.1:8081\"\nredirect_https = true\n{UPSTREAM_AND_ROUTE}"
    );
    let config = load_str_in("t.toml", &text, Some(&examples())).unwrap();
    let l = &config.server.listeners;
    assert_eq!(l.len(), 3, "server.listen first, then [[listeners]]");
    assert!(l[0].tls.is_none() && l[0].redirect_https.is_none());
    let tls = l[1].tls.as_ref().unwrap();
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(
        tls.default_cert.as_ref().unwrap().names,
        ["localhost", "example.test", "*.example.test"]
    );
    assert_eq!(tls.certs[0].names, ["api.example.test"], "from the SANs");
    assert_eq!(tls.certs[1].names, ["other.example.test"], "configured");
    assert_eq!(l[2].redirect_https, Some(443));
    assert!(config.summary().starts_with("3 listener(s) (1 TLS)"));
}

#[test]
fn issue_6_listeners_alone_replace_the_default_listener() {
    let text = format!("[[listeners]]\naddr = \"127.0.0.1:8081\"\n{UPSTREAM_AND_ROUTE}");
    let config = load_str("t.toml", &text).unwrap();
    assert_eq!(
        config.server.listen_addrs(),
        ["127.0.0.1:8081".parse::<std::net::SocketAddr>().unwrap()]
    );
}

#[test]
fn issue_6_listener_mistakes_are_reported_with_hints() {
    let text = format!(
        "[[listeners]]\naddr = \"127.0.0.1:8443\"\nredirect_https = true\n[listeners.tls]\ncert = \"tls/example.pem\"\nkey = \"tls/api.key\"\nmin_version = \"1.0\"\n[[listeners]]\naddr = \"127.0.0.1:80\"\nhttps_port = 8443\n[[listeners]]\n[[listeners]]\naddr = \"127.0.0.1:81\"\n[listeners.tls]\ncert = \"tls/example.pem\"\n{UPSTREAM_AND_ROUTE}"
    );
    let p = tls_problems(&text);
    let all = p.join("\n");
    assert!(
        all.contains("t.toml:7:15: listeners[0].tls.min_version: unsupported TLS version \"1.0\""),
        "{all}"
    );
    assert!(
        all.contains("t.toml:6:7: listeners[0].tls.key: ")
            && all.contains("does not match the certificate"),
        "{all}"
    );
    assert!(
        all.contains("t.toml:3:18: listeners[0].redirect_https: a TLS listener cannot redirect"),
        "{all}"
    );
    assert!(
        all.contains("t.toml:10:14: listeners[1].https_port: https_port only applies with redirect_https = true"),
        "{all}"
    );
    assert!(all.contains("listeners[2]: missing addr"), "{all}");
    assert!(
        all.contains("listeners[3].tls: needs both cert and key"),
        "{all}"
    );
    assert_eq!(p.len(), 6, "{all}");
    assert!(p.iter().all(|l| l.contains("; hint: ")), "{all}");
}

#[test]
fn issue_6_upstream_protocol_and_tls_keys_match_the_servers() {
    let group = |servers: &str, extra: &str| {
        format!("[upstreams.app]\nservers = [{servers}]\n{extra}\n[[routes]]\nupstream = \"app\"\n")
    };
    let ok = load_str_in(
        "t.toml",
        &group(
            "\"https://localhost\"",
            "protocol = \"h2\"\ntls_ca = \"tls/ca.pem\"\ntls_server_name = \"API.example.test\"",
        ),
        Some(&examples()),
    )
    .unwrap();
    let app = &ok.upstreams[&UpstreamName("app".into())];
    assert_eq!(app.servers[0].addr.to_string(), "https://localhost:443");
    assert_eq!(app.protocol, UpstreamProtocol::H2);
    assert_eq!(app.tls.server_name.as_deref(), Some("api.example.test"));
    assert_eq!(app.tls.ca.as_ref().unwrap().certs.len(), 1);

    let p = tls_problems(&group("\"127.0.0.1:3000\"", "protocol = \"h2\""));
    assert!(p[0].contains("\"h2\" is HTTP/2 over TLS, but the group has http:// servers; hint: use https:// servers, or protocol = \"h2c\""), "{p:?}");
    let p = tls_problems(&group("\"https://localhost\"", "protocol = \"h2c\""));
    assert!(p[0].contains("\"h2c\" is cleartext HTTP/2"), "{p:?}");
    let p = tls_problems(&group("\"127.0.0.1:3000\"", "protocol = \"spdy\""));
    assert!(p[0].contains("unknown protocol \"spdy\""), "{p:?}");
    let p = tls_problems(&group("\"127.0.0.1:3000\"", "tls_ca = \"tls/ca.pem\""));
    assert!(
        p[0].contains("upstreams.app.tls_ca: tls_ca only applies to https:// servers"),
        "{p:?}"
    );
    let p = tls_problems(&group("\"https://localhost\"", "tls_ca = \"tls/nope.pem\""));
    assert!(p[0].contains("upstreams.app.tls_ca: cannot read "), "{p:?}");
    let p = tls_problems(&group(
        "\"https://localhost\"",
        "tls_ca = \"tls/ca.pem\"\ntls_insecure_skip_verify = true",
    ));
    assert!(p[0].contains("ignores tls_ca"), "{p:?}");
    let p = tls_problems(&group("\"ftp://localhost:21\"", ""));
    assert!(p[0].contains("use http:// or https://"), "{p:?}");
}

#[test]
fn shared_tier_settings() {
    let base = "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n";
    let c = load_str("t.toml", base).unwrap();
    assert_eq!(c.cache.shared, None, "off by default");

    let c = load_str(
        "t.toml",
        &format!("[cache.shared]\nredis = \"redis://10.0.0.5:6379/2\"\ntimeout = \"50ms\"\nmax_object_size = \"256KiB\"\nlease = \"2s\"\nprefix = \"shop:\"\nbreaker_failures = 5\nbreaker_retry = \"3s\"\n{base}"),
    )
    .unwrap();
    let s = c.cache.shared.unwrap();
    assert_eq!(
        s.redis,
        RedisTarget::Single("redis://10.0.0.5:6379/2".into())
    );
    assert_eq!(s.timeout, std::time::Duration::from_millis(50));
    assert_eq!(s.max_object_size, 256 << 10);
    assert_eq!(s.lease, std::time::Duration::from_secs(2));
    assert_eq!(s.prefix, "shop:");
    assert_eq!(s.breaker_failures, 5);
    assert_eq!(s.breaker_retry, std::time::Duration::from_secs(3));

    let c = load_str(
        "t.toml",
        &format!("[cache.shared]\nredis = \"redis://127.0.0.1:6379\"\n{base}"),
    )
    .unwrap();
    assert_eq!(
        c.cache.shared.unwrap(),
        SharedSettings::new(RedisTarget::Single("redis://127.0.0.1:6379".into()))
    );
}

#[test]
fn redis_cluster_urls() {
    assert_eq!(
        RedisTarget::parse("redis+cluster://10.0.0.1:6379, 10.0.0.2:6380").unwrap(),
        RedisTarget::Cluster(vec![
            "redis://10.0.0.1:6379".into(),
            "redis://10.0.0.2:6380".into()
        ])
    );
    assert_eq!(
        RedisTarget::parse("redis://a:1,b:2").unwrap(),
        RedisTarget::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
    );
    assert!(RedisTarget::parse("http://10.0.0.1:6379").is_err());
    let tls = RedisTarget::parse("rediss://10.0.0.1:6379").unwrap();
    assert!(tls.is_tls());
    assert_eq!(
        RedisTarget::parse("unix:///run/redis.sock").unwrap(),
        RedisTarget::Single("unix:///run/redis.sock".into())
    );
    assert!(RedisTarget::parse("redis+cluster://").is_err());
}

#[test]
fn bad_shared_tier_settings_point_at_the_key() {
    let base = "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n";
    let p = problems(&format!(
        "[cache.shared]\nredis = \"http://x:6379\"\ntimeout = \"soon\"\n{base}"
    ));
    assert_eq!(p.len(), 1, "a bad URL stops the section: {p:?}");
    assert!(
        p[0].starts_with("t.toml:2:9: cache.shared.redis: \"http://x:6379\" is not a Redis URL"),
        "{}",
        p[0]
    );
    assert!(p[0].contains("hint: redis://host:port"), "{}", p[0]);

    let p = problems(&format!("[cache.shared]\nredis = \"redis://x:6379\"\ntimeout = \"soon\"\nprefix = \"{{a}}\"\nbreaker_failures = 0\n{base}"));
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p[0].starts_with("t.toml:3:11: cache.shared.timeout:"),
        "{}",
        p[0]
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("t.toml:4:10: cache.shared.prefix:")),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l.starts_with("t.toml:5:20: cache.shared.breaker_failures: 0 is out of range")), "{p:?}");

    let p = problems(&format!(
        "[cache]\nmemory = \"0\"\n[cache.shared]\nredis = \"redis://x\"\n{base}"
    ));
    assert!(
        p[0].contains("cache.shared: a shared tier needs the memory tier"),
        "{p:?}"
    );
    let p = problems(&format!("[cache.shared]\ntimeout = \"1s\"\n{base}"));
    assert!(p[0].contains("cache.shared: missing `redis`"), "{p:?}");
    let p = problems(&format!(
        "[cache.shared]\nredis = \"redis://x\"\nredis_url = \"x\"\n{base}"
    ));
    assert!(p[0].contains("unknown field `redis_url`"), "{p:?}");
}

#[test]
fn passwords_stay_out_of_logs() {
    assert_eq!(
        redact("redis://u:secret@h:6379/1"),
        "redis://u:***@h:6379/1"
    );
    assert_eq!(redact("redis://:secret@h:6379"), "redis://:***@h:6379");
    assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    assert_eq!(redact("unix:///run/redis.sock"), "unix:///run/redis.sock");
}

#[test]
fn range_fill_max_is_a_size_within_max_object_size() {
    let route = |cache: &str| {
        format!("[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n[routes.cache]\n{cache}\n")
    };
    let policy = |text: &str| {
        let config = load_str("t.toml", text).unwrap();
        match &config.routes[0].action {
            Action::Proxy { cache, .. } => cache.clone().unwrap(),
            _ => unreachable!(),
        }
    };
    assert_eq!(policy(&route("")).range_fill_max, 16 << 20);
    assert_eq!(
        policy(&route("range_fill_max = \"1MiB\"")).range_fill_max,
        1 << 20
    );
    assert_eq!(policy(&route("range_fill_max = \"0\"")).range_fill_max, 0);
    let p = problems(&route("range_fill_max = \"lots\""));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("t.toml:6:18: routes[0].cache.range_fill_max"),
        "{}",
        p[0]
    );
    assert!(p[0].contains("hint: sizes look like"), "{}", p[0]);
    let p = problems(&route(
        "max_object_size = \"1MiB\"\nrange_fill_max = \"2MiB\"",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("t.toml:7:18: routes[0].cache.range_fill_max"),
        "{}",
        p[0]
    );
    assert!(
        p[0].contains("hint: a range miss could never store"),
        "{}",
        p[0]
    );
}

#[test]
fn compress_is_on_by_default_and_checked_with_hints() {
    let route = |compress: &str| {
        format!(
            "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n{compress}\n"
        )
    };
    let compress_of = |text: &str| {
        let config = load_str("t.toml", text).unwrap();
        match &config.routes[0].action {
            Action::Proxy {
                compress, cache, ..
            } => (
                compress.clone(),
                cache.as_ref().is_some_and(|p| p.vary.identity_upstream),
            ),
            _ => unreachable!(),
        }
    };
    let (on, identity) = compress_of(&route(""));
    assert_eq!(on.as_deref(), Some(&Compress::default()));
    assert!(
        identity,
        "the origin is asked for identity when torii compresses"
    );
    let (off, identity) = compress_of(&route("compress = { enabled = false }"));
    assert!(off.is_none() && !identity);
    let (c, _) = compress_of(&route(
        "compress = { codings = [\"gzip\", \"br\"], min_size = \"2KiB\", types = [\"Text/*\"] }",
    ));
    let c = c.unwrap();
    assert_eq!(c.codings, vec![Coding::Gzip, Coding::Br]);
    assert_eq!(
        (c.min_size, c.types.clone()),
        (2048, vec!["text/*".to_string()])
    );

    let p = problems(&route(
        "compress = { codings = [\"gzip\", \"deflate\", \"gzip\"] }",
    ));
    assert_eq!(
        p.iter().filter(|l| l.starts_with("t.toml:")).count(),
        2,
        "{p:?}"
    );
    let unknown = p.iter().find(|l| l.contains("unknown coding")).unwrap();
    assert!(
        unknown.starts_with("t.toml:5:33: routes[0].compress.codings"),
        "{unknown}"
    );
    assert!(
        p.iter().any(|l| l.contains("torii compresses with")),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l.contains("listed twice")), "{p:?}");
    let p = problems(&route(
        "compress = { types = [\"html\"], min_size = \"big\" }",
    ));
    assert!(
        p.iter().any(|l| l.contains("routes[0].compress.types")
            && l.contains("\"html\" is not a media type")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("use \"type/subtype\" or \"type/*\"")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.contains("routes[0].compress.min_size")),
        "{p:?}"
    );
    let p = problems(&route("compress = { codings = [] }"));
    assert!(
        p.iter()
            .any(|l| l.contains("compress = { enabled = false }")),
        "{p:?}"
    );
    let p = problems(&route("compress = { level = 3 }"));
    assert!(!p.is_empty(), "unknown keys are errors");
    let p = problems("[[routes]]\nrespond = { status = 200 }\ncompress = { enabled = true }\n");
    assert!(
        p.iter()
            .any(|l| l.contains("compress only applies to routes with an upstream")),
        "{p:?}"
    );
}

#[test]
fn defaults_compress_is_what_routes_start_from() {
    let config = |defaults: &str| {
        format!(
            "[defaults]\ncompress = {defaults}\n[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n\
             [[routes]]\npath = \"/a\"\nupstream = \"app\"\n\
             [[routes]]\npath = \"/b\"\nupstream = \"app\"\ncompress = {{ min_size = \"4KiB\" }}\n\
             [[routes]]\npath = \"/c\"\nupstream = \"app\"\ncompress = {{ enabled = true }}\n"
        )
    };
    let compress_of = |text: &str| -> Vec<Option<Compress>> {
        let config = load_str("t.toml", text).unwrap();
        config
            .routes
            .iter()
            .map(|r| match &r.action {
                Action::Proxy { compress, .. } => compress.as_deref().cloned(),
                _ => unreachable!(),
            })
            .collect()
    };
    let c = compress_of(&config("{ codings = [\"gzip\"], min_size = \"100\" }"));
    let a = c[0].as_ref().unwrap();
    assert_eq!((a.codings.clone(), a.min_size), (vec![Coding::Gzip], 100));
    // A route's own key replaces the one it names; the rest come from [defaults].
    let b = c[1].as_ref().unwrap();
    assert_eq!((b.codings.clone(), b.min_size), (vec![Coding::Gzip], 4096));
    assert_eq!(b.types, Compress::default().types);
    // Off by default for every route, back on where a route says so.
    let c = compress_of(&config("{ enabled = false }"));
    assert!(c[0].is_none() && c[1].is_none());
    assert_eq!(c[2].as_ref(), Some(&Compress::default()));
    // Checked once, at its own place.
    let p = problems(&config("{ codings = [\"lzma\"] }"));
    let bad: Vec<_> = p.iter().filter(|l| l.starts_with("t.toml:")).collect();
    assert_eq!(bad.len(), 1, "{p:?}");
    assert!(
        bad[0].starts_with("t.toml:2:25: defaults.compress.codings"),
        "{p:?}"
    );
}

#[test]
fn issue_20_env_vars_in_string_values() {
    let text = "[upstreams.app]\nservers = [\"${APP:-127.0.0.1:3000}\"]\n\n[[routes]]\npath = \"/${PREFIX}\"\nupstream = \"app\"\n";
    let vars = Vars::from_pairs([("PREFIX", "api")]);
    let config = load_with("t.toml", text, None, &vars).unwrap();
    assert_eq!(config.routes[0].path, "/api");
    assert_eq!(
        config.upstreams[&UpstreamName("app".into())].servers[0].to_string(),
        "http://127.0.0.1:3000"
    );
    // Unset, no default: the position of the string, every one of them.
    let text = "[upstreams.app]\nservers = [\"${APP}\"]\n[[routes]]\npath = \"/${PREFIX}\"\nupstream = \"app\"\n";
    let e = load_with("t.toml", text, None, &Vars::from_pairs([])).unwrap_err();
    let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "t.toml:2:12: upstreams.app.servers[0]: environment variable APP is not set; hint:"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("t.toml:4:8: routes[0].path: environment variable PREFIX"),
        "{}",
        lines[1]
    );
}

#[test]
fn issue_20_a_value_cannot_inject_toml() {
    let text = "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\npath = \"${P}\"\nupstream = \"app\"\n";
    let vars = Vars::from_pairs([("P", "/x\"\nupstream = \"evil\"\n[server]\nworkers = 9")]);
    match load_with("t.toml", text, None, &vars) {
        Ok(c) => assert_eq!(
            c.routes[0].path,
            "/x\"\nupstream = \"evil\"\n[server]\nworkers = 9"
        ),
        // A path with a newline may be refused; it is never read as TOML.
        Err(e) => assert!(!e.to_string().contains("evil\" is"), "{e}"),
    }
}

#[test]
fn issue_20_server_log_format() {
    let base = "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n";
    let c = load_str(
        "t.toml",
        &format!("[server]\nlog_format = \"json\"\n{base}"),
    )
    .unwrap();
    assert_eq!(c.server.log_format, ProcessLogFormat::Json);
    let p = problems(&format!("[server]\nlog_format = \"xml\"\n{base}"));
    assert!(
        p[0].starts_with("t.toml:2:14: server.log_format: unknown log format \"xml\""),
        "{p:?}"
    );
}

#[test]
fn server_pid_file_and_upgrade_timeout_are_checked() {
    let routes = "[[routes]]\npath = \"/\"\nrespond = { status = 200 }\n";
    let config = load_str(
        "t.toml",
        &format!("[server]\npid_file = \"/run/torii/torii.pid\"\n{routes}"),
    )
    .unwrap();
    assert_eq!(
        config.server.pid_file.as_deref(),
        Some(std::path::Path::new("/run/torii/torii.pid"))
    );
    assert_eq!(load_str("t.toml", routes).unwrap().server.pid_file, None);
    for bad in ["\"\"", "\"/run/torii/\""] {
        let p = problems(&format!("[server]\npid_file = {bad}\n"));
        assert!(
            p[0].starts_with("t.toml:2:12: server.pid_file: ") && p[0].contains("not a file path"),
            "{p:?}"
        );
        assert!(
            p[0].contains("hint: e.g. pid_file = \"/run/torii/torii.pid\""),
            "{p:?}"
        );
    }
    let p = problems(&format!("[server]\nupgrade_timeout = \"0s\"\n{routes}"));
    assert!(
        p[0].starts_with("t.toml:2:19: server.upgrade_timeout: 0 would fail every upgrade"),
        "{p:?}"
    );
    let config = load_str(
        "t.toml",
        &format!("[server]\nupgrade_timeout = \"5s\"\n{routes}"),
    )
    .unwrap();
    assert_eq!(
        config.server.upgrade_timeout,
        std::time::Duration::from_secs(5)
    );
}
