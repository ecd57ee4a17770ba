//! The process's life with the real binary: the SIGUSR2 binary upgrade (under load, with a
//! broken config, twice in a row), one owner per address, `server.pid_file`, and systemd's
//! notify protocol on a real unix datagram socket.
//!
//! Every process here is started by the test (or by one it started, for an upgrade) and is
//! stopped by its PID, taken from `Child` or from the pid file.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::*;

const TORII: &str = env!("CARGO_BIN_EXE_torii");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `sig` to a process this test started (directly, or through its upgrade).
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Whether `pid` runs (a zombie, exited but not yet reaped, does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The running processes whose command line names `config`: the ones this test started,
/// upgrades included (each test has its own config path).
fn processes_of(config: &Path) -> Vec<u32> {
    let needle = config.to_str().unwrap().as_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) && running(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("the process exits", PATIENCE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    status.unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    pid_file: PathBuf,
    port: u16,
    admin: u16,
}

impl Setup {
    fn new(origin: &Origin) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("torii.toml");
        let pid_file = dir.path().join("torii.pid");
        let setup = Setup {
            config,
            pid_file,
            port: free_port(),
            admin: free_port(),
            dir,
        };
        std::fs::write(&setup.config, setup.toml(origin)).unwrap();
        setup
    }

    fn toml(&self, origin: &Origin) -> String {
        format!(
            r#"
[server]
listen = ["127.0.0.1:{}"]
admin = "127.0.0.1:{}"
workers = 2
drain_timeout = "10s"
pid_file = "{}"
[log]
access = "off"
[upstreams.app]
servers = ["{}"]
[[routes]]
upstream = "app"
"#,
            self.port,
            self.admin,
            self.pid_file.display(),
            origin.url()
        )
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts `torii run` and waits until its pid file names it (every listener accepts).
    async fn start(&self, env: &[(&str, &str)]) -> (Child, Stderr) {
        self.start_as(Path::new(TORII), env).await
    }

    /// `start`, with the binary at `exe` (which an upgrade starts again).
    async fn start_as(&self, exe: &Path, env: &[(&str, &str)]) -> (Child, Stderr) {
        let mut child = Command::new(exe)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("TORII_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Stderr::collect(&mut child);
        let pid = child.id();
        wait_until("the pid file names the new torii", PATIENCE, || {
            read_pid(&self.pid_file) == Some(pid)
        })
        .await;
        (child, stderr)
    }

    /// Waits until the pid file names another process than `old`; returns it.
    async fn wait_new_pid(&self, old: u32) -> u32 {
        let mut new = None;
        wait_until("the pid file names the upgraded process", PATIENCE, || {
            new = read_pid(&self.pid_file).filter(|p| *p != old);
            new.is_some()
        })
        .await;
        new.unwrap()
    }

    /// Stops the process the pid file names (one this test started through an upgrade),
    /// and waits until it is gone and has removed its pid file.
    async fn stop(&self, pid: u32) {
        signal(pid, "TERM");
        wait_until("the upgraded process exits", PATIENCE, || !running(pid)).await;
        assert!(!self.pid_file.exists(), "a clean exit removes the pid file");
        let _ = &self.dir;
    }
}

/// A test that fails midway leaves nothing running: every process whose command line
/// names this test's config (only those it started) is killed.
impl Drop for Setup {
    fn drop(&mut self) {
        for pid in processes_of(&self.config) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// What the load clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    /// Requests that got no good answer: the number the upgrade must keep at 0.
    lost: AtomicUsize,
    /// Idempotent requests sent again on a new connection after a reused keep-alive
    /// connection closed before any answer (RFC 9112 §9.3.1; what browsers do).
    retried: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(port: u16) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(sender: &mut Sender, port: u16, close: bool) -> Result<(), hyper::Error> {
    let mut req = http::Request::get("/load").header("host", format!("127.0.0.1:{port}"));
    if close {
        req = req.header("connection", "close");
    }
    sender.ready().await?;
    let resp = sender.send_request(req.body(Empty::new()).unwrap()).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    Ok(())
}

/// Whether a keep-alive connection was closed under the request before any answer: the
/// server closed it as idle while the request was on its way (reset, if the request's bytes
/// were already there). A client may send an idempotent request again (RFC 9112 §9.3.1).
fn closed_before_answer(e: &hyper::Error) -> bool {
    let reset = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        });
    e.is_incomplete_message() || e.is_canceled() || e.is_closed() || reset
}

/// Sends GETs until `stop` (at most `max`): on one keep-alive connection, opened again
/// when the server closes it, or each on a new connection.
async fn load(port: u16, keep_alive: bool, stop: Arc<AtomicBool>, tally: Arc<Tally>, max: usize) {
    let mut conn: Option<Sender> = None;
    for _ in 0..max {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let reused = conn.as_ref().is_some_and(|c| !c.is_closed());
        let mut sender = match conn.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => match connect(port).await {
                Ok(c) => c,
                Err(e) => {
                    tally.lost.fetch_add(1, Ordering::Relaxed);
                    tally.errors.lock().unwrap().push(e);
                    continue;
                }
            },
        };
        let mut result = send(&mut sender, port, !keep_alive).await;
        if let Err(e) = &result {
            if reused && closed_before_answer(e) {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                result = match connect(port).await {
                    Ok(mut fresh) => {
                        let r = send(&mut fresh, port, !keep_alive).await;
                        sender = fresh;
                        r
                    }
                    Err(e) => {
                        tally.errors.lock().unwrap().push(e);
                        tally.lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
            }
        }
        match result {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if keep_alive {
                    conn = Some(sender);
                }
            }
            Err(e) => {
                tally.lost.fetch_add(1, Ordering::Relaxed);
                tally
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("reused={reused}: {e:?}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_under_load_loses_no_request() {
    let origin = Origin::start().await;
    let setup = Setup::new(&origin);
    let (mut old, stderr) = setup.start(&[]).await;
    let old_pid = old.id();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for keep_alive in [true, true, true, false, false, false] {
        clients.push(tokio::spawn(load(
            setup.port,
            keep_alive,
            stop.clone(),
            tally.clone(),
            100_000,
        )));
    }
    wait_until("the old process serves the load", PATIENCE, || {
        tally.ok.load(Ordering::Relaxed) >= 1000
    })
    .await;

    signal(old_pid, "USR2");
    let new_pid = setup.wait_new_pid(old_pid).await;
    let status = wait_exit(&mut old).await;
    assert_eq!(status.code(), Some(0), "{}", stderr.text());
    let at_exit = tally.ok.load(Ordering::Relaxed);
    wait_until("the new process serves the load", PATIENCE, || {
        tally.ok.load(Ordering::Relaxed) >= at_exit + 1000
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(tally.lost.load(Ordering::Relaxed), 0, "{errors:?}");
    eprintln!(
        "{} requests answered, {} sent again after a keep-alive close",
        tally.ok.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed)
    );
    let log = stderr.text();
    assert!(
        log.contains(&format!(
            "upgrade: new process {new_pid} is ready; draining"
        )),
        "{log}"
    );
    assert!(log.contains("socket(s) taken over"), "{log}");
    assert_eq!(processes_of(&setup.config), vec![new_pid]);
    // The new process serves, the admin listener too (handed over).
    assert_eq!(get(&setup.url("/after")).await.0, 200);
    let healthz = get(&format!("http://127.0.0.1:{}/healthz", setup.admin)).await;
    assert_eq!(healthz.0, 200);
    setup.stop(new_pid).await;
}

#[tokio::test]
async fn upgrade_to_a_broken_config_keeps_the_old_process_serving() {
    let origin = Origin::start().await;
    let setup = Setup::new(&origin);
    let (mut old, stderr) = setup.start(&[]).await;
    let old_pid = old.id();

    std::fs::write(
        &setup.config,
        format!("{}\n[limits]\nmax_headrs = 3\n", setup.toml(&origin)),
    )
    .unwrap();
    signal(old_pid, "USR2");
    stderr.wait_for("upgrade failed: new process").await;
    let log = stderr.text();
    assert!(
        log.contains("exited with status 1 before it was ready"),
        "{log}"
    );
    // The new process's own reason, in the same log.
    assert!(log.contains("unknown field `max_headrs`"), "{log}");
    assert!(log.contains("still serving"), "{log}");
    assert_eq!(get(&setup.url("/still")).await.0, 200);
    assert_eq!(read_pid(&setup.pid_file), Some(old_pid));
    assert_eq!(processes_of(&setup.config), vec![old_pid]);

    // Fixed, the next upgrade goes through.
    std::fs::write(&setup.config, setup.toml(&origin)).unwrap();
    signal(old_pid, "USR2");
    let new_pid = setup.wait_new_pid(old_pid).await;
    assert_eq!(wait_exit(&mut old).await.code(), Some(0));
    assert_eq!(get(&setup.url("/fixed")).await.0, 200);
    assert_eq!(processes_of(&setup.config), vec![new_pid]);
    setup.stop(new_pid).await;
}

#[tokio::test]
async fn two_upgrades_in_a_row_start_one_new_process() {
    let origin = Origin::start().await;
    let setup = Setup::new(&origin);
    let (mut old, stderr) = setup.start(&[]).await;
    let old_pid = old.id();

    // A slow request in flight on the old process: it must finish, and it keeps the old
    // process draining (so alive to receive the second signal) until it has.
    let slow_url = setup.url("/slow?ms=2000");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    wait_until("the slow request reaches the origin", PATIENCE, || {
        origin.hits("/slow") == 1
    })
    .await;

    signal(old_pid, "USR2");
    stderr
        .wait_for("SIGUSR2: upgrade: started new process")
        .await;
    signal(old_pid, "USR2");
    stderr.wait_for("SIGUSR2 refused").await;
    let new_pid = setup.wait_new_pid(old_pid).await;
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"slow done"[..]));
    assert_eq!(wait_exit(&mut old).await.code(), Some(0));

    let log = stderr.text();
    assert_eq!(
        log.matches("SIGUSR2: upgrade: started new process").count(),
        1,
        "{log}"
    );
    assert_eq!(processes_of(&setup.config), vec![new_pid]);
    assert_eq!(read_pid(&setup.pid_file), Some(new_pid));

    // One owner: a second torii on the address is refused, naming the new process.
    let out = Command::new(TORII)
        .args(["proxy", "--listen", &format!("127.0.0.1:{}", setup.port)])
        .args(["--to", &origin.url()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("address in use by PID {new_pid} (torii)")),
        "{err}"
    );
    setup.stop(new_pid).await;
}

#[tokio::test]
async fn a_second_instance_on_a_taken_port_exits_1_naming_the_owner() {
    let origin = Origin::start().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut first = Command::new(TORII)
        .args(["proxy", "--listen", &listen, "--to", &origin.url()])
        .args(["--workers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_async("the first torii accepts", PATIENCE, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;

    let out = Command::new(TORII)
        .args(["proxy", "--listen", &listen, "--to", &origin.url()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{listen}: address in use by PID {} (torii)",
            first.id()
        )),
        "{err}"
    );
    // The first one still has every connection: the kernel did not split the port.
    for _ in 0..20 {
        assert_eq!(get(&format!("http://{listen}/x")).await.0, 200);
    }
    signal(first.id(), "TERM");
    assert!(wait_exit(&mut first).await.success());
}

/// The notifications torii sent to our `NOTIFY_SOCKET`, in order.
#[derive(Clone, Default)]
struct Notes(Arc<std::sync::Mutex<Vec<String>>>);

impl Notes {
    fn listen(path: &Path) -> Notes {
        let socket = tokio::net::UnixDatagram::bind(path).unwrap();
        let notes = Notes::default();
        let sink = notes.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                sink.0
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        notes
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, what: &str) -> usize {
        self.all().iter().filter(|n| n.contains(what)).count()
    }

    async fn wait(&self, what: &str, at_least: usize) {
        wait_until(
            &format!("{at_least} notification(s) {what:?}"),
            PATIENCE,
            || self.count(what) >= at_least,
        )
        .await;
    }
}

#[tokio::test]
async fn sd_notify_ready_reloading_stopping_watchdog_and_upgrade() {
    let origin = Origin::start().await;
    let setup = Setup::new(&origin);
    let socket = setup.dir.path().join("notify.sock");
    let notes = Notes::listen(&socket);
    let env = [
        ("NOTIFY_SOCKET", socket.to_str().unwrap()),
        // A ping every 50 ms.
        ("WATCHDOG_USEC", "100000"),
    ];
    let (mut old, _stderr) = setup.start(&env).await;
    let old_pid = old.id();
    notes.wait("READY=1", 1).await;
    assert!(notes.all()[0].contains("READY=1"), "{:?}", notes.all());
    notes.wait("WATCHDOG=1", 2).await;

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 again.
    signal(old_pid, "HUP");
    notes.wait("READY=1", 2).await;
    let all = notes.all();
    let reloading = all
        .iter()
        .position(|n| n.contains("RELOADING=1"))
        .expect("RELOADING=1");
    assert!(all[reloading].contains("MONOTONIC_USEC="), "{all:?}");
    assert!(
        all[reloading..].iter().any(|n| n.contains("READY=1")),
        "{all:?}"
    );

    // An upgrade: the new process names itself the main PID; nobody says STOPPING.
    signal(old_pid, "USR2");
    let new_pid = setup.wait_new_pid(old_pid).await;
    notes.wait(&format!("MAINPID={new_pid}"), 1).await;
    assert_eq!(wait_exit(&mut old).await.code(), Some(0));
    assert_eq!(notes.count("STOPPING=1"), 0, "{:?}", notes.all());
    let pings = notes.count("WATCHDOG=1");
    notes.wait("WATCHDOG=1", pings + 2).await;

    // SIGTERM: STOPPING=1.
    signal(new_pid, "TERM");
    notes.wait("STOPPING=1", 1).await;
    wait_until("the new process exits", PATIENCE, || !running(new_pid)).await;
}

#[tokio::test]
async fn sd_notify_to_an_abstract_socket() {
    let origin = Origin::start().await;
    let setup = Setup::new(&origin);
    let name = format!("torii-test-{}-{}", std::process::id(), setup.port);
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap();
    let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    std_socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let (mut child, _stderr) = setup.start(&[("NOTIFY_SOCKET", &format!("@{name}"))]).await;
    let mut buf = [0u8; 512];
    let n =
        tokio::task::spawn_blocking(move || std_socket.recv(&mut buf).map(|n| buf[..n].to_vec()))
            .await
            .unwrap()
            .expect("a notification within PATIENCE");
    assert!(String::from_utf8_lossy(&n).contains("READY=1"));
    signal(child.id(), "TERM");
    assert!(wait_exit(&mut child).await.success());
    assert!(!setup.pid_file.exists());
}

#[tokio::test]
async fn a_new_binary_that_fails_or_hangs_leaves_the_old_one_serving() {
    let origin = Origin::start().await;
    let setup = Setup::new(&origin);
    let toml = setup.toml(&origin).replace(
        "drain_timeout = \"10s\"",
        "drain_timeout = \"10s\"\nupgrade_timeout = \"1s\"",
    );
    std::fs::write(&setup.config, &toml).unwrap();
    // Started through a symlink, as a release switch would: the upgrade starts whatever
    // the path names then.
    let exe = setup.dir.path().join("torii");
    std::os::unix::fs::symlink(TORII, &exe).unwrap();
    let (mut old, stderr) = setup.start_as(&exe, &[]).await;
    let old_pid = old.id();
    let replace = |script: &str| {
        use std::os::unix::fs::PermissionsExt;
        let next = setup.dir.path().join("torii.next");
        std::fs::write(&next, script).unwrap();
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&next, &exe).unwrap();
    };

    // A binary that dies at once.
    replace("#!/bin/sh\necho 'broken build' >&2\nexit 3\n");
    signal(old_pid, "USR2");
    stderr
        .wait_for("exited with status 3 before it was ready")
        .await;
    assert!(stderr.text().contains("broken build"));
    assert_eq!(get(&setup.url("/a")).await.0, 200);

    // A binary that never gets ready: killed after server.upgrade_timeout, and reaped.
    replace("#!/bin/sh\nexec sleep 60\n");
    signal(old_pid, "USR2");
    stderr.wait_for("was not ready within 1s; stopped it").await;
    let log = stderr.text();
    let hung: u32 = log
        .rsplit("started new process ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .expect("the hung process's PID in the log");
    assert!(!running(hung), "the hung new process is gone");
    assert!(
        !std::path::Path::new(&format!("/proc/{hung}")).exists(),
        "and reaped"
    );
    assert_eq!(get(&setup.url("/b")).await.0, 200);
    assert_eq!(read_pid(&setup.pid_file), Some(old_pid));
    assert_eq!(processes_of(&setup.config), vec![old_pid]);

    // The real binary again: the upgrade goes through.
    std::fs::remove_file(&exe).unwrap();
    std::os::unix::fs::symlink(TORII, &exe).unwrap();
    signal(old_pid, "USR2");
    let new_pid = setup.wait_new_pid(old_pid).await;
    assert_eq!(wait_exit(&mut old).await.code(), Some(0));
    assert_eq!(get(&setup.url("/c")).await.0, 200);
    setup.stop(new_pid).await;
}

#[tokio::test]
async fn sigterm_stops_accepting_at_once_while_in_flight_requests_finish() {
    let origin = Origin::start().await;
    let setup = Setup::new(&origin);
    let (mut child, _stderr) = setup.start(&[]).await;
    let slow_url = setup.url("/slow?ms=5000");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    wait_until("the slow request reaches the origin", PATIENCE, || {
        origin.hits("/slow") == 1
    })
    .await;
    signal(child.id(), "TERM");
    // Refused while the slow request is still in flight: no socket is kept open for an
    // upgrade that can no longer happen (the kernel would complete handshakes nobody
    // accepts).
    let port = setup.port;
    wait_until_async("torii refuses new connections", PATIENCE, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await;
    assert!(!slow.is_finished(), "refused only once the drain was over");
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"slow done"[..]));
    assert!(wait_exit(&mut child).await.success());
    assert!(!setup.pid_file.exists());
}
