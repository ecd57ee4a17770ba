//! The cache against real origins on loopback, for the RFC 9111/9110/9213 details of issue 17:
//! targeted cache control, explicit freshness on any status, heuristics, `Expires` formats,
//! qualified `no-cache`/`private`, `Age`, origin shielding (`client_directives`,
//! `status_ttl`), `Accept-Encoding` and `vary_normalise` normalisation. Each test counts
//! origin requests to prove what the cache answered; time moves with the cache clock.
//! (The scheme in the key is proven over TLS, in tests/tls/cache_scheme.rs.)

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::*;

/// torii with one caching route to `origin`; `cache` goes in `[cache]`, `route` in the
/// route's `[routes.cache]`.
async fn proxy(origin: &Origin, cache: &str, route: &str) -> Torii {
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\n{cache}\n\
         [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n\
         [routes.cache]\n{route}\n"
    );
    Torii::start(&toml, Some(origin)).await
}

async fn send(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body: Body = Empty::new().map_err(|e| match e {}).boxed();
    let resp = client().request(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body: Bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn x_cache(h: &HeaderMap) -> String {
    h.get("x-cache")
        .map_or("<none>", |v| v.to_str().unwrap())
        .to_string()
}

/// GET `url`: X-Cache.
async fn xc(url: &str, headers: &[(&str, &str)]) -> String {
    x_cache(&send(url, headers).await.1)
}

fn reply(status: u16, headers: &[(&str, &str)]) -> Reply {
    headers.iter().fold(
        Reply::new(format!("status {status}")).status(status),
        |r, (k, v)| r.header(k, v),
    )
}

// === RFC 9213: targeted cache control ===

#[tokio::test]
async fn cdn_cache_control_replaces_cache_control() {
    let origin = Origin::start().await;
    origin.set(
        "/cdn-stores",
        reply(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
        ),
    );
    origin.set(
        "/cdn-refuses",
        reply(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
        ),
    );
    origin.set(
        "/cdn-invalid",
        reply(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "Max-Age=0, no-store,"),
            ],
        ),
    );
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/cdn-stores");
    assert_eq!(xc(&url, &[]).await, "MISS");
    let (_, h, _) = send(&url, &[]).await;
    assert_eq!(x_cache(&h), "HIT");
    // CDN-Cache-Control is for every CDN on the way: it is passed on.
    assert_eq!(h["cdn-cache-control"], "max-age=60");
    assert_eq!(origin.hits("/cdn-stores"), 1);

    let url = torii.url("/cdn-refuses");
    assert_eq!(xc(&url, &[]).await, "MISS");
    assert_eq!(xc(&url, &[]).await, "MISS");
    assert_eq!(origin.hits("/cdn-refuses"), 2);

    // Invalid (not a Structured Fields dictionary): ignored as a whole.
    let url = torii.url("/cdn-invalid");
    assert_eq!(xc(&url, &[]).await, "MISS");
    assert_eq!(xc(&url, &[]).await, "HIT");
    assert_eq!(origin.hits("/cdn-invalid"), 1);
}

#[tokio::test]
async fn targeted_fields_in_precedence_order_and_torii_cache_control_stays_here() {
    let origin = Origin::start().await;
    origin.set(
        "/own",
        reply(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "no-store"),
                ("torii-cache-control", "max-age=60"),
            ],
        ),
    );
    origin.set(
        "/fallback",
        reply(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("torii-cache-control", "max-age=60,"),
                ("cdn-cache-control", "no-store"),
            ],
        ),
    );
    let torii = proxy(
        &origin,
        "targeted_fields = [\"Torii-Cache-Control\", \"CDN-Cache-Control\"]",
        "",
    )
    .await;
    let url = torii.url("/own");
    let (_, miss, _) = send(&url, &[]).await;
    let (_, hit, _) = send(&url, &[]).await;
    assert_eq!(
        (x_cache(&miss), x_cache(&hit)),
        ("MISS".into(), "HIT".into())
    );
    assert_eq!(origin.hits("/own"), 1);
    for h in [&miss, &hit] {
        assert!(h.get("torii-cache-control").is_none(), "{h:?}");
        assert_eq!(h["cdn-cache-control"], "no-store");
    }
    // The first field is invalid: the next one on the list decides.
    let url = torii.url("/fallback");
    assert_eq!(xc(&url, &[]).await, "MISS");
    assert_eq!(xc(&url, &[]).await, "MISS");
    assert_eq!(origin.hits("/fallback"), 2);
}

// === RFC 9111 §4.2.1, RFC 9110 §15.1: freshness by status ===

#[tokio::test]
async fn any_status_with_explicit_freshness_is_reused() {
    let origin = Origin::start().await;
    for status in [500u16, 502, 503, 504, 403, 418] {
        origin.set(
            &format!("/max-age/{status}"),
            reply(status, &[("cache-control", "max-age=60")]),
        );
        origin.set(
            &format!("/cdn/{status}"),
            reply(status, &[("cdn-cache-control", "max-age=60")]),
        );
        origin.set(&format!("/bare/{status}"), reply(status, &[]));
    }
    let torii = proxy(&origin, "", "").await;
    for status in [500u16, 502, 503, 504, 403, 418] {
        for kind in ["max-age", "cdn"] {
            let path = format!("/{kind}/{status}");
            let (s, h, body) = send(&torii.url(&path), &[]).await;
            assert_eq!((s.as_u16(), x_cache(&h)), (status, "MISS".into()), "{path}");
            let (s, h, again) = send(&torii.url(&path), &[]).await;
            assert_eq!((s.as_u16(), x_cache(&h)), (status, "HIT".into()), "{path}");
            assert_eq!(body, again);
            assert_eq!(origin.hits(&path), 1, "{path}");
        }
        // Without explicit freshness: never from the cache.
        let path = format!("/bare/{status}");
        send(&torii.url(&path), &[]).await;
        send(&torii.url(&path), &[]).await;
        assert_eq!(origin.hits(&path), 2, "{path}");
    }
}

#[tokio::test]
async fn heuristic_freshness_only_for_heuristically_cacheable_statuses() {
    let origin = Origin::start().await;
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(100 * 86_400));
    for (path, status) in [
        ("/h200", 200u16),
        ("/h404", 404),
        ("/h302", 302),
        ("/h403", 403),
    ] {
        origin.set(
            path,
            reply(
                status,
                &[("last-modified", &old), ("cache-control", "public")],
            ),
        );
    }
    let torii = proxy(&origin, "", "").await;
    for (path, heuristic) in [
        ("/h200", true),
        ("/h404", true),
        ("/h302", false),
        ("/h403", false),
    ] {
        send(&torii.url(path), &[]).await;
        send(&torii.url(path), &[]).await;
        let want = if heuristic { 1 } else { 2 };
        assert_eq!(origin.hits(path), want, "{path}");
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` as RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and
/// asctime (`Sun Nov  6 08:49:37 1994`).
fn obsolete_forms(imf: &str) -> [String; 2] {
    let p: Vec<&str> = imf.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    let (wd, day, mon, year, time) = (p[0], p[1], p[2], p[3], p[4]);
    let long = match wd {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    let day_num: u32 = day.parse().unwrap();
    [
        format!("{long}, {day}-{mon}-{} {time} GMT", &year[2..]),
        format!("{wd} {mon} {day_num:>2} {time} {year}"),
    ]
}

#[tokio::test]
async fn expires_in_all_three_formats_case_insensitively_and_garbage_is_expired() {
    let origin = Origin::start().await;
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let imf = httpdate::fmt_http_date(now + Duration::from_secs(120));
    let [rfc850, asctime] = obsolete_forms(&imf);
    let forms = [
        imf.clone(),
        rfc850.to_uppercase(),
        asctime.to_lowercase(),
        rfc850,
    ];
    for (i, expires) in forms.iter().enumerate() {
        origin.set(
            &format!("/e{i}"),
            reply(200, &[("date", &date), ("expires", expires)]),
        );
    }
    for (i, garbage) in ["0", "-1", "tomorrow", "2030-01-01T00:00:00Z"]
        .iter()
        .enumerate()
    {
        origin.set(
            &format!("/g{i}"),
            reply(200, &[("date", &date), ("expires", garbage)]),
        );
    }
    let torii = proxy(&origin, "", "grace = \"0s\"\nstale_if_error = \"0s\"").await;
    for (i, expires) in forms.iter().enumerate() {
        let url = torii.url(&format!("/e{i}"));
        assert_eq!(xc(&url, &[]).await, "MISS", "{expires}");
        assert_eq!(xc(&url, &[]).await, "HIT", "{expires}");
    }
    for i in 0..4 {
        let url = torii.url(&format!("/g{i}"));
        xc(&url, &[]).await;
        xc(&url, &[]).await;
        assert_eq!(origin.hits(&format!("/g{i}")), 2);
    }
    // Past Expires: every form expires together.
    torii.advance_clock(&origin, Duration::from_secs(125));
    for (i, expires) in forms.iter().enumerate() {
        assert_eq!(
            xc(&torii.url(&format!("/e{i}")), &[]).await,
            "MISS",
            "{expires}"
        );
        assert_eq!(origin.hits(&format!("/e{i}")), 2);
    }
}

// === RFC 9111 §5.2.2.4, §5.2.2.7: qualified no-cache and private ===

#[tokio::test]
async fn qualified_no_cache_and_private_store_the_rest() {
    let origin = Origin::start().await;
    origin.set(
        "/q",
        reply(
            200,
            &[
                (
                    "cache-control",
                    "max-age=60, private=\"Set-Cookie\", no-cache=\"X-User\"",
                ),
                ("set-cookie", "session=alice"),
                ("x-user", "alice"),
                ("x-kept", "yes"),
            ],
        ),
    );
    origin.set(
        "/bare",
        reply(
            200,
            &[
                ("cache-control", "max-age=60, private"),
                ("x-user", "alice"),
            ],
        ),
    );
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/q");
    let (_, miss, _) = send(&url, &[]).await;
    // The response to the request that fetched it is the origin's own.
    assert_eq!(x_cache(&miss), "MISS");
    assert_eq!(miss["set-cookie"], "session=alice");
    let (_, hit, body) = send(&url, &[]).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(body, "status 200");
    assert!(hit.get("set-cookie").is_none(), "{hit:?}");
    assert!(hit.get("x-user").is_none(), "{hit:?}");
    assert_eq!(hit["x-kept"], "yes");
    assert_eq!(origin.hits("/q"), 1);
    // Bare private: not stored at all.
    xc(&torii.url("/bare"), &[]).await;
    xc(&torii.url("/bare"), &[]).await;
    assert_eq!(origin.hits("/bare"), 2);
}

// === RFC 9111 §4.2.3: Age ===

#[tokio::test]
async fn age_counts_upstream_age_and_never_goes_backwards() {
    let origin = Origin::start().await;
    origin.set(
        "/aged",
        reply(200, &[("cache-control", "max-age=600"), ("age", "100")])
            .delay(Duration::from_millis(50)),
    );
    let torii = proxy(&origin, "", "").await;
    let url = torii.url("/aged");
    send(&url, &[]).await;
    let mut last = 0u64;
    for step in [0u64, 1, 0, 30, 0, 2] {
        torii.advance_clock(&origin, Duration::from_secs(step));
        let (_, h, _) = send(&url, &[]).await;
        assert_eq!(x_cache(&h), "HIT");
        let age: u64 = h["age"].to_str().unwrap().parse().unwrap();
        assert!(age >= 100, "upstream Age counts: {age}");
        assert!(age >= last, "Age went from {last} to {age}");
        last = age;
    }
    assert!(last >= 133, "the clock moved 33 s: {last}");
    assert_eq!(origin.hits("/aged"), 1);
}

#[test]
fn age_sent_for_one_object_is_monotonic() {
    use torii::cache::object::{CachedObject, ObjectMeta};
    let t = SystemTime::UNIX_EPOCH;
    let obj = CachedObject {
        meta: ObjectMeta::at("k", t).with_url(Some("http://h/".into())),
        status: StatusCode::OK,
        headers: Default::default(),
        body: Bytes::new(),
        memo: Default::default(),
    };
    assert_eq!(obj.age_to_send(10), 10);
    // A wall clock stepping back makes the computed age smaller: the Age sent is not.
    assert_eq!(obj.age_to_send(4), 10);
    assert_eq!(obj.age_to_send(11), 11);
    // A copy (a soft purge's stale copy) goes on from there.
    assert_eq!(obj.clone().age_to_send(0), 11);
}

// === Origin shielding ===

async fn two_routes(origin: &Origin, shield: &str) -> Torii {
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n\
         [upstreams.app]\nservers = [\"{{origin}}\"]\n\
         [[routes]]\npath = \"/shield/\"\nupstream = \"app\"\n[routes.cache]\n{shield}\n\
         [[routes]]\npath = \"/\"\nupstream = \"app\"\n"
    );
    Torii::start(&toml, Some(origin)).await
}

#[tokio::test]
async fn client_directives_ignore_shields_the_origin_from_reloads() {
    let origin = Origin::start().await;
    for path in ["/shield/page", "/page"] {
        origin.set(path, reply(200, &[("cache-control", "max-age=60")]));
    }
    let torii = two_routes(&origin, "client_directives = \"ignore\"").await;
    let reloads: [&[(&str, &str)]; 5] = [
        &[("cache-control", "no-cache")],
        &[("cache-control", "max-age=0")],
        &[("pragma", "no-cache")],
        &[("cache-control", "min-fresh=3600")],
        &[
            ("cache-control", "no-cache, max-age=0"),
            ("pragma", "no-cache"),
        ],
    ];
    assert_eq!(xc(&torii.url("/shield/page"), &[]).await, "MISS");
    assert_eq!(xc(&torii.url("/page"), &[]).await, "MISS");
    for headers in reloads {
        assert_eq!(
            xc(&torii.url("/shield/page"), headers).await,
            "HIT",
            "{headers:?}"
        );
        assert_ne!(xc(&torii.url("/page"), headers).await, "HIT", "{headers:?}");
    }
    assert_eq!(origin.hits("/shield/page"), 1);
    // The default ("honour", RFC 9111 §5.2.1): every reload reached the origin.
    assert_eq!(origin.hits("/page"), 6);

    // only-if-cached and no-store still count on the shielded route.
    let (s, _, _) = send(
        &torii.url("/shield/absent"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.hits("/shield/absent"), 0);
    origin.set(
        "/shield/private",
        reply(200, &[("cache-control", "max-age=60")]),
    );
    let url = torii.url("/shield/private");
    assert_eq!(xc(&url, &[("cache-control", "no-store")]).await, "MISS");
    assert_eq!(
        xc(&url, &[]).await,
        "MISS",
        "a no-store request's response is not stored"
    );
    assert_eq!(xc(&url, &[]).await, "HIT");
    assert_eq!(origin.hits("/shield/private"), 2);
}

#[tokio::test]
async fn status_ttl_caches_errors_without_explicit_freshness() {
    let origin = Origin::start().await;
    origin.set("/missing", reply(404, &[]));
    origin.set("/down", reply(503, &[]));
    origin.set("/gone", reply(410, &[]));
    origin.set("/explicit", reply(404, &[("cache-control", "max-age=600")]));
    let torii = proxy(
        &origin,
        "",
        "status_ttl = { \"404\" = \"1m\", \"5xx\" = \"5s\" }\nstale_if_error = \"0s\"\ngrace = \"0s\"",
    )
    .await;
    for path in ["/missing", "/down", "/explicit"] {
        assert_eq!(xc(&torii.url(path), &[]).await, "MISS", "{path}");
        assert_eq!(xc(&torii.url(path), &[]).await, "HIT", "{path}");
    }
    // No TTL for 410 and no explicit freshness: every request goes to the origin.
    xc(&torii.url("/gone"), &[]).await;
    xc(&torii.url("/gone"), &[]).await;
    assert_eq!(origin.hits("/gone"), 2);
    // 5xx lives 5 s, 404 one minute; explicit freshness beats the status TTL.
    torii.advance_clock(&origin, Duration::from_secs(6));
    assert_eq!(xc(&torii.url("/down"), &[]).await, "MISS");
    assert_eq!(xc(&torii.url("/missing"), &[]).await, "HIT");
    torii.advance_clock(&origin, Duration::from_secs(60));
    assert_eq!(xc(&torii.url("/missing"), &[]).await, "MISS");
    assert_eq!(xc(&torii.url("/explicit"), &[]).await, "HIT");
    assert_eq!(
        (
            origin.hits("/missing"),
            origin.hits("/down"),
            origin.hits("/explicit")
        ),
        (2, 2, 1)
    );
}

// === Vary normalisation (RFC 9111 §4.1) ===

#[tokio::test]
async fn accept_encoding_is_normalised_to_one_variant_per_coding() {
    let origin = Origin::start().await;
    origin.set_fn("/enc", |req| {
        let enc = req
            .headers
            .get("accept-encoding")
            .map_or("none", |v| v.to_str().unwrap());
        Reply::new(format!("enc={enc}"))
            .header("vary", "Accept-Encoding")
            .header("cache-control", "max-age=60")
    });
    // Without torii's own compression (tests/compress.rs: identity upstream, one object).
    let torii = proxy(&origin, "", "[routes.compress]\nenabled = false").await;
    let url = torii.url("/enc");
    let browsers = [
        "gzip, deflate, br",
        "br, gzip, deflate",
        "gzip,deflate,br",
        "deflate, gzip;q=1.0, br",
    ];
    for (i, ae) in browsers.iter().enumerate() {
        let (_, h, body) = send(&url, &[("accept-encoding", ae)]).await;
        assert_eq!(
            body, "enc=br",
            "{ae}: the origin is asked for the one coding"
        );
        assert_eq!(x_cache(&h), if i == 0 { "MISS" } else { "HIT" }, "{ae}");
    }
    assert_eq!(origin.hits("/enc"), 1);
    // Other codings: one variant each, whatever the spelling.
    for (ae, want) in [
        ("gzip", "enc=gzip"),
        ("x-gzip, deflate", "enc=gzip"),
        ("zstd;q=1, gzip;q=0.5", "enc=zstd"),
        ("deflate", "enc=identity"),
        ("", "enc=identity"),
    ] {
        let headers: &[(&str, &str)] = if ae.is_empty() {
            &[]
        } else {
            &[("accept-encoding", ae)]
        };
        assert_eq!(send(&url, headers).await.2, want, "{ae:?}");
    }
    assert_eq!(origin.hits("/enc"), 4, "br, gzip, zstd, identity");
}

#[tokio::test]
async fn vary_normalise_maps_accept_language_to_the_listed_languages() {
    let origin = Origin::start().await;
    origin.set_fn("/lang", |req| {
        let lang = req
            .headers
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap());
        Reply::new(format!("lang={lang}"))
            .header("vary", "Accept-Language")
            .header("cache-control", "max-age=60")
    });
    let torii = proxy(
        &origin,
        "",
        "vary_normalise = { \"Accept-Language\" = [\"en\", \"de\", \"fr\"] }",
    )
    .await;
    let url = torii.url("/lang");
    for (al, want) in [
        ("de-DE,de;q=0.9,en;q=0.8", "lang=de"),
        ("de", "lang=de"),
        ("de-AT", "lang=de"),
        ("fr-CA, fr;q=0.9", "lang=fr"),
        ("es, ja;q=0.5", "lang=en"),
        ("en-GB", "lang=en"),
        ("", "lang=en"),
        ("ja, fr;q=0.1", "lang=fr"),
    ] {
        let headers: &[(&str, &str)] = if al.is_empty() {
            &[]
        } else {
            &[("accept-language", al)]
        };
        assert_eq!(send(&url, headers).await.2, want, "{al:?}");
    }
    assert_eq!(
        origin.hits("/lang"),
        3,
        "at most one variant per listed language"
    );
}

// === Config: the new keys load, and mistakes point at FILE:LINE:COL with a hint ===

fn config_problems(text: &str) -> Vec<String> {
    match torii::config::load_str("t.toml", text) {
        Ok(_) => vec![],
        Err(e) => e.to_string().lines().map(String::from).collect(),
    }
}

fn find<'a>(p: &'a [String], needle: &str) -> &'a str {
    p.iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in {p:#?}"))
}

#[test]
fn config_cache_rfc_keys_load() {
    let text = r#"
[cache]
targeted_fields = ["Torii-Cache-Control", "cdn-cache-control"]
[upstreams.app]
servers = ["127.0.0.1:3000"]
[[routes]]
upstream = "app"
[routes.cache]
client_directives = "ignore"
status_ttl = { "404" = "1m", "5xx" = "5s", "503" = "1s" }
vary_normalise = { "Accept-Language" = ["en", "de"] }
[[routes]]
path = "/plain"
upstream = "app"
"#;
    let config = torii::config::load_str("t.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let policy = |i: usize| match &config.routes[i].action {
        torii::config::Action::Proxy { cache: Some(p), .. } => p.clone(),
        _ => panic!("route {i} caches"),
    };
    let (p, plain) = (policy(0), policy(1));
    assert!(p.ignore_client_directives && !plain.ignore_client_directives);
    let names: Vec<&str> = p.store.targeted_fields.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["torii-cache-control", "cdn-cache-control"]);
    assert_eq!(plain.store.targeted_fields, p.store.targeted_fields);
    assert_eq!(
        p.store.status_ttl(StatusCode::NOT_FOUND),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        p.store.status_ttl(StatusCode::BAD_GATEWAY),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        p.store.status_ttl(StatusCode::SERVICE_UNAVAILABLE),
        Some(Duration::from_secs(1))
    );
    assert_eq!(p.vary.list("accept-language").unwrap(), ["en", "de"]);
    // Settings that change freshness change the memo id.
    assert_ne!(p.freshness_id, plain.freshness_id);
    // Defaults: CDN-Cache-Control only, honour, no TTLs, no lists.
    let d = torii::config::CachePolicy::default();
    assert_eq!(d.store.targeted_fields[0].as_str(), "cdn-cache-control");
    assert!(!d.ignore_client_directives && d.store.status_ttl.is_empty());
    assert!(d.vary.lists.is_empty());
}

#[test]
fn config_cache_rfc_mistakes_point_at_the_key() {
    let text = r#"
[cache]
targeted_fields = ["Cache-Control", "bad name", "CDN-Cache-Control", "cdn-cache-control"]
[upstreams.app]
servers = ["127.0.0.1:3000"]
[[routes]]
upstream = "app"
[routes.cache]
client_directives = "shield"
status_ttl = { "4x" = "1m", "304" = "1m", "5xx" = "soon", "404" = "0s" }
vary_normalise = { "Accept-Encoding" = ["gzip"], "Accept-Language" = [], "X-Lang" = ["en", "a, b", "EN"] }
"#;
    let p = config_problems(text);
    assert!(
        find(&p, "is not a targeted field").starts_with("t.toml:3:20: cache.targeted_fields[0]")
    );
    assert!(find(&p, "is not a targeted field").contains("hint:"));
    assert!(find(&p, "\"bad name\" is not a header field name")
        .starts_with("t.toml:3:37: cache.targeted_fields[1]"));
    assert!(find(&p, "cdn-cache-control is listed twice").contains("hint: list each field once"));
    assert!(find(&p, "unknown mode \"shield\"")
        .starts_with("t.toml:9:21: routes[0].cache.client_directives"));
    assert!(find(&p, "unknown mode \"shield\"").contains("hint: use \"honour\""));
    assert!(find(&p, "\"4x\" is not a status").starts_with("t.toml:10:16:"));
    assert!(find(&p, "\"4x\" is not a status").contains("hint: use a status from 200 to 599"));
    assert!(find(&p, "304 responses are never stored").contains("hint:"));
    assert!(find(&p, "routes[0].cache.status_ttl.\"5xx\"").contains("hint: durations look like"));
    assert!(find(&p, "must be more than 0").contains("status_ttl.\"404\""));
    assert!(find(&p, "Accept-Encoding is always normalised").contains("hint: remove this entry"));
    assert!(find(&p, "empty list").contains("vary_normalise.\"Accept-Language\""));
    assert!(find(&p, "\"a, b\" is not a single value").contains("hint: one value per entry"));
    assert!(find(&p, "\"EN\" is listed twice").contains("hint: list each value once"));
}
