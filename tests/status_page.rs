//! The status page at `GET /` on the admin listener, loaded in real headless Chromium while
//! traffic runs: the charts are drawn with data points, the tables hold the upstream server and
//! the route, and a screenshot lands in `target/status-page.png`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest a Chromium run may take before it is killed (by its own PID) and the test fails.
const CHROMIUM_WAIT: Duration = Duration::from_secs(120);

/// Runs headless Chromium on `url` with `extra` arguments; returns its stdout.
async fn chromium(url: &str, extra: &[&str]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run .ci/run (as root it installs the chromium package) \
         or apt-get install chromium"
    );
    let profile = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            "--virtual-time-budget=5000",
        ])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        (out, err, child.wait().await)
    };
    let (out, err, status) = match tokio::time::timeout(CHROMIUM_WAIT, read).await {
        Ok(done) => done,
        Err(_) => {
            // Only the browser we started, by its PID.
            let _ = std::process::Command::new("kill")
                .arg(child.id().map(|p| p.to_string()).unwrap_or_default())
                .status();
            panic!("chromium did not finish within {CHROMIUM_WAIT:?} on {url}");
        }
    };
    let status = status.expect("wait for chromium");
    assert!(
        status.success(),
        "chromium {extra:?} failed: {status}\n{}",
        String::from_utf8_lossy(&err)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of attribute `name` in the start tag that contains `id="<id>"`.
fn attribute(dom: &str, id: &str, name: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let value = tag.split(&format!(" {name}=\"")).nth(1)?;
    Some(value[..value.find('"')?].to_string())
}

/// The inner HTML of the element with `id="<id>"` up to its closing `</tag>`.
fn element<'a>(dom: &'a str, id: &str, tag: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in\n{dom}"));
    let end = dom[at..]
        .find(&format!("</{tag}>"))
        .unwrap_or_else(|| panic!("#{id} not closed"));
    &dom[at..at + end]
}

/// Requests in the background until `stop` is set (or two minutes pass): cacheable hits,
/// uncacheable misses and an occasional slow request, so the page sees live figures.
fn traffic(torii: &Torii, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    let (public, private, slow) = (
        torii.url("/pub"),
        torii.url("/priv"),
        torii.url("/slow?ms=80"),
    );
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
            get(&public).await;
            get(&private).await;
            sent += 2;
            if sent % 20 == 0 {
                get(&slow).await;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_draws_charts_and_tables_in_chromium() {
    let origin = Origin::start().await;
    origin.set(
        "/pub",
        Reply::new("public").header("cache-control", "max-age=60"),
    );
    origin.set(
        "/priv",
        Reply::new("private").header("cache-control", "private"),
    );
    let torii = Torii::to(&origin, "").await;
    let page = format!("http://{}/", torii.admin);

    // The page itself: HTML, self-contained (no external scripts, styles or images).
    let (status, headers, body) = get(&page).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let html = String::from_utf8(body.to_vec()).unwrap();
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(!html.contains(external), "external asset {external:?}");
    }

    // Known traffic first: a miss and hits, misses, a slow request.
    for _ in 0..5 {
        get(&torii.url("/pub")).await;
        get(&torii.url("/priv")).await;
    }
    get(&torii.url("/slow?ms=300")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let background = traffic(&torii, stop.clone());

    let dom = chromium(&page, &["--dump-dom"]).await;
    assert!(
        dom.contains("<body data-state=\"ok\""),
        "the page did not load /stats.json:\n{dom}"
    );
    for chart in [
        "chart-rps",
        "chart-latency",
        "chart-histogram",
        "chart-hits",
    ] {
        let points: usize = attribute(&dom, chart, "data-points")
            .unwrap_or_else(|| panic!("no data-points on #{chart}:\n{dom}"))
            .parse()
            .unwrap();
        assert!(points > 0, "#{chart} drew no points:\n{dom}");
    }
    // Four polls or more in five seconds of virtual time: the lines have history.
    let rps: usize = attribute(&dom, "chart-rps", "data-points")
        .unwrap()
        .parse()
        .unwrap();
    assert!(rps >= 2, "requests/s chart has {rps} points");

    let upstreams = element(&dom, "upstreams", "table");
    let server = format!("<td>http://{}</td>", origin.addr);
    assert!(
        upstreams.contains(&server),
        "upstream table lacks {server}:\n{upstreams}"
    );
    assert!(upstreams.contains("<tr class=\"server\"><td class=\"muted\">app</td>"));
    assert!(upstreams.contains("state up"), "{upstreams}");
    let routes = element(&dom, "routes", "table");
    assert!(
        routes.contains("<td>*/</td><td>proxy+cache</td><td>app</td>"),
        "{routes}"
    );
    let cache = element(&dom, "cache", "table");
    assert!(cache.contains("<td>hits</td>"), "{cache}");
    assert!(element(&dom, "tiles", "main").contains("requests/s"));

    // A screenshot for people: target/status-page.png, 1280×900.
    let png = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &page,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
        ],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let sent = background.await.unwrap();
    assert!(sent > 0);

    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 900));
    // A blank 1280×900 page compresses to a few KiB; charts, text and tables do not.
    assert!(
        bytes.len() > 40_000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    torii.stop().await;
}

#[tokio::test]
async fn status_page_is_served_for_head_and_names_other_paths_on_404() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    let req = http::Request::head(format!("http://{}/", torii.admin))
        .body(http_body_util::BodyExt::boxed(http_body_util::Empty::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let (status, _, body) = get(&format!("http://{}/nope", torii.admin)).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("/ (status page)"));
    torii.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_shared_tier() {
    let origin = Origin::start().await;
    // No Redis listens there: the tier is configured, failing, and local-only.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let torii = Torii::to(
        &origin,
        &format!("[cache.shared]\nredis = \"redis://{dead}\"\n"),
    )
    .await;
    for i in 0..5 {
        get(&torii.url(&format!("/x{i}"))).await;
    }
    let dom = chromium(&format!("http://{}/", torii.admin), &["--dump-dom"]).await;
    let cache = element(&dom, "cache", "table");
    assert!(cache.contains("<td>shared tier</td>"), "{cache}");
    assert!(cache.contains("(local only)</td>"), "{cache}");
    assert!(cache.contains("<td>shared lease waits</td>"), "{cache}");
}
