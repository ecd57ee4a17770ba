//! Deployment features of issue 20, through the real binary: `${VAR}` and `include` in
//! config files (errors at the included file's line), `torii check --print`, shell
//! completions, the man page, and torii's own log format (plain text without colours when
//! stderr is a file; one JSON object per line).

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::*;

const TORII: &str = env!("CARGO_BIN_EXE_torii");

/// A directory with a main config and a conf.d.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> &Dir {
        std::fs::write(self.0.path().join(name), text).unwrap();
        self
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// `torii check` (with `args`) on `main.toml`, run from the directory, so messages name
    /// files relative to it; `vars` are set, and nothing else of the test's environment
    /// that a config could name.
    fn check(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(TORII);
        cmd.current_dir(self.path())
            .args(["check", "--config", "main.toml"])
            .args(args)
            .env_remove("REDIS_PASSWORD")
            .env_remove("API_ADDR")
            .env_remove("PREFIX");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const MAIN: &str = r#"include = ["conf.d/*.toml"]

[server]
listen = ["127.0.0.1:${PORT:-18080}"]
admin = "off"

[cache.shared]
redis = "redis://:${REDIS_PASSWORD}@127.0.0.1:6379"

[upstreams.app]
servers = ["127.0.0.1:3000"]

[[routes]]
path = "/"
upstream = "app"
"#;

const API: &str = r#"[upstreams.api]
servers = ["${API_ADDR:-127.0.0.1:3001}"]

[[routes]]
path = "/${PREFIX:-api}"
upstream = "api"
"#;

#[test]
fn issue_20_include_merges_and_print_shows_the_effective_config_redacted() {
    let dir = Dir::new();
    dir.write("main.toml", MAIN)
        .write("conf.d/20-api.toml", API)
        .write(
            "conf.d/10-listener.toml",
            "[[listeners]]\naddr = \"127.0.0.1:18081\"\n",
        )
        .write("conf.d/README.txt", "not a config: the glob skips it");
    let out = dir.check(
        &["--print"],
        &[("REDIS_PASSWORD", "hunter2"), ("PREFIX", "v2")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("ok: 2 listener(s), 2 upstream group(s) with 2 server(s), 2 route(s)"),
        "{}",
        stderr(&out)
    );
    let printed = stdout(&out);
    assert!(
        !printed.contains("hunter2"),
        "the password is redacted:\n{printed}"
    );
    assert!(printed.contains("redis://:***@127.0.0.1:6379"), "{printed}");
    assert!(
        !printed.contains("include"),
        "includes are merged in:\n{printed}"
    );
    let effective: toml::Table = toml::from_str(&printed).unwrap();
    assert_eq!(
        effective["server"]["listen"][0].as_str(),
        Some("127.0.0.1:18080")
    );
    assert_eq!(
        effective["upstreams"]["api"]["servers"][0].as_str(),
        Some("127.0.0.1:3001")
    );
    let paths: Vec<&str> = effective["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/", "/v2"],
        "the main file's routes, then the included ones"
    );
    assert_eq!(
        effective["listeners"][0]["addr"].as_str(),
        Some("127.0.0.1:18081")
    );

    // The printed config checks again on its own (with the password back).
    let again = printed.replace("***", "pw");
    dir.write("main.toml", &again);
    let out = dir.check(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("main.toml: ok:"), "{}", stdout(&out));
}

#[test]
fn issue_20_errors_point_at_the_included_file() {
    let dir = Dir::new();
    dir.write("main.toml", MAIN)
        .write("conf.d/20-api.toml", API)
        // Line 4: an unknown upstream; line 6: an unset variable; line 8: a process section.
        .write(
            "conf.d/30-bad.toml",
            "# routes of the shop\n\n[[routes]]\nupstream = \"shop\"\n[[routes]]\npath = \"/${NOPE}\"\nupstream = \"app\"\n[limits]\nmax_body = \"1MiB\"\n",
        );
    let out = dir.check(&[], &[("REDIS_PASSWORD", "x")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "conf.d/30-bad.toml:6:8: routes[1].path: environment variable NOPE is not set; hint:"
        ),
        "{err}"
    );
    assert!(
        err.contains("conf.d/30-bad.toml:8:1: limits: an included file cannot set `limits`; hint:"),
        "{err}"
    );

    // Fixed, the validation error of an included route names that file and line.
    dir.write(
        "conf.d/30-bad.toml",
        "# routes of the shop\n\n[[routes]]\nupstream = \"shop\"\n",
    );
    let out = dir.check(&[], &[("REDIS_PASSWORD", "x")]);
    let err = stderr(&out);
    assert!(
        err.starts_with("conf.d/30-bad.toml:4:12: routes[2].upstream: unknown upstream \"shop\""),
        "{err}"
    );
}

#[test]
fn issue_20_unset_variable_in_the_main_file() {
    let dir = Dir::new();
    dir.write("main.toml", MAIN);
    let out = dir.check(&[], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("main.toml:8:9: cache.shared.redis: environment variable REDIS_PASSWORD is not set; hint: set REDIS_PASSWORD, or give a default: ${REDIS_PASSWORD:-value}"),
        "{err}"
    );
}

#[test]
fn issue_20_names_and_addresses_defined_twice_cycles_and_missing_files() {
    let dir = Dir::new();
    dir.write(
        "main.toml",
        &MAIN.replace("conf.d/*.toml", "conf.d/*.toml\", \"more.toml"),
    )
    .write(
        "conf.d/a.toml",
        "\n[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n",
    )
    .write(
        "conf.d/b.toml",
        "[[listeners]]\naddr = \"127.0.0.1:18080\"\n",
    )
    .write(
        "more.toml",
        "include = [\"main.toml\", \"missing.toml\", \"none/*.toml\"]\n",
    );
    let out = dir.check(&[], &[("REDIS_PASSWORD", "x")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("conf.d/a.toml:2:12: upstreams.app: upstream \"app\" is defined twice: here and at main.toml:10:12"),
        "{err}"
    );
    assert!(
        err.contains("conf.d/b.toml:2:8: listeners: listener address 127.0.0.1:18080 is defined twice: here and at main.toml:4:11"),
        "{err}"
    );
    assert!(
        err.contains("more.toml:1:12: include: include cycle: "),
        "{err}"
    );
    assert!(
        err.contains("more.toml:1:25: include: cannot read "),
        "{err}"
    );
    assert!(
        !err.contains("none/"),
        "a glob matching nothing is fine: {err}"
    );
}

#[test]
fn issue_20_completions_and_man_page() {
    let bash = Command::new(TORII)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    let bash = stdout(&bash);
    assert!(bash.contains("_torii()"), "defines the completion function");
    assert!(bash.contains("complete -F _torii"), "and registers it");
    for shell in ["zsh", "fish"] {
        let out = Command::new(TORII)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            stdout(&out).contains("check"),
            "{shell} completes the subcommands"
        );
    }
    let bad = Command::new(TORII)
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let man = Command::new(TORII).arg("man").output().unwrap();
    assert!(man.status.success());
    let man = stdout(&man);
    assert!(
        man.starts_with(".ie") || man.contains("\n.TH torii 1"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains(".TH torii 1"), "a section-1 page");
    assert!(man.contains("completions"), "lists the subcommands");
}

/// Runs `torii run` with stderr to a file until it has logged its listener, then kills it
/// (by its PID); returns what it wrote to stderr.
async fn log_of(config: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torii.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(TORII);
    cmd.args(["run", "--config"])
        .arg(&path)
        .env("TORII_LOG", "info")
        .env_remove("TORII_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    wait_until("torii logged its listener", PATIENCE, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on"))
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::read_to_string(&log).unwrap()
}

fn run_config(extra_server: &str) -> String {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin = \"off\"\nworkers = 1\n{extra_server}\n\
         [[routes]]\npath = \"/\"\nrespond = {{ status = 200, body = \"ok\" }}\n"
    )
}

#[tokio::test]
async fn issue_20_text_log_to_a_file_has_no_colours() {
    let text = log_of(&run_config(""), &[]).await;
    assert!(text.contains("listening on http://"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no ESC bytes when stderr is not a terminal:\n{text:?}"
    );
}

#[tokio::test]
async fn issue_20_json_log_from_the_environment_and_from_the_config() {
    for (extra, env) in [
        ("", &[("TORII_LOG_FORMAT", "json")][..]),
        ("log_format = \"json\"", &[][..]),
        // The environment wins over the file.
        ("log_format = \"text\"", &[("TORII_LOG_FORMAT", "json")][..]),
    ] {
        let text = log_of(&run_config(extra), env).await;
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines.is_empty());
        for line in &lines {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            assert!(
                v["level"].is_string() && v["fields"]["message"].is_string(),
                "{line}"
            );
        }
        assert!(text.contains("listening on http://"));
        assert!(!text.contains('\x1b'));
    }
}

/// The shipped examples for this feature check as they are, with no variable set.
#[test]
fn issue_20_examples_check() {
    for example in ["examples/env.toml", "examples/include.toml"] {
        let out = Command::new(TORII)
            .args(["check", "--config", example])
            .env_remove("TORII_UPSTREAM")
            .env_remove("TORII_LISTEN")
            .output()
            .unwrap();
        assert!(out.status.success(), "{example}: {}", stderr(&out));
    }
}

/// GET `url`: the body, or `None` when nothing answers or the status is not 200.
async fn body_of(url: &str) -> Option<String> {
    let resp = client().get(url.parse().unwrap()).await.ok()?;
    if resp.status() != http::StatusCode::OK {
        return None;
    }
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn issue_20_sighup_reads_the_included_files_again() {
    let dir = Dir::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    dir.write(
        "main.toml",
        &format!(
            "include = [\"conf.d/*.toml\"]\n[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin = \"off\"\nworkers = 1\n\
             [[routes]]\npath = \"/\"\nrespond = {{ status = 200, body = \"main\" }}\n"
        ),
    );
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(TORII)
        .current_dir(dir.path())
        .args(["run", "--config", "main.toml"])
        .env("TORII_LOG", "info")
        .env_remove("NOPE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_async("torii answers", PATIENCE, || async {
        body_of(&format!("{base}/")).await.as_deref() == Some("main")
    })
    .await;
    assert_eq!(
        body_of(&format!("{base}/extra")).await.as_deref(),
        Some("main")
    );

    let hup = |child: &std::process::Child| {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    dir.write(
        "conf.d/extra.toml",
        "[[routes]]\npath = \"/extra\"\nrespond = { status = 200, body = \"${EXTRA_BODY:-extra}\" }\n",
    );
    hup(&child);
    wait_until_async(
        "the included route is served after SIGHUP",
        PATIENCE,
        || async { body_of(&format!("{base}/extra")).await.as_deref() == Some("extra") },
    )
    .await;

    // A broken included file is refused; the running config keeps serving.
    dir.write(
        "conf.d/extra.toml",
        "[[routes]]\npath = \"/extra\"\nupstream = \"${NOPE}\"\n",
    );
    hup(&child);
    wait_until("the reload was refused, with the included file's line", PATIENCE, || {
        std::fs::read_to_string(&log).is_ok_and(|t| {
            t.contains("conf.d/extra.toml:3:12: routes[0].upstream: environment variable NOPE is not set")
        })
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            body_of(&format!("{base}/extra")).await.as_deref(),
            Some("extra")
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
