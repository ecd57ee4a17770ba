//! The shared tier: objects, tag sets, fetch leases and purge broadcasts on Redis/Valkey
//! (standalone or Redis Cluster), so several torii nodes behave like one cache.
//!
//! Every call is bounded by `cache.shared.timeout` and goes through a circuit breaker: after
//! `breaker_failures` failed calls in a row the tier is skipped (local-only) without
//! waiting, and one probe call per back-off period finds out when Redis is back.
//!
//! # Key layout (`P` is `cache.shared.prefix`, `h` the CRC32 of the URL, in hex)
//!
//! ```text
//! P{h}:o:<cache key>   the encoded object (object.rs format, checksummed), PX = time to stale_until
//! P{h}:u:<url>         set of the object keys stored for one URL (all its Vary variants)
//! P{h}:l:<primary>     the fetch lease of one key: SET NX PX, value = the holder's node id
//! Pt:<tag>             set of the object keys carrying a Surrogate-Key / Cache-Tag
//! Purls                sorted set of stored URLs scored by expiry (ms), for prefix purges
//! Ppurge               the pub/sub channel purges are broadcast on
//! ```
//!
//! `{h}` is a Redis Cluster hash tag: all keys of one URL live in one slot, so each
//! object is written with one pipeline even on a cluster.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cache::object::CachedObject;
use crate::cache::UrlMatch;
use crate::config::{redact, BreakerSettings, RedisTarget, SharedSettings};
use crate::upstream::breaker::{Admit, Breaker, State};

/// Why a shared-tier call did not answer. Never shown to a downstream client: every
/// caller falls back to the local tiers or the origin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The breaker is open (or the first connection is not up yet): not even tried.
    #[error("shared tier unavailable (circuit breaker open)")]
    Unavailable,
    #[error("redis call timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Counters behind the `torii_shared_*` metrics; all monotonic.
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub writes: AtomicU64,
    /// Objects kept local only: larger than `max_object_size` (or not encodable).
    pub too_large: AtomicU64,
    /// Failed or timed-out calls, and values dropped because they failed to decode.
    pub errors: AtomicU64,
    pub corrupt: AtomicU64,
    /// Calls skipped because the breaker was open.
    pub skipped: AtomicU64,
    pub leases: AtomicU64,
    pub lease_waits: AtomicU64,
    pub purges_cluster: AtomicU64,
    pub purges_local_only: AtomicU64,
    pub purges_received: AtomicU64,
}

/// What a purge reaches, as broadcast to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Urls(UrlMatch),
    Tag(String),
}

/// One purge message on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Broadcast {
    /// The node that purged; it ignores its own messages.
    node: String,
    /// `url`, `prefix` (scheme://host/…), `path` (path prefix, any host) or `tag`.
    kind: String,
    value: String,
    soft: bool,
}

impl Broadcast {
    fn target(&self) -> Option<Target> {
        Some(match self.kind.as_str() {
            "url" => Target::Urls(UrlMatch::Exact(self.value.clone())),
            "prefix" => Target::Urls(UrlMatch::Prefix(self.value.clone())),
            "path" => Target::Urls(UrlMatch::PathPrefix(self.value.clone())),
            "tag" => Target::Tag(self.value.clone()),
            _ => return None,
        })
    }
}

/// A connection that reconnects on its own: `ConnectionManager` for one server, the
/// cluster client's connection (which refreshes its slot map) for a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> redis::RedisResult<T> {
        match self.clone() {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> redis::RedisResult<T> {
        match self.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await,
            Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
        }
    }
}

/// The shared tier of one torii process.
pub struct SharedTier {
    settings: SharedSettings,
    /// Set once the first connection is made (a cluster connects in the background, so a
    /// Redis that is down at start delays nothing).
    conn: OnceLock<Conn>,
    /// This process's id in lease values and purge messages.
    node: String,
    breaker: Mutex<Breaker>,
    breaker_settings: BreakerSettings,
    /// The last call failed: optional calls (leases) are skipped until one succeeds, so a
    /// request that met one timeout does not wait for a second before the breaker opens.
    failing: AtomicBool,
    pub stats: Stats,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self
            .settings
            .redis
            .urls()
            .iter()
            .map(|u| redact(u))
            .collect();
        f.debug_struct("SharedTier")
            .field("redis", &urls)
            .field("node", &self.node)
            .finish()
    }
}

/// How long purges (which may touch many keys) may take; they run on the admin path.
const PURGE_TIMEOUT: Duration = Duration::from_secs(5);

impl SharedTier {
    /// Creates the tier; connections are made lazily or in the background, never here.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When a URL cannot be turned into a client (validated config makes this rare).
    pub fn new(settings: SharedSettings) -> Result<Arc<SharedTier>, Error> {
        let node = node_id();
        let breaker_settings = BreakerSettings {
            failures: settings.breaker_failures,
            ejection: settings.breaker_retry,
            max_ejection: settings.breaker_retry.max(Duration::from_secs(30)),
            // One Redis: its breaker switches torii to local-only, and may always open.
            max_ejection_percent: 100,
        };
        let tier = Arc::new(SharedTier {
            conn: OnceLock::new(),
            node,
            breaker: Mutex::new(Breaker::default()),
            breaker_settings,
            failing: AtomicBool::new(false),
            stats: Stats::default(),
            settings,
        });
        match &tier.settings.redis {
            RedisTarget::Single(url) => {
                let client = super::redis_client::client(url, tier.settings.tls.as_ref())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(
                        tier.settings.timeout.max(Duration::from_millis(250)),
                    ))
                    .set_response_timeout(Some(PURGE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_lazy_with_config(client, config)?;
                let _ = tier.conn.set(Conn::Single(manager));
            }
            RedisTarget::Cluster(nodes) => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone());
                if let Some(tls) = &tier.settings.tls {
                    builder = builder.certs(super::redis_client::certificates(tls));
                }
                let client = builder
                    .connection_timeout(tier.settings.timeout.max(Duration::from_millis(250)))
                    .response_timeout(PURGE_TIMEOUT)
                    .retries(1)
                    .build()?;
                let weak = Arc::downgrade(&tier);
                tokio::spawn(async move {
                    loop {
                        match client.get_async_connection().await {
                            Ok(c) => {
                                if let Some(tier) = weak.upgrade() {
                                    let _ = tier.conn.set(Conn::Cluster(c));
                                }
                                return;
                            }
                            Err(e) => tracing::warn!(
                                "shared tier: cannot reach the Redis Cluster yet: {e}"
                            ),
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if weak.strong_count() == 0 {
                            return;
                        }
                    }
                });
            }
        }
        Ok(tier)
    }

    pub fn settings(&self) -> &SharedSettings {
        &self.settings
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Breaker state for metrics: 0 closed, 1 open, 2 half-open.
    pub fn breaker_state(&self) -> u64 {
        match self.breaker.lock().expect("poisoned").state {
            State::Closed => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }

    // === calls through the breaker ===

    fn admit(&self) -> Result<Conn, Error> {
        let Some(conn) = self.conn.get() else {
            self.stats.skipped.fetch_add(1, Relaxed);
            return Err(Error::Unavailable);
        };
        let mut b = self.breaker.lock().expect("poisoned");
        match b.admit(Instant::now()) {
            Admit::Yes => Ok(conn.clone()),
            Admit::Probe if b.start_probe() => Ok(conn.clone()),
            _ => {
                self.stats.skipped.fetch_add(1, Relaxed);
                Err(Error::Unavailable)
            }
        }
    }

    fn record<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
        timeout: Duration,
    ) -> Result<T, Error> {
        let outcome = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Redis(e)),
            Err(_) => Err(Error::Timeout(timeout)),
        };
        // A server-side error answer (wrong type, …) still proves Redis is up.
        let healthy = match &outcome {
            Ok(_) => true,
            Err(Error::Redis(e)) => {
                !(e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal())
            }
            Err(_) => false,
        };
        if outcome.is_err() {
            self.stats.errors.fetch_add(1, Relaxed);
        }
        self.failing.store(!healthy, Relaxed);
        let mut b = self.breaker.lock().expect("poisoned");
        if let Some(period) = b.record(healthy, Instant::now(), &self.breaker_settings, true) {
            tracing::warn!(
                "shared tier: Redis failing ({}); local-only for {period:?}",
                outcome
                    .as_ref()
                    .err()
                    .map_or_else(String::new, |e| e.to_string())
            );
        }
        outcome
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd, timeout: Duration) -> Result<T, Error> {
        let conn = self.admit()?;
        let call = Call { tier: self };
        let result = tokio::time::timeout(timeout, conn.query(cmd)).await;
        call.finish();
        self.record(result, timeout)
    }

    async fn query_pipe<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        timeout: Duration,
    ) -> Result<T, Error> {
        let conn = self.admit()?;
        let call = Call { tier: self };
        let result = tokio::time::timeout(timeout, conn.query_pipe(pipe)).await;
        call.finish();
        self.record(result, timeout)
    }

    // === keys ===

    fn slot(&self, url: &str) -> String {
        format!(
            "{}{{{:08x}}}",
            self.settings.prefix,
            crc32fast::hash(url.as_bytes())
        )
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}:o:{key}", self.slot(crate::cache::key::url_of(key)))
    }

    fn url_key(&self, url: &str) -> String {
        format!("{}:u:{url}", self.slot(url))
    }

    fn lease_key(&self, primary: &str) -> String {
        format!(
            "{}:l:{primary}",
            self.slot(crate::cache::key::url_of(primary))
        )
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}t:{tag}", self.settings.prefix)
    }

    fn urls_key(&self) -> String {
        format!("{}urls", self.settings.prefix)
    }

    fn channel(&self) -> String {
        format!("{}purge", self.settings.prefix)
    }

    // === objects ===

    /// The object stored under cache key `key`, if any. A value that fails to decode (bad
    /// checksum, truncated, another key's record) is deleted and reported as a miss.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn get(&self, key: &str) -> Result<Option<CachedObject>, Error> {
        let okey = self.object_key(key);
        let value: Option<Vec<u8>> = self
            .query(redis::cmd("GET").arg(&okey), self.settings.timeout)
            .await?;
        let Some(value) = value else {
            self.stats.misses.fetch_add(1, Relaxed);
            return Ok(None);
        };
        match CachedObject::from_record(value) {
            Ok(obj) if obj.meta.key == key => {
                self.stats.hits.fetch_add(1, Relaxed);
                Ok(Some(obj))
            }
            Ok(_) | Err(_) => {
                self.stats.corrupt.fetch_add(1, Relaxed);
                self.stats.misses.fetch_add(1, Relaxed);
                tracing::warn!("shared tier: dropping a corrupt value at {okey:?}");
                let _ = self
                    .query::<i64>(redis::cmd("DEL").arg(&okey), self.settings.timeout)
                    .await;
                Ok(None)
            }
        }
    }

    /// Deletes the object stored under cache key `key` (its URL and tag sets may still
    /// name it; they are only used to find keys to delete).
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.query::<i64>(
            redis::cmd("DEL").arg(self.object_key(key)),
            self.settings.timeout.max(Duration::from_millis(500)),
        )
        .await?;
        Ok(())
    }

    /// Whether `obj` goes to the shared tier: encodable, within `max_object_size`, not
    /// already expired.
    pub fn wants(&self, obj: &CachedObject) -> bool {
        obj.body.len() as u64 <= self.settings.max_object_size && obj.encodable()
    }

    /// Writes `obj` with an expiry at its `stale_until` (remaining freshness plus grace,
    /// from `now` by the cache's clock), indexes it under its URL and tags. Run in the
    /// background, never on the request path.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn write(&self, obj: &CachedObject, now: SystemTime) -> Result<(), Error> {
        if !self.wants(obj) {
            self.stats.too_large.fetch_add(1, Relaxed);
            return Ok(());
        }
        let Ok(ttl) = obj.meta.stale_until().duration_since(now) else {
            return Ok(());
        };
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let expires_ms = unix_ms(obj.meta.stale_until());
        let okey = self.object_key(&obj.meta.key);
        let ukey = self.url_key(obj.meta.url());
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&okey)
            .arg(obj.encode())
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.cmd("SADD").arg(&ukey).arg(&okey).ignore();
        // NX then GT: a new set gets this expiry, an existing one only ever grows.
        pipe.cmd("PEXPIRE")
            .arg(&ukey)
            .arg(ttl_ms)
            .arg("NX")
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(&ukey)
            .arg(ttl_ms)
            .arg("GT")
            .ignore();
        let write_timeout = self.settings.timeout.max(Duration::from_millis(500));
        self.query_pipe::<()>(&pipe, write_timeout).await?;
        for tag in obj.meta.tags() {
            let tkey = self.tag_key(tag);
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&tkey).arg(&okey).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&tkey)
                .arg(ttl_ms)
                .arg("NX")
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(&tkey)
                .arg(ttl_ms)
                .arg("GT")
                .ignore();
            self.query_pipe::<()>(&pipe, write_timeout).await?;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(self.urls_key())
            .arg("GT")
            .arg(expires_ms)
            .arg(obj.meta.url())
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.urls_key())
            .arg("-inf")
            .arg(unix_ms(now))
            .ignore();
        self.query_pipe::<()>(&pipe, write_timeout).await?;
        self.stats.writes.fetch_add(1, Relaxed);
        Ok(())
    }

    // === leases ===

    /// Tries to take the cluster-wide fetch lease of `primary` (`SET NX PX`).
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing, or the last call failed (the lease is
    /// an optimisation: it is not worth a second timeout).
    pub async fn acquire_lease(&self, primary: &str) -> Result<bool, Error> {
        if self.failing.load(Relaxed) {
            self.stats.skipped.fetch_add(1, Relaxed);
            return Err(Error::Unavailable);
        }
        let ms = self.settings.lease.as_millis().max(1) as u64;
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.lease_key(primary))
                    .arg(&self.node)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
                self.settings.timeout,
            )
            .await?;
        let won = set.is_some();
        if won {
            self.stats.leases.fetch_add(1, Relaxed);
        }
        Ok(won)
    }

    /// Whether some node holds the lease of `primary`.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn lease_held(&self, primary: &str) -> Result<bool, Error> {
        let n: i64 = self
            .query(
                redis::cmd("EXISTS").arg(self.lease_key(primary)),
                self.settings.timeout,
            )
            .await?;
        Ok(n > 0)
    }

    /// Gives the lease of `primary` back, if this node still holds it.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn release_lease(&self, primary: &str) -> Result<(), Error> {
        const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        self.query::<i64>(
            redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(self.lease_key(primary))
                .arg(&self.node),
            self.settings.timeout.max(Duration::from_millis(500)),
        )
        .await?;
        Ok(())
    }

    // === ACME (src/acme/) ===

    /// Tries to take the cluster-wide ACME order lease of `name` for `ttl` (`SET NX PX`),
    /// so one node orders its certificate at a time.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn acquire_acme_lease(&self, name: &str, ttl: Duration) -> Result<bool, Error> {
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(format!("{}acme:lease:{name}", self.settings.prefix))
                    .arg(&self.node)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64),
                self.settings.timeout,
            )
            .await?;
        Ok(set.is_some())
    }

    /// Gives the ACME lease of `name` back, if this node still holds it.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn release_acme_lease(&self, name: &str) -> Result<(), Error> {
        const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        self.query::<i64>(
            redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(format!("{}acme:lease:{name}", self.settings.prefix))
                .arg(&self.node),
            self.settings.timeout.max(Duration::from_millis(500)),
        )
        .await?;
        Ok(())
    }

    /// The ACME certificate record of `name` some node stored, if any.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn acme_get(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.query(
            redis::cmd("GET").arg(format!("{}acme:cert:{name}", self.settings.prefix)),
            self.settings.timeout.max(Duration::from_millis(500)),
        )
        .await
    }

    /// Stores the ACME certificate record of `name` for every node (no expiry).
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn acme_put(&self, name: &str, record: &[u8]) -> Result<(), Error> {
        self.query::<()>(
            redis::cmd("SET")
                .arg(format!("{}acme:cert:{name}", self.settings.prefix))
                .arg(record),
            self.settings.timeout.max(Duration::from_millis(500)),
        )
        .await
    }

    // === purge ===

    /// Deletes what `target` matches from the shared tier; returns the objects deleted.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn purge(&self, target: &Target) -> Result<usize, Error> {
        match target {
            // The URL's copies under both schemes (see `UrlMatch`).
            Target::Urls(UrlMatch::Exact(url)) => {
                let mut deleted = 0;
                for url in crate::cache::key::both_schemes(url) {
                    deleted += self.purge_url(&url).await?;
                }
                Ok(deleted)
            }
            Target::Urls(m) => {
                let mut cursor = "0".to_string();
                let mut deleted = 0;
                loop {
                    let (next, page): (String, Vec<String>) = self
                        .query(
                            redis::cmd("ZSCAN")
                                .arg(self.urls_key())
                                .arg(&cursor)
                                .arg("COUNT")
                                .arg(1000),
                            PURGE_TIMEOUT,
                        )
                        .await?;
                    // Members and scores alternate.
                    for url in page.iter().step_by(2) {
                        if m.matches(url) {
                            deleted += self.purge_url(url).await?;
                        }
                    }
                    if next == "0" {
                        return Ok(deleted);
                    }
                    cursor = next;
                }
            }
            Target::Tag(tag) => {
                let tkey = self.tag_key(tag);
                let keys: Vec<String> = self
                    .query(redis::cmd("SMEMBERS").arg(&tkey), PURGE_TIMEOUT)
                    .await?;
                let mut deleted = 0;
                for k in &keys {
                    deleted += self
                        .query::<usize>(redis::cmd("DEL").arg(k), PURGE_TIMEOUT)
                        .await?;
                }
                self.query::<i64>(redis::cmd("DEL").arg(&tkey), PURGE_TIMEOUT)
                    .await?;
                Ok(deleted)
            }
        }
    }

    async fn purge_url(&self, url: &str) -> Result<usize, Error> {
        let ukey = self.url_key(url);
        let keys: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(&ukey), PURGE_TIMEOUT)
            .await?;
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("DEL").arg(k);
        }
        pipe.cmd("DEL").arg(&ukey).ignore();
        // Every key of one URL is in one slot: one pipeline, even on a cluster.
        let counts: Vec<usize> = self.query_pipe(&pipe, PURGE_TIMEOUT).await?;
        self.query::<i64>(
            redis::cmd("ZREM").arg(self.urls_key()).arg(url),
            PURGE_TIMEOUT,
        )
        .await?;
        Ok(counts.iter().sum())
    }

    /// Tells every other node to purge `target` from its local tiers.
    ///
    /// # Errors
    /// When Redis is unavailable, slow or failing.
    pub async fn publish(&self, target: &Target, soft: bool) -> Result<(), Error> {
        let (kind, value) = match target {
            Target::Urls(UrlMatch::Exact(u)) => ("url", u),
            Target::Urls(UrlMatch::Prefix(p)) => ("prefix", p),
            Target::Urls(UrlMatch::PathPrefix(p)) => ("path", p),
            Target::Tag(t) => ("tag", t),
        };
        let msg = Broadcast {
            node: self.node.clone(),
            kind: kind.into(),
            value: value.clone(),
            soft,
        };
        let text = serde_json::to_string(&msg).unwrap_or_default();
        self.query::<i64>(
            redis::cmd("PUBLISH").arg(self.channel()).arg(text),
            PURGE_TIMEOUT,
        )
        .await?;
        Ok(())
    }

    /// Receives the other nodes' purges until `apply` returns false (its cache is gone),
    /// reconnecting after Redis restarts. On a cluster it subscribes on one seed node at a
    /// time (Redis Cluster forwards PUBLISH to every node).
    pub async fn subscribe<F, Fut>(self: Arc<Self>, apply: F)
    where
        F: Fn(Target, bool) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let urls = self.settings.redis.urls().to_vec();
        let channel = self.channel();
        let mut attempt = 0usize;
        let mut backoff = Duration::from_millis(100);
        loop {
            let url = &urls[attempt % urls.len()];
            attempt += 1;
            let pubsub = async {
                let client = super::redis_client::client(url, self.settings.tls.as_ref())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(Duration::from_secs(2), pubsub).await {
                Ok(Ok(pubsub)) => {
                    tracing::debug!("shared tier: subscribed to {channel} on {}", redact(url));
                    backoff = Duration::from_millis(100);
                    let (mut sink, mut messages) = pubsub.split();
                    let mut check = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        let msg = tokio::select! {
                            msg = messages.next() => msg,
                            _ = check.tick() => {
                                if Arc::strong_count(&self) == 1 {
                                    return; // the cache that owned this tier is gone
                                }
                                // A connection that died without a reset (a partition, a
                                // failover that moved the address) is found by a PING.
                                let ping = sink.ping::<redis::Value>();
                                match tokio::time::timeout(Duration::from_secs(2), ping).await {
                                    Ok(Ok(_)) => continue,
                                    _ => break,
                                }
                            }
                        };
                        let Some(msg) = msg else { break };
                        let Ok(msg) = serde_json::from_slice::<Broadcast>(msg.get_payload_bytes())
                        else {
                            continue;
                        };
                        if msg.node == self.node {
                            continue;
                        }
                        let Some(target) = msg.target() else { continue };
                        self.stats.purges_received.fetch_add(1, Relaxed);
                        tracing::info!(node = %msg.node, "purge from the cluster: {} {}", msg.kind, msg.value);
                        if !apply(target, msg.soft).await {
                            return;
                        }
                    }
                    tracing::warn!(
                        "shared tier: purge subscription to {} lost; reconnecting",
                        redact(url)
                    );
                }
                Ok(Err(e)) => {
                    tracing::debug!("shared tier: cannot subscribe on {}: {e}", redact(url))
                }
                Err(_) => tracing::debug!("shared tier: subscribing on {} timed out", redact(url)),
            }
            if Arc::strong_count(&self) == 1 {
                return; // the cache that owned this tier is gone
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// A call in flight. Dropped before its outcome is recorded (the request that made it was
/// cancelled, e.g. its client went away), it frees the half-open probe it may hold, so the
/// breaker does not wait forever for an outcome that never comes.
struct Call<'a> {
    tier: &'a SharedTier,
}

impl Call<'_> {
    /// The call answered (or timed out): its outcome is recorded by the caller.
    fn finish(self) {
        std::mem::forget(self);
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let mut b = self.tier.breaker.lock().expect("poisoned");
        if b.state == (State::HalfOpen { probing: true }) {
            b.state = State::HalfOpen { probing: false };
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A process-unique id: host name, pid and start time.
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "torii".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Tests run several nodes in one process: the counter keeps their ids apart.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{host}/{}/{:x}/{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        SEQ.fetch_add(1, Relaxed)
    )
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
