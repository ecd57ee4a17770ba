//! The scheme in the cache key: the same URL over http and https is stored twice, and a
//! purge of the URL removes both copies.

use super::*;

/// GET `/s` with `Host: a.test` over plain HTTP.
async fn plain_get(addr: SocketAddr) -> String {
    let req = Request::get(format!("http://{addr}/s"))
        .header("host", "a.test")
        .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

async fn tls_get(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> String {
    let stream = connect(addr, config.clone(), "a.test").await.unwrap();
    let mut h1 = open_h1(stream).await;
    let (status, _, body) = h1_get(&mut h1, "a.test", "/s").await;
    assert_eq!(status, StatusCode::OK);
    body
}

#[tokio::test]
async fn http_and_https_are_stored_apart_and_purged_together() {
    let origin = Origin::start().await;
    origin.set_fn("/s", |req| {
        let proto = req
            .headers
            .get("x-forwarded-proto")
            .map_or("?", |v| v.to_str().unwrap());
        Reply::new(format!("proto={proto}")).header("cache-control", "max-age=60")
    });
    let (files, ca) = (Files::new(), Ca::new());
    let leaf = ca.issue(&["a.test"]);
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n\
         [[listeners]]\naddr = \"127.0.0.1:0\"\n[listeners.tls]\n{}\n\
         [[listeners]]\naddr = \"127.0.0.1:0\"\n\
         [upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        files.leaf("a", &leaf),
        origin.url()
    );
    let torii = Running::start(&toml, 2).await;
    let (tls, plain) = (torii.addrs[0], torii.addrs[1]);
    let config = client_config(&ca, &[b"http/1.1"]);

    assert_eq!(tls_get(tls, &config).await, "proto=https");
    // Before the scheme was in the key, this was the https copy.
    assert_eq!(plain_get(plain).await, "proto=http");
    assert_eq!(origin.hits("/s"), 2);
    assert_eq!(tls_get(tls, &config).await, "proto=https");
    assert_eq!(plain_get(plain).await, "proto=http");
    assert_eq!(origin.hits("/s"), 2, "both copies answer from the cache");

    // One purge of the URL (either scheme) removes both copies.
    let req = Request::post(format!("http://{}/purge", torii.admin))
        .header("content-type", "application/json")
        .body(
            http_body_util::Full::new(Bytes::from(r#"{"url": "http://a.test/s"}"#))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["memory"], 2, "{v}");
    assert_eq!(tls_get(tls, &config).await, "proto=https");
    assert_eq!(plain_get(plain).await, "proto=http");
    assert_eq!(origin.hits("/s"), 4);

    // PURGE on the proxy port, over http: the https copy goes too.
    let req = Request::builder()
        .method("PURGE")
        .uri(format!("http://{plain}/s"))
        .header("host", "a.test")
        .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(tls_get(tls, &config).await, "proto=https");
    assert_eq!(origin.hits("/s"), 5);
    torii.stop().await;
}
