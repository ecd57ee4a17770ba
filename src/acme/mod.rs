//! ACME (RFC 8555) certificates for `listeners[].tls.acme`: the state the listener and the
//! request path read (`State`: issued certificates by name, pending HTTP-01 tokens and
//! TLS-ALPN-01 challenge certificates), and the task that keeps one certificate (`keep`):
//! load it from storage, order it when missing, renew it at two thirds of its life, retry
//! failures with jittered exponential back-off. It runs in the background: start-up never
//! waits for it, and a failure leaves the certificate served so far in place.
//!
//! With a shared tier (`cluster.rs`), one node orders at a time and the others read its
//! certificate from Redis.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::cache::tier::shared::SharedTier;
use crate::config::Acme;
use crate::observe::metrics::Metrics;

mod client;
mod cluster;
mod order;
mod storage;

pub use storage::Storage;

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737 §6.2).
pub const ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of HTTP-01 challenges (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Longest one order may take, all steps together.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest wait between retries of a failing order.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// What ACME tasks share with the listeners and the request path; kept across reloads.
#[derive(Debug, Default)]
pub struct State {
    /// Issued certificates by (lowercase) domain. Read on every handshake of an ACME
    /// listener, written once per order: a std `RwLock`, never held across an await.
    certs: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates by domain, while their order runs.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token, while their order runs.
    tokens: Mutex<HashMap<String, String>>,
}

impl State {
    /// The issued certificate of `name`, if any.
    pub fn cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
        certs.get(&name).cloned()
    }

    /// The TLS-ALPN-01 challenge certificate of `name`, while an order waits for it.
    pub fn challenge_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let alpn = self.alpn.lock().unwrap_or_else(|e| e.into_inner());
        alpn.get(&name).cloned()
    }

    /// The answer to `GET /.well-known/acme-challenge/TOKEN` (`path` is the whole path),
    /// while an order waits for it.
    pub fn http01(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).cloned()
    }

    fn install(&self, domains: &[String], key: &Arc<CertifiedKey>) {
        let mut certs = self.certs.write().unwrap_or_else(|e| e.into_inner());
        for d in domains {
            certs.insert(d.clone(), key.clone());
        }
    }

    fn place_token(&self, token: &str, key_authorization: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(token.to_string(), key_authorization.to_string());
    }

    fn place_alpn(&self, name: &str, cert: Arc<CertifiedKey>) {
        let mut alpn = self.alpn.lock().unwrap_or_else(|e| e.into_inner());
        alpn.insert(name.to_ascii_lowercase(), cert);
    }

    fn withdraw(&self, tokens: &[String], names: &[String]) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t, _| !tokens.contains(t));
        self.alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n, _| !names.contains(n));
    }
}

/// A certificate read from PEM: ready for rustls, with the dates renewal is planned by.
struct Issued {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Issued {
    fn parse(chain: &str, key: &str) -> Result<Issued, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate chain: {e:?}"))?;
        if certs.is_empty() {
            return Err("no certificate in the chain".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| format!("private key: {e:?}"))?;
        let certified = CertifiedKey::from_der(certs, key, &crate::config::tls::provider())
            .map_err(|e| format!("certificate and key: {e}"))?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&certified.cert[0])
            .map_err(|e| format!("certificate: {e}"))?;
        let unix = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let mut names = Vec::new();
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    names.push(dns.to_ascii_lowercase());
                }
            }
        }
        Ok(Issued {
            not_before: unix(leaf.validity().not_before.timestamp()),
            not_after: unix(leaf.validity().not_after.timestamp()),
            names,
            key: Arc::new(certified),
        })
    }

    /// Whether it names exactly `domains` and is still valid at `now`.
    fn fits(&self, domains: &[String], now: SystemTime) -> bool {
        let mut have = self.names.clone();
        let mut want = domains.to_vec();
        have.sort();
        want.sort();
        have == want && now < self.not_after
    }

    /// When to order its successor: `renew_before` its expiry, or at two thirds of its life.
    fn renew_at(&self, renew_before: Option<Duration>) -> SystemTime {
        match renew_before {
            Some(before) => self
                .not_after
                .checked_sub(before)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            None => {
                let life = self
                    .not_after
                    .duration_since(self.not_before)
                    .unwrap_or_default();
                self.not_before + life * 2 / 3
            }
        }
    }
}

/// Starts the task that keeps the certificate of `settings`, until `drain` turns true;
/// with `shared`, in concert with the other nodes on that tier.
pub fn start(
    settings: Acme,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    shared: Option<Arc<SharedTier>>,
    drain: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(keep(settings, state, metrics, shared, drain))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The wait after the `failures`-th failure in a row: `base` doubled each time, at most
/// six hours, then a random part of the second half cut off (so nodes spread out).
pub fn backoff(base: Duration, failures: u32) -> Duration {
    let doubled = base.saturating_mul(1 << failures.saturating_sub(1).min(20));
    let full = doubled.min(MAX_BACKOFF.max(base));
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(failures);
    let jitter = (hasher.finish() % 1000) as u32;
    full / 2 + full / 2 * jitter / 1000
}

/// Keeps one certificate: see the module doc.
async fn keep(
    settings: Acme,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    shared: Option<Arc<SharedTier>>,
    mut drain: watch::Receiver<bool>,
) {
    let Some(first) = settings.domains.first().cloned() else {
        return tracing::warn!("acme: no domains to order a certificate for");
    };
    let storage = Storage::new(&settings.storage);
    let install = |issued: &Issued| {
        state.install(&settings.domains, &issued.key);
        for d in &settings.domains {
            metrics.acme.set_expiry(d, unix_secs(issued.not_after));
        }
    };
    let mut current = match storage.load_cert(&first) {
        Ok(Some((chain, key))) => match Issued::parse(&chain, &key) {
            Ok(issued) if issued.fits(&settings.domains, SystemTime::now()) => {
                tracing::info!("acme: {first}: serving the stored certificate");
                install(&issued);
                Some(issued)
            }
            Ok(_) => {
                tracing::info!("acme: {first}: the stored certificate is expired or names other domains; ordering");
                None
            }
            Err(why) => {
                tracing::warn!(
                    "acme: {first}: the stored certificate is unusable ({why}); ordering"
                );
                None
            }
        },
        Ok(None) => None,
        Err(why) => {
            tracing::warn!("acme: {first}: {why}; ordering");
            None
        }
    };
    let mut account = None;
    let mut failures = 0u32;
    // Another node holds the order lease: look again after `retry_backoff`.
    let mut peer_ordering = false;
    loop {
        let now = SystemTime::now();
        let at = match &current {
            _ if peer_ordering => now + settings.retry_backoff,
            _ if failures > 0 => now + backoff(settings.retry_backoff, failures),
            Some(issued) => issued.renew_at(settings.renew_before),
            None => now,
        };
        for d in &settings.domains {
            metrics.acme.set_renewal(d, unix_secs(at).max(1));
        }
        let wait = at.duration_since(now).unwrap_or_default();
        if *drain.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = drain.changed() => return,
        }
        peer_ordering = false;
        let mut leased = false;
        if let Some(tier) = &shared {
            // What another node ordered, when newer than ours and not due yet.
            if let Some((chain, key)) = cluster::fetch(tier, &first).await {
                let now = SystemTime::now();
                match Issued::parse(&chain, &key) {
                    Ok(issued)
                        if issued.fits(&settings.domains, now)
                            && issued.renew_at(settings.renew_before) > now
                            && current
                                .as_ref()
                                .is_none_or(|c| issued.not_after > c.not_after) =>
                    {
                        tracing::info!(
                            "acme: {first}: serving the certificate another node ordered"
                        );
                        if let Err(why) = storage.save_cert(&first, &chain, &key) {
                            tracing::warn!("acme: {first}: not stored ({why})");
                        }
                        install(&issued);
                        current = Some(issued);
                        failures = 0;
                        continue;
                    }
                    Ok(_) => {}
                    Err(why) => {
                        tracing::warn!("acme: {first}: the shared certificate is unusable: {why}")
                    }
                }
            }
            match cluster::lease(tier, &first, ORDER_TIMEOUT).await {
                cluster::Lease::Won => leased = true,
                cluster::Lease::Held => {
                    peer_ordering = true;
                    continue;
                }
                cluster::Lease::Unavailable => {}
            }
        }
        metrics.acme.orders.inc();
        let attempt = async {
            let acct = match &account {
                Some(a) => a,
                None => account.insert(order::account(&settings, &storage).await?),
            };
            let (chain, key) = order::order(acct, &settings, &state).await?;
            let issued = Issued::parse(&chain, &key)?;
            Ok::<_, String>((issued, chain, key))
        };
        let result = tokio::select! {
            r = tokio::time::timeout(ORDER_TIMEOUT, attempt) => r,
            _ = drain.changed() => return,
        };
        if let (Some(tier), true) = (&shared, leased) {
            if let Ok(Ok((_, chain, key))) = &result {
                cluster::publish(tier, &first, chain, key).await;
            }
            cluster::release(tier, &first).await;
        }
        match result {
            Ok(Ok((issued, chain, key))) => {
                if let Err(why) = storage.save_cert(&first, &chain, &key) {
                    tracing::warn!("acme: {first}: the certificate is served but not stored ({why}); a restart orders again");
                }
                tracing::info!(
                    "acme: {first}: certificate issued, valid until {}",
                    httpdate::fmt_http_date(issued.not_after)
                );
                install(&issued);
                current = Some(issued);
                failures = 0;
            }
            Ok(Err(why)) => {
                failures += 1;
                metrics.acme.order_failures.inc();
                // A stale account (say, the directory was reset) is made anew next time.
                account = None;
                tracing::warn!("acme: {first}: order failed ({failures} in a row): {why}");
            }
            Err(_) => {
                failures += 1;
                metrics.acme.order_failures.inc();
                account = None;
                tracing::warn!(
                    "acme: {first}: order timed out after {ORDER_TIMEOUT:?} ({failures} in a row)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_secs(60);
        for n in 1..40 {
            let full = base.saturating_mul(1 << (n - 1).min(20)).min(MAX_BACKOFF);
            let b = backoff(base, n);
            assert!(b >= full / 2 && b <= full, "{n}: {b:?} for {full:?}");
        }
    }

    #[test]
    fn http01_answers_only_placed_tokens() {
        let state = State::default();
        state.place_token("tok", "tok.thumb");
        assert_eq!(
            state.http01("/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(state.http01("/.well-known/acme-challenge/other"), None);
        assert_eq!(state.http01("/tok"), None);
        state.withdraw(&["tok".to_string()], &[]);
        assert_eq!(state.http01("/.well-known/acme-challenge/tok"), None);
    }
}
