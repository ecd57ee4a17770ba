//! Cache-Control (request and response), Vary and the freshness rules built on them: any
//! header bytes are read leniently and never panic.
#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use torii::cache::policy::{self, CacheControl};

fuzz_target!(|data: &[u8]| {
    let cc = CacheControl::parse(data);
    // Parsing is order-insensitive for a single field split in two at a comma.
    if let Some(i) = data.iter().position(|&b| b == b',') {
        if let (Ok(a), Ok(b)) = (
            HeaderValue::from_bytes(&data[..i]),
            HeaderValue::from_bytes(&data[i + 1..]),
        ) {
            let mut h = HeaderMap::new();
            h.append(http::header::CACHE_CONTROL, a);
            h.append(http::header::CACHE_CONTROL, b);
            let _ = CacheControl::from_headers(&h);
        }
    }
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut resp = HeaderMap::new();
    for name in [
        http::header::CACHE_CONTROL,
        http::header::EXPIRES,
        http::header::DATE,
        http::header::LAST_MODIFIED,
        http::header::AGE,
        http::header::VARY,
        http::header::PRAGMA,
    ] {
        resp.insert(name, value.clone());
    }
    let mut req = HeaderMap::new();
    req.insert(http::header::CACHE_CONTROL, value.clone());
    req.insert(http::header::PRAGMA, value.clone());
    req.insert(http::header::ACCEPT_ENCODING, value.clone());
    let req_cc = policy::request_cache_control(&req);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let opts = policy::StoreOptions::default();
    for status in [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::FOUND] {
        let _ = policy::storable(&Method::GET, &req, status, &resp, &opts);
        let _ = policy::freshness_lifetime(status, &resp, &opts, now);
    }
    let _ = policy::secondary_key(
        resp.get_all(http::header::VARY),
        &req,
        &policy::VaryNormalise::default(),
    );
    let _ = (cc, req_cc);
});
