//! The disk tier through real sockets: entries survive a restart, corrupt files are
//! refetched, purges and invalidation reach both tiers.

mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::*;

/// torii with one caching route to `origin`, memory and a disk tier in `dir`.
async fn proxy(origin: &Origin, dir: &Path) -> Torii {
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n[cache]\n\
         disk = {{ path = \"{}\", size = \"64MiB\" }}\n\
         [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n",
        dir.display()
    );
    Torii::start(&toml, Some(origin)).await
}

/// The Host every request names: the cache key includes it, and each torii listens on
/// another port.
const HOST: &str = "cache.test";

async fn send(method: &str, url: &str) -> (StatusCode, HeaderMap, Bytes) {
    let body: Body = Empty::new().map_err(|e| match e {}).boxed();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("host", HOST)
        .body(body)
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// GET `url`: X-Cache and body as text.
async fn fetch(url: &str) -> (String, String) {
    let (status, h, body) = send("GET", url).await;
    assert!(status.is_success(), "{url}: {status}");
    (
        h.get("x-cache")
            .map_or("<none>", |v| v.to_str().unwrap())
            .to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn stats(torii: &Torii) -> serde_json::Value {
    let (_, _, body) = get(&format!("http://{}/stats.json", torii.admin)).await;
    serde_json::from_slice(&body).unwrap()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the disk tier holds `n` objects (disk writes run in the background).
async fn on_disk(torii: &Torii, n: u64) {
    eventually(&format!("{n} objects on disk"), || async {
        stats(torii).await["cache"]["disk"]["objects"].as_u64() == Some(n)
    })
    .await;
}

fn object_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("objects")).unwrap() {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(file.unwrap().path());
        }
    }
    out
}

/// The one object file whose bytes contain `needle` (the stored URL or body).
fn file_with(dir: &Path, needle: &[u8]) -> PathBuf {
    let found: Vec<PathBuf> = object_files(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

fn cacheable(origin: &Origin, path: &str, extra: &[(&str, &str)]) {
    let reply = extra.iter().fold(
        Reply::new(format!("body of {path}")).header("cache-control", "max-age=600"),
        |r, (k, v)| r.header(k, v),
    );
    origin.set(path, reply);
}

#[tokio::test]
async fn restarted_torii_serves_from_disk_without_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    cacheable(&origin, "/d", &[]);
    let torii = proxy(&origin, dir.path()).await;
    assert_eq!(fetch(&torii.url("/d")).await.0, "MISS");
    on_disk(&torii, 1).await;
    torii.stop().await;

    let torii = proxy(&origin, dir.path()).await;
    let (status, h, body) = send("GET", &torii.url("/d")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(body, "body of /d");
    assert!(h.contains_key("age"));
    assert_eq!(origin.hits("/d"), 1, "served from disk after the restart");
    let s = stats(&torii).await;
    assert_eq!(
        s["cache"]["memory"]["objects"], 1,
        "a disk hit fills memory: {s}"
    );
}

#[tokio::test]
async fn corrupt_disk_entries_are_ignored_and_refetched() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    for p in ["/flipped", "/truncated", "/intact"] {
        cacheable(&origin, p, &[]);
    }
    let torii = proxy(&origin, dir.path()).await;
    for p in ["/flipped", "/truncated", "/intact"] {
        assert_eq!(fetch(&torii.url(p)).await.0, "MISS");
    }
    on_disk(&torii, 3).await;
    torii.stop().await;

    // Flip the last byte (the body) of one file, cut another in half.
    let flipped = file_with(dir.path(), b"body of /flipped");
    let mut bytes = std::fs::read(&flipped).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&flipped, bytes).unwrap();
    let truncated = file_with(dir.path(), b"body of /truncated");
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let torii = proxy(&origin, dir.path()).await;
    assert_eq!(
        fetch(&torii.url("/flipped")).await,
        ("MISS".into(), "body of /flipped".into())
    );
    assert_eq!(
        fetch(&torii.url("/truncated")).await,
        ("MISS".into(), "body of /truncated".into())
    );
    assert_eq!(
        fetch(&torii.url("/intact")).await,
        ("HIT".into(), "body of /intact".into())
    );
    assert_eq!(origin.hits("/flipped"), 2);
    assert_eq!(origin.hits("/truncated"), 2);
    assert_eq!(origin.hits("/intact"), 1);
    // The refetched copies are stored again, and are good after another restart.
    on_disk(&torii, 3).await;
    torii.stop().await;
    let torii = proxy(&origin, dir.path()).await;
    for p in ["/flipped", "/truncated", "/intact"] {
        assert_eq!(fetch(&torii.url(p)).await.0, "HIT", "{p}");
    }
}

#[tokio::test]
async fn purges_reach_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    cacheable(&origin, "/u", &[]);
    cacheable(&origin, "/m", &[]);
    cacheable(&origin, "/pre/x", &[]);
    cacheable(&origin, "/t", &[("surrogate-key", "news")]);
    cacheable(&origin, "/keep", &[]);
    let all = ["/u", "/m", "/pre/x", "/t", "/keep"];
    let torii = proxy(&origin, dir.path()).await;
    for p in all {
        assert_eq!(fetch(&torii.url(p)).await.0, "MISS");
    }
    on_disk(&torii, 5).await;

    let (status, v) = admin_post(
        &torii,
        "/purge",
        &format!(r#"{{"url": "http://{HOST}/u"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (v["memory"].as_u64(), v["disk"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let (status, _, body) = send("PURGE", &torii.url("/m")).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["memory"].as_u64(), v["disk"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let (_, v) = admin_post(&torii, "/purge", r#"{"prefix": "/pre/"}"#).await;
    assert_eq!(
        (v["memory"].as_u64(), v["disk"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let (_, v) = admin_post(&torii, "/purge", r#"{"tag": "news"}"#).await;
    assert_eq!(
        (v["memory"].as_u64(), v["disk"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(
        object_files(dir.path()).len(),
        1,
        "purged files are deleted"
    );

    // Neither tier answers for them, in this process or the next.
    torii.stop().await;
    let torii = proxy(&origin, dir.path()).await;
    for p in all {
        let expect = if p == "/keep" { "HIT" } else { "MISS" };
        assert_eq!(fetch(&torii.url(p)).await.0, expect, "{p}");
    }
}

#[tokio::test]
async fn invalidation_after_post_reaches_disk() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    cacheable(&origin, "/r", &[]);
    let torii = proxy(&origin, dir.path()).await;
    for round in 0..5 {
        assert_eq!(fetch(&torii.url("/r")).await.0, "MISS", "round {round}");
        assert_eq!(fetch(&torii.url("/r")).await.0, "HIT", "round {round}");
        on_disk(&torii, 1).await;
        let (status, _, _) = send("POST", &torii.url("/r")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(fetch(&torii.url("/r")).await.0, "MISS");
}

#[tokio::test]
async fn purge_right_after_a_store_is_not_undone_by_the_disk_write() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    cacheable(&origin, "/race", &[]);
    let torii = proxy(&origin, dir.path()).await;
    for i in 0..20 {
        let url = torii.url(&format!("/race?i={i}"));
        assert_eq!(fetch(&url).await.0, "MISS");
        // The disk write of that response may still be running.
        let (status, _, _) = send("PURGE", &url).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = send("POST", &url).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Let any write still in flight finish, then nothing may answer from disk.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        let url = torii.url(&format!("/race?i={i}"));
        assert_eq!(fetch(&url).await.0, "MISS", "{i}");
    }
    // The 20 refetched responses reach the disk in the background.
    on_disk(&torii, 20).await;
}
