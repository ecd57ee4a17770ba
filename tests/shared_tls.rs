//! The shared tier over TLS (`rediss://`, `cache.shared.tls`) with a real `redis-server`
//! started here with `--port 0 --tls-port …` and certificates made by rcgen, stopped by its
//! PID. Two nodes share objects over TLS; a wrong CA or a missing client certificate leaves
//! a node serving from its local tiers, as with Redis down.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use http::StatusCode;
use support::*;

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `names` (an IP name becomes an IP SAN): (certificate PEM, key PEM).
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The PEM files of one test: the Redis CA, Redis's certificate, a client certificate
/// (issued by the same CA), and a second, unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("redis test CA");
        let other = Ca::new("another CA");
        let (server, server_key) = ca.issue(&["127.0.0.1", "localhost"]);
        let (client, client_key) = ca.issue(&["torii-node"]);
        for (name, pem) in [
            ("ca.pem", ca.cert.pem()),
            ("other-ca.pem", other.cert.pem()),
            ("redis.pem", server),
            ("redis.key", server_key),
            ("client.pem", client),
            ("client.key", client_key),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

/// A `redis-server` child listening with TLS only; killed (by its PID) when dropped.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    async fn start(pki: &Pki, auth_clients: bool) -> Redis {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(pki.path("redis.pem"))
            .arg("--tls-key-file")
            .arg(pki.path("redis.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.path("ca.pem"))
            .args([
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (.ci/run installs the Debian package)");
        let redis = Redis { port, child };
        wait_until_async("redis-server (TLS) answers a PING", PATIENCE, || {
            redis.ping(pki)
        })
        .await;
        redis
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// A PING over TLS with the client certificate.
    async fn ping(&self, pki: &Pki) -> bool {
        let certs = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: pki.read("client.pem"),
                client_key: pki.read("client.key"),
            }),
            root_cert: Some(pki.read("ca.pem")),
        };
        let Ok(client) = redis::Client::build_with_tls(self.url(), certs) else {
            return false;
        };
        match client.get_multiplexed_async_connection().await {
            Ok(mut c) => redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node with a caching route to `origin` and the shared tier on `url` with `tls`.
async fn node(origin: &Origin, url: &str, tls: &str) -> Torii {
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n\
         [cache.shared]\nredis = \"{url}\"\nbreaker_retry = \"200ms\"\ntimeout = \"2s\"\n{tls}\n\
         [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n"
    );
    Torii::start(&toml, Some(origin)).await
}

fn tls(pki: &Pki, ca: &str, client: bool) -> String {
    let mut keys = vec![format!("ca = {:?}", pki.path(ca).display().to_string())];
    if client {
        keys.push(format!(
            "cert = {:?}",
            pki.path("client.pem").display().to_string()
        ));
        keys.push(format!(
            "key = {:?}",
            pki.path("client.key").display().to_string()
        ));
    }
    format!("tls = {{ {} }}", keys.join(", "))
}

async fn shared_stat(torii: &Torii, name: &str) -> u64 {
    admin_get(torii, "/stats.json").await["cache"]["shared"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no cache.shared.{name} in /stats.json"))
}

/// GET with the Host both nodes see: status, X-Cache, body.
async fn fetch(torii: &Torii, path: &str) -> (StatusCode, String, String) {
    use http_body_util::BodyExt;
    let req = http::Request::get(torii.url(path))
        .header("host", "shop.test")
        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let (status, headers) = (parts.status, parts.headers);
    let body = body.collect().await.unwrap().to_bytes();
    let x = headers
        .get("x-cache")
        .map_or("<none>", |v| v.to_str().unwrap())
        .to_string();
    (status, x, String::from_utf8_lossy(&body).into_owned())
}

fn cacheable(body: &str) -> Reply {
    Reply::new(body.to_string()).header("cache-control", "max-age=60")
}

/// Node A fetches `path` (a miss) and writes it to Redis; node B then reads it from Redis.
async fn b_reads_what_a_stored(a: &Torii, b: &Torii, origin: &Origin, path: &str) {
    let (status, x, body) = fetch(a, path).await;
    assert_eq!(
        (status, x.as_str(), body.as_str()),
        (StatusCode::OK, "MISS", "shared")
    );
    wait_until_async("node A wrote to Redis over TLS", PATIENCE, || async {
        shared_stat(a, "writes").await >= 1
    })
    .await;
    let (status, x, body) = fetch(b, path).await;
    assert_eq!(
        (status, x.as_str(), body.as_str()),
        (StatusCode::OK, "HIT", "shared")
    );
    assert_eq!(
        shared_stat(b, "hits").await,
        1,
        "node B's hit came from Redis"
    );
    assert_eq!(origin.hits(path), 1, "one origin request for two nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_a_hit_stored_by_one_node_is_read_by_another_over_tls() {
    let pki = Pki::new();
    let redis = Redis::start(&pki, false).await;
    let origin = Origin::start().await;
    origin.set("/a", cacheable("shared"));
    let a = node(&origin, &redis.url(), &tls(&pki, "ca.pem", false)).await;
    let b = node(&origin, &redis.url(), &tls(&pki, "ca.pem", false)).await;
    b_reads_what_a_stored(&a, &b, &origin, "/a").await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_mutual_tls_with_tls_auth_clients() {
    let pki = Pki::new();
    let redis = Redis::start(&pki, true).await;
    let origin = Origin::start().await;
    origin.set("/m", cacheable("shared"));
    let a = node(&origin, &redis.url(), &tls(&pki, "ca.pem", true)).await;
    let b = node(&origin, &redis.url(), &tls(&pki, "ca.pem", true)).await;
    b_reads_what_a_stored(&a, &b, &origin, "/m").await;

    // Without a client certificate Redis refuses the handshake: that node serves from its
    // local tiers and the origin, and counts the failure.
    let c = node(&origin, &redis.url(), &tls(&pki, "ca.pem", false)).await;
    local_only(&c, &origin, "/m", 2).await;
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_a_wrong_ca_fails_and_the_node_keeps_serving_locally() {
    let pki = Pki::new();
    let redis = Redis::start(&pki, false).await;
    let origin = Origin::start().await;
    origin.set("/w", cacheable("shared"));
    let a = node(&origin, &redis.url(), &tls(&pki, "ca.pem", false)).await;
    let (_, x, _) = fetch(&a, "/w").await;
    assert_eq!(x, "MISS");
    wait_until_async("node A wrote to Redis over TLS", PATIENCE, || async {
        shared_stat(&a, "writes").await >= 1
    })
    .await;
    // Node B trusts another CA: Redis's certificate fails verification, so B never reads
    // what A stored, and still answers every request.
    let b = node(&origin, &redis.url(), &tls(&pki, "other-ca.pem", false)).await;
    local_only(&b, &origin, "/w", 2).await;
    a.stop().await;
    b.stop().await;
}

/// `torii` cannot use Redis: the first GET of `path` goes to the origin (the origin's
/// count becomes `origin_hits`), the next ones are memory hits, no shared hit is counted,
/// and the failed calls are (errors, or calls skipped by the open breaker).
async fn local_only(torii: &Torii, origin: &Origin, path: &str, origin_hits: usize) {
    let (status, x, body) = fetch(torii, path).await;
    assert_eq!(
        (status, x.as_str(), body.as_str()),
        (StatusCode::OK, "MISS", "shared")
    );
    assert_eq!(origin.hits(path), origin_hits);
    for _ in 0..3 {
        let (status, x, _) = fetch(torii, path).await;
        assert_eq!((status, x.as_str()), (StatusCode::OK, "HIT"));
    }
    assert_eq!(
        origin.hits(path),
        origin_hits,
        "the memory tier still caches"
    );
    assert_eq!(shared_stat(torii, "hits").await, 0);
    let failed = shared_stat(torii, "errors").await + shared_stat(torii, "skipped").await;
    assert!(failed >= 1, "the TLS failure was counted");
}

#[test]
fn issue_20_check_reads_the_redis_tls_files() {
    let pki = Pki::new();
    let base = "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n";
    let load = |shared: &str| {
        torii::config::load_str("t.toml", &format!("[cache.shared]\n{shared}\n{base}"))
    };
    let ok = load(&format!(
        "redis = \"rediss://127.0.0.1:6380\"\n{}",
        tls(&pki, "ca.pem", true)
    ));
    let ok = ok.unwrap_or_else(|e| panic!("{e}"));
    let tls_settings = ok.cache.shared.unwrap().tls.unwrap();
    assert!(tls_settings.ca.is_some() && tls_settings.client.is_some());

    let missing = load("redis = \"rediss://h:6380\"\ntls = { ca = \"/nonexistent/ca.pem\" }");
    let e = missing.unwrap_err().to_string();
    assert!(
        e.starts_with("t.toml:3:14: cache.shared.tls.ca: cannot read /nonexistent/ca.pem"),
        "{e}"
    );

    // A key that is not the certificate's.
    let swapped = format!(
        "redis = \"rediss://h:6380\"\ntls = {{ cert = {:?}, key = {:?} }}",
        pki.path("client.pem").display().to_string(),
        pki.path("redis.key").display().to_string()
    );
    let e = load(&swapped).unwrap_err().to_string();
    assert!(
        e.contains("cache.shared.tls.key:") && e.contains("does not match"),
        "{e}"
    );

    let plain = load(&format!(
        "redis = \"redis://h:6379\"\n{}",
        tls(&pki, "ca.pem", false)
    ));
    let e = plain.unwrap_err().to_string();
    assert!(e.contains("the Redis URL is not rediss://"), "{e}");

    let half = load("redis = \"rediss://h:6380\"\ntls = { cert = \"c.pem\" }");
    assert!(half
        .unwrap_err()
        .to_string()
        .contains("needs both cert and key"));
}
