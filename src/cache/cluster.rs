//! The cluster half of the cache: lookups in the shared tier, the cluster-wide fetch lease,
//! purges that reach every node, and applying the purges other nodes broadcast.

use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap};
use tokio::time::Instant;

use super::object::CachedObject;
use super::tier::shared::Target;
use super::{policy, primary_of, variant_key, Cache, LeaseOutcome, PurgeReport, Purged};

// === impl Cache (shared tier) ===

impl Cache {
    /// Starts applying the purges other nodes broadcast, for as long as this cache lives.
    pub fn start_purge_listener(self: &Arc<Self>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let cache = Arc::downgrade(self);
        tokio::spawn(shared.subscribe(move |target, soft| {
            let cache = cache.clone();
            async move {
                match cache.upgrade() {
                    Some(cache) => {
                        cache.purge_local(&target, soft).await;
                        true
                    }
                    None => false,
                }
            }
        }));
    }

    /// Like `lookup`, from the shared tier only (the local tiers are known to miss).
    async fn lookup_shared(
        self: &Arc<Self>,
        primary: &str,
        req_headers: &HeaderMap,
        norm: &policy::VaryNormalise,
    ) -> Option<Arc<CachedObject>> {
        let first = self.get_shared(primary).await?;
        if !first.headers.is_variants_index() {
            return Some(first);
        }
        let secondary =
            policy::secondary_key(first.headers.get_all(header::VARY), req_headers, norm)?;
        self.get_shared(&variant_key(primary, &secondary)).await
    }

    /// An object from the shared tier, filled into memory and disk. A failing or slow
    /// Redis is a miss (bounded by `cache.shared.timeout`, skipped while the breaker is
    /// open). An object that a purge may have removed while it was read is not used.
    pub(super) async fn get_shared(self: &Arc<Self>, key: &str) -> Option<Arc<CachedObject>> {
        let shared = self.shared.as_ref()?;
        let epoch = self.purge_epoch.load(SeqCst);
        let obj = match shared.get(key).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::debug!("shared tier lookup failed: {e}");
                return None;
            }
        };
        if obj.meta.is_expired(self.now()) {
            return None;
        }
        let obj = Arc::new(obj);
        {
            let _purges = self.purge_lock.lock().expect("poisoned");
            if self.purge_epoch.load(SeqCst) != epoch {
                return None;
            }
            self.memory.insert(obj.clone());
        }
        if let Some(disk) = &self.disk {
            let write = disk.insert(obj.clone());
            let (cache, filled) = (self.clone(), obj.clone());
            tokio::spawn(async move {
                if let Ok(true) = write.await {
                    cache.after_disk_write(&filled, epoch);
                }
            });
        }
        Some(obj)
    }

    /// Cluster-wide coalescing for this node's leader of `primary`: takes the fetch lease
    /// in the shared tier, or, when another node holds it, waits (at most the lease time and
    /// `max_wait`) for that node's object to appear in the shared tier. `usable` says
    /// whether a found object may answer the request.
    pub async fn lease(
        self: &Arc<Self>,
        primary: &str,
        req_headers: &HeaderMap,
        norm: &policy::VaryNormalise,
        max_wait: Duration,
        usable: impl Fn(&CachedObject) -> bool,
    ) -> LeaseOutcome {
        let Some(shared) = self.shared.clone() else {
            return LeaseOutcome::Fetch;
        };
        if shared.settings().lease.is_zero() {
            return LeaseOutcome::Fetch;
        }
        match shared.acquire_lease(primary).await {
            Ok(true) => {
                self.leases
                    .lock()
                    .expect("poisoned")
                    .insert(primary.to_string());
                // Another node may have stored it between our lookup and the lease.
                if let Some(obj) = self.lookup_shared(primary, req_headers, norm).await {
                    if usable(&obj) {
                        self.release_lease(primary);
                        return LeaseOutcome::Found(obj);
                    }
                }
                LeaseOutcome::Fetch
            }
            Ok(false) => {
                shared.stats.lease_waits.fetch_add(1, Relaxed);
                let deadline = Instant::now() + shared.settings().lease.min(max_wait);
                let mut pause = Duration::from_millis(5);
                loop {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                    if let Some(obj) = self.lookup_shared(primary, req_headers, norm).await {
                        if usable(&obj) {
                            return LeaseOutcome::Found(obj);
                        }
                    }
                    if Instant::now() >= deadline {
                        return LeaseOutcome::Fetch;
                    }
                    match shared.lease_held(primary).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Given back: the object was written just before, if at all.
                            return match self.lookup_shared(primary, req_headers, norm).await {
                                Some(obj) if usable(&obj) => LeaseOutcome::Found(obj),
                                _ => LeaseOutcome::Fetch,
                            };
                        }
                        Err(_) => return LeaseOutcome::Fetch,
                    }
                }
            }
            Err(e) => {
                tracing::debug!("shared tier lease failed: {e}");
                LeaseOutcome::Fetch
            }
        }
    }

    /// Before a background refresh of `obj`: whether this node should fetch it. Not when
    /// the shared tier already has a fresher copy (another node refreshed it; it is taken
    /// into the local tiers), nor while another node holds the key's lease. When this
    /// returns true with a shared tier, this node may hold the lease: `store` gives it back,
    /// and so does [`release_lease`](Self::release_lease) when the refresh stores nothing.
    pub async fn claim_refresh(self: &Arc<Self>, obj: &CachedObject) -> bool {
        let Some(shared) = self.shared.clone() else {
            return true;
        };
        if let Some(newer) = self.get_shared(&obj.meta.key).await {
            if newer.meta.fresh_until() > obj.meta.fresh_until() {
                return false;
            }
        }
        if shared.settings().lease.is_zero() {
            return true;
        }
        let primary = primary_of(&obj.meta.key);
        match shared.acquire_lease(primary).await {
            Ok(true) => {
                self.leases
                    .lock()
                    .expect("poisoned")
                    .insert(primary.to_string());
                true
            }
            Ok(false) => false,
            Err(_) => true,
        }
    }

    /// Gives back the lease of `primary` if this node holds it (in the background).
    pub fn release_lease(&self, primary: &str) {
        let Some(shared) = &self.shared else {
            return;
        };
        if self.leases.lock().expect("poisoned").remove(primary) {
            let (shared, primary) = (shared.clone(), primary.to_string());
            tokio::spawn(async move {
                let _ = shared.release_lease(&primary).await;
            });
        }
    }

    /// Purges `target` everywhere: from this node's tiers, from the shared tier (so no node
    /// refills from it), from this node's tiers again, then tells every other node. Without a shared tier
    /// the purge is local. When the shared tier is configured but unreachable, the report
    /// says `local` with a warning, and a warning is logged: the purge reached only this node.
    pub async fn purge(&self, target: &Target, soft: bool) -> PurgeReport {
        self.purge_everywhere(target, soft, true).await
    }

    /// `purge`; `loud` logs a purge that reached only this node as a warning (admin purges),
    /// otherwise at debug level (invalidations after unsafe requests, which can be many).
    pub(super) async fn purge_everywhere(
        &self,
        target: &Target,
        soft: bool,
        loud: bool,
    ) -> PurgeReport {
        let mut purged = self.purge_local(target, soft).await;
        let Some(shared) = &self.shared else {
            return PurgeReport {
                purged,
                scope: "local",
                warning: None,
            };
        };
        // Local first: shared writes still on their way see the purge and take themselves
        // back. Local again after Redis: a lookup may have refilled from the old copy.
        let mut failure = None;
        match shared.purge(target).await {
            Ok(n) => purged.shared = n,
            Err(e) => failure = Some(e),
        }
        let again = self.purge_local(target, soft).await;
        purged.memory += again.memory;
        purged.disk += again.disk;
        if failure.is_none() {
            failure = shared.publish(target, soft).await.err();
        }
        match failure {
            None => {
                shared.stats.purges_cluster.fetch_add(1, Relaxed);
                PurgeReport {
                    purged,
                    scope: "cluster",
                    warning: None,
                }
            }
            Some(e) => {
                shared.stats.purges_local_only.fetch_add(1, Relaxed);
                let warning = format!(
                    "the shared tier is unreachable ({e}): this purge reached only this node; \
                     other nodes and Redis may still hold the entries until they expire"
                );
                if loud {
                    tracing::warn!("purge {target:?}: {warning}");
                } else {
                    tracing::debug!("invalidation {target:?}: {warning}");
                }
                PurgeReport {
                    purged,
                    scope: "local",
                    warning: Some(warning),
                }
            }
        }
    }

    /// Purges `target` from this node's memory and disk tiers only.
    pub async fn purge_local(&self, target: &Target, soft: bool) -> Purged {
        match target {
            Target::Urls(m) => self.purge_urls(m, soft).await,
            Target::Tag(tag) => self.purge_tag(tag, soft).await,
        }
    }
}
