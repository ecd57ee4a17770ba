//! `torii top`, the real binary: in a tmux pseudo-terminal it shows the figures of a running
//! torii and quits with exit code 0 on `q`; it fails clearly when the admin listener is down.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use support::*;

const TORII: &str = env!("CARGO_BIN_EXE_torii");

/// A tmux server of our own (its own socket, `-L`), so the test touches no other session.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        let found = std::process::Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "tmux is missing: run .ci/run (as root it installs the tmux package) \
             or apt-get install tmux"
        );
        Tmux {
            socket: format!("torii-top-test-{}", std::process::id()),
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .await
            .expect("run tmux")
    }

    async fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]).await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends the tmux server we started on our own socket (and what runs in it).
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_figures_and_quits_on_q() {
    let origin = Origin::start().await;
    origin.set(
        "/pub",
        Reply::new("public").header("cache-control", "max-age=60"),
    );
    let torii = Torii::to(&origin, "").await;
    // 1 miss + 6 hits, and 3 requests to the default origin path.
    for _ in 0..7 {
        get(&torii.url("/pub")).await;
    }
    for _ in 0..3 {
        get(&torii.url("/other")).await;
    }

    let tmux = Tmux::new();
    let dir = tempfile::tempdir().unwrap();
    let rc: PathBuf = dir.path().join("rc");
    let command = format!(
        "{TORII} top --admin {}; echo $? > {}",
        torii.admin,
        rc.display()
    );
    let started = tmux
        .run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "120",
            "-y",
            "40",
            &command,
        ])
        .await;
    assert!(
        started.status.success(),
        "tmux new-session: {}",
        String::from_utf8_lossy(&started.stderr)
    );

    // One refresh: the title, the route row with its request count, the upstream server.
    let route = "*/";
    let server = format!("http://{}", origin.addr);
    let mut screen = String::new();
    for _ in 0..100 {
        screen = tmux.screen().await;
        if screen.contains(&server) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(screen.contains("torii top"), "{screen}");
    assert!(
        screen.contains(&format!("{} ", torii.admin)),
        "title names the admin address:\n{screen}"
    );
    let row = screen
        .lines()
        .find(|l| l.starts_with(route))
        .unwrap_or_else(|| panic!("no route row:\n{screen}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], [route, "proxy+cache", "app", "10"], "{row}");
    let upstream = screen
        .lines()
        .find(|l| l.contains(&server))
        .unwrap_or_else(|| panic!("no upstream row:\n{screen}"));
    assert!(upstream.starts_with("app "), "{upstream}");
    assert!(upstream.contains(" up "), "{upstream}");
    assert!(screen.contains("requests 10 "), "total requests:\n{screen}");
    assert!(screen.contains("hits 6  misses 4"), "{screen}");
    assert!(screen.contains("p99.9"), "{screen}");

    // `q` quits with exit code 0, within a bounded time.
    let sent = tmux.run(&["send-keys", "-t", "top", "q"]).await;
    assert!(sent.status.success());
    let mut code = None;
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&rc) {
            if !text.trim().is_empty() {
                code = Some(text.trim().to_string());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code.as_deref(),
        Some("0"),
        "torii top did not exit 0 within 10 s of q; screen:\n{}",
        tmux.screen().await
    );
    torii.stop().await;
}

#[tokio::test]
async fn top_without_a_terminal_prints_one_snapshot() {
    let origin = Origin::start().await;
    let torii = Torii::to(&origin, "").await;
    get(&torii.url("/x")).await;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(TORII)
            .args(["top", "--admin", &torii.admin.to_string()])
            .output(),
    )
    .await
    .expect("torii top did not finish")
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(&format!("http://{}", origin.addr)), "{text}");
    assert!(text.contains("requests 1 "), "{text}");
    torii.stop().await;
}

#[tokio::test]
async fn top_fails_clearly_when_the_admin_listener_is_down() {
    // A port that was free a moment ago and has no listener now.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(TORII)
            .args(["top", "--admin", &closed.to_string()])
            .output(),
    )
    .await
    .expect("torii top did not give up")
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "torii top: cannot reach the admin listener at {closed}"
        )),
        "{err}"
    );
}
