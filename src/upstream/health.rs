//! Active health checks: every `interval`, a GET of `path` on each server of a group; a
//! server leaves rotation after `fall` failed checks and rejoins after `rise` passes.

use std::sync::Weak;

use http::{header, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Limited};
use tokio::time::MissedTickBehavior;

use super::{Group, ReqBody};
use crate::config::HealthCheck;

/// Checks `group` until it is dropped (a reload that changes it starts a new checker).
pub async fn run(group: Weak<Group>, check: HealthCheck) {
    let mut interval = tokio::time::interval(check.interval);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(group) = group.upgrade() else { return };
        let probes = (0..group.backends.len()).map(|i| probe(&group, i, &check));
        let results = futures_util::future::join_all(probes).await;
        for (i, ok) in results.into_iter().enumerate() {
            let backend = &group.backends[i];
            if let Some(up) = backend.record_check(ok, check.rise, check.fall) {
                if up {
                    tracing::info!(group = %group.name, server = %backend.spec.addr, "health check passes: back in rotation");
                    group.wake_all();
                } else {
                    tracing::warn!(group = %group.name, server = %backend.spec.addr, "health check fails: out of rotation");
                }
            }
        }
    }
}

/// One check of one server: true when it answered a status in `expect` within `timeout`.
async fn probe(group: &Group, index: usize, check: &HealthCheck) -> bool {
    let addr = &group.backends[index].spec.addr;
    let Ok(uri) = Uri::builder()
        .scheme(addr.scheme.clone())
        .authority(addr.authority.clone())
        .path_and_query(check.path.as_str())
        .build()
    else {
        return false;
    };
    let mut req = Request::new(ReqBody::Empty);
    *req.uri_mut() = uri;
    if let Ok(host) = HeaderValue::from_str(addr.authority.as_str()) {
        req.headers_mut().insert(header::HOST, host);
    }
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("torii-health-check"),
    );
    let exchange = async {
        let resp = group.exchange(index, req).await.ok()?;
        let status = resp.status().as_u16();
        // Read the (small) body so the connection can be reused.
        let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
        Some(status)
    };
    match tokio::time::timeout(check.timeout, exchange).await {
        Ok(Some(status)) => (check.expect.0..=check.expect.1).contains(&status),
        _ => false,
    }
}
