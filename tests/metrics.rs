//! `/metrics` and `/stats.json` count exactly what happened: known traffic, exact figures.

mod support;

use support::*;

async fn admin_get(torii: &Torii, path: &str) -> String {
    let (status, _, body) = get(&format!("http://{}{}", torii.admin, path)).await;
    assert_eq!(status, 200, "{path}");
    String::from_utf8(body.to_vec()).unwrap()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn counters_and_histograms_match_the_traffic() {
    let origin = Origin::start().await;
    let toml = r#"
[server]
admin = "off"
[log]
access = "off"
[upstreams.app]
servers = ["{origin}"]
[[routes]]
path = "/fixed"
respond = { status = 404, body = "gone" }
[[routes]]
upstream = "app"
"#;
    let torii = Torii::start(toml, Some(&origin)).await;
    origin.set(
        "/pub",
        Reply::new("x").header("cache-control", "max-age=60"),
    );
    origin.set("/priv", Reply::new("p").header("cache-control", "private"));
    // 1 miss + 4 hits on a cacheable path.
    for _ in 0..5 {
        get(&torii.url("/pub")).await;
    }
    // 3 uncacheable requests (private: MISS each).
    for _ in 0..3 {
        get(&torii.url("/priv")).await;
    }
    // 2 POSTs: BYPASS.
    for _ in 0..2 {
        let req = http::Request::post(torii.url("/echo"))
            .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                bytes::Bytes::from("b"),
            )))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
    }
    // 2 upstream 5xx (uncacheable errors: MISS).
    for _ in 0..2 {
        get(&torii.url("/status/503")).await;
    }
    // 1 fixed 4xx answer from torii itself; 1 slow request.
    get(&torii.url("/fixed")).await;
    get(&torii.url("/slow?ms=300")).await;
    // Requests are counted when their body ends, which may be just after the client saw it.
    wait_until_async("all 14 requests are counted", PATIENCE, || async {
        let proxied = torii
            .metric("torii_request_duration_seconds_count{route=\"*/\"}")
            .await;
        let fixed = torii
            .metric("torii_requests_total{route=\"*/fixed\",status=\"4xx\",cache=\"none\"}")
            .await;
        proxied == Some(13.0) && fixed == Some(1.0)
    })
    .await;

    let text = admin_get(&torii, "/metrics").await;
    let r = |status: &str, cache: &str| {
        format!("torii_requests_total{{route=\"*/\",status=\"{status}\",cache=\"{cache}\"}}")
    };
    assert_eq!(metric(&text, &r("2xx", "HIT")), 4.0);
    assert_eq!(
        metric(&text, &r("2xx", "MISS")),
        5.0,
        "1 cacheable miss + 3 private + 1 slow"
    );
    assert_eq!(metric(&text, &r("2xx", "BYPASS")), 2.0);
    assert_eq!(metric(&text, &r("5xx", "MISS")), 2.0);
    assert_eq!(
        metric(
            &text,
            "torii_requests_total{route=\"*/fixed\",status=\"4xx\",cache=\"none\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "torii_request_duration_seconds_count{route=\"*/\"}"),
        13.0
    );
    assert_eq!(
        metric(
            &text,
            "torii_request_duration_seconds_bucket{route=\"*/\",le=\"+Inf\"}"
        ),
        13.0
    );
    // Exactly one request took 300 ms or more: every bucket bound below 0.3 s counts at most 12.
    let below: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("torii_request_duration_seconds_bucket{route=\"*/\",le=\"")
                && !l.contains("+Inf")
        })
        .filter_map(|l| {
            let le: f64 = l.split("le=\"").nth(1)?.split('"').next()?.parse().ok()?;
            (le < 0.3).then(|| l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect();
    assert!(below.iter().all(|&c| c <= 12.0), "{below:?}");
    assert_eq!(
        below.last().copied(),
        Some(12.0),
        "the 12 fast requests are all below 300 ms"
    );
    // Upstream response times: every request that reached the origin (1 + 3 + 2 + 2 + 1).
    assert_eq!(
        metric(
            &text,
            "torii_upstream_response_seconds_count{upstream=\"app\"}"
        ),
        9.0
    );
    assert_eq!(metric(&text, "torii_cache_hits_total"), 4.0);
    assert_eq!(metric(&text, "torii_cache_bypass_total"), 2.0);
    assert_eq!(metric(&text, "torii_cache_objects{tier=\"memory\"}"), 1.0);
    assert!(metric(&text, "torii_connections_accepted_total") >= 1.0);
    assert!(metric(&text, "torii_sent_bytes_total") > 0.0);

    let stats: serde_json::Value =
        serde_json::from_str(&admin_get(&torii, "/stats.json").await).unwrap();
    assert_eq!(stats["requests"], 14);
    assert_eq!(stats["cache"]["hits"], 4);
    let recent = &stats["recent_60s"];
    assert_eq!(recent["requests"], 14);
    assert_eq!(recent["latency"]["count"], 14);
    assert!(
        recent["latency"]["p999"].as_f64().unwrap() >= 0.3,
        "{recent}"
    );
    assert!(recent["latency"]["p50"].as_f64().unwrap() < 0.3, "{recent}");
    let hist: u64 = recent["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(hist, 14);
    assert_eq!(stats["routes"].as_array().unwrap().len(), 2);
}
