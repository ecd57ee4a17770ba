//! ACME on several nodes sharing a cache tier (`cache.shared`, Redis): one node orders a
//! certificate at a time (a lease, `SET NX PX`), and stores the result — chain and private
//! key — in Redis, where every node reads it. Without Redis (down, or failing), each node
//! orders on its own.

use std::time::Duration;

use crate::cache::tier::shared::SharedTier;

/// A certificate as kept in the shared tier.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    chain: String,
    key: String,
}

/// Whether this node may order now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This node holds the lease: order, then publish and release.
    Won,
    /// Another node is ordering: wait, then look for its result.
    Held,
    /// Redis did not answer: order alone.
    Unavailable,
}

/// The chain and key PEM some node stored for `name`, if any.
pub async fn fetch(tier: &SharedTier, name: &str) -> Option<(String, String)> {
    match tier.acme_get(name).await {
        Ok(Some(bytes)) => match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) => Some((r.chain, r.key)),
            Err(e) => {
                tracing::warn!(
                    "acme: {name}: the shared tier's certificate record is corrupt: {e}"
                );
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::debug!("acme: {name}: shared tier: {e}");
            None
        }
    }
}

/// Stores the certificate of `name` for every node.
pub async fn publish(tier: &SharedTier, name: &str, chain: &str, key: &str) {
    let record = Record {
        chain: chain.to_string(),
        key: key.to_string(),
    };
    let bytes = match serde_json::to_vec(&record) {
        Ok(b) => b,
        Err(e) => return tracing::warn!("acme: {name}: {e}"),
    };
    if let Err(e) = tier.acme_put(name, &bytes).await {
        tracing::warn!("acme: {name}: the certificate is not shared with the other nodes: {e}");
    }
}

pub async fn lease(tier: &SharedTier, name: &str, ttl: Duration) -> Lease {
    match tier.acquire_acme_lease(name, ttl).await {
        Ok(true) => Lease::Won,
        Ok(false) => Lease::Held,
        Err(e) => {
            tracing::warn!("acme: {name}: no lease from the shared tier ({e}); ordering alone");
            Lease::Unavailable
        }
    }
}

pub async fn release(tier: &SharedTier, name: &str) {
    if let Err(e) = tier.release_acme_lease(name).await {
        tracing::debug!("acme: {name}: releasing the lease: {e}");
    }
}
