//! The shared tier with a real `redis-server` (started here on a free port, stopped by its
//! PID): two torii nodes sharing one Redis behave like one cache. Proven by counting origin
//! requests and reading `X-Cache`, `/stats.json` and `/metrics`.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::time::Instant;

/// A `redis-server` child on 127.0.0.1; killed (by its PID) when dropped.
struct Redis {
    port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Redis {
    async fn start() -> Redis {
        Redis::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> Redis {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut redis = Redis {
            port,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .expect("redis-server not found: install it (.ci/run installs the Debian package)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = self.client().get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Kills the server (SIGKILL, by PID) and waits for it to exit.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the server by PID: a Redis that hangs, with
    /// its connections open.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts again on the same port, empty.
    async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A torii node with a caching route to `origin` and the shared tier on `redis_url`.
async fn node(origin: &Origin, redis_url: &str, shared: &str) -> Torii {
    let toml = format!(
        "[server]\nadmin = \"off\"\n[log]\naccess = \"off\"\n\
         [cache.shared]\nredis = \"{redis_url}\"\nbreaker_retry = \"200ms\"\n{shared}\n\
         [upstreams.app]\nservers = [\"{{origin}}\"]\n[[routes]]\nupstream = \"app\"\n"
    );
    Torii::start(&toml, Some(origin)).await
}

/// Waits until `n` clients subscribe to the purge channel (each node's subscription is up).
async fn wait_subscribed(redis: &Redis, n: i64) {
    let mut c = redis.conn().await;
    let start = Instant::now();
    loop {
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("torii:purge")
            .query_async(&mut c)
            .await
            .unwrap();
        if subscribers >= n {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{subscribers} of {n} purge subscriptions came up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stats(torii: &Torii) -> serde_json::Value {
    admin_get(torii, "/stats.json").await
}

async fn shared_stat(torii: &Torii, name: &str) -> u64 {
    stats(torii).await["cache"]["shared"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no cache.shared.{name} in /stats.json"))
}

async fn metrics(torii: &Torii) -> String {
    let (_, _, body) = get(&format!("http://{}/metrics", torii.admin)).await;
    String::from_utf8(body.to_vec()).unwrap()
}

/// The Host every request is sent with: nodes behind one balancer see the same Host, so
/// they compute the same cache keys.
const HOST: &str = "shop.test";

/// GET `url` with `Host: shop.test`: status, X-Cache and body.
async fn fetch(url: &str) -> (StatusCode, String, String) {
    fetch_with(url, &[]).await
}

/// `fetch` with extra request headers.
async fn fetch_with(url: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    use http_body_util::BodyExt;
    let mut req = http::Request::get(url).header("host", HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let (status, h, body) = (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    );
    let x = h
        .get("x-cache")
        .map_or("<none>", |v| v.to_str().unwrap())
        .to_string();
    (status, x, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `check` every 20 ms until it is true; panics after `within` with `what`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    // Never less than the shared patience: a loaded machine may be slow, and a test that
    // passes does not wait for it.
    let within = within.max(PATIENCE);
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Once Redis is back: node A fetches fresh URLs under `path` until node B answers one
/// from the shared tier (node B's breaker closes at its next probe, up to a few hundred ms
/// after node A's). The origin sees each URL once.
async fn b_reads_what_a_fetches(a: &Torii, b: &Torii, origin: &Origin, path: &str) {
    origin.set_fn(path, |req| cacheable(req.uri.query().unwrap_or("")));
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        let url = format!("{path}?{i}");
        let writes = shared_stat(a, "writes").await;
        fetch(&a.url(&url)).await;
        eventually("node A wrote it", Duration::from_secs(5), || async {
            shared_stat(a, "writes").await > writes
        })
        .await;
        if fetch(&b.url(&url)).await.1 == "HIT" {
            assert_eq!(origin.hits(path), 2 * i + 1, "only node B's misses before");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node B never read {path} from Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cacheable(body: &str) -> Reply {
    Reply::new(body.to_string()).header("cache-control", "max-age=60")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_b_serves_from_the_shared_tier_what_node_a_fetched() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    origin.set(
        "/a",
        cacheable("from the origin").header("surrogate-key", "t1"),
    );
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;

    let (status, x, body) = fetch(&a.url("/a")).await;
    assert_eq!(
        (status, x.as_str(), body.as_str()),
        (StatusCode::OK, "MISS", "from the origin")
    );
    // The shared write runs in the background, after the response.
    eventually(
        "node A wrote /a to Redis",
        Duration::from_secs(5),
        || async { shared_stat(&a, "writes").await >= 1 },
    )
    .await;

    let (status, x, body) = fetch(&b.url("/a")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x, "HIT", "node B answers from the shared tier");
    assert_eq!(body, "from the origin");
    assert_eq!(
        origin.hits("/a"),
        1,
        "the origin saw one request for two nodes"
    );
    assert_eq!(shared_stat(&b, "hits").await, 1);
    // Node B's local tiers were filled: its next hit does not ask Redis.
    let (_, x, _) = fetch(&b.url("/a")).await;
    assert_eq!(x, "HIT");
    assert_eq!(shared_stat(&b, "hits").await, 1);
    assert_eq!(origin.hits("/a"), 1);

    // The stored value has an expiry (remaining freshness plus grace), a URL set and a
    // tag set.
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("torii:*")
        .query_async(&mut c)
        .await
        .unwrap();
    let object = keys
        .iter()
        .find(|k| k.contains(":o:"))
        .expect("an object key");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(object)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        ttl > 60_000 && ttl <= 380_000,
        "PTTL {ttl} ms: 60 s fresh + grace"
    );
    assert!(keys.iter().any(|k| k == "torii:t:t1"), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains(":u:http://")), "{keys:?}");

    let m = metrics(&b).await;
    for name in [
        "torii_shared_hits_total 1",
        "torii_shared_breaker_state 0",
        "torii_shared_writes_total",
        "torii_shared_misses_total",
        "torii_shared_errors_total",
        "torii_shared_lease_waits_total",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_above_the_shared_size_limit_stay_local() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    origin.set("/big", cacheable(&"x".repeat(4096)));
    origin.set("/small", cacheable("small"));
    let a = node(&origin, &redis.url(), "max_object_size = \"1KiB\"").await;
    let b = node(&origin, &redis.url(), "max_object_size = \"1KiB\"").await;

    assert_eq!(fetch(&a.url("/big")).await.1, "MISS");
    assert_eq!(fetch(&a.url("/small")).await.1, "MISS");
    eventually(
        "small written, big skipped",
        Duration::from_secs(5),
        || async {
            shared_stat(&a, "writes").await >= 1 && shared_stat(&a, "too_large").await >= 1
        },
    )
    .await;
    assert_eq!(fetch(&a.url("/big")).await.1, "HIT", "still cached locally");
    assert_eq!(fetch(&b.url("/small")).await.1, "HIT");
    assert_eq!(
        fetch(&b.url("/big")).await.1,
        "MISS",
        "not in the shared tier"
    );
    assert_eq!(origin.hits("/big"), 2);
    assert_eq!(origin.hits("/small"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_cold_requests_over_two_nodes_make_one_origin_request() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    origin.set(
        "/hot",
        cacheable("hot object").delay(Duration::from_millis(300)),
    );
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;

    let mut tasks = Vec::new();
    for i in 0..100 {
        let url = if i % 2 == 0 {
            a.url("/hot")
        } else {
            b.url("/hot")
        };
        tasks.push(tokio::spawn(async move { fetch(&url).await }));
    }
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hot object");
    }
    assert_eq!(
        origin.hits("/hot"),
        1,
        "one origin request for 100 requests on two nodes"
    );
    let waits = shared_stat(&a, "lease_waits").await + shared_stat(&b, "lease_waits").await;
    let leases = shared_stat(&a, "leases").await + shared_stat(&b, "leases").await;
    assert_eq!(leases, 1, "one node took the lease");
    assert!(waits >= 1, "the other node waited on it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lease_holder_blocks_nobody_beyond_the_lease() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    origin.set("/orphan", cacheable("fetched anyway"));
    let a = node(&origin, &redis.url(), "lease = \"500ms\"").await;
    // A node that took the lease and died: the lease stays until it expires.
    let mut c = redis.conn().await;
    let primary = format!("http://{HOST}/orphan");
    let slot = format!("torii:{{{:08x}}}", crc32fast::hash(primary.as_bytes()));
    let _: () = redis::cmd("SET")
        .arg(format!("{slot}:l:{primary}"))
        .arg("dead-node")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut c)
        .await
        .unwrap();
    let started = Instant::now();
    let (status, x, body) = fetch(&a.url("/orphan")).await;
    assert_eq!(
        (status, x.as_str(), body.as_str()),
        (StatusCode::OK, "MISS", "fetched anyway")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?} on a dead lease",
        started.elapsed()
    );
    assert_eq!(shared_stat(&a, "lease_waits").await, 1);
    assert_eq!(origin.hits("/orphan"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_at_one_node_reaches_every_node_within_a_second() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    for path in ["/p", "/static/app.js", "/tagged"] {
        let v = version.clone();
        origin.set_fn(path, move |_| {
            let n = v.load(std::sync::atomic::Ordering::SeqCst);
            cacheable(&format!("v{n}")).header("cache-tag", "product-7")
        });
    }
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;
    // Both subscriptions are up before purging.
    wait_subscribed(&redis, 2).await;

    for path in ["/p", "/static/app.js", "/tagged"] {
        assert_eq!(fetch(&a.url(path)).await.2, "v1");
    }
    eventually("three objects in Redis", Duration::from_secs(5), || async {
        shared_stat(&a, "writes").await >= 3
    })
    .await;
    for path in ["/p", "/static/app.js", "/tagged"] {
        assert_eq!(
            fetch(&b.url(path)).await.1,
            "HIT",
            "{path} from the shared tier"
        );
    }
    version.store(2, std::sync::atomic::Ordering::SeqCst);

    // By URL at node A.
    let (status, v) = admin_post(&a, "/purge", &format!("{{\"url\": \"http://{HOST}/p\"}}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["scope"], "cluster", "{v}");
    assert_eq!(v["shared"], 1, "{v}");
    let purged_at = Instant::now();
    eventually(
        "node B stops serving /p",
        Duration::from_secs(1),
        || async { fetch(&b.url("/p")).await.2 == "v2" },
    )
    .await;
    assert!(purged_at.elapsed() < Duration::from_secs(1));

    // By path prefix at node B.
    let (_, v) = admin_post(&b, "/purge", "{\"prefix\": \"/static/\"}").await;
    assert_eq!(v["scope"], "cluster", "{v}");
    eventually(
        "node A stops serving /static/app.js",
        Duration::from_secs(1),
        || async { fetch(&a.url("/static/app.js")).await.2 == "v2" },
    )
    .await;

    // By tag at node A: the tag set in Redis finds the key node B filled from.
    let (_, v) = admin_post(&a, "/purge", "{\"tag\": \"product-7\"}").await;
    assert_eq!(v["scope"], "cluster", "{v}");
    eventually(
        "node B stops serving /tagged",
        Duration::from_secs(1),
        || async { fetch(&b.url("/tagged")).await.2 == "v2" },
    )
    .await;
    assert!(shared_stat(&b, "purges_received").await >= 2);
    assert!(metrics(&a)
        .await
        .contains("torii_shared_purges_total{scope=\"cluster\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_shared_value_is_dropped_never_served() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    origin.set("/c", cacheable("good body"));
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;
    fetch(&a.url("/c")).await;
    eventually("written", Duration::from_secs(5), || async {
        shared_stat(&a, "writes").await >= 1
    })
    .await;
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("torii:*:o:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    let last = value.len() - 6;
    value[last] ^= 0x20; // one flipped bit in the body
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(value)
        .query_async(&mut c)
        .await
        .unwrap();

    let (status, x, body) = fetch(&b.url("/c")).await;
    assert_eq!(
        (status, x.as_str(), body.as_str()),
        (StatusCode::OK, "MISS", "good body")
    );
    assert_eq!(shared_stat(&b, "corrupt").await, 1);
    assert_eq!(origin.hits("/c"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_local_only_without_errors_and_the_tier_comes_back() {
    let mut redis = Redis::start().await;
    let origin = Origin::start().await;
    for path in ["/warm", "/cold", "/later", "/after"] {
        let p = path.to_string();
        origin.set_fn(path, move |req| {
            let q = req.uri.query().unwrap_or("");
            cacheable(&format!("{p}?{q}"))
        });
    }
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;
    wait_subscribed(&redis, 2).await;
    fetch(&a.url("/warm")).await;
    eventually("written", Duration::from_secs(5), || async {
        shared_stat(&a, "writes").await >= 1
    })
    .await;

    redis.kill();
    // Hits, shared-tier misses and origin fetches all keep working, each well within a
    // bound of a few Redis timeouts (100 ms each) even before the breaker opens.
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        for (node, path) in [(&a, "/warm"), (&b, "/warm"), (&a, "/cold"), (&b, "/cold")] {
            let started = Instant::now();
            let (status, _, body) = fetch(&node.url(&format!("{path}?i={}", i % 10))).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, format!("{path}?i={}", i % 10));
        }
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request took {slowest:?}"
    );
    // Open, or half-open when a probe is due (breaker_retry is 200 ms here).
    assert_ne!(stats(&a).await["cache"]["shared"]["breaker"], "closed");
    let m = metrics(&a).await;
    assert!(
        m.contains("torii_shared_breaker_state 1") || m.contains("torii_shared_breaker_state 2"),
        "breaker not open in /metrics"
    );

    // A purge while Redis is down reaches this node only, and says so.
    let (status, v) = admin_post(
        &a,
        "/purge",
        &format!("{{\"url\": \"http://{HOST}/warm\"}}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["scope"], "local", "{v}");
    assert!(
        v["warning"].as_str().unwrap().contains("only this node"),
        "{v}"
    );
    assert!(metrics(&a)
        .await
        .contains("torii_shared_purges_total{scope=\"local\"} 1"));

    // Redis comes back (empty): the breaker probes, closes, and the tier is used again.
    redis.restart().await;
    let n = std::sync::atomic::AtomicUsize::new(0);
    eventually(
        "node A writes to Redis again",
        Duration::from_secs(10),
        || async {
            let before = shared_stat(&a, "writes").await;
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            fetch(&a.url(&format!("/later?t={i}"))).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            shared_stat(&a, "writes").await > before
        },
    )
    .await;
    b_reads_what_a_fetches(&a, &b, &origin, "/after").await;
    assert_eq!(stats(&b).await["cache"]["shared"]["breaker"], "closed");
    // And the purge subscription is back too.
    eventually(
        "purge reaches node B again",
        Duration::from_secs(10),
        || async {
            let (_, v) = admin_post(&a, "/purge", "{\"tag\": \"none\"}").await;
            v["scope"] == "cluster"
        },
    )
    .await;
    let received = shared_stat(&b, "purges_received").await;
    eventually(
        "node B receives purges again",
        Duration::from_secs(10),
        || async {
            admin_post(&a, "/purge", "{\"tag\": \"none\"}").await;
            shared_stat(&b, "purges_received").await > received
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_and_serves_while_redis_is_down() {
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let origin = Origin::start().await;
    origin.set("/x", cacheable("x"));
    let a = node(&origin, &format!("redis://{addr}"), "").await;
    for _ in 0..5 {
        let (status, _, body) = fetch(&a.url("/x")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "x"));
    }
    assert_eq!(origin.hits("/x"), 1, "the local tiers still cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_mode_shares_leases_and_purges() {
    // A one-node Redis Cluster owning every slot: the cluster client, per-slot pipelines,
    // the lease script and cluster-wide pub/sub all take their cluster code paths.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nodes.conf");
    let redis = Redis::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        conf.to_str().unwrap(),
    ])
    .await;
    let mut c = redis.conn().await;
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut c)
        .await
        .unwrap();
    eventually("cluster_state:ok", Duration::from_secs(10), || async {
        let mut c = redis.conn().await;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut c)
            .await
            .unwrap();
        info.contains("cluster_state:ok")
    })
    .await;

    let origin = Origin::start().await;
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let v = version.clone();
    origin.set_fn("/k", move |_| {
        let n = v.load(std::sync::atomic::Ordering::SeqCst);
        cacheable(&format!("v{n}"))
            .header("surrogate-key", "k-tag")
            .delay(Duration::from_millis(200))
    });
    let url = format!("redis+cluster://127.0.0.1:{}", redis.port);
    let a = node(&origin, &url, "").await;
    let b = node(&origin, &url, "").await;
    eventually(
        "both nodes connected to the cluster",
        Duration::from_secs(10),
        || async {
            // A tag purge of nothing succeeds once the cluster connection is up.
            admin_post(&a, "/purge", "{\"tag\": \"none\"}").await.1["scope"] == "cluster"
                && admin_post(&b, "/purge", "{\"tag\": \"none\"}").await.1["scope"] == "cluster"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = if i % 2 == 0 { a.url("/k") } else { b.url("/k") };
        tasks.push(tokio::spawn(async move { fetch(&url).await }));
    }
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
    }
    assert_eq!(origin.hits("/k"), 1, "one origin request over the cluster");

    version.store(2, std::sync::atomic::Ordering::SeqCst);
    let (_, v) = admin_post(&b, "/purge", "{\"tag\": \"k-tag\"}").await;
    assert_eq!(v["scope"], "cluster", "{v}");
    assert_eq!(v["shared"], 1, "{v}");
    eventually(
        "node A stops serving /k",
        Duration::from_secs(1),
        || async { fetch(&a.url("/k")).await.2 == "v2" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_refreshes_a_stale_object_for_the_cluster() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let v = version.clone();
    origin.set_fn("/r", move |_| {
        let n = v.load(std::sync::atomic::Ordering::SeqCst);
        Reply::new(format!("v{n}")).header("cache-control", "max-age=2, stale-while-revalidate=30")
    });
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;
    assert_eq!(fetch(&a.url("/r")).await.2, "v1");
    eventually("written", Duration::from_secs(5), || async {
        shared_stat(&a, "writes").await >= 1
    })
    .await;
    assert_eq!(fetch(&b.url("/r")).await.1, "HIT");

    // Both nodes' clocks (and the origin's `Date`) move past max-age=2, into the
    // stale-while-revalidate window; Redis keeps the object (its TTL covers the window).
    for clock in [a.clock(), b.clock()] {
        clock.advance(Duration::from_millis(2100));
    }
    origin.advance_clock(Duration::from_millis(2100));
    version.store(2, std::sync::atomic::Ordering::SeqCst);
    let (_, x, body) = fetch(&a.url("/r")).await;
    assert_eq!(
        (x.as_str(), body.as_str()),
        ("STALE", "v1"),
        "served stale, refreshed behind"
    );
    eventually(
        "node A's refresh reached Redis",
        Duration::from_secs(5),
        || async { shared_stat(&a, "writes").await >= 2 },
    )
    .await;
    // Node B's copy is stale too: its refresh takes node A's from Redis instead of the origin.
    let (_, x, _) = fetch(&b.url("/r")).await;
    assert_eq!(x, "STALE");
    eventually("node B serves v2", Duration::from_secs(5), || async {
        fetch(&b.url("/r")).await.2 == "v2"
    })
    .await;
    assert_eq!(
        origin.hits("/r"),
        2,
        "one fetch, one refresh, for two nodes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_costs_at_most_its_timeout_then_nothing() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    origin.set_fn("/h", |req| cacheable(req.uri.query().unwrap_or("")));
    let a = node(&origin, &redis.url(), "timeout = \"100ms\"").await;
    let b = node(&origin, &redis.url(), "timeout = \"100ms\"").await;
    wait_subscribed(&redis, 2).await;

    redis.signal("-STOP");
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        for n in [&a, &b] {
            let started = Instant::now();
            let (status, _, body) = fetch(&n.url(&format!("/h?{i}"))).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!((status, body), (StatusCode::OK, i.to_string()));
        }
    }
    // Before the breaker opens a request waits at most a few 100 ms timeouts (lookup,
    // lease); after, none at all.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request took {slowest:?}"
    );
    assert_ne!(stats(&a).await["cache"]["shared"]["breaker"], "closed");
    assert!(
        shared_stat(&a, "skipped").await > 0,
        "calls skipped while open"
    );

    redis.signal("-CONT");
    let n = std::sync::atomic::AtomicUsize::new(0);
    eventually(
        "node A writes to Redis again",
        Duration::from_secs(10),
        || async {
            let before = shared_stat(&a, "writes").await;
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            fetch(&a.url(&format!("/h?again{i}"))).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            shared_stat(&a, "writes").await > before
        },
    )
    .await;
    b_reads_what_a_fetches(&a, &b, &origin, "/back").await;
}

/// A `torii` child process; killed (by its PID) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The real binary: `torii proxy --redis URL` on two workers (thread-per-core: the Redis
/// connection is shared by several runtimes), and `torii purge` reaching the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torii_proxy_redis_flag_and_torii_purge_across_processes() {
    const TORII: &str = env!("CARGO_BIN_EXE_torii");
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let v = version.clone();
    origin.set_fn("/page", move |_| {
        cacheable(&format!("v{}", v.load(std::sync::atomic::Ordering::SeqCst)))
    });
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let (listen, admin) = (free_addr(), free_addr());
        let child = Command::new(TORII)
            .args(["proxy", "--workers", "2", "--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string(), "--to", &origin.url()])
            .args(["--redis", &redis.url()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        nodes.push((Process(child), listen, admin));
    }
    for (_, listen, admin) in &nodes {
        for addr in [listen, admin] {
            eventually("torii listens", Duration::from_secs(10), || async {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await;
        }
    }
    wait_subscribed(&redis, 2).await;
    let (a, b) = (nodes[0].1, nodes[1].1);
    let stats_of = |admin: SocketAddr| async move {
        let (_, _, body) = get(&format!("http://{admin}/stats.json")).await;
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };

    assert_eq!(fetch(&format!("http://{a}/page")).await.1, "MISS");
    eventually("node A wrote /page", Duration::from_secs(5), || async {
        stats_of(nodes[0].2).await["cache"]["shared"]["writes"] == 1
    })
    .await;
    let (_, x, body) = fetch(&format!("http://{b}/page")).await;
    assert_eq!((x.as_str(), body.as_str()), ("HIT", "v1"));
    assert_eq!(origin.hits("/page"), 1);

    version.store(2, std::sync::atomic::Ordering::SeqCst);
    let out = tokio::process::Command::new(TORII)
        .args(["purge", "--admin", &nodes[0].2.to_string()])
        .arg(format!("http://{HOST}/page"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["scope"], "cluster", "{answer}");
    eventually(
        "node B stops serving v1",
        Duration::from_secs(1),
        || async { fetch(&format!("http://{b}/page")).await.2 == "v2" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_variants_are_shared_side_by_side() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    origin.set_fn("/v", |req| {
        let lang = req
            .headers
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap());
        cacheable(&format!("in {lang}")).header("vary", "accept-language")
    });
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;
    for lang in ["de", "fr"] {
        let (_, x, body) = fetch_with(&a.url("/v"), &[("accept-language", lang)]).await;
        assert_eq!((x.as_str(), body), ("MISS", format!("in {lang}")));
    }
    eventually(
        "both variants and the index written",
        Duration::from_secs(5),
        || async { shared_stat(&a, "writes").await >= 4 },
    )
    .await;
    for lang in ["fr", "de"] {
        let (_, x, body) = fetch_with(&b.url("/v"), &[("accept-language", lang)]).await;
        assert_eq!(
            (x.as_str(), body),
            ("HIT", format!("in {lang}")),
            "{lang} from Redis"
        );
    }
    assert_eq!(origin.hits("/v"), 2);
    // A variant node A never fetched is a miss at node B, not another language's body.
    let (_, x, body) = fetch_with(&b.url("/v"), &[("accept-language", "ja")]).await;
    assert_eq!((x.as_str(), body.as_str()), ("MISS", "in ja"));
    // A URL purge removes every variant from Redis.
    let (_, v) = admin_post(&b, "/purge", &format!("{{\"url\": \"http://{HOST}/v\"}}")).await;
    assert_eq!(v["scope"], "cluster", "{v}");
    let mut c = redis.conn().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("torii:*:o:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_request_at_one_node_invalidates_every_node() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let v = version.clone();
    origin.set_fn("/cart", move |req| {
        if req.method == http::Method::POST {
            v.store(2, std::sync::atomic::Ordering::SeqCst);
            return Reply::new("updated");
        }
        cacheable(&format!("v{}", v.load(std::sync::atomic::Ordering::SeqCst)))
    });
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;
    wait_subscribed(&redis, 2).await;
    fetch(&a.url("/cart")).await;
    eventually("written", Duration::from_secs(5), || async {
        shared_stat(&a, "writes").await >= 1
    })
    .await;
    assert_eq!(fetch(&b.url("/cart")).await.1, "HIT");

    let req = http::Request::post(a.url("/cart"))
        .header("host", HOST)
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::from_static(b"item=1"),
        )))
        .unwrap();
    assert_eq!(
        client().request(req).await.unwrap().status(),
        StatusCode::OK
    );
    eventually(
        "node B stops serving v1",
        Duration::from_secs(1),
        || async { fetch(&b.url("/cart")).await.2 == "v2" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_subscription_survives_its_keepalive_pings() {
    let redis = Redis::start().await;
    let origin = Origin::start().await;
    origin.set("/ka", cacheable("ka"));
    let a = node(&origin, &redis.url(), "").await;
    let b = node(&origin, &redis.url(), "").await;
    // Subscriptions PING every 5 s; past the second one both are still the same connections.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let mut c = redis.conn().await;
    let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("torii:purge")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(subscribers, 2);
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap();
    let subscribed: Vec<&str> = clients.lines().filter(|l| l.contains("sub=1")).collect();
    assert_eq!(subscribed.len(), 2, "{clients}");
    assert!(
        subscribed
            .iter()
            .all(|l| !l.contains(" age=0 ") && !l.contains(" age=1 ")),
        "a subscription was re-made: {clients}"
    );
    fetch(&a.url("/ka")).await;
    eventually("written", Duration::from_secs(5), || async {
        shared_stat(&a, "writes").await >= 1
    })
    .await;
    assert_eq!(fetch(&b.url("/ka")).await.1, "HIT");
    let (_, v) = admin_post(&a, "/purge", &format!("{{\"url\": \"http://{HOST}/ka\"}}")).await;
    assert_eq!(v["scope"], "cluster");
    eventually("purge reached node B", Duration::from_secs(1), || async {
        shared_stat(&b, "purges_received").await == 1
    })
    .await;
}
