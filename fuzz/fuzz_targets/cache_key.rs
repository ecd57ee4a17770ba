//! The cache key builder: any target and header bytes give a key without raw control
//! characters (besides its own line separators), and equal inputs give equal keys.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use torii::cache::key::{canonical_url, primary_key, KeySpec};

fuzz_target!(|input: (&str, &[u8], &[u8], bool, bool)| {
    let (target, header, cookie, sort, with_host) = input;
    let spec = KeySpec {
        include_host: with_host,
        include_query: true,
        drop_query_params: vec!["utm_*".into(), "fbclid".into()],
        sort_query: sort,
        headers: vec![HeaderName::from_static("x-variant")],
        cookies: vec!["session".into()],
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(header) {
        headers.insert("x-variant", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(cookie) {
        headers.insert(http::header::COOKIE, v);
    }
    let url = canonical_url(&spec, "http", "example.com", target);
    assert!(!url.bytes().any(|b| b.is_ascii_control()), "{url:?}");
    let key = primary_key(&spec, true, "http", "example.com", target, &headers);
    assert!(
        !key.bytes().any(|b| b.is_ascii_control() && b != b'\n'),
        "{key:?}"
    );
    assert_eq!(
        key,
        primary_key(&spec, true, "http", "example.com", target, &headers)
    );
    let _ = torii::cache::key::url_of(&key);
});
