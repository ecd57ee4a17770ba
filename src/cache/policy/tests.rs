use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::*;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(t(secs))
}

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).expect("test header name");
        m.append(name, HeaderValue::from_str(v).expect("test header value"));
    }
    m
}

fn cc(v: &str) -> CacheControl {
    CacheControl::parse(v.as_bytes())
}

const NOW: u64 = 1_700_000_000;

// ----- Cache-Control parsing (RFC 9111 §5.2) ------------------------------

#[test]
fn s5_2_parses_all_directives() {
    let c = cc(
        "max-age=60, s-maxage=120, no-store, no-cache, private, public, must-revalidate, \
         proxy-revalidate, max-stale=5, min-fresh=7, only-if-cached, immutable, no-transform, \
         stale-while-revalidate=30, stale-if-error=40, must-understand",
    );
    assert_eq!(c.max_age, Some(s(60)));
    assert_eq!(c.s_maxage, Some(s(120)));
    assert!(c.no_store && c.public && c.must_revalidate && c.proxy_revalidate);
    assert_eq!(c.no_cache, Some(FieldScope::All));
    assert_eq!(c.private, Some(FieldScope::All));
    assert_eq!(c.max_stale, Some(MaxStale::Limit(s(5))));
    assert_eq!(c.min_fresh, Some(s(7)));
    assert!(c.only_if_cached && c.immutable && c.no_transform && c.must_understand);
    assert_eq!(c.stale_while_revalidate, Some(s(30)));
    assert_eq!(c.stale_if_error, Some(s(40)));
}

#[test]
fn s5_2_names_case_insensitive_and_whitespace_tolerant() {
    let c = cc("  MAX-AGE = 10 ,\tPublic,,, No-Store ");
    assert_eq!(c.max_age, Some(s(10)));
    assert!(c.public && c.no_store);
}

#[test]
fn s5_2_quoted_arguments_accepted() {
    let c = cc(r#"max-age="60", private="Set-Cookie, X-Foo", no-cache="a\"b""#);
    assert_eq!(c.max_age, Some(s(60)));
    assert_eq!(
        c.private,
        Some(FieldScope::Fields(vec![
            "set-cookie".into(),
            "x-foo".into()
        ]))
    );
    assert_eq!(c.no_cache, Some(FieldScope::Fields(vec!["a\"b".into()])));
    // An empty field list reads as the bare directive.
    assert_eq!(cc(r#"no-cache="""#).no_cache, Some(FieldScope::All));
}

#[test]
fn s5_2_unknown_directives_ignored_even_with_quoted_commas() {
    let c = cc(r#"foo="a, max-age=1", bar, max-age=5, ext=tok"#);
    assert_eq!(c.max_age, Some(s(5)));
    assert_eq!(
        c,
        CacheControl {
            max_age: Some(s(5)),
            ..Default::default()
        }
    );
}

#[test]
fn s4_2_1_duplicate_directives_first_wins() {
    assert_eq!(cc("max-age=5, max-age=100").max_age, Some(s(5)));
    let m = hm(&[
        ("cache-control", "s-maxage=3"),
        ("cache-control", "s-maxage=9, public"),
    ]);
    let c = CacheControl::from_headers(&m);
    assert_eq!(c.s_maxage, Some(s(3)));
    assert!(c.public);
}

#[test]
fn s4_2_1_invalid_max_age_means_stale() {
    for v in [
        "max-age=abc",
        "max-age=-1",
        "max-age",
        "max-age=1.5",
        "max-age=",
        "max-age=\"x\"",
    ] {
        assert_eq!(cc(v).max_age, Some(Duration::ZERO), "{v}");
    }
    assert_eq!(cc("s-maxage=oops").s_maxage, Some(Duration::ZERO));
}

#[test]
fn s1_2_2_delta_seconds_overflow_saturates_at_2_pow_31() {
    let c = cc("max-age=99999999999999999999999999999");
    assert_eq!(c.max_age, Some(s(DELTA_SECONDS_MAX)));
    assert_eq!(cc("max-age=2147483647").max_age, Some(s(2_147_483_647)));
}

#[test]
fn s5_2_1_2_max_stale_forms() {
    assert_eq!(cc("max-stale").max_stale, Some(MaxStale::Any));
    assert_eq!(cc("max-stale=9").max_stale, Some(MaxStale::Limit(s(9))));
    assert_eq!(
        cc("max-stale=x").max_stale,
        Some(MaxStale::Limit(Duration::ZERO))
    );
}

#[test]
fn parse_survives_non_utf8() {
    let c = CacheControl::parse(b"\xff\xfe, max-age=\xff, public, \"\\");
    assert!(c.public);
    assert_eq!(c.max_age, Some(Duration::ZERO));
    let m = {
        let mut m = HeaderMap::new();
        m.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"no-store, \xe9t\xe9").expect("obs-text is allowed"),
        );
        m
    };
    assert!(CacheControl::from_headers(&m).no_store);
}

#[test]
fn display_is_canonical() {
    let c = cc("PUBLIC, max-age=\"10\", private=\"A,b\"");
    assert_eq!(c.to_string(), "max-age=10, private=\"a, b\", public");
    assert_eq!(cc(&c.to_string()), c);
}

#[test]
fn s5_4_pragma_no_cache_only_without_cache_control() {
    let req = hm(&[("pragma", "no-cache")]);
    assert_eq!(request_cache_control(&req).no_cache, Some(FieldScope::All));
    let req = hm(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
    assert_eq!(request_cache_control(&req).no_cache, None);
    assert_eq!(
        request_cache_control(&hm(&[("pragma", "foo")])).no_cache,
        None
    );
}

// ----- Storing (RFC 9111 §3) -----------------------------------------------

fn store(
    method: Method,
    req: &[(&str, &str)],
    status: u16,
    resp: &[(&str, &str)],
) -> Result<(), NoStoreReason> {
    store_with(method, req, status, resp, &StoreOptions::default())
}

fn store_with(
    method: Method,
    req: &[(&str, &str)],
    status: u16,
    resp: &[(&str, &str)],
    opts: &StoreOptions,
) -> Result<(), NoStoreReason> {
    let status = StatusCode::from_u16(status).expect("valid status");
    storable(&method, &hm(req), status, &hm(resp), opts)
}

#[test]
fn s3_get_with_max_age_is_storable() {
    assert_eq!(
        store(Method::GET, &[], 200, &[("cache-control", "max-age=60")]),
        Ok(())
    );
}

#[test]
fn s3_only_get_responses_are_stored() {
    let resp = [("cache-control", "max-age=60")];
    for m in [Method::HEAD, Method::POST, Method::PUT, Method::OPTIONS] {
        assert_eq!(store(m, &[], 200, &resp), Err(NoStoreReason::Method));
    }
}

#[test]
fn s3_status_must_be_final_and_understood() {
    let resp = [("cache-control", "max-age=60")];
    for code in [100, 103, 206, 304] {
        assert_eq!(
            store(Method::GET, &[], code, &resp),
            Err(NoStoreReason::Status),
            "{code}"
        );
    }
    // §5.2.2.3: must-understand needs an understood status, and then overrides no-store.
    let mu = [("cache-control", "max-age=60, no-store, must-understand")];
    assert_eq!(
        store(Method::GET, &[], 299, &mu),
        Err(NoStoreReason::Status)
    );
    assert_eq!(store(Method::GET, &[], 200, &mu), Ok(()));
}

#[test]
fn s3_no_store_on_request_or_response() {
    let ok = [("cache-control", "max-age=60")];
    let req = [("cache-control", "no-store")];
    assert_eq!(
        store(Method::GET, &req, 200, &ok),
        Err(NoStoreReason::NoStore)
    );
    let resp = [("cache-control", "max-age=60, no-store")];
    assert_eq!(
        store(Method::GET, &[], 200, &resp),
        Err(NoStoreReason::NoStore)
    );
}

#[test]
fn s3_private_not_stored_by_shared_cache_unless_ignored() {
    let resp = [("cache-control", "private, max-age=60")];
    assert_eq!(
        store(Method::GET, &[], 200, &resp),
        Err(NoStoreReason::Private)
    );
    // Qualified: stored without the listed fields (s5_2_2_7_qualified_fields_left_out).
    let qualified = [("cache-control", "private=\"x-user\", max-age=60")];
    assert_eq!(store(Method::GET, &[], 200, &qualified), Ok(()));
    let opts = StoreOptions {
        ignore_no_cache_private: true,
        ..Default::default()
    };
    assert_eq!(store_with(Method::GET, &[], 200, &resp, &opts), Ok(()));
}

#[test]
fn s3_5_authorization_needs_explicit_permission() {
    let req = [("authorization", "Bearer x")];
    let plain = [("cache-control", "max-age=60")];
    assert_eq!(
        store(Method::GET, &req, 200, &plain),
        Err(NoStoreReason::Authorization)
    );
    for cc in ["public", "s-maxage=60", "max-age=60, must-revalidate"] {
        assert_eq!(
            store(Method::GET, &req, 200, &[("cache-control", cc)]),
            Ok(()),
            "{cc}"
        );
    }
}

#[test]
fn set_cookie_responses_not_stored_unless_allowed() {
    let resp = [("cache-control", "max-age=60"), ("set-cookie", "a=b")];
    assert_eq!(
        store(Method::GET, &[], 200, &resp),
        Err(NoStoreReason::SetCookie)
    );
    let opts = StoreOptions {
        allow_set_cookie: true,
        ..Default::default()
    };
    assert_eq!(store_with(Method::GET, &[], 200, &resp, &opts), Ok(()));
}

#[test]
fn s4_1_vary_star_not_stored() {
    let resp = [
        ("cache-control", "max-age=60"),
        ("vary", "Accept-Encoding, *"),
    ];
    assert_eq!(
        store(Method::GET, &[], 200, &resp),
        Err(NoStoreReason::VaryStar)
    );
}

#[test]
fn s3_needs_explicit_or_heuristic_freshness() {
    assert_eq!(
        store(Method::GET, &[], 302, &[]),
        Err(NoStoreReason::NoFreshness)
    );
    assert_eq!(store(Method::GET, &[], 302, &[("expires", "0")]), Ok(()));
    assert_eq!(
        store(Method::GET, &[], 302, &[("cache-control", "public")]),
        Ok(())
    );
    assert_eq!(store(Method::GET, &[], 200, &[]), Ok(())); // heuristically cacheable
    assert_eq!(store(Method::GET, &[], 404, &[]), Ok(()));
    let opts = StoreOptions {
        default_ttl: Some(s(5)),
        ..Default::default()
    };
    assert_eq!(store_with(Method::GET, &[], 302, &[], &opts), Ok(()));
}

#[test]
fn no_store_reason_strings_are_stable() {
    use NoStoreReason::*;
    let all = [
        Method,
        Status,
        NoStore,
        Private,
        Authorization,
        SetCookie,
        VaryStar,
        NoFreshness,
    ];
    let names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "method",
            "status",
            "no-store",
            "private",
            "authorization",
            "set-cookie",
            "vary-star",
            "no-freshness"
        ]
    );
}

// ----- Freshness lifetime (RFC 9111 §4.2.1, §4.2.2) -------------------------

fn lifetime(status: u16, resp: &[(&str, &str)], opts: &StoreOptions) -> Duration {
    let status = StatusCode::from_u16(status).expect("valid status");
    freshness_lifetime(status, &hm(resp), opts, t(NOW))
}

#[test]
fn s4_2_1_s_maxage_beats_max_age_beats_expires() {
    let o = StoreOptions::default();
    let exp = date(NOW + 1000);
    assert_eq!(
        lifetime(
            200,
            &[
                ("cache-control", "max-age=5, s-maxage=7"),
                ("expires", &exp)
            ],
            &o
        ),
        s(7)
    );
    assert_eq!(
        lifetime(
            200,
            &[("cache-control", "max-age=5"), ("expires", &exp)],
            &o
        ),
        s(5)
    );
}

#[test]
fn s4_2_1_expires_minus_date() {
    let o = StoreOptions::default();
    let d = date(NOW - 100);
    let e = date(NOW + 200);
    assert_eq!(lifetime(200, &[("date", &d), ("expires", &e)], &o), s(300));
    // Missing Date: the response time (`now`) is used.
    assert_eq!(lifetime(200, &[("expires", &e)], &o), s(200));
    // Invalid or past Expires means already expired (§5.3).
    assert_eq!(
        lifetime(200, &[("expires", "0"), ("last-modified", &d)], &o),
        s(0)
    );
    assert_eq!(lifetime(200, &[("date", &e), ("expires", &d)], &o), s(0));
}

#[test]
fn s4_2_2_heuristic_is_fraction_of_last_modified_age_capped() {
    let o = StoreOptions::default();
    let d = date(NOW);
    let lm = date(NOW - 1000);
    assert_eq!(
        lifetime(200, &[("date", &d), ("last-modified", &lm)], &o),
        s(100)
    );
    let old = date(NOW - 100 * 86_400);
    assert_eq!(
        lifetime(200, &[("date", &d), ("last-modified", &old)], &o),
        s(86_400)
    );
    // Not heuristically cacheable (RFC 9110 §15.1): no heuristic, `public` or not.
    assert_eq!(
        lifetime(302, &[("date", &d), ("last-modified", &lm)], &o),
        s(0)
    );
    let public = [
        ("date", d.as_str()),
        ("last-modified", lm.as_str()),
        ("cache-control", "public"),
    ];
    assert_eq!(lifetime(302, &public, &o), s(0));
}

#[test]
fn default_and_forced_ttl() {
    let o = StoreOptions {
        default_ttl: Some(s(42)),
        ..Default::default()
    };
    assert_eq!(lifetime(200, &[], &o), s(42));
    assert_eq!(lifetime(200, &[("cache-control", "max-age=5")], &o), s(5));
    let o = StoreOptions {
        forced_ttl: Some(s(9)),
        ..Default::default()
    };
    assert_eq!(
        lifetime(200, &[("cache-control", "max-age=5, s-maxage=6")], &o),
        s(9)
    );
}

#[test]
fn heuristic_tolerates_bad_fractions() {
    let d = date(NOW);
    let lm = date(NOW - 1000);
    let resp = [("date", d.as_str()), ("last-modified", lm.as_str())];
    for f in [f64::NAN, -1.0, f64::INFINITY, 1e300] {
        let o = StoreOptions {
            heuristic_fraction: f,
            ..Default::default()
        };
        assert!(lifetime(200, &resp, &o) <= o.max_heuristic, "{f}");
    }
}

// ----- Age (RFC 9111 §4.2.3) -------------------------------------------------

#[test]
fn s4_2_3_age_calculation() {
    let d = date(NOW);
    let resp = hm(&[("date", &d), ("age", "10")]);
    // apparent_age = 2, corrected_age_value = 10 + 2 = 12, resident = 5.
    assert_eq!(current_age(&resp, t(NOW), t(NOW + 2), t(NOW + 7)), s(17));
    // Apparent age dominates when bigger than Age + delay.
    let resp = hm(&[("date", &date(NOW - 100)), ("age", "1")]);
    assert_eq!(current_age(&resp, t(NOW), t(NOW), t(NOW)), s(100));
}

#[test]
fn s5_1_age_field_lenient() {
    let at = |age: &str| current_age(&hm(&[("age", age)]), t(NOW), t(NOW), t(NOW));
    assert_eq!(at("5, 100"), s(5)); // list: first member
    assert_eq!(at("-5"), s(0)); // invalid: ignored
    assert_eq!(at("abc"), s(0));
    assert_eq!(at("99999999999999999999999"), s(DELTA_SECONDS_MAX));
}

#[test]
fn s4_2_3_clock_skew_never_goes_negative() {
    let resp = hm(&[("date", &date(NOW + 1000))]);
    assert_eq!(current_age(&resp, t(NOW + 5), t(NOW), t(NOW - 50)), s(0));
}

// ----- Reuse decisions (RFC 9111 §4, §4.2.4, §5.2.1; RFC 5861) ---------------

fn entry(resp_cc: &str, age_at_store: u64) -> Freshness {
    let resp = hm(&[
        ("cache-control", resp_cc),
        ("age", &age_at_store.to_string()),
    ]);
    Freshness::from_response(
        StatusCode::OK,
        &resp,
        &StoreOptions::default(),
        t(NOW),
        t(NOW),
    )
}

fn decide(req_cc: &str, e: &Freshness, elapsed: u64) -> Reuse {
    request_decision(&cc(req_cc), e, t(NOW + elapsed))
}

#[test]
fn s4_2_fresh_then_stale() {
    let e = entry("max-age=100", 10);
    assert_eq!(decide("", &e, 0), Reuse::Fresh);
    assert_eq!(decide("", &e, 89), Reuse::Fresh);
    assert_eq!(decide("", &e, 90), Reuse::Revalidate);
    assert!(e.is_fresh(t(NOW + 89)) && !e.is_fresh(t(NOW + 90)));
    assert_eq!(e.remaining(t(NOW + 50)), s(40));
    assert_eq!(e.staleness(t(NOW + 95)), s(5));
}

#[test]
fn s5_2_1_4_and_s5_2_2_4_no_cache_forces_revalidation() {
    let e = entry("max-age=100", 0);
    assert_eq!(decide("no-cache", &e, 0), Reuse::Revalidate);
    let pragma = request_cache_control(&hm(&[("pragma", "no-cache")]));
    assert_eq!(request_decision(&pragma, &e, t(NOW)), Reuse::Revalidate);
    let e = entry("max-age=100, no-cache", 0);
    assert!(e.no_cache);
    assert_eq!(decide("", &e, 0), Reuse::Revalidate);
    let opts = StoreOptions {
        ignore_no_cache_private: true,
        ..Default::default()
    };
    let resp = hm(&[("cache-control", "max-age=100, no-cache")]);
    let e = Freshness::from_response(StatusCode::OK, &resp, &opts, t(NOW), t(NOW));
    assert_eq!(decide("", &e, 0), Reuse::Fresh);
}

#[test]
fn s5_2_1_1_request_max_age() {
    let e = entry("max-age=100", 0);
    assert_eq!(decide("max-age=0", &e, 1), Reuse::Revalidate);
    assert_eq!(decide("max-age=30", &e, 20), Reuse::Fresh);
    assert_eq!(decide("max-age=30", &e, 40), Reuse::Revalidate);
    // With max-stale too, the client accepts a bit more.
    assert_eq!(
        decide("max-age=30, max-stale=20", &e, 40),
        Reuse::StaleAccepted
    );
}

#[test]
fn s5_2_1_3_min_fresh() {
    let e = entry("max-age=100", 0);
    assert_eq!(decide("min-fresh=50", &e, 40), Reuse::Fresh);
    assert_eq!(decide("min-fresh=50", &e, 60), Reuse::Revalidate);
}

#[test]
fn s5_2_1_2_max_stale() {
    let e = entry("max-age=10", 0);
    assert_eq!(decide("max-stale", &e, 10_000), Reuse::StaleAccepted);
    assert_eq!(decide("max-stale=5", &e, 15), Reuse::StaleAccepted);
    assert_eq!(decide("max-stale=5", &e, 16), Reuse::Revalidate);
}

#[test]
fn s4_2_4_must_revalidate_proxy_revalidate_s_maxage_forbid_stale() {
    for resp in [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
        "s-maxage=10",
    ] {
        let e = entry(resp, 0);
        assert!(e.must_revalidate, "{resp}");
        assert_eq!(decide("max-stale", &e, 20), Reuse::Revalidate, "{resp}");
        assert!(
            !e.can_serve_stale_on_error(&cc("stale-if-error=100"), t(NOW + 20)),
            "{resp}"
        );
    }
}

#[test]
fn rfc5861_stale_while_revalidate_window() {
    let e = entry("max-age=10, stale-while-revalidate=30", 0);
    assert_eq!(decide("", &e, 5), Reuse::Fresh);
    assert_eq!(decide("", &e, 10), Reuse::StaleWhileRevalidate);
    assert_eq!(decide("", &e, 39), Reuse::StaleWhileRevalidate);
    assert_eq!(decide("", &e, 40), Reuse::Revalidate);
    // Not when the client itself demands a fresher copy.
    assert_eq!(decide("max-age=0", &e, 12), Reuse::Revalidate);
    assert_eq!(decide("min-fresh=1", &e, 12), Reuse::Revalidate);
    // Explicit must-revalidate cancels the window; s-maxage keeps it.
    let e = entry("max-age=10, must-revalidate, stale-while-revalidate=30", 0);
    assert_eq!(decide("", &e, 12), Reuse::Revalidate);
    let e = entry("s-maxage=10, stale-while-revalidate=30", 0);
    assert_eq!(decide("", &e, 12), Reuse::StaleWhileRevalidate);
}

#[test]
fn rfc5861_stale_if_error_window() {
    let e = entry("max-age=10, stale-if-error=30", 0);
    let none = CacheControl::default();
    assert!(e.can_serve_stale_on_error(&none, t(NOW + 5)));
    assert!(e.can_serve_stale_on_error(&none, t(NOW + 39)));
    assert!(!e.can_serve_stale_on_error(&none, t(NOW + 40)));
    // Request window (RFC 5861 §4) can extend it.
    assert!(e.can_serve_stale_on_error(&cc("stale-if-error=100"), t(NOW + 60)));
    let e = entry("max-age=10, no-cache, stale-if-error=30", 0);
    assert!(!e.can_serve_stale_on_error(&none, t(NOW + 1)));
}

#[test]
fn s5_2_1_7_only_if_cached() {
    let e = entry("max-age=10", 0);
    assert_eq!(decide("only-if-cached", &e, 5), Reuse::Fresh);
    assert_eq!(decide("only-if-cached", &e, 50), Reuse::OnlyIfCachedMiss);
    assert_eq!(
        decide("only-if-cached, no-cache", &e, 0),
        Reuse::OnlyIfCachedMiss
    );
    assert_eq!(
        decide("only-if-cached, max-stale", &e, 50),
        Reuse::StaleAccepted
    );
}

#[test]
fn retention_and_names() {
    let e = entry(
        "max-age=100, stale-while-revalidate=20, stale-if-error=50",
        10,
    );
    assert_eq!(e.retention(), s(140));
    assert_eq!(
        Reuse::StaleWhileRevalidate.as_str(),
        "stale-while-revalidate"
    );
    assert!(Reuse::StaleAccepted.serves_stored() && !Reuse::Revalidate.serves_stored());
}

// ----- Conditional requests (RFC 9110 §13) ----------------------------------

#[test]
fn rfc9110_13_1_2_if_none_match_weak_comparison() {
    let stored = hm(&[("etag", "W/\"v1\"")]);
    for inm in [
        "\"v1\"",
        "W/\"v1\"",
        "\"x\", W/\"v1\"",
        "*",
        " \"a\" ,\"v1\"",
    ] {
        assert!(
            not_modified(&hm(&[("if-none-match", inm)]), &stored),
            "{inm}"
        );
    }
    assert!(!not_modified(&hm(&[("if-none-match", "\"v2\"")]), &stored));
    assert!(!not_modified(&hm(&[("if-none-match", "v1")]), &stored)); // unquoted: invalid
    let lines = hm(&[("if-none-match", "\"a\""), ("if-none-match", "\"v1\"")]);
    assert!(not_modified(&lines, &stored));
    // No stored ETag: only `*` matches.
    assert!(!not_modified(
        &hm(&[("if-none-match", "\"v1\"")]),
        &HeaderMap::new()
    ));
    assert!(not_modified(
        &hm(&[("if-none-match", "*")]),
        &HeaderMap::new()
    ));
    // Commas inside an entity-tag are part of it.
    let stored = hm(&[("etag", "\"a,b\"")]);
    assert!(not_modified(&hm(&[("if-none-match", "\"a,b\"")]), &stored));
}

#[test]
fn rfc9110_13_1_3_if_modified_since() {
    let stored = hm(&[("last-modified", &date(NOW)), ("date", &date(NOW + 100))]);
    assert!(not_modified(
        &hm(&[("if-modified-since", &date(NOW))]),
        &stored
    ));
    assert!(not_modified(
        &hm(&[("if-modified-since", &date(NOW + 1))]),
        &stored
    ));
    assert!(!not_modified(
        &hm(&[("if-modified-since", &date(NOW - 1))]),
        &stored
    ));
    assert!(!not_modified(
        &hm(&[("if-modified-since", "yesterday")]),
        &stored
    ));
    // §4.3.2: Date stands in for a missing Last-Modified.
    let stored = hm(&[("date", &date(NOW))]);
    assert!(not_modified(
        &hm(&[("if-modified-since", &date(NOW))]),
        &stored
    ));
    assert!(!not_modified(
        &hm(&[("if-modified-since", &date(NOW))]),
        &HeaderMap::new()
    ));
}

#[test]
fn rfc9110_13_2_2_if_none_match_takes_precedence() {
    let stored = hm(&[("etag", "\"v1\""), ("last-modified", &date(NOW))]);
    let req = hm(&[
        ("if-none-match", "\"v2\""),
        ("if-modified-since", &date(NOW)),
    ]);
    assert!(!not_modified(&req, &stored));
}

#[test]
fn s4_3_1_validators_for_revalidation() {
    let lm = date(NOW);
    let v = validators_for(&hm(&[("etag", "\"v1\""), ("last-modified", &lm)]));
    assert_eq!(
        v.get(header::IF_NONE_MATCH).map(|v| v.as_bytes()),
        Some(&b"\"v1\""[..])
    );
    assert_eq!(
        v.get(header::IF_MODIFIED_SINCE).map(|v| v.as_bytes()),
        Some(lm.as_bytes())
    );
    assert!(validators_for(&hm(&[("last-modified", "garbage"), ("etag", "nope")])).is_empty());
    assert!(validators_for(&HeaderMap::new()).is_empty());
}

#[test]
fn s3_2_merge_304_updates_headers_except_framing() {
    let mut stored = hm(&[
        ("content-length", "100"),
        ("cache-control", "max-age=10"),
        ("etag", "\"v1\""),
        ("x-old", "keep"),
        ("link", "a"),
        ("link", "b"),
    ]);
    let fresh = hm(&[
        ("content-length", "0"),
        ("cache-control", "max-age=60"),
        ("date", "Tue, 15 Nov 1994 08:12:31 GMT"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("transfer-encoding", "chunked"),
        ("link", "c"),
    ]);
    merge_304(&mut stored, &fresh);
    assert_eq!(
        stored.get("content-length").map(|v| v.as_bytes()),
        Some(&b"100"[..])
    );
    assert_eq!(
        stored.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"max-age=60"[..])
    );
    assert!(stored.contains_key("date") && stored.contains_key("x-old"));
    assert!(!stored.contains_key("x-hop") && !stored.contains_key("transfer-encoding"));
    assert!(!stored.contains_key("connection"));
    let links: Vec<&HeaderValue> = stored.get_all("link").iter().collect();
    assert_eq!(links, [HeaderValue::from_static("c")]);
}

#[test]
fn s4_3_4_selecting_stored_response_for_304() {
    let stored = hm(&[("etag", "\"v1\""), ("last-modified", &date(NOW))]);
    assert!(response_304_matches(&stored, &hm(&[("etag", "W/\"v1\"")])));
    assert!(!response_304_matches(&stored, &hm(&[("etag", "\"v2\"")])));
    assert!(response_304_matches(
        &stored,
        &hm(&[("last-modified", &date(NOW))])
    ));
    assert!(!response_304_matches(
        &stored,
        &hm(&[("last-modified", &date(NOW + 1))])
    ));
    assert!(response_304_matches(&stored, &HeaderMap::new()));
}

// ----- Invalidation (RFC 9111 §4.4) -----------------------------------------

fn inval(method: &str, status: u16, resp: &[(&str, &str)]) -> Vec<String> {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let status = StatusCode::from_u16(status).expect("status");
    invalidated_uris(
        &method,
        status,
        "HTTP",
        "example.com",
        "/a/b?x=1#frag",
        &hm(resp),
    )
}

#[test]
fn s4_4_unsafe_methods_invalidate_target() {
    for m in ["POST", "PUT", "DELETE", "PATCH", "FROBNICATE"] {
        assert_eq!(inval(m, 200, &[]), ["http://example.com/a/b?x=1"], "{m}");
    }
    assert_eq!(inval("POST", 302, &[]).len(), 1);
    for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
        assert!(inval(m, 200, &[]).is_empty(), "{m}");
    }
    assert!(inval("POST", 500, &[]).is_empty());
    assert!(inval("POST", 404, &[]).is_empty());
}

#[test]
fn s4_4_location_and_content_location_same_origin_only() {
    let got = inval(
        "POST",
        201,
        &[("location", "/items/7#x"), ("content-location", "c?y=2")],
    );
    assert_eq!(
        got,
        [
            "http://example.com/a/b?x=1",
            "http://example.com/items/7",
            "http://example.com/a/c?y=2"
        ]
    );
    let got = inval(
        "PUT",
        200,
        &[
            ("location", "http://EXAMPLE.com:80/z"),
            ("content-location", "https://example.com/q"),
        ],
    );
    assert_eq!(
        got,
        ["http://example.com/a/b?x=1", "http://EXAMPLE.com:80/z"]
    );
    let got = inval(
        "PUT",
        200,
        &[
            ("location", "//other.example/z"),
            ("content-location", "mailto:a@b"),
        ],
    );
    assert_eq!(got.len(), 1);
}

#[test]
fn rfc3986_5_2_relative_resolution() {
    let one = |loc: &str| inval("POST", 200, &[("location", loc)]).get(1).cloned();
    assert_eq!(one("../up").as_deref(), Some("http://example.com/up"));
    assert_eq!(
        one("./x/../y/.").as_deref(),
        Some("http://example.com/a/y/")
    );
    assert_eq!(one("?q=2").as_deref(), Some("http://example.com/a/b?q=2"));
    assert_eq!(
        one("//example.com/n").as_deref(),
        Some("http://example.com/n")
    );
    assert_eq!(one("/a/b?x=1"), None); // duplicate of the target
    assert_eq!(one(""), None);
}

// ----- Vary (RFC 9111 §4.1) -------------------------------------------------

fn vary_key(vary: &[&str], req: &[(&str, &str)]) -> Option<String> {
    let values: Vec<HeaderValue> = vary
        .iter()
        .map(|v| HeaderValue::from_str(v).expect("vary"))
        .collect();
    secondary_key(&values, &hm(req), &VaryNormalise::default())
}

#[test]
fn s4_1_vary_star_never_matches() {
    assert_eq!(vary_key(&["accept, *"], &[]), None);
    assert_eq!(vary_key(&[], &[]), Some(String::new()));
    let resp = hm(&[("vary", "Accept"), ("vary", "*")]);
    assert_eq!(
        secondary_key(
            resp.get_all(header::VARY),
            &HeaderMap::new(),
            &VaryNormalise::default()
        ),
        None
    );
}

#[test]
fn s4_1_names_normalised() {
    let a = vary_key(
        &["Accept-Encoding, accept-language", "ACCEPT-ENCODING"],
        &[("accept-encoding", "gzip")],
    );
    let b = vary_key(
        &["Accept-Language,Accept-Encoding"],
        &[("accept-encoding", "gzip")],
    );
    assert_eq!(a, b);
    assert_eq!(a.as_deref(), Some("accept-encoding=gzip\naccept-language"));
}

#[test]
fn s4_1_values_normalised_whitespace_and_lines() {
    let v = ["accept-language"];
    let a = vary_key(&v, &[("accept-language", "de ,  en")]);
    let b = vary_key(&v, &[("accept-language", "de"), ("accept-language", "en")]);
    assert_eq!(a, b);
    assert_ne!(a, vary_key(&v, &[("accept-language", "en, de")]));
    // Absent and empty differ.
    assert_ne!(vary_key(&v, &[]), vary_key(&v, &[("accept-language", "")]));
}

#[test]
fn s4_1_accept_encoding_is_one_coding() {
    let v = ["accept-encoding"];
    let a = vary_key(&v, &[("accept-encoding", "gzip ,  br")]);
    assert_eq!(a, vary_key(&v, &[("accept-encoding", "br, gzip")]));
    assert_eq!(
        a,
        vary_key(
            &v,
            &[("accept-encoding", "gzip"), ("accept-encoding", "br")]
        )
    );
    assert_eq!(a.as_deref(), Some("accept-encoding=br"));
    // Absent is identity, like an explicit identity.
    assert_eq!(
        vary_key(&v, &[]),
        vary_key(&v, &[("accept-encoding", "identity")])
    );
    assert_eq!(
        vary_key(&v, &[("accept-encoding", "deflate")]).as_deref(),
        Some("accept-encoding=identity")
    );
}

#[test]
fn s4_1_listed_field_maps_to_one_value() {
    let norm = VaryNormalise {
        lists: vec![(
            HeaderName::from_static("accept-language"),
            vec!["en".into(), "de".into()],
        )],
        identity_upstream: false,
    };
    let key = |v: &str| {
        secondary_key(
            &[HeaderValue::from_static("Accept-Language")],
            &hm(&[("accept-language", v)]),
            &norm,
        )
    };
    assert_eq!(
        key("de-DE, de;q=0.9").as_deref(),
        Some("accept-language=de")
    );
    assert_eq!(key("fr").as_deref(), Some("accept-language=en"));
    assert_eq!(key("en-GB"), key("en-US,en;q=0.5"));
}

// ----- RFC 9213, qualified directives, status TTLs, Expires -------------------

#[test]
fn rfc9213_targeted_field_decides_storing_and_freshness() {
    let o = StoreOptions::default();
    let resp = hm(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=60"),
    ]);
    assert_eq!(
        storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &resp, &o),
        Ok(())
    );
    assert_eq!(freshness_lifetime(StatusCode::OK, &resp, &o, t(NOW)), s(60));
    let resp = hm(&[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store"),
    ]);
    assert_eq!(
        storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &resp, &o),
        Err(NoStoreReason::NoStore)
    );
    // A targeted field replaces Expires too (RFC 9213 §2.1).
    let resp = hm(&[
        ("date", &date(NOW)),
        ("expires", &date(NOW + 600)),
        ("cdn-cache-control", "must-revalidate"),
    ]);
    assert_eq!(freshness_lifetime(StatusCode::OK, &resp, &o, t(NOW)), s(0));
    assert!(!has_explicit_freshness(
        StatusCode::INTERNAL_SERVER_ERROR,
        &resp,
        &o
    ));
    // Not on the list: ignored.
    let none = StoreOptions {
        targeted_fields: Vec::new(),
        ..Default::default()
    };
    let resp = hm(&[
        ("cache-control", "max-age=5"),
        ("cdn-cache-control", "max-age=60"),
    ]);
    assert_eq!(
        freshness_lifetime(StatusCode::OK, &resp, &none, t(NOW)),
        s(5)
    );
}

#[test]
fn s4_2_1_any_status_with_explicit_freshness() {
    let o = StoreOptions::default();
    for status in [500u16, 502, 503, 504, 403, 302] {
        let st = StatusCode::from_u16(status).expect("status");
        let resp = hm(&[("cache-control", "max-age=30")]);
        assert!(has_explicit_freshness(st, &resp, &o), "{status}");
        assert_eq!(
            storable(&Method::GET, &HeaderMap::new(), st, &resp, &o),
            Ok(())
        );
        assert_eq!(freshness_lifetime(st, &resp, &o, t(NOW)), s(30));
        let bare = hm(&[("date", &date(NOW)), ("last-modified", &date(NOW - 1000))]);
        assert!(!has_explicit_freshness(st, &bare, &o), "{status}");
        assert_eq!(freshness_lifetime(st, &bare, &o, t(NOW)), s(0), "{status}");
    }
}

#[test]
fn status_ttl_for_statuses_without_explicit_freshness() {
    let o = StoreOptions {
        status_ttl: vec![
            StatusTtl {
                from: 500,
                to: 599,
                ttl: s(5),
            },
            StatusTtl {
                from: 404,
                to: 404,
                ttl: s(60),
            },
            StatusTtl {
                from: 503,
                to: 503,
                ttl: s(1),
            },
        ],
        ..Default::default()
    };
    let none = HeaderMap::new();
    let lt = |code: u16, h: &HeaderMap| {
        freshness_lifetime(StatusCode::from_u16(code).expect("status"), h, &o, t(NOW))
    };
    assert_eq!(lt(404, &none), s(60));
    assert_eq!(lt(500, &none), s(5));
    assert_eq!(lt(503, &none), s(1));
    assert_eq!(lt(410, &none), s(0));
    // Explicit freshness wins.
    assert_eq!(lt(404, &hm(&[("cache-control", "max-age=3")])), s(3));
    assert!(has_explicit_freshness(StatusCode::BAD_GATEWAY, &none, &o));
    assert_eq!(
        storable(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::BAD_GATEWAY,
            &none,
            &o
        ),
        Ok(())
    );
}

#[test]
fn s5_2_2_7_qualified_fields_left_out() {
    let o = StoreOptions::default();
    let resp = hm(&[
        (
            "cache-control",
            "max-age=60, private=\"Set-Cookie\", no-cache=\"x-user\"",
        ),
        ("set-cookie", "a=b"),
        ("x-user", "alice"),
    ]);
    assert_eq!(
        storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &resp, &o),
        Ok(())
    );
    assert_eq!(
        unshared_fields(&resp, &o),
        vec![HeaderName::from_static("x-user"), header::SET_COOKIE]
    );
    let f = Freshness::from_response(StatusCode::OK, &resp, &o, t(NOW), t(NOW));
    assert!(
        !f.no_cache,
        "a qualified no-cache does not force revalidation"
    );
    // Without the qualification, Set-Cookie still prevents storing.
    let resp = hm(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]);
    assert_eq!(
        storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &resp, &o),
        Err(NoStoreReason::SetCookie)
    );
}

#[test]
fn s5_3_expires_formats_and_garbage() {
    let o = StoreOptions::default();
    let d = date(NOW);
    for expires in [
        "Tue, 14 Nov 2023 22:23:20 GMT",
        "TUESDAY, 14-NOV-23 22:23:20 GMT",
        "tue nov 14 22:23:20 2023",
    ] {
        let resp = hm(&[("date", &d), ("expires", expires)]);
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &resp, &o, t(NOW)),
            s(1_700_000_600 - NOW),
            "{expires}"
        );
    }
    for garbage in ["0", "-1", "never", "2023-11-14T22:23:20Z"] {
        let resp = hm(&[("date", &d), ("expires", garbage)]);
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &resp, &o, t(NOW)),
            s(0),
            "{garbage}"
        );
    }
}

#[test]
fn shielded_request_keeps_only_if_cached_and_no_store() {
    let c = shielded(cc(
        "no-cache, max-age=0, min-fresh=10, only-if-cached, no-store, max-stale=5",
    ));
    assert_eq!(c.no_cache, None);
    assert_eq!(c.max_age, None);
    assert_eq!(c.min_fresh, None);
    assert!(c.only_if_cached && c.no_store);
    assert_eq!(c.max_stale, Some(MaxStale::Limit(s(5))));
}

#[test]
fn s4_1_non_utf8_values_do_not_collide() {
    let mut a = HeaderMap::new();
    a.insert("x-v", HeaderValue::from_bytes(b"\xe9").expect("obs-text"));
    let mut b = HeaderMap::new();
    b.insert("x-v", HeaderValue::from_bytes(b"\xe8").expect("obs-text"));
    let vary = [HeaderValue::from_static("x-v")];
    assert_ne!(
        secondary_key(&vary, &a, &VaryNormalise::default()),
        secondary_key(&vary, &b, &VaryNormalise::default())
    );
    assert_eq!(
        secondary_key(&vary, &a, &VaryNormalise::default()).as_deref(),
        Some("x-v=%E9")
    );
}
