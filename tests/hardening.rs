//! Request hardening (issue 19): header names with `_`, per-route body and rate limits.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::*;

async fn send(url: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut req = Request::builder().uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body: Body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed();
    let resp = client().request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

const DROPPED: &str = "torii_request_headers_dropped_total{reason=\"underscore\"}";

// === header names with `_` ===

#[tokio::test]
async fn underscore_headers_are_dropped_by_default_and_counted() {
    let origin = Origin::start().await;
    origin.set("/seen", Reply::new("ok"));
    let torii = Torii::to(&origin, "").await;
    assert_eq!(torii.metric(DROPPED).await, Some(0.0));
    let status = send(
        &torii.url("/seen"),
        &[
            ("x_forwarded_for", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.7"),
            ("x-custom_id", "1"),
            ("x-plain", "kept"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/seen");
    let (_, headers) = &seen[0];
    assert!(headers.get("x_forwarded_for").is_none(), "{headers:?}");
    assert!(headers.get("x-custom_id").is_none(), "{headers:?}");
    assert_eq!(headers["x-plain"], "kept");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(torii.metric(DROPPED).await, Some(3.0));
    // A request without any: nothing counted.
    assert_eq!(
        send(&torii.url("/seen"), &[("x-a", "b")]).await,
        StatusCode::OK
    );
    assert_eq!(torii.metric(DROPPED).await, Some(3.0));
}

#[tokio::test]
async fn underscore_headers_are_kept_with_the_flag() {
    let origin = Origin::start().await;
    origin.set("/seen", Reply::new("ok"));
    let torii = Torii::to(&origin, "[limits]\nunderscores_in_headers = true\n").await;
    let status = send(&torii.url("/seen"), &[("x_custom", "1")]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = origin.requests("/seen");
    assert_eq!(seen[0].1["x_custom"], "1");
    assert_eq!(torii.metric(DROPPED).await, Some(0.0));
}
