//! Issue 18: header rules, path rewrites and redirects with captures, through real sockets.

mod support;

use http::StatusCode;
use support::*;

fn body_text(b: &bytes::Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// GET with extra request fields; the client never follows redirects.
async fn get_with(
    url: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt;
    let mut req = http::Request::get(url);
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let body: Body = http_body_util::Empty::new().map_err(|e| match e {}).boxed();
    let resp = client().request(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

const RULES: &str = r#"
[server]
admin = "off"
[log]
access = "off"
[defaults.headers.response]
set = { "X-Default" = "d" }
[upstreams.app]
servers = ["{origin}"]

[[routes]]
path = "/api/"
upstream = "app"
rewrite = { strip_prefix = "/api" }
[routes.headers.request]
set = { "X-Env" = "prod", "X-Client-IP" = "{client_ip}", "X-Vars" = "{scheme}|{method}|{path}|{query}|{route}|{upstream}|{host}" }
add = { "X-Tag" = "edge" }
remove = ["X-Debug"]
[routes.headers.response]
set = { "Strict-Transport-Security" = "max-age=63072000; includeSubDomains" }
remove = ["X-Powered-By"]
set_if_absent = { "Cache-Control" = "no-store", "X-Absent" = "yes" }

[[routes]]
path = "/v/"
upstream = "app"
rewrite = { prefix = "/v2" }

[[routes]]
path = "/old/"
upstream = "app"
rewrite = { regex = "^/old/(?P<rest>.*)$", to = "/echo/$${rest}" }

[[routes]]
path = "/blog/"
redirect = { regex = '^/blog/(\d+)$', to = "https://blog.example.com/p/$1", status = 301 }

[[routes]]
path = "/legacy"
redirect = { to = "https://example.com/new", status = 308, keep_path = true }

[[routes]]
path = "/"
upstream = "app"
"#;

#[tokio::test]
async fn request_and_response_header_rules_with_variables() {
    let origin = Origin::start().await;
    origin.set(
        "/echo",
        Reply::new("x")
            .header("x-powered-by", "php")
            .header("x-absent", "origin"),
    );
    let torii = Torii::start(RULES, Some(&origin)).await;
    let (_, headers, _) = get_with(
        &torii.url("/api/echo?a=1"),
        &[("x-debug", "1"), ("x-tag", "client")],
    )
    .await;
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert!(!headers.contains_key("x-powered-by"), "{headers:?}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(
        headers["x-absent"], "origin",
        "set_if_absent keeps the origin's"
    );
    assert_eq!(headers["x-default"], "d", "[defaults] inherited");
    let (_, seen) = origin.requests("/echo").pop().unwrap();
    assert_eq!(seen["x-env"], "prod");
    assert_eq!(seen["x-client-ip"], "127.0.0.1");
    assert!(!seen.contains_key("x-debug"));
    let tags: Vec<_> = seen.get_all("x-tag").iter().collect();
    assert_eq!(tags, ["client", "edge"], "add keeps the client's value");
    assert_eq!(
        seen["x-vars"],
        format!("http|GET|/api/echo|a=1|0|app|{}", torii.addr).as_str()
    );
}

#[tokio::test]
async fn response_rules_apply_to_hits_and_the_origins_answer_is_stored() {
    let origin = Origin::start().await;
    origin.set(
        "/c",
        Reply::new("cached")
            .header("cache-control", "max-age=60")
            .header("x-powered-by", "php"),
    );
    let toml = RULES.replace(
        "path = \"/v/\"",
        "path = \"/c\"\nupstream = \"app\"\n[routes.headers.response]\nremove = [\"X-Powered-By\"]\nset = { \"X-R\" = \"{method} {path}\" }\n[[routes]]\npath = \"/v/\"",
    );
    let torii = Torii::start(&toml, Some(&origin)).await;
    for (i, cache) in ["MISS", "HIT", "HIT"].iter().enumerate() {
        let (status, headers, body) = get(&torii.url("/c")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body_text(&body), "cached");
        assert_eq!(headers["x-cache"], *cache, "request {i}");
        assert!(!headers.contains_key("x-powered-by"), "{i}: {headers:?}");
        assert_eq!(headers["x-r"], "GET /c");
        assert_eq!(headers["x-default"], "d");
        assert_eq!(headers["via"], "1.1 torii");
        if i > 0 {
            assert!(headers.contains_key("age"), "{headers:?}");
        }
    }
    assert_eq!(origin.hits("/c"), 1);
}

#[tokio::test]
async fn rewrites_reach_the_upstream_and_the_key_keeps_the_clients_path() {
    let origin = Origin::start().await;
    let torii = Torii::start(RULES, Some(&origin)).await;
    let (_, _, body) = get(&torii.url("/api/echo?q=1")).await;
    assert!(
        body_text(&body).starts_with("GET /echo?q=1 "),
        "{}",
        body_text(&body)
    );
    let (status, _, _) = get(&torii.url("/old/a%2Fb?z=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        origin.hits("/echo/a%2Fb"),
        1,
        "the raw path is captured as it came"
    );
    origin.set(
        "/v2/v/x",
        Reply::new("v2").header("cache-control", "max-age=60"),
    );
    let (_, h, body) = get(&torii.url("/v/x")).await;
    assert_eq!(body_text(&body), "v2");
    assert_eq!(h["x-cache"], "MISS");
    let (_, h, _) = get(&torii.url("/v/x")).await;
    assert_eq!(h["x-cache"], "HIT");
    // The key is the client's path: a request for the rewritten path is another object.
    let (_, h, _) = get(&torii.url("/v2/v/x")).await;
    assert_eq!(h["x-cache"], "MISS");
}

#[tokio::test]
async fn redirects_with_captures_and_the_old_form() {
    let origin = Origin::start().await;
    let torii = Torii::start(RULES, Some(&origin)).await;
    let (status, headers, _) = get(&torii.url("/blog/42?ref=x")).await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://blog.example.com/p/42?ref=x");
    let (status, _, _) = get(&torii.url("/blog/abc")).await;
    assert_eq!(status, 404, "no match: no route");
    let (status, headers, _) = get(&torii.url("/legacy/a?b")).await;
    assert_eq!(status, 308);
    assert_eq!(headers["location"], "https://example.com/new/legacy/a?b");
}

#[tokio::test]
async fn what_is_stored_is_the_origins_answer() {
    // Two routes share one cache key (the host is not in it); only the first has rules.
    let origin = Origin::start().await;
    origin.set(
        "/s",
        Reply::new("s")
            .header("cache-control", "max-age=60")
            .header("x-powered-by", "php"),
    );
    let toml = r#"
[server]
admin = "off"
[log]
access = "off"
[upstreams.app]
servers = ["{origin}"]
[[routes]]
host = "a.test"
upstream = "app"
cache = { key = { host = false } }
headers = { response = { remove = ["X-Powered-By"] } }
[[routes]]
upstream = "app"
cache = { key = { host = false } }
"#;
    let torii = Torii::start(toml, Some(&origin)).await;
    let (_, h, _) = get_with(&torii.url("/s"), &[("host", "a.test")]).await;
    assert_eq!(h["x-cache"], "MISS");
    assert!(!h.contains_key("x-powered-by"));
    let (_, h, _) = get_with(&torii.url("/s"), &[("host", "b.test")]).await;
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(h["x-powered-by"], "php", "stored as the origin sent it");
    let (_, h, _) = get_with(&torii.url("/s"), &[("host", "a.test")]).await;
    assert_eq!(h["x-cache"], "HIT");
    assert!(!h.contains_key("x-powered-by"), "rules after the lookup");
}

#[tokio::test]
async fn a_rule_on_a_keyed_field_changes_the_key() {
    let origin = Origin::start().await;
    origin.set("/k", Reply::new("k").header("cache-control", "max-age=60"));
    let toml = r#"
[server]
admin = "off"
[log]
access = "off"
[upstreams.app]
servers = ["{origin}"]
[[routes]]
upstream = "app"
cache = { key = { headers = ["X-Tenant"] } }
headers = { request = { set = { "X-Tenant" = "one" } } }
"#;
    let torii = Torii::start(toml, Some(&origin)).await;
    let (_, h, _) = get_with(&torii.url("/k"), &[("x-tenant", "a")]).await;
    assert_eq!(h["x-cache"], "MISS");
    // Every client's X-Tenant becomes "one": one object for all.
    let (_, h, _) = get_with(&torii.url("/k"), &[("x-tenant", "b")]).await;
    assert_eq!(h["x-cache"], "HIT");
    let (_, seen) = origin.requests("/k").pop().unwrap();
    assert_eq!(seen["x-tenant"], "one");
    assert_eq!(origin.hits("/k"), 1);
}

fn problems(text: &str) -> String {
    match torii::config::load_str("t.toml", text) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn check_reports_rule_mistakes_at_file_line_col() {
    let base = "[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n";
    let p = problems(&format!(
        "{base}[routes.headers.request]\nset = {{ \"X-A\" = \"{{nope}}\" }}\n"
    ));
    assert!(p.contains("t.toml:6:"), "{p}");
    assert!(p.contains("unknown variable {nope}"), "{p}");
    assert!(p.contains("{client_ip}"), "hint lists them: {p}");
    let p = problems(&format!(
        "{base}[routes.headers.response]\nset = {{ \"Content-Length\" = \"1\" }}\n"
    ));
    assert!(p.contains("t.toml:6:") && p.contains("framing"), "{p}");
    let p = problems(&format!(
        "{base}[routes.headers.request]\nset = {{ \"Host\" = \"x\" }}\n"
    ));
    assert!(p.contains("host_header"), "{p}");
    let p = problems(&format!(
        "{base}rewrite = {{ regex = \"^/(a\", to = \"/$1\" }}\n"
    ));
    assert!(
        p.contains("t.toml:5:") && p.contains("not a valid regex"),
        "{p}"
    );
    let p = problems(&format!(
        "{base}rewrite = {{ regex = \"(?=a)\", to = \"/\" }}\n"
    ));
    assert!(p.contains("not a valid regex"), "look-around refused: {p}");
    let p = problems("[[routes]]\nredirect = { regex = \"[\", to = \"https://x/$1\" }\n");
    assert!(
        p.contains("t.toml:2:") && p.contains("redirect.regex"),
        "{p}"
    );
    let p = problems(&format!("{base}rewrite = {{ prefix = \"v2\" }}\n"));
    assert!(p.contains("not a path"), "{p}");
    let p = problems("[defaults.headers.request]\nremove = [\"Connection\"]\n[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n");
    assert!(
        p.contains("t.toml:2:") && p.contains("defaults.headers.request.remove"),
        "{p}"
    );
}

const GOOD_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn seen(origin: &Origin, path: &str) -> http::HeaderMap {
    origin.requests(path).pop().unwrap().1
}

#[tokio::test]
async fn every_request_gets_an_id_sent_upstream_and_returned() {
    let origin = Origin::start().await;
    origin.set("/echo", Reply::new("e"));
    origin.set(
        "/h",
        Reply::new("h")
            .header("cache-control", "max-age=60")
            .header("x-request-id", "origin-id"),
    );
    let torii = Torii::to(&origin, "").await;
    let (_, h, _) = get_with(&torii.url("/echo"), &[("x-request-id", "client-id")]).await;
    let id = h["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "not trusted by default: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(seen(&origin, "/echo")["x-request-id"], id.as_str());
    // Hits (raw lines) and relayed answers carry the request's own ID, once.
    let mut ids = Vec::new();
    for cache in ["MISS", "HIT", "HIT"] {
        let (_, h, _) = get(&torii.url("/h")).await;
        assert_eq!(h["x-cache"], cache);
        let all: Vec<_> = h.get_all("x-request-id").iter().collect();
        assert_eq!(all.len(), 1, "{h:?}");
        ids.push(all[0].clone());
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
    // Errors too.
    let (status, h, _) = get(&torii.url("/status/502")).await;
    assert_eq!(status, 502);
    assert!(h.contains_key("x-request-id"));

    let trusting = Torii::start(
        "[server]\nadmin = \"off\"\ntrust_request_id = true\n[log]\naccess = \"off\"\n[upstreams.app]\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n",
        Some(&origin),
    )
    .await;
    let (_, h, _) = get_with(&trusting.url("/echo"), &[("x-request-id", "client-id")]).await;
    assert_eq!(h["x-request-id"], "client-id");
    assert_eq!(seen(&origin, "/echo")["x-request-id"], "client-id");
    let (_, h, _) = get_with(&trusting.url("/echo"), &[("x-request-id", "bad id\"")]).await;
    assert_eq!(h["x-request-id"].len(), 32, "a malformed one is replaced");
}

#[tokio::test]
async fn trace_context_kept_replaced_or_started() {
    let origin = Origin::start().await;
    origin.set("/echo", Reply::new("e"));
    let torii = Torii::to(&origin, "[tracing]\nenabled = true\nsample = 1.0\n").await;
    // Valid: the trace id and flags stay, the parent id is new, tracestate passes.
    get_with(
        &torii.url("/echo"),
        &[("traceparent", GOOD_TP), ("tracestate", "v=1")],
    )
    .await;
    let h = seen(&origin, "/echo");
    let tp = h["traceparent"].to_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        tp.ends_with("-01") && tp != GOOD_TP && tp.len() == 55,
        "{tp}"
    );
    assert_eq!(h["tracestate"], "v=1");
    // Invalid (uppercase hex, zero ids, bad version): a new trace, tracestate dropped.
    for bad in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "garbage",
    ] {
        get_with(
            &torii.url("/echo"),
            &[("traceparent", bad), ("tracestate", "v=1")],
        )
        .await;
        let h = seen(&origin, "/echo");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(
            !tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{bad} → {tp}"
        );
        assert!(
            tp.starts_with("00-") && tp.ends_with("-01"),
            "sampled per tracing.sample: {tp}"
        );
        assert!(!h.contains_key("tracestate"), "{bad}");
    }
    // None: a new trace; with the default sample (0) not sampled.
    let plain = Torii::to(&origin, "[tracing]\nenabled = true\n").await;
    get(&plain.url("/echo")).await;
    let tp = seen(&origin, "/echo")["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        tp.starts_with("00-") && tp.ends_with("-00") && tp.len() == 55,
        "{tp}"
    );
    let off = Torii::to(&origin, "[tracing]\nenabled = false\n").await;
    get(&off.url("/echo")).await;
    assert!(!seen(&origin, "/echo").contains_key("traceparent"));
}

#[tokio::test]
async fn request_and_trace_ids_in_both_log_formats() {
    let origin = Origin::start().await;
    for format in ["combined", "json"] {
        let dir =
            std::env::temp_dir().join(format!("torii-rules-log-{}-{format}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let extra = format!(
            "[log]\naccess = \"{}\"\nformat = \"{format}\"\n[tracing]\nenabled = true\n",
            dir.display()
        );
        let torii = Torii::to(&origin, &extra).await;
        let (_, h, _) = get_with(&torii.url("/echo"), &[("traceparent", GOOD_TP)]).await;
        let id = h["x-request-id"].to_str().unwrap().to_string();
        let read = || std::fs::read_to_string(&dir).unwrap_or_default();
        wait_until("the request is logged", PATIENCE, || read().contains(&id)).await;
        let text = read();
        let _ = std::fs::remove_file(&dir);
        assert!(text.contains(&id), "{format}: {text}");
        assert!(
            text.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{format}: {text}"
        );
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            assert_eq!(v["request_id"], id.as_str());
            assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        } else {
            assert!(
                text.contains(&format!(
                    "rid=\"{id}\" trace=4bf92f3577b34da6a3ce929d0e0e4736"
                )),
                "{text}"
            );
        }
    }
}

#[test]
fn check_reports_identity_mistakes() {
    let base = "[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n";
    let p = problems(&format!("[tracing]\nsample = 1.5\n{base}"));
    assert!(
        p.contains("t.toml:2:") && p.contains("tracing.sample"),
        "{p}"
    );
    let p = problems(&format!("[server]\ntrust_request_id = \"yes\"\n{base}"));
    assert!(p.contains("t.toml:2:"), "{p}");
}

#[tokio::test]
async fn odd_paths_match_the_raw_form_deterministically() {
    let origin = Origin::start().await;
    let torii = Torii::start(RULES, Some(&origin)).await;
    // Percent-encoding is not decoded: `%2F` is three bytes, `%62log` is not `blog`.
    let (status, _, _) = get(&torii.url("/blog/%34%32")).await;
    assert_eq!(status, 404, "\\d+ does not match %34%32");
    let (status, headers, _) = get(&torii.url("/blog/42")).await;
    assert_eq!(
        (status.as_u16(), &headers["location"]),
        (
            301,
            &"https://blog.example.com/p/42"
                .parse::<http::HeaderValue>()
                .unwrap()
        )
    );
    // Bytes that are not UTF-8: the same answer every time.
    let mut answers = Vec::new();
    for _ in 0..2 {
        let text = raw(
            torii.addr,
            b"GET /old/\xff\xfe HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            std::time::Duration::from_secs(5),
        )
        .await;
        answers.push(text.lines().next().unwrap_or("").to_string());
    }
    // hyper refuses a target with bytes outside ASCII before any rule sees it.
    assert_eq!(answers, ["HTTP/1.1 400 Bad Request"; 2]);
}

#[test]
fn the_example_config_loads_with_its_rules() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let text = std::fs::read_to_string(dir.join("torii.toml")).unwrap();
    let config = torii::config::load_str_in("torii.toml", &text, Some(&dir))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.routes.iter().any(|r| r
        .rules
        .as_ref()
        .is_some_and(|r| r.rewrite.is_some() && !r.request.is_empty())));
    assert!(config.identity.trace_context);
    assert!(!config.identity.trust_request_id);
}

#[tokio::test]
async fn request_id_and_env_variables() {
    std::env::set_var("TORII_RULES_TEST_REGION", "eu-west");
    let origin = Origin::start().await;
    origin.set("/v", Reply::new("v"));
    let toml = r#"
[server]
admin = "off"
[log]
access = "off"
[upstreams.app]
servers = ["{origin}"]
[[routes]]
upstream = "app"
headers = { request = { set = { "X-Rid" = "rid={request_id}", "X-Region" = "{env.TORII_RULES_TEST_REGION}" } }, response = { set = { "X-Rid-Back" = "{request_id}" } } }
"#;
    let torii = Torii::start(toml, Some(&origin)).await;
    let (_, h, _) = get(&torii.url("/v")).await;
    let id = h["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(h["x-rid-back"], id.as_str());
    let seen = seen(&origin, "/v");
    assert_eq!(seen["x-rid"], format!("rid={id}").as_str());
    assert_eq!(seen["x-region"], "eu-west");
    let p = problems(&toml.replace("TORII_RULES_TEST_REGION", "TORII_RULES_TEST_UNSET"));
    assert!(
        p.contains("TORII_RULES_TEST_UNSET") && p.contains("is not set"),
        "{p}"
    );
}
