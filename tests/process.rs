//! The real binary: `torii check`, `torii run` with SIGHUP reload, SIGTERM drain, SIGUSR1.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const TORII: &str = env!("CARGO_BIN_EXE_torii");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `sig` to our own child, by its PID.
fn signal(child: &Child, sig: i32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

/// Starts `torii run --config path` and waits until it answers on `port`.
async fn start(path: &Path, port: u16) -> Child {
    let child = Command::new(TORII)
        .args(["run", "--config"])
        .arg(path)
        .env("TORII_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "torii did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

fn config(port: u16, origin: &Origin, route_body: &str, log: &Path) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
admin = "off"
workers = 2
drain_timeout = "10s"
[log]
access = "{}"
format = "json"
[upstreams.app]
servers = ["{}"]
[[routes]]
path = "/fixed"
respond = {{ status = 200, body = "{route_body}" }}
[[routes]]
upstream = "app"
"#,
        log.display(),
        origin.url()
    )
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sighup_reloads_keeps_in_flight_and_rejects_bad_config() {
    let origin = Origin::start().await;
    let dir = tempdir();
    let path = dir.join("torii.toml");
    let log = dir.join("access.log");
    let port = free_port();
    std::fs::write(&path, config(port, &origin, "one", &log)).unwrap();
    let mut child = start(&path, port).await;
    let stderr = Stderr::collect(&mut child);
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/fixed")).await.2, "one");

    // A slow request in flight across the reload.
    let slow_url = format!("{base}/slow?ms=2000");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    wait_until("the slow request reaches the origin", PATIENCE, || {
        origin.hits("/slow") == 1
    })
    .await;

    std::fs::write(&path, config(port, &origin, "two", &log)).unwrap();
    signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if get(&format!("{base}/fixed")).await.2 == "two" {
            break;
        }
        assert!(Instant::now() < deadline, "reload did not take effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"slow done"[..]));

    // A broken config is refused; the old one keeps serving.
    std::fs::write(&path, "[server]\nlisten = [\"127.0.0.1:1\"]\nworkrs = 1\n").unwrap();
    signal(&child, libc::SIGHUP);
    stderr.wait_for("rejected, old config kept").await;
    assert_eq!(get(&format!("{base}/fixed")).await.2, "two");

    // SIGUSR1 reopens the access log after it was moved away (logrotate).
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(&child, libc::SIGUSR1);
    stderr.wait_for("SIGUSR1: reopening logs").await;
    // Requests logged once the log is reopened go to a new file at the old path (each is
    // written when its response ends, so ask until one is there).
    let start = Instant::now();
    loop {
        get(&format!("{base}/after-rotate")).await;
        let fresh = std::fs::read_to_string(&log).unwrap_or_default();
        if fresh.contains("\"/after-rotate\"") {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "nothing logged in {fresh:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    let first: serde_json::Value = serde_json::from_str(old.lines().next().unwrap()).unwrap();
    assert_eq!(first["status"], 200);
    assert!(
        first["upstream"].is_null(),
        "fixed responses have no upstream"
    );
    assert!(old.contains("\"upstream\":\"http://127.0.0.1:"), "{old}");

    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exited");
    assert!(status.success());
    stderr.wait_for("drained; exiting").await;
    let stderr = stderr.text();
    assert!(stderr.contains("SIGHUP: reloaded"), "{stderr}");
    assert!(stderr.contains("rejected, old config kept"), "{stderr}");
    assert!(
        stderr.contains("torii.toml:3:1: unknown field `workrs`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_then_exits_zero() {
    let origin = Origin::start().await;
    let dir = tempdir();
    let path = dir.join("torii.toml");
    let port = free_port();
    std::fs::write(&path, config(port, &origin, "x", Path::new("off"))).unwrap();
    let mut child = start(&path, port).await;
    let url = format!("http://127.0.0.1:{port}/slow?ms=2000");
    let slow = tokio::spawn(async move { get(&url).await });
    wait_until("the slow request reaches the origin", PATIENCE, || {
        origin.hits("/slow") == 1
    })
    .await;
    signal(&child, libc::SIGTERM);
    // Listeners close at once; the slow request still gets its answer.
    wait_until_async("torii stops accepting", PATIENCE, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await;
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"slow done"[..]));
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(exit.expect("exited").success());
}

#[test]
fn check_reports_file_line_col_and_exit_codes() {
    let dir = tempdir();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[upstreams.api]\nservers = [\"10.0.0.5\"]\n[[routes]]\nupstream = \"apii\"\n",
    )
    .unwrap();
    let out = Command::new(TORII)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = bad.display();
    assert!(
        stderr.contains(&format!(
            "{name}:4:12: routes[0].upstream: unknown upstream \"apii\"; hint: defined are api"
        )) || stderr.contains(&format!("{name}:2:")),
        "{stderr}"
    );

    let good = dir.join("good.toml");
    let mut f = std::fs::File::create(&good).unwrap();
    writeln!(
        f,
        "[upstreams.api]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"api\""
    )
    .unwrap();
    let out = Command::new(TORII)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok: 1 listener(s), 1 upstream group(s) with 1 server(s), 1 route(s)"),
        "{stdout}"
    );

    let missing = Command::new(TORII)
        .args(["check", "--config", "/nonexistent/torii.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/torii.toml")
    );
}

#[test]
fn shipped_examples_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(TORII)
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn proxy_flags_are_checked() {
    let out = Command::new(TORII)
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:1",
            "--to",
            "http://a:1/path",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to http://a:1/path"));
    let out = Command::new(TORII)
        .args(["proxy", "--listen", "nonsense", "--to", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(TORII)
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:1",
            "--to",
            "127.0.0.1:1",
            "--workers",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn tempdir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("torii-test-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn admin_token_guards_state_changes() {
    let origin = Origin::start().await;
    let dir = tempdir();
    let path = dir.join("torii.toml");
    let (port, admin) = (free_port(), free_port());
    let text = config(port, &origin, "x", Path::new("off"))
        .replace("admin = \"off\"", &format!("admin = \"127.0.0.1:{admin}\""));
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(TORII)
        .args(["run", "--config"])
        .arg(&path)
        .env("TORII_ADMIN_TOKEN", "s3cret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", admin))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "torii did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = format!("http://127.0.0.1:{admin}");
    assert_eq!(
        get(&format!("{base}/stats.json")).await.0,
        200,
        "reads need no token on loopback"
    );
    let purge = |token: Option<&'static str>| {
        let base = base.clone();
        async move {
            let mut req = http::Request::post(format!("{base}/purge"));
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let req = req
                .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                    bytes::Bytes::from(r#"{"tag":"t"}"#),
                )))
                .unwrap();
            client().request(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(purge(None).await, 401);
    assert_eq!(purge(Some("wrong")).await, 401);
    assert_eq!(purge(Some("s3cret")).await, 200);
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(10))
        .expect("exited")
        .success());

    // A non-loopback admin listener without a token is refused at start.
    let exposed = dir.join("exposed.toml");
    let text = config(free_port(), &origin, "x", Path::new("off")).replace(
        "admin = \"off\"",
        &format!("admin = \"0.0.0.0:{}\"", free_port()),
    );
    std::fs::write(&exposed, text).unwrap();
    let out = Command::new(TORII)
        .args(["run", "--config"])
        .arg(&exposed)
        .env_remove("TORII_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set TORII_ADMIN_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
