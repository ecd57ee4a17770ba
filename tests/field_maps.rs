//! The field maps HTTP/2 hits keep on stored objects stay within their budget, and give
//! their bytes back when the object goes (`CachedObject::fields_map`). One test in its
//! own binary: the budget and the count are process-wide.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, StatusCode};
use torii::cache::object::{kept_maps_bytes, set_kept_maps_budget, CachedObject, ObjectMeta};

fn object(key: &str) -> CachedObject {
    let now = SystemTime::now();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
    let meta = ObjectMeta::at(key, now);
    CachedObject::new(meta, StatusCode::OK, &headers, b"body")
}

#[test]
fn kept_field_maps_stay_within_their_budget_and_go_with_their_object() {
    let a = object("http://h/a");
    set_kept_maps_budget(0);
    // No budget: a map for this hit only, nothing kept.
    assert!(matches!(a.fields_map(), std::borrow::Cow::Owned(_)));
    assert_eq!(kept_maps_bytes(), 0);

    set_kept_maps_budget(1 << 20);
    let map = a.fields_map();
    assert!(matches!(map, std::borrow::Cow::Borrowed(_)));
    assert_eq!(map.get("content-type").unwrap(), "text/plain");
    let one = kept_maps_bytes();
    assert!(one > 0);
    // Kept: the next hit reads the same map, nothing more is held.
    assert!(std::ptr::eq(&*a.fields_map(), &*map));
    assert_eq!(kept_maps_bytes(), one);

    // A budget for one map only: a second object's map is not kept.
    set_kept_maps_budget(one);
    let b = object("http://h/b");
    assert!(matches!(b.fields_map(), std::borrow::Cow::Owned(_)));
    assert_eq!(kept_maps_bytes(), one);

    drop(map);
    drop(a);
    assert_eq!(kept_maps_bytes(), 0, "the map's bytes went with its object");
    assert!(matches!(b.fields_map(), std::borrow::Cow::Borrowed(_)));
}
