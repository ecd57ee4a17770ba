//! One door to the upstream: cache misses, revalidations and passes all go through
//! `Group::forward`, so `max_conns`, the queue, retries on another server, the `hash`
//! policy and the breaker's limits hold with the cache on (the default) as with it off.
//! And outage-proof ejection: one bad URL never takes a group down; with every server
//! ejected, panic mode sends to all of them rather than answer 503.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

/// A torii config with one group `app` over `servers`, extra group keys, a route to it,
/// and `cache` (empty: the default memory cache).
fn config(servers: &str, group: &str, cache: &str) -> String {
    format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n{cache}\n\
         [upstreams.app]\nservers = [{servers}]\n{group}\n[[routes]]\nupstream = \"app\"\n"
    )
}

/// GET with extra request headers.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, String) {
    use http_body_util::BodyExt;
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn one_bad_url_never_takes_a_one_server_group_down() {
    let o = Origin::start().await;
    o.set("/bad", Reply::new("").hang_up());
    let torii = Torii::start(&config(&list(&[&o]), "", ""), None).await;
    for round in 0..12 {
        let (status, _, _) = get(&torii.url("/bad")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "round {round}");
        let (status, _, body) = get(&torii.url("/good")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "round {round}: the rest of the site answers"
        );
        assert_eq!(body, "ok");
    }
    let all = admin_get(&torii, "/upstreams").await;
    let group = &all["upstreams"][0];
    assert_eq!(group["servers"][0]["state"], "up", "{group}");
    assert_eq!(group["servers"][0]["ejections"], 0, "{group}");
    assert_eq!(group["panic"], false, "{group}");
}

/// Three servers, one killed: no idempotent GET fails, cacheable or not, with the cache
/// on and off: each failure to connect is retried on another server.
#[tokio::test]
async fn a_killed_server_fails_no_get_with_the_cache_on_or_off() {
    for cache in ["", "[cache]\nmemory = \"0\"\n"] {
        let o = origins(3).await;
        for origin in &o {
            origin.set("/c", Reply::new("c").header("cache-control", "max-age=60"));
        }
        let torii = Torii::start(&config(&list(&[&o[0], &o[1], &o[2]]), "", cache), None).await;
        o[1].kill();
        let mut failed = Vec::new();
        for i in 0..100 {
            for path in [format!("/u/{i}"), format!("/c?k={i}")] {
                let (status, _, _) = get(&torii.url(&path)).await;
                if status != StatusCode::OK {
                    failed.push((path, status));
                }
            }
        }
        assert!(failed.is_empty(), "cache {cache:?}: {failed:?}");
        assert_eq!(o[1].total_hits(), 0);
    }
}

/// `max_conns = 2` holds for cache misses: the origin never sees more than two requests
/// at once; the others wait in the queue, or get 503 + Retry-After when it is full.
#[tokio::test]
async fn max_conns_bounds_cache_misses_and_the_queue_refuses_the_rest() {
    let o = Origin::start().await;
    o.set(
        "/m",
        Reply::new("m")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(100)),
    );
    let servers = format!("{{ addr = \"{}\", max_conns = 2 }}", o.addr);
    let torii = Torii::start(
        &config(&servers, "queue_size = 5\nqueue_timeout = \"20s\"", ""),
        None,
    )
    .await;
    let requests = (0..20).map(|i| {
        let url = torii.url(&format!("/m?k={i}"));
        async move { get(&url).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut ok = 0;
    for (status, headers, _) in &answers {
        match *status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(headers["x-cache"], "MISS");
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(headers.contains_key("retry-after"), "{headers:?}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 2, "{ok} answered");
    assert!(
        o.max_in_flight("/m") <= 2,
        "{} in flight",
        o.max_in_flight("/m")
    );
    assert_eq!(
        o.hits("/m"),
        ok,
        "each answered miss went to the origin once"
    );
}

/// `balance = "hash"` holds for cache misses and revalidations: a key always reaches the
/// same server (it used to be balanced as p2c there).
#[tokio::test]
async fn hash_balance_holds_for_cache_misses_and_revalidations() {
    let o = origins(3).await;
    for origin in &o {
        let name = origin.name.clone();
        origin.set_fn("/h", move |_| {
            Reply::new(name.clone()).header("cache-control", "max-age=60")
        });
    }
    let torii = Torii::start(
        &config(
            &list(&[&o[0], &o[1], &o[2]]),
            "balance = \"hash\"\nhash_key = \"uri\"",
            "",
        ),
        None,
    )
    .await;
    let mut servers = std::collections::HashSet::new();
    for k in 0..20 {
        let url = torii.url(&format!("/h?k={k}"));
        let (status, headers, first) = get_with(&url, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-cache"], "MISS");
        servers.insert(first.clone());
        for _ in 0..3 {
            // A reload asks the origin again: through the cache step, by the same hash.
            let (status, _, again) = get_with(&url, &[("cache-control", "no-cache")]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(again, first, "key {k} moved");
        }
    }
    assert!(servers.len() > 1, "20 keys all on one server: {servers:?}");
}

/// With the default `max_ejection_percent` (50), a two-server group whose servers both
/// fail keeps one of them in rotation.
#[tokio::test]
async fn ejection_never_takes_more_than_max_ejection_percent() {
    let o = origins(2).await;
    for origin in &o {
        origin.set("/e", Reply::new("down").status(500));
    }
    let torii = Torii::start(
        &config(
            &list(&[&o[0], &o[1]]),
            "breaker = { failures = 1, ejection = \"30s\" }",
            "[cache]\nmemory = \"0\"\n",
        ),
        None,
    )
    .await;
    for _ in 0..10 {
        let (status, _, _) = get(&torii.url("/e")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let all = admin_get(&torii, "/upstreams").await;
    let states: Vec<_> = all["upstreams"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "ejected").count(),
        1,
        "{states:?}"
    );
    assert_eq!(all["upstreams"][0]["panic"], false);
}

/// Every server ejected (`max_ejection_percent = 100`): requests still go to them (panic
/// mode) instead of 503, and the panic shows in `/upstreams`, `/stats.json` and metrics.
#[tokio::test]
async fn with_every_server_ejected_panic_mode_sends_to_all() {
    let o = origins(2).await;
    for origin in &o {
        origin.set("/p", Reply::new("down").status(500));
    }
    let torii = Torii::start(
        &config(
            &list(&[&o[0], &o[1]]),
            "balance = \"round-robin\"\nbreaker = { failures = 1, ejection = \"30s\", max_ejection_percent = 100 }",
            "",
        ),
        None,
    )
    .await;
    // Two failures eject both servers; every later request is sent in panic mode.
    for _ in 0..10 {
        let (status, _, _) = get(&torii.url("/p")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "never a 503");
    }
    assert_eq!(o[0].hits("/p") + o[1].hits("/p"), 10);
    assert!(
        o[0].hits("/p") >= 2 && o[1].hits("/p") >= 2,
        "panic spreads"
    );
    let all = admin_get(&torii, "/upstreams").await;
    let group = &all["upstreams"][0];
    assert_eq!(group["panic"], true, "{group}");
    assert!(group["panic_requests"].as_u64().unwrap() >= 8, "{group}");
    let stats = admin_get(&torii, "/stats.json").await;
    assert_eq!(stats["upstreams"][0]["panic"], true, "{stats}");
    let (_, _, metrics) = get(&format!("http://{}/metrics", torii.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("torii_upstream_panic{upstream=\"app\"} 1"),
        "{metrics}"
    );
    // A server that answers well again is back after its ejection; meanwhile the good
    // answers already reach the client through panic mode.
    o[0].set("/p", Reply::new("fine"));
    o[1].set("/p", Reply::new("fine"));
    let (status, _, body) = get(&torii.url("/p")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"fine"[..]));
}

/// The access log says why each request missed (both formats read the same value).
#[tokio::test]
async fn the_access_log_says_the_cache_outcome() {
    let o = Origin::start().await;
    o.set("/c", Reply::new("c").header("cache-control", "max-age=60"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let torii = Torii::start(
        &format!(
            "[server]\nadmin = \"off\"\n[log]\naccess = \"{}\"\nformat = \"json\"\n\
             [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n",
            log.display()
        ),
        Some(&o),
    )
    .await;
    get(&torii.url("/c")).await;
    get(&torii.url("/c")).await;
    get_with(&torii.url("/c"), &[("cache-control", "no-cache")]).await;
    let client = client();
    let req = http::Request::post(torii.url("/c"))
        .body({
            use http_body_util::BodyExt;
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed()
        })
        .unwrap();
    let _ = client.request(req).await.unwrap();
    // The log is written when each body ends, by a writer thread: wait for four lines.
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until("four access-log lines", PATIENCE, || read().len() >= 4).await;
    let lines = read();
    let outcomes: Vec<_> = lines.iter().map(|l| l["cache"].clone()).collect();
    assert_eq!(
        outcomes,
        ["miss", "hit", "miss-client-refresh", "bypass-method"],
        "{lines:?}"
    );
}

/// A background refresh goes through the one door, but never queues ahead of clients:
/// with the only server at its `max_conns`, the refresh gives up and the stale copy stays;
/// once there is room, the next stale answer's refresh goes out.
#[tokio::test]
async fn a_background_refresh_gives_up_when_the_group_is_saturated() {
    let o = Origin::start().await;
    o.set(
        "/r",
        Reply::new("r").header("cache-control", "max-age=10, stale-while-revalidate=600"),
    );
    o.set("/busy", Reply::new("busy").delay(Duration::from_secs(3)));
    let servers = format!("{{ addr = \"{}\", max_conns = 1 }}", o.addr);
    let torii = Torii::start(&config(&servers, "queue_timeout = \"20s\"", ""), None).await;
    let (status, headers, _) = get(&torii.url("/r")).await;
    assert_eq!(
        (status, &headers["x-cache"]),
        (StatusCode::OK, &"MISS".parse().unwrap())
    );
    torii.advance_clock(&o, Duration::from_secs(20));
    // A client request holds the only slot for 3 s.
    let busy = tokio::spawn({
        let url = torii.url("/busy");
        async move { get(&url).await }
    });
    wait_until("the slow request is at the origin", PATIENCE, || {
        o.hits("/busy") == 1
    })
    .await;
    let (status, headers, _) = get(&torii.url("/r")).await;
    assert_eq!(
        (status, &headers["x-cache"]),
        (StatusCode::OK, &"STALE".parse().unwrap())
    );
    let (status, _, _) = busy.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(o.hits("/r"), 1, "the refresh gave up instead of queueing");
    // Room again: the next stale answer's refresh goes out.
    let (_, headers, _) = get(&torii.url("/r")).await;
    assert_eq!(headers["x-cache"], "STALE");
    wait_until("the refresh reached the origin", PATIENCE, || {
        o.hits("/r") == 2
    })
    .await;
}
