//! Per-route auth (issue 19): Basic auth against a real htpasswd file (bcrypt and
//! argon2id), its lockout, reload and the cache; forward auth to a real in-process auth
//! service that counts its requests; `torii check` refusing weak files and bad references.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use support::*;

const TORII: &str = env!("CARGO_BIN_EXE_torii");

fn bcrypt(password: &str) -> String {
    // Cost 4: the lowest, to keep the test fast; torii verifies any cost the same way.
    bcrypt::hash_with_salt(password, 4, rand::random())
        .unwrap()
        .to_string()
}

fn argon2id(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).unwrap();
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// GET `url` with `headers`; status, headers and the whole body.
async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    send("GET", url, headers).await
}

async fn status(url: &str, headers: &[(&str, &str)]) -> StatusCode {
    get(url, headers).await.0
}

/// A directory of this test's own, removed when dropped.
fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// torii with routes `/` (basic, realm "staff") and `/keep/` (basic,
/// `forward_authorization = true`) to `origin`, both on the htpasswd file `users`; `extra`
/// goes after `[server]`.
fn basic_config(users: &Path, extra: &str) -> String {
    let users = users.display();
    format!(
        r#"[server]
admin = "127.0.0.1:0"
[log]
access = "off"
{extra}
[upstreams.app]
servers = ["{{origin}}"]
[[routes]]
path = "/keep/"
upstream = "app"
auth = {{ basic = {{ realm = "staff", users_file = "{users}", forward_authorization = true }} }}
[[routes]]
upstream = "app"
auth = {{ basic = {{ realm = "staff", users_file = "{users}" }} }}
"#
    )
}

#[tokio::test]
async fn basic_auth_takes_bcrypt_and_argon2id_and_refuses_the_rest() {
    let origin = Origin::start().await;
    origin.set("/p", Reply::new("page"));
    origin.set("/keep/p", Reply::new("kept"));
    let d = dir();
    let users = write(
        d.path(),
        "htpasswd",
        &format!(
            "# staff\nann:{}\nbob:{}\n",
            bcrypt("ann-pw"),
            argon2id("bob-pw")
        ),
    );
    let torii = Torii::start(&basic_config(&users, ""), Some(&origin)).await;
    let url = torii.url("/p");

    // No credentials: the challenge, and nothing reaches the origin.
    let (s, h, _) = get(&url, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h["www-authenticate"],
        "Basic realm=\"staff\", charset=\"UTF-8\""
    );
    assert_eq!(origin.hits("/p"), 0);

    // Right user and password, bcrypt and argon2id; Authorization is not sent on.
    let (s, _, body) = get(&url, &[("authorization", &basic("ann", "ann-pw"))]).await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"page"[..]));
    assert_eq!(
        status(&url, &[("authorization", &basic("bob", "bob-pw"))]).await,
        StatusCode::OK
    );
    assert_eq!(origin.hits("/p"), 2);
    for (_, headers) in origin.requests("/p") {
        assert!(!headers.contains_key("authorization"), "{headers:?}");
    }
    // ... unless the route says so.
    let keep = torii.url("/keep/p");
    let ann = basic("ann", "ann-pw");
    assert_eq!(
        status(&keep, &[("authorization", &ann)]).await,
        StatusCode::OK
    );
    assert_eq!(
        origin.requests("/keep/p")[0].1["authorization"],
        ann.as_str()
    );

    // Wrong password, unknown user, garbage, a huge header: 401 each, nothing upstream.
    let huge = format!("Basic {}", "QUFB".repeat(2000));
    let bad = [
        basic("ann", "bob-pw"),
        basic("zed", "ann-pw"),
        "Basic !!!not-base64".to_string(),
        "Bearer abc".to_string(),
        "Basic".to_string(),
        huge,
    ];
    for value in &bad {
        let (s, h, _) = get(&url, &[("authorization", value)]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{value:.40}");
        assert!(h.contains_key("www-authenticate"));
    }
    // Two credentials, even right ones: which one a next hop reads is not ours to guess.
    let (s, _, _) = get(&url, &[("authorization", &ann), ("authorization", &ann)]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(origin.hits("/p"), 2);
    let metric = |kind: &str| format!("torii_auth_failures_total{{route=\"*/\",kind=\"{kind}\"}}");
    assert_eq!(torii.metric(&metric("missing")).await, Some(1.0));
    assert_eq!(
        torii.metric(&metric("invalid")).await,
        Some(bad.len() as f64 + 1.0)
    );
    torii.stop().await;
}

#[tokio::test]
async fn ten_failures_lock_the_address_out_with_429_but_not_a_verified_login() {
    let origin = Origin::start().await;
    let d = dir();
    let users = write(
        d.path(),
        "htpasswd",
        &format!("ann:{}\nbob:{}\n", bcrypt("ann-pw"), bcrypt("bob-pw")),
    );
    let torii = Torii::start(&basic_config(&users, ""), Some(&origin)).await;
    let url = torii.url("/p");
    let ann = basic("ann", "ann-pw");
    // Verified before the lockout: remembered, so it keeps working.
    assert_eq!(
        status(&url, &[("authorization", &ann)]).await,
        StatusCode::OK
    );
    for i in 0..10 {
        let wrong = basic("bob", &format!("guess-{i}"));
        assert_eq!(
            status(&url, &[("authorization", &wrong)]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // The eleventh attempt is refused without verifying, even with the right password.
    let (s, h, _) = get(&url, &[("authorization", &basic("bob", "bob-pw"))]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        status(&url, &[("authorization", &ann)]).await,
        StatusCode::OK
    );
    let locked = "torii_auth_failures_total{route=\"*/\",kind=\"locked-out\"}";
    assert_eq!(torii.metric(locked).await, Some(1.0));
    assert_eq!(origin.total_hits(), 2);
    torii.stop().await;
}

#[tokio::test]
async fn a_reload_reads_the_changed_users_file_and_a_weak_one_is_refused() {
    let origin = Origin::start().await;
    let d = dir();
    let users = write(d.path(), "htpasswd", &format!("ann:{}\n", bcrypt("old-pw")));
    let torii = Torii::start(&basic_config(&users, ""), Some(&origin)).await;
    let url = torii.url("/p");
    let old = basic("ann", "old-pw");
    let new = basic("ann", "new-pw");
    assert_eq!(
        status(&url, &[("authorization", &old)]).await,
        StatusCode::OK
    );

    // The process reloads on SIGHUP by loading and validating the config again, which
    // reads the users file; here the same, in process.
    let text = basic_config(&users, "").replace("{origin}", &origin.url());
    write(d.path(), "htpasswd", &format!("ann:{}\n", bcrypt("new-pw")));
    torii
        .server
        .reload(torii::config::load_str("test.toml", &text).unwrap())
        .unwrap();
    // The old password is not remembered across the reload.
    assert_eq!(
        status(&url, &[("authorization", &old)]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&url, &[("authorization", &new)]).await,
        StatusCode::OK
    );

    // A weak file is refused at load: the running config keeps serving.
    write(d.path(), "htpasswd", "ann:$apr1$xyz$abc\n");
    let refused = torii::config::load_str("test.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("htpasswd:1: user \"ann\": MD5-crypt"),
        "{refused}"
    );
    assert_eq!(
        status(&url, &[("authorization", &new)]).await,
        StatusCode::OK
    );
    torii.stop().await;
}

#[tokio::test]
async fn a_stored_response_is_never_served_to_a_request_that_did_not_pass() {
    let origin = Origin::start().await;
    origin.set(
        "/c",
        Reply::new("secret").header("cache-control", "max-age=300"),
    );
    let d = dir();
    let users = write(
        d.path(),
        "htpasswd",
        &format!("ann:{}\nbob:{}\n", bcrypt("ann-pw"), bcrypt("bob-pw")),
    );
    let config = basic_config(&users, "[cache]\nmemory = \"16MiB\"").replace(
        "upstream = \"app\"\nauth",
        "upstream = \"app\"\ncache = {}\nauth",
    );
    let torii = Torii::start(&config, Some(&origin)).await;
    let url = torii.url("/c");
    let ann = basic("ann", "ann-pw");
    let (s, h, _) = get(&url, &[("authorization", &ann)]).await;
    assert_eq!(
        (s, h["x-cache"].to_str().unwrap()),
        (StatusCode::OK, "MISS")
    );
    let (s, h, body) = get(&url, &[("authorization", &ann)]).await;
    assert_eq!((s, h["x-cache"].to_str().unwrap()), (StatusCode::OK, "HIT"));
    assert_eq!(&body[..], b"secret");
    // Another user, verified (not remembered) first: the stored answer is shared by
    // everyone who passed, as documented (the origin did not say `private`).
    let (s, h, _) = get(&url, &[("authorization", &basic("bob", "bob-pw"))]).await;
    assert_eq!((s, h["x-cache"].to_str().unwrap()), (StatusCode::OK, "HIT"));

    for headers in [
        vec![],
        vec![("authorization", "Basic YW5uOndyb25n")],
        vec![("authorization", "garbage")],
    ] {
        let (s, h, body) = get(&url, &headers).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(!h.contains_key("x-cache"));
        assert_ne!(&body[..], b"secret");
    }
    assert_eq!(origin.hits("/c"), 1);
    torii.stop().await;
}

/// An auth service: `Bearer good` passes as ann (2xx with X-User, X-Groups), `Bearer
/// login` is sent to log in (302 + Set-Cookie), `Bearer slow` takes 3 s, `Bearer teapot`
/// gets a 418, anything else a 401 with its own challenge and body.
async fn auth_service() -> Origin {
    let auth = Origin::named("auth").await;
    auth.set_fn("/verify", |req| {
        let creds = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match creds {
            "Bearer good" => Reply::new("")
                .status(204)
                .header("x-user", "ann")
                .header("x-groups", "staff")
                .header("x-other", "not copied"),
            "Bearer login" => Reply::new("go log in")
                .status(302)
                .header("location", "https://login.example/")
                .header("set-cookie", "next=/p"),
            "Bearer slow" => Reply::new("").status(200).delay(Duration::from_secs(3)),
            "Bearer teapot" => Reply::new("").status(418),
            _ => Reply::new("who are you")
                .status(401)
                .header("www-authenticate", "Bearer realm=\"svc\""),
        }
    });
    auth
}

fn forward_config(auth: &str, extra_route: &str) -> String {
    format!(
        r#"[server]
admin = "127.0.0.1:0"
[log]
access = "off"
[upstreams.app]
servers = ["{{origin}}"]
[upstreams.auth]
servers = ["{auth}"]
response_timeout = "500ms"
timeout = "1s"
retries = 0
[upstreams.down]
servers = ["127.0.0.1:1"]
retries = 0
[[routes]]
path = "/down/"
upstream = "app"
auth = {{ forward = {{ upstream = "down", path = "/verify" }} }}
[[routes]]
upstream = "app"
auth = {{ forward = {{ upstream = "auth", path = "/verify", copy_headers = ["X-User", "X-Groups"] {extra_route} }} }}
"#
    )
}

#[tokio::test]
async fn forward_auth_passes_relays_refusals_and_fails_closed() {
    let origin = Origin::start().await;
    origin.set("/p", Reply::new("page"));
    let auth = auth_service().await;
    let torii = Torii::start(&forward_config(&auth.addr.to_string(), ""), Some(&origin)).await;
    let url = torii.url("/p?q=1");

    // 2xx: on, with the copied fields replacing the client's forged ones.
    let (s, _, body) = get(
        &url,
        &[
            ("authorization", "Bearer good"),
            ("cookie", "sid=1"),
            ("x-user", "admin"),
            ("x-groups", "root"),
        ],
    )
    .await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"page"[..]));
    let (_, sent) = &origin.requests("/p")[0];
    let all = |name: &str| -> Vec<&str> {
        sent.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(all("x-user"), ["ann"]);
    assert_eq!(all("x-groups"), ["staff"]);
    assert!(!sent.contains_key("x-other"));
    // What the auth service was told.
    let (method, asked) = &auth.requests("/verify")[0];
    assert_eq!(method, http::Method::GET);
    assert_eq!(asked["x-forwarded-method"], "GET");
    assert_eq!(asked["x-forwarded-uri"], "/p?q=1");
    assert_eq!(asked["x-forwarded-host"], torii.addr.to_string().as_str());
    assert_eq!(asked["x-forwarded-proto"], "http");
    assert_eq!(asked["x-forwarded-for"], "127.0.0.1");
    assert_eq!(asked["x-real-ip"], "127.0.0.1");
    assert_eq!(asked["authorization"], "Bearer good");
    assert_eq!(asked["cookie"], "sid=1");

    // 401 and 302 go back as they came; nothing reaches the origin.
    let (s, h, body) = get(&url, &[("authorization", "Bearer nope")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"svc\"");
    assert_eq!(&body[..], b"who are you");
    let (s, h, body) = get(&url, &[("authorization", "Bearer login")]).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(h["location"], "https://login.example/");
    assert_eq!(h["set-cookie"], "next=/p");
    assert_eq!(&body[..], b"go log in");

    // Anything else, a slow service, a dead one: 503, never a pass.
    for creds in ["Bearer teapot", "Bearer slow"] {
        let s = status(&url, &[("authorization", creds)]).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{creds}");
    }
    let s = status(&torii.url("/down/p"), &[("authorization", "Bearer good")]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(origin.total_hits(), 1);
    let metric = |kind: &str| format!("torii_auth_failures_total{{route=\"*/\",kind=\"{kind}\"}}");
    assert_eq!(torii.metric(&metric("denied")).await, Some(2.0));
    assert_eq!(torii.metric(&metric("unavailable")).await, Some(2.0));

    // Without `cache`, every request asks.
    let before = auth.hits("/verify");
    for _ in 0..2 {
        assert_eq!(
            status(&url, &[("authorization", "Bearer good")]).await,
            StatusCode::OK
        );
    }
    assert_eq!(auth.hits("/verify"), before + 2);
    torii.stop().await;
}

#[tokio::test]
async fn forward_auth_cache_asks_once_per_credential() {
    let origin = Origin::start().await;
    origin.set("/p", Reply::new("page"));
    let auth = auth_service().await;
    let config = forward_config(&auth.addr.to_string(), ", cache = \"30s\"");
    let torii = Torii::start(&config, Some(&origin)).await;
    let url = torii.url("/p");
    for _ in 0..3 {
        let (s, _, _) = get(
            &url,
            &[("authorization", "Bearer good"), ("x-user", "admin")],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(auth.hits("/verify"), 1);
    // The cached pass still replaces a forged X-User.
    for (_, sent) in origin.requests("/p") {
        assert_eq!(sent.get_all("x-user").iter().count(), 1);
        assert_eq!(sent["x-user"], "ann");
    }
    // Another credential (a cookie too) is asked about; refusals are not kept.
    let s = status(&url, &[("authorization", "Bearer good"), ("cookie", "a=b")]).await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(
            status(&url, &[("authorization", "Bearer nope")]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(auth.hits("/verify"), 4);
    torii.stop().await;
}

#[tokio::test]
async fn torii_check_refuses_weak_hashes_missing_files_and_unknown_upstreams() {
    let d = dir();
    write(
        d.path(),
        "weak",
        &format!("ann:{}\nbob:$apr1$salt$hash\ncid:plaintext\n", bcrypt("x")),
    );
    let config = write(
        d.path(),
        "torii.toml",
        r#"[upstreams.app]
servers = ["127.0.0.1:3000"]
[[routes]]
path = "/a/"
upstream = "app"
auth = { basic = { users_file = "weak" } }
[[routes]]
path = "/b/"
upstream = "app"
auth = { basic = { users_file = "absent" } }
[[routes]]
upstream = "app"
auth = { forward = { upstream = "auth", path = "/verify" } }
"#,
    );
    let out = Command::new(TORII)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = config.display();
    let weak = d.path().join("weak");
    let weak = weak.display();
    for expected in [
        format!("{name}:6:33: routes[0].auth.basic.users_file: {weak}:2: user \"bob\": MD5-crypt"),
        format!("{name}:6:33: routes[0].auth.basic.users_file: {weak}:3: user \"cid\": plaintext"),
        format!("{name}:10:33: routes[1].auth.basic.users_file: "),
        format!("{name}:13:33: routes[2].auth.forward.upstream: unknown upstream \"auth\"; hint: defined are app"),
    ] {
        assert!(stderr.contains(&expected), "{expected}\n---\n{stderr}");
    }
    assert!(
        !stderr.contains("$apr1$salt"),
        "the hash itself is not shown: {stderr}"
    );
}
