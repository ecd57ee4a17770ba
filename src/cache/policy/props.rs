//! Property tests for the cache policy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use proptest::prelude::*;

use super::*;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(t(secs))
}

fn arb_delta() -> impl Strategy<Value = Duration> {
    (0u64..=DELTA_SECONDS_MAX).prop_map(Duration::from_secs)
}

fn arb_scope() -> impl Strategy<Value = FieldScope> {
    prop_oneof![
        Just(FieldScope::All),
        proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 1..4).prop_map(FieldScope::Fields),
    ]
}

fn arb_cache_control() -> impl Strategy<Value = CacheControl> {
    let durations = (
        proptest::option::of(arb_delta()),
        proptest::option::of(arb_delta()),
        proptest::option::of(arb_delta()),
        proptest::option::of(arb_delta()),
        proptest::option::of(arb_delta()),
        proptest::option::of(prop_oneof![
            Just(MaxStale::Any),
            arb_delta().prop_map(MaxStale::Limit)
        ]),
    );
    let scopes = (
        proptest::option::of(arb_scope()),
        proptest::option::of(arb_scope()),
    );
    let flags = proptest::collection::vec(any::<bool>(), 9);
    (durations, scopes, flags).prop_map(|(d, sc, f)| CacheControl {
        max_age: d.0,
        s_maxage: d.1,
        min_fresh: d.2,
        stale_while_revalidate: d.3,
        stale_if_error: d.4,
        max_stale: d.5,
        no_cache: sc.0,
        private: sc.1,
        no_store: f[0],
        public: f[1],
        must_revalidate: f[2],
        proxy_revalidate: f[3],
        only_if_cached: f[4],
        immutable: f[5],
        no_transform: f[6],
        must_understand: f[7],
    })
}

fn arb_header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        (0u64..253_402_300_799).prop_map(date),
        (0u64..u64::MAX).prop_map(|n| n.to_string()),
        "(max-age|s-maxage|stale-while-revalidate|stale-if-error|no-cache|must-revalidate)(=[0-9]{1,25})?(, public)?",
    ]
}

fn arb_time() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        (0u64..4_000_000_000).prop_map(t),
        any::<u64>().prop_map(|n| UNIX_EPOCH
            .checked_add(Duration::from_secs(n / 2))
            .unwrap_or(UNIX_EPOCH)),
        Just(UNIX_EPOCH),
    ]
}

/// Splits a serialised directive list at commas outside quoted strings.
fn split_top_level(text: &str) -> Vec<String> {
    let (mut parts, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for ch in text.chars() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    parts
}

proptest! {
    #[test]
    fn prop_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let parsed = CacheControl::parse(&bytes);
        // Serialising what was understood and parsing again is stable.
        prop_assert_eq!(CacheControl::parse(parsed.to_string().as_bytes()), parsed);
    }

    #[test]
    fn prop_parse_directive_soup_never_panics(
        s in "((max-age|s-maxage|max-stale|min-fresh|private|no-cache|x)(=(\"[^\"]{0,8}\"?|[0-9a-z\\-]{0,25}))?[ ,\t]{0,3}){0,8}"
    ) {
        let _ = CacheControl::parse(s.as_bytes());
    }

    #[test]
    fn prop_cache_control_round_trips(c in arb_cache_control()) {
        let text = c.to_string();
        prop_assert_eq!(CacheControl::parse(text.as_bytes()), c.clone());
        // Split across several field lines, too.
        let mut m = HeaderMap::new();
        for part in split_top_level(&text) {
            m.append(header::CACHE_CONTROL, HeaderValue::from_str(&part).expect("serialised value"));
        }
        prop_assert_eq!(CacheControl::from_headers(&m), c);
    }

    #[test]
    fn prop_freshness_and_age_never_panic(
        cc_v in arb_header_text(), date_v in arb_header_text(), expires_v in arb_header_text(),
        age_v in arb_header_text(), lm_v in arb_header_text(), req_cc in arb_cache_control(),
        status in 100u16..600, fraction in any::<f64>(), max_h in any::<u64>(),
        default_ttl in proptest::option::of(any::<u64>()),
        request_time in arb_time(), response_time in arb_time(), now in arb_time(),
    ) {
        let mut resp = HeaderMap::new();
        for (name, v) in [
            (header::CACHE_CONTROL, &cc_v), (header::DATE, &date_v), (header::EXPIRES, &expires_v),
            (header::AGE, &age_v), (header::LAST_MODIFIED, &lm_v),
        ] {
            if let Ok(v) = HeaderValue::from_str(v) {
                resp.insert(name, v);
            }
        }
        let opts = StoreOptions {
            heuristic_fraction: fraction,
            max_heuristic: Duration::from_secs(max_h),
            default_ttl: default_ttl.map(Duration::from_secs),
            ..Default::default()
        };
        let status = StatusCode::from_u16(status).expect("in range");
        let _ = freshness_lifetime(status, &resp, &opts, now);
        let _ = storable(&Method::GET, &HeaderMap::new(), status, &resp, &opts);
        let age = current_age(&resp, request_time, response_time, now);
        let f = Freshness::from_response(status, &resp, &opts, request_time, response_time);
        prop_assert_eq!(f.age(now), age);
        prop_assert!(f.remaining(now).is_zero() || f.staleness(now).is_zero());
        let _ = (f.is_fresh(now), f.in_stale_while_revalidate(now), f.retention());
        let _ = f.can_serve_stale_on_error(&req_cc, now);
        let decision = request_decision(&req_cc, &f, now);
        if f.is_fresh(now) && req_cc == CacheControl::default() && !f.no_cache {
            prop_assert_eq!(decision, Reuse::Fresh);
        }
        let _ = not_modified(&resp, &resp);
        let _ = validators_for(&resp);
    }
}
